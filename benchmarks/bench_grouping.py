"""Grouping and exemplar-choice benchmark on identity-labelled photos (LFW + CelebA, dlib space).

Needs the cached analysis of benchmarks/face_cache.py (clean photos; degraded copies for the
degraded-LQ scenario). Identities are split in two halves per dataset (whole people, seeded):
thresholds are chosen on the tuning half only and reported on the held-out half.

1. Grouping: albumfix's constrained average linkage (albumfix.people.cluster.group_faces) vs a
   plain DBSCAN baseline (cosine metric) on the same embeddings, each at the threshold with the
   best tuning recall among those with tuning pairwise precision >= --min-precision.
2. Exemplars: for every LQ face, the exemplar albumfix would pick (choose_exemplars, k=1) among
   the other faces of its predicted person; same-person rate = chosen exemplars of the LQ
   face's true identity / all chosen. Scenarios: "clean" (each face in turn is the LQ face) and
   "degraded" (an album where every third photo is replaced by its degraded copy, see
   face_cache.py; those faces are the LQ faces, exemplars come from the clean photos). The gate is the largest value whose
   tuning same-person rate is >= --min-exemplar-rate in every scenario.
3. Scaling: time and peak memory (RSS high-water mark during the call, reset just before it,
   minus RSS before it; Linux only; fresh process per run) of both methods for growing sets: all faces of both datasets, then, past that,
   noise copies of random faces (embedding + Gaussian noise, cosine distance ~0.03 to its source,
   own photo, same identity).

    python benchmarks/bench_grouping.py                       # everything
    python benchmarks/bench_grouping.py --sizes 1000,2000     # shorter scaling table
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from face_cache import DEFAULT_CACHE, DEFAULT_DATA, FaceTable, load

from albumfix.people.cluster import FaceRecord, calibration, group_faces
from albumfix.people.exemplars import ExemplarFace, choose_exemplars

SAME_PERSON = {"celeba-7393": "celeba-7392", "celeba-7398": "lfw-Oxana_Fedorova"}
"""Ground-truth fixes, each checked by eye on the photos: two CelebA labels of one actress (two
photo pairs are near-duplicates at cosine distance < 0.002), and a CelebA label that is the
LFW person Oxana Fedorova. Aliases are applied before the split, so each person lies wholly in
one half. --no-aliases scores against the raw labels."""
GROUP_GRID = np.round(np.arange(0.020, 0.1301, 0.005), 3)
GATE_GRID = np.round(np.arange(0.040, 0.1301, 0.005), 3)
NOISE_COSINE = 0.03


@dataclass
class Album:
    """A set of faces to group. ids: (N,) str face ids (also photo ids); identities: (N,) str;
    embeddings: (N, 128) float32 unit; landmarks: (N, 68, 2) float32 photo px;
    lq: (N,) bool, faces that are degraded copies (LQ faces of the degraded scenario)."""

    ids: np.ndarray
    identities: np.ndarray
    embeddings: np.ndarray
    landmarks: np.ndarray
    lq: np.ndarray


@dataclass
class PairScore:
    precision: float
    recall: float
    people: int
    singletons: int


@dataclass
class ExemplarScore:
    lq_faces: int
    chosen: int
    correct: int

    @property
    def rate(self) -> float:
        return self.correct / self.chosen if self.chosen else float("nan")

    @property
    def coverage(self) -> float:
        return self.chosen / self.lq_faces if self.lq_faces else float("nan")


def split_identities(identities: np.ndarray, sources: np.ndarray, seed: int) -> np.ndarray:
    """(N,) bool: the photo's identity belongs to the tuning half (half of each source's people)."""
    rng = np.random.default_rng(seed)
    tune: set[str] = set()
    for source in sorted(set(sources.tolist())):
        people = np.array(sorted(set(identities[sources == source].tolist())))
        tune.update(people[rng.permutation(len(people))[: len(people) // 2]].tolist())
    return np.array([i in tune for i in identities.tolist()])


def clean_album(table: FaceTable, mask: np.ndarray) -> Album:
    """The clean faces of the masked photos where a face was found."""
    keep = mask & table.found
    return Album(table.paths[keep], table.identities[keep], table.embeddings[keep],
                 table.landmarks[keep], np.zeros(int(keep.sum()), bool))


def degraded_album(clean: FaceTable, degraded: FaceTable, mask: np.ndarray) -> Album:
    """Masked photos with those that have a degraded copy (every third) replaced by it.

    A degraded photo whose face was not found is left out (the pipeline would not see it)."""
    swap = mask & clean.found & (np.arange(len(clean.paths)) % 3 == 0)
    use_lq = swap & degraded.found
    keep = (mask & clean.found & ~swap) | use_lq
    emb = np.where(use_lq[:, None], degraded.embeddings, clean.embeddings)
    lm = np.where(use_lq[:, None, None], degraded.landmarks, clean.landmarks)
    return Album(clean.paths[keep], clean.identities[keep], emb[keep], lm[keep], use_lq[keep])


def pair_scores(truth: np.ndarray, pred: np.ndarray) -> PairScore:
    """Pairwise precision/recall of a predicted partition against the true one (O(N))."""
    def pairs(labels: np.ndarray) -> int:
        _, counts = np.unique(labels, return_counts=True)
        return int(np.sum(counts * (counts - 1) // 2))

    joint = np.char.add(np.char.add(truth.astype(str), "\x00"), pred.astype(str))
    same_pred, same_truth, both = pairs(pred), pairs(truth), pairs(joint)
    _, sizes = np.unique(pred, return_counts=True)
    return PairScore(both / same_pred if same_pred else 1.0, both / same_truth if same_truth else 1.0,
                     len(sizes), int(np.sum(sizes == 1)))


def group_ours(album: Album, threshold: float) -> np.ndarray:
    """(N,) str person ids from albumfix's grouping (photo id = face id: one labelled face each)."""
    records = [FaceRecord(str(i), str(i), e) for i, e in zip(album.ids, album.embeddings)]
    labels = group_faces(records, space="dlib", distance=threshold).labels
    return np.array([labels[str(i)] for i in album.ids])


def group_dbscan(album: Album, eps: float, min_samples: int) -> np.ndarray:
    """(N,) str cluster ids from sklearn DBSCAN (cosine); noise points become singletons."""
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine", algorithm="brute").fit_predict(
        album.embeddings.astype(np.float64))
    return np.array([f"c{l}" if l >= 0 else f"n{i}" for i, l in enumerate(labels)])


def lq_pools(album: Album, pred: np.ndarray, lq_only: bool) -> list[tuple[int, ExemplarFace, list[ExemplarFace]]]:
    """Per LQ face (row i): the face and its candidates, the other non-LQ faces of its predicted
    person. lq_only: LQ faces are album.lq (degraded scenario); else every face in turn.
    Face ids are row numbers (zero-padded), photo ids the photo paths."""
    faces = [ExemplarFace(f"{i:06d}", str(p), e, l)
             for i, (p, e, l) in enumerate(zip(album.ids, album.embeddings, album.landmarks))]
    members: dict[str, list[int]] = {}
    for i, person in enumerate(pred.tolist()):
        members.setdefault(person, []).append(i)
    rows = np.flatnonzero(album.lq) if lq_only else np.arange(len(faces))
    return [(i, faces[i], [faces[j] for j in members[pred[i]] if j != i and not album.lq[j]])
            for i in rows.tolist()]


def exemplar_score(album: Album, pred: np.ndarray, gate: float, lq_only: bool) -> ExemplarScore:
    """Picks one exemplar per LQ face (choose_exemplars, k=1) and checks its true identity."""
    pools = lq_pools(album, pred, lq_only)
    chosen = correct = 0
    for i, lq, pool in pools:
        picked = choose_exemplars(lq, pool, k=1, identity_gate=gate)
        if picked:
            chosen += 1
            correct += int(album.identities[int(picked[0].face_id)] == album.identities[i])
    return ExemplarScore(len(pools), chosen, correct)


def choose(scores: dict[float, tuple[float, float]], floor: float) -> float:
    """The value with the best second score among those whose first score is >= floor
    (ties: the smaller value); the smallest value when none reaches the floor."""
    ok = [(second, -value) for value, (first, second) in scores.items() if first >= floor]
    return -max(ok)[1] if ok else min(scores)


def sweep_grouping(album: Album, min_samples: int) -> tuple[dict[float, PairScore], dict[float, PairScore]]:
    """Pair scores of both methods on every grid threshold."""
    ours = {float(t): pair_scores(album.identities, group_ours(album, t)) for t in GROUP_GRID}
    dbscan = {float(t): pair_scores(album.identities, group_dbscan(album, t, min_samples)) for t in GROUP_GRID}
    return ours, dbscan


def ranked_exemplars(album: Album, pred: np.ndarray, lq_only: bool, max_gate: float) -> list[list[tuple[float, bool]]]:
    """Per LQ face: its candidates within max_gate in choose_exemplars' order, as
    (identity distance, same true identity); the exemplar at gate g is the first with distance <= g."""
    return [[(c.identity_distance, bool(album.identities[int(c.face_id)] == album.identities[i]))
             for c in choose_exemplars(lq, pool, k=len(pool), identity_gate=max_gate)]
            for i, lq, pool in lq_pools(album, pred, lq_only)]


def score_at_gate(ranked: list[list[tuple[float, bool]]], gate: float) -> ExemplarScore:
    chosen = correct = 0
    for candidates in ranked:
        first = next((same for dist, same in candidates if dist <= gate), None)
        if first is not None:
            chosen += 1
            correct += int(first)
    return ExemplarScore(len(ranked), chosen, correct)


def scaled_embeddings(table: FaceTable, size: int, seed: int) -> tuple[np.ndarray, int]:
    """(size, 128) float32 unit rows: a random subset of all clean faces, or all of them plus
    noise copies (cosine distance ~NOISE_COSINE to a random source face). Returns rows, copies."""
    rng = np.random.default_rng(seed)
    pool = table.embeddings[table.found].astype(np.float32)
    if size <= len(pool):
        return pool[np.sort(rng.choice(len(pool), size, replace=False))], 0
    extra = size - len(pool)
    sigma = np.sqrt(2 * NOISE_COSINE / pool.shape[1])
    copies = pool[rng.integers(0, len(pool), extra)] + rng.normal(0, sigma, (extra, pool.shape[1]))
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    return np.concatenate([pool, copies.astype(np.float32)]), extra


def _status_kib(key: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in KiB."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith(key + ":"))


def _reset_peak_rss() -> None:
    """Resets the RSS high-water mark (Linux: VmHWM := VmRSS)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def scale_child(args: argparse.Namespace) -> int:
    """One timed run in this fresh process; prints a JSON line."""
    size, method, value = int(args.scale_child[0]), args.scale_child[1], float(args.scale_child[2])
    emb, copies = scaled_embeddings(load(args.data, args.cache, "clean"), size, args.seed)
    ids = np.array([f"f{i:06d}" for i in range(size)])
    album = Album(ids, ids, emb, np.zeros((size, 68, 2), np.float32), np.zeros(size, bool))
    group = group_ours if method == "ours" else lambda a, t: group_dbscan(a, t, args.min_samples)
    group(Album(ids[:50], ids[:50], emb[:50], album.landmarks[:50], album.lq[:50]), value)  # imports
    _reset_peak_rss()
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    pred = group(album, value)
    seconds = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    print(json.dumps({"size": size, "method": method, "seconds": seconds, "copies": copies,
                      "peak_mib": max(0, peak - before) / 1024, "people": len(set(pred.tolist()))}))
    return 0


def run_scaling(args: argparse.Namespace, thresholds: dict[str, float]) -> list[dict]:
    results = []
    for size in args.sizes:
        for method, value in thresholds.items():
            cmd = [sys.executable, __file__, "--data", str(args.data), "--cache", str(args.cache),
                   "--seed", str(args.seed), "--min-samples", str(args.min_samples),
                   "--scale-child", str(size), method, str(value)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"  {r['size']:>6} {r['method']:>7} {r['seconds']:>9.2f} {r['peak_mib']:>9.1f} "
                  f"{r['people']:>7} {r['copies']:>7}", flush=True)
    return results


def _pair_row(name: str, value: float, s: PairScore, seconds: float | None = None) -> str:
    t = f"{seconds:8.2f}" if seconds is not None else " " * 8
    return f"  {name:<24} {value:>6.3f} {s.precision:>9.4f} {s.recall:>7.4f} {s.people:>7} {s.singletons:>10} {t}"


def _exemplar_row(name: str, gate: float, s: ExemplarScore) -> str:
    return (f"  {name:<34} {gate:>6.3f} {s.lq_faces:>8} {s.chosen:>7} {s.coverage:>9.3f} "
            f"{s.rate:>9.4f} {s.chosen - s.correct:>6}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seed", type=int, default=0, help="identity split and scaling subsets")
    parser.add_argument("--min-precision", type=float, default=0.995, help="tuning precision floor")
    parser.add_argument("--min-exemplar-rate", type=float, default=0.999, help="tuning same-person floor")
    parser.add_argument("--min-samples", type=int, default=2, help="DBSCAN min_samples")
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",") if v],
                        default=[1000, 2000, 5000, 10000, 20000], help="scaling sizes ('' skips)")
    parser.add_argument("--no-aliases", action="store_true", help="raw identity labels (see SAME_PERSON)")
    parser.add_argument("--scale-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.scale_child:
        return scale_child(args)

    clean = load(args.data, args.cache, "clean")
    try:
        degraded: FaceTable | None = load(args.data, args.cache, "degraded")
    except FileNotFoundError as exc:
        degraded = None
        print(f"note: degraded scenario skipped ({exc})")
    if not args.no_aliases:
        for table in (clean, degraded) if degraded is not None else (clean,):
            table.identities = np.array([SAME_PERSON.get(i, i) for i in table.identities.tolist()])
        print(f"ground truth: {len(SAME_PERSON)} identity label(s) merged into another (SAME_PERSON)")
    tune = split_identities(clean.identities, clean.sources, args.seed)
    print(f"photos {len(clean.paths)}, face found in {int(clean.found.sum())}; "
          f"tuning half: {len(set(clean.identities[tune]))} people, held-out: {len(set(clean.identities[~tune]))}")
    if degraded is not None:
        print(f"degraded copies: face found in {int(degraded.found.sum())}")

    albums = {"tune": clean_album(clean, tune), "held": clean_album(clean, ~tune)}
    if degraded is not None:
        albums |= {"tune-lq": degraded_album(clean, degraded, tune), "held-lq": degraded_album(clean, degraded, ~tune)}

    print("\nTuning sweep (tuning half, clean faces): threshold = cosine distance")
    print(f"  {'method':<24} {'thresh':>6} {'precision':>9} {'recall':>7} {'people':>7} {'singletons':>10}")
    ours, dbscan = sweep_grouping(albums["tune"], args.min_samples)
    for t in ours:
        print(_pair_row("albumfix avg-linkage", t, ours[t]))
    for t in dbscan:
        print(_pair_row(f"DBSCAN min_samples={args.min_samples}", t, dbscan[t]))
    pick = {"ours": choose({t: (s.precision, s.recall) for t, s in ours.items()}, args.min_precision),
            "dbscan": choose({t: (s.precision, s.recall) for t, s in dbscan.items()}, args.min_precision)}
    print(f"chosen (best tuning recall with precision >= {args.min_precision}): "
          f"albumfix {pick['ours']:.3f}, DBSCAN eps {pick['dbscan']:.3f}; "
          f"library calibration: {calibration('dlib').group_distance:.3f}")

    scenarios = {"clean": ("tune", False)}
    if degraded is not None:
        scenarios["degraded"] = ("tune-lq", True)
    ranked = {name: ranked_exemplars(albums[a], group_ours(albums[a], pick["ours"]), lq, float(GATE_GRID.max()))
              for name, (a, lq) in scenarios.items()}
    print("\nExemplar gate sweep (tuning half, albumfix grouping): gate = cosine distance LQ-exemplar")
    print(f"  {'scenario':<34} {'gate':>6} {'LQ faces':>8} {'chosen':>7} {'coverage':>9} {'same-pers':>9} {'wrong':>6}")
    gate_scores: dict[float, tuple[float, float]] = {}
    for gate in GATE_GRID.tolist():
        per = {name: score_at_gate(r, gate) for name, r in ranked.items()}
        for name, s in per.items():
            print(_exemplar_row(name, gate, s))
        worst = min(s.rate if s.chosen else 1.0 for s in per.values())
        gate_scores[gate] = (worst, per["degraded" if degraded is not None else "clean"].coverage)
    gate = choose(gate_scores, args.min_exemplar_rate)
    print(f"chosen gate (best coverage with same-person rate >= {args.min_exemplar_rate} in every scenario): "
          f"{gate:.3f}; library calibration: {calibration('dlib').exemplar_distance:.3f}")

    print("\nHeld-out half (never used for tuning)")
    print(f"  {'grouping':<24} {'thresh':>6} {'precision':>9} {'recall':>7} {'people':>7} {'singletons':>10} {'seconds':>8}")
    preds: dict[tuple[str, str], np.ndarray] = {}
    for album_name in [a for a in ("held", "held-lq") if a in albums]:
        album = albums[album_name]
        for method in ("ours", "dbscan"):
            t0 = time.perf_counter()
            pred = group_ours(album, pick[method]) if method == "ours" else group_dbscan(album, pick[method], args.min_samples)
            seconds = time.perf_counter() - t0
            preds[(album_name, method)] = pred
            label = ("albumfix" if method == "ours" else "DBSCAN") + (" (degraded album)" if album_name == "held-lq" else "")
            print(_pair_row(label, pick[method], pair_scores(album.identities, pred), seconds))
    print(f"\n  {'exemplars':<34} {'gate':>6} {'LQ faces':>8} {'chosen':>7} {'coverage':>9} {'same-pers':>9} {'wrong':>6}")
    for (album_name, method), pred in preds.items():
        lq_only = album_name == "held-lq"
        name = f"{'degraded' if lq_only else 'clean'} LQ, {'albumfix' if method == 'ours' else 'DBSCAN'} groups"
        print(_exemplar_row(name, gate, exemplar_score(albums[album_name], pred, gate, lq_only)))

    if args.sizes:
        print("\nScaling (all faces of both datasets, then noise copies; fresh process per run)")
        print(f"  {'faces':>6} {'method':>7} {'seconds':>9} {'peak MiB':>9} {'people':>7} {'copies':>7}")
        run_scaling(args, pick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
