"""Album context in verification: what an album knows about a face beyond its own descriptor.

The album-wide margin rule (albumfix.people.verify) judges a degraded face by its distances
alone. An album adds two kinds of evidence that this module turns into plain masks and sets
for it (albumfix.plan runs the rule in passes, `ContextRules.passes`, so that what one pass
settles informs the next):
- cannot-link (`photo_cannot_link`, `same_photo_conflicts`): the faces of one photo are
  different people. A person held by a reliable face of the query's photo (one the user
  confirmed, one with detail grouped into its person, or one verified in an earlier pass) can
  neither be the query nor compete with its nearest person; two faces of one photo verified
  as the same person in one pass are both refused (at most one of them is right; precision
  first);
- chain (`chain_witnesses`): a degraded face verified in an earlier pass witnesses for its
  person towards faces more damaged than it (damaged -> moderately damaged -> sharp, each link
  having passed the rule), although it is no exemplar and the rule otherwise compares a query
  only with faces clearly better than it.
Not here: co-occurrence and time priors (no such signal in the calibration albums: each pair
of people shares one photo, and no photo has a date), and re-embedding a face restored without
guidance (it needs the pipeline); docs/CALIBRATION.md says what was measured.
Rules and thresholds: `CONTEXT`, by `benchmarks/calibrate_context.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class ContextRules:
    """cannot_link, chain: use that context (module docstring); chain_detail_ratio: a verified
    degraded face witnesses for a query whose `edge_detail` (the unitless fine-band measure of
    albumfix.faces.quality) is at most 1/ratio of its own, and at most 4/3 its size
    (interocular px); passes: verification passes at most (1: the rule alone; a pass that
    verifies nothing new ends them)."""

    cannot_link: bool
    chain: bool
    chain_detail_ratio: float
    passes: int
    source: str


CONTEXT = ContextRules(cannot_link=True, chain=False, chain_detail_ratio=1.5, passes=3,
                       source="benchmarks/calibrate_context.py on three albums of training people "
                              "(docs/CALIBRATION.md)")


def photo_cannot_link(query_photos: Sequence[str], photos: Sequence[str], people: Sequence[str | None],
                      reliable: Sequence[bool], queries: Sequence[int] | None = None) -> list[set[str]]:
    """(Q,) sets of the people each query cannot be: those of the reliable faces of its photo.

    query_photos: (Q,) photo ids; photos, people, reliable: (N,) every face's photo id, person
    (None: none) and whether that person is to be trusted (module docstring); queries: (Q,) the
    index of each query among the N faces, whose own person never counts (None: queries are
    not among them)."""
    held: dict[str, list[tuple[int, str]]] = {}
    for i, (photo, person, ok) in enumerate(zip(photos, people, reliable)):
        if ok and person is not None:
            held.setdefault(photo, []).append((i, person))
    own = [-1] * len(query_photos) if queries is None else list(queries)
    return [{person for i, person in held.get(photo, []) if i != me} for photo, me in zip(query_photos, own)]


def same_photo_conflicts(photos: Sequence[str], people: Sequence[str]) -> set[int]:
    """Indices of the faces (accepted in one pass: photo id, person) that share both their photo
    and their person with another of them: all are refused."""
    seen: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(photos, people)):
        seen.setdefault(key, []).append(i)
    return {i for group in seen.values() if len(group) > 1 for i in group}


def chain_witnesses(detail: np.ndarray, interocular: np.ndarray, verified: np.ndarray,
                    query_detail: np.ndarray, query_interocular: np.ndarray, ratio: float) -> np.ndarray:
    """Which faces may witness for which queries as links of a chain, on arrays that broadcast
    (pairs (M,) and (M,), or faces (1, N) against queries (Q, 1)) -> bool array. detail,
    interocular (px), verified: of the faces (verified: a degraded face verified in an earlier
    pass); query_detail, query_interocular: of the queries. A witness is verified, has at least
    `ratio` times the query's detail (strictly more when the query has none) and 3/4 of its
    size."""
    more = (detail >= ratio * query_detail) & (detail > query_detail)
    return np.asarray(verified, bool) & more & (interocular >= 0.75 * query_interocular)
