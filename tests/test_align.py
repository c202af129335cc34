"""FFHQ alignment: exact transform, inverse, rotation equivariance, dtypes, borders, aliasing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from albumfix.faces.align import (
    AlignTransform,
    ffhq_quad,
    ffhq_transform,
    landmarks_to_crop,
    landmarks_to_photo,
    warp_to_crop,
)

S = 128


def toy_landmarks(centre=(256.0, 130.0), iod=60.0, mouth=70.0, angle_deg=0.0) -> np.ndarray:
    """(68, 2) symmetric face: eye centres iod apart, mouth corners `mouth` px below the eye
    midpoint, rotated by angle_deg about the eye midpoint."""
    lm = np.zeros((68, 2))
    ring = np.stack([np.cos(np.linspace(0, 2 * np.pi, 6, endpoint=False)), np.sin(np.linspace(0, 2 * np.pi, 6, endpoint=False))], 1) * [9.0, 4.0]
    lm[36:42] = ring + [-iod / 2, 0.0]
    lm[42:48] = ring + [iod / 2, 0.0]
    lm[48] = [-25.0, mouth]
    lm[54] = [25.0, mouth]
    lm[0:17] = np.stack([np.linspace(-70, 70, 17), 40 + 60 * np.sin(np.linspace(0, np.pi, 17))], 1)
    a = np.radians(-angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return lm @ rot.T + np.asarray(centre)


def test_quad_follows_the_paper_formula():
    lm = toy_landmarks(iod=60.0, mouth=70.0)
    quad = ffhq_quad(lm)
    # symmetric, upright face: half side = max(2 * 60, 1.8 * 70) = 126, centre 7 px below the eyes
    c = np.array([256.0, 137.0])
    np.testing.assert_allclose(quad, c + np.array([[-126, -126], [-126, 126], [126, 126], [126, -126]]), atol=1e-9)


def test_quad_corners_land_on_crop_corners_and_inverse_is_exact():
    lm = toy_landmarks(angle_deg=23.0)
    t = ffhq_transform(lm, S)
    corners = landmarks_to_crop(ffhq_quad(lm), t)
    lo, hi = -0.5, S - 0.5
    np.testing.assert_allclose(corners, [[lo, lo], [lo, hi], [hi, hi], [hi, lo]], atol=1e-4)
    pts = np.random.default_rng(0).uniform(-500, 1500, (200, 2))
    np.testing.assert_allclose(landmarks_to_photo(landmarks_to_crop(pts, t), t), pts, atol=1e-3)
    full = np.vstack([t.matrix, [0, 0, 1]]) @ np.vstack([t.inverse_matrix, [0, 0, 1]])
    np.testing.assert_allclose(full, np.eye(3), atol=1e-12)


@pytest.mark.parametrize("angle", [-50.0, -10.0, 35.0, 120.0])
def test_rotated_face_gives_level_symmetric_eyes(angle):
    iod, mouth = 60.0, 70.0
    t = ffhq_transform(toy_landmarks(iod=iod, mouth=mouth, angle_deg=angle), S)
    crop = landmarks_to_crop(toy_landmarks(iod=iod, mouth=mouth, angle_deg=angle), t)
    left, right = crop[36:42].mean(0), crop[42:48].mean(0)
    scale = S / (2 * max(2 * iod, 1.8 * mouth))
    mid = (S - 1) / 2
    np.testing.assert_allclose(left, [mid - iod / 2 * scale, mid - 0.1 * mouth * scale], atol=1e-3)
    np.testing.assert_allclose(right, [mid + iod / 2 * scale, mid - 0.1 * mouth * scale], atol=1e-3)
    assert crop[48, 1] > left[1] and crop[54, 1] > right[1]
    assert t.scale == pytest.approx(scale)


def test_crop_of_rotated_photo_matches_crop_of_original():
    photo = skimage.data.astronaut()
    lm = toy_landmarks(centre=(222.0, 110.0), iod=45.0, mouth=52.0)
    rot = cv2.getRotationMatrix2D((256.0, 256.0), 33.0, 1.0)
    big = np.vstack([rot, [0, 0, 1]]) @ np.array([[1, 0, 100], [0, 1, 100], [0, 0, 1.0]])  # into a larger canvas
    rotated = cv2.warpAffine(photo, big[:2], (712, 712), flags=cv2.INTER_CUBIC)
    lm_rot = lm @ big[:2, :2].T + big[:2, 2]
    a = warp_to_crop(photo, ffhq_transform(lm, S))
    b = warp_to_crop(rotated, ffhq_transform(lm_rot, S))
    diff = np.abs(a.astype(np.float32) - b.astype(np.float32))[8:-8, 8:-8]
    assert diff.mean() < 3.0
    assert np.abs(a.astype(np.float32) - warp_to_crop(photo, ffhq_transform(lm_rot, S)).astype(np.float32)).mean() > 20.0


@pytest.mark.parametrize("dtype,maxval", [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1.0)])
@pytest.mark.parametrize("channels", [None, 1, 3, 4, 6])
def test_dtype_and_channels_are_preserved(dtype, maxval, channels):
    rgb = skimage.data.astronaut()
    base = rgb[:, :, 0] if channels is None else np.concatenate([rgb, rgb], axis=2)[:, :, :channels]
    image = (base.astype(np.float64) / 255.0 * maxval).astype(dtype)
    t = ffhq_transform(toy_landmarks(centre=(222.0, 110.0), iod=45.0, mouth=52.0, angle_deg=12.0), S)
    crop = warp_to_crop(image, t)
    assert crop.dtype == dtype
    assert crop.shape == ((S, S) if channels is None else (S, S, channels))
    reference = warp_to_crop(rgb, t).astype(np.float64) / 255.0
    ref = reference[:, :, 0] if channels is None else np.concatenate([reference, reference], axis=2)[:, :, :channels]
    assert np.abs(crop.astype(np.float64) / maxval - ref).max() < 0.02


def test_face_at_photo_corner_reflect_and_constant_borders():
    photo = np.full((200, 300, 3), 180, dtype=np.uint8)
    photo[::7] = 40  # texture so reflection is visible
    t = ffhq_transform(toy_landmarks(centre=(20.0, 15.0), iod=40.0, mouth=45.0), S)
    reflect = warp_to_crop(photo, t, border="reflect")
    constant = warp_to_crop(photo, t, border="constant")
    outside = landmarks_to_photo(np.stack(np.meshgrid(np.arange(S), np.arange(S)), -1).reshape(-1, 2), t)
    out_mask = ((outside[:, 0] < -1) | (outside[:, 1] < -1)).reshape(S, S)
    in_mask = ((outside[:, 0] > 1) & (outside[:, 1] > 1)).reshape(S, S)
    assert out_mask.mean() > 0.2
    assert (constant[out_mask] == 0).all()
    assert reflect[out_mask].min() >= 40
    np.testing.assert_array_equal(reflect[in_mask], constant[in_mask])
    with pytest.raises(ValueError):
        warp_to_crop(photo, t, border="wrap")


def test_big_shrink_is_antialiased_and_keeps_geometry():
    stripes = np.zeros((2400, 2400), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes: pure aliasing bait
    t = ffhq_transform(toy_landmarks(centre=(1200.0, 1100.0), iod=400.0, mouth=450.0), S)
    assert t.scale < 0.1
    crop = warp_to_crop(stripes, t)
    assert abs(crop.astype(np.float64).mean() - 127.5) < 3 and crop.std() < 3
    dot = np.zeros((2400, 2400), dtype=np.float32)
    dot[1000:1016, 1300:1316] = 1.0  # 16 x 16 block centred on (1307.5, 1007.5)
    small = warp_to_crop(dot, t)
    ys, xs = np.mgrid[:S, :S]
    centroid = np.array([(xs * small).sum(), (ys * small).sum()]) / small.sum()
    np.testing.assert_allclose(centroid, landmarks_to_crop(np.array([[1307.5, 1007.5]]), t)[0], atol=0.15)


def test_transform_record_is_readonly_and_validates():
    t = AlignTransform(matrix=np.eye(2, 3), size=64)
    assert t.matrix.dtype == np.float64 and not t.matrix.flags.writeable
    with pytest.raises(ValueError):
        ffhq_transform(np.zeros((68, 2)), S)
    with pytest.raises(TypeError):
        warp_to_crop(np.zeros((10, 10), dtype=np.int32), t)
