"""Numeric precision on a device: the autocast dtype to run at, IEEE fp32 where fp32 is meant,
and reproducible cuDNN kernels. Shared by the restoration engine, the trainer and the evaluator.

Precision choice (`resolve_precision`): bf16 where the GPU has bf16 tensor cores (CUDA compute
capability >= 8.0: Ampere and later), else fp16 (training adds a GradScaler). It asks the given
device, not the current one, and does not use `torch.cuda.is_bf16_supported()`, which counts
emulation and so is True on every CUDA GPU (T4, V100, RTX 20xx included), where cuDNN has no
fast bf16 convolutions.

IEEE fp32 (`ieee_fp32`): on Ampere and later GPUs cuDNN runs fp32 convolutions in TF32 by
default, and cuBLAS runs fp32 matmuls in TF32 once any code in the process calls
`torch.set_float32_matmul_precision("high")` (which also lets oneDNN use TF32 or bf16 on CPUs
that have them). Inside the context both run in IEEE fp32. The switches are process-wide; their
previous values are restored on exit, so other code in the process keeps its own choice. On
torch >= 2.9 these are the per-op `fp32_precision` switches, the ones the kernels read (torch's
legacy `allow_tf32` getters report "a mix of APIs" while inside; nothing in albumfix reads them);
older torch has only the legacy flags.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
BF16_CAPABILITY = (8, 0)


def has_bf16_tensor_cores(device: torch.device) -> bool:
    """True when CUDA `device` itself has compute capability >= 8.0 (native bf16)."""
    return tuple(torch.cuda.get_device_capability(device)) >= BF16_CAPABILITY


def check_precision(precision: str) -> None:
    """ValueError unless `precision` is one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `precision` on `device`; None means plain fp32.

    "auto": bf16 on a CUDA device with bf16 tensor cores, fp16 on an older CUDA device, fp32
    elsewhere. "fp32" | "bf16" | "fp16" are taken as given (autocast also runs on the CPU).
    Anything else: ValueError.
    """
    check_precision(precision)
    if precision != "auto":
        return _AUTOCAST_DTYPES[precision]
    if device.type != "cuda":
        return None
    return torch.bfloat16 if has_bf16_tensor_cores(device) else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """Autocast dtype (None: fp32) -> "fp32" | "bf16" | "fp16"."""
    return next(name for name, value in _AUTOCAST_DTYPES.items() if value is dtype)


def _has_fp32_precision_switches() -> bool:
    """torch >= 2.9 has per-backend, per-op `fp32_precision` switches (what its kernels read)."""
    return hasattr(torch.backends.cudnn, "conv")


def _tf32_switches(device: torch.device) -> list[tuple[object, str, object]]:
    """(holder, attribute, IEEE value) for every switch letting fp32 matmuls and convolutions on
    `device`'s backend use a reduced internal precision."""
    if _has_fp32_precision_switches():
        backends = {"cuda": (torch.backends.cuda.matmul, torch.backends.cudnn.conv),
                    "cpu": (torch.backends.mkldnn.matmul, torch.backends.mkldnn.conv)}
        return [(holder, "fp32_precision", "ieee") for holder in backends.get(device.type, ())]
    if device.type == "cuda":  # torch < 2.9: the legacy flags
        return [(torch.backends.cuda.matmul, "allow_tf32", False), (torch.backends.cudnn, "allow_tf32", False)]
    return []


@contextlib.contextmanager
def _switched(switches: list[tuple[object, str, object]]) -> Iterator[None]:
    """Set each (holder, attribute, value) while inside; restore the previous values on exit."""
    saved = [getattr(holder, name) for holder, name, _ in switches]
    try:
        for holder, name, value in switches:
            setattr(holder, name, value)
        yield
    finally:
        for (holder, name, _), value in zip(switches, saved):
            setattr(holder, name, value)


def ieee_fp32(device: torch.device) -> contextlib.AbstractContextManager:
    """Context in which fp32 matmuls and convolutions on `device` run in IEEE fp32 (no TF32)."""
    return _switched(_tf32_switches(device))


def reproducible_cudnn() -> contextlib.AbstractContextManager:
    """Context with cuDNN autotuning off and deterministic cuDNN algorithms on, so the same
    inputs give the same outputs on a GPU; restores the previous settings on exit."""
    return _switched([(torch.backends.cudnn, "benchmark", False), (torch.backends.cudnn, "deterministic", True)])
