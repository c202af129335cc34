"""Guidance of `albumfix restore` runs on scanned albums of training people, from their run JSON.

For albums built as `benchmarks/calibrate_verify.py`'s docstring shows (album/, manifest.json,
the scan's out-scan/), each restored into OUT folders named out-<variant> (a copy of out-scan
with its automatic assignments cleared, so that the variant's plan groups the faces itself,
and its `--json` saved as out-<variant>/.albumfix/run.json, as the album benchmark does):

    python benchmarks/score_guidance.py runs/g-train1 runs/g-train2 runs/g-train3 --variants before,after

prints per variant, pooled over the albums: damaged faces (of the truth, matched to the scan),
guided (an exemplar guided the restoration), of them by another person's exemplar (wrong), the
guard kept the original of, and verified on a second look (the reason says so); the pairwise
grouping precision and recall of the run's people (worst album), and per album guided-wrong.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from albumfix.train.albums import _pairwise, load_manifest, match_faces
from albumfix.plan import guard_kept_original


def score_run(work: Path, variant: str) -> dict:
    """Figures of one run (module docstring) on the album `work`."""
    photos = load_manifest(work)
    run = json.loads((work / f"out-{variant}" / ".albumfix" / "run.json").read_text())
    matched = match_faces(photos, run)
    person = {(p.path, k): f.person for p in photos for k, f in enumerate(p.faces)}
    truth = {face["id"]: person[key] for key, face in matched.items()}
    damaged_paths = {p.path for p in photos if p.family}
    damaged = [face for (path, _), face in matched.items() if path in damaged_paths]
    restored = [(f, f.get("restored") or {}) for f in damaged]
    guided = [(f, r) for f, r in restored if r.get("guided") and r.get("exemplar")]
    labels = {f["id"]: f["person"] for f in matched.values() if f.get("person")}
    precision, recall = _pairwise(labels, {fid: truth[fid] for fid in labels})
    return {"damaged": len(damaged), "guided": len(guided),
            "wrong": sum(truth.get(r["exemplar"]) != truth[f["id"]] for f, r in guided),
            "guard_kept": sum(guard_kept_original(r) for _, r in guided),
            "second_look": sum("second look" in f["reason"] for f, _ in guided),
            "precision": precision, "recall": recall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, nargs="+", help="album folders with manifest.json and out-<variant>/")
    parser.add_argument("--variants", default="before,after", help="comma-separated OUT suffixes")
    args = parser.parse_args()
    print(f"{'variant':<10} {'guided':>10} {'wrong':>5} {'kept':>5} {'2nd look':>8} {'group P':>8} {'group R':>8}  "
          "per album guided-wrong (P/R)")
    for variant in args.variants.split(","):
        runs = [score_run(work, variant) for work in args.work]
        total = {k: sum(r[k] for r in runs) for k in ("damaged", "guided", "wrong", "guard_kept", "second_look")}
        print(f"{variant:<10} {total['guided']:>4}/{total['damaged']:<4} ({total['guided'] / total['damaged']:.1%}) "
              f"{total['wrong']:>5} {total['guard_kept']:>5} {total['second_look']:>8} "
              f"{min(r['precision'] for r in runs):>8.3f} {min(r['recall'] for r in runs):>8.3f}  "
              + " ".join(f"{r['guided']}-{r['wrong']} ({r['precision']:.3f}/{r['recall']:.3f})" for r in runs))


if __name__ == "__main__":
    main()
