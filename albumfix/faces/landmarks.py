"""The 68-point iBUG landmark convention shared by the backends, training and restoration.

Landmarks are (..., 68, 2) arrays of (x, y) pixel coordinates with integer pixel centres, so a
horizontal mirror of a W-pixel-wide image maps x to W - 1 - x.
"""
from __future__ import annotations

import numpy as np


def _mirror_permutation() -> np.ndarray:
    pairs = [(i, 16 - i) for i in range(17)]  # jaw
    pairs += [(17 + i, 26 - i) for i in range(10)]  # brows
    pairs += [(i, i) for i in range(27, 31)]  # nose bridge
    pairs += [(31 + i, 35 - i) for i in range(5)]  # nostrils
    pairs += [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    pairs += [(48 + i, 54 - i) for i in range(7)] + [(55 + i, 59 - i) for i in range(5)]  # outer lips
    pairs += [(60 + i, 64 - i) for i in range(5)] + [(65 + i, 67 - i) for i in range(3)]  # inner lips
    perm = np.arange(68)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


MIRROR_68 = _mirror_permutation()
"""(68,) int64: index of each point's left-right counterpart (an involution)."""


def mirror_landmarks(landmarks: np.ndarray, width: int) -> np.ndarray:
    """Landmarks of a horizontally mirrored image, renumbered so every index keeps its meaning.

    landmarks: (..., 68, 2) in a `width`-pixel-wide image. Returns a new array of that shape."""
    out = landmarks[..., MIRROR_68, :]  # advanced indexing copies
    out[..., 0] = (width - 1) - out[..., 0]
    return out
