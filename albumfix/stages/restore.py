"""The restore stage: photo tasks in (each face to restore with its exemplars, as plain data),
restored faces pasted into copies of the photos and written atomically, one `PhotoResult` out
per photo. It reads the album's files and writes only outputs; the driver records the results.

Faces are restored in fixed chunks of the engine's batch size, in the order photos are
submitted (each photo's faces in the task's order); a chunk runs as soon as it is full and a
photo is written as soon as its last face is back, so fewer than batch size photos wait in
memory. `flush` runs the last, short chunk (the engine pads it to the same shape, so a face's
pixels never depend on where the chunks were cut: restore/engine.py). Each photo is isolated:
an error preparing, restoring or writing it fails that photo only, unless it makes every photo
impossible (errors.as_fatal, engine.ENGINE_FAILURES).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from albumfix.album import imageio
from albumfix.errors import FatalError, one_line
from albumfix.stages.compose import FaceToPaste, compose_photo
from albumfix.stages.models import Models
from albumfix.stages.outcomes import photo_error

log = logging.getLogger("albumfix")


@dataclass(frozen=True)
class ExemplarRef:
    """A photo of the same person that guides a face: its face id, the album file holding it,
    its (68, 2) landmarks in that photo (px), its identity embedding (D,) (None: not embedded)
    and the cosine identity distance to the face it guides."""

    face_id: str
    path: Path
    landmarks: np.ndarray
    embedding: np.ndarray | None
    identity_distance: float


@dataclass(frozen=True)
class FaceTask:
    """One face to restore: (68, 2) landmarks and (4,) box in its photo (px), its stored unit
    embedding (D,) in `space` (None: none), its `edge_detail` (dimensionless) and its
    exemplars, best first (empty: unguided); look: also return a second look at it (the
    embedding of its restoration: albumfix.plan verifies it again with that)."""

    face_id: str
    landmarks: np.ndarray
    box: tuple[float, float, float, float]
    embedding: np.ndarray | None
    space: str
    detail: float
    exemplars: tuple[ExemplarRef, ...] = ()
    look: bool = False


@dataclass(frozen=True)
class PhotoTask:
    """One album photo to restore: read from `path`, written to `target`; relpath names it."""

    relpath: str
    path: Path
    target: Path
    faces: tuple[FaceTask, ...]


@dataclass
class PhotoResult:
    """A photo's end in the restore stage. status: "restored" (its output written; restored:
    face id -> the restoration's facts, the run JSON's `restored`; looks: face id -> (D,)
    float32 second look, for the faces whose task asked) or "failed" (reason)."""

    relpath: str
    status: str
    reason: str = ""
    restored: dict = field(default_factory=dict)
    looks: dict = field(default_factory=dict)


@dataclass
class _FaceWork:
    task: FaceTask
    transform: object  # AlignTransform
    jobs: list  # RestoreJob per exemplar (best first), or one unguided job
    results: list = field(init=False)  # per job: RestoredFace, or the reason it failed (str); None until back

    def __post_init__(self) -> None:
        self.results = [None] * len(self.jobs)

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
                                 np.array([e.identity_distance for e in self.task.exemplars]), images.shape[1])
        return RestoredFace(fuse_restorations(images, weights), any(r.guided for r in self.results),
                            sum(r.seconds for r in self.results))


@dataclass
class _PhotoWork:
    task: PhotoTask
    photo: imageio.Photo
    faces: list[_FaceWork] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(fw.ready for fw in self.faces)


class Restorer:
    """Collects faces to restore across photos, runs the engine in fixed chunks, writes photos.

    models: the engine and (for the guard) the embedder, loaded on first use; out: OUT (face
    strips are written under it); index: the album index's path (named in run-ending errors)."""

    def __init__(self, models: Models, out: Path, index: Path):
        self.models = models
        self.settings = models.settings
        self.out = out
        self.index = index
        self.pending: list[_PhotoWork] = []  # photos waiting for faces, in submit order
        self.queue: list[tuple[_FaceWork, int]] = []  # their (face, job) not restored yet, in the same order
        self._refs: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def engine(self):
        return self.models.engine()

    def submit(self, task: PhotoTask) -> list[PhotoResult]:
        """Queue one photo; runs the model on every full chunk of waiting faces. Returns the
        photos finished meanwhile (written or failed), in order."""
        try:
            photo = imageio.decode(task.path)
        except imageio.ImageDecodeError as exc:
            return [PhotoResult(task.relpath, "failed", str(exc))]
        try:
            work = self._prepare(_PhotoWork(task, photo))
        except Exception as exc:
            return [PhotoResult(task.relpath, "failed", photo_error(exc, "could not prepare its faces", self.index))]
        self.pending.append(work)
        self.queue += [(fw, k) for fw in work.faces for k in range(len(fw.jobs))]
        done = []
        while len(self.queue) >= self.engine.batch_size:
            done += self._restore_chunk(self.engine.batch_size)
        return done

    def flush(self) -> list[PhotoResult]:
        """Restore every queued face (the last chunk padded by the engine), write their photos."""
        done = []
        while self.queue:
            done += self._restore_chunk(self.engine.batch_size)
        return done

    def _prepare(self, work: _PhotoWork) -> _PhotoWork:
        """Add each face's RestoreJobs (aligned crop + one per exemplar, or one unguided) to a
        decoded photo's work."""
        from albumfix.faces.align import aligned_crop
        from albumfix.restore.engine import RestoreJob

        rgb = work.photo.rgb8()
        size = self.engine.size
        for face in work.task.faces:
            t, lq, lq_lm = aligned_crop(rgb, face.landmarks, size)
            refs = [self._reference(e, size) for e in face.exemplars]
            jobs = [RestoreJob(lq=lq, ref=ref, lq_landmarks=lq_lm, ref_landmarks=ref_lm) for ref, ref_lm in refs]
            jobs = jobs or [RestoreJob(lq=lq, ref=None, lq_landmarks=lq_lm)]
            work.faces.append(_FaceWork(face, t, jobs))
        return work

    def _reference(self, exemplar: ExemplarRef, size: int) -> tuple[np.ndarray, np.ndarray]:
        """(S, S, 3) uint8 aligned crop + (68, 2) crop landmarks of an exemplar face (decoded
        once per Restorer)."""
        from albumfix.faces.align import aligned_crop

        if exemplar.face_id not in self._refs:
            photo = imageio.decode(exemplar.path)
            _, crop, lm = aligned_crop(photo.rgb8(), exemplar.landmarks, size)
            self._refs[exemplar.face_id] = (crop, lm)
        return self._refs[exemplar.face_id]

    def _restore_chunk(self, n: int) -> list[PhotoResult]:
        """Restore the first `n` queued jobs, then write every photo whose faces are all back."""
        chunk, self.queue = self.queue[:n], self.queue[n:]
        for (fw, k), result in zip(chunk, self._restore_faces(chunk)):
            fw.results[k] = result
        done = []
        for w in [w for w in self.pending if w.ready]:
            self.pending.remove(w)
            done.append(self._write(w))
        return done

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
                return [photo_error(exc, f"restoring face {jobs[0][0].task.face_id} failed", self.index)]
        return [result for job in jobs for result in self._restore_faces([job])]

    def _write(self, w: _PhotoWork) -> PhotoResult:
        """Compose and write one photo whose faces are all back, or fail it with the reason."""
        results = [fw.fused() for fw in w.faces]
        failed = [r for r in results if isinstance(r, str)]
        if failed:
            return PhotoResult(w.task.relpath, "failed", failed[0])
        faces = [FaceToPaste(fw.task, fw.transform, fw.jobs[0].lq, fw.jobs[0].ref, r.image, bool(r.guided), r.seconds)
                 for fw, r in zip(w.faces, results)]
        try:
            info, looks = compose_photo(w.photo, w.task.path, w.task.target, faces, self.settings, self.out,
                                        self.models.model_name, lambda: self.models.analyzer().embedding_part)
        except Exception as exc:
            return PhotoResult(w.task.relpath, "failed", photo_error(exc, "could not write output", self.index))
        return PhotoResult(w.task.relpath, "restored", "", info, looks)
