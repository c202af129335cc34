"""The exemplar's own pixels for the restorer: its fine detail where its warp agrees with the input.

ASFFNet fuses the exemplar at 1/4 resolution, where a small network keeps little of the detail
that makes a face that person's (eyelids, brows, lip lines). This branch works at full
resolution:
  1. the exemplar crop is warped onto the input's landmarks by the feature warp's own MLS field,
     upsampled to pixels (`mls.upsample_grid`; "exact" convention only);
  2. its fine band (warped - G_1.5(warped)) is the detail on offer;
  3. a per-pixel confidence says where the warp fits the input: the local normalised
     correlation, over a Gaussian window (sigma 4 px), of the luma mid bands (G_1 - G_3) of
     input and warped exemplar, which survive most damage. Near 1 where eye meets eye, near 0 or
     negative on a wrong person's face, a bad warp or an occluder;
  4. three convolutions read [detail (3), confidence (1), input (3), damage levels (D, as
     constant maps)] and add a correction; the last one starts at zero (an untrained branch adds
     nothing).
All sizes in px at S = 128 scale with S.
"""
from __future__ import annotations

import torch
from torch import nn

from albumfix.restore.damage import DAMAGE_BANDS, REFERENCE_SIZE, band_split, gaussian_blur
from albumfix.restore.layers import autocast_off, leaky_relu
from albumfix.restore.mls import sample_grid, upsample_grid

DETAIL_SIGMA = 1.5
CONFIDENCE_WINDOW = 4.0
LUMA = (0.299, 0.587, 0.114)
NCC_EPS = 1e-4


def warp_exemplar(ref: torch.Tensor, feature_grid: torch.Tensor, stride: int) -> torch.Tensor:
    """The (B, 3, S, S) exemplar warped by the "exact" MLS field `feature_grid` (B, S/stride,
    S/stride, 2) of the feature warp. Returns (B, 3, S, S) in the exemplar's dtype."""
    return sample_grid(ref, upsample_grid(feature_grid, stride), "exact")


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) BT.601 luma."""
    w = torch.tensor(LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def warp_confidence(lq: torch.Tensor, warped: torch.Tensor) -> torch.Tensor:
    """Local normalised correlation of the luma mid bands of (B, 3, S, S) `lq` and `warped`:
    (B, 1, S, S) float32 in [-1, 1] (module docstring, step 3)."""
    scale = lq.shape[-1] / REFERENCE_SIZE
    with autocast_off(lq.device):
        a = band_split(_luma(lq.float()))[1]
        b = band_split(_luma(warped.float()))[1]
        sigma = CONFIDENCE_WINDOW * scale
        ab, aa, bb = (gaussian_blur(t, sigma) for t in (a * b, a * a, b * b))
        return ab / (aa * bb + NCC_EPS ** 2).sqrt()


class ExemplarDetail(nn.Module):
    """forward(lq, warped, levels): lq, warped (B, 3, S, S) in [-1, 1], levels (B, D) -> a
    correction (B, 3, S, S) from the warped exemplar's fine band and the warp's confidence."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        inputs = 3 + 1 + 3 + len(DAMAGE_BANDS)
        self.body = nn.Sequential(
            nn.Conv2d(inputs, hidden, 3, 1, 1), leaky_relu(),
            nn.Conv2d(hidden, hidden, 3, 1, 1), leaky_relu(),
            nn.Conv2d(hidden, 3, 3, 1, 1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def forward(self, lq: torch.Tensor, warped: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        detail = warped - gaussian_blur(warped, DETAIL_SIGMA * lq.shape[-1] / REFERENCE_SIZE)
        confidence = warp_confidence(lq, warped).to(lq.dtype)
        maps = levels.to(lq.dtype)[..., None, None].expand(-1, -1, *lq.shape[-2:])
        return self.body(torch.cat([detail, confidence, lq, maps], 1))
