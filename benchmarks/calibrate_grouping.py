"""Calibrate the margin rule that joins fragments of a person (albumfix/people/cluster.py) on
scanned albums of training people: the real plan, regrouped from scratch, at each rule.

Build and scan the albums as `benchmarks/calibrate_verify.py`'s docstring shows, then:

    python benchmarks/calibrate_grouping.py runs/g-train1 runs/g-train2 runs/g-train3 \
        --distances 0.12 --ratios 0,1.1,1.15,1.2,1.3

For each (margin distance, margin ratio; ratio 0: the rule off) the plan
(albumfix.plan.build_plan, no second looks) is built on a copy of each album's scanned index
with its automatic assignments cleared (so the grouping is made again at that rule) and scored
by `calibrate_verify.score_plan`, pooled: damaged faces guided, of them by another person's
exemplar (wrong), and per album the pairwise grouping precision / recall of the plan's people.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calibrate_verify  # noqa: E402

from albumfix.people import cluster, verify  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, nargs="+", help="benchmark folders with manifest.json, scan.json, out-scan/")
    parser.add_argument("--distances", default=str(cluster.CALIBRATIONS["dlib"].margin_distance))
    parser.add_argument("--ratios", default="0,1.1,1.15,1.2,1.3")
    args = parser.parse_args()
    shipped, rule = cluster.CALIBRATIONS["dlib"], verify.CALIBRATIONS["dlib"]
    print(f"{'distance':>8} {'ratio':>5} {'guided':>9} {'wrong':>5}  per album grouping P/R")
    for distance, ratio in itertools.product(*(map(float, a.split(",")) for a in (args.distances, args.ratios))):
        cluster.CALIBRATIONS["dlib"] = replace(shipped, margin_distance=distance, margin_ratio=ratio)
        try:
            runs = [calibrate_verify.score_plan(work, rule.gate, rule.margin, rule.ratio, rule.lone_ratio,
                                                regroup=True) for work in args.work]
        finally:
            cluster.CALIBRATIONS["dlib"] = shipped
        guided, right = sum(r["guided"] for r in runs), sum(r["right"] for r in runs)
        print(f"{distance:>8.3f} {ratio:>5.2f} {guided:>4}/{sum(r['damaged'] for r in runs):<4} {guided - right:>5}  "
              + " ".join(f"{r['precision']:.3f}/{r['recall']:.3f}" for r in runs), flush=True)


if __name__ == "__main__":
    main()
