"""Affine moving-least-squares (MLS) warp of guidance features onto the LQ face geometry.

Coordinates: points and returned source locations are (x, y) = (column, row) in pixels of the
H x W grid being warped, pixel centres at integers. ``src_points`` p are the guidance landmarks
(where features are read), ``dst_points`` q the LQ landmarks (the output geometry). For every
output location v the grid gives the source location s(v) that output pixel reads from.

Two conventions (ASFFNET.md section 5):

"published" (the authors' ASFFNet512 code; its weights expect it):
  weights w_i = 1 / (|p_i - v|^2 + eps), anchored at the *guidance* points; weighted centroids
  p*, q*; P = sum w p^T q^, Q = sum w p^T p^ (p^, q^ centred row vectors);
  s(v) = (v - q*) P^-1 Q + p*. Landmarks are divided by the stride. Each coordinate of s below 0
  or above size - 1 is set to 0 (a defect: it jumps to the border row/column), then s is sampled
  at grid value (s - size/2) / (size/2) with align_corners=False, i.e. at pixel s - 0.5, with
  zero padding.

"exact" (albumfix's trained models):
  weights anchored at the *LQ* points q_i (v lives in the LQ geometry);
  s(v) = (v - q*) (sum w q^T q^)^-1 (sum w q^T p^) + p*, the affine MLS deformation from q to p,
  which interpolates: s(q_i) = p_i. Landmarks map to feature-cell centres,
  (x + 0.5) / stride - 0.5; s is sampled exactly at pixel s (align_corners=True) and locations
  outside the grid read the nearest edge feature (padding_mode="border"), never zeros.

Both: a (numerically) singular 2 x 2 system, |det| <= 1e-6 * ||A||_F^2, falls back to the pure
translation s(v) = v + p* - q*. Everything runs in IEEE float32 (autocast disabled, and no TF32
for the solve's matmuls even when the process allows it), batched over faces and pixels on the
features' device. The warped features keep the input's memory format (channels_last or not).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from albumfix.restore.layers import autocast_off
from albumfix.restore.precision import ieee_fp32

CONVENTIONS = ("published", "exact")
ANCHORS = ("src", "dst")
SINGULAR_RTOL = 1e-6


def _check_choice(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {allowed}, got {value!r}")


def _anchor_for(convention: str) -> str:
    """Which point set the MLS weights are measured to under `convention`."""
    _check_choice(convention, CONVENTIONS, "convention")
    return "src" if convention == "published" else "dst"


def _solve_2x2(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., 2, 2) a, b -> (a^-1 b, singular mask (...,)) by the closed-form inverse."""
    det = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
    singular = det.abs() <= SINGULAR_RTOL * a.square().sum((-1, -2))
    safe_det = torch.where(singular, torch.ones_like(det), det)
    adj = torch.stack(
        (
            torch.stack((a[..., 1, 1], -a[..., 0, 1]), -1),
            torch.stack((-a[..., 1, 0], a[..., 0, 0]), -1),
        ),
        -2,
    )
    return (adj / safe_det[..., None, None]) @ b, singular


def mls_affine_grid(
    src_points: torch.Tensor,
    dst_points: torch.Tensor,
    height: int,
    width: int,
    eps: float = 1e-8,
    anchor: str = "src",
) -> torch.Tensor:
    """Source location of every output pixel under the affine MLS warp.

    src_points, dst_points: (B, N, 2) (x, y) grid px. anchor: "src" (published formula) or
    "dst" (exact inverse), see the module docstring. Returns (B, H, W, 2) float32 (x, y) px.
    Internally the points are expressed relative to each pixel, so nearby points keep full
    float32 precision.
    """
    _check_choice(anchor, ANCHORS, "anchor")
    device = src_points.device
    with autocast_off(device), ieee_fp32(device):
        p = src_points.float()[:, None]  # (B, 1, N, 2)
        q = dst_points.float()[:, None]
        xs = torch.arange(width, device=device, dtype=torch.float32)
        ys = torch.arange(height, device=device, dtype=torch.float32)
        v = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(1, -1, 1, 2)
        p_rel, q_rel = p - v, q - v  # (B, HW, N, 2)
        anchored = p_rel if anchor == "src" else q_rel
        w = 1.0 / (anchored.square().sum(-1) + eps)
        w = w / w.sum(-1, keepdim=True)  # (B, HW, N), scale-free: cancels in A^-1 B
        p_star = (w[..., None] * p_rel).sum(-2)  # (B, HW, 2), relative to v
        q_star = (w[..., None] * q_rel).sum(-2)
        p_hat = p_rel - p_star[..., None, :]
        q_hat = q_rel - q_star[..., None, :]
        if anchor == "src":
            wp = (w[..., None] * p_hat).transpose(-1, -2)  # (B, HW, 2, N)
            m, singular = _solve_2x2(wp @ q_hat, wp @ p_hat)
        else:
            wq = (w[..., None] * q_hat).transpose(-1, -2)
            m, singular = _solve_2x2(wq @ q_hat, wq @ p_hat)
        affine = p_star - (q_star[..., None, :] @ m)[..., 0, :]
        offset = torch.where(singular[..., None], p_star - q_star, affine)
        coords = v[..., 0, :] + offset
    return coords.reshape(-1, height, width, 2)


def mls_affine_grid_numpy(
    src_points: np.ndarray,
    dst_points: np.ndarray,
    height: int,
    width: int,
    eps: float = 1e-8,
    anchor: str = "src",
) -> np.ndarray:
    """Reference implementation for one face: the formulas of the module docstring in float64.

    Vectorised over pixels, no relative-coordinate trick (the direct textbook form, as the
    authors compute it per face). src_points, dst_points: (N, 2) (x, y) px.
    Returns (H, W, 2) float64 (x, y) px. Used by tests and as the benchmark baseline.
    """
    _check_choice(anchor, ANCHORS, "anchor")
    p = np.asarray(src_points, dtype=np.float64)
    q = np.asarray(dst_points, dtype=np.float64)
    gx, gy = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    v = np.stack((gx, gy), -1).reshape(-1, 1, 2)  # (HW, 1, 2)
    anchored = p if anchor == "src" else q
    w = 1.0 / (((anchored[None] - v) ** 2).sum(-1) + eps)  # (HW, N)
    w_sum = w.sum(-1, keepdims=True)
    p_star = (w @ p) / w_sum  # (HW, 2)
    q_star = (w @ q) / w_sum
    p_hat = p[None] - p_star[:, None]  # (HW, N, 2)
    q_hat = q[None] - q_star[:, None]
    if anchor == "src":
        a = np.einsum("kn,kni,knj->kij", w, p_hat, q_hat)
        b = np.einsum("kn,kni,knj->kij", w, p_hat, p_hat)
    else:
        a = np.einsum("kn,kni,knj->kij", w, q_hat, q_hat)
        b = np.einsum("kn,kni,knj->kij", w, q_hat, p_hat)
    det = a[:, 0, 0] * a[:, 1, 1] - a[:, 0, 1] * a[:, 1, 0]
    singular = np.abs(det) <= SINGULAR_RTOL * (a**2).sum((1, 2))
    a_inv = np.stack(
        (np.stack((a[:, 1, 1], -a[:, 0, 1]), -1), np.stack((-a[:, 1, 0], a[:, 0, 0]), -1)), -2
    ) / np.where(singular, 1.0, det)[:, None, None]
    v = v[:, 0]
    affine = np.einsum("ki,kij->kj", v - q_star, a_inv @ b) + p_star
    coords = np.where(singular[:, None], v + p_star - q_star, affine)
    return coords.reshape(height, width, 2)


def landmarks_to_grid(landmarks: torch.Tensor, stride: int, convention: str) -> torch.Tensor:
    """(..., 2) (x, y) image px -> float32 px of the stride-`stride` feature grid.

    "published": x / stride. "exact": (x + 0.5) / stride - 0.5, so the centre of feature cell i
    (image px stride*i + (stride-1)/2) maps to i.
    """
    _check_choice(convention, CONVENTIONS, "convention")
    pts = landmarks.float()
    if convention == "published":
        return pts / stride
    return (pts + 0.5) / stride - 0.5


def sample_grid(features: torch.Tensor, coords: torch.Tensor, convention: str) -> torch.Tensor:
    """Bilinear read of `features` at `coords`.

    features: (B, C, H, W) float (any float dtype); coords: (B, H', W', 2) (x, y) px of the
    features' grid. Returns (B, C, H', W') in the features' dtype and memory format (computed in
    float32). Border rule per `convention`: see the module docstring.
    """
    _check_choice(convention, CONVENTIONS, "convention")
    height, width = features.shape[-2:]
    with autocast_off(features.device):
        size = torch.tensor([width, height], device=coords.device, dtype=torch.float32)
        c = coords.float()
        if convention == "published":
            c = torch.where((c < 0) | (c > size - 1), torch.zeros_like(c), c)
            grid = (c - size / 2) / (size / 2)
            out = F.grid_sample(
                features.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        else:
            grid = 2.0 * c / (size - 1) - 1.0
            out = F.grid_sample(
                features.float(), grid, mode="bilinear", padding_mode="border", align_corners=True
            )
    return out.to(features.dtype, memory_format=_memory_format(features))


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    """channels_last when (B, C, H, W) `t` is laid out channels_last only, else contiguous."""
    channels_last = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


def mls_grid(
    src_points: torch.Tensor,
    dst_points: torch.Tensor,
    height: int,
    width: int,
    convention: str = "exact",
    eps: float = 1e-8,
) -> torch.Tensor:
    """Source locations (B, H, W, 2) (x, y) px of the affine MLS warp under `convention`;
    src_points, dst_points: (B, N, 2) px of the H x W grid (see `mls_affine_grid`)."""
    return mls_affine_grid(src_points, dst_points, height, width, eps, _anchor_for(convention))


def upsample_grid(coords: torch.Tensor, stride: int) -> torch.Tensor:
    """An "exact"-convention grid of a stride-`stride` feature map -> the same warp at image
    resolution: (B, h, w, 2) feature px -> (B, h*stride, w*stride, 2) image px.

    Feature cell i is centred on image px stride * i + (stride - 1) / 2, so the values are mapped
    to image px and bilinearly resampled with align_corners=False, which reads them at exactly
    those centres (edges clamped). The MLS field is smooth, so this matches the image-resolution
    solve to a fraction of a pixel at 1/stride^2 of its cost."""
    px = coords.float() * stride + (stride - 1) / 2
    up = F.interpolate(px.permute(0, 3, 1, 2), scale_factor=stride, mode="bilinear", align_corners=False)
    return up.permute(0, 2, 3, 1)


def mls_warp(
    features: torch.Tensor,
    src_points: torch.Tensor,
    dst_points: torch.Tensor,
    convention: str = "exact",
    eps: float = 1e-8,
) -> torch.Tensor:
    """Warp `features` so that content at src_points lands on dst_points.

    features: (B, C, H, W); src_points, dst_points: (B, N, 2) (x, y) px of the features' grid
    (convert landmarks with `landmarks_to_grid`). Returns (B, C, H, W) in the features' dtype.
    """
    height, width = features.shape[-2:]
    return sample_grid(features, mls_grid(src_points, dst_points, height, width, convention, eps), convention)
