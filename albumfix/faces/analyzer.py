"""The face-analysis interface: one record per detected face and the protocol every backend meets.

Coordinates are in pixels of the *oriented* photo (EXIF rotation already applied), x to the right,
y down. Landmarks follow the 68-point iBUG order (0-based): jaw 0-16, brows 17-26, nose 27-35,
eyes 36-47, mouth 48-67.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


@dataclass
class DetectedFace:
    """One face found in one photo.

    box: (x0, y0, x1, y1) in photo pixels; score: detector confidence (backend units, higher is
    surer); landmarks: (68, 2) float32 (x, y) photo pixels; embedding: (D,) float32 L2-normalised
    identity vector (D = 128 for dlib, 512 for ArcFace) or None; detector / landmarker /
    embedder name the backends that produced each part; keypoints: the detector's (5, 2) key
    points (`FaceBox.keypoints`) or None; ladder: (R, D) float32 unit vectors of
    a sharp face seen at lower resolutions by the degraded-face network (the embedder's
    `resolution_ladder`), None when the embedder makes none or the face is degraded.
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    embedding: np.ndarray | None
    detector: str = ""
    landmarker: str = ""
    embedder: str = ""
    keypoints: np.ndarray | None = None
    ladder: np.ndarray | None = None


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceAnalyzer(Protocol):
    """Finds faces, their 68 landmarks and identity embeddings in one RGB photo."""

    name: str
    embedder: str  # names the embedding space; grouping thresholds are calibrated per space

    def analyse(self, rgb: np.ndarray) -> list[DetectedFace]:
        """rgb: (H, W, 3) uint8. Returns faces sorted by box (top-to-bottom, left-to-right)."""
        ...


class BackendUnavailable(RuntimeError):
    """A backend's library or model files are missing; the message says what and where to put it."""
