"""face_alignment's 2D-FAN landmarks on the boxes of albumfix's own detector.

face_alignment 1.5.0 keeps its 2D-FAN weights as a plain state dict saved with torch.save, in
torch.hub's checkpoint folder under the name of its download URL, ``2DFAN4-11f355bf06.pth.tar``
(its ``FaceAlignment`` downloads the file when missing; albumfix never builds that class, it
checks the file and loads it with ``torch.load(weights_only=True)`` into face_alignment's ``FAN``
network, whose stack depth is read from the checkpoint: 4 hourglasses for 2DFAN-4).

Pre/post-processing follows face_alignment's conventions: a square crop of side
200 * (w + h) / reference_scale photo px centred on the box centre moved up by 0.12 h, resized
to 256 px, RGB in [0, 1]; 64 x 64 heatmaps (the last hourglass), each point at its heatmap peak
moved a quarter pixel toward the larger neighbour, averaged with the prediction on the mirrored
crop. reference_scale is 165 for SCRFD boxes (face_alignment's value for its SCRFD detector) and
130 for dlib boxes, which are tighter (brows to lower lip, no forehead): about 0.78 of an SCRFD
box's w + h, estimated from the geometry of dlib's box and 68 points on scikit-image's astronaut
photo (not checked against real FAN weights here, none are available offline).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from albumfix.devices import resolve_device
from albumfix.faces.analyzer import BackendUnavailable
from albumfix.faces.backends import FaceBox, torch_hub_checkpoints
from albumfix.faces.landmarks import MIRROR_68

FAN_FILE = "2DFAN4-11f355bf06.pth.tar"
CROP = 256
HEATMAP = 64
CENTRE_SHIFT = 0.12
REFERENCE_SCALE = {"scrfd": 165.0, "dlib_hog": 130.0, "dlib_cnn": 130.0}
DEFAULT_REFERENCE_SCALE = 195.0  # face_alignment's own (S3FD boxes)


def find_checkpoint(models_dir: str | None = None) -> Path:
    """models_dir (if given) then the torch hub cache -> path of the 2D-FAN checkpoint."""
    folders = ([Path(models_dir)] if models_dir else []) + [torch_hub_checkpoints()]
    for folder in folders:
        if (folder / FAN_FILE).is_file():
            return folder / FAN_FILE
    where = " or ".join(str(f) for f in folders)
    raise BackendUnavailable(f"FAN landmarks: {FAN_FILE} not found in {where} (copy face_alignment's 2D-FAN weights there)")


@dataclass(frozen=True)
class FanCrop:
    """Photo -> 256-px FAN input similarity. matrix: (2, 3) float64."""

    matrix: np.ndarray

    @staticmethod
    def for_box(box: tuple[float, float, float, float], reference_scale: float) -> "FanCrop":
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0 - CENTRE_SHIFT * h
        side = 200.0 * (w + h) / reference_scale
        s = CROP / side
        return FanCrop(np.array([[s, 0.0, CROP / 2.0 - 0.5 - s * cx], [0.0, s, CROP / 2.0 - 0.5 - s * cy]]))

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) crop px -> (N, 2) photo px."""
        inv = cv2.invertAffineTransform(self.matrix)
        return points @ inv[:, :2].T + inv[:, 2]


def decode_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """(68, 64, 64) -> (68, 2) float64 crop px (256 grid): peak + quarter-pixel refinement."""
    n, hh, ww = heatmaps.shape
    flat = heatmaps.reshape(n, -1).argmax(axis=1)
    py, px = np.divmod(flat, ww)
    pts = np.stack([px, py], axis=1).astype(np.float64)
    inner = (px > 0) & (px < ww - 1) & (py > 0) & (py < hh - 1)
    idx = np.nonzero(inner)[0]
    dx = heatmaps[idx, py[idx], px[idx] + 1] - heatmaps[idx, py[idx], px[idx] - 1]
    dy = heatmaps[idx, py[idx] + 1, px[idx]] - heatmaps[idx, py[idx] - 1, px[idx]]
    pts[idx] += 0.25 * np.sign(np.stack([dx, dy], axis=1))
    step = CROP / HEATMAP
    return pts * step + (step - 1) / 2.0  # heatmap cell centre -> centre of its 4 x 4 crop pixels


@lru_cache(maxsize=None)
def _load_network(path: str, mtime_ns: int, device: str):
    """face_alignment FAN with the checkpoint's weights, eval mode, on device."""
    import torch
    from face_alignment.models import FAN

    state = torch.load(path, map_location="cpu", weights_only=True)
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"m(\d+)\.", k)))
    net = FAN(depth)
    net.load_state_dict(state)
    return net.to(device).eval()


class FanLandmarker:
    """2D-FAN landmarks (with mirrored-input averaging) on the given boxes, on `device`
    ("auto" | "cpu" | "cuda" | "cuda:N" | "mps", see albumfix.devices; kept as torch's name,
    e.g. "cuda:0")."""

    name = "fan"

    def __init__(self, checkpoint: Path, device: str = "auto", flip: bool = True) -> None:
        try:
            import torch  # noqa: F401
            import face_alignment.models  # noqa: F401
        except ImportError as exc:
            raise BackendUnavailable(f"FAN landmarks need torch and face_alignment ({exc})") from exc
        self.device = str(resolve_device(device))
        self.network = _load_network(str(checkpoint), checkpoint.stat().st_mtime_ns, self.device)
        self.flip = flip
        self.mirror = MIRROR_68

    @staticmethod
    def load(models_dir: str | None = None, device: str = "auto") -> "FanLandmarker":
        return FanLandmarker(find_checkpoint(models_dir), device=device)

    def _heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """(N, 256, 256, 3) uint8 -> (N, 68, 64, 64) float32 (mirror-averaged when flip)."""
        import torch

        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
        with torch.inference_mode():
            out = self.network(x)[-1]
            if self.flip:
                mirrored = self.network(x.flip(3))[-1].flip(3)[:, torch.from_numpy(self.mirror)]
                out = out + mirrored
        return out.float().cpu().numpy()

    def landmarks(self, rgb: np.ndarray, faces: list[FaceBox]) -> list[np.ndarray]:
        """rgb: (H, W, 3) uint8 -> one (68, 2) float32 photo-px array per box."""
        if not faces:
            return []
        crops, frames = [], []
        for f in faces:
            frame = FanCrop.for_box(f.box, REFERENCE_SCALE.get(f.detector, DEFAULT_REFERENCE_SCALE))
            crops.append(cv2.warpAffine(rgb, frame.matrix, (CROP, CROP), flags=cv2.INTER_LINEAR))
            frames.append(frame)
        heatmaps = self._heatmaps(np.stack(crops))
        return [fr.to_photo(decode_heatmaps(hm)).astype(np.float32) for fr, hm in zip(frames, heatmaps)]
