"""The restore and compose stages: aligned crops in, restored faces out, pasted into a copy of
the photo and written atomically. Faces of several photos share one model batch.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from albumfix.album import imageio
from albumfix.atomic import atomic_write_bytes
from albumfix.album.index import AlbumIndex, OutputRow
from albumfix.album.scan import AlbumFile
from albumfix.faces.backends import FaceBox

log = logging.getLogger("albumfix")

REPORT_DIR = Path(".albumfix") / "report"
FACES_DIR = Path(".albumfix") / "faces"
THUMB_SIDE = 128
MAX_PHOTOS_IN_FLIGHT = 4


@dataclass
class _FaceWork:
    face_id: str
    transform: object  # AlignTransform
    landmarks: np.ndarray  # (68, 2) photo px
    job: object  # RestoreJob
    exemplar: str | None


@dataclass
class _PhotoWork:
    file: AlbumFile
    target: Path
    row: OutputRow
    report: object  # PhotoReport
    photo: imageio.Photo
    faces: list[_FaceWork] = field(default_factory=list)


class Composer:
    """Collects faces to restore across photos, runs the engine in batches, writes photos."""

    def __init__(self, pipeline, ix: AlbumIndex, plan, hashes: dict[str, str], files: list[AlbumFile]):
        self.pipeline = pipeline
        self.ix = ix
        self.plan = plan
        self.file_of_hash = {}
        for f in files:
            if f.relpath in hashes:
                self.file_of_hash.setdefault(hashes[f.relpath], f)
        self.pending: list[_PhotoWork] = []
        self._refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._torch_dlib = None

    @property
    def engine(self):
        return self.pipeline.engine()

    def submit(self, f: AlbumFile, target: Path, row: OutputRow, report, face_ids: list[str]) -> None:
        """Queue one photo; runs the model when enough faces are waiting."""
        from albumfix.restore.engine import RestoreJob

        try:
            photo = imageio.decode(f.path)
        except imageio.ImageDecodeError as exc:
            self.pipeline._fail(report, str(exc))
            self.pipeline.progress.advance()
            return
        work = _PhotoWork(f, target, row, report, photo)
        rgb = photo.rgb8()
        size = self.engine.size
        for fid in face_ids:
            plan = self.plan.faces[fid]
            t, lq, lq_lm = self._crop(rgb, plan.row.landmarks, size)
            exemplar = self.plan.exemplar_of(fid)
            ref = self._reference(exemplar, size)
            job = RestoreJob(lq=lq, ref=None if ref is None else ref[0], lq_landmarks=lq_lm,
                             ref_landmarks=None if ref is None else ref[1])
            work.faces.append(_FaceWork(fid, t, plan.row.landmarks, job, exemplar))
        self.pending.append(work)
        waiting = sum(len(w.faces) for w in self.pending)
        if waiting >= self.engine.batch_size or len(self.pending) >= MAX_PHOTOS_IN_FLIGHT:
            self.flush()

    @staticmethod
    def _crop(rgb: np.ndarray, landmarks: np.ndarray, size: int):
        """(transform, (S, S, 3) uint8 aligned crop, (68, 2) crop landmarks)."""
        from albumfix.faces.align import ffhq_transform, landmarks_to_crop, warp_to_crop

        t = ffhq_transform(landmarks, size)
        return t, warp_to_crop(rgb, t, border="reflect"), landmarks_to_crop(landmarks, t)

    def _reference(self, face_id: str | None, size: int):
        """Aligned crop + crop landmarks of an exemplar face (decoded once per run)."""
        if face_id is None:
            return None
        if face_id not in self._refs:
            row = self.plan.faces[face_id].row
            photo = imageio.decode(self.file_of_hash[row.content_hash].path)
            _, crop, lm = self._crop(photo.rgb8(), row.landmarks, size)
            self._refs[face_id] = (crop, lm)
        return self._refs[face_id]

    def flush(self) -> None:
        """Restore every queued face in batches, then compose and write each photo."""
        if not self.pending:
            return
        work, self.pending = self.pending, []
        results = self.engine.restore([fw.job for w in work for fw in w.faces])
        cursor = 0
        for w in work:
            restored = results[cursor:cursor + len(w.faces)]
            cursor += len(w.faces)
            try:
                info = self._compose(w, restored)
            except (OSError, ValueError) as exc:
                self.pipeline._fail(w.report, f"could not write output: {exc}")
            else:
                self.plan.attach_restored(w.report, info)
                self.pipeline._finish(self.ix, w.row, w.report, "restored", info)
            self.pipeline.progress.advance()

    def _compose(self, w: _PhotoWork, restored: list) -> dict:
        from albumfix.restore.blend import detect_tone, face_strip

        settings = self.pipeline.settings
        pixels = w.photo.pixels
        tone = detect_tone(pixels)  # once per photo: it reads the whole scan
        info = {}
        for fw, result in zip(w.faces, restored):
            pasted, guard = self._paste(w, pixels, fw, result.image, tone)
            if pasted is not None:
                pixels = pasted
            strip = face_strip(fw.job.lq, fw.job.ref, result.image)
            self._write_image(self.pipeline.out / REPORT_DIR / f"{fw.face_id}.jpg", _thumb(strip))
            if settings.save_faces:
                self._write_image(self.pipeline.out / FACES_DIR / f"{fw.face_id}.png", strip)
            info[fw.face_id] = {
                "model": settings.model,
                "exemplar": fw.exemplar,
                "guided": bool(result.guided),
                "seconds": round(float(result.seconds), 4),
                "strength": guard.strength if guard else settings.strength,
                **({"guard": guard.to_json()} if guard else {}),
            }
        imageio.write_photo(w.photo, pixels, w.target, os.stat(w.file.path))
        return info

    def _paste(self, w: _PhotoWork, pixels: np.ndarray, fw: _FaceWork, image: np.ndarray, tone: str):
        """Paste one restored face; with the guard on (the default), at the highest strength that
        keeps the face its person's and no less sharp (albumfix.guard). -> (pixels or None, GuardResult or None)."""
        from dataclasses import replace

        from albumfix.guard import guard_face
        from albumfix.restore.blend import paste_face

        settings = self.pipeline.settings

        def paste(strength: float) -> np.ndarray:
            return paste_face(pixels, image, fw.transform, fw.landmarks, strength=strength, tone=tone)

        if not settings.guard:
            return paste(settings.strength), None
        face = self.plan.faces[fw.face_id]
        if face.row.embedding is None:
            return paste(settings.strength), None
        embedder = self._guard_embedder(face.row.embedder)
        # the guard looks at the face's own region only (the crop square), whatever the photo's size
        x0, y0, x1, y1 = _crop_region(fw.transform, pixels.shape)
        offset = np.array([x0, y0], np.float32)
        landmarks = face.row.landmarks - offset
        box = FaceBox(tuple(np.asarray(face.row.box) - np.tile(offset, 2)), 1.0, None, "stored")
        refs = [self.plan.faces[c.face_id].row.embedding for c in face.exemplars]
        to_rgb = lambda px: replace(w.photo, pixels=px[y0:y1, x0:x1]).rgb8()  # noqa: E731
        return guard_face(paste, to_rgb, lambda rgb: embedder.embed(rgb, [box], [landmarks])[0],
                          to_rgb(pixels), landmarks, face.row.embedding,
                          [r for r in refs if r is not None], settings.strength, space=face.row.embedder)

    def _guard_embedder(self, space: str):
        """The embedder of the guard's identity checks: the torch port of dlib's network for the
        dlib space (the same descriptors, several times faster than dlib), else the analyser's."""
        if space != "dlib":
            return self.pipeline.analyzer().embedding_part
        if self._torch_dlib is None:
            from albumfix.faces.backends.dlib_resnet import TorchDlibEmbedder

            self._torch_dlib = TorchDlibEmbedder()
        return self._torch_dlib

    @staticmethod
    def _write_image(path: Path, rgb: np.ndarray) -> None:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=90)
        atomic_write_bytes(path, buf.getvalue())


def _crop_region(transform, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """Photo box (x0, y0, x1, y1), end exclusive, clipped, of an aligned crop's square."""
    from albumfix.faces.align import landmarks_to_photo

    s = transform.size
    corners = landmarks_to_photo(np.array([[0, 0], [0, s], [s, s], [s, 0]], np.float32) - 0.5, transform)
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    return int(x0), int(y0), int(min(x1, shape[1])), int(min(y1, shape[0]))


def _thumb(strip: np.ndarray) -> np.ndarray:
    """(S, 3S, 3) strip scaled to THUMB_SIDE px high."""
    import cv2

    h, w = strip.shape[:2]
    return cv2.resize(strip, (w * THUMB_SIDE // h, THUMB_SIDE), interpolation=cv2.INTER_AREA)
