"""Tests of the synthetic album degradation (albumfix.train.degrade)."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from albumfix.train.degrade import (
    DegradationConfig,
    apply_degradation,
    apply_tone,
    degrade,
    gaussian_kernel,
    get_preset,
    motion_kernel,
    sample_degradation,
)
from albumfix.train.evaluate import psnr


def synthetic_face(size: int = 128, seed: int = 0) -> np.ndarray:
    """A textured colour 'face': skin ellipse, eyes, mouth, on a random smooth background. (S, S, 3) uint8."""
    rng = np.random.default_rng(seed)
    bg = cv2.resize((rng.random((8, 8, 3)) * 255).astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    img = bg.copy()
    c = size // 2
    cv2.ellipse(img, (c, c), (size // 3, size * 2 // 5), 0, 0, 360, (210, 160, 130), -1)
    for dx in (-size // 7, size // 7):
        cv2.circle(img, (c + dx, c - size // 10), size // 20, (40, 30, 30), -1)
    cv2.ellipse(img, (c, c + size // 5), (size // 8, size // 30), 0, 0, 360, (150, 50, 60), -1)
    fine = rng.normal(0, 12, (size, size, 3))
    return np.clip(img + fine, 0, 255).astype(np.uint8)


def test_same_seed_same_output_and_seeds_differ():
    img = synthetic_face()
    a = degrade(img, np.random.default_rng(7))
    b = degrade(img, np.random.default_rng(7))
    c = degrade(img, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("preset", ["light", "default", "heavy"])
def test_shape_and_dtype(size, preset):
    img = synthetic_face(size)
    for seed in range(4):
        out = degrade(img, np.random.default_rng(seed), get_preset(preset))
        assert out.shape == (size, size, 3)
        assert out.dtype == np.uint8


def test_psnr_falls_with_strength():
    img = synthetic_face()
    means = []
    for preset in ("light", "default", "heavy"):
        values = []
        for seed in range(12):
            d = sample_degradation(np.random.default_rng(seed), 128, get_preset(preset))
            values.append(psnr(apply_degradation(img, d), apply_tone(img, d.tone)))
        means.append(np.mean(values))
    assert means[0] > means[1] > means[2]


def test_psnr_falls_with_blur_and_downscale():
    img = synthetic_face()
    base = sample_degradation(np.random.default_rng(3), 128, get_preset("default"))
    base = replace(base, tone="color", noise1=None, noise2=None, jpeg1=None, jpeg2=None, fade=None,
                   scratch_seed=None, blur2=None, size1=128, size2=128)
    values = [psnr(apply_degradation(img, replace(base, blur1=gaussian_kernel(s, s, 0.0))), img)
              for s in (0.5, 1.5, 3.0)]
    assert values[0] > values[1] > values[2]
    small = [psnr(apply_degradation(img, replace(base, blur1=None, size1=side, size2=side)), img)
             for side in (64, 32, 16)]
    assert small[0] > small[1] > small[2]


def test_grayscale_stays_grayscale():
    img = synthetic_face()
    cfg = replace(DegradationConfig(), gray_prob=1.0, sepia_prob=0.0, fade_prob=1.0, scratch_prob=1.0)
    for seed in range(6):
        d = sample_degradation(np.random.default_rng(seed), 128, cfg)
        assert d.tone == "gray"
        out = apply_degradation(img, d)
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def test_colour_output_keeps_colour():
    img = synthetic_face()
    cfg = replace(DegradationConfig(), gray_prob=0.0, sepia_prob=0.0)
    out = degrade(img, np.random.default_rng(1), cfg)
    assert np.abs(out[..., 0].astype(int) - out[..., 2].astype(int)).mean() > 5


def test_kernels_are_normalised():
    g = gaussian_kernel(2.0, 0.7, 0.6)
    m = motion_kernel(9.0, 1.1)
    assert g.shape[0] % 2 == 1 and m.shape[0] % 2 == 1
    assert abs(g.sum() - 1) < 1e-5 and abs(m.sum() - 1) < 1e-5
    iso = gaussian_kernel(1.5, 1.5, 0.0)
    assert np.allclose(iso, iso.T, atol=1e-7)


def test_rejects_wrong_input():
    d = sample_degradation(np.random.default_rng(0), 32)
    with pytest.raises(ValueError):
        apply_degradation(np.zeros((32, 32), np.uint8), d)
    with pytest.raises(ValueError):
        get_preset("nope")
