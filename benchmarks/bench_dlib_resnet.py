"""The torch port of dlib's face recognition ResNet against dlib: agreement and speed.

Chips: dlib's aligned 150 x 150 chips (`face_chips`) of every face dlib's HOG detector and
68-point predictor find in the photos of the given folders (default sample_album/), at most
--chips of them; timing rows cycle through them when fewer are found.
Agreement: max abs difference between the torch descriptors and dlib's compute_face_descriptor
on the same chips (the aligned-chip overload), and over dlib's whole path on the photos.
Speed, chips per second: dlib one chip per call, dlib a list of --batch chips per call (dlib runs
its net in mini-batches of 16 inside), the port at batch 1 and at --batch; torch on --threads
threads. cpu/wall is the process CPU time over wall time (dlib-bin links no BLAS). Rows are
timed round-robin, --repeats rounds, each keeping its fastest run, after one warm-up call.

    .venv/bin/python benchmarks/bench_dlib_resnet.py
    .venv/bin/python benchmarks/bench_dlib_resnet.py /work/shared/data/faces/lfw --chips 64
"""
from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from albumfix.album.imageio import ImageDecodeError, decode
from albumfix.album.scan import photo_suffixes
from albumfix.faces.backends.dlib_backend import DlibModels, face_shapes
from albumfix.faces.backends.dlib_resnet import embed_chips, face_chips, load_dlib_resnet

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    engine: str
    batch: int
    chips: int
    seconds: float
    chips_per_s: float
    cpu_per_wall: float
    speedup: float


def descriptors(vectors) -> np.ndarray:
    """dlib's descriptor vectors -> (N, 128) float64."""
    return np.array([np.array(v) for v in vectors])


def album_chips(folders: list[Path], limit: int, models: DlibModels) -> tuple[np.ndarray, float]:
    """(N <= limit, 150, 150, 3) uint8 chips of the faces in the folders' photos, and the max abs
    difference of the port to dlib's own align-and-describe path on those photos."""
    detector, landmarker, resnet = models.detector(cnn_fallback=False), models.landmarker(), models.resnet()
    chips, worst = [], 0.0
    suffixes = photo_suffixes()
    photos = sorted(p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in suffixes)
    for path in photos:
        if sum(len(c) for c in chips) >= limit:
            break
        try:
            rgb = decode(path).rgb8()
        except ImageDecodeError:
            continue
        boxes = detector.detect(rgb)
        if not boxes:
            continue
        landmarks = landmarker.landmarks(rgb, boxes)
        found = face_chips(rgb, landmarks)
        shapes = face_shapes([b.box for b in boxes], landmarks)
        theirs = descriptors(resnet.compute_face_descriptor(rgb, shapes))
        worst = max(worst, float(np.abs(embed_chips(found) - theirs).max()))
        chips.append(found)
    if not chips:
        raise SystemExit(f"no faces found in {', '.join(map(str, folders))}")
    return np.concatenate(chips)[:limit], worst


def cycle(chips: np.ndarray, count: int) -> np.ndarray:
    """The first `count` chips of chips repeated as often as needed."""
    return chips[np.arange(count) % len(chips)]


Contender = tuple[str, int, Callable[[], object]]


def contenders(chips: np.ndarray, batch: int, models: DlibModels) -> list[Contender]:
    """(engine, batch, run) per row; each run embeds every chip once."""
    resnet = models.resnet()
    batches = [chips[i:i + batch] for i in range(0, len(chips), batch)]
    return [
        ("dlib", 1, lambda: [resnet.compute_face_descriptor(c) for c in chips]),
        ("dlib", batch, lambda: [resnet.compute_face_descriptor(list(b)) for b in batches]),
        ("torch", 1, lambda: embed_chips(chips, batch_size=1)),
        ("torch", batch, lambda: embed_chips(chips, batch_size=batch)),
    ]


def time_rows(chips: np.ndarray, args: argparse.Namespace, models: DlibModels) -> list[Row]:
    """Round-robin timing (module doc); speed-up relative to dlib one chip per call."""
    rows = contenders(chips, args.batch, models)
    for _, _, run in rows:
        run()  # warm-up
    best = [(math.inf, 0.0)] * len(rows)
    for _ in range(args.repeats):
        for i, (_, _, run) in enumerate(rows):
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if wall < best[i][0]:
                best[i] = (wall, cpu / wall)
    base = len(chips) / best[0][0]
    return [
        Row(engine, batch, len(chips), wall, len(chips) / wall, ratio, len(chips) / wall / base)
        for (engine, batch, _), (wall, ratio) in zip(rows, best)
    ]


def print_table(rows: list[Row]) -> None:
    print(f"{'engine':<7} {'batch':>5} {'chips':>5} {'s':>7} {'chips/s':>8} {'cpu/wall':>8} {'speed-up':>8}")
    for r in rows:
        print(f"{r.engine:<7} {r.batch:>5} {r.chips:>5} {r.seconds:>7.3f} {r.chips_per_s:>8.1f} "
              f"{r.cpu_per_wall:>8.2f} {r.speedup:>7.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, default=[REPO / "sample_album"])
    parser.add_argument("--chips", type=int, default=64, help="chips per timing row")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = DlibModels.load()
    model = load_dlib_resnet()
    found, photo_diff = album_chips(args.folders, args.chips, models)
    theirs = descriptors(models.resnet().compute_face_descriptor(list(found)))
    chip_diff = float(np.abs(embed_chips(found) - theirs).max())
    print(f"{len(found)} real chips; max abs difference to dlib: {chip_diff:.2e} on the chips, "
          f"{photo_diff:.2e} through dlib's own alignment on the photos")
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    rows = time_rows(cycle(found, args.chips), args, models)
    print_table(rows)
    if args.json:
        summary = {"chips_found": len(found), "max_abs_diff_chips": chip_diff,
                   "max_abs_diff_photos": photo_diff, "rows": [asdict(r) for r in rows]}
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
