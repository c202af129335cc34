"""Calibrate the guard's detail ceiling (albumfix/guard.py `DETAIL_CEILING`): how much of the
restorer's change a face that keeps real detail should take.

Build and scan albums of *training* people (the held-out people and the probe family stay
untouched): four in the benchmark's families and two in "training-mild", the mild end of our
own degradation, as for benchmarks/calibrate_verify.py, e.g.

    python -c "from albumfix.train.albums import build_albums; build_albums(['../shared/data/faces/celeba', \
        '../shared/data/faces/lfw'], 'runs/albums-train-mild0', people=90, split='train', seed=0, \
        families=('training-mild',))"
    albumfix scan runs/albums-train-mild0/album -o runs/albums-train-mild0/out-scan --json > runs/albums-train-mild0/scan.json
    python benchmarks/calibrate_strength.py --fit runs/albums-train runs/albums-train3 runs/albums-train-mild0 \
        --test runs/albums-train2 runs/albums-train4 runs/albums-train-mild1

Each album is restored once without the guard (benchmarks/calibrate_guard.py `measure_faces`,
kept in the album folder as strength-faces.json) and every restored damaged face is pasted at
strengths 0-1.25. A rule (start, end, floor) caps a face's strength at `detail_ceiling` of its
stored detail, and the guard then keeps the first strength that passes from there down, as the
product does (what the guard sees at strengths between the measured ones interpolated). A
rule's score on an album is the mean face-region PSNR gain over the guard without a ceiling,
and on a set of albums the mean of the albums' (so a family's share of faces does not decide);
the judge's (FaceNet) identity distance change is printed beside it (negative: nearer the truth). Prints the best rules on the fit
albums among those that lose at most --max-loss on every fit album, with their test score and
per-album figures.

What it showed (session 15; unguarded figures, face-region PSNR gain over the input at strengths
1 / 0.75 / 0.5): faces of the benchmark's families with detail 0.14-0.22 gain +0.15 / +0.24 /
+0.24 dB (0.14-0.18, 42 faces) and +0.08 / +0.16 / +0.17 dB (0.18-0.22, 24 faces), while
"training-mild" faces of the same detail lose 1.13 / 0.69 / 0.33 dB (19 faces) and 0.73 / 0.40 /
0.16 dB (27 faces). The same detail asks for opposite strengths, and no other measure of the
input separates them (within detail 0.12-0.30, AUC of mild against the other families: detail
0.74, band sharpness 0.76, quality score 0.66, eye distance 0.49), so a ceiling on detail can do
little without costing the heavier damage. See albumfix/guard.py for the rule kept.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_guard import measure_faces  # noqa: E402

from albumfix.guard import (MIN_SHARPNESS_RATIO, REFERENCE_GAIN, SELF_DISTANCE, STRENGTH_STEPS,  # noqa: E402
                            detail_ceiling)

LADDER = (1.25, 1.0, 0.75, 0.5, 0.25, 0.0)


def album_faces(work: Path) -> list[dict]:
    """measure_faces of an album on LADDER, made once and kept as work/strength-faces.json."""
    saved = work / "strength-faces.json"
    if not saved.exists():
        saved.write_text(json.dumps(measure_faces(work, LADDER)))
    return json.loads(saved.read_text())


def measured(face: dict, strength: float, key: str) -> float:
    """The face's figure `key` ("psnr", "reference", "self", "sharpness", ...) pasted at
    `strength`, linearly interpolated between the measured strengths."""
    steps = sorted((float(s), x[key]) for s, x in face["steps"].items())
    return float(np.interp(strength, [s for s, _ in steps], [v for _, v in steps]))


def product_strength(face: dict, ceiling: float) -> float:
    """The strength the product keeps for the face: the guard's first passing strength from
    `ceiling` down (albumfix.guard.guard_face with the shipped rules), 0 when none passes."""
    before = face["steps"]["0.0"]
    for s in [ceiling] + [x for x in STRENGTH_STEPS if x < ceiling]:
        if face["guided"]:
            near = measured(face, s, "reference") <= before["reference"] - REFERENCE_GAIN["dlib"]
        else:
            near = measured(face, s, "self") <= SELF_DISTANCE["dlib"]
        if near and measured(face, s, "sharpness") >= MIN_SHARPNESS_RATIO * before["sharpness"]:
            return s
    return 0.0


def rule_gain(faces: list[dict], rule: tuple[float, float, float] | None, key: str = "psnr") -> float:
    """Mean change of `key` over the input with the guard in the loop, each face capped at the
    rule's ceiling (None: no ceiling, as before)."""
    return float(np.mean([measured(f, product_strength(f, detail_ceiling(f["detail"], rule) if rule else 1.0), key)
                          - measured(f, 0.0, key) for f in faces]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fit", type=Path, nargs="+", required=True, help="scanned benchmark folders to fit on")
    parser.add_argument("--test", type=Path, nargs="*", default=[], help="scanned benchmark folders to test on")
    parser.add_argument("--starts", default="0.06,0.08,0.1,0.12,0.14")
    parser.add_argument("--ends", default="0.14,0.16,0.18,0.2,0.25,0.3")
    parser.add_argument("--floors", default="0.25,0.35,0.5,0.6,0.75,0.9")
    parser.add_argument("--max-loss", type=float, default=0.01,
                        help="dB: a rule may lose at most this much on any fit album (no album traded for another)")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    albums = {w: album_faces(w) for w in [*args.fit, *args.test]}
    for w, faces in albums.items():
        full = np.mean([measured(f, 1.0, "psnr") - measured(f, 0.0, "psnr") for f in faces])
        print(f"{w}: {len(faces)} restored damaged faces; over the input, full strength {full:+.3f} dB, "
              f"the guard without a ceiling {rule_gain(faces, None):+.3f} dB")
    score = lambda rule, works: float(np.mean([rule_gain(albums[w], rule) - rule_gain(albums[w], None)  # noqa: E731
                                               for w in works]))
    grid = [r for r in itertools.product(*(map(float, a.split(",")) for a in (args.starts, args.ends, args.floors)))
            if r[1] > r[0]]
    print(f"{'start':>5} {'end':>5} {'floor':>5} {'fit':>7} {'test':>7}  per album")
    kept = [r for r in grid if all(score(r, [w]) >= -args.max_loss for w in args.fit)]
    print(f"{len(kept)} of {len(grid)} rules lose at most {args.max_loss} dB on every fit album")
    for rule in sorted(kept, key=lambda r: -score(r, args.fit))[:args.top]:
        test = f"{score(rule, args.test):+7.3f}" if args.test else f"{'-':>7}"
        print(f"{rule[0]:>5.2f} {rule[1]:>5.2f} {rule[2]:>5.2f} {score(rule, args.fit):+7.3f} {test}  "
              + " ".join(f"{rule_gain(faces, rule) - rule_gain(faces, None):+.3f}" for faces in albums.values())
              + "  judge " + " ".join(f"{rule_gain(faces, rule, 'judge') - rule_gain(faces, None, 'judge'):+.3f}"
                                      for faces in albums.values()))


if __name__ == "__main__":
    main()
