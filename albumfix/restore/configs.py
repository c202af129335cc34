"""Named ASFFNet configurations and their registry (as timm's model registry).

A configuration fixes the crop size S, the channel widths and the depth; the module layout and
attribute names are the same for every configuration, so the authors' 512-px checkpoint loads into
"asffnet512" and albumfix's own checkpoints into their configuration.
"""
from __future__ import annotations

from dataclasses import dataclass

WARP_CONVENTIONS = ("published", "exact")


@dataclass(frozen=True)
class ASFFNetConfig:
    """Size, widths and depth of one ASFFNet.

    name: registry key. size: crop side S in px (multiple of 4; features run at S/4).
    extractor_widths: channels of the three LQ/Ref extractor stages (full, S/2, S/4).
    feature_channels: channels of the S/4 features (extractor output, fusion, MSDilate, decoder
    input). mask_widths: the three hidden widths of the landmark-mask encoder.
    decoder_channels: channels of the decoder after its first residual group.
    asff_blocks: number of ASFF blocks before the final SFF layer.
    extractor_res_blocks: residual blocks per extractor stage.
    mask_radius: half-extent r of a landmark square: rows floor(y)-r .. ceil(y)+r (end exclusive).
    warp: "published" (the authors' MLS + grid_sample conventions, needed by their weights) or
    "exact" (albumfix's corrected conventions; see albumfix.restore.mls).
    mls_eps: epsilon in the MLS weights 1 / (d^2 + eps), d in feature-grid px.
    residual: the decoder's tanh output is a correction added to the LQ input (clamped to
    [-1, 1]); the authors' layout predicts the image itself.
    tone_head: (needs residual) a global head corrects the LQ input's tone per image and channel
    (gain and offset from image statistics and pooled LQ features) before the correction is added:
    fading lowers contrast and lifts blacks over the whole print, which local convolutions
    estimate poorly.
    damage_head: (needs residual) a small estimator reads the input's damage by frequency band
    and modulates the decoder's input and the correction's gain (albumfix.restore.damage), so a
    nearly clean face gets a small correction and a heavily damaged one a large one.
    exemplar_detail: (needs damage_head) a full-resolution branch adds the MLS-warped exemplar's
    fine band where the warp agrees with the input (albumfix.restore.exemplar_detail).
    """

    name: str
    size: int
    extractor_widths: tuple[int, int, int] = (64, 128, 256)
    feature_channels: int = 128
    mask_widths: tuple[int, int, int] = (16, 32, 64)
    decoder_channels: int = 64
    asff_blocks: int = 4
    extractor_res_blocks: int = 2
    mask_radius: int = 3
    warp: str = "published"
    mls_eps: float = 1e-8
    residual: bool = False
    tone_head: bool = False
    damage_head: bool = False
    exemplar_detail: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.size <= 0 or self.size % 4:
            raise ValueError(f"config {self.name!r}: size must be a positive multiple of 4")
        if self.feature_channels % 2:
            raise ValueError(f"config {self.name!r}: feature_channels must be even")
        if self.warp not in WARP_CONVENTIONS:
            raise ValueError(f"config {self.name!r}: warp must be one of {WARP_CONVENTIONS}")
        if self.asff_blocks < 0 or self.extractor_res_blocks < 0 or self.mask_radius < 0:
            raise ValueError(f"config {self.name!r}: depths and mask_radius must be >= 0")
        if self.tone_head and not self.residual:
            raise ValueError(f"config {self.name!r}: tone_head corrects the residual path; set residual")
        if self.damage_head and not self.residual:
            raise ValueError(f"config {self.name!r}: damage_head scales the residual correction; set residual")
        if self.exemplar_detail and not (self.damage_head and self.warp == "exact"):
            raise ValueError(f"config {self.name!r}: exemplar_detail needs damage_head and the exact warp")


_REGISTRY: dict[str, ASFFNetConfig] = {}


def register_config(config: ASFFNetConfig, overwrite: bool = False) -> ASFFNetConfig:
    """Add `config` to the registry under config.name; refuses to replace one unless `overwrite`."""
    if config.name in _REGISTRY and not overwrite:
        raise ValueError(f"configuration {config.name!r} is already registered")
    _REGISTRY[config.name] = config
    return config


def get_config(name: str) -> ASFFNetConfig:
    """The registered configuration called `name` (KeyError names the known ones)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise KeyError(f"unknown model configuration {name!r} (known: {known})") from None


def list_configs() -> list[str]:
    """Names of all registered configurations, sorted."""
    return sorted(_REGISTRY)


ASFFNET512 = register_config(
    ASFFNetConfig(
        name="asffnet512",
        size=512,
        # The published code adds 1e-8 to each squared coordinate difference: 2e-8 in total.
        mls_eps=2e-8,
        description="The authors' ASFFNet512 layout (CelebRef-HQ weights load strictly).",
    )
)

_S128 = dict(
    size=128,
    extractor_widths=(32, 64, 128),
    feature_channels=64,
    mask_widths=(8, 16, 32),
    decoder_channels=32,
    asff_blocks=4,
    extractor_res_blocks=2,
    # 3 px at 512 scales to 0.75 px at 128; rounded to 1 so every square stays visible.
    mask_radius=1,
    warp="exact",
    mls_eps=1e-8,
    residual=True,
    tone_head=True,
)

ALBUMFIX_S128 = register_config(
    ASFFNetConfig(
        name="albumfix-s128",
        **_S128,
        description="albumfix's shipped light model: 128-px crops, reduced widths, CPU-friendly.",
    )
)

ALBUMFIX_S128_AWARE = register_config(
    ASFFNetConfig(
        name="albumfix-s128-aware",
        **_S128,
        damage_head=True,
        exemplar_detail=True,
        description="albumfix-s128 that reads the input's damage and takes the warped exemplar's fine detail.",
    )
)
