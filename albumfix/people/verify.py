"""Open-set verification of a face against the people of the whole album (a margin rule).

A degraded face's identity embedding drifts away from its own person's sharp photos, often as
far as the automatic grouping threshold and the exemplar gate allow for two different people,
so a fixed distance cannot tell "my person, damaged" from "someone else". What survives damage
is the *ranking*: the face is still nearer its own person than any other person of the album.
The rule (as a ratio test in feature matching): for the query face, each person's distance is
the mean cosine distance to that person's `nearest` closest faces (faces in the query's own
photo never count); the nearest person P, with at least `min_faces` faces in other photos, is
accepted when

    d(P) <= gate   and   d(second person) - d(P) >= margin   and   d(second person) >= ratio * d(P)

(no second person: both hold). The ratio is the scale-free form of the margin: a face nearer
its own person than its own distance, relatively, not only by a fixed amount. Only faces
clearly better than the query are compared (the caller's `allowed`), but every face of P in
another photo counts as a witness that P is no bystander; when d(P) rests on a single face,
`lone_ratio` replaces `ratio` (one distance is a noisier estimate than a mean of several).
Precision comes first: a wrong person's face as an exemplar is worse than none.

Damaged against damaged alike: a sharp face comes with its resolution ladder (the degraded-face
network's descriptors of it seen at 1/2, 1/4.5 and 1/9 of its resolution,
`albumfix.faces.backends.dlib_resnet.resolution_ladder`), and a degraded query's distance to it
is that of its nearest view (its embedding or a rung): the query meets each sharp face at about
its own resolution, whatever the damage, without estimating it. On the calibration album below,
scored against the true people (no grouping, every sharp face a candidate), the right person is
nearest for 74.7 % of damaged faces by the embeddings alone and 80.0 % with the ladders (rungs
1/2, 1/3, 1/4.5, 1/6.5, 1/9 and the chip itself by the degraded-face network, in any subset of
two or more: 76.8-80.0 %; the three kept cost the least for as much).

Calibration (`CALIBRATIONS`, `benchmarks/calibrate_verify.py`) on four albums of the same 90
*training* people (`build_albums(..., split="train", seed=0..3)`: other photos and other damage
in each, 379 damaged faces found, three damage families; the held-out people untouched; these
people are also kept out of the identity network's fine-tuning), damaged faces guided / of
them by another person's exemplar, the four albums pooled:
- kept, margin 0.0075, ratio 1.25, lone ratio 1.3: 173 (45.6 %), none wrong (41, 37, 43, 52 per
  album); with lone ratio 1.25: 174 with 1 wrong; ratio 1.22: 183 with 2 wrong; 1.2: 187 with 2
  wrong (two damaged faces whose own sharp photos grouping had merged into a look-alike's
  person); ratio 1.1 (the rule kept in session 8, tuned on the first two albums alone, where it
  made no error): 212 with 6 wrong, all on the two later albums, at runner-up ratios of 1.1 to
  1.24; ratio 1.3 with lone ratio 1.4: 161, none wrong. Kept: the lowest ratio with no error on
  any album. The margin hardly matters at these ratios (0.005-0.015: the same faces). A lone
  compared face errs at higher ratios than a mean of several (the errors with ratio = lone
  ratio sit at 1.16 and 1.27), hence the stricter lone ratio;
- every face of the person in another photo counts as a witness: counting only the compared
  faces (a person with one face clearly better than the query refused as "seen once"), the
  first two albums verified 48 and 48 at ratio 1.1, against 51 and 48 counting every face
  (lone ratio 1.3);
- on the first album at ratio 1.1: the same network without ladders 40, dlib's own network for
  every face 38 (margin 0.01).
The gate hardly matters between 0.10 and 0.20. The held-out album (`albumfix eval --albums`)
is harder (grouping errors among its sharp faces): see the README for what it gets.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
                              source="benchmarks/calibrate_verify.py on four albums of training people (module doc)"),
    "arcface": VerifyCalibration(gate=0.6, margin=0.1, nearest=3, min_faces=2,
                                 source="not measured (no ArcFace model offline): scaled from dlib by the "
                                        "ratio of the grouping thresholds"),
}


@dataclass(frozen=True)
class Verification:
    """The outcome for one face: person (None when not accepted), its distance d(P), the
    second person's distance (inf when none) and why it was refused ("" when accepted)."""

    person: str | None
    distance: float
    runner_up: float
    reason: str


def verify_people(
    queries: np.ndarray,
    query_photos: Sequence[str],
    faces: np.ndarray,
    face_photos: Sequence[str],
    face_people: Sequence[str],
    space: str = "dlib",
    allowed: np.ndarray | None = None,
) -> list[Verification]:
    """Verify each query face against the people of the album.

    queries: (Q, D) unit embeddings; query_photos: (Q,) photo ids; faces: (N, D) unit embeddings
    of the faces with a person, or (N, V, D) views of each (its embedding and its resolution
    ladder: a face's distance is that of its nearest view); face_photos, face_people: (N,)
    their photo and person ids;
    allowed: (Q, N) bool, the faces each query may be compared with (the caller passes the faces
    clearly better than the query: two damaged faces are no evidence of one person); None: all.
    A query that is itself among `faces` sits in its own photo, which never counts. Returns one
    Verification per query.
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
    for j in range(len(people)):
        seen[:, j] = (~same_photo[:, member[j]]).sum(axis=1)
        d = np.sort(dist[:, member[j]], axis=1)[:, :cal.nearest]
        finite = np.isfinite(d)
        compared[:, j] = finite.sum(axis=1)
        per_person[:, j] = np.where(compared[:, j] > 0, np.where(finite, d, 0.0).sum(axis=1)
                                    / np.maximum(compared[:, j], 1), np.inf)
    out = []
    for row, times, used in zip(per_person, seen, compared):
        order = np.argsort(row, kind="stable")
        best = float(row[order[0]])
        second = float(row[order[1]]) if len(order) > 1 else float("inf")
        ratio = cal.lone_ratio if used[order[0]] == 1 else cal.ratio
        if not np.isfinite(best):
            out.append(Verification(None, best, second, "no clearly better face of anyone outside this photo"))
        elif times[order[0]] < cal.min_faces:
            out.append(Verification(None, best, second,
                                    f"nearest person seen only {times[order[0]]} time(s) (at least {cal.min_faces})"))
        elif best > cal.gate:
            out.append(Verification(None, best, second, f"nearest person at {best:.3f} > gate {cal.gate:g}"))
        elif second - best < cal.margin or second < ratio * best:
            out.append(Verification(None, best, second,
                                    f"two people about as near ({best:.3f}, {second:.3f}; margin {cal.margin:g}, "
                                    f"ratio {ratio:g})"))
        else:
            out.append(Verification(people[order[0]], best, second, ""))
    return out
