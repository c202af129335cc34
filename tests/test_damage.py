"""Tests of the damage-aware restorer: band levels, the estimator, the modulation, the exemplar's
full-resolution detail branch and the upsampled warp field."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from albumfix.restore import ASFFNet, ASFFNetConfig
from albumfix.restore.damage import (
    DAMAGE_BANDS, DamageEstimator, band_split, damage_levels, gaussian_blur, levels_to_db,
)
from albumfix.restore.exemplar_detail import warp_confidence
from albumfix.restore.mls import landmarks_to_grid, mls_grid, upsample_grid
from conftest import tiny_model_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _faces(batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(B, 3, S, S) in [-1, 1]: smooth random shapes with edges, like a face's features."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, size // 8, size // 8, generator=g) * 2 - 1
    img = torch.nn.functional.interpolate(coarse, size=size, mode="nearest")
    return gaussian_blur(img, 0.7).clamp(-1, 1)


def test_bands_sum_to_the_signal_and_blur_keeps_the_mean():
    x = _faces(2)
    fine, mid, coarse = band_split(x)
    assert torch.allclose(fine + mid + coarse, x, atol=1e-5)
    assert torch.allclose(gaussian_blur(x, 2.0).mean((2, 3)), x.mean((2, 3)), atol=2e-2)


def test_levels_read_each_kind_of_damage_in_its_band():
    truth = _faces(1, seed=1)
    clean = damage_levels(truth, truth)[0]
    noisy = damage_levels(truth + 0.1 * torch.randn(truth.shape, generator=torch.Generator().manual_seed(2)), truth)[0]
    blurred = damage_levels(gaussian_blur(truth, 2.0), truth)[0]
    faded = damage_levels(truth * 0.8 + 0.1, truth)[0]
    fine, mid, coarse = range(len(DAMAGE_BANDS))
    assert torch.all(clean <= noisy) and torch.all(clean <= faded)
    assert noisy[fine] - noisy[coarse] > 0.5  # white noise: 5 dB more power in the fine band
    assert blurred[mid] > clean[mid] + 1.0 and blurred[fine] > clean[fine] + 1.0
    assert faded[coarse] > faded[fine] + 1.0  # a tone change lives in the coarse band
    # the mapping to dB is the documented one: 10 log10(power + 1e-5)
    power = (0.1 * torch.ones(1, 3, 64, 64)).square().mean()
    levels = damage_levels(torch.full((1, 3, 64, 64), 0.1), torch.zeros(1, 3, 64, 64))
    assert float(levels_to_db(levels)[0, 2]) == pytest.approx(10 * np.log10(float(power) + 1e-5), abs=0.05)


def test_the_estimator_learns_to_read_the_noise_level():
    torch.manual_seed(0)
    estimator = DamageEstimator(widths=(8, 8, 8, 8), hidden=16)
    optimizer = torch.optim.Adam(estimator.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(3)

    def batch():
        truth = _faces(8, size=64, seed=int(torch.randint(0, 10_000, (1,), generator=g)))
        sigma = torch.rand(8, 1, 1, 1, generator=g) * 0.3
        lq = truth + sigma * torch.randn(truth.shape, generator=g)
        return lq, damage_levels(lq, truth)

    test_lq, test_levels = batch()
    spread = float(test_levels.var(0).mean())  # the error of always answering the mean level
    for _ in range(300):
        lq, levels = batch()
        loss = ((estimator(lq) - levels) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = float(((estimator(test_lq) - test_levels) ** 2).mean())
    assert after < 0.25 * spread


AWARE = ASFFNetConfig(**{**tiny_model_config("test-aware", residual=True, tone_head=True).__dict__,
                         "name": "test-aware", "damage_head": True, "exemplar_detail": True})


def _inputs(batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
    ref = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
    lm = torch.rand(batch, 68, 2, generator=g) * 16 + 8
    return lq, ref, lm, lm + torch.randn(batch, 68, 2, generator=g)


def test_an_untrained_damage_head_and_detail_branch_restore_as_the_model_without_them():
    torch.manual_seed(0)
    aware = ASFFNet(AWARE).eval()
    plain = ASFFNet(tiny_model_config("test-plain", residual=True, tone_head=True)).eval()
    missing = set(aware.state_dict()) - set(plain.state_dict())
    assert missing and all(k.split(".")[0] in ("damage", "damage_modulation", "exemplar_detail") for k in missing)
    plain.load_state_dict({k: v for k, v in aware.state_dict().items() if k not in missing})
    with torch.inference_mode():
        assert torch.allclose(aware(*_inputs()), plain(*_inputs()), atol=1e-6)


def test_the_damage_levels_steer_a_trained_modulation_and_the_detail_branch_reads_the_exemplar():
    torch.manual_seed(0)
    model = ASFFNet(AWARE).eval()
    torch.nn.init.normal_(model.damage_modulation.mlp[-1].weight, std=0.5)
    torch.nn.init.normal_(model.exemplar_detail.body[-1].weight, std=0.1)
    lq, ref, lm, ref_lm = _inputs()
    with torch.inference_mode():
        estimated = model(lq, ref, lm, ref_lm)
        assert torch.equal(estimated, model(lq, ref, lm, ref_lm, damage=model.damage(lq)))
        mild = model(lq, ref, lm, ref_lm, damage=torch.full((2, 3), -2.0))
        heavy = model(lq, ref, lm, ref_lm, damage=torch.full((2, 3), 1.0))
        assert (mild - heavy).abs().mean() > 1e-3
        other = model(lq, torch.flip(ref, dims=(3,)), lm, ref_lm)
        assert (other - estimated).abs().mean() > 1e-4
    with pytest.raises(ValueError, match="exemplar_detail"):
        ASFFNetConfig(name="bad", size=32, residual=True, exemplar_detail=True)
    with pytest.raises(ValueError, match="damage_head"):
        ASFFNetConfig(name="bad", size=32, damage_head=True)


def test_the_upsampled_warp_field_matches_the_full_resolution_solve():
    g = torch.Generator().manual_seed(4)
    size, stride = 64, 4
    dst = torch.rand(2, 51, 2, generator=g) * 40 + 12
    src = dst * 0.95 + 2.0 + torch.randn(2, 51, 2, generator=g) * 0.8
    feature = mls_grid(landmarks_to_grid(src, stride, "exact"), landmarks_to_grid(dst, stride, "exact"),
                       size // stride, size // stride)
    full = mls_grid(src, dst, size, size)
    up = upsample_grid(feature, stride)
    assert up.shape == full.shape
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert float((up - full)[inner].abs().median()) < 0.3
    same = landmarks_to_grid(dst, stride, "exact")
    identity = upsample_grid(mls_grid(same, same, 16, 16), stride)
    xs = torch.arange(size, dtype=torch.float32)
    expected = torch.stack(torch.meshgrid(xs, xs, indexing="xy"), -1)
    assert torch.allclose(identity[0, 4:-4, 4:-4], expected[4:-4, 4:-4], atol=1e-3)


def test_the_warp_confidence_is_high_on_the_same_face_and_low_on_another():
    face = _faces(1, size=64, seed=5)
    other = _faces(1, size=64, seed=6)
    noisy = face + 0.05 * torch.randn(face.shape, generator=torch.Generator().manual_seed(7))
    same = warp_confidence(noisy, face)
    different = warp_confidence(noisy, other)
    assert same.shape == (1, 1, 64, 64)
    assert float(same.mean()) > 0.8 and float(different.mean()) < 0.3
    assert float(same.min()) >= -1.001 and float(same.max()) <= 1.001
