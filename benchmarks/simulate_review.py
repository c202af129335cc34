"""How many damaged faces a user gets guided by confirming the people `albumfix review` offers.

On a benchmark album already restored (`albumfix eval --albums WORK`: WORK/manifest.json, the
album's truth, and WORK/out-product/ with its index and .albumfix/run.json), with no model work:

1. the real plan (albumfix.plan.build_plan, this checkout's rule) is built on a copy of the
   run's index: each damaged face is guided or left unguided, and an unguided one (or one whose
   original the guard kept, read from run.json) is offered its 3 nearest people, each with
   their face nearest it;
2. a simulated user confirms, for each face on the review page, the offered person whose shown
   face is of the face's true person (`albumfix.train.albums.match_faces` ties faces to the
   truth), when one is;
3. the confirmations are applied at once to the copy (`albumfix people apply`'s
   `confirm_faces`) and the plan is built again.

Prints, per damage family and for all damaged faces of the truth: detected, judged degraded,
guided automatically (and by the right person), on the review page (by cause), true person among
those offered (at rank 1, 2, 3), and guided after the confirmations (and by the right person).
"Guided" is the plan's: the guard may still keep an original when the photo is restored.

    python benchmarks/simulate_review.py runs/albums [--run out-product] [--json]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from albumfix.album.index import AlbumIndex
from albumfix.degrade import DAMAGE_FAMILIES
from albumfix.people.edit import confirm_faces
from albumfix.stages.context import NoProgress
from albumfix.plan import Plan, build_plan, guard_kept_original
from albumfix.settings import Settings
from albumfix.train.albums import load_manifest, match_faces


def _plan(index: Path) -> Plan:
    """The product's plan (default settings, with the run's second looks) on the index at
    `index` (which it updates)."""
    with AlbumIndex(index) as ix:
        return build_plan(ix, ix.faces(), Settings(), NoProgress(), looks=ix.looks())


def _guard_kept(run: dict) -> set[str]:
    """Ids of the faces a run guided whose original face the guard kept (strength 0)."""
    return {f["id"] for p in run["photos"] for f in p["faces"] if guard_kept_original(f.get("restored") or {})}


def simulate(work: Path, run_name: str = "out-product") -> dict:
    """Figures of the simulated review on benchmark folder `work` (module docstring): per family
    and "all", counts of damaged truth faces."""
    photos = load_manifest(work)
    out = work / run_name
    run = json.loads((out / ".albumfix" / "run.json").read_text())
    matched = match_faces(photos, run)
    person = {(p.path, k): f.person for p in photos for k, f in enumerate(p.faces)}
    truth = {face["id"]: person[key] for key, face in matched.items()}
    family = {p.path: p.family for p in photos}
    damaged = [face["id"] for (path, _), face in matched.items() if family[path]]
    kept = _guard_kept(run)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index.sqlite"
        shutil.copyfile(out / ".albumfix" / "index.sqlite", index)
        before = _plan(index)
        offered, decisions = {}, []
        for fid in damaged:
            face = before.faces.get(fid)
            if face is None or face.action != "restore" or not (face.unguided or fid in kept):
                continue
            ranks = [k for k, c in enumerate(face.candidates) if truth.get(c.face_id) == truth[fid]]
            offered[fid] = ranks[0] if ranks else None
            if ranks:
                decisions.append((fid, face.candidates[ranks[0]].person))
        with AlbumIndex(index) as ix:
            confirm_faces(ix, decisions)
        after = _plan(index)

    def guided(plan: Plan, fid: str) -> tuple[bool, bool]:
        face = plan.faces.get(fid)
        if face is None or not face.exemplars:
            return False, False
        return True, truth.get(face.exemplars[0].face_id) == truth[fid]

    rows: dict[str, dict] = {}
    for p in photos:
        if not p.family:
            continue
        for k, _ in enumerate(p.faces):
            fid = matched.get((p.path, k), {}).get("id")
            plan_face = before.faces.get(fid) if fid else None
            auto, auto_right = guided(before, fid) if fid else (False, False)
            then, then_right = guided(after, fid) if fid else (False, False)
            cause = (plan_face.unguided or ("guard_rejected" if fid in kept else None)) if plan_face else None
            for name in (p.family, "all"):
                r = rows.setdefault(name, {"faces": 0, "detected": 0, "degraded": 0, "auto_guided": 0,
                                           "auto_right": 0, "on_page": 0, "causes": {}, "offered": 0,
                                           "offered_at": [0, 0, 0], "guided_after": 0, "right_after": 0})
                r["faces"] += 1
                r["detected"] += fid is not None
                r["degraded"] += bool(plan_face and plan_face.action == "restore")
                r["auto_guided"] += auto
                r["auto_right"] += auto_right
                if fid in offered:
                    r["on_page"] += 1
                    r["causes"][cause] = r["causes"].get(cause, 0) + 1
                    if offered[fid] is not None:
                        r["offered"] += 1
                        r["offered_at"][offered[fid]] += 1
                r["guided_after"] += then
                r["right_after"] += then_right
    return {"work": str(work), "run": run_name, "confirmed": len(decisions),
            "families": {name: rows[name] for name in (*DAMAGE_FAMILIES, "all") if name in rows}}


def table(report: dict) -> str:
    """The report as plain text: one block per family, shares of its damaged faces."""
    lines = [f"simulated review of {report['work']}/{report['run']}: {report['confirmed']} faces confirmed"]
    for name, r in report["families"].items():
        share = lambda n: f"{n:>3} ({n / r['faces']:.0%})"  # noqa: E731
        lines += [f"\n[{name}] {r['faces']} damaged faces",
                  f"  detected                          {share(r['detected'])}",
                  f"  judged degraded                   {share(r['degraded'])}",
                  f"  guided automatically              {share(r['auto_guided'])}, right person {r['auto_right']}",
                  f"  on the review page (unguided)     {share(r['on_page'])}: "
                  + ", ".join(f"{c} {n}" for c, n in sorted(r["causes"].items())),
                  f"  true person among the 3 offered   {share(r['offered'])} (rank 1/2/3: "
                  + "/".join(map(str, r["offered_at"])) + ")",
                  f"  guided after the confirmations    {share(r['guided_after'])}, right person {r['right_after']}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="benchmark folder: manifest.json, album/, RUN/ from `albumfix eval --albums`")
    parser.add_argument("--run", default="out-product", help="the restored folder of WORK to review [default: out-product]")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    report = simulate(args.work, args.run)
    print(json.dumps(report, indent=1) if args.json else table(report))


if __name__ == "__main__":
    main()
