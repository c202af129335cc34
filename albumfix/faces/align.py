"""FFHQ-style oriented face crop (the alignment ASFFNet's authors used) and its exact inverse.

Coordinate convention: pixel *centres* sit at integer coordinates (x to the right, y down), the
convention of dlib / face_alignment landmarks and of ``cv2.warpAffine``. The crop square's outer
edges are at -0.5 and S - 0.5, so the FFHQ quad's corners land exactly on the crop's corners
(the FFHQ script's ``quad + 0.5`` with PIL's edge-based ``Image.QUAD`` transform is the same
mapping).

The quad (ASFFNET.md section 7): eye_left = mean(36-41), eye_right = mean(42-47), eye_avg their
midpoint, mouth_avg = midpoint of 48 and 54, x = eye_to_eye - rot90(eye_to_mouth) normalised and
scaled by max(2.0 |eye_to_eye|, 1.8 |eye_to_mouth|), y = rot90(x), c = eye_avg + 0.1 eye_to_mouth,
quad = [c - x - y, c - x + y, c + x + y, c + x - y] (top-left, bottom-left, bottom-right,
top-right of the crop). rot90 here is FFHQ's ``np.flipud(v) * [-1, 1]``: (a, b) -> (-b, a).

Shrinking more than 2x first halves the (region of interest of the) photo with a Gaussian
pyramid, then ``cv2.warpAffine`` resamples bilinearly, so heavy downscales do not alias.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_BORDERS = {"reflect": cv2.BORDER_REFLECT_101, "constant": cv2.BORDER_CONSTANT}
_DTYPES = (np.uint8, np.uint16, np.float32)


@dataclass(frozen=True, eq=False)
class AlignTransform:
    """Photo -> crop similarity. matrix: (2, 3) float64 mapping photo (x, y, 1) to crop (x, y);
    size: crop side S in px. Compared by identity (it holds an array)."""

    matrix: np.ndarray
    size: int

    def __post_init__(self) -> None:
        m = np.array(self.matrix, dtype=np.float64).reshape(2, 3)
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)
        object.__setattr__(self, "size", int(self.size))

    @property
    def inverse_matrix(self) -> np.ndarray:
        """(2, 3) float64 mapping crop (x, y, 1) back to photo (x, y)."""
        a = self.matrix[:, :2]
        a_inv = np.linalg.inv(a)
        return np.hstack([a_inv, -a_inv @ self.matrix[:, 2:]])

    @property
    def scale(self) -> float:
        """Crop pixels per photo pixel (> 1 means the face is enlarged in the crop)."""
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2]))))


def _rot90(v: np.ndarray) -> np.ndarray:
    """FFHQ's rot90: (a, b) -> (-b, a)."""
    return np.array([-v[1], v[0]])


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """landmarks: (68, 2) (x, y) photo px -> quad (4, 2) float64: crop TL, BL, BR, TR in photo px."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm.shape}")
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) / 2.0
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2.0
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = np.hypot(*x)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("degenerate landmarks: eyes and mouth coincide")
    x = x / norm * max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = _rot90(x)
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def quad_transform(quad: np.ndarray, size: int) -> AlignTransform:
    """quad: (4, 2) TL, BL, BR, TR photo px of a square -> transform onto the S x S crop."""
    q = np.asarray(quad, dtype=np.float64)
    lo, hi = -0.5, size - 0.5
    dst = np.array([[lo, lo], [lo, hi], [hi, hi]])
    src_h = np.hstack([q[:3], np.ones((3, 1))])  # (3, 3): rows (x, y, 1)
    matrix = np.linalg.solve(src_h, dst).T  # (2, 3)
    return AlignTransform(matrix=matrix, size=size)


def ffhq_transform(landmarks: np.ndarray, size: int) -> AlignTransform:
    """landmarks: (68, 2) photo px; size: crop side S. Returns the FFHQ crop transform."""
    return quad_transform(ffhq_quad(landmarks), size)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """matrix: (2, 3); points: (N, 2) -> (N, 2) float64."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return p @ matrix[:, :2].T + matrix[:, 2]


def landmarks_to_crop(landmarks: np.ndarray, t: AlignTransform) -> np.ndarray:
    """landmarks: (N, 2) photo px -> (N, 2) float32 crop px."""
    return _apply(t.matrix, landmarks).astype(np.float32)


def landmarks_to_photo(points: np.ndarray, t: AlignTransform) -> np.ndarray:
    """points: (N, 2) crop px -> (N, 2) float32 photo px (exact inverse of landmarks_to_crop)."""
    return _apply(t.inverse_matrix, points).astype(np.float32)


def source_region(t: AlignTransform, height: int, width: int, margin: float = 0.0) -> tuple[int, int, int, int]:
    """Photo pixel box (x0, y0, x1, y1), end exclusive, clipped, that the crop samples from."""
    s = t.size
    corners = _apply(t.inverse_matrix, np.array([[-0.5, -0.5], [-0.5, s - 0.5], [s - 0.5, s - 0.5], [s - 0.5, -0.5]]))
    x0 = int(np.floor(corners[:, 0].min() - margin))
    y0 = int(np.floor(corners[:, 1].min() - margin))
    x1 = int(np.ceil(corners[:, 0].max() + margin)) + 1
    y1 = int(np.ceil(corners[:, 1].max() + margin)) + 1
    x0, y0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    x1, y1 = max(min(x1, width), x0 + 1), max(min(y1, height), y0 + 1)
    return x0, y0, x1, y1


def _warp_channels(image: np.ndarray, matrix: np.ndarray, size: int, border: int) -> np.ndarray:
    """cv2.warpAffine for any channel count (OpenCV handles at most 4 at once)."""
    if image.ndim == 3 and image.shape[2] > 4:
        planes = [_warp_channels(image[:, :, i], matrix, size, border) for i in range(image.shape[2])]
        return np.stack(planes, axis=2)
    out = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
    if image.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def warp_to_crop(image: np.ndarray, t: AlignTransform, border: str = "reflect") -> np.ndarray:
    """image: (H, W) or (H, W, C) uint8 / uint16 / float32 photo -> (S, S[, C]) crop, same dtype.

    border: "reflect" (mirror without repeating the edge pixel, as numpy's 'reflect' used by the
    FFHQ script) or "constant" (zeros). Shrinks beyond 2x go through a Gaussian pyramid first.
    """
    if border not in _BORDERS:
        raise ValueError(f"border must be one of {sorted(_BORDERS)}, got {border!r}")
    if image.dtype not in _DTYPES:
        raise TypeError(f"unsupported dtype {image.dtype}; use uint8, uint16 or float32")
    if image.ndim not in (2, 3):
        raise ValueError(f"expected (H, W) or (H, W, C) image, got shape {image.shape}")
    levels = max(0, int(np.floor(np.log2(1.0 / t.scale)))) if t.scale < 0.5 else 0
    h, w = image.shape[:2]
    x0, y0, x1, y1 = source_region(t, h, w, margin=2.0 * 2**levels + 2.0)
    region = np.ascontiguousarray(image[y0:y1, x0:x1])
    # region (x, y) -> photo (x + x0, y + y0); pyrDown keeps even pixels: coarse p -> finer 2 p
    shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])
    matrix = np.vstack([t.matrix, [0.0, 0.0, 1.0]]) @ shift
    for _ in range(levels):
        if min(region.shape[:2]) < 2:
            break
        region = cv2.pyrDown(region)
        if image.ndim == 3 and region.ndim == 2:
            region = region[:, :, None]
        matrix = matrix @ np.diag([2.0, 2.0, 1.0])
    return _warp_channels(region, matrix[:2], t.size, _BORDERS[border])


def aligned_crop(rgb: np.ndarray, landmarks: np.ndarray, size: int,
                 border: str = "reflect") -> tuple[AlignTransform, np.ndarray, np.ndarray]:
    """The FFHQ crop restore feeds the model: rgb (H, W, 3) photo, landmarks (68, 2) photo px ->
    (transform, (S, S, 3) crop of rgb's dtype, (68, 2) float32 crop landmarks)."""
    t = ffhq_transform(landmarks, size)
    return t, warp_to_crop(rgb, t, border=border), landmarks_to_crop(landmarks, t)
