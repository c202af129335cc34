"""Tests of the batched MLS warp against per-pixel and vectorised NumPy references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from albumfix.restore import mls
from albumfix.restore.mls import (
    landmarks_to_grid,
    mls_affine_grid,
    mls_affine_grid_numpy,
    mls_warp,
    sample_grid,
)
from conftest import fp32_switches


def _mls_pixel(p: np.ndarray, q: np.ndarray, v: np.ndarray, eps: float, anchor: str) -> np.ndarray:
    """Textbook affine MLS at one location v (2,), loops over points; (x, y) float64."""
    anchored = p if anchor == "src" else q
    w = [1.0 / ((anchored[i] - v) @ (anchored[i] - v) + eps) for i in range(len(p))]
    w_sum = sum(w)
    p_star = sum(w[i] * p[i] for i in range(len(p))) / w_sum
    q_star = sum(w[i] * q[i] for i in range(len(p))) / w_sum
    a = np.zeros((2, 2))
    b = np.zeros((2, 2))
    for i in range(len(p)):
        ph, qh = p[i] - p_star, q[i] - q_star
        if anchor == "src":  # s = (v - q*) P^-1 Q + p*, P = sum w ph^T qh, Q = sum w ph^T ph
            a += w[i] * np.outer(ph, qh)
            b += w[i] * np.outer(ph, ph)
        else:  # s = (v - q*) (sum w qh^T qh)^-1 (sum w qh^T ph) + p*
            a += w[i] * np.outer(qh, qh)
            b += w[i] * np.outer(qh, ph)
    if abs(np.linalg.det(a)) <= 1e-6 * (a**2).sum():
        return v + p_star - q_star
    return (v - q_star) @ np.linalg.inv(a) @ b + p_star


def _face_like_points(rng: np.random.Generator, n: int, size: float) -> tuple[np.ndarray, np.ndarray]:
    """Guidance points p and LQ points q (n, 2): q is a rotated, scaled, bent copy of p."""
    p = rng.uniform(0.2 * size, 0.8 * size, (n, 2))
    angle = rng.uniform(-0.2, 0.2)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * rng.uniform(0.9, 1.1)
    centre = np.full(2, size / 2)
    q = (p - centre) @ rot + centre + rng.uniform(-1, 1, 2)
    q[:, 1] += 0.04 * size * np.sin(q[:, 0] / size * 3)  # non-affine part
    return p, q


@pytest.mark.parametrize("anchor", ["src", "dst"])
def test_numpy_reference_matches_per_pixel_formula(anchor: str) -> None:
    rng = np.random.default_rng(0)
    p, q = _face_like_points(rng, 51, 12)
    grid = mls_affine_grid_numpy(p, q, 9, 11, eps=1e-8, anchor=anchor)
    assert grid.shape == (9, 11, 2)
    for row in range(9):
        for col in range(11):
            expected = _mls_pixel(p, q, np.array([col, row], float), 1e-8, anchor)
            np.testing.assert_allclose(grid[row, col], expected, atol=1e-7)


@pytest.mark.parametrize("anchor", ["src", "dst"])
def test_torch_grid_matches_numpy_for_a_batch(anchor: str) -> None:
    rng = np.random.default_rng(1)
    faces = [_face_like_points(rng, 51, 32) for _ in range(3)]
    p = np.stack([f[0] for f in faces])
    q = np.stack([f[1] for f in faces])
    p[0, :5] = np.round(p[0, :5])  # points exactly on pixel centres (weight 1/eps there)
    q[1, :5] = np.round(q[1, :5])
    got = mls_affine_grid(torch.from_numpy(p), torch.from_numpy(q), 32, 30, eps=1e-8, anchor=anchor)
    assert got.shape == (3, 32, 30, 2) and got.dtype == torch.float32
    for i in range(3):
        expected = mls_affine_grid_numpy(p[i], q[i], 32, 30, eps=1e-8, anchor=anchor)
        np.testing.assert_allclose(got[i].numpy(), expected, atol=1e-4)


@pytest.mark.parametrize("anchor", ["src", "dst"])
def test_affine_point_pairs_give_the_exact_inverse_affine_map(anchor: str) -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(4, 28, (20, 2))
    a = np.array([[1.1, 0.2], [-0.15, 0.95]])
    t = np.array([1.5, -2.0])
    q = p @ a + t
    got = mls_affine_grid(torch.from_numpy(p)[None], torch.from_numpy(q)[None], 16, 20, anchor=anchor)[0]
    gx, gy = np.meshgrid(np.arange(20.0), np.arange(16.0))
    v = np.stack((gx, gy), -1)
    np.testing.assert_allclose(got.numpy(), (v - t) @ np.linalg.inv(a), atol=1e-3)


def test_singular_system_falls_back_to_translation() -> None:
    rng = np.random.default_rng(3)
    q = rng.uniform(0, 10, (8, 2))
    p = np.tile([[4.0, 6.0]], (8, 1))  # all guidance points equal: P = 0
    got = mls_affine_grid(torch.from_numpy(p)[None], torch.from_numpy(q)[None], 5, 6, anchor="src")[0]
    gx, gy = np.meshgrid(np.arange(6.0), np.arange(5.0))
    expected = np.stack((gx, gy), -1) + p[0] - q.mean(0)  # equal weights: q* = mean(q)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-4)
    got_np = mls_affine_grid_numpy(p, q, 5, 6, anchor="src")
    np.testing.assert_allclose(got_np, expected, atol=1e-9)
    # "dst" anchor: all LQ points equal makes its system singular the same way.
    got_dst = mls_affine_grid(torch.from_numpy(q)[None], torch.from_numpy(p)[None], 5, 6, anchor="dst")[0]
    np.testing.assert_allclose(got_dst.numpy(), np.stack((gx, gy), -1) + q.mean(0) - p[0], atol=1e-4)


def _blobs(points: np.ndarray, height: int, width: int, sigma: float = 1.0) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(width, dtype=float), np.arange(height, dtype=float))
    img = np.zeros((height, width))
    for x, y in points:
        img = np.maximum(img, np.exp(-((gx - x) ** 2 + (gy - y) ** 2) / (2 * sigma**2)))
    return img


def test_exact_warp_moves_blobs_from_guidance_onto_lq_landmarks() -> None:
    rng = np.random.default_rng(4)
    q = np.array([[x, y] for x in (12, 24, 36, 48) for y in (14, 30, 46)], float)  # LQ, on pixels
    p = q + rng.uniform(2.5, 4.0, q.shape) * rng.choice([-1, 1], q.shape)  # guidance, shifted 2.5-4 px
    image = torch.from_numpy(_blobs(p, 60, 60)).float()[None, None]
    assert image[0, 0, q[:, 1].astype(int), q[:, 0].astype(int)].max() < 0.1  # not there yet
    out = mls_warp(image, torch.from_numpy(p)[None], torch.from_numpy(q)[None], convention="exact")[0, 0]
    for x, y in q.astype(int):
        window = out[y - 2 : y + 3, x - 2 : x + 3]
        assert window.max() > 0.75  # bilinear reads of a sigma-1 blob off its centre lose a bit
        assert divmod(int(window.argmax()), 5) == (2, 2)  # the peak sits on the LQ landmark


def test_published_sampling_reads_half_a_pixel_up_left_and_zeroes_out_of_range() -> None:
    ramp = torch.arange(8 * 10, dtype=torch.float32).reshape(1, 1, 8, 10) + 1.0
    coords = torch.tensor([[5.5, 3.5], [-1.0, 3.5], [12.0, 3.5]]).reshape(1, 1, 3, 2)
    out = sample_grid(ramp, coords, "published")
    assert out.shape == (1, 1, 1, 3)
    # (5.5, 3.5) -> pixel (5, 3) exactly.
    assert out[0, 0, 0, 0].item() == pytest.approx(ramp[0, 0, 3, 5].item(), abs=1e-4)
    # x = -1 and x = 12 (> W - 1) are set to x = 0, read at x = -0.5: half of column 0, half zero.
    expected_edge = 0.5 * ramp[0, 0, 3, 0].item()
    assert out[0, 0, 0, 1].item() == pytest.approx(expected_edge, abs=1e-4)
    assert out[0, 0, 0, 2].item() == pytest.approx(expected_edge, abs=1e-4)


def test_exact_sampling_reads_the_pixel_and_clamps_to_the_border() -> None:
    ramp = torch.arange(8 * 10, dtype=torch.float32).reshape(1, 1, 8, 10)
    coords = torch.tensor([[5.0, 3.0], [5.5, 3.0], [-3.0, 2.0], [20.0, 9.0]]).reshape(1, 1, 4, 2)
    out = sample_grid(ramp, coords, "exact")[0, 0, 0]
    expected = [ramp[0, 0, 3, 5], (ramp[0, 0, 3, 5] + ramp[0, 0, 3, 6]) / 2, ramp[0, 0, 2, 0], ramp[0, 0, 7, 9]]
    np.testing.assert_allclose(out.numpy(), torch.stack(expected).numpy(), atol=1e-4)


def test_landmarks_to_grid_conventions() -> None:
    pts = torch.tensor([[1.5, 5.5], [0.0, 4.0]])
    assert torch.allclose(landmarks_to_grid(pts, 4, "published"), pts / 4)
    assert torch.allclose(landmarks_to_grid(pts, 4, "exact"), torch.tensor([[0.0, 1.0], [-0.375, 0.625]]))
    with pytest.raises(ValueError):
        landmarks_to_grid(pts, 4, "other")


def test_identity_landmarks_give_an_identity_exact_warp() -> None:
    rng = np.random.default_rng(5)
    feats = torch.from_numpy(rng.normal(size=(2, 4, 16, 16))).float()
    pts = torch.from_numpy(rng.uniform(2, 14, (2, 51, 2)))
    out = mls_warp(feats, pts, pts, convention="exact")
    assert torch.allclose(out, feats, atol=1e-4)


def test_warp_under_bf16_autocast_keeps_dtype_and_float32_geometry() -> None:
    rng = np.random.default_rng(6)
    p, q = _face_like_points(rng, 51, 16)
    feats = torch.from_numpy(rng.normal(size=(1, 8, 16, 16))).float()
    pt, qt = torch.from_numpy(p)[None], torch.from_numpy(q)[None]
    reference = mls_warp(feats, pt, qt, convention="published")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grid = mls_affine_grid(pt, qt, 16, 16)
        out = mls_warp(feats.bfloat16(), pt, qt, convention="published")
    assert grid.dtype == torch.float32 and out.dtype == torch.bfloat16
    assert torch.allclose(grid, mls_affine_grid(pt, qt, 16, 16))
    assert torch.allclose(out.float(), reference, atol=0.05)


def test_the_mls_solve_runs_in_ieee_fp32_even_when_the_host_allows_tf32(host_allows_tf32, monkeypatch) -> None:
    """TF32 would move the grid by ~1e-2 px; the solve's matmuls must run with it off, and the
    process's own setting must come back afterwards."""
    seen = []
    solve = mls._solve_2x2

    def recording_solve(a, b):
        seen.append(fp32_switches()["mkldnn.matmul"])
        return solve(a, b)

    monkeypatch.setattr(mls, "_solve_2x2", recording_solve)
    p, q = _face_like_points(np.random.default_rng(8), 51, 16)
    for anchor in ("src", "dst"):
        mls_affine_grid(torch.from_numpy(p)[None], torch.from_numpy(q)[None], 16, 16, anchor=anchor)
    assert seen == ["ieee", "ieee"]
    assert fp32_switches()["mkldnn.matmul"] == "tf32"


@pytest.mark.parametrize("convention", ["published", "exact"])
def test_warp_keeps_the_features_memory_layout(convention) -> None:
    rng = np.random.default_rng(9)
    p, q = _face_like_points(rng, 51, 16)
    feats = torch.from_numpy(rng.normal(size=(2, 6, 16, 16))).float()
    pt, qt = torch.from_numpy(np.stack([p, p])), torch.from_numpy(np.stack([q, q]))
    plain = mls_warp(feats, pt, qt, convention)
    channels_last = mls_warp(feats.contiguous(memory_format=torch.channels_last), pt, qt, convention)
    assert plain.is_contiguous()
    assert channels_last.is_contiguous(memory_format=torch.channels_last) and not channels_last.is_contiguous()
    assert torch.equal(channels_last, plain)
