"""Training losses that need no downloaded network: pixel, structural, frequency, adversarial and
identity (dlib's face recognition network, shipped with face_recognition_models).

All image tensors are (B, 3, H, W) float in [-1, 1]; SSIM terms map them to [0, 1] internally.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from albumfix.restore.layers import SNConv2d


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean sqrt((pred - target)^2 + eps^2): a smooth L1. Returns a scalar tensor."""
    return torch.sqrt((pred - target).pow(2) + eps * eps).mean()


def psnr_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative mean per-image PSNR in dB of (B, C, H, W) images in [-1, 1] (peak 1 on [0, 1]).

    Minimising it maximises exactly the mean PSNR that `albumfix eval` reports: unlike a plain
    MSE, each image's log weighs its error relative to its own, so clean faces are not ignored
    next to badly degraded ones. Returns a scalar tensor."""
    mse = ((pred.float() - target.float()) / 2).pow(2).flatten(1).mean(1)
    return (10.0 * torch.log10(mse + eps)).mean()


def _gaussian_window(size: int, sigma: float, channels: int, device, dtype) -> torch.Tensor:
    """Separable Gaussian as a (C, 1, size, size) depthwise kernel summing to 1 per channel."""
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2.0
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean SSIM and contrast-structure term for x, y (B, C, H, W) in [0, 1]
    (Wang et al. 2004, K1 = 0.01, K2 = 0.03, valid convolution). Returns two (B,) tensors."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    groups = x.shape[1]
    mu_x = F.conv2d(x, window, groups=groups)
    mu_y = F.conv2d(y, window, groups=groups)
    sxx = F.conv2d(x * x, window, groups=groups) - mu_x ** 2
    syy = F.conv2d(y * y, window, groups=groups) - mu_y ** 2
    sxy = F.conv2d(x * y, window, groups=groups) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x ** 2 + mu_y ** 2 + c1)
    return (luminance * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(pred: torch.Tensor, target: torch.Tensor, window_size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM over the batch of two (B, C, H, W) images in [-1, 1] (computed on [0, 1] per channel)."""
    x, y = (pred.float() + 1) / 2, (target.float() + 1) / 2
    window = _gaussian_window(window_size, sigma, x.shape[1], x.device, x.dtype)
    return _ssim_parts(x, y, window)[0].mean()


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim(pred: torch.Tensor, target: torch.Tensor, scales: int = 3, window_size: int = 7,
            sigma: float = 1.0) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) with the first `scales` published weights renormalised.
    pred/target (B, C, H, W) in [-1, 1]; H, W >= window_size * 2**(scales-1). Returns a scalar."""
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], device=pred.device)
    weights = weights / weights.sum()
    x, y = (pred.float() + 1) / 2, (target.float() + 1) / 2
    window = _gaussian_window(window_size, sigma, x.shape[1], x.device, x.dtype)
    values = []
    for level in range(scales):
        full, cs = _ssim_parts(x, y, window)
        values.append((full if level == scales - 1 else cs).clamp_min(1e-6))
        if level < scales - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(values, dim=1)  # (B, scales)
    return torch.prod(stacked ** weights, dim=1).mean()


def fft_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between FFT amplitude spectra (orthonormal 2-D rFFT) of (B, C, H, W) images: a penalty on
    missing high-frequency energy that pixel losses under-weight. Returns a scalar."""
    fp = torch.fft.rfft2(pred.float(), norm="ortho").abs()
    ft = torch.fft.rfft2(target.float(), norm="ortho").abs()
    return (fp - ft).abs().mean()


class PatchDiscriminator(nn.Module):
    """Small spectrally-normalised PatchGAN: (B, 3, S, S) in [-1, 1] -> (B, 1, S/8, S/8) logits.

    Its convolutions are the generator's `SNConv2d`, so the power iteration and sigma run in
    fp32 under autocast too (on CUDA, autocast would run `torch.mv` in bf16/fp16). Parameter
    names are those of ``nn.utils.spectral_norm`` (weight_orig, weight_u, weight_v, bias)."""

    def __init__(self, width: int = 32, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [SNConv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        channels = width
        for _ in range(layers - 1):
            blocks += [SNConv2d(channels, channels * 2, 4, 2, 1), nn.LeakyReLU(0.2)]
            channels *= 2
        blocks += [SNConv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2), SNConv2d(channels, 1, 3, 1, 1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def discriminator_hinge_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the discriminator: mean relu(1 - real) + mean relu(1 + fake)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def generator_hinge_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss for the generator: -mean(fake logits)."""
    return -fake_logits.mean()


# Where dlib's 150-px face chip (get_face_chip, padding 0.25) sits in an FFHQ-aligned crop, as
# fractions of the crop side: centre (0.499, 0.600), side 0.692 (std 0.03), angle 0 (std 3.6
# degrees), measured on 40 LFW faces with albumfix's own landmarks.
CHIP_CENTRE = (0.499, 0.600)
CHIP_SIDE = 0.692
CHIP_JITTER = 0.03  # random shift and scale of the chip window, fraction of the crop side


class IdentityLoss(nn.Module):
    """Identity and feature losses with dlib's face recognition network (frozen; albumfix's
    torch port, `albumfix.faces.backends.dlib_resnet`).

    forward(pred, target): (B, 3, S, S) in [-1, 1], FFHQ-aligned crops -> (identity, feature):
    identity = mean 1 - cos(descriptor(pred), descriptor(target)); feature = mean over the five
    stages of |f(pred) - f(target)| / mean |f(target)|. Both crops are resampled to dlib's chip
    with one random window jitter per sample (CHIP_JITTER), so the loss cannot be met by a fixed
    adversarial pattern (30 gradient steps on one fixed chip turn a face into another person's
    with a 7-grey-level change): it is a guide beside the pixel losses, never alone.
    """

    def __init__(self, jitter: float = CHIP_JITTER) -> None:
        super().__init__()
        import copy

        from albumfix.faces.backends.dlib_resnet import CHIP_SIZE, load_dlib_resnet

        self.net = copy.deepcopy(load_dlib_resnet()).requires_grad_(False).eval()
        self.size = CHIP_SIZE
        self.jitter = jitter

    def _chips(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, [images.shape[0], 3, self.size, self.size], align_corners=False)
        chips = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (chips + 1.0) * 127.5  # dlib's network takes 0-255 pixel units

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch = pred.shape[0]
        noise = (torch.rand(batch, 3, device=pred.device) * 2 - 1) * self.jitter
        side = CHIP_SIDE * (1 + noise[:, 2])
        theta = torch.zeros(batch, 2, 3, device=pred.device)
        theta[:, 0, 0] = side
        theta[:, 1, 1] = side
        theta[:, 0, 2] = (CHIP_CENTRE[0] + noise[:, 0]) * 2 - 1  # normalised coordinates, -1..1
        theta[:, 1, 2] = (CHIP_CENTRE[1] + noise[:, 1]) * 2 - 1
        desc_p, feats_p = self.net(self._chips(pred, theta), return_features=True)
        with torch.no_grad():
            desc_t, feats_t = self.net(self._chips(target, theta), return_features=True)
        identity = (1.0 - F.cosine_similarity(desc_p, desc_t, dim=1)).mean()
        feature = torch.stack([(fp - ft).abs().mean() / (ft.abs().mean() + 1e-6)
                               for fp, ft in zip(feats_p, feats_t)]).mean()
        return identity, feature


@dataclass(frozen=True)
class LossWeights:
    """Weights of the generator's loss terms (0 disables a term).

    pixel: Charbonnier; psnr: negative per-image PSNR in dB (for a last, metric-matched stage; a
    weight near 0.01 puts it on the Charbonnier's scale); ssim: 1 - MS-SSIM; fft: amplitude-spectrum
    L1; adversarial: hinge GAN (needs a discriminator; off by default because CPU training is too
    short for a stable GAN); identity, feature: `IdentityLoss` terms (dlib's network, no download);
    damage: mean squared error of a damage head's predicted levels against the pair's own
    (`albumfix.restore.damage.damage_levels`; models with a damage head only).
    """

    pixel: float = 1.0
    psnr: float = 0.0
    ssim: float = 0.2
    fft: float = 0.05
    adversarial: float = 0.0
    identity: float = 0.0
    feature: float = 0.0
    damage: float = 0.0


@dataclass
class LossValue:
    """total: scalar tensor to backpropagate; terms: each weighted term as a float, for the log."""

    total: torch.Tensor
    terms: dict[str, float]


def restoration_loss(pred: torch.Tensor, target: torch.Tensor, weights: LossWeights,
                     fake_logits: torch.Tensor | None = None, ms_ssim_scales: int = 3,
                     identity_loss: IdentityLoss | None = None,
                     damage: tuple[torch.Tensor, torch.Tensor] | None = None) -> LossValue:
    """The generator's loss. pred/target (B, 3, S, S) in [-1, 1]; fake_logits: the discriminator's
    output on pred (needed when weights.adversarial > 0); identity_loss: needed when
    weights.identity or weights.feature > 0; damage: (predicted, true) levels, each (B, D), for
    the damage term."""
    parts: dict[str, torch.Tensor] = {}
    if weights.damage and damage is not None:
        predicted, true = damage
        parts["damage"] = weights.damage * torch.mean((predicted.float() - true.float()) ** 2)
    if weights.identity or weights.feature:
        if identity_loss is None:
            raise ValueError("identity or feature weight > 0 needs an IdentityLoss")
        identity, feature = identity_loss(pred, target)
        if weights.identity:
            parts["identity"] = weights.identity * identity
        if weights.feature:
            parts["feature"] = weights.feature * feature
    if weights.pixel:
        parts["pixel"] = weights.pixel * charbonnier_loss(pred.float(), target.float())
    if weights.psnr:
        parts["psnr"] = weights.psnr * psnr_loss(pred, target)
    if weights.ssim:
        parts["ssim"] = weights.ssim * (1.0 - ms_ssim(pred, target, scales=ms_ssim_scales))
    if weights.fft:
        parts["fft"] = weights.fft * fft_loss(pred, target)
    if weights.adversarial:
        if fake_logits is None:
            raise ValueError("adversarial weight > 0 needs the discriminator's logits")
        parts["adv"] = weights.adversarial * generator_hinge_loss(fake_logits.float())
    total = torch.stack(list(parts.values())).sum()
    return LossValue(total=total, terms={k: float(v.detach()) for k, v in parts.items()})
