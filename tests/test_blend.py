"""Paste-back: mask locality, tone handling (colour / gray / sepia), 16 bit, alpha, strength, seams."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from albumfix.faces.align import ffhq_transform, landmarks_to_crop, warp_to_crop
from albumfix.restore.blend import (
    FOREHEAD_LIFT,
    detect_tone,
    face_mask,
    face_strip,
    paste_face,
)

S = 64  # crop side used throughout: small keeps the tests fast


def synthetic_landmarks(cx: float, cy: float, width: float) -> np.ndarray:
    """(68, 2) float32 iBUG-ordered landmarks of a frontal face centred at (cx, cy), `width` px wide."""
    pts: list[tuple[float, float]] = []
    for t in np.linspace(math.pi, 0.0, 17):  # jaw 0-16: left ear level -> chin -> right
        pts.append((0.5 * math.cos(t), -0.1 + 0.6 * math.sin(t)))
    for x0 in (-0.4, 0.1):  # brows 17-21, 22-26
        for x in np.linspace(x0, x0 + 0.3, 5):
            pts.append((x, -0.3 - 0.04 * math.sin((x - x0) / 0.3 * math.pi)))
    pts += [(0.0, y) for y in np.linspace(-0.2, 0.08, 4)]  # nose bridge 27-30
    pts += [(x, 0.15) for x in np.linspace(-0.1, 0.1, 5)]  # nostrils 31-35
    for ex in (-0.2, 0.2):  # eyes 36-41, 42-47
        for t in np.linspace(math.pi, -math.pi, 6, endpoint=False):
            pts.append((ex + 0.08 * math.cos(t), -0.15 - 0.03 * math.sin(t)))
    for rx, ry, n in ((0.18, 0.07, 12), (0.12, 0.03, 8)):  # outer lip 48-59, inner 60-67
        for t in np.linspace(math.pi, -math.pi, n, endpoint=False):
            pts.append((rx * math.cos(t), 0.3 - ry * math.sin(t)))
    lm = np.array(pts, np.float32) * width + np.array([cx, cy], np.float32)
    assert lm.shape == (68, 2)
    return lm


def grainy_colour_photo(h: int = 260, w: int = 240, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 photo: smooth colour field plus per-pixel grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([90 + 60 * xx / w, 120 + 40 * yy / h, 160 - 50 * xx / w], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def sepia(lum: np.ndarray) -> np.ndarray:
    """(h, w) float luminance in [0, 255] -> (h, w, 3) uint8 sepia-toned print."""
    return np.clip(lum[..., None] * np.array([1.0, 0.82, 0.62]), 0, 255).astype(np.uint8)


def face_far_region(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels clearly outside any reasonable face mask (hull of jaw, brows and
    forehead, scaled 1.35x about its centre), i.e. hair, background, ears."""
    brows = lm[17:27]
    up = brows.mean(0) - lm[8]
    pts = np.concatenate([lm[:17], brows, brows + up * FOREHEAD_LIFT])
    centre = pts.mean(0)
    grown = (pts - centre) * 1.35 + centre
    near = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(near, np.round(cv2.convexHull(grown.astype(np.float32))).astype(np.int32), 1)
    return near == 0


def face_core(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """(H, W) bool: the inner face (hull of eyes, nose and mouth), where the mask is fully on."""
    core = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(core, np.round(cv2.convexHull(lm[27:68])).astype(np.int32), 1)
    return core == 1


@pytest.fixture
def scene():
    """A grainy colour photo with one face, its transform and a random restored crop."""
    photo = grainy_colour_photo()
    lm = synthetic_landmarks(120, 140, 110)
    t = ffhq_transform(lm, S)
    restored = np.random.default_rng(1).integers(0, 256, (S, S, 3), dtype=np.uint8)
    return photo, lm, t, restored


def test_outside_mask_pixels_are_untouched(scene):
    photo, lm, t, restored = scene
    out = paste_face(photo, restored, t, lm)
    assert out.shape == photo.shape and out.dtype == photo.dtype
    changed = np.any(out != photo, axis=-1)
    far = face_far_region(photo.shape[:2], lm)
    assert far.sum() > 0.5 * far.size  # the check covers most of the photo
    assert not np.any(changed & far)
    assert changed[face_core(photo.shape[:2], lm)].mean() > 0.9  # and the face itself did change
    above_forehead = np.round(lm[17:27].mean(0) + (lm[17:27].mean(0) - lm[8]) * 0.9).astype(int)
    x, y = above_forehead
    assert np.array_equal(out[y, x], photo[y, x])


def test_strength_zero_returns_original_and_half_is_between(scene):
    photo, lm, t, restored = scene
    assert np.array_equal(paste_face(photo, restored, t, lm, strength=0.0), photo)
    full = paste_face(photo, restored, t, lm, strength=1.0).astype(np.float32)
    half = paste_face(photo, restored, t, lm, strength=0.5).astype(np.float32)
    expected = photo + 0.5 * (full - photo)
    assert np.abs(half - expected).max() <= 1.0
    with pytest.raises(ValueError):
        paste_face(photo, restored, t, lm, strength=1.5)


def test_restored_detail_kept_and_colour_matched():
    """A restored face with a colour cast and new fine detail: the cast goes, the detail stays."""
    photo = grainy_colour_photo(seed=3)
    photo = cv2.GaussianBlur(photo, (0, 0), 2.0)  # a soft (degraded-looking) photo
    lm = synthetic_landmarks(120, 140, 110)
    t = ffhq_transform(lm, S)
    crop = warp_to_crop(photo, t).astype(np.int16)
    checker = ((np.indices((S, S)).sum(0) % 2) * 2 - 1)[..., None] * 30
    restored = np.clip(crop + checker + np.array([45, -20, 10]), 0, 255).astype(np.uint8)
    out = paste_face(photo, restored, t, lm)
    core = face_core(photo.shape[:2], lm)
    mean_shift = np.abs(out[core].astype(np.float32).mean(0) - photo[core].astype(np.float32).mean(0))
    assert mean_shift.max() < 4.0  # no colour shift from the +45 / -20 / +10 cast

    def detail(img: np.ndarray) -> float:
        g = img.astype(np.float32).mean(-1)
        return float(np.abs(g - cv2.GaussianBlur(g, (0, 0), 1.5))[core].mean())

    assert detail(out) > 2.0 * detail(photo)


def smooth_photo(kind: str, h: int = 260, w: int = 240) -> np.ndarray:
    """(h, w, 3) float32 in [0, 255], no grain: "color" (luminance ramp down, blue ramp across:
    several hues per luminance) or "sepia" (the luminance ramp, toned)."""
    ramp = np.linspace(40, 200, h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    if kind == "sepia":
        return ramp[..., None] * np.array([1.0, 0.82, 0.62], np.float32)
    across = np.linspace(60, 160, w, dtype=np.float32)[None, :] * np.ones((h, 1), np.float32)
    return np.stack([ramp, ramp * 0.8, across], -1)


@pytest.mark.parametrize("kind", ["color", "sepia"])
def test_no_seam_on_a_smooth_photo(kind):
    """A flat restored face of another colour pasted into a smooth photo leaves no step edge."""
    photo = smooth_photo(kind).astype(np.uint8)
    assert detect_tone(photo) == {"color": "color", "sepia": "tinted"}[kind]
    lm = synthetic_landmarks(120, 140, 110)
    t = ffhq_transform(lm, S)
    restored = np.zeros((S, S, 3), np.uint8)
    restored[...] = (200, 60, 40)
    out = paste_face(photo, restored, t, lm)
    assert np.any(out != photo)

    def max_step(img: np.ndarray) -> float:
        f = img.astype(np.float32)
        return max(np.abs(np.diff(f, axis=0)).max(), np.abs(np.diff(f, axis=1)).max())

    assert max_step(out) <= max_step(photo) + 2.0


def test_detect_tone():
    colour = grainy_colour_photo()
    assert detect_tone(colour) == "color"
    gray2d = colour.mean(-1).astype(np.uint8)
    assert detect_tone(gray2d) == "gray"
    assert detect_tone(np.repeat(gray2d[..., None], 3, -1)) == "gray"
    assert detect_tone(gray2d[..., None]) == "gray"
    assert detect_tone(sepia(gray2d.astype(np.float32))) == "tinted"
    rgba = np.concatenate([colour, np.full(colour.shape[:2] + (1,), 255, np.uint8)], -1)
    assert detect_tone(rgba) == "color"


def test_detect_tone_tells_split_toning_from_colour():
    """Tint that depends on luminance only is monochrome; two hues at one luminance is colour."""
    lum = np.tile(np.linspace(20, 235, 240, dtype=np.float32), (200, 1))
    t = (lum / 255.0)[..., None]
    cold, warm = np.array([0.80, 0.95, 1.15]), np.array([1.10, 0.98, 0.80])
    split = np.clip(lum[..., None] * ((1 - t) * cold + t * warm), 0, 255).astype(np.uint8)
    assert detect_tone(split) == "tinted"  # blue shadows, warm highlights: a toned print
    top = np.arange(200)[:, None, None] < 100
    two_hues = np.clip(lum[..., None] * np.where(top, cold, warm), 0, 255)
    assert detect_tone(two_hues.astype(np.uint8)) == "color"  # blue and warm at every luminance


def test_face_mask_is_feathered():
    size = 256
    lm = synthetic_landmarks(300, 300, 200)
    t = ffhq_transform(lm, size)
    crop_lm = landmarks_to_crop(lm, t)
    mask = face_mask(crop_lm, size)
    assert mask.shape == (size, size) and mask.dtype == np.float32
    assert mask.min() == 0.0 and mask.max() <= 1.0
    core = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(core, np.round(cv2.convexHull(crop_lm[27:68])).astype(np.int32), 1)
    assert mask[core == 1].min() > 0.9 and mask[core == 1].mean() > 0.99
    assert np.all(mask[:2] == 0) and np.all(mask[:, -2:] == 0)
    h = float(np.hypot(*(crop_lm[17:27].mean(0) - crop_lm[8])))
    steepest = max(np.abs(np.diff(mask, axis=0)).max(), np.abs(np.diff(mask, axis=1)).max())
    assert steepest < 8.0 / h  # 0 -> 1 over about a tenth of the face height: no hard edge


def test_grayscale_stays_grayscale(scene):
    photo, lm, t, restored = scene  # restored is colourful noise
    gray2d = photo.mean(-1).astype(np.uint8)
    out2d = paste_face(gray2d, restored, t, lm)
    assert out2d.shape == gray2d.shape and out2d.dtype == np.uint8
    assert np.any(out2d != gray2d)
    gray3 = np.repeat(gray2d[..., None], 3, -1)
    out3 = paste_face(gray3, restored, t, lm)
    assert np.any(out3 != gray3)
    assert np.array_equal(out3[..., 0], out3[..., 1]) and np.array_equal(out3[..., 1], out3[..., 2])
    assert np.array_equal(out3[..., 0], out2d)  # the same luminance composite either way


def test_sepia_keeps_its_tint(scene):
    photo, lm, t, restored = scene
    print_ = sepia(photo.mean(-1))
    restored_green = restored.copy()
    restored_green[..., 1] = 255  # a strongly green restored face must not turn the print green
    out = paste_face(print_, restored_green, t, lm)
    changed = np.any(out != print_, axis=-1)
    assert changed.sum() > 500

    def hue_deg(pixels: np.ndarray) -> tuple[float, float]:
        lab = cv2.cvtColor(pixels.reshape(-1, 1, 3).astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
        a, b = lab[:, 0, 1], lab[:, 0, 2]
        return math.degrees(math.atan2(b.mean(), a.mean())), float(np.hypot(a, b).max())

    hue_in, chroma_in = hue_deg(print_[changed])
    hue_out, chroma_out = hue_deg(out[changed])
    assert abs(hue_out - hue_in) < 5.0
    assert chroma_out < chroma_in + 3.0


def test_uint16_composited_in_16_bit(scene):
    photo, lm, t, restored = scene
    rng = np.random.default_rng(5)
    photo16 = (photo.astype(np.uint16) * 257 + rng.integers(0, 257, photo.shape)).astype(np.uint16)
    out = paste_face(photo16, restored, t, lm)
    assert out.dtype == np.uint16 and out.shape == photo16.shape
    far = face_far_region(photo.shape[:2], lm)
    assert np.array_equal(out[far], photo16[far])
    assert len(np.unique(out[far])) > 256
    core = face_core(photo.shape[:2], lm)
    assert np.any(out[core] != photo16[core])


def test_uint16_face_keeps_16_bit_precision():
    """The tone-matched face carries the photo's 16-bit shading, not 8-bit steps (x 257)."""
    photo16 = np.round(smooth_photo("color") * 257).astype(np.uint16)
    lm = synthetic_landmarks(120, 140, 110)
    t = ffhq_transform(lm, S)
    out = paste_face(photo16, np.full((S, S, 3), 90, np.uint8), t, lm)
    core = out[face_core(photo16.shape[:2], lm)]
    assert np.mean(core % 257 != 0) > 0.5
    assert np.abs(core.astype(np.float32) - photo16[face_core(photo16.shape[:2], lm)]).max() < 3 * 257


def test_alpha_channel_untouched(scene):
    photo, lm, t, restored = scene
    alpha = np.random.default_rng(7).integers(0, 256, photo.shape[:2] + (1,), dtype=np.uint8)
    rgba = np.concatenate([photo, alpha], -1)
    out = paste_face(rgba, restored, t, lm)
    assert out.shape == rgba.shape
    assert np.array_equal(out[..., 3], rgba[..., 3])
    assert np.array_equal(out[..., :3], paste_face(photo, restored, t, lm))


def test_large_scan_small_face_changes_only_its_region():
    """A small face in a large photo: the paste downsamples the crop and stays local."""
    photo = grainy_colour_photo(1200, 1600, seed=9)
    lm = synthetic_landmarks(800, 600, 40)  # face smaller than the crop: anti-aliased warp path
    t = ffhq_transform(lm, S)
    restored = np.full((S, S, 3), 128, np.uint8)
    out = paste_face(photo, restored, t, lm)
    ys, xs = np.nonzero(np.any(out != photo, axis=-1))
    assert len(xs) > 0
    assert xs.min() > 800 - 60 and xs.max() < 800 + 60 and ys.min() > 600 - 70 and ys.max() < 600 + 60


def test_face_strip():
    rng = np.random.default_rng(0)
    lq, ref, res = (rng.integers(0, 256, (S, S, 3), dtype=np.uint8) for _ in range(3))
    strip = face_strip(lq, ref, res)
    assert strip.shape == (S, 3 * S, 3) and strip.dtype == np.uint8
    assert np.array_equal(strip[:, :S], lq) and np.array_equal(strip[:, S:2 * S], ref)
    assert np.array_equal(strip[:, 2 * S:], res)
    empty = face_strip(lq, None, res)
    assert np.all(empty[:, S:2 * S] == empty[0, S, 0]) and np.array_equal(empty[:, 2 * S:], res)
    with pytest.raises(ValueError):
        face_strip(lq, ref[:32], res)


def _fine_energy(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean squared difference of adjacent pixels (luminance) inside `mask`: the finest band."""
    lum = image.astype(np.float32).mean(axis=-1)
    dx = np.diff(lum, axis=1)[:-1, :] ** 2 + np.diff(lum, axis=0)[:, :-1] ** 2
    return float(dx[mask[:-1, :-1]].mean())


def test_a_face_larger_than_the_crop_keeps_the_photos_fine_detail_when_asked():
    photo = grainy_colour_photo(320, 320, seed=3)  # per-pixel texture: detail beyond a 64-px crop
    lm = synthetic_landmarks(160, 170, 200)  # a face of ~200 px restored through a 64-px crop
    t = ffhq_transform(lm, S)
    crop = warp_to_crop(photo, t)
    restored = cv2.GaussianBlur(crop, (0, 0), 0.8)  # a restorer's output: no photo-scale detail
    inside = face_far_region(photo.shape[:2], lm)
    core = np.zeros(photo.shape[:2], bool)
    core[130:210, 110:210] = True  # the middle of the face, where the mask is 1
    assert not (core & inside).any()
    plain = paste_face(photo, restored, t, lm)
    kept = paste_face(photo, restored, t, lm, keep_detail=True)
    original = _fine_energy(photo, core)
    assert _fine_energy(plain, core) < 0.3 * original  # upsampled crop: the grain is gone
    assert _fine_energy(kept, core) > 0.8 * original  # the photo's own fine band is back
    assert np.array_equal(kept[inside], photo[inside])  # still nothing outside the face changes
    # a face smaller than the crop has no band above the crop's resolution: nothing to add
    small_lm = synthetic_landmarks(160, 170, 40)
    small_t = ffhq_transform(small_lm, S)
    small = cv2.GaussianBlur(warp_to_crop(photo, small_t), (0, 0), 0.8)
    assert np.array_equal(paste_face(photo, small, small_t, small_lm, keep_detail=True),
                          paste_face(photo, small, small_t, small_lm))
