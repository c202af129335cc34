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

from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np


@dataclass(frozen=True)
class VerifyCalibration:
    """gate, margin: cosine distances of the rule (module docstring); ratio: its runner-up to
    nearest distance ratio (1: no ratio test); lone_ratio: the same when the nearest person's
    distance rests on one compared face; nearest: faces per person averaged; min_faces: the
    accepted person must have this many faces in other photos (compared or not): a person seen
    once, often a bystander, is too weak a witness (it still competes)."""

    gate: float
    margin: float
    nearest: int
    min_faces: int
    source: str
    ratio: float = 1.0
    lone_ratio: float = 1.0


CALIBRATIONS: dict[str, VerifyCalibration] = {
    "dlib": VerifyCalibration(gate=0.12, margin=0.0075, nearest=3, min_faces=2, ratio=1.25, lone_ratio=1.3,
                              source="benchmarks/calibrate_verify.py on four albums of training people "
                                     "(docs/CALIBRATION.md)"),
    "arcface": VerifyCalibration(gate=0.6, margin=0.1, nearest=3, min_faces=2,
                                 source="not measured (no ArcFace model offline): scaled from dlib by the "
                                        "ratio of the grouping thresholds"),
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


def verify_people(
    queries: np.ndarray,
    query_photos: Sequence[str],
    faces: np.ndarray,
    face_photos: Sequence[str],
    face_people: Sequence[str],
    space: str = "dlib",
    allowed: np.ndarray | None = None,
    ranked: int = 3,
    excluded: Sequence[Collection[str]] | None = None,
) -> list[Verification]:
    """Verify each query face against the people of the album.

    queries: (Q, D) unit embeddings; query_photos: (Q,) photo ids; faces: (N, D) unit embeddings
    of the faces with a person, or (N, V, D) views of each (its embedding and its resolution
    ladder: a face's distance is that of its nearest view); face_photos, face_people: (N,)
    their photo and person ids;
    allowed: (Q, N) bool, the faces each query may be compared with (the caller passes the faces
    clearly better than the query: two damaged faces are no evidence of one person); None: all;
    ranked: candidates kept per query; excluded: (Q,) the people each query cannot be (another
    face of its photo is that person: albumfix.people.context.photo_cannot_link), set to an
    infinite distance; None: none. A query that is itself among `faces` sits in its own
    photo, which never counts. Returns one Verification per query.
    """
    cal = CALIBRATIONS.get(space, CALIBRATIONS["dlib"])
    people = sorted(set(face_people))
    if not len(queries):
        return []
    if not people:
        return [Verification(None, float("inf"), float("inf"), "no person in the album")] * len(queries)
    member = np.array(people)[:, None] == np.array(face_people)[None, :]  # (P, N)
    same_photo = np.array(query_photos)[:, None] == np.array(face_photos)[None, :]  # (Q, N)
    views = np.asarray(faces, np.float64)
    views = views[:, None, :] if views.ndim == 2 else views  # (N, V, D)
    q = np.asarray(queries, np.float64)
    dist = 1.0 - q @ views[:, 0].T  # (Q, N); the nearest view, one view at a time (memory Q x N)
    for v in range(1, views.shape[1]):
        np.minimum(dist, 1.0 - q @ views[:, v].T, out=dist)
    dist[same_photo] = np.inf
    if allowed is not None:
        dist[~np.asarray(allowed, bool)] = np.inf
    per_person = np.full((len(queries), len(people)), np.inf)
    seen = np.zeros((len(queries), len(people)), np.int64)  # the person's faces in other photos
    compared = np.zeros((len(queries), len(people)), np.int64)  # of them, faces averaged into per_person
    nearest_face = np.zeros((len(queries), len(people)), np.int64)  # index of the person's face nearest the query
    for j in range(len(people)):
        seen[:, j] = (~same_photo[:, member[j]]).sum(axis=1)
        own = np.flatnonzero(member[j])
        nearest_face[:, j] = own[np.argmin(dist[:, own], axis=1)]
        d = np.sort(dist[:, member[j]], axis=1)[:, :cal.nearest]
        finite = np.isfinite(d)
        compared[:, j] = finite.sum(axis=1)
        per_person[:, j] = np.where(compared[:, j] > 0, np.where(finite, d, 0.0).sum(axis=1)
                                    / np.maximum(compared[:, j], 1), np.inf)
    if excluded is not None:
        column = {person: j for j, person in enumerate(people)}
        for i, names in enumerate(excluded):
            per_person[i, [column[n] for n in names if n in column]] = np.inf
    out = []
    for row, times, used, faces_near in zip(per_person, seen, compared, nearest_face):
        order = np.argsort(row, kind="stable")
        best = float(row[order[0]])
        second = float(row[order[1]]) if len(order) > 1 else float("inf")
        ratio = cal.lone_ratio if used[order[0]] == 1 else cal.ratio
        near = tuple(Candidate(people[j], float(row[j]), int(faces_near[j])) for j in order[:ranked]
                     if np.isfinite(row[j]))
        if not np.isfinite(best):
            reason = "no clearly better face of anyone outside this photo"
        elif times[order[0]] < cal.min_faces:
            reason = f"nearest person seen only {times[order[0]]} time(s) (at least {cal.min_faces})"
        elif best > cal.gate:
            reason = f"nearest person at {best:.3f} > gate {cal.gate:g}"
        elif second - best < cal.margin or second < ratio * best:
            reason = (f"two people about as near ({best:.3f}, {second:.3f}; margin {cal.margin:g}, "
                      f"ratio {ratio:g})")
        else:
            reason = ""
        out.append(Verification(None if reason else people[order[0]], best, second, reason, near))
    return out
