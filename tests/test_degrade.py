"""Tests of the synthetic album degradation (albumfix.degrade)."""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from albumfix.degrade import (
    DAMAGE_FAMILIES,
    DegradationConfig,
    apply_degradation,
    apply_look,
    apply_photo_damage,
    apply_tone,
    degrade,
    disk_kernel,
    gaussian_kernel,
    get_preset,
    motion_kernel,
    sample_degradation,
    sample_photo_damage,
)
from albumfix.train.metrics import psnr


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
@pytest.mark.parametrize("preset", ["mild", "light", "default", "heavy"])
def test_shape_and_dtype(size, preset):
    img = synthetic_face(size)
    for seed in range(4):
        out = degrade(img, np.random.default_rng(seed), get_preset(preset))
        assert out.shape == (size, size, 3)
        assert out.dtype == np.uint8


def test_psnr_falls_with_strength():
    img = synthetic_face()
    means = []
    for preset in ("mild", "light", "default", "heavy"):
        values = []
        for seed in range(12):
            d = sample_degradation(np.random.default_rng(seed), 128, get_preset(preset))
            values.append(psnr(apply_degradation(img, d), apply_tone(img, d.tone)))
        means.append(np.mean(values))
    assert means[0] > means[1] > means[2] > means[3]


def test_psnr_falls_with_blur_and_downscale():
    img = synthetic_face()
    base = sample_degradation(np.random.default_rng(3), 128, get_preset("default"))
    base = replace(base, tone="color", noise1=None, noise2=None, jpeg1=None, jpeg2=None, fade=None,
                   scratch_seed=None, blur2=None, scale1=1.0, scale2=1.0)
    values = [psnr(apply_degradation(img, replace(base, blur1=gaussian_kernel(s, s, 0.0))), img)
              for s in (0.5, 1.5, 3.0)]
    assert values[0] > values[1] > values[2]
    small = [psnr(apply_degradation(img, replace(base, blur1=None, scale1=128 / side, scale2=128 / side)), img)
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


@pytest.mark.parametrize("family", DAMAGE_FAMILIES)
def test_photo_damage_keeps_size_and_look_and_is_seeded(family):
    photo = cv2.resize(synthetic_face(96, seed=4), (150, 110), interpolation=cv2.INTER_CUBIC)
    damage = sample_photo_damage(np.random.default_rng(11), family)
    damaged, truth = apply_photo_damage(photo, damage)
    assert damaged.shape == truth.shape == photo.shape and damaged.dtype == np.uint8
    again = apply_photo_damage(photo, sample_photo_damage(np.random.default_rng(11), family))
    assert np.array_equal(damaged, again[0]) and np.array_equal(truth, again[1])
    # the damage removes detail: the truth is closer to the damaged photo after both are blurred
    blur = lambda x: cv2.GaussianBlur(x, (0, 0), 3.0)  # noqa: E731
    assert psnr(blur(damaged), blur(truth)) > psnr(damaged, truth) + 2.0


def test_truth_carries_the_look_of_the_damaged_photo():
    photo = synthetic_face(128, seed=5)
    cfg = replace(DegradationConfig(), gray_prob=0.0, sepia_prob=1.0, fade_prob=1.0, scratch_prob=0.0,
                  blur1_prob=0.0, blur2_prob=0.0, noise1_prob=0.0, noise2_prob=0.0, jpeg1_prob=0.0,
                  jpeg2_prob=0.0, scale=(1.0, 1.0))
    d = sample_degradation(np.random.default_rng(2), 128, cfg)
    assert d.tone == "sepia" and d.fade is not None
    # with no detail damage, the damaged photo is its truth up to rounding
    assert np.abs(apply_degradation(photo, d).astype(int) - apply_look(photo, d).astype(int)).max() <= 1
    assert psnr(apply_look(photo, d), photo) < 25  # and the look itself is not the clean photo


def test_aged_print_truth_has_the_tone_and_vignette():
    photo = np.full((120, 160, 3), 180, np.uint8)
    for seed in range(20):
        damage = sample_photo_damage(np.random.default_rng(seed), "aged-print")
        if damage.aged.tone == "sepia":
            break
    _, truth = apply_photo_damage(photo, damage)
    centre, corner = truth[60, 80].astype(int), truth[2, 2].astype(int)
    assert centre.sum() > corner.sum()  # vignette darkens the corners
    assert centre[0] > centre[2]  # sepia: red above blue


def test_disk_kernel_is_a_round_normalised_lens():
    k = disk_kernel(2.7)
    assert k.shape == (7, 7) and abs(k.sum() - 1) < 1e-6
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1]) and np.allclose(k, k[:, ::-1])
    assert k[3, 3] == k.max() and k[3, 0] > 0 and k[0, 0] == 0  # the corners lie outside the disk


def test_phone_snap_truth_has_the_light_and_glare_and_gray_stays_gray():
    photo = np.full((120, 160, 3), 150, np.uint8)
    for seed in range(40):
        damage = sample_photo_damage(np.random.default_rng(seed), "phone-snap")
        if damage.phone.tone == "gray" and damage.phone.glare > 0:
            break
    damaged, truth = apply_photo_damage(photo, damage)
    p = damage.phone
    assert truth.std() > 3  # uneven light and glare are the look: the truth carries them
    gy, gx = int(p.glare_xy[1] * 119), int(p.glare_xy[0] * 159)
    assert truth[gy, gx].mean() > np.median(truth)  # the glare patch is brighter
    # a gray print stays gray through the colour noise of the sensor
    assert np.array_equal(damaged[..., 0], damaged[..., 1]) and np.array_equal(damaged[..., 1], damaged[..., 2])
    # the light falloff survives the capture: damaged and truth agree at low frequencies
    blur = lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), 8.0)  # noqa: E731
    assert np.abs(blur(damaged) - blur(truth))[20:-20, 20:-20].max() < 6


def test_the_mild_calibration_family_is_milder_than_the_training_family():
    """"training-mild" is the crop model's mild preset on the whole photo: its damaged photos sit
    nearer their truth than the "training" family's, seed for seed."""
    photo = cv2.resize(synthetic_face(96, seed=4), (150, 110), interpolation=cv2.INTER_CUBIC)
    means = {}
    for family in ("training", "training-mild"):
        means[family] = np.mean([psnr(*apply_photo_damage(photo, sample_photo_damage(np.random.default_rng(s), family)))
                                 for s in range(12)])
    assert means["training-mild"] > means["training"] + 3.0


def test_unknown_family_is_refused():
    with pytest.raises(ValueError):
        sample_photo_damage(np.random.default_rng(0), "nope")
