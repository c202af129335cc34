"""Device names -> torch devices: the one rule for restoration, training and face analysis.

A device name is "auto" | "cpu" | "cuda" | "cuda:N" | "mps" (any case, spaces around it
ignored). "auto" is CUDA when torch sees a GPU (torch's current one, normally GPU 0), else Apple
MPS when available, else the CPU; "cuda" is torch's current GPU. A name that is unknown, or names
a device this machine cannot use, is a DeviceError with a one-line message.

Importing this module does not import torch (the CLI's start-up and the face backends stay light).
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_NAMES = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class DeviceError(ValueError):
    """The device name is unknown, or its device cannot be used here; the message is one line."""


def parse_device(name: str) -> tuple[str, int | None]:
    """Device name -> (kind, index): kind "auto" | "cpu" | "cuda" | "mps"; index N for "cuda:N",
    else None. DeviceError for anything else."""
    normal = name.strip().lower()
    if not DEVICE_NAMES.fullmatch(normal):
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    kind, _, index = normal.partition(":")
    return kind, int(index) if index else None


def resolve_device(name: str) -> torch.device:
    """Device name -> torch.device by the rule of the module docstring, or DeviceError."""
    import torch

    kind, index = parse_device(name)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps' requested but Apple MPS is not available; use --device auto or cpu")
    if kind != "cuda":
        return torch.device(kind)
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise DeviceError(f"device {name!r} requested but no CUDA GPU is usable (torch {torch.__version__}, "
                          f"{build}); use --device cpu or auto")
    index = torch.cuda.current_device() if index is None else index
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device("cuda", index)
