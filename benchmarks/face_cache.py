"""Cached face analysis of the identity-labelled research photos, for the grouping benchmark.

Runs albumfix's own analyzer (``create_analyzer``) on every photo listed in
``<data>/faces_*.csv`` and keeps, per photo, the labelled face: the largest detected face whose
box contains the photo centre (else the largest face). The photos are centred crops with one
labelled person, so another detection is a bystander, not that person.

Variants: ``clean`` (every photo as stored) and ``degraded`` (every third photo in CSV order,
downscaled 3x with area averaging, Gaussian noise sigma 3, JPEG quality 40, upscaled back with
bicubic: a small, noisy old-photo face; seeded per photo, so repeatable). Results are written in
chunks of 250 photos under ``<cache>/<variant>/`` (temp file, then rename), so an interrupted
run resumes where it stopped.

    python benchmarks/face_cache.py --variant clean --variant degraded   # nohup-friendly
"""
from __future__ import annotations

import argparse
import csv
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("/work/shared/data/faces")
DEFAULT_CACHE = ROOT / "cache" / "bench_grouping"
CHUNK = 250
VARIANTS = ("clean", "degraded")


@dataclass
class PhotoRow:
    """One labelled photo: path relative to the data folder, identity label, source dataset."""

    path: str
    identity: str
    source: str


@dataclass
class FaceTable:
    """Main face per photo, aligned with the photo rows (NaN rows where no face was found).

    paths, identities, sources: (N,) str; n_faces: (N,) int32 detections in the photo;
    boxes: (N, 4) float32 photo px; landmarks: (N, 68, 2) float32 photo px;
    embeddings: (N, 128) float32 unit vectors (dlib space).
    """

    paths: np.ndarray
    identities: np.ndarray
    sources: np.ndarray
    n_faces: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    embeddings: np.ndarray

    @property
    def found(self) -> np.ndarray:
        """(N,) bool: a face was found in the photo."""
        return self.n_faces > 0


def read_rows(data: Path) -> list[PhotoRow]:
    """All rows of faces_*.csv in file-name order."""
    rows: list[PhotoRow] = []
    for csv_path in sorted(data.glob("faces_*.csv")):
        with open(csv_path, newline="") as fh:
            rows += [PhotoRow(r["path"], r["identity"], r["source"]) for r in csv.DictReader(fh)]
    return rows


def degrade(rgb: np.ndarray, seed: int) -> np.ndarray:
    """(H, W, 3) uint8 -> same shape uint8: 3x down, noise, JPEG q40, back up (see module doc)."""
    import cv2

    h, w = rgb.shape[:2]
    small = cv2.resize(rgb, (max(1, w // 3), max(1, h // 3)), interpolation=cv2.INTER_AREA)
    noise = np.random.default_rng(seed).normal(0.0, 3.0, small.shape)
    small = np.clip(small.astype(np.float64) + noise, 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", small[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 40])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    small = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def main_face(faces: list, width: int, height: int):
    """The labelled face among detections: largest containing the centre, else largest (or None)."""
    if not faces:
        return None

    def area(f) -> float:
        return (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])

    central = [f for f in faces if f.box[0] <= width / 2 <= f.box[2] and f.box[1] <= height / 2 <= f.box[3]]
    return max(central or faces, key=area)


def variant_rows(n_rows: int, variant: str) -> np.ndarray:
    """Indices of the CSV rows a variant analyses: all (clean) or every third (degraded)."""
    return np.arange(0, n_rows, 1 if variant == "clean" else 3)


def _analyse_chunk(analyzer, data: Path, rows: list[PhotoRow], variant: str) -> dict:
    from PIL import Image

    n = len(rows)
    out = {
        "n_faces": np.zeros(n, np.int32),
        "boxes": np.full((n, 4), np.nan, np.float32),
        "landmarks": np.full((n, 68, 2), np.nan, np.float32),
        "embeddings": np.full((n, 128), np.nan, np.float32),
    }
    for i, row in enumerate(rows):
        with Image.open(data / row.path) as im:
            rgb = np.asarray(im.convert("RGB"))
        if variant == "degraded":
            rgb = degrade(rgb, seed=zlib.crc32(row.path.encode()))
        faces = analyzer.analyse(rgb)
        face = main_face(faces, rgb.shape[1], rgb.shape[0])
        out["n_faces"][i] = len(faces)
        if face is not None:
            out["boxes"][i] = face.box
            out["landmarks"][i] = face.landmarks
            out["embeddings"][i] = face.embedding
    out["paths"] = np.array([r.path for r in rows])
    return out


def extract(data: Path, cache: Path, variant: str, log=print) -> None:
    """Analyses every photo not yet cached for this variant (resumable, chunk by chunk)."""
    from albumfix.faces.backends import create_analyzer

    all_rows = read_rows(data)
    rows = [all_rows[i] for i in variant_rows(len(all_rows), variant)]
    folder = cache / variant
    folder.mkdir(parents=True, exist_ok=True)
    analyzer = None
    for start in range(0, len(rows), CHUNK):
        part = folder / f"part-{start:06d}.npz"
        if part.exists():
            continue
        analyzer = analyzer or create_analyzer(faces="dlib", landmarks="dlib")
        t0 = time.perf_counter()
        arrays = _analyse_chunk(analyzer, data, rows[start:start + CHUNK], variant)
        tmp = folder / f".part-{start:06d}.tmp.npz"
        np.savez(tmp, **arrays)
        tmp.replace(part)
        log(f"{variant}: photos {start}-{start + len(arrays['paths']) - 1} of {len(rows)} "
            f"in {time.perf_counter() - t0:.0f} s")


def load(data: Path, cache: Path, variant: str) -> FaceTable:
    """The cached table of a variant over all CSV rows (rows it does not analyse: no face).

    Raises FileNotFoundError naming the command when the cache is incomplete."""
    rows = read_rows(data)
    picked = variant_rows(len(rows), variant)
    folder = cache / variant
    parts = []
    for start in range(0, len(picked), CHUNK):
        part = folder / f"part-{start:06d}.npz"
        if not part.exists():
            raise FileNotFoundError(f"{part} missing: run python benchmarks/face_cache.py --variant {variant}")
        parts.append(np.load(part))
    if list(np.concatenate([p["paths"] for p in parts])) != [rows[i].path for i in picked]:
        raise ValueError(f"cache {folder} does not match the CSV rows; delete it and extract again")
    n = len(rows)
    table = FaceTable(
        paths=np.array([r.path for r in rows]),
        identities=np.array([r.identity for r in rows]),
        sources=np.array([r.source for r in rows]),
        n_faces=np.zeros(n, np.int32),
        boxes=np.full((n, 4), np.nan, np.float32),
        landmarks=np.full((n, 68, 2), np.nan, np.float32),
        embeddings=np.full((n, 128), np.nan, np.float32),
    )
    for name in ("n_faces", "boxes", "landmarks", "embeddings"):
        getattr(table, name)[picked] = np.concatenate([p[name] for p in parts])
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--variant", action="append", choices=VARIANTS,
                        help="variant(s) to extract, in order (default: clean)")
    args = parser.parse_args(argv)
    for variant in args.variant or ["clean"]:
        extract(args.data, args.cache, variant, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
