"""The restore and compose stages: aligned crops in, restored faces out, pasted into a copy of
the photo and written atomically.

Faces are restored in fixed chunks of the engine's batch size, in the order photos are
submitted (album order, each photo's faces by face id); a chunk runs as soon as it is full and a
photo is written as soon as its last face is back, so fewer than batch size photos wait in
memory. `flush` runs the last, short chunk (the engine pads it to the same shape, so a face's
pixels never depend on where the chunks were cut: restore/engine.py). Each photo is isolated:
an error preparing, restoring or writing it fails that photo only, unless it makes every photo
impossible (errors.as_fatal, engine.ENGINE_FAILURES).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from albumfix.album import imageio
from albumfix.album.index import AlbumIndex, OutputRow
from albumfix.album.scan import AlbumFile
from albumfix.errors import FatalError, one_line
from albumfix.faces.backends import FaceBox
from albumfix.thumbnails import strip_path, thumbnail, write_image

log = logging.getLogger("albumfix")

FACES_DIR = Path(".albumfix") / "faces"


@dataclass
class _FaceWork:
    face_id: str
    transform: object  # AlignTransform
    landmarks: np.ndarray  # (68, 2) photo px
    jobs: list  # RestoreJob per exemplar (best first), or one unguided job
    choices: list  # the plan's ExemplarChoice per job ([] when unguided)
    results: list = field(init=False)  # per job: RestoredFace, or the reason it failed (str); None until back

    def __post_init__(self) -> None:
        self.results = [None] * len(self.jobs)

    @property
    def exemplars(self) -> list[str]:
        """The exemplars' face ids, best first."""
        return [c.face_id for c in self.choices]

    @property
    def ready(self) -> bool:
        return all(r is not None for r in self.results)

    def fused(self):
        """The face's one RestoredFace (the K guided outputs fused per region,
        albumfix.restore.fusion), or the first failure's reason (str)."""
        from albumfix.restore.engine import RestoredFace
        from albumfix.restore.fusion import fuse_restorations, fusion_weights

        failed = [r for r in self.results if isinstance(r, str)]
        if failed:
            return failed[0]
        if len(self.results) == 1:
            return self.results[0]
        images = np.stack([r.image for r in self.results])
        weights = fusion_weights(self.jobs[0].lq_landmarks, np.stack([j.ref_landmarks for j in self.jobs]),
                                 np.array([c.identity_distance for c in self.choices]), images.shape[1])
        return RestoredFace(fuse_restorations(images, weights), any(r.guided for r in self.results),
                            sum(r.seconds for r in self.results))


@dataclass
class _PhotoWork:
    file: AlbumFile
    target: Path
    row: OutputRow
    report: object  # PhotoReport
    photo: imageio.Photo
    faces: list[_FaceWork] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(fw.ready for fw in self.faces)


class Composer:
    """Collects faces to restore across photos, runs the engine in fixed chunks, writes photos.

    photo_files: content hash -> an album file with that content (to decode exemplars)."""

    def __init__(self, pipeline, ix: AlbumIndex, plan, photo_files: dict[str, AlbumFile]):
        self.pipeline = pipeline
        self.ix = ix
        self.plan = plan
        self.file_of_hash = photo_files
        self.pending: list[_PhotoWork] = []  # photos waiting for faces, in submit order
        self.queue: list[tuple[_FaceWork, int]] = []  # their (face, job) not restored yet, in the same order
        self._refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def engine(self):
        return self.pipeline.engine()

    def submit(self, f: AlbumFile, target: Path, row: OutputRow, report, face_ids: list[str]) -> None:
        """Queue one photo; runs the model on every full chunk of waiting faces."""
        try:
            photo = imageio.decode(f.path)
        except imageio.ImageDecodeError as exc:
            self._give_up(report, str(exc))
            return
        try:
            work = self._prepare(_PhotoWork(f, target, row, report, photo), face_ids)
        except Exception as exc:
            self._give_up(report, self.pipeline._photo_error(exc, "could not prepare its faces"))
            return
        self.pending.append(work)
        self.queue += [(fw, k) for fw in work.faces for k in range(len(fw.jobs))]
        while len(self.queue) >= self.engine.batch_size:
            self._restore_chunk(self.engine.batch_size)

    def flush(self) -> None:
        """Restore every queued face (the last chunk padded by the engine), write their photos."""
        while self.queue:
            self._restore_chunk(self.engine.batch_size)

    def _give_up(self, report, reason: str) -> None:
        self.pipeline._fail(report, reason)
        self.pipeline.progress.advance()

    def _prepare(self, work: _PhotoWork, face_ids: list[str]) -> _PhotoWork:
        """Add each face's RestoreJobs (aligned crop + one per exemplar, or one unguided) to a
        decoded photo's work."""
        from albumfix.restore.engine import RestoreJob

        rgb = work.photo.rgb8()
        size = self.engine.size
        for fid in face_ids:
            plan = self.plan.faces[fid]
            t, lq, lq_lm = self._crop(rgb, plan.row.landmarks, size)
            refs = [self._reference(c.face_id, size) for c in plan.exemplars]
            jobs = [RestoreJob(lq=lq, ref=ref, lq_landmarks=lq_lm, ref_landmarks=ref_lm) for ref, ref_lm in refs]
            jobs = jobs or [RestoreJob(lq=lq, ref=None, lq_landmarks=lq_lm)]
            work.faces.append(_FaceWork(fid, t, plan.row.landmarks, jobs, list(plan.exemplars)))
        return work

    @staticmethod
    def _crop(rgb: np.ndarray, landmarks: np.ndarray, size: int):
        """(transform, (S, S, 3) uint8 aligned crop, (68, 2) crop landmarks)."""
        from albumfix.faces.align import aligned_crop

        return aligned_crop(rgb, landmarks, size)

    def _reference(self, face_id: str, size: int):
        """Aligned crop + crop landmarks of an exemplar face (decoded once per run)."""
        if face_id not in self._refs:
            row = self.plan.faces[face_id].row
            photo = imageio.decode(self.file_of_hash[row.content_hash].path)
            _, crop, lm = self._crop(photo.rgb8(), row.landmarks, size)
            self._refs[face_id] = (crop, lm)
        return self._refs[face_id]

    def _restore_chunk(self, n: int) -> None:
        """Restore the first `n` queued jobs, then write every photo whose faces are all back."""
        chunk, self.queue = self.queue[:n], self.queue[n:]
        for (fw, k), result in zip(chunk, self._restore_faces(chunk)):
            fw.results[k] = result
        for w in [w for w in self.pending if w.ready]:
            self.pending.remove(w)
            self._write(w)
            self.pipeline.progress.advance()

    def _restore_faces(self, jobs: list[tuple[_FaceWork, int]]) -> list:
        """RestoredFace per (face, job), or the reason it failed: when a chunk raises, each of
        its jobs is tried alone to find the one at fault (a face's pixels do not depend on its
        chunk)."""
        from albumfix.restore.engine import ENGINE_FAILURES

        try:
            return self.engine.restore([fw.jobs[k] for fw, k in jobs])
        except ENGINE_FAILURES as exc:
            raise FatalError(f"restoration failed on {self.engine.device}: {one_line(exc)}") from exc
        except Exception as exc:
            if len(jobs) == 1:
                return [self.pipeline._photo_error(exc, f"restoring face {jobs[0][0].face_id} failed")]
        return [result for job in jobs for result in self._restore_faces([job])]

    def _write(self, w: _PhotoWork) -> None:
        """Compose and write one photo whose faces are all back, or fail it with the reason."""
        results = [fw.fused() for fw in w.faces]
        failed = [r for r in results if isinstance(r, str)]
        if failed:
            self.pipeline._fail(w.report, failed[0])
            return
        try:
            info = self._compose(w, results)
        except Exception as exc:
            self.pipeline._fail(w.report, self.pipeline._photo_error(exc, "could not write output"))
        else:
            self.plan.attach_restored(w.report, info)
            self.pipeline._finish(self.ix, w.row, w.report, "restored", info)

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
            strip = face_strip(fw.jobs[0].lq, fw.jobs[0].ref, result.image)
            write_image(self.pipeline.out / strip_path(fw.face_id), thumbnail(strip))
            if settings.save_faces:
                write_image(self.pipeline.out / FACES_DIR / f"{fw.face_id}.png", strip)
            info[fw.face_id] = {
                "model": self.pipeline.model_name,
                "exemplar": fw.exemplars[0] if fw.exemplars else None,
                **({"fused": fw.exemplars} if len(fw.exemplars) > 1 else {}),
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

        from albumfix.faces.align import source_region
        from albumfix.faces.quality import lacks_detail
        from albumfix.guard import guard_face
        from albumfix.restore.blend import paste_face

        settings = self.pipeline.settings
        face = self.plan.faces[fw.face_id]
        detail = face.row.quality.get("detail", 0.0)
        real_detail = not lacks_detail(detail)  # not noise or artefacts

        def paste(strength: float, keep_detail: bool = False) -> np.ndarray:
            return paste_face(pixels, image, fw.transform, fw.landmarks, strength=strength, tone=tone,
                              keep_detail=keep_detail)

        def final(strength: float) -> np.ndarray:
            return paste(strength, keep_detail=real_detail)

        if not settings.guard:
            return final(settings.strength), None
        if face.row.embedding is None:
            return final(settings.strength), None
        embedder = self.pipeline.analyzer().embedding_part  # the space the stored embeddings are in
        # the guard looks at the face's own region only (the crop square), whatever the photo's size
        x0, y0, x1, y1 = source_region(fw.transform, *pixels.shape[:2])
        offset = np.array([x0, y0], np.float32)
        landmarks = face.row.landmarks - offset
        box = FaceBox(tuple(np.asarray(face.row.box) - np.tile(offset, 2)), 1.0, None, "stored")
        refs = [self.plan.faces[c.face_id].row.embedding for c in face.exemplars]
        to_rgb = lambda px: replace(w.photo, pixels=px[y0:y1, x0:x1]).rgb8()  # noqa: E731
        return guard_face(paste, to_rgb, lambda rgb: embedder.embed(rgb, [box], [landmarks])[0],
                          to_rgb(pixels), landmarks, face.row.embedding,
                          [r for r in refs if r is not None], settings.strength, space=face.row.embedder,
                          final=final, detail=detail)  # judged on the restorer's own output, without the kept detail
