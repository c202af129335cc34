"""dlib parts: HOG detector with an MMOD CNN fallback, 68-point shape predictor, 128-d ResNet
embedding. Model files come from the ``face_recognition_models`` package (found without running
its ``__init__``, which needs the removed ``pkg_resources``).

Detection (`DlibDetector.detect`: an (H, W, 3) uint8 photo -> boxes in photo px): HOG on the photo
shrunk to a long side of at most ``hog_max_side``, upsampled ``upsample`` times. With a
``small_faces`` detector (MTCNN, `mtcnn_backend`: faces from 20 px, turned to profile, in faded
prints) and when HOG found nothing or the photo has room for another face (`room_for_face`): that
detector, its boxes mapped onto dlib's (`mtcnn_backend.dlib_like`), those on a face HOG found
dropped. Only when all that finds nothing: HOG with one more upsampling on the photo, then its
`equalised`, then its `denoised` copy; then, with ``cnn_fallback``, the MMOD CNN on a copy of ``cnn_max_pixels``
(enlarged at most 2x), then on a `nl_means_denoised` copy, keeping boxes of confidence >=
DENOISED_CNN_MIN_SCORE. `search` looks again in a photo where one of the faces found is damaged:
HOG on the equalised and denoised copies, then the CNN when `room_for_face`. The CNN never runs on an image
whose short side at its scale is below CNN_MIN_SIDE px (dlib 20.0 raises, and can corrupt its
heap, below 10 px). Timings and what each pass finds: docs/CALIBRATION.md.
Embeddings: dlib's raw descriptors have length about 1.46 (1.34-1.60 on CelebA photos); they are
stored scaled to unit length, so dlib's usual "same person below 0.6 euclidean" corresponds to
about 0.41 on the stored unit vectors (cosine distance = euclidean^2 / 2, about 0.085).
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from albumfix.faces.analyzer import BackendUnavailable, box_iou
from albumfix.faces.backends import FaceBox, unit_rows

SHAPE_68 = "shape_predictor_68_face_landmarks.dat"
RESNET = "dlib_face_recognition_resnet_model_v1.dat"
MMOD = "mmod_human_face_detector.dat"
CNN_MIN_SIDE = 64  # px at the CNN's scale; see the module docstring and docs/CALIBRATION.md
SEARCH_MAX_IOU = 0.3  # a searched box overlapping a found one this much is that face
DENOISED_CNN_MIN_SCORE = 0.3  # MMOD confidence a face found only on the denoised copy needs (docs/CALIBRATION.md)
ROOM_GRID = 32  # px: room_for_face judges free space on a grid where a face is this wide


def models_folder() -> Path:
    """Folder holding face_recognition_models' .dat files (its __init__ is never run)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(
            "dlib models missing: the face_recognition_models package is not installed "
            "(pip install face-recognition-models)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _import_dlib():
    try:
        import dlib
    except ImportError as exc:
        raise BackendUnavailable(f"dlib is not importable ({exc}); pip install dlib-bin") from exc
    return dlib


def _rect(dlib, box: tuple[float, float, float, float]):
    """Photo-px box -> dlib.rectangle (integer, inclusive corners)."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return dlib.rectangle(x0, y0, x1, y1)


def face_shapes(boxes: list[tuple[float, float, float, float]], landmarks: list[np.ndarray]):
    """Photo-px boxes and (68, 2) photo-px landmarks -> dlib.full_object_detections, points
    rounded to whole px (as dlib's shape predictor gives them)."""
    dlib = _import_dlib()
    shapes = dlib.full_object_detections()
    for box, lm in zip(boxes, landmarks):
        points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in lm])
        shapes.append(dlib.full_object_detection(_rect(dlib, box), points))
    return shapes


def _shrink(rgb: np.ndarray, factor: float) -> np.ndarray:
    """(H, W, 3) uint8 -> the same photo scaled by factor <= 1 (area averaging)."""
    return rgb if factor >= 1.0 else _resized(rgb, factor)


def _resized(rgb: np.ndarray, factor: float) -> np.ndarray:
    """(H, W, 3) uint8 scaled by factor: area averaging to shrink, bicubic to enlarge."""
    if factor == 1.0:
        return rgb
    h, w = rgb.shape[:2]
    size = (max(1, int(round(w * factor))), max(1, int(round(h * factor))))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)


def denoised(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the same photo through a 5 x 5 median filter (grain and JPEG noise out,
    edges kept), for a HOG retry."""
    return cv2.medianBlur(np.ascontiguousarray(rgb), 5)


def nl_means_denoised(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the same photo through non-local means (strength 20, 7 x 7 patches,
    21 x 21 search), for a CNN retry: it also removes the blotchy noise that a photo enlarged
    after it was damaged carries, which a median filter leaves."""
    return cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(rgb), None, 20, 20, 7, 21)


def room_for_face(shape: tuple[int, ...], boxes: list[FaceBox], margin: float = 0.25) -> bool:
    """shape: (H, W, ...) of a photo; boxes: faces found in it (photo px). True when a square as
    large as the smallest box fits inside the photo clear of every box grown by `margin` of its
    width on each side (head and hair), i.e. another face of that scale could be there; False
    for a portrait whose face fills the frame, and when there are no boxes."""
    if not boxes:
        return False
    side = min(min(b.box[2] - b.box[0], b.box[3] - b.box[1]) for b in boxes)
    if side <= 0:
        return False
    scale = min(1.0, ROOM_GRID / side)  # judged on a grid where the square is ROOM_GRID px
    h, w = (int(np.floor(v * scale)) for v in shape[:2])
    window = int(np.ceil(side * scale))
    if window > min(h, w):
        return False
    free = np.ones((h, w), np.uint8)
    for b in boxes:
        x0, y0, x1, y1 = b.box
        grow = margin * (x1 - x0)
        free[max(0, int(np.floor((y0 - grow) * scale))):max(0, int(np.ceil((y1 + grow) * scale))),
             max(0, int(np.floor((x0 - grow) * scale))):max(0, int(np.ceil((x1 + grow) * scale)))] = 0
    kernel = np.ones((window, window), np.uint8)
    return bool(cv2.erode(free, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0).any())


def equalised(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W, 3) uint8 gray: luminance after contrast-limited adaptive
    histogram equalisation (8 x 8 tiles, clip 2), which restores the edge contrast a faded or
    toned print lost."""
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    flat = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(luma)
    return np.repeat(flat[..., None], 3, axis=2)


@dataclass
class DlibModels:
    """The dlib model files of one folder, each loaded on first use and then kept."""

    folder: Path
    _loaded: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def load(folder: str | Path | None = None) -> "DlibModels":
        """Check the files exist; the same folder always gives the same (cached) object."""
        return _models_for(str(Path(folder) if folder is not None else models_folder()))

    def _get(self, file: str, build):
        if file not in self._loaded:
            self._loaded[file] = build(str(self.folder / file))
        return self._loaded[file]

    def hog(self):
        dlib = _import_dlib()
        return self._get("hog", lambda _: dlib.get_frontal_face_detector())

    def cnn(self):
        return self._get(MMOD, _import_dlib().cnn_face_detection_model_v1)

    def shape_predictor(self):
        return self._get(SHAPE_68, _import_dlib().shape_predictor)

    def resnet(self):
        return self._get(RESNET, _import_dlib().face_recognition_model_v1)

    def detector(self, upsample: int = 1, cnn_fallback: bool = True, small_faces=None) -> "DlibDetector":
        return DlibDetector(self, upsample=upsample, cnn_fallback=cnn_fallback, small_faces=small_faces)

    def landmarker(self) -> "DlibLandmarker":
        return DlibLandmarker(self)

    def embedder(self) -> "DlibEmbedder":
        return DlibEmbedder(self)


@lru_cache(maxsize=None)
def _models_for(folder: str) -> DlibModels:
    _import_dlib()
    path = Path(folder)
    missing = [f for f in (SHAPE_68, RESNET, MMOD) if not (path / f).is_file()]
    if missing:
        raise BackendUnavailable(
            f"dlib model file(s) {', '.join(missing)} missing in {path}; "
            "reinstall face-recognition-models or put the files there"
        )
    return DlibModels(folder=path)


class DlibDetector:
    """HOG frontal-face detector with a once-per-photo MMOD CNN fallback (rule in module doc)."""

    name = "dlib"

    def __init__(
        self,
        models: DlibModels,
        upsample: int = 1,
        cnn_fallback: bool = True,
        hog_max_side: int = 2048,
        cnn_max_pixels: int = 250_000,
        small_faces=None,
    ) -> None:
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        self.models = models
        self.upsample = int(upsample)
        self.cnn_fallback = bool(cnn_fallback)
        self.hog_max_side = int(hog_max_side)
        self.cnn_max_pixels = int(cnn_max_pixels)
        self.small_faces = small_faces  # a detector for the faces HOG misses (MtcnnDetector) or None

    def detect_hog(self, rgb: np.ndarray, upsample: int | None = None) -> list[FaceBox]:
        """rgb: (H, W, 3) uint8 -> HOG boxes in photo px (score: HOG margin, > 0); upsample:
        HOG upsampling steps (default: the detector's)."""
        factor = min(1.0, self.hog_max_side / max(rgb.shape[:2]))
        steps = self.upsample if upsample is None else upsample
        rects, scores, _ = self.models.hog().run(_shrink(rgb, factor), steps, 0.0)
        return [
            FaceBox(
                box=(r.left() / factor, r.top() / factor, r.right() / factor, r.bottom() / factor),
                score=float(s),
                keypoints=None,
                detector="dlib_hog",
            )
            for r, s in zip(rects, scores)
        ]

    def detect_cnn(self, rgb: np.ndarray, prepare=None) -> list[FaceBox]:
        """rgb: (H, W, 3) uint8 -> MMOD boxes in photo px, photo scaled to cnn_max_pixels
        (shrunk, or enlarged at most 2x); none when its short side is then below CNN_MIN_SIDE.
        prepare: (H, W, 3) uint8 -> same, applied after shrinking and before enlarging."""
        h, w = rgb.shape[:2]
        factor = min(2.0, float(np.sqrt(self.cnn_max_pixels / (h * w))))
        if min(round(h * factor), round(w * factor)) < CNN_MIN_SIDE:
            return []
        small = _resized(rgb, min(1.0, factor))  # one of the two resizes is the identity
        if prepare is not None:
            small = prepare(small)
        small = _resized(small, max(1.0, factor))
        hits = self.models.cnn()(small, 0)
        return [
            FaceBox(
                box=tuple(v / factor for v in (d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom())),
                score=float(d.confidence),
                keypoints=None,
                detector="dlib_cnn",
            )
            for d in hits
        ]

    def detect(self, rgb: np.ndarray) -> list[FaceBox]:
        """rgb: (H, W, 3) uint8 -> boxes. With `small_faces`, when HOG finds nothing or there is
        room for another face: the faces that detector adds (`detect_small`). When still nothing:
        HOG with one more upsampling on the photo, then on its contrast-equalised luminance, then
        on its denoised copy, then the CNN (when enabled) on the photo, then on its
        non-local-means denoised copy (boxes of confidence >= DENOISED_CNN_MIN_SCORE only)."""
        faces = self.detect_hog(rgb)
        if self.small_faces is not None and (not faces or room_for_face(rgb.shape, faces)):
            faces = faces + self.detect_small(rgb, faces)
        if not faces:
            for variant in self._retries(rgb):
                faces = self.detect_hog(variant, upsample=self.upsample + 1)
                if faces:
                    break
        if not faces and self.cnn_fallback:
            faces = self.detect_cnn(rgb) or [face for face in self.detect_cnn(rgb, nl_means_denoised)
                                             if face.score >= DENOISED_CNN_MIN_SCORE]
        return faces

    def detect_small(self, rgb: np.ndarray, found: list[FaceBox]) -> list[FaceBox]:
        """The `small_faces` detector's faces that are not among `found` (IoU < SEARCH_MAX_IOU and
        centre outside every found box), boxes mapped onto dlib's, its key points kept."""
        from albumfix.faces.backends.mtcnn_backend import dlib_like

        new: list[FaceBox] = []
        for face in self.small_faces.detect(rgb):
            box = dlib_like(face.box)
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            if all(box_iou(box, other.box) < SEARCH_MAX_IOU
                   and not (other.box[0] <= cx <= other.box[2] and other.box[1] <= cy <= other.box[3])
                   for other in [*found, *new]):
                new.append(FaceBox(box=box, score=face.score, keypoints=face.keypoints, detector=face.detector))
        return new

    def _retries(self, rgb: np.ndarray):
        """The photo, its equalised and its denoised copy, lazily, for HOG with one more
        upsampling; none when that upsampling would exceed 4 x hog_max_side."""
        if max(rgb.shape[:2]) * 2 ** (self.upsample + 1) <= 4 * self.hog_max_side:
            yield rgb
            yield equalised(rgb)
            yield denoised(rgb)

    def search(self, rgb: np.ndarray, found: list[FaceBox]) -> list[FaceBox]:
        """More faces in a damaged photo where `found` were found: HOG on its equalised and on
        its denoised copy (at the detector's own upsampling: one more cost 4x for no more faces
        on the benchmark's damaged pairs), then, when enabled and the photo has room for another
        face (`room_for_face`), the CNN; the boxes that overlap no found box nor each other
        (IoU < SEARCH_MAX_IOU)."""
        new: list[FaceBox] = []

        def keep(boxes: list[FaceBox]) -> None:
            for box in boxes:
                if all(box_iou(box.box, other.box) < SEARCH_MAX_IOU for other in [*found, *new]):
                    new.append(box)

        for variant in (equalised(rgb), denoised(rgb)):
            keep(self.detect_hog(variant))
        if self.cnn_fallback and room_for_face(rgb.shape, [*found, *new]):
            keep(self.detect_cnn(rgb))
        return new


class DlibLandmarker:
    """dlib's 68-point shape predictor (ensemble of regression trees) on each box."""

    name = "dlib"

    def __init__(self, models: DlibModels) -> None:
        self.models = models

    def landmarks(self, rgb: np.ndarray, faces: list[FaceBox]) -> list[np.ndarray]:
        """rgb: (H, W, 3) uint8 -> one (68, 2) float32 photo-px array per box."""
        dlib = _import_dlib()
        predictor = self.models.shape_predictor()
        out = []
        for f in faces:
            shape = predictor(rgb, _rect(dlib, f.box))
            out.append(np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32))
        return out


class DlibEmbedder:
    """dlib's ResNet face descriptor on the chip dlib aligns from the 68 landmarks; unit length."""

    name = "dlib"

    def __init__(self, models: DlibModels) -> None:
        self.models = models

    def embed(self, rgb: np.ndarray, faces: list[FaceBox], landmarks: list[np.ndarray]) -> list[np.ndarray]:
        """rgb: (H, W, 3) uint8 -> one (128,) float32 unit vector per face."""
        if not faces:
            return []
        shapes = face_shapes([f.box for f in faces], landmarks)
        vectors = self.models.resnet().compute_face_descriptor(rgb, shapes)
        return list(unit_rows(np.array([np.array(v) for v in vectors])))
