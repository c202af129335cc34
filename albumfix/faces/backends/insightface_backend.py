"""insightface parts run with onnxruntime directly: SCRFD detection, ArcFace embedding and the
pack's 68-point 3-D landmark model (1k3d68) when present.

The pack is insightface's own layout, ``<root>/models/<pack>/*.onnx`` (root ~/.insightface, pack
"buffalo_l"); a folder holding the .onnx files directly works too. Models are told apart by
their graphs, as insightface's model_zoo does, not by file name:
- detection: 6, 9, 10 or 15 outputs (scores, box distances, optional 5 key points per stride);
- 68-point landmarks: 192 x 192 input, one output of 3309 values (1103 x 3; the last 68 rows
  are the points); other 192-input models (2d106det: 106 points) are landmark models too;
- recognition: any other square input of side >= 112 and a multiple of 16, one output of
  >= 128 values.
Other models in the pack (2d106det, genderage) are ignored. insightface's FaceAnalysis is never
used: it downloads a missing pack, which albumfix must not do.

Input normalisation follows the files: SCRFD (x - 127.5) / 128; ArcFace (x - 127.5) / 127.5 and
the landmark model (x - 127.5) / 128, unless the graph normalises itself (an MXNet export whose
first nodes are Sub/_minus and Mul/_mul, or a leading bn_data node), then raw 0-255. All three
networks take RGB.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from albumfix.faces.analyzer import BackendUnavailable
from albumfix.faces.backends import FaceBox, gpu_index, unit_rows

DEFAULT_ROOT = "~/.insightface"
DEFAULT_PACK = "buffalo_l"
DETECT_SIZE = 640  # SCRFD input side when the graph leaves it dynamic
SCORE_THRESHOLD = 0.5
NMS_IOU = 0.4
LANDMARK_INPUT = 192  # insightface's landmark models take 192 x 192 crops
LANDMARK_3D_VALUES = 3309
# ArcFace 112 x 112 template for eye (photo left, right), nose tip, mouth corners (left, right).
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


@dataclass(frozen=True)
class OnnxInfo:
    """What albumfix needs to know about one .onnx graph. input_hw: (H, W), 0 when dynamic;
    output_sizes: per output, the product of its known non-batch dims (0 if unknown)."""

    path: Path
    n_outputs: int
    input_hw: tuple[int, int]
    output_sizes: tuple[int, ...]
    self_normalising: bool


def _dims(value_info) -> list[int]:
    return [int(d.dim_value) for d in value_info.type.tensor_type.shape.dim]


def inspect_onnx(path: Path) -> OnnxInfo:
    """Read the graph's input/output shapes and whether it normalises its own input."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    dims = _dims(inputs[0]) if inputs else []
    input_hw = (dims[2], dims[3]) if len(dims) == 4 else (0, 0)
    sizes = []
    for out in graph.output:
        d = _dims(out)[1:]
        sizes.append(int(np.prod(d)) if d and all(v > 0 for v in d) else 0)
    names = [n.name for n in graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    bn_data = any(n == "bn_data" for n in names[:3])
    return OnnxInfo(path, len(graph.output), input_hw, tuple(sizes), (has_sub and has_mul) or bn_data)


def classify(info: OnnxInfo) -> str:
    """-> "detection" | "landmark_68" | "recognition" | "other"."""
    if info.n_outputs in (6, 9, 10, 15):
        return "detection"
    h, w = info.input_hw
    if info.n_outputs != 1:
        return "other"
    if (h, w) == (LANDMARK_INPUT, LANDMARK_INPUT):  # landmark models (1k3d68, 2d106det)
        return "landmark_68" if info.output_sizes[0] == LANDMARK_3D_VALUES else "other"
    if h == w and h >= 112 and h % 16 == 0 and info.output_sizes[0] >= 128:
        return "recognition"
    return "other"


def pack_folder(models_dir: str | None, pack: str = DEFAULT_PACK) -> Path:
    """models_dir holding *.onnx itself, else <models_dir or ~/.insightface>/models/<pack>."""
    root = Path(os.path.expanduser(models_dir or DEFAULT_ROOT))
    if models_dir is not None and any(root.glob("*.onnx")):
        return root
    return root / "models" / pack


def onnx_providers(device: str, available: list[str]) -> list:
    """onnxruntime execution providers for an albumfix device name: on a GPU ("auto", "cuda",
    "cuda:N"; see `gpu_index`) the CUDA provider on that GPU, its memory arena grown only by what
    each request needs, then the CPU; the CPU alone for "cpu" and "mps", or when this
    onnxruntime has no CUDA provider (`available`: ort.get_available_providers())."""
    index = gpu_index(device)
    if index is None or "CUDAExecutionProvider" not in available:
        return ["CPUExecutionProvider"]
    cuda = ("CUDAExecutionProvider", {"device_id": index, "arena_extend_strategy": "kSameAsRequested"})
    return [cuda, "CPUExecutionProvider"]


@lru_cache(maxsize=None)
def _session(path: str, mtime_ns: int, device: str):
    """One onnxruntime session per model file version and device."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    providers = onnx_providers(device, ort.get_available_providers())
    return ort.InferenceSession(path, sess_options=options, providers=providers)


def session_for(path: Path, device: str):
    """Cached onnxruntime session on `device`; BackendUnavailable when the runtime rejects the file."""
    try:
        return _session(str(path), path.stat().st_mtime_ns, device)
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidGraph / ... types
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise BackendUnavailable(f"onnxruntime cannot load {path}: {reason}") from exc


@dataclass
class InsightFacePack:
    """The usable models of one insightface pack folder, and the device their sessions run on."""

    folder: Path
    detection: OnnxInfo
    recognition: OnnxInfo
    landmark_68: OnnxInfo | None
    device: str = "auto"

    @staticmethod
    def load(models_dir: str | None = None, pack: str = DEFAULT_PACK, device: str = "auto") -> "InsightFacePack":
        """Find and check the pack's files; BackendUnavailable (one line) when incomplete."""
        folder = pack_folder(models_dir, pack)
        files = sorted(folder.glob("*.onnx"))
        if files:
            try:
                import onnx  # noqa: F401
                import onnxruntime  # noqa: F401
            except ImportError as exc:
                raise BackendUnavailable(f"insightface backend needs onnx and onnxruntime ({exc})") from exc
        roles: dict[str, OnnxInfo] = {}
        for path in files:
            try:
                info = inspect_onnx(path)
            except Exception as exc:  # truncated or non-ONNX file: protobuf DecodeError and kin
                raise BackendUnavailable(f"cannot read {path} as ONNX ({type(exc).__name__}); replace the file") from exc
            roles.setdefault(classify(info), info)
        missing = [r for r in ("detection", "recognition") if r not in roles]
        if missing:
            raise BackendUnavailable(
                f"insightface pack '{pack}' incomplete: no {' and no '.join(missing)} model in {folder} "
                f"(put the pack's .onnx files, e.g. det_10g.onnx and w600k_r50.onnx from {pack}.zip, there)"
            )
        return InsightFacePack(folder, roles["detection"], roles["recognition"], roles.get("landmark_68"), device)

    @property
    def has_landmarks_68(self) -> bool:
        return self.landmark_68 is not None

    def detector(self) -> "ScrfdDetector":
        return ScrfdDetector(self.detection, self.device)

    def embedder(self) -> "ArcFaceEmbedder":
        return ArcFaceEmbedder(self.recognition, self.device)

    def landmarker(self) -> "Landmark68":
        if self.landmark_68 is None:
            raise BackendUnavailable(f"no 68-point landmark model (1k3d68.onnx) in {self.folder}")
        return Landmark68(self.landmark_68, self.device)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """boxes: (N, 4) x0 y0 x1 y1; scores: (N,) -> kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return keep


def _anchor_centres(height: int, width: int, stride: int, per_cell: int) -> np.ndarray:
    """(h * w * per_cell, 2) float32 anchor points (x, y) in detector-input px, row-major."""
    ys, xs = np.mgrid[: height // stride, : width // stride]
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32) * stride
    return np.repeat(centres, per_cell, axis=0)


def decode_scrfd(outputs: list[np.ndarray], input_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """SCRFD raw outputs -> (scores (N,), boxes (N, 4), key points (N, 5, 2) or None), detector-input px.

    Outputs are grouped by their last dim (1 scores, 4 box distances, 10 key-point offsets);
    within a group the level with most rows has the smallest stride (8, 16, 32[, 64, 128])."""
    flat = [o[0] if o.ndim == 3 else o for o in outputs]
    groups = {k: sorted((o for o in flat if o.shape[-1] == k), key=lambda o: -o.shape[0]) for k in (1, 4, 10)}
    levels = len(groups[1])
    strides = [8 * 2**i for i in range(levels)]
    h, w = input_hw
    scores, boxes, kps = [], [], []
    for i, stride in enumerate(strides):
        per_cell = groups[1][i].shape[0] // ((h // stride) * (w // stride))
        centres = _anchor_centres(h, w, stride, per_cell)
        dist = groups[4][i] * stride
        scores.append(groups[1][i][:, 0])
        boxes.append(np.hstack([centres - dist[:, :2], centres + dist[:, 2:]]))
        if groups[10]:
            kps.append(np.tile(centres, 5).reshape(-1, 5, 2) + groups[10][i].reshape(-1, 5, 2) * stride)
    keypoints = np.concatenate(kps) if kps else None
    return np.concatenate(scores), np.concatenate(boxes), keypoints


class ScrfdDetector:
    """SCRFD on a letterboxed (top-left, zero-padded) copy of the photo."""

    name = "scrfd"

    def __init__(self, info: OnnxInfo, device: str = "auto", threshold: float = SCORE_THRESHOLD) -> None:
        self.info = info
        self.session = session_for(info.path, device)
        h, w = info.input_hw
        self.input_hw = (h, w) if h > 0 and w > 0 else (DETECT_SIZE, DETECT_SIZE)
        self.threshold = threshold

    def _letterbox(self, rgb: np.ndarray) -> tuple[np.ndarray, float]:
        """(H, W, 3) uint8 -> ((1, 3, h, w) float32 normalised, photo-to-input scale)."""
        h, w = self.input_hw
        scale = min(h / rgb.shape[0], w / rgb.shape[1])
        nh, nw = max(1, int(rgb.shape[0] * scale)), max(1, int(rgb.shape[1] * scale))
        canvas = np.zeros((h, w, 3), dtype=np.float32)
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(blob, dtype=np.float32), nh / rgb.shape[0]

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """rgb: (H, W, 3) uint8 -> boxes (score: SCRFD probability) with 5 key points each."""
        blob, scale = self._letterbox(rgb)
        name = self.session.get_inputs()[0].name
        outputs = self.session.run(None, {name: blob})
        scores, boxes, kps = decode_scrfd(outputs, self.input_hw)
        hit = scores >= self.threshold
        scores, boxes = scores[hit], boxes[hit] / scale
        kps = kps[hit] / scale if kps is not None else None
        return [
            FaceBox(
                box=tuple(float(v) for v in boxes[i]),
                score=float(scores[i]),
                keypoints=kps[i].astype(np.float32) if kps is not None else None,
                detector=self.name,
            )
            for i in nms(boxes, scores, NMS_IOU)
        ]


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping src (N, 2) onto dst (N, 2) -> (2, 3) float64."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    sc, dc = src - ms, dst - md
    u, s, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / max((sc**2).sum() / len(src), 1e-12)
    return np.hstack([scale * rot, (md - scale * rot @ ms)[:, None]])


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) -> (5, 2): eye centres (photo left first), nose tip, mouth corners 48 and 54."""
    lm = np.asarray(landmarks, dtype=np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


def _normalise(images: np.ndarray, info: OnnxInfo, std: float) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, 3, S, S) float32 network input."""
    x = images.astype(np.float32)
    if not info.self_normalising:
        x = (x - 127.5) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class ArcFaceEmbedder:
    """ArcFace on the 112-px similarity crop from 5 points (SCRFD's, else from the 68)."""

    name = "arcface"

    def __init__(self, info: OnnxInfo, device: str = "auto") -> None:
        self.info = info
        self.session = session_for(info.path, device)
        self.size = info.input_hw[0]

    def embed(self, rgb: np.ndarray, faces: list[FaceBox], landmarks: list[np.ndarray]) -> list[np.ndarray]:
        """rgb: (H, W, 3) uint8 -> one (D,) float32 unit vector per face."""
        template = ARCFACE_TEMPLATE * (self.size / 112.0)
        crops = []
        for f, lm in zip(faces, landmarks):
            points = f.keypoints if f.keypoints is not None else five_points(lm)
            m = similarity_matrix(points, template)
            crops.append(cv2.warpAffine(rgb, m, (self.size, self.size), flags=cv2.INTER_LINEAR))
        if not crops:
            return []
        blob = _normalise(np.stack(crops), self.info, 127.5)
        name = self.session.get_inputs()[0].name
        batch = self.session.get_inputs()[0].shape[0]
        if isinstance(batch, int) and batch == 1:
            out = np.concatenate([self.session.run(None, {name: blob[i : i + 1]})[0] for i in range(len(blob))])
        else:
            out = self.session.run(None, {name: blob})[0]
        return list(unit_rows(out.reshape(len(crops), -1)))


class Landmark68:
    """The pack's 3-D 68-point model (1k3d68) on a box-centred crop of side 1.5 x max(w, h)."""

    name = "insightface68"

    def __init__(self, info: OnnxInfo, device: str = "auto") -> None:
        self.info = info
        self.session = session_for(info.path, device)
        self.size = info.input_hw[0]

    def crop_matrix(self, box: tuple[float, float, float, float]) -> np.ndarray:
        """(2, 3) photo -> model-input px for one box."""
        x0, y0, x1, y1 = box
        s = self.size / (max(x1 - x0, y1 - y0) * 1.5)
        cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        return np.array([[s, 0.0, self.size / 2.0 - s * cx], [0.0, s, self.size / 2.0 - s * cy]])

    def landmarks(self, rgb: np.ndarray, faces: list[FaceBox]) -> list[np.ndarray]:
        """rgb: (H, W, 3) uint8 -> one (68, 2) float32 photo-px array per box."""
        name = self.session.get_inputs()[0].name
        out = []
        for f in faces:
            m = self.crop_matrix(f.box)
            crop = cv2.warpAffine(rgb, m, (self.size, self.size), flags=cv2.INTER_LINEAR)
            pred = self.session.run(None, {name: _normalise(crop[None], self.info, 128.0)})[0]
            xy = pred.reshape(-1, 3)[-68:, :2] + 1.0
            xy = xy * (self.size // 2)
            inv = cv2.invertAffineTransform(m)
            out.append((xy @ inv[:, :2].T + inv[:, 2]).astype(np.float32))
        return out
