"""Calibrate the album-wide margin rule (albumfix/people/verify.py) on a scanned benchmark album.

Build and scan an album of *training* people first (the held-out people stay untouched; these
90 people, `albumfix.train.identity.calibration_people`, are also kept out of identity
fine-tuning):

    python -c "from albumfix.train.albums import build_albums; build_albums(['../shared/data/faces/celeba', \
        '../shared/data/faces/lfw'], 'runs/albums-train', people=90, split='train')"
    albumfix scan runs/albums-train/album -o runs/albums-train/out-scan --json > runs/albums-train/scan.json
    python benchmarks/calibrate_verify.py runs/albums-train

The shipped rule was chosen on four such albums (`build_albums(..., seed=0)` to `seed=3`, each
in its own folder): other photos and other damage of the same people. One album alone is too
few faces to see a rule's errors: the session-8 rule made none on the first two and six on the
other two.

For every (gate, margin) of the grid, the real plan (albumfix.plan.build_plan) is built on a copy
of the scanned index and scored against the truth: damaged faces guided, exemplars of the right
person, damaged faces used as exemplars, and pairwise grouping precision / recall.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from albumfix.album.index import AlbumIndex
from albumfix.people import verify
from albumfix.plan import build_plan
from albumfix.settings import Settings
from albumfix.train.albums import _pairwise, load_manifest, match_faces


class _Quiet:
    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def score_plan(work: Path, gate: float, margin: float, ratio: float = 1.0) -> dict:
    """The plan's figures on the benchmark album `work` with the rule at (gate, margin, ratio)."""
    photos = load_manifest(work)
    scan = json.loads((work / "scan.json").read_text())
    matched = match_faces(photos, scan)
    person = {(p.path, k): f.person for p in photos for k, f in enumerate(p.faces)}
    truth = {face["id"]: person[key] for key, face in matched.items()}
    damaged = {face["id"] for (path, _), face in matched.items() if any(p.path == path and p.family for p in photos)}
    saved = verify.CALIBRATIONS["dlib"]
    verify.CALIBRATIONS["dlib"] = replace(saved, gate=gate, margin=margin, ratio=ratio)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            shutil.copyfile(work / "out-scan" / ".albumfix" / "index.sqlite", Path(tmp) / "index.sqlite")
            with AlbumIndex(Path(tmp) / "index.sqlite") as ix:
                plan = build_plan(ix, ix.faces(), Settings(), _Quiet())
    finally:
        verify.CALIBRATIONS["dlib"] = saved
    guided = [f for f in plan.faces.values() if f.row.face_id in damaged and f.exemplars]
    right = sum(truth.get(f.exemplars[0].face_id) == truth[f.row.face_id] for f in guided)
    used = {c.face_id for f in plan.faces.values() for c in f.exemplars[:1]}
    labels = {fid: plan.faces[fid].person for fid in truth if fid in plan.faces and plan.faces[fid].person}
    precision, recall = _pairwise(labels, {fid: truth[fid] for fid in labels})
    return {"gate": gate, "margin": margin, "ratio": ratio, "damaged": len(damaged), "guided": len(guided), "right": right,
            "damaged_exemplars": len(used & damaged), "precision": precision, "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="benchmark folder with album/, manifest.json, scan.json, out-scan/")
    parser.add_argument("--gates", default="0.10,0.12,0.15")
    parser.add_argument("--margins", default="0.005,0.01,0.015,0.02,0.03")
    parser.add_argument("--ratios", default="1.0")
    args = parser.parse_args()
    print(f"{'gate':>5} {'margin':>6} {'ratio':>5} {'guided':>9} {'right':>6} {'dmg-ex':>6} {'group P':>8} {'group R':>8}")
    grid = itertools.product(*(map(float, a.split(",")) for a in (args.gates, args.margins, args.ratios)))
    for gate, margin, ratio in grid:
        r = score_plan(args.work, gate, margin, ratio)
        print(f"{gate:>5.3f} {margin:>6.3f} {ratio:>5.2f} {r['guided']:>4}/{r['damaged']:<4} "
              f"{r['right'] / max(r['guided'], 1):>6.1%} {r['damaged_exemplars']:>6} "
              f"{r['precision']:>8.3f} {r['recall']:>8.3f}")


if __name__ == "__main__":
    main()
