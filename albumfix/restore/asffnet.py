"""ASFFNet: reference-guided face restoration with adaptive spatial feature fusion.

Written from the description in ASFFNET.md (Li et al., CVPR 2020; the authors' 512-px layout).
Module attribute names reproduce the authors' state-dict keys, so ``ASFFNet(ASFFNET512)`` loads
their ``ASFFNet512.pth`` strictly. Widths, depth and crop size come from an `ASFFNetConfig`.

Data flow (S = config.size, F = config.feature_channels, features at S/4):
  lq -> LQ_Model -> f_d;  ref -> Ref_Model -> f_g;  f_g <- AdaIN(f_g, f_d)
  f_g -> MLS warp (ref landmarks -> lq landmarks) -> Component_CModel -> g
  landmark mask of the LQ face -> Mask_CModel -> m
  x = f_d; x = ASFF block(x, g, m) (asff_blocks times); x = SFF(x, g, m)
  out = UpModel(MSDilate(x) + f_d)   (B, 3, S, S) tanh
  residual configurations: out = clamp(tone(lq) + out), tone = identity or GlobalTone
  damage_head: levels = DamageEstimator(lq); the decoder's input is scaled and shifted by them
    and the correction multiplied by (1 + gain(levels)); exemplar_detail adds a full-resolution
    correction from the pixel-warped exemplar's fine band (albumfix.restore.exemplar_detail)
"""
from __future__ import annotations

import torch
from torch import nn

from albumfix.restore.configs import ASFFNetConfig
from albumfix.restore.damage import DamageEstimator, DamageModulation
from albumfix.restore.exemplar_detail import ExemplarDetail, warp_exemplar
from albumfix.restore.layers import autocast_off, has_spectral_norm, leaky_relu, sn_conv
from albumfix.restore.mls import landmarks_to_grid, mls_grid, sample_grid

FEATURE_STRIDE = 4
MLS_POINTS = slice(17, 68)  # brows, nose, eyes, mouth: 51 points; the jaw is ignored
ADAIN_EPS = 1e-5


def adaptive_instance_norm(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """Give `content` the per-sample, per-channel mean and std of `style`.

    content, style: (B, C, H, W). std = sqrt(unbiased variance + 1e-5). Computed in float32;
    returns the content's dtype.
    """
    with autocast_off(content.device):
        c = content.float().flatten(2)
        s = style.float().flatten(2)
        c_mean, c_std = c.mean(-1, keepdim=True), (c.var(-1, keepdim=True) + ADAIN_EPS).sqrt()
        s_mean, s_std = s.mean(-1, keepdim=True), (s.var(-1, keepdim=True) + ADAIN_EPS).sqrt()
        out = (c - c_mean) / c_std * s_std + s_mean
    return out.reshape(content.shape).to(content.dtype)


def landmark_mask(landmarks: torch.Tensor, size: int, radius: int) -> torch.Tensor:
    """Binary image of squares around the LQ landmarks 17-67 (ASFFNET.md section 6).

    landmarks: (B, 68, 2) (x, y) crop px. A point counts when 1 < x < size - 2 and
    1 < y < size - 2 (the published test); its square covers rows floor(y) - radius ..
    ceil(y) + radius (end exclusive), the same for columns, clipped to the crop (the published
    code's negative-start slice, which empties squares near the top/left edge, is not
    reproduced). Returns (B, 1, size, size) float32 in {0, 1}.
    """
    pts = landmarks[:, MLS_POINTS].float()
    valid = ((pts > 1) & (pts < size - 2)).all(-1, keepdim=True)  # (B, N, 1)
    lo = torch.floor(pts) - radius  # (B, N, 2)
    hi = torch.ceil(pts) + radius
    idx = torch.arange(size, device=pts.device, dtype=torch.float32)
    inside = (idx >= lo[..., None]) & (idx < hi[..., None]) & valid[..., None]  # (B, N, 2, S)
    cols, rows = inside[:, :, 0].float(), inside[:, :, 1].float()  # (B, N, S)
    with autocast_off(pts.device):
        hits = rows.transpose(1, 2) @ cols  # (B, S, S): squares covering each pixel
    return (hits > 0).float()[:, None]


class ResBlock(nn.Module):
    """x + SNconv(dil b)(LReLU(SNconv(dil a)(x))), C channels, 3x3."""

    def __init__(self, channels: int, dilations: tuple[int, int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            sn_conv(channels, channels, 3, dilation=dilations[0]),
            leaky_relu(),
            sn_conv(channels, channels, 3, dilation=dilations[1]),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x + self.stem(x)


class FeatureExtractor(nn.Module):
    """LQ_Model / Ref_Model: (B, 3, S, S) in [-1, 1] -> (B, F, S/4, S/4)."""

    STAGE_DILATIONS = ((7, 5), (5, 3), (3, 1))

    def __init__(self, widths: tuple[int, int, int], out_channels: int, res_blocks: int) -> None:
        super().__init__()
        ins = (3, widths[0], widths[1])
        self.num_res_blocks = res_blocks
        for stage, (c_in, c_out, dil) in enumerate(zip(ins, widths, self.STAGE_DILATIONS), 1):
            stride = 1 if stage == 1 else 2
            down = nn.Sequential(sn_conv(c_in, c_out, 3, stride), leaky_relu())
            setattr(self, f"conv{stage}", down)
            for i in range(1, res_blocks + 1):
                setattr(self, f"stem{stage}_{i}", ResBlock(c_out, dil))
        self.conv4 = nn.Sequential(sn_conv(widths[2], out_channels, 3), leaky_relu())

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = img
        for stage in (1, 2, 3):
            x = getattr(self, f"conv{stage}")(x)
            for i in range(1, self.num_res_blocks + 1):
                x = getattr(self, f"stem{stage}_{i}")(x)
        return self.conv4(x)


class MaskEncoder(nn.Module):
    """Mask_CModel: (B, 1, S, S) binary landmark mask -> (B, F, S/4, S/4) in (0, 1)."""

    def __init__(self, widths: tuple[int, int, int], out_channels: int) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.model = nn.Sequential(
            nn.Conv2d(1, w1, 9, 2, 4, bias=False),
            leaky_relu(),
            nn.Conv2d(w1, w2, 7, 1, 3, bias=False),
            leaky_relu(),
            nn.Conv2d(w2, w3, 5, 2, 2, bias=False),
            leaky_relu(),
            nn.Conv2d(w3, out_channels, 3, 1, 1, bias=False),
            leaky_relu(),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.model(mask)


class ResUnit(nn.Module):
    """x + LReLU(SNconv3x3(LReLU(SNconv3x3(x)))), C channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.Model = nn.Sequential(
            sn_conv(channels, channels, 3),
            leaky_relu(),
            sn_conv(channels, channels, 3),
            leaky_relu(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.Model(x)


class ComponentConditioner(nn.Module):
    """Component_CModel: warped guidance features (B, F, h, w) -> conditioned (B, F, h, w)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(
            sn_conv(channels, channels, 1),
            leaky_relu(),
            ResUnit(channels),
            sn_conv(channels, channels, 1),
            leaky_relu(),
            ResUnit(channels),
            sn_conv(channels, channels, 1),
            leaky_relu(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _conv_pair(channels: int) -> nn.Sequential:
    """SNconv3x3, LReLU, SNconv3x3 (the Degraded/Ref branches of an SFF layer)."""
    return nn.Sequential(
        sn_conv(channels, channels, 3), leaky_relu(), sn_conv(channels, channels, 3)
    )


class SFFLayer(nn.Module):
    """One spatial feature fusion: out = d + (r - d) * a (no sigmoid on a).

    d = DegradedModel(x), r = RefModel(g), a = MaskModel([MaskConcat(m), DegradedConcat(d),
    RefConcat(r)]). The final layer (`last`) uses a spectral-normalised second MaskModel conv;
    the block-internal layers a plain one (as in the published weights).
    """

    def __init__(self, channels: int, last: bool = False) -> None:
        super().__init__()
        half = channels // 2
        second = sn_conv(channels, channels, 3, bias=False) if last else nn.Conv2d(
            channels, channels, 3, 1, 1, bias=False
        )
        self.MaskModel = nn.Sequential(
            sn_conv(3 * half, channels, 3, bias=False), leaky_relu(), second
        )
        self.MaskConcat = nn.Sequential(sn_conv(channels, half, 1))
        self.DegradedModel = _conv_pair(channels)
        self.DegradedConcat = nn.Sequential(sn_conv(channels, half, 1))
        self.RefModel = _conv_pair(channels)
        self.RefConcat = nn.Sequential(sn_conv(channels, half, 1))

    def forward(self, x: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """x: LQ stream, g: conditioned guidance, m: mask features, all (B, F, h, w)."""
        d = self.DegradedModel(x)
        r = self.RefModel(g)
        a = self.MaskModel(
            torch.cat((self.MaskConcat(m), self.DegradedConcat(d), self.RefConcat(r)), 1)
        )
        return d + (r - d) * a


def _fusion_convs(channels: int) -> nn.Sequential:
    """SNconv5x5, LReLU, SNconv3x3, LReLU (between the two SFF layers of an ASFF block)."""
    return nn.Sequential(
        sn_conv(channels, channels, 5), leaky_relu(), sn_conv(channels, channels, 3), leaky_relu()
    )


class ASFFBlock(nn.Module):
    """x + conv1(sff1(conv0(sff0(x, g, m)), g, m))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.sff0 = SFFLayer(channels)
        self.conv0 = _fusion_convs(channels)
        self.sff1 = SFFLayer(channels)
        self.conv1 = _fusion_convs(channels)

    def forward(self, x: torch.Tensor, g: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        y = self.conv0(self.sff0(x, g, m))
        return x + self.conv1(self.sff1(y, g, m))


class MSDilate(nn.Module):
    """Multi-scale dilated block: x + convi(concat of 4 dilated branches), F channels."""

    DILATIONS = (4, 3, 2, 1)

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        for i, dil in enumerate(self.DILATIONS, 1):
            branch = nn.Sequential(sn_conv(channels, half, 3, dilation=dil), leaky_relu())
            setattr(self, f"conv{i}", branch)
        self.convi = nn.Sequential(
            sn_conv(half * len(self.DILATIONS), channels, 3),
            leaky_relu(),
            sn_conv(channels, channels, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [getattr(self, f"conv{i}")(x) for i in range(1, len(self.DILATIONS) + 1)]
        return x + self.convi(torch.cat(branches, 1))


class UpDilRes(nn.Module):
    """Two residual units; unit k adds [SNconv(dil_k), LReLU, SNconv(dil_k), LReLU]."""

    def __init__(self, channels: int, dilations: tuple[int, int]) -> None:
        super().__init__()
        for k, dil in enumerate(dilations):
            setattr(
                self,
                f"Model{k}",
                nn.Sequential(
                    sn_conv(channels, channels, 3, dilation=dil),
                    leaky_relu(),
                    sn_conv(channels, channels, 3, dilation=dil),
                    leaky_relu(),
                ),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.Model0(x)
        return x + self.Model1(x)


TONE_QUANTILES = (0.02, 0.5, 0.98)


class GlobalTone(nn.Module):
    """Per-image, per-channel affine tone correction of the LQ crop (faded prints).

    forward(lq, features): lq (B, 3, S, S) in [-1, 1], features (B, F, h, w) -> lq * (1 + gain)
    + offset, gain and offset (B, 3) from an MLP over the crop's per-channel mean, std and
    TONE_QUANTILES and the features' channel means and stds. The last layer starts at zero, so an
    untrained head is the identity.
    """

    def __init__(self, channels: int, hidden: int = 64) -> None:
        super().__init__()
        inputs = 2 * channels + 3 * (2 + len(TONE_QUANTILES))
        self.mlp = nn.Sequential(nn.Linear(inputs, hidden), leaky_relu(), nn.Linear(hidden, 6))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def affine(self, lq: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(gain, offset), each (B, 3, 1, 1) float32: the correction is lq * (1 + gain) + offset."""
        with autocast_off(lq.device):
            image, features = lq.float(), features.float()
            pixels = image.flatten(2)  # (B, 3, S*S)
            levels = torch.quantile(pixels, torch.tensor(TONE_QUANTILES, device=lq.device), dim=2)
            stats = torch.cat([pixels.mean(2), pixels.std(2), levels.permute(1, 0, 2).flatten(1),
                               features.mean((2, 3)), features.std((2, 3))], 1)
            gain, offset = self.mlp(stats).chunk(2, dim=1)
            return gain[..., None, None], offset[..., None, None]

    def forward(self, lq: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        gain, offset = self.affine(lq, features)
        return (lq.float() * (1 + gain) + offset).to(lq.dtype)


def decoder(channels: int, mid: int) -> nn.Sequential:
    """UpModel: (B, F, S/4, S/4) -> (B, 3, S, S) tanh."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        sn_conv(channels, channels, 3),
        leaky_relu(),
        UpDilRes(channels, (1, 2)),
        sn_conv(channels, mid, 3),
        leaky_relu(),
        UpDilRes(mid, (1, 2)),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
        UpDilRes(mid, (1, 1)),
        sn_conv(mid, 3, 3),
        nn.Tanh(),
    )


class ASFFNet(nn.Module):
    """Reference-guided face restorer.

    forward(lq, ref, lq_landmarks, ref_landmarks): lq, ref (B, 3, S, S) float in [-1, 1];
    landmarks (B, 68, 2) float (x, y) crop px (iBUG order). Returns (B, 3, S, S) in [-1, 1]:
    the decoder's output, or with `config.residual` lq (tone-corrected with `config.tone_head`)
    + decoder output, clamped.

    keep_tone (default True; only with a tone head): the output keeps the print's own tone.
    The head's gain and offset (which undo fading) are inverted on the output, so it is
    lq + correction / (1 + gain): the restored detail at the input's contrast, never a face
    un-faded alone in a faded photo. False: the output is un-faded (lq * (1 + gain) + offset +
    correction), as the shipped weights were trained.
    """

    keep_tone: bool = True

    def __init__(self, config: ASFFNetConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.feature_channels
        # Registration order reproduces the key order of the authors' checkpoint.
        self.sff_branch = nn.ModuleList(
            [ASFFBlock(ch) for _ in range(config.asff_blocks)] + [SFFLayer(ch, last=True)]
        )
        self.MSDilate = MSDilate(ch)
        self.UpModel = decoder(ch, config.decoder_channels)
        widths, depth = config.extractor_widths, config.extractor_res_blocks
        self.LQ_Model = FeatureExtractor(widths, ch, depth)
        self.Ref_Model = FeatureExtractor(widths, ch, depth)
        self.Mask_CModel = MaskEncoder(config.mask_widths, ch)
        self.Component_CModel = ComponentConditioner(ch)
        if config.tone_head:
            self.tone = GlobalTone(ch)
        if config.damage_head:
            self.damage = DamageEstimator()
            self.damage_modulation = DamageModulation(ch)
        if config.exemplar_detail:
            self.exemplar_detail = ExemplarDetail()

    @property
    def is_folded(self) -> bool:
        """True once `fold_spectral_norm` has replaced the SN convs (inference-only model)."""
        return not has_spectral_norm(self)

    def warp_grid(self, lq_landmarks: torch.Tensor, ref_landmarks: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) crop px -> the guidance warp's source locations (B, S/4, S/4, 2), feature px."""
        src, dst = self.warp_points(lq_landmarks, ref_landmarks)
        side = self.config.size // FEATURE_STRIDE
        return mls_grid(src, dst, side, side, self.config.warp, self.config.mls_eps)

    def warp_guidance(
        self, ref_features: torch.Tensor, lq_landmarks: torch.Tensor, ref_landmarks: torch.Tensor
    ) -> torch.Tensor:
        """MLS-warp (B, F, S/4, S/4) guidance features from the ref onto the LQ geometry."""
        return sample_grid(ref_features, self.warp_grid(lq_landmarks, ref_landmarks), self.config.warp)

    def warp_points(
        self, lq_landmarks: torch.Tensor, ref_landmarks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 68, 2) crop px -> MLS control points (src = ref, dst = LQ), each (B, 51, 2) in
        feature-grid units of the configuration's warp convention."""
        convention = self.config.warp
        src = landmarks_to_grid(ref_landmarks[:, MLS_POINTS], FEATURE_STRIDE, convention)
        dst = landmarks_to_grid(lq_landmarks[:, MLS_POINTS], FEATURE_STRIDE, convention)
        return src, dst

    def forward(
        self,
        lq: torch.Tensor,
        ref: torch.Tensor,
        lq_landmarks: torch.Tensor,
        ref_landmarks: torch.Tensor,
        damage: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """See the class docstring. damage (damage_head only): (B, len(DAMAGE_BANDS)) levels to
        condition on instead of the estimator's (a user's gentler setting, or tests)."""
        size = self.config.size
        batch = lq.shape[0]
        expected = (batch, 3, size, size)
        if tuple(lq.shape) != expected or tuple(ref.shape) != expected:
            raise ValueError(
                f"{self.config.name} expects lq and ref of shape {expected}, "
                f"got {tuple(lq.shape)} and {tuple(ref.shape)}"
            )
        if lq_landmarks.shape != (batch, 68, 2) or ref_landmarks.shape != (batch, 68, 2):
            raise ValueError(f"landmarks must be ({batch}, 68, 2)")
        lq_lm = lq_landmarks.to(lq.device, torch.float32)
        ref_lm = ref_landmarks.to(lq.device, torch.float32)

        lq_feat = self.LQ_Model(lq)
        ref_feat = adaptive_instance_norm(self.Ref_Model(ref), lq_feat)
        grid = self.warp_grid(lq_lm, ref_lm)
        guidance = self.Component_CModel(sample_grid(ref_feat, grid, self.config.warp))
        mask = landmark_mask(lq_lm, size, self.config.mask_radius).to(lq.dtype)
        mask_feat = self.Mask_CModel(mask)

        x = lq_feat
        for layer in self.sff_branch:
            x = layer(x, guidance, mask_feat)
        decoder_input = self.MSDilate(x) + lq_feat
        if self.config.damage_head:
            levels = self.damage(lq).detach() if damage is None else damage.to(lq.dtype)
            scale, shift, gain = self.damage_modulation(levels)
            out = self.UpModel(decoder_input * (1 + scale) + shift)
            if self.config.exemplar_detail:
                warped = warp_exemplar(ref, grid, FEATURE_STRIDE)
                out = out + self.exemplar_detail(lq, warped, levels)
            out = out * (1 + gain)
        else:
            out = self.UpModel(decoder_input)
        if self.config.residual:
            if self.config.tone_head and self.keep_tone:
                gain, _ = self.tone.affine(lq, lq_feat)
                out = lq + out / (1 + gain).to(out.dtype)
            else:
                out = (self.tone(lq, lq_feat) if self.config.tone_head else lq) + out
            out = out.clamp(-1.0, 1.0)
        return out
