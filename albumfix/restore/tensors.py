"""Images <-> the restoration model's tensors, for inference (engine.py) and training
(albumfix/train/dataset.py) alike: RGB, channels first, float32 in [-1, 1] (x / 127.5 - 1);
back by round((clamp(t, -1, 1) + 1) * 127.5)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def images_to_tensor(images: np.ndarray | Sequence[np.ndarray], device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, S, S, 3) uint8 RGB (an array, or B arrays of (S, S, 3)) -> (B, 3, S, S) float32 in
    [-1, 1] on `device`. The uint8 array is moved first (4x less to copy), then converted there."""
    array = np.asarray(images)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"expected (B, S, S, 3) uint8 images, got {array.shape} {array.dtype}")
    t = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def tensor_to_images(t: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) float in [-1, 1] -> (B, S, S, 3) uint8 RGB: round((clamp(t, -1, 1) + 1) * 127.5)
    (values outside [-1, 1] saturate at 0 / 255)."""
    scaled = (t.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5
    return scaled.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
