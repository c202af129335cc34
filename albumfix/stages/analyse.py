"""The analyse stage: photo paths in, face rows out (decode, detect, landmarks, quality, embed).

`analyse_group` is a function of its inputs and the analyzer: it reads the photos and returns
one `PhotoAnalysis` each, writing nothing; the driver stores them in the index. Groups are
the canonical batches of albumfix.stages.chunks, so every backend embeds the same faces together.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from albumfix.album import imageio
from albumfix.album.index import FaceRow
from albumfix.settings import Settings
from albumfix.stages.outcomes import photo_error

log = logging.getLogger("albumfix")

ANALYSIS_FIELDS = ("faces", "landmarks", "models_dir", "upsample", "cnn_fallback", "max_megapixels")
ANALYSIS_VERSION = 6  # bump when what analysis computes changes (2: edge detail, equalised HOG retry;
# 3: denoised HOG retry, a second search in damaged photos; 4: resolution ladders of sharp faces;
# 5: CNN on a non-local-means copy, CNN in the search of a damaged photo with room for a face;
# 6: MTCNN for the faces HOG misses, where HOG finds none or there is room for another face)
# Analysis embeds the faces of up to this many photos (decoded pixels: bytes) in one batch: dlib's
# torch network runs about 4x faster per face at batch 24 than at 1 on a CPU.
EMBED_BATCH_PHOTOS = 8
EMBED_BATCH_BYTES = 48_000_000


def analysis_key(settings: Settings) -> str:
    """Valid while the analysis settings, ANALYSIS_VERSION and the identity network for
    degraded faces (its bytes) are unchanged."""
    from albumfix.faces.backends import identity_weights_path

    identity = identity_weights_path()
    tag = hashlib.blake2b(identity.read_bytes(), digest_size=6).hexdigest() if identity else "dlib"
    return f"{settings.key(*ANALYSIS_FIELDS)}-v{ANALYSIS_VERSION}-id{tag}"


@dataclass(frozen=True)
class PhotoToAnalyse:
    """A photo content (digest: its content hash) to analyse, read from `path` (relpath: the
    album file's name, for messages)."""

    digest: str
    relpath: str
    path: Path


@dataclass
class PhotoAnalysis:
    """One photo's analysis. status: "ok" (rows: its faces), "failed" (it does not decode: the
    index keeps that, the photo is not retried while unchanged) or "error" (anything else: not
    stored, a later run tries again); size (width, height) px when it decoded."""

    digest: str
    relpath: str
    status: str
    reason: str = ""
    size: tuple[int, int] | None = None
    rows: list[FaceRow] = field(default_factory=list)


@dataclass
class _Located:
    """A photo analysed up to its identity embeddings: size (width, height) px; rgb (H, W, 3)
    uint8; faces located (no embedding yet) and their FaceQuality."""

    item: PhotoToAnalyse
    size: tuple[int, int]
    rgb: np.ndarray
    faces: list
    qualities: list


def locate_faces(analyzer, item: PhotoToAnalyse) -> _Located:
    """Decode one photo, find its faces and their landmarks and judge them (a damaged photo is
    searched again for faces it hides); imageio.ImageDecodeError when it does not decode."""
    from albumfix.faces.quality import assess_face, lacks_detail

    photo = imageio.decode(item.path)
    rgb = photo.rgb8()
    faces = analyzer.locate(rgb)
    qualities = [assess_face(rgb, face) for face in faces]
    if any(lacks_detail(q.detail) for q in qualities):
        more = analyzer.search_more(rgb, faces)
        faces, qualities = faces + more, qualities + [assess_face(rgb, face) for face in more]
    return _Located(item, (photo.width, photo.height), rgb, faces, qualities)


def analyse_group(items: list[PhotoToAnalyse], analyzer, index: Path,
                  stop: Callable[[], bool] = lambda: False) -> list[PhotoAnalysis]:
    """Analyse a group of photos: each located alone, their faces embedded together (in
    batches of at most EMBED_BATCH_BYTES of pixels). An error fails its photo only, unless it
    ends the run (outcomes.photo_error; index: the album index's path, for that message).
    Photos not reached before `stop()` turns true are left out of the result."""
    results: list[PhotoAnalysis] = []
    pending: list[_Located] = []
    for item in items:
        if stop():
            break
        try:
            pending.append(locate_faces(analyzer, item))
        except imageio.ImageDecodeError as exc:
            results.append(PhotoAnalysis(item.digest, item.relpath, "failed", str(exc)))
            continue
        except Exception as exc:
            results.append(PhotoAnalysis(item.digest, item.relpath, "error", photo_error(exc, "analysis failed", index)))
            continue
        if sum(p.rgb.size for p in pending) >= EMBED_BATCH_BYTES:
            results += _embed(analyzer, pending, index)
            pending = []
    return results + _embed(analyzer, pending, index)


def _embed(analyzer, located: list[_Located], index: Path) -> list[PhotoAnalysis]:
    """Embed the faces of located photos in one batch, then make each photo's rows; when the
    batch fails, each photo alone, so one bad photo fails only itself."""
    from albumfix.faces.quality import lacks_detail

    degraded = [[lacks_detail(q.detail) for q in p.qualities] for p in located]
    try:
        described = analyzer.describe([(p.rgb, p.faces) for p in located], degraded) if located else []
    except Exception:
        described = None
    results = []
    for k, p in enumerate(located):
        digest, relpath = p.item.digest, p.item.relpath
        try:
            faces = described[k] if described is not None else analyzer.describe([(p.rgb, p.faces)], [degraded[k]])[0]
            rows = [FaceRow(
                face_id=f"{digest[:16]}-{idx}", content_hash=digest, idx=idx,
                box=tuple(float(v) for v in face.box), score=float(face.score),
                landmarks=np.asarray(face.landmarks, np.float32),
                embedding=None if face.embedding is None else np.asarray(face.embedding, np.float32),
                embedder=face.embedder, quality=_jsonable(quality.__dict__), ladder=face.ladder,
            ) for idx, (face, quality) in enumerate(zip(faces, p.qualities))]
            log.debug("%s: %d faces", relpath, len(rows))
            results.append(PhotoAnalysis(digest, relpath, "ok", "", p.size, rows))
        except Exception as exc:
            results.append(PhotoAnalysis(digest, relpath, "error", photo_error(exc, "analysis failed", index)))
    return results


def _jsonable(values: dict) -> dict:
    """Dataclass fields as JSON-safe builtins (numpy scalars to float)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out
