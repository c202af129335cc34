"""Calibrate album context in verification (albumfix/people/context.py) on scanned albums of
training people, each idea alone and combined, with the margin rule as shipped.

Build and scan the albums as `benchmarks/calibrate_verify.py`'s docstring shows (seeds 0-2 ->
runs/albums-train, runs/albums-train2, runs/albums-train3), then:

    python benchmarks/calibrate_context.py --describe runs/albums-train runs/albums-train2 runs/albums-train3
    python benchmarks/calibrate_context.py runs/albums-train runs/albums-train2 runs/albums-train3 \
        --chain-ratios 1.25,1.5,2

`--describe` prints what context each album carries (from its manifest, the truth): photos with
several known faces (cannot-link), pairs of people seen together in two photos or more
(co-occurrence), photos with an EXIF date (time), folders that hold a single person (the
builder's layout; a real album's folders are events or scan batches, so this is no signal to
use); and, with the rules as shipped, how many damaged faces the plan restores, and of them
how many have their own person nearest by the rule's per-person distance (the candidate the
rule would accept: a ceiling for any rule that still accepts only the nearest person).
Otherwise, for each rule set (`RULES`, and the chain at each `--chain-ratios`), the real plan is
built on a copy of each album's index and scored by `calibrate_verify.score_plan`,
pooled: damaged faces guided, of them by another person's exemplar (wrong), damaged faces used
as exemplars, and pairwise grouping precision / recall of the worst album, then per album
guided-wrong.

`--oracle-events K,...` measures instead how strong a context prior would have to be, since these
albums carry none: each damaged face is verified only among the people of a simulated "event" of
K people, its own (by the truth) and K - 1 others drawn at random (people no known face of
which is matched to the truth always stay). An oracle bound, not a rule: a date or an event
narrows the candidates at best this well, and softly.
"""
from __future__ import annotations

import argparse
import sys
import zlib
from collections import Counter
from dataclasses import replace
from itertools import combinations
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from calibrate_verify import album_truth, real_plan, score_plan  # noqa: E402

from albumfix.people import context, verify  # noqa: E402
from albumfix.train.albums import load_manifest  # noqa: E402

EXIF_DATES = (306, 36867, 36868)  # DateTime (IFD0), DateTimeOriginal, DateTimeDigitized (Exif IFD)
NONE = replace(context.CONTEXT, cannot_link=False, chain=False, passes=1)
RULES = {
    "margin rule alone (before)": NONE,
    "passes alone (3)": replace(NONE, passes=3),
    "cannot-link, 1 pass": replace(NONE, cannot_link=True),
    "cannot-link, 3 passes": replace(NONE, cannot_link=True, passes=3),
}


def describe(work: Path) -> str:
    """What context the album `work` carries (module docstring), from its manifest."""
    photos = load_manifest(work)
    together = Counter(pair for p in photos for pair in combinations(sorted({f.person for f in p.faces}), 2))
    dated = 0
    for p in photos:
        exif = Image.open(work / "album" / p.path).getexif()
        dated += any(tag in exif for tag in EXIF_DATES) or any(tag in exif.get_ifd(0x8769) for tag in EXIF_DATES)
    folders: dict[str, set[str]] = {}
    for p in photos:
        folders.setdefault(str(Path(p.path).parent), set()).update(f.person for f in p.faces)
    several = [p for p in photos if len(p.faces) > 1]
    return (f"{work}: {len(photos)} photos, {len(several)} with several known faces "
            f"({sum(p.family is not None for p in several)} of them damaged); "
            f"{len(together)} pairs of people seen together, {sum(n >= 2 for n in together.values())} in two photos "
            f"or more; {dated} photos with an EXIF date; {sum(len(v) == 1 for v in folders.values())} of "
            f"{len(folders)} folders hold a single person")


def nearest_own(work: Path) -> str:
    """Damaged faces, of them to restore, of them with their own person nearest (the first
    `candidates` of the plan, whose face is matched to the truth), and of those guided."""
    truth, damaged = album_truth(work)
    plan = real_plan(work)
    restored = [f for f in plan.faces.values() if f.row.face_id in damaged and f.action == "restore"]
    own = [f for f in restored if f.candidates and truth.get(f.candidates[0].face_id) == truth[f.row.face_id]]
    return (f"{work}: {len(damaged)} damaged faces, {len(restored)} to restore, {len(own)} with their own person "
            f"nearest ({sum(bool(f.exemplars) for f in own)} of them guided)")


def score_oracle_events(work: Path, k: int) -> dict:
    """`score_plan` with every damaged face verified among the people of an event of k people
    holding its own (module docstring), with cannot-link, in 3 passes."""
    import numpy as np

    import albumfix.plan as plan_module

    truth, _ = album_truth(work)
    verify_each = plan_module._verify_each

    def among_event(queries, members, space, excluded=None, chain_ratio=None):
        votes: dict[str, Counter] = {}
        for m in members:
            if m.row.face_id in truth:
                votes.setdefault(m.person, Counter())[truth[m.row.face_id]] += 1
        owner = {person: c.most_common(1)[0][0] for person, c in votes.items()}
        everyone = sorted(set(owner.values()))
        out = []
        for i, q in enumerate(queries):
            own = truth.get(q.row.face_id)
            rng = np.random.default_rng(zlib.crc32(q.row.face_id.encode()))
            others = [p for p in everyone if p != own]
            event = {own, *(others[j] for j in rng.permutation(len(others))[:k - 1])}
            out.append({person for person, who in owner.items() if who not in event}
                       | (excluded[i] if excluded is not None else set()))
        return verify_each(queries, members, space, excluded=out, chain_ratio=chain_ratio)

    cal = verify.CALIBRATIONS["dlib"]
    saved = context.CONTEXT
    plan_module._verify_each, context.CONTEXT = among_event, replace(NONE, cannot_link=True, passes=3)
    try:
        return score_plan(work, cal.gate, cal.margin, cal.ratio, cal.lone_ratio)
    finally:
        plan_module._verify_each, context.CONTEXT = verify_each, saved


def _line(name: str, runs: list[dict]) -> str:
    total = {k: sum(r[k] for r in runs) for k in ("damaged", "guided", "right", "damaged_exemplars")}
    return (f"{name:<36} {total['guided']:>4}/{total['damaged']:<4} {total['guided'] - total['right']:>5} "
            f"{total['damaged_exemplars']:>6} {min(r['precision'] for r in runs):>8.3f} "
            f"{min(r['recall'] for r in runs):>8.3f}  "
            + " ".join(f"{r['guided']}-{r['guided'] - r['right']}" for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, nargs="+",
                        help="benchmark folders with album/, manifest.json, scan.json, out-scan/ (pooled)")
    parser.add_argument("--describe", action="store_true", help="print the context each album carries, and stop")
    parser.add_argument("--chain-ratios", default="1.5", help="chain_detail_ratio values to try (comma-separated)")
    parser.add_argument("--oracle-events", default="", help="event sizes K for the oracle bound (comma-separated)")
    args = parser.parse_args()
    if args.describe:
        for work in args.work:
            print(describe(work))
            print(nearest_own(work))
        return
    header = (f"{'rules':<36} {'guided':>9} {'wrong':>5} {'dmg-ex':>6} {'group P':>8} {'group R':>8}  "
              "per album guided-wrong")
    if args.oracle_events:
        print(header)
        for k in map(int, args.oracle_events.split(",")):
            print(_line(f"oracle event of {k} people", [score_oracle_events(w, k) for w in args.work]), flush=True)
        return
    rules = dict(RULES)
    for r in map(float, args.chain_ratios.split(",")):
        rules[f"chain {r:g}, 3 passes"] = replace(NONE, chain=True, chain_detail_ratio=r, passes=3)
        rules[f"cannot-link + chain {r:g}, 3 passes"] = replace(NONE, cannot_link=True, chain=True,
                                                              chain_detail_ratio=r, passes=3)
    cal = verify.CALIBRATIONS["dlib"]
    print(header)
    saved = context.CONTEXT
    try:
        for name, rule in rules.items():
            context.CONTEXT = rule
            runs = [score_plan(work, cal.gate, cal.margin, cal.ratio, cal.lone_ratio) for work in args.work]
            print(_line(name, runs), flush=True)
    finally:
        context.CONTEXT = saved


if __name__ == "__main__":
    main()
