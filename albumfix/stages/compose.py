"""The compose step of the restore stage: one photo's restored faces pasted back into a copy of
it, each at the strength the do-no-harm guard allows (albumfix.guard), and the photo written
atomically (with the face strips the report and the review show)."""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from albumfix.album import imageio
from albumfix.faces.backends import FaceBox
from albumfix.settings import Settings
from albumfix.thumbnails import strip_path, thumbnail, write_image

if TYPE_CHECKING:
    from albumfix.stages.restore import FaceTask

FACES_DIR = Path(".albumfix") / "faces"


@dataclass
class FaceToPaste:
    """A face back from the restorer: its task, the AlignTransform of its crop, the (S, S, 3)
    uint8 aligned input crop and first exemplar crop (None: unguided), the (S, S, 3) uint8
    restoration, whether an exemplar guided it and the model's seconds."""

    task: "FaceTask"
    transform: object
    lq: np.ndarray
    ref: np.ndarray | None
    image: np.ndarray
    guided: bool
    seconds: float


def compose_photo(photo: imageio.Photo, source: Path, target: Path, faces: list[FaceToPaste],
                  settings: Settings, out: Path, model_name: str, embedder: Callable[[], object]) -> dict:
    """Paste `faces` into `photo` (decoded from `source`), write it to `target` atomically with
    the source's metadata and times, and each face's strip under `out`. embedder(): the
    analyzer's embedding part, for the guard and second looks (called only when one runs).
    Returns (face id -> the restoration's facts (the run JSON's `restored`), face id -> (D,)
    second look of each face whose task asked for one)."""
    from albumfix.restore.blend import detect_tone, face_strip

    pixels = photo.pixels
    tone = detect_tone(pixels)  # once per photo: it reads the whole scan
    info, looks = {}, {}
    for face in faces:
        pasted, guard, look = _paste(photo, pixels, face, tone, settings, embedder)
        if look is not None:
            looks[face.task.face_id] = look
        if pasted is not None:
            pixels = pasted
        strip = face_strip(face.lq, face.ref, face.image)
        write_image(out / strip_path(face.task.face_id), thumbnail(strip))
        if settings.save_faces:
            write_image(out / FACES_DIR / f"{face.task.face_id}.png", strip)
        exemplars = [e.face_id for e in face.task.exemplars]
        info[face.task.face_id] = {
            "model": model_name,
            "exemplar": exemplars[0] if exemplars else None,
            **({"fused": exemplars} if len(exemplars) > 1 else {}),
            "guided": face.guided,
            "seconds": round(float(face.seconds), 4),
            "strength": guard.strength if guard else settings.strength,
            **({"guard": guard.to_json()} if guard else {}),
        }
    imageio.write_photo(photo, pixels, target, os.stat(source))
    return info, looks


def _paste(photo: imageio.Photo, pixels: np.ndarray, face: FaceToPaste, tone: str, settings: Settings,
           embedder: Callable[[], object]):
    """Paste one restored face; with the guard on (the default), at the highest strength that
    keeps the face its person's and no less sharp (albumfix.guard); when the task asks for a
    second look, the face's embedding with the restoration pasted whole (strength 1, as the guard
    would see it). -> (pixels or None, GuardResult or None, (D,) look or None)."""
    from albumfix.faces.align import source_region
    from albumfix.faces.quality import lacks_detail
    from albumfix.guard import guard_face
    from albumfix.restore.blend import paste_face

    task = face.task
    real_detail = not lacks_detail(task.detail)  # not noise or artefacts

    def paste(strength: float, keep_detail: bool = False) -> np.ndarray:
        return paste_face(pixels, face.image, face.transform, task.landmarks, strength=strength, tone=tone,
                          keep_detail=keep_detail)

    def final(strength: float) -> np.ndarray:
        return paste(strength, keep_detail=real_detail)

    guarded = settings.guard and task.embedding is not None
    if not guarded and not task.look:
        return final(settings.strength), None, None
    embed = embedder()  # the space the stored embeddings are in
    # the guard looks at the face's own region only (the crop square), whatever the photo's size
    x0, y0, x1, y1 = source_region(face.transform, *pixels.shape[:2])
    offset = np.array([x0, y0], np.float32)
    landmarks = task.landmarks - offset
    box = FaceBox(tuple(np.asarray(task.box) - np.tile(offset, 2)), 1.0, None, "stored")
    to_rgb = lambda px: replace(photo, pixels=px[y0:y1, x0:x1]).rgb8()  # noqa: E731
    embed_face = lambda rgb: embed.embed(rgb, [box], [landmarks])[0]  # noqa: E731
    look = np.asarray(embed_face(to_rgb(paste(1.0))), np.float32) if task.look else None
    if not guarded:
        return final(settings.strength), None, look
    refs = [e.embedding for e in task.exemplars if e.embedding is not None]
    pasted, guard = guard_face(paste, to_rgb, embed_face, to_rgb(pixels), landmarks, task.embedding, refs,
                               settings.strength, space=task.space, final=final,
                               detail=task.detail)  # judged on the restorer's own output, without the kept detail
    return pasted, guard, look
