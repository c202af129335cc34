"""Calibrate the album-wide margin rule (albumfix/people/verify.py) on a scanned benchmark album.

Build and scan an album of *training* people first (the held-out people stay untouched; these
90 people, `albumfix.train.identity.calibration_people`, are also kept out of identity
fine-tuning):

    python -c "from albumfix.train.albums import build_albums; build_albums(['../shared/data/faces/celeba', \
        '../shared/data/faces/lfw'], 'runs/albums-train', people=90, split='train')"
    albumfix scan runs/albums-train/album -o runs/albums-train/out-scan --json > runs/albums-train/scan.json
    python benchmarks/calibrate_verify.py runs/albums-train runs/albums-train2 runs/albums-train3 runs/albums-train4 \
        --gates 0.12 --margins 0.0075 --ratios 1.1,1.2,1.25,1.3 --lone-ratios 1.25,1.3,1.4
    python benchmarks/calibrate_verify.py runs/phone-train0 runs/phone-train1 runs/phone-train2 --regroup \
        --sharp-gates 0.05,0.07,0.09,0.12   # albums built with families=["phone-snap"]

The shipped rule was chosen on four such albums (`build_albums(..., seed=0)` to `seed=3`, each
in its own folder): other photos and other damage of the same people. One album alone is too
few faces to see a rule's errors: the session-8 rule made none on the first two and six on the
other two.

For every (gate, margin, ratio, lone ratio) of the grid, the real plan (albumfix.plan.build_plan)
is built on a copy of each album's scanned index and scored against the truth, pooled over the
albums: damaged faces guided, those guided by another person's exemplar (wrong), damaged faces
used as exemplars, and pairwise grouping precision / recall (of the worst album), then per
album guided-wrong.
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
from albumfix.stages.context import NoProgress
from albumfix.train.albums import _pairwise, load_manifest, match_faces



def album_truth(work: Path) -> tuple[dict[str, str], set[str]]:
    """The benchmark album `work`'s scanned faces matched to the truth: (face id -> true
    person, the face ids of damaged photos)."""
    photos = load_manifest(work)
    scan = json.loads((work / "scan.json").read_text())
    matched = match_faces(photos, scan)
    person = {(p.path, k): f.person for p in photos for k, f in enumerate(p.faces)}
    truth = {face["id"]: person[key] for key, face in matched.items()}
    damaged = {face["id"] for (path, _), face in matched.items() if any(p.path == path and p.family for p in photos)}
    return truth, damaged


def real_plan(work: Path, regroup: bool = False):
    """albumfix.plan.build_plan on a copy of the album's scanned index, with the rules as they
    stand (the index itself is untouched); regroup: with the scan's automatic grouping cleared,
    so that the plan groups the faces itself."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(work / "out-scan" / ".albumfix" / "index.sqlite", Path(tmp) / "index.sqlite")
        with AlbumIndex(Path(tmp) / "index.sqlite") as ix:
            if regroup:
                ix.replace_automatic_assignments({})
            return build_plan(ix, ix.faces(), Settings(), NoProgress())


def score_plan(work: Path, gate: float, margin: float, ratio: float = 1.0, lone_ratio: float | None = None,
               sharp_gate: float | None = None, regroup: bool = False) -> dict:
    """The plan's figures on the benchmark album `work` with the rule at (gate, margin, ratio,
    lone_ratio, sharp_gate; None: the shipped one); regroup: see `real_plan`."""
    truth, damaged = album_truth(work)
    saved = verify.CALIBRATIONS["dlib"]
    verify.CALIBRATIONS["dlib"] = replace(saved, gate=gate, margin=margin, ratio=ratio,
                                          lone_ratio=saved.lone_ratio if lone_ratio is None else lone_ratio,
                                          sharp_gate=saved.sharp_gate if sharp_gate is None else sharp_gate)
    try:
        plan = real_plan(work, regroup)
    finally:
        verify.CALIBRATIONS["dlib"] = saved
    guided = [f for f in plan.faces.values() if f.row.face_id in damaged and f.exemplars]
    right = sum(truth.get(f.exemplars[0].face_id) == truth[f.row.face_id] for f in guided)
    used = {c.face_id for f in plan.faces.values() for c in f.exemplars[:1]}
    labels = {fid: plan.faces[fid].person for fid in truth if fid in plan.faces and plan.faces[fid].person}
    precision, recall = _pairwise(labels, {fid: truth[fid] for fid in labels})
    return {"damaged": len(damaged), "guided": len(guided), "right": right,
            "damaged_exemplars": len(used & damaged), "precision": precision, "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, nargs="+",
                        help="benchmark folders with album/, manifest.json, scan.json, out-scan/ (pooled)")
    parser.add_argument("--gates", default="0.10,0.12,0.15")
    parser.add_argument("--margins", default="0.005,0.01,0.015,0.02,0.03")
    parser.add_argument("--ratios", default="1.0")
    parser.add_argument("--lone-ratios", default=str(verify.CALIBRATIONS["dlib"].lone_ratio))
    parser.add_argument("--sharp-gates", default=str(verify.CALIBRATIONS["dlib"].sharp_gate),
                        help="gates for faces to restore that keep detail (and second looks, which a scan has none of)")
    parser.add_argument("--regroup", action="store_true", help="clear the scan's automatic grouping first")
    args = parser.parse_args()
    print(f"{'gate':>5} {'margin':>6} {'ratio':>5} {'lone':>5} {'sharp':>5} {'guided':>9} {'wrong':>5} {'dmg-ex':>6} "
          f"{'group P':>8} {'group R':>8}  per album guided-wrong")
    grid = itertools.product(*(map(float, a.split(",")) for a in (args.gates, args.margins, args.ratios,
                                                                  args.lone_ratios, args.sharp_gates)))
    for gate, margin, ratio, lone, sharp in grid:
        runs = [score_plan(work, gate, margin, ratio, lone, sharp, args.regroup) for work in args.work]
        total = {k: sum(r[k] for r in runs) for k in ("damaged", "guided", "right", "damaged_exemplars")}
        print(f"{gate:>5.3f} {margin:>6.4f} {ratio:>5.2f} {lone:>5.2f} {sharp:>5.3f} "
              f"{total['guided']:>4}/{total['damaged']:<4} {total['guided'] - total['right']:>5} "
              f"{total['damaged_exemplars']:>6} "
              f"{min(r['precision'] for r in runs):>8.3f} {min(r['recall'] for r in runs):>8.3f}  "
              + " ".join(f"{r['guided']}-{r['guided'] - r['right']}" for r in runs))


if __name__ == "__main__":
    main()
