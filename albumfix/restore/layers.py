"""Building blocks of ASFFNet: the spectral-normalised convolution and its inference-time folding.

`SNConv2d` stores its parameters exactly as the old ``torch.nn.utils.spectral_norm`` did, so the
authors' checkpoint loads strictly: ``bias`` (out,) and ``weight_orig`` (out, in, k, k) are
parameters, ``weight_u`` (out,) and ``weight_v`` (in*k*k,) are buffers. The effective weight is
``weight_orig / sigma`` with ``sigma = u . (W_mat v)``, ``W_mat = weight_orig.reshape(out, -1)``.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

_NORM_EPS = 1e-12
INIT_POWER_ITERATIONS = 15
LEAKY_SLOPE = 0.2


def leaky_relu() -> nn.LeakyReLU:
    """The activation used everywhere in ASFFNet (negative slope 0.2)."""
    return nn.LeakyReLU(LEAKY_SLOPE)


def autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Context that disables autocast on `device` (a no-op where autocast does not exist, e.g.
    the meta device), so the enclosed ops run in their inputs' dtype."""
    available = getattr(torch.amp, "is_autocast_available", None)
    supported = available(device.type) if available else device.type in ("cpu", "cuda")
    return torch.autocast(device.type, enabled=False) if supported else contextlib.nullcontext()


def _unit(x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N,) scaled to unit L2 norm (safe for an all-zero vector)."""
    return x / x.norm().clamp_min(_NORM_EPS)


class SNConv2d(nn.Module):
    """Conv2d with spectral normalisation, one power iteration per training forward.

    In train mode each forward updates ``weight_u`` / ``weight_v`` in place by one power
    iteration before normalising; in eval mode the stored vectors are used unchanged. The power
    iteration and sigma run with autocast disabled, in the parameters' dtype (float32).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        fan_in = in_channels * kernel_size * kernel_size
        # Registration order (bias, weight_orig, weight_u, weight_v) matches the checkpoint.
        if bias:
            bound = 1.0 / math.sqrt(fan_in)
            self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        else:
            self.register_parameter("bias", None)
        weight = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        self.weight_orig = nn.Parameter(weight)
        self.register_buffer("weight_u", _unit(torch.randn(out_channels)))
        self.register_buffer("weight_v", _unit(torch.randn(fan_in)))
        self.power_iteration(INIT_POWER_ITERATIONS)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias is not None}"
        )

    @torch.no_grad()
    def power_iteration(self, steps: int = 1) -> None:
        """Refine ``weight_u`` (out,) and ``weight_v`` (in*k*k,) in place by `steps` iterations."""
        w_mat = self.weight_orig.detach().reshape(self.out_channels, -1)
        u, v = self.weight_u, self.weight_v
        with autocast_off(w_mat.device):
            for _ in range(steps):
                v = _unit(torch.mv(w_mat.t(), u))
                u = _unit(torch.mv(w_mat, v))
        self.weight_u.copy_(u)
        self.weight_v.copy_(v)

    def sigma(self) -> torch.Tensor:
        """Scalar estimate of the largest singular value of W_mat, differentiable in weight_orig."""
        w_mat = self.weight_orig.reshape(self.out_channels, -1)
        u = self.weight_u.clone(memory_format=torch.contiguous_format)
        v = self.weight_v.clone(memory_format=torch.contiguous_format)
        with autocast_off(w_mat.device):
            return torch.dot(u, torch.mv(w_mat, v))

    def effective_weight(self) -> torch.Tensor:
        """(out, in, k, k) weight_orig / sigma."""
        return self.weight_orig / self.sigma()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in, H, W) -> (B, out, H', W')."""
        if self.training:
            self.power_iteration(1)
        return F.conv2d(
            x, self.effective_weight(), self.bias, self.stride, self.padding, self.dilation
        )

    def to_conv2d(self) -> nn.Conv2d:
        """A plain nn.Conv2d holding the folded weight (eval-mode sigma), same device and dtype."""
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=self.bias is not None,
            device=self.weight_orig.device,
            dtype=self.weight_orig.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.effective_weight())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


def sn_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    bias: bool = True,
) -> SNConv2d:
    """SNConv2d with 'same' padding ((k - 1) // 2 * dilation)."""
    padding = (kernel_size - 1) // 2 * dilation
    return SNConv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias)


def fold_spectral_norm(model: nn.Module) -> nn.Module:
    """Replace every SNConv2d in `model` (in place) by a plain Conv2d with the folded weight.

    Uses the stored u, v (the eval-mode sigma), so the folded model's forward equals the unfolded
    model's eval forward. The folded model no longer has ``weight_orig`` keys: fold only for
    inference, after loading weights. Returns `model` for chaining.
    """
    targets = [(n, m) for n, m in model.named_modules() if n and isinstance(m, SNConv2d)]
    for name, module in targets:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        folded = module.to_conv2d()
        folded.train(module.training)
        setattr(parent, child_name, folded)
    return model


def has_spectral_norm(model: nn.Module) -> bool:
    """True while `model` still contains at least one (unfolded) SNConv2d."""
    return any(isinstance(m, SNConv2d) for m in model.modules())
