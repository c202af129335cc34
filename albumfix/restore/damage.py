"""How damaged a face is, by frequency band, and how a restorer is conditioned on it.

Damage levels: for an input x and its truth y, both (B, 3, S, S) in [-1, 1], the error e = x - y
is split into DAMAGE_BANDS bands with Gaussian low-passes G_s (sigma s px at S = 128, scaled
with S): fine = e - G_1(e), mid = G_1(e) - G_3(e), coarse = G_3(e). A band's level is its mean
power in decibels, mapped to about [-2.5, 1]: (10 log10(mean(band^2) + 1e-5) + 25) / 10. Lost
resolution and blur show in fine and mid, noise and JPEG mostly in fine, tone and fading in
coarse; a nearly clean face reads low in all three. The levels need no record of how the damage
was made, so they label every training pair alike (crops degraded on the fly and whole photos
damaged through the pipeline).

`DamageEstimator` predicts the levels from the input alone (about 15 MMAC a 128-px face);
`DamageModulation` turns them into a per-channel scale and shift of the decoder's input and a
gain of the restorer's correction (zero-initialised: an untrained head changes nothing).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from albumfix.restore.layers import autocast_off, leaky_relu

DAMAGE_BANDS = ("fine", "mid", "coarse")
BAND_SIGMAS = (1.0, 3.0)  # px at S = 128
LEVEL_FLOOR = 1e-5
LEVEL_OFFSET_DB = 25.0
LEVEL_SCALE_DB = 10.0
REFERENCE_SIZE = 128


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian low-pass of (B, C, H, W) x, sigma in px, reflect border; same shape."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    channels = x.shape[1]
    pad = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(pad, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def band_split(x: torch.Tensor) -> list[torch.Tensor]:
    """(B, C, S, S) -> [fine, mid, coarse], each (B, C, S, S), summing to x (module docstring)."""
    scale = x.shape[-1] / REFERENCE_SIZE
    low1 = gaussian_blur(x, BAND_SIGMAS[0] * scale)
    low3 = gaussian_blur(x, BAND_SIGMAS[1] * scale)
    return [x - low1, low1 - low3, low3]


def damage_levels(lq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) input and truth in [-1, 1] -> (B, len(DAMAGE_BANDS)) float32 band levels."""
    with autocast_off(lq.device):
        bands = band_split(lq.float() - target.float())
        power = torch.stack([b.square().mean((1, 2, 3)) for b in bands], 1)
        return (10 * torch.log10(power + LEVEL_FLOOR) + LEVEL_OFFSET_DB) / LEVEL_SCALE_DB


def levels_to_db(levels: torch.Tensor) -> torch.Tensor:
    """Band levels -> band error power in dB (of [-1, 1] images), the inverse of the mapping."""
    return levels * LEVEL_SCALE_DB - LEVEL_OFFSET_DB


@torch.no_grad()
def estimated_and_true_db(estimator: nn.Module, lq: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The band error powers in dB that `estimator` reads from (B, 3, S, S) `lq`, and the true
    ones against `target`: two (B, len(DAMAGE_BANDS)) float32 tensors on the CPU."""
    return levels_to_db(estimator(lq)).float().cpu(), levels_to_db(damage_levels(lq, target)).cpu()


class DamageEstimator(nn.Module):
    """(B, 3, S, S) input in [-1, 1] -> (B, len(DAMAGE_BANDS)) predicted damage levels.

    Four 3x3 conv stages (the first at full resolution, then stride 2) and a linear head on the
    per-channel mean and std of the last features, so it sees both texture and its spread.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64), hidden: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(c_in, width, 3, 1 if i == 0 else 2, 1), leaky_relu()]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(2 * c_in, hidden), leaky_relu(), nn.Linear(hidden, len(DAMAGE_BANDS)))

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        f = self.features(lq).flatten(2)
        return self.head(torch.cat([f.mean(-1), f.std(-1)], 1))


class DamageModulation(nn.Module):
    """Damage levels (B, D) -> scale and shift (B, C, 1, 1) of C-channel features and a gain (B, 1,
    1, 1) of the correction: features * (1 + scale) + shift, correction * (1 + gain). The last
    layer starts at zero, so an untrained modulation is the identity."""

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.channels = channels
        self.mlp = nn.Sequential(nn.Linear(len(DAMAGE_BANDS), hidden), leaky_relu(), nn.Linear(hidden, 2 * channels + 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.mlp(levels)[..., None, None]
        c = self.channels
        return out[:, :c], out[:, c:2 * c], out[:, 2 * c:]
