"""Image metrics shared by training, evaluation and the album benchmark (uint8 images)."""
from __future__ import annotations

import math

import cv2
import numpy as np

_LUMA = np.array([0.299, 0.587, 0.114])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (any equal shape), over all pixels and channels, peak 255."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * math.log10(255.0 ** 2 / mse)


def ssim_luma(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two (H, W, 3) uint8 RGB images on luminance Y in [0, 255] (Wang et al. 2004)."""
    x = a.astype(np.float64) @ _LUMA
    y = b.astype(np.float64) @ _LUMA
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    value = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(value[5:-5, 5:-5].mean())
