"""How the plan (grouping, verification, exemplar choice: albumfix.plan.build_plan, run by the
driver on every invocation) grows with the album: seconds and peak memory on synthetic indexes.

    python benchmarks/bench_plan_scale.py --faces 2000,5000,10000,20000 [--json FILE]

Each size runs in a fresh process: an index of N faces, one photo each, of N / 10 people with 8
sharp and 2 damaged faces each (unit 128-d embeddings: a person's centre plus noise, more noise
for damaged faces; random landmarks), stored in one transaction, then build_plan timed alone.
The growth exponent between the two largest sizes says what a million faces would take. Above
albumfix.people.neighbours.EXACT_LIMIT faces the nearest-face search is approximate (an
inverted-file index): `recall` is the share of the true 33 nearest faces (grouping's k + 1)
that lie within the farthest distance the plan looks at (albumfix.people.verify's
RELEVANT_GATES x gate) which it returns, for 1,000 faces of the album, against an exact search.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from fresh_process import measure


def _quality(sharp: bool) -> dict:
    return {"interocular_px": 60.0, "sharpness": 1.0, "noise": 1.0, "blockiness": 0.0, "yaw_deg": 0.0,
            "landmark_spread": 1.0, "landmarks_ok": True, "landmark_problem": "",
            "score": 0.9 if sharp else 0.1, "detail": 0.5 if sharp else 0.05}


def run_one(faces: int) -> dict:
    """Build an index of `faces` synthetic faces and time build_plan on it, in this process."""
    from albumfix.album.index import AlbumIndex, FaceRow
    from albumfix.plan import build_plan
    from albumfix.settings import Settings
    from albumfix.stages.context import NoProgress

    rng = np.random.default_rng(0)
    people = max(1, faces // 10)
    centres = rng.normal(size=(people, 128))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    path = Path(tempfile.mkdtemp(prefix="plan-scale-")) / "index.sqlite"
    started = time.perf_counter()
    with AlbumIndex(path) as ix, ix.transaction():
        for k in range(faces):
            sharp = k % 10 < 8
            emb = centres[k // 10 % people] + rng.normal(scale=0.022 if sharp else 0.035, size=128)
            row = FaceRow(f"{k:08d}-0", f"photo-{k:08d}", 0, (0.0, 0.0, 100.0, 100.0), 1.0,
                          (rng.random((68, 2)) * 100).astype(np.float32),
                          (emb / np.linalg.norm(emb)).astype(np.float32), "dlib", _quality(sharp), None)
            ix.store_analysis(row.content_hash, "k", (100, 100), "ok", "", [row])
    stored = time.perf_counter() - started
    with AlbumIndex(path) as ix:
        rows = ix.faces()
        started = time.perf_counter()
        plan = build_plan(ix, rows, Settings(), NoProgress())
        seconds = time.perf_counter() - started
    guided = sum(1 for f in plan.faces.values() if f.action == "restore" and f.exemplars)
    damaged = sum(1 for f in plan.faces.values() if f.action == "restore")
    return {"faces": faces, "store_s": round(stored, 2), "plan_s": round(seconds, 2),
            "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "damaged": damaged, "guided": guided, "recall": _recall(np.stack([r.embedding for r in rows]))}


def _recall(embeddings: np.ndarray, queries: int = 1000, k: int = 33) -> float | None:
    """The nearest-face search's recall of the true k nearest within the distance the plan looks
    at, for `queries` faces (None: the search is exact)."""
    from albumfix.people import neighbours, verify

    if len(embeddings) <= neighbours.EXACT_LIMIT:
        return None
    reach = verify.RELEVANT_GATES * verify.CALIBRATIONS["dlib"].gate
    picked = embeddings[np.random.default_rng(1).choice(len(embeddings), queries, replace=False)]
    _, found = neighbours.nearest(embeddings, picked, k)
    hits = total = 0
    for lo in range(0, queries, 100):  # 100 queries x N distances at a time
        distance = 1.0 - picked[lo:lo + 100] @ embeddings.T
        truth = np.argpartition(distance, k, axis=1)[:, :k]
        for row, t, f in zip(distance, truth, found[lo:lo + 100]):
            near = set(t[row[t] <= reach])
            hits, total = hits + len(near & set(f)), total + len(near)
    return round(hits / max(1, total), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", default="2000,5000,10000,20000")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process: one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return
    rows = [measure(__file__, [], n) for n in args.faces.split(",")]
    print("| faces | store s | plan s | peak MiB | damaged | guided | recall of the 33 nearest |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['faces']} | {r['store_s']} | {r['plan_s']} | {r['peak_mib']} | {r['damaged']} | {r['guided']} "
              f"| {r['recall'] or 'exact'} |")
    if len(rows) >= 2 and rows[-2]["plan_s"] > 0:
        a, b = rows[-2], rows[-1]
        exponent = math.log(b["plan_s"] / a["plan_s"]) / math.log(b["faces"] / a["faces"])
        million = b["plan_s"] * (1_000_000 / b["faces"]) ** exponent
        print(f"growth exponent {exponent:.2f} between {a['faces']} and {b['faces']} faces: "
              f"a million faces would take about {million / 3600:.1f} h to plan")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
