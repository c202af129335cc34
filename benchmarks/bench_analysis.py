"""Face-analysis benchmarks.

speed:   photos per second of the dlib analyzer on folders of photos, HOG only vs HOG + CNN
         fallback, plus the cost of assess_face per face.
quality: calibration of albumfix.faces.quality on CelebA crops: sharp originals (face_px >= 200)
         against the same photos degraded by blur, down-and-up scaling, noise and JPEG; fits
         the logistic score (sharp and mildly degraded = acceptable, strongly degraded = not) on
         half of the people, reports per degradation on the other half the mean score, the
         share below 0.5 and the AUC against the sharp originals, and the landmark-shape
         statistics behind the plausibility ranges.

    .venv/bin/python benchmarks/bench_analysis.py speed --limit 200 /work/shared/data/faces/celeba
    .venv/bin/python benchmarks/bench_analysis.py quality --limit 600
"""
from __future__ import annotations

import argparse
import csv
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from albumfix.faces.backends import create_analyzer
from albumfix.faces.quality import (
    assess_face,
    check_landmarks,
    estimate_yaw,
    face_frame,
    quality_score,
)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
CELEBA_CSV = Path("/work/shared/data/faces/faces_celeba.csv")


def read_rgb(path: Path) -> np.ndarray | None:
    """Photo file -> (H, W, 3) uint8 RGB, or None when unreadable."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def list_photos(folder: Path, limit: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    return files[:limit]


# ---------------------------------------------------------------- speed
@dataclass
class SpeedRow:
    folder: str
    mode: str
    photos: int
    with_faces: int
    faces: int
    cnn_runs: int
    seconds: float
    assess_ms: float


def run_speed(folder: Path, limit: int, cnn: bool, upsample: int) -> SpeedRow:
    """Time analyse() over the folder's first `limit` photos (decoding excluded), then
    assess_face() over the faces of the first 50 photos."""
    analyzer = create_analyzer(faces="dlib", landmarks="dlib", upsample=upsample, cnn_fallback=cnn)
    photos = [img for img in (read_rgb(p) for p in list_photos(folder, limit)) if img is not None]
    analyzer.analyse(photos[0])  # load the models outside the timing
    found_per_photo = []
    start = time.perf_counter()
    for img in photos:
        found_per_photo.append(analyzer.analyse(img))
    seconds = time.perf_counter() - start
    pairs = [(img, f) for img, found in zip(photos[:50], found_per_photo) for f in found]
    start = time.perf_counter()
    for img, f in pairs:
        assess_face(img, f)
    assess_ms = 1000.0 * (time.perf_counter() - start) / max(len(pairs), 1)
    return SpeedRow(
        folder=str(folder),
        mode="HOG+CNN" if cnn else "HOG",
        photos=len(photos),
        with_faces=sum(bool(f) for f in found_per_photo),
        faces=sum(len(f) for f in found_per_photo),
        cnn_runs=sum(1 for f in found_per_photo if not any(x.detector == "dlib_hog" for x in f)) if cnn else 0,
        seconds=seconds,
        assess_ms=assess_ms,
    )


def speed_main(args: argparse.Namespace) -> None:
    rows = []
    for folder in args.folders:
        if not folder.is_dir():
            print(f"skip {folder}: not a folder")
            continue
        for cnn in (False, True):
            rows.append(run_speed(folder, args.limit, cnn, args.upsample))
    print(f"\nupsample={args.upsample}; times exclude decoding; 'cnn' = photos where HOG found nothing")
    print(f"{'folder':36} {'mode':8} {'photos':>6} {'w/face':>6} {'faces':>6} {'cnn':>5} {'s':>7} {'photo/s':>8} {'assess ms/face':>15}")
    for r in rows:
        print(
            f"{r.folder[-36:]:36} {r.mode:8} {r.photos:6d} {r.with_faces:6d} {r.faces:6d} {r.cnn_runs:5d} "
            f"{r.seconds:7.1f} {r.photos / r.seconds:8.2f} {r.assess_ms:15.1f}"
        )
    for hog, both in zip(rows[::2], rows[1::2]):
        if both.cnn_runs:
            print(f"{hog.folder[-36:]}: CNN fallback costs {(both.seconds - hog.seconds) / both.cnn_runs:.2f} s per run "
                  f"and found faces in {both.with_faces - hog.with_faces} of {both.cnn_runs} photos")


# ---------------------------------------------------------------- quality calibration
def degrade(rgb: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 -> degraded copy; kind "blur:s", "down:f", "noise:s", "jpeg:q" joined by '+'."""
    out = rgb
    for step in kind.split("+"):
        name, value = step.split(":")
        v = float(value)
        if name == "blur":
            out = cv2.GaussianBlur(out, (0, 0), v)
        elif name == "down":
            h, w = out.shape[:2]
            small = cv2.resize(out, (max(1, round(w / v)), max(1, round(h / v))), interpolation=cv2.INTER_AREA)
            out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        elif name == "noise":
            out = np.clip(out.astype(np.float32) + rng.normal(0.0, v, out.shape), 0, 255).astype(np.uint8)
        elif name == "jpeg":
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(v)])
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        else:
            raise ValueError(step)
    return out


DEGRADED = [
    "blur:1.5", "blur:2.5", "down:3", "down:5", "noise:8", "noise:15", "jpeg:15", "jpeg:30",
    "blur:1+down:2+noise:5+jpeg:40", "down:4+jpeg:50",
]
MILD = ["blur:0.7", "down:1.5", "noise:3", "jpeg:70"]


def celeba_rows(min_face_px: int, max_face_px: int, limit: int) -> list[tuple[Path, str]]:
    """(path, identity) of CelebA crops with face_px in [min, max], in a fixed shuffled order."""
    with CELEBA_CSV.open() as fh:
        rows = [r for r in csv.DictReader(fh) if min_face_px <= int(r["face_px"]) <= max_face_px]
    rows.sort(key=lambda r: (zlib.crc32(r["path"].encode()), r["path"]))
    return [(CELEBA_CSV.parent / r["path"], r["identity"]) for r in rows[:limit]]


def features(q) -> list[float]:
    return [float(np.log(max(q.sharpness, 1e-3))), float(np.log1p(q.noise)), q.blockiness]


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability a random positive scores above a random negative (ties count half)."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


@dataclass
class Record:
    fit_half: bool  # person in the fitting half
    kind: str  # "sharp", a degradation, or "small-original"
    features: list[float]
    quality: object  # FaceQuality


def largest_face(analyzer, rgb: np.ndarray | None):
    found = analyzer.analyse(rgb) if rgb is not None else []
    return max(found, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1])) if found else None


def collect(args: argparse.Namespace) -> tuple[list[Record], dict]:
    """Assess sharp CelebA photos, their degraded copies and naturally small faces."""
    analyzer = create_analyzer(faces="dlib", landmarks="dlib")
    rng = np.random.default_rng(0)
    records, shape = [], {"spread": [], "eye_mouth": [], "yaw": [], "problems": {}}
    for path, identity in celeba_rows(args.min_face_px, 10**6, args.limit):
        rgb = read_rgb(path)
        face = largest_face(analyzer, rgb)
        if face is None:
            continue
        ok, problem, spread = check_landmarks(face.landmarks)
        shape["spread"].append(spread)
        shape["eye_mouth"].append(face_frame(face.landmarks)[48:68, 1].mean())
        shape["yaw"].append(abs(estimate_yaw(face.landmarks)))
        if not ok:
            shape["problems"][problem] = shape["problems"].get(problem, 0) + 1
        fit_half = zlib.crc32(identity.encode()) % 2 == 0
        for kind in ["sharp"] + DEGRADED + MILD:
            q = assess_face(rgb if kind == "sharp" else degrade(rgb, kind, rng), face)
            records.append(Record(fit_half, kind, features(q), q))
    for path, identity in celeba_rows(0, args.small_face_px, args.limit // 2):
        rgb = read_rgb(path)
        face = largest_face(analyzer, rgb)
        if face is not None:
            q = assess_face(rgb, face)
            records.append(Record(zlib.crc32(identity.encode()) % 2 == 0, "small-original", features(q), q))
    return records, shape


THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)


def quality_main(args: argparse.Namespace) -> None:
    import pickle

    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    if args.cache and args.cache.exists():
        records, shape = pickle.loads(args.cache.read_bytes())
    else:
        records, shape = collect(args)
        if args.cache:
            args.cache.write_bytes(pickle.dumps((records, shape)))
    print(f"{len(shape['spread'])} sharp photos with a face, {len(records)} assessments, {time.perf_counter() - t0:.0f} s")
    pct = [0.1, 1, 50, 99, 99.9]
    print("landmark spread percentiles", pct, np.round(np.percentile(shape["spread"], pct), 3))
    print("eye-mouth / interocular   ", pct, np.round(np.percentile(shape["eye_mouth"], pct), 3))
    print("|yaw| deg percentiles     ", pct, np.round(np.percentile(shape["yaw"], pct), 1))
    print("implausible on sharp originals:", shape["problems"] or "none")

    # acceptable (1): the sharp originals and their mild degradations (grain, slight softness,
    # good JPEG are normal in albums and not worth replacing); degraded (0): the strong ones
    train = [r for r in records if r.fit_half and r.kind != "small-original"]
    x = np.array([r.features for r in train])
    y = np.array([r.kind == "sharp" or r.kind in MILD for r in train])
    model = LogisticRegression(class_weight="balanced", C=1.0).fit(x, y)
    w, b = model.coef_[0], model.intercept_[0]
    print(f"\nfitted SCORE_WEIGHTS = ({w[0]:.2f}, {w[1]:.2f}, {w[2]:.2f}), SCORE_BIAS = {b:.2f}")

    def score(r: Record) -> float:
        if args.use_module_score:
            return quality_score(r.quality.sharpness, r.quality.noise, r.quality.blockiness)
        return float(1.0 / (1.0 + np.exp(-(np.dot(w, r.features) + b))))

    held = [r for r in records if not r.fit_half]
    sharp = np.array([score(r) for r in held if r.kind == "sharp"])
    print(f"\nheld-out people, {'quality.py' if args.use_module_score else 'fitted'} score; share below each threshold")
    below = " ".join(f"{'<' + str(t):>5}" for t in THRESHOLDS)
    print(f"{'set':30} {'n':>4} {'mean':>5} {below} {'AUC':>5} {'sharp':>6} {'noise':>5} {'block':>5}")
    for kind in ["sharp"] + MILD + DEGRADED + ["small-original"]:
        rows = [r for r in held if r.kind == kind]
        s = np.array([score(r) for r in rows])
        shares = " ".join(f"{np.mean(s < t):5.2f}" for t in THRESHOLDS)
        print(
            f"{kind:30} {len(s):4d} {s.mean():5.2f} {shares} {auc(sharp, s) if kind != 'sharp' else float('nan'):5.3f} "
            f"{np.median([r.quality.sharpness for r in rows]):6.3f} {np.median([r.quality.noise for r in rows]):5.2f} "
            f"{np.median([r.quality.blockiness for r in rows]):5.3f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed", help="photos per second of the dlib analyzer")
    sp.add_argument("folders", nargs="*", type=Path, default=[Path("/work/shared/data/faces/celeba"), Path("/work/main/sample_album")])
    sp.add_argument("--limit", type=int, default=200, help="first N photos (sorted) of each folder")
    sp.add_argument("--upsample", type=int, default=1)
    qp = sub.add_parser("quality", help="calibrate the quality score on CelebA")
    qp.add_argument("--limit", type=int, default=600, help="sharp CelebA photos to use")
    qp.add_argument("--min-face-px", type=int, default=200, help="CelebA face_px of the sharp set")
    qp.add_argument("--small-face-px", type=int, default=90, help="face_px at most: naturally small faces")
    qp.add_argument("--use-module-score", action="store_true", help="report quality.py's score instead of the refit")
    qp.add_argument("--cache", type=Path, help="pickle of the measurements, reused when present")
    args = parser.parse_args()
    speed_main(args) if args.command == "speed" else quality_main(args)


if __name__ == "__main__":
    main()
