"""Open-set verification of a face against the people of the whole album (a margin rule).

A damaged face's embedding drifts from its own person's sharp photos about as far as two people
are apart, but it mostly stays nearer its own person than anyone else: the rule tests that
ranking. For a query (`verify_people`), a person's distance d is the mean cosine distance
(1 - a.b, unit embeddings) to its `nearest` closest faces the query may be compared with, never
in the query's photo; a sharp face counts at its nearest view (its embedding or a rung of its
resolution ladder, `albumfix.faces.backends.dlib_resnet.resolution_ladder`). The nearest person
P, with at least `min_faces` faces in other photos (compared or not), is accepted when

    d(P) <= gate   and   d(second person) - d(P) >= margin   and   d(second person) >= ratio * d(P)

(`lone_ratio` for `ratio` when d(P) rests on one face; no second person: both hold). People a
query cannot be (`excluded`: a cannot-link from its own photo, albumfix.people.context) neither
win nor compete. Returns one
`Verification` per query, with the nearest people as `candidates` whatever the decision (what a
user is shown to confirm a face left unguided: `albumfix review`). Precision first: a wrong
person's exemplar is worse than none.
Thresholds: `CALIBRATIONS`, by `benchmarks/calibrate_verify.py`; history in docs/CALIBRATION.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Collection, Sequence

import numpy as np


@dataclass(frozen=True)
class VerifyCalibration:
    """gate, margin: cosine distances of the rule (module docstring); ratio: its runner-up to
    nearest distance ratio (1: no ratio test); lone_ratio: the same when the nearest person's
    distance rests on one compared face; nearest: faces per person averaged; min_faces: the
    accepted person must have this many faces in other photos (compared or not): a person seen
    once, often a bystander, is too weak a witness (it still competes); sharp_gate: the gate of a
    query whose embedding is as reliable as a sharp face's (albumfix.plan: a face to restore that
    keeps detail, or a second look, the embedding of a damaged face's restoration, which looks
    sharp whoever it is): it must be as near its person as a sharp face of them would be grouped
    with them (the grouping distance)."""

    gate: float
    margin: float
    nearest: int
    min_faces: int
    source: str
    ratio: float = 1.0
    lone_ratio: float = 1.0
    sharp_gate: float = 0.0


CALIBRATIONS: dict[str, VerifyCalibration] = {
    "dlib": VerifyCalibration(gate=0.12, margin=0.0075, nearest=3, min_faces=2, ratio=1.25, lone_ratio=1.3,
                              sharp_gate=0.07,
                              source="benchmarks/calibrate_verify.py on four albums of training people; "
                                     "the sharp gate by benchmarks/score_guidance.py and calibrate_grouping.py on six "
                                     "(docs/CALIBRATION.md)"),
    "arcface": VerifyCalibration(gate=0.6, margin=0.1, nearest=3, min_faces=2, sharp_gate=0.5,
                                 source="not measured (no ArcFace model offline): scaled from dlib by the "
                                        "ratio of the grouping thresholds; the sharp gate is the grouping distance"),
}


@dataclass(frozen=True)
class Candidate:
    """A person a query may be: their distance d (cosine, as the rule measures it) and `face`,
    the index (into `verify_people`'s faces) of their face nearest the query."""

    person: str
    distance: float
    face: int


@dataclass(frozen=True)
class Verification:
    """The outcome for one face: person (None when not accepted), its distance d(P), the
    second person's distance (inf when none), why it was refused ("" when accepted) and the
    nearest people at a finite distance, nearest first (at most `verify_people`'s `ranked`)."""

    person: str | None
    distance: float
    runner_up: float
    reason: str
    candidates: tuple[Candidate, ...] = ()


CANDIDATE_VIEWS = 64  # a query's nearest witness views searched first (albumfix.people.neighbours)
CANDIDATE_PEOPLE = 8  # of them, the people nearest first it is compared with, face by face
MAX_CANDIDATE_VIEWS = 32_768  # searched again, 8x the views and 4x the people, until settled, up to this
RELEVANT_GATES = 3.0  # a person farther than this many gates is neither accepted nor worth offering
PAIR_CHUNK = 65_536  # (query, face) pairs whose distances are computed at once


def verify_people(
    queries: np.ndarray,
    query_photos: Sequence[str],
    faces: np.ndarray,
    face_photos: Sequence[str],
    face_people: Sequence[str],
    space: str = "dlib",
    allowed: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
    ranked: int = 3,
    excluded: Sequence[Collection[str]] | None = None,
    witnesses: np.ndarray | None = None,
    gate: float | None = None,
) -> list[Verification]:
    """Verify each query face against the people of the album.

    queries: (Q, D) unit embeddings; query_photos: (Q,) photo ids; faces: (N, D) unit embeddings
    of the faces with a person, or (N, V, D) views of each (its embedding and its resolution
    ladder: a face's distance is that of its nearest view); face_photos, face_people: (N,)
    their photo and person ids;
    allowed: which faces each query may be compared with, as a function of index pairs (query
    indices (M,), face indices (M,)) -> (M,) bool (the caller passes the faces clearly better
    than the query: two damaged faces are no evidence of one person); None: all;
    ranked: candidates kept per query; excluded: (Q,) the people each query cannot be (another
    face of its photo is that person: albumfix.people.context.photo_cannot_link), set to an
    infinite distance; None: none; witnesses: (N,) bool, the faces `allowed` admits for some
    query (None: all); gate: the rule's gate for these queries (None: the calibrated one; the
    plan passes the sharp gate for faces with detail and second looks). A query that is itself
    among `faces` sits in its own photo, which never counts. Returns one Verification per query.

    Cost: a query is compared, face by face, with every face of the CANDIDATE_PEOPLE people
    whose views come first among its CANDIDATE_VIEWS nearest witness views; every other person is
    at least as far as the first view not taken (the bound). A query is settled when its
    runner-up and ranked people lie within the bound, or the bound lies beyond RELEVANT_GATES
    gates (nobody farther is accepted or worth offering: the decision and the people offered
    within that distance are exact); the others are searched again, wider, up to
    MAX_CANDIDATE_VIEWS (every view of a smaller album: exact); beyond it the bound caps the
    runner-up from below (precision first). Time and memory grow with Q times the faces of
    those people, not Q x N.
    """
    cal = CALIBRATIONS.get(space, CALIBRATIONS["dlib"])
    cal = cal if gate is None else replace(cal, gate=gate)
    people = sorted(set(face_people))
    if not len(queries):
        return []
    if not people:
        return [Verification(None, float("inf"), float("inf"), "no person in the album")] * len(queries)
    views = np.asarray(faces, np.float64)
    views = views[:, None, :] if views.ndim == 2 else views  # (N, V, D)
    q = np.asarray(queries, np.float64)
    column = {person: j for j, person in enumerate(people)}
    person_of = np.array([column[p] for p in face_people], np.int64)  # (N,)
    searched = np.arange(len(views)) if witnesses is None else np.flatnonzero(witnesses)
    banned = None if excluded is None else np.array(
        [i * len(people) + column[n] for i, names in enumerate(excluded) for n in names if n in column], np.int64)
    photo_id = {photo: i for i, photo in enumerate(sorted(set(query_photos) | set(face_photos)))}
    q_photo = np.array([photo_id[p] for p in query_photos], np.int64)
    f_photo = np.array([photo_id[p] for p in face_photos], np.int64)
    by_person = np.argsort(person_of, kind="stable")  # faces by person, in face order within each
    out: list[Verification] = [None] * len(q)  # type: ignore[list-item]
    todo, k, taken = np.arange(len(q)), CANDIDATE_VIEWS, CANDIDATE_PEOPLE
    while len(todo):
        groups = _candidate_groups(q[todo], views[searched], person_of[searched], len(people), k, taken)
        groups.query = todo[groups.query]
        pairs = _pairs(groups, by_person, np.bincount(person_of))
        stats = _person_distances(q, views, pairs, q_photo[pairs.query] == f_photo[pairs.face], allowed, cal.nearest)
        if banned is not None:
            stats.distance[np.isin(groups.query * len(people) + groups.person, banned)] = np.inf
        found, settled = _decide(groups, stats, people, todo, cal, ranked)
        for i, v in zip(todo, found):
            out[i] = v
        if k >= min(MAX_CANDIDATE_VIEWS, len(searched) * views.shape[1]) and taken >= len(people):
            break
        todo, k, taken = todo[~settled], min(k * 8, MAX_CANDIDATE_VIEWS), taken * 4
    return out


@dataclass
class _Groups:
    """(G,) arrays, one row per (query, candidate person), sorted by query; bound:
    (Q',) per query searched (in order), the distance every person without a candidate view is
    at least at (inf: all compared)."""

    query: np.ndarray
    person: np.ndarray
    bound: np.ndarray


@dataclass
class _Pairs:
    """(M,) arrays, one row per (query, face of a candidate person), grouped by `group` (an
    index into _Groups) in face order."""

    group: np.ndarray
    query: np.ndarray
    face: np.ndarray


@dataclass
class _GroupStats:
    """(G,) per (query, candidate person): distance d (inf: none compared), seen (the person's
    faces in other photos), used (faces averaged into d), nearest (index of its face nearest)."""

    distance: np.ndarray
    seen: np.ndarray
    used: np.ndarray
    nearest: np.ndarray


def _candidate_groups(q: np.ndarray, views: np.ndarray, person_of: np.ndarray, people: int, k: int,
                      taken: int) -> _Groups:
    """The first `taken` people among each query's k nearest views (albumfix.people.neighbours),
    nearest view first. q: (Q', D) the queries searched (groups' `query` indexes them); views:
    (N', V, D) of the faces searched, person_of: (N',) their people's columns."""
    from albumfix.people.neighbours import nearest

    n, v, dim = views.shape
    k = min(k, n * v)
    if k == 0:  # no witness in the album
        return _Groups(np.empty(0, np.int64), np.empty(0, np.int64), np.full(len(q), np.inf))
    distance, index = nearest(views.reshape(n * v, dim), q, k)
    key = np.where(index >= 0, person_of[np.maximum(index, 0) // v], people)  # (Q', k) in distance order
    by_key = np.argsort(key, axis=1, kind="stable")
    sorted_key = np.take_along_axis(key, by_key, axis=1)
    new_key = np.ones(key.shape, bool)
    new_key[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    first = np.zeros(key.shape, bool)  # a person's nearest view among the k
    np.put_along_axis(first, by_key, new_key, axis=1)
    first &= key < people
    rank = np.cumsum(first, axis=1)  # people seen up to each view
    beyond = first & (rank == taken + 1)
    bound = np.where(beyond.any(axis=1), distance[np.arange(len(q)), beyond.argmax(axis=1)],
                     distance[:, -1] if n * v > k else np.inf)
    rows, cols = np.nonzero(first & (rank <= taken))
    return _Groups(rows, key[rows, cols], bound)


def _pairs(groups: _Groups, by_person: np.ndarray, size: np.ndarray) -> _Pairs:
    """Expand each (query, person) group to the person's faces. by_person: (N,) face indices
    sorted by person column, face order within each; size: (P,) faces of each person."""
    start = np.cumsum(size) - size
    count = size[groups.person]
    group = np.repeat(np.arange(len(groups.person)), count)
    within = np.arange(len(group)) - np.repeat(np.cumsum(count) - count, count)
    face = by_person[np.repeat(start[groups.person], count) + within]
    return _Pairs(group, groups.query[group], face)


def _person_distances(q: np.ndarray, views: np.ndarray, pairs: _Pairs, same_photo: np.ndarray, allowed,
                      nearest: int) -> _GroupStats:
    """The rule's per-person distance for every (query, candidate person) group. same_photo:
    (M,) bool, the pair's face sits in its query's photo."""
    dist = np.empty(len(pairs.face))
    for lo in range(0, len(dist), PAIR_CHUNK):
        part = slice(lo, lo + PAIR_CHUNK)
        dist[part] = (1.0 - np.einsum("mvd,md->mv", views[pairs.face[part]], q[pairs.query[part]])).min(axis=1)
    dist[same_photo] = np.inf
    if allowed is not None:
        dist[~np.asarray(allowed(pairs.query, pairs.face), bool)] = np.inf
    groups = int(pairs.group.max(initial=-1)) + 1
    order = np.lexsort((pairs.face, dist, pairs.group))  # within a group: nearest first, ties in face order
    group, dist, face = pairs.group[order], dist[order], pairs.face[order]
    first = np.searchsorted(group, np.arange(groups))
    rank = np.arange(len(group)) - first[group]
    top = (rank < nearest) & np.isfinite(dist)
    used = np.bincount(group[top], minlength=groups)
    total = np.bincount(group[top], weights=dist[top], minlength=groups)
    distance = np.where(used > 0, total / np.maximum(used, 1), np.inf)
    seen = np.bincount(pairs.group[~same_photo], minlength=groups)
    return _GroupStats(distance, seen, used, face[np.minimum(first, len(face) - 1)])


def _decide(groups: _Groups, stats: _GroupStats, people: list[str], queries: np.ndarray, cal: VerifyCalibration,
            ranked: int) -> tuple[list[Verification], np.ndarray]:
    """Apply the margin rule to each query's nearest people. queries: (Q',) the queries searched,
    in the order of groups.bound. Returns their Verifications and (Q',) bool: settled, the
    outcome would not change were every person compared within RELEVANT_GATES gates (verify_people)."""
    order = np.lexsort((groups.person, stats.distance, groups.query))  # by query, then nearest, then person
    starts = np.searchsorted(groups.query[order], queries)
    ends = np.searchsorted(groups.query[order], queries, side="right")
    out, settled = [], np.zeros(len(queries), bool)
    for i, (lo, hi) in enumerate(zip(starts, ends)):
        mine = order[lo:hi]
        finite = stats.distance[mine][np.isfinite(stats.distance[mine])]
        needed = max(2, ranked)
        bound = float(groups.bound[i])
        settled[i] = (bound > RELEVANT_GATES * cal.gate
                      or (len(finite) >= needed and finite[needed - 1] <= bound))
        best = float(finite[0]) if len(finite) else float("inf")
        second = min(float(finite[1]) if len(finite) > 1 else float("inf"), bound)
        near = tuple(Candidate(people[groups.person[g]], float(stats.distance[g]), int(stats.nearest[g]))
                     for g in mine[:ranked] if np.isfinite(stats.distance[g]))
        if not np.isfinite(best):
            reason = "no clearly better face of anyone outside this photo"
        elif stats.seen[mine[0]] < cal.min_faces:
            reason = f"nearest person seen only {stats.seen[mine[0]]} time(s) (at least {cal.min_faces})"
        elif best > cal.gate:
            reason = f"nearest person at {best:.3f} > gate {cal.gate:g}"
        else:
            ratio = cal.lone_ratio if stats.used[mine[0]] == 1 else cal.ratio
            reason = "" if second - best >= cal.margin and second >= ratio * best else (
                f"two people about as near ({best:.3f}, {second:.3f}; margin {cal.margin:g}, ratio {ratio:g})")
        out.append(Verification(None if reason else people[groups.person[mine[0]]], best, second, reason, near))
    return out, settled
