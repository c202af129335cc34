"""The images of albumfix's pages (report.html, review.html), under `OUT/.albumfix/report/`.

Two kinds, both THUMB_SIDE px high JPEGs:
- a restored face's strip `LQ | exemplar | restored` (`strip_path`), written by the compose stage;
- a face as the album shows it (`face_path`): the aligned crop restore feeds the model, cut from
  its photo at THUMB_SIDE px (`write_face_thumbnails`), for faces the pages show that were not
  restored (the people offered for a face left unguided). Its name carries a digest of the
  face's landmarks, so a face re-analysed differently never shows a stale picture.
"""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path

import numpy as np

from albumfix.atomic import atomic_write_bytes

log = logging.getLogger("albumfix")

REPORT_DIR = Path(".albumfix") / "report"
THUMB_SIDE = 128


def write_image(path: Path, rgb: np.ndarray) -> None:
    """(H, W, 3) uint8 RGB as a JPEG (quality 90) or, for any other suffix, a PNG; atomic."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG" if path.suffix == ".jpg" else "PNG", quality=90)
    atomic_write_bytes(path, buf.getvalue())


def thumbnail(strip: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 image scaled (area) to THUMB_SIDE px high, its aspect kept."""
    import cv2

    h, w = strip.shape[:2]
    return cv2.resize(strip, (max(1, w * THUMB_SIDE // h), THUMB_SIDE), interpolation=cv2.INTER_AREA)


def strip_path(face_id: str) -> Path:
    """The restored face's strip, relative to OUT."""
    return REPORT_DIR / f"{face_id}.jpg"


def face_path(face_id: str, landmarks: np.ndarray) -> Path:
    """The face's own thumbnail, relative to OUT; landmarks (68, 2) photo px."""
    tag = hashlib.blake2b(np.asarray(landmarks, np.float32).tobytes(), digest_size=4).hexdigest()
    return REPORT_DIR / "faces" / f"{face_id}-{tag}.jpg"


def write_face_thumbnails(out: Path, faces: list[tuple[str, np.ndarray, Path]]) -> dict[str, Path]:
    """Write the thumbnails of `faces`, (face id, (68, 2) landmarks in photo px, photo file),
    that OUT lacks, decoding each photo once -> {face id: path relative to OUT} for those that
    exist now (a photo that no longer decodes gives none, with a warning)."""
    from albumfix.album import imageio
    from albumfix.faces.align import aligned_crop

    done: dict[str, Path] = {}
    by_photo: dict[Path, list[tuple[str, np.ndarray, Path]]] = {}
    for face_id, landmarks, photo in faces:
        rel = face_path(face_id, landmarks)
        if (out / rel).is_file():
            done[face_id] = rel
        else:
            by_photo.setdefault(photo, []).append((face_id, landmarks, rel))
    for photo, todo in by_photo.items():
        try:
            rgb = imageio.decode(photo).rgb8()
        except imageio.ImageDecodeError as exc:
            log.warning("no thumbnail of the faces of %s: %s", photo, exc)
            continue
        for face_id, landmarks, rel in todo:
            write_image(out / rel, aligned_crop(rgb, landmarks, THUMB_SIDE)[1])
            done[face_id] = rel
    return done
