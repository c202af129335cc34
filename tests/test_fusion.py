"""Fusing K exemplar-guided restorations of one face per facial region (albumfix.restore.fusion)."""
from __future__ import annotations

import numpy as np

from albumfix.restore.fusion import fuse_restorations, fusion_weights, region_maps


def _mean_face(size: int = 128) -> np.ndarray:
    """(68, 2) crop px of a plausible frontal face (a synthetic iBUG layout, aligned)."""
    jaw = np.stack([np.linspace(20, 108, 17), 60 + 40 * np.sin(np.linspace(0, np.pi, 17))], 1)
    brows = np.stack([np.r_[np.linspace(30, 56, 5), np.linspace(72, 98, 5)], np.full(10, 45.0)], 1)
    nose = np.r_[np.stack([np.full(4, 64.0), np.linspace(50, 72, 4)], 1), np.stack([np.linspace(56, 72, 5), np.full(5, 76.0)], 1)]
    eye = lambda cx: np.stack([cx + 9 * np.cos(np.linspace(np.pi, -np.pi, 7)[:6]), 56 + 3 * np.sin(np.linspace(np.pi, -np.pi, 7)[:6])], 1)  # noqa: E731
    mouth_out = np.stack([64 + 18 * np.cos(np.linspace(np.pi, -np.pi, 13)[:12]), 92 + 6 * np.sin(np.linspace(np.pi, -np.pi, 13)[:12])], 1)
    mouth_in = np.stack([64 + 10 * np.cos(np.linspace(np.pi, -np.pi, 9)[:8]), 92 + 2 * np.sin(np.linspace(np.pi, -np.pi, 9)[:8])], 1)
    lm = np.concatenate([jaw, brows, nose, eye(43), eye(85), mouth_out, mouth_in]).astype(np.float32)
    assert lm.shape == (68, 2)
    return lm * size / 128.0


def test_each_region_prefers_the_exemplar_whose_shape_matches_there():
    face = _mean_face()
    smiling = face.copy()
    smiling[48:68, 1] += np.abs(smiling[48:68, 0] - 64) * -0.4  # mouth corners up: mouth differs
    squinting = face.copy()
    squinting[36:48, 1] += np.tile([0, -2.5, -2.5, 0, 2.5, 2.5], 2) * -0.8  # eyes narrowed: eyes differ
    weights = fusion_weights(face, np.stack([smiling, squinting]), np.array([0.05, 0.05]), 128)
    assert weights.shape == (2, 128, 128) and np.allclose(weights.sum(0), 1, atol=1e-5)
    mouth = tuple(np.round(face[62]).astype(int)[::-1])
    eye = tuple(np.round(face[37]).astype(int)[::-1])
    assert weights[1][mouth] > 0.8  # the squinting exemplar's mouth matches the face's
    assert weights[0][eye] > 0.8  # the smiling exemplar's eyes match
    # a much surer identity outweighs a small shape difference everywhere
    sure = fusion_weights(face, np.stack([smiling, squinting]), np.array([0.0, 0.6]), 128)
    assert sure[0].min() > 0.9


def test_fused_pixels_are_the_weighted_blend_and_one_restoration_is_returned_as_is():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    assert np.array_equal(fuse_restorations(images[:1], np.ones((1, 16, 16), np.float32)), images[0])
    weights = np.zeros((2, 16, 16), np.float32)
    weights[0, :8], weights[1, 8:] = 1, 1
    fused = fuse_restorations(images, weights)
    assert np.array_equal(fused[:8], images[0, :8]) and np.array_equal(fused[8:], images[1, 8:])
    half = fuse_restorations(images, np.full((2, 16, 16), 0.5, np.float32))
    assert np.abs(half.astype(int) - (images.astype(int).sum(0) / 2)).max() <= 0.5 + 1e-6


def test_region_maps_peak_on_their_landmarks():
    face = _mean_face(64)
    maps = region_maps(face, 64)
    assert maps.shape == (2, 64, 64)
    x, y = np.round(face[40]).astype(int)
    assert maps[0, y, x] > 0.95 and maps[1, y, x] < 0.6
