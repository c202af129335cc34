"""Paste a restored face crop back into its photo: inverse warp, feathered face mask, tone match.

The restored crop (S, S, 3) uint8 RGB lives in the aligned-crop frame of an `AlignTransform`.
Everything that depends on the face (mask, tone match, tint) is computed in that S x S frame, so
the cost does not grow with the photo; only the face's bounding region of the photo is touched.

Tone handling (`detect_tone`):
- "gray": a 2-D photo, a (H, W, 1|2) photo, or an RGB(A) photo whose three colour channels are
  exactly equal. Only luminance is composited; the output stays 2-D / channel-equal.
- "tinted": a monochrome print with its own tint (sepia, cyanotype, split toning, a faint
  scanner cast): the restored luminance is kept and the photo's own tint (Lab a*, b* as a
  function of L*, fitted on the original crop) is re-applied. The face is never colourised.
- "color": everything else; the restored RGB is composited after a low-frequency colour match.

Fine detail (`keep_detail`): when the face covers more photo pixels than the crop has, the
restored face comes back upsampled, without the photo's frequencies above the crop's
resolution. Those are added back: the photo minus the photo seen through the crop (warped to
the crop and back with the same interpolation as the restored face), exactly what the crop
cannot hold, so a large sharp face keeps its skin texture, lashes and hair and nothing the
restorer drew is counted twice. The caller passes keep_detail=False for a degraded face, whose
fine band is noise and artefacts.

Pixels where the feathered mask is zero are written back unchanged (byte-identical), so hair,
background, the paper grain outside the face and any alpha channel are untouched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from albumfix.faces.align import AlignTransform, landmarks_to_crop, warp_to_crop

Tone = Literal["color", "gray", "tinted"]

# Face mask geometry, as fractions of the face height h = |mean(brows) - chin| (crop px).
FOREHEAD_LIFT = 0.40  # brows copied this far "up" (chin -> brows direction): covers the forehead
MASK_ERODE = 0.05  # the hull is eroded by this much before feathering
MASK_FEATHER_SIGMA = 0.06  # Gaussian feather sigma
# Low-frequency tone match: Gaussian sigma as a fraction of the crop side S.
TONE_SIGMA = 1.0 / 16.0
# detect_tone chroma test (CIE Lab units, D65, on a subsample of at most TONE_SAMPLE_PIXELS pixels):
# tinted when the 95th percentile of |(a*, b*) - tint(L*)| is at most TINT_MAX_RESIDUAL. Measured on
# real prints: sepia / toned / neutral monochrome 0.4-6.8; colour photos (CelebA, hand-coloured
# and colour prints) 9.9 and up.
TINT_MAX_RESIDUAL = 8.0
TONE_SAMPLE_PIXELS = 200_000
TINT_LUT_BINS = 50  # L* bins of the per-luminance tint table
STRIP_EMPTY_GREY = 128  # colour of the exemplar panel of face_strip when there is no exemplar
# Fine detail kept from the photo (keep_detail) where the crop is enlarged by more than this
# (photo px per crop px); below it the crop holds all the photo's detail.
DETAIL_MIN_SCALE = 1.1


def _dtype_max(dtype: np.dtype) -> float:
    """Full-scale value of a supported photo dtype: 255 (uint8) or 65535 (uint16)."""
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    raise TypeError(f"photo dtype must be uint8 or uint16, got {dtype}")


def _colour_channels(photo: np.ndarray) -> int:
    """Number of colour (non-alpha) channels of a photo: 1 for (H, W), (H, W, 1|2); 3 for (H, W, 3|4)."""
    if photo.ndim == 2:
        return 1
    if photo.ndim == 3 and photo.shape[2] in (1, 2):
        return 1
    if photo.ndim == 3 and photo.shape[2] in (3, 4):
        return 3
    raise ValueError(f"photo must be (H, W) or (H, W, 1|2|3|4), got shape {photo.shape}")


def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) float32 RGB in [0, 1] -> (..., 3) float32 Lab (L* in [0, 100], a*, b* about +-128)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2Lab)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(S, S, 3) float32 Lab -> (S, S, 3) float32 RGB clipped to [0, 1]."""
    rgb = cv2.cvtColor(np.ascontiguousarray(lab, dtype=np.float32), cv2.COLOR_Lab2RGB)
    return np.clip(rgb, 0.0, 1.0)


def detect_tone(photo: np.ndarray) -> Tone:
    """Classify a photo as "color", "gray" or "tinted" (monochrome with its own tint).

    photo: (H, W) or (H, W, C) uint8/uint16, C in 1..4 (2 = gray + alpha, 4 = RGBA).
    Gray: no colour channels, or R, G and B exactly equal everywhere.
    Otherwise the chroma test, in CIE Lab on an evenly strided subsample: a monochrome print's
    colour is a function of its luminance alone (one tint curve: sepia, cyanotype, split toning,
    faint scanner casts). The tint table (mean a*, b* per L* bin) is fitted to the sample; the
    photo is "tinted" when the 95th percentile of the distance |(a*, b*) - tint(L*)| is at most
    TINT_MAX_RESIDUAL, else "color" (different colours at the same luminance).
    """
    maxval = _dtype_max(photo.dtype)
    if _colour_channels(photo) == 1:
        return "gray"
    rgb = photo[..., :3]
    if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]):
        return "gray"
    step = max(1, int(math.sqrt(rgb.shape[0] * rgb.shape[1] / TONE_SAMPLE_PIXELS)))
    lab = _rgb_to_lab(rgb[::step, ::step].astype(np.float32) / maxval).reshape(-1, 3)
    residual = lab[:, 1:] - _tint_at(_tint_table(lab), lab[:, 0])
    spread = float(np.percentile(np.hypot(residual[:, 0], residual[:, 1]), 95))
    return "tinted" if spread <= TINT_MAX_RESIDUAL else "color"


def face_mask(crop_landmarks: np.ndarray, size: int) -> np.ndarray:
    """Feathered face mask in the aligned-crop frame.

    crop_landmarks: (68, 2) float (x, y) crop px; size: crop side S.
    Returns (S, S) float32 in [0, 1]: the convex hull of the jaw, the brows and the brows lifted
    by FOREHEAD_LIFT * h towards the forehead (h = brow-to-chin distance), eroded by MASK_ERODE * h
    and Gaussian-feathered with sigma MASK_FEATHER_SIGMA * h. Exactly 0 in a 2-px crop border and
    beyond the feather.
    """
    lm = np.asarray(crop_landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"crop_landmarks must be (68, 2), got {lm.shape}")
    brows = lm[17:27]
    up = brows.mean(axis=0) - lm[8]
    h = float(np.hypot(*up))
    if h < 1.0:
        raise ValueError("degenerate landmarks: brows and chin coincide")
    forehead = brows + up * FOREHEAD_LIFT
    hull = cv2.convexHull(np.concatenate([lm[0:17], brows, forehead]).astype(np.float32))
    mask = np.zeros((size, size), np.float32)
    cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 1.0, cv2.LINE_AA, 4)
    erode = max(1, round(MASK_ERODE * h))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
    mask = cv2.erode(mask, kernel)
    sigma = MASK_FEATHER_SIGMA * h
    radius = max(1, math.ceil(3 * sigma))
    band = min(radius + 2, size // 2)
    mask[:band] = 0
    mask[-band:] = 0
    mask[:, :band] = 0
    mask[:, -band:] = 0
    mask = cv2.GaussianBlur(mask, (2 * radius + 1, 2 * radius + 1), sigma)
    return np.clip(mask, 0.0, 1.0)


def _lowpass(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass of (S, S) or (S, S, C) float32; large sigmas run on a 4x smaller copy."""
    size = image.shape[0]
    factor = 4 if sigma >= 8 and size >= 32 else 1
    small = image
    if factor > 1:
        small = cv2.resize(image, (size // factor, size // factor), interpolation=cv2.INTER_AREA)
    blurred = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
    if factor > 1:
        blurred = cv2.resize(blurred, (size, size), interpolation=cv2.INTER_LINEAR)
    return blurred.reshape(image.shape)


@dataclass(frozen=True)
class _TintTable:
    """A photo's tint as a function of luminance: mean a*, b* (k,) at L* bin centres (k,)."""

    centres: np.ndarray
    a: np.ndarray
    b: np.ndarray


def _tint_table(lab: np.ndarray) -> _TintTable:
    """Fit the tint table to (..., 3) float32 Lab pixels: mean a*, b* per occupied L* bin
    (TINT_LUT_BINS bins over [0, 100])."""
    flat = lab.reshape(-1, 3)
    bins = np.clip((flat[:, 0] / 100.0 * TINT_LUT_BINS).astype(np.int64), 0, TINT_LUT_BINS - 1)
    count = np.bincount(bins, minlength=TINT_LUT_BINS)
    occupied = count > 0
    centres = (np.arange(TINT_LUT_BINS) + 0.5) * (100.0 / TINT_LUT_BINS)

    def mean(channel: int) -> np.ndarray:
        total = np.bincount(bins, weights=flat[:, channel], minlength=TINT_LUT_BINS)
        return total[occupied] / count[occupied]

    return _TintTable(centres[occupied], mean(1), mean(2))


def _tint_at(table: _TintTable, lum: np.ndarray) -> np.ndarray:
    """(...,) float32 L* -> (..., 2) float32 a*, b*: the table interpolated linearly between bin
    centres, held constant beyond the first and last."""
    a = np.interp(lum, table.centres, table.a)
    b = np.interp(lum, table.centres, table.b)
    return np.stack([a, b], axis=-1).astype(np.float32)


def _match_tone(restored: np.ndarray, original: np.ndarray, tone: Tone) -> np.ndarray:
    """Give the restored crop the original's low frequencies (lighting, colour) and tone.

    restored: (S, S, 3) float32 RGB in [0, 1]; original: (S, S) float32 (gray) or (S, S, 3)
    float32 RGB in [0, 1], the photo warped to the crop. Returns (S, S, 1) for "gray" or
    (S, S, 3) RGB, float32 in [0, 1]: restored + lowpass(original) - lowpass(restored), computed
    on luminance (gray), on L* with the photo's tint re-applied (tinted) or on Lab (color).
    """
    sigma = TONE_SIGMA * restored.shape[0]
    if tone == "gray":
        lum = cv2.cvtColor(restored, cv2.COLOR_RGB2GRAY)
        matched = lum + _lowpass(original, sigma) - _lowpass(lum, sigma)
        return np.clip(matched, 0.0, 1.0)[..., None]
    lab_r = _rgb_to_lab(restored)
    lab_o = _rgb_to_lab(original)
    if tone == "tinted":
        lum = lab_r[..., 0] + _lowpass(lab_o[..., 0], sigma) - _lowpass(lab_r[..., 0], sigma)
        lum = np.clip(lum, 0.0, 100.0)
        lab = np.concatenate([lum[..., None], _tint_at(_tint_table(lab_o), lum)], axis=-1)
        return _lab_to_rgb(lab)
    return _lab_to_rgb(lab_r + _lowpass(lab_o, sigma) - _lowpass(lab_r, sigma))


def _to_photo_frame(
    layers: np.ndarray, inverse: np.ndarray, shape: tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """Warp crop-frame layers onto the photo over the bounding region of their last layer.

    layers: (S, S, K) float32, K <= 4, last layer the mask; inverse: (2, 3) crop -> photo;
    shape: photo (H, W). Returns ((h, w, K) float32 warped layers, (x0, y0, x1, y1) region) or
    None when the mask's support misses the photo. Faces shrinking by more than 4/3 are first
    area-downsampled in the crop frame so the bilinear warp does not alias.
    """
    size = layers.shape[0]
    scale = math.sqrt(abs(float(np.linalg.det(inverse[:, :2]))))  # photo px per crop px
    ys, xs = np.nonzero(layers[..., -1] > 0)
    if len(xs) == 0:
        return None
    corners = np.array(
        [[xs.min() - 1, ys.min() - 1], [xs.max() + 1, ys.min() - 1],
         [xs.min() - 1, ys.max() + 1], [xs.max() + 1, ys.max() + 1]], np.float64
    )
    photo_corners = corners @ inverse[:, :2].T + inverse[:, 2]
    x0 = max(0, math.floor(photo_corners[:, 0].min()) - 1)
    y0 = max(0, math.floor(photo_corners[:, 1].min()) - 1)
    x1 = min(shape[1], math.ceil(photo_corners[:, 0].max()) + 2)
    y1 = min(shape[0], math.ceil(photo_corners[:, 1].max()) + 2)
    if x1 <= x0 or y1 <= y0:
        return None
    matrix = np.asarray(inverse, np.float64).copy()
    if scale < 0.75:
        small = max(8, round(size * scale))
        f = size / small
        layers = cv2.resize(layers, (small, small), interpolation=cv2.INTER_AREA).reshape(
            small, small, layers.shape[2]
        )
        matrix = matrix @ np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1]])
    matrix[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(
        layers, matrix, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
    return warped.reshape(y1 - y0, x1 - x0, layers.shape[2]), (x0, y0, x1, y1)


def _check_paste_inputs(
    photo: np.ndarray, restored: np.ndarray, transform: AlignTransform, strength: float,
    tone: str | None,
) -> None:
    """Raise ValueError / TypeError for inputs paste_face cannot handle."""
    _dtype_max(photo.dtype)
    _colour_channels(photo)
    size = transform.size
    if restored.shape != (size, size, 3) or restored.dtype != np.uint8:
        raise ValueError(
            f"restored must be ({size}, {size}, 3) uint8, got {restored.shape} {restored.dtype}"
        )
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if tone not in (None, "color", "gray", "tinted"):
        raise ValueError(f"tone must be 'color', 'gray' or 'tinted', got {tone!r}")
    if tone in ("color", "tinted") and _colour_channels(photo) == 1:
        raise ValueError(f"a photo without colour channels cannot have tone {tone!r}")


def paste_face(
    photo: np.ndarray,
    restored: np.ndarray,
    transform: AlignTransform,
    landmarks: np.ndarray,
    strength: float = 1.0,
    tone: Tone | None = None,
    keep_detail: bool = False,
) -> np.ndarray:
    """Blend a restored face back into a copy of its photo.

    photo: (H, W) or (H, W, C) uint8/uint16 (C = 1, 2 gray+alpha, 3 RGB, 4 RGBA);
    restored: (S, S, 3) uint8 RGB in the crop frame of `transform` (S = transform.size);
    landmarks: (68, 2) float (x, y) photo px of the face; strength: in [0, 1], 0 returns the
    original, 1 the fully restored face; tone: the photo's tone from `detect_tone` (pass it when
    pasting many faces into one photo; None detects it here); keep_detail: add back the photo's
    frequencies above the crop's resolution (module docstring; for faces whose detail is real).
    Returns a new array with the photo's shape and dtype. uint16 photos are composited in 16 bit
    (the restored face scaled by 257); mask math is float32; alpha is never changed.
    """
    _check_paste_inputs(photo, restored, transform, strength, tone)
    out = photo.copy()
    if strength == 0.0:
        return out
    tone = detect_tone(photo) if tone is None else tone
    maxval = _dtype_max(photo.dtype)
    gray_source = photo if photo.ndim == 2 else photo[..., 0]
    source = gray_source if tone == "gray" else photo[..., :3]
    original = warp_to_crop(source, transform).astype(np.float32) / maxval
    matched = _match_tone(restored.astype(np.float32) / 255.0, original, tone)
    mask = face_mask(landmarks_to_crop(landmarks, transform), transform.size)
    layers = np.concatenate([matched, mask[..., None]], axis=-1)
    inverse = np.asarray(transform.inverse_matrix, np.float64)
    placed = _to_photo_frame(layers, inverse, photo.shape[:2])
    if placed is None:
        return out
    warped, (x0, y0, x1, y1) = placed
    alpha = warped[..., -1:] * np.float32(strength)
    values = warped[..., :-1] * np.float32(maxval)
    channels = 1 if tone == "gray" else 3
    target = out[y0:y1, x0:x1] if out.ndim == 2 else out[y0:y1, x0:x1, :channels]
    region = target.astype(np.float32).reshape(values.shape)
    if keep_detail and 1.0 / transform.scale > DETAIL_MIN_SCALE:  # photo px per crop px
        seen = original if original.ndim == 3 else original[..., None]
        through_crop, _ = _to_photo_frame(np.concatenate([seen, mask[..., None]], axis=-1), inverse, photo.shape[:2])
        values = values + (region - through_crop[..., :-1] * np.float32(maxval))
    blended = np.clip(np.rint(region + alpha * (values - region)), 0, maxval).astype(photo.dtype)
    if out.ndim == 2:
        out[y0:y1, x0:x1] = blended[..., 0]
    else:
        colour = _colour_channels(photo)
        out[y0:y1, x0:x1, :colour] = blended  # (h, w, 1) broadcasts over equal gray channels
    return out


def face_strip(lq: np.ndarray, ref: np.ndarray | None, restored: np.ndarray) -> np.ndarray:
    """Side-by-side sheet for --save-faces: LQ | exemplar | restored.

    lq, ref, restored: (S, S, 3) uint8 RGB crops; ref None (no exemplar) gives a flat grey panel.
    Returns (S, 3S, 3) uint8.
    """
    if lq.ndim != 3 or lq.shape[0] != lq.shape[1] or lq.shape[2] != 3 or lq.dtype != np.uint8:
        raise ValueError(f"lq must be (S, S, 3) uint8, got {lq.shape} {lq.dtype}")
    panel = np.full_like(lq, STRIP_EMPTY_GREY) if ref is None else ref
    for name, image in (("ref", panel), ("restored", restored)):
        if image.shape != lq.shape or image.dtype != np.uint8:
            raise ValueError(f"{name} must be {lq.shape} uint8, got {image.shape} {image.dtype}")
    return np.concatenate([lq, panel, restored], axis=1)
