"""Grouping faces into people: constrained average linkage on a sparse k-nearest-neighbour graph.

All distances here are cosine distances ``1 - a . b`` between L2-normalised identity embeddings
(0 = identical, 2 = opposite). The average-linkage distance between two groups A and B is the
mean pairwise cosine distance, which for unit vectors equals ``1 - (sum A) . (sum B) / (|A| |B|)``;
it is therefore exact and costs O(D) per pair of groups, so no N x N matrix is ever built.

Algorithm (deterministic: faces are processed in ``face_id`` order whatever the input order):

1. Every face is a node; candidate links are its ``k`` nearest neighbours (sparse; exact, or an
   inverted-file index on archives: albumfix.people.neighbours) closer than the group
   threshold. Two groups can only have an average distance under the
   threshold if at least one of their pairs does, so these links hold every candidate merge
   (up to the cap of k links per face, which bounds memory at O(N k)).
2. Groups merge closest-first (average linkage) while their distance is within the threshold.
   Then fragments of one person join by a margin rule (the one verification applies to a face,
   albumfix.people.verify, here to groups): two groups that are each other's nearest allowed
   group, within ``margin_distance``, merge when both runner-ups are at least ``margin_ratio``
   times as far and neither holds a degraded face (those join a person by verification only);
   rounds repeat until none merges (each round one nearest-group search over the groups' mean
   vectors, whose inner products are exactly average linkage).
3. Cannot-link: a merge is refused when it would put two faces of one photo, two degraded
   faces, or a must-not-link pair, into one person (each face carries "tokens": its photo, one
   token shared by all degraded faces, and its must-not-link pairs; two groups that share a
   token never merge). A face that could join either of two same-photo faces therefore ends
   with the closer one.
4. Manual decisions always win: a pinned face carries its person id as a "colour" from the start;
   groups of two different colours never merge, and an unpinned group may join a colour only if
   it shares no token with any face of that person. So every pinned face ends with its pinned
   id and unpinned faces join a pinned person by the same average-linkage rule (against the
   part of the person they resemble). Excluded faces are left out entirely (label ``None``).
   ``assign_new`` is the same computation with the faces of existing people pinned.

Person ids: a pinned or existing person keeps its id; an automatic person is named by the
smallest ``face_id`` among its faces (skipping ids already used by pinned/existing people), so
ids are stable across re-runs as long as face ids are.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

FRAGMENT_NEIGHBOURS = 8  # nearest groups searched per group in a round of the margin rule


@dataclass(frozen=True)
class SpaceCalibration:
    """Thresholds of one embedding space, as cosine distances.

    group_distance: average-linkage threshold for putting faces into one person.
    exemplar_distance: stricter gate between an LQ face and an exemplar of its person.
    neighbors: k of the candidate k-NN graph.
    source: how the numbers were obtained.
    margin_distance, margin_ratio: the margin rule joining fragments of a person (module
    docstring, step 2); margin_ratio 0 turns it off.
    """

    group_distance: float
    exemplar_distance: float
    neighbors: int
    source: str
    margin_distance: float = 0.0
    margin_ratio: float = 0.0


CALIBRATIONS: dict[str, SpaceCalibration] = {
    "dlib": SpaceCalibration(
        group_distance=0.07,
        exemplar_distance=0.04,
        neighbors=32,
        source="benchmarks/bench_grouping.py on the tuning half of LFW + CelebA identities: best "
        "recall with pairwise precision >= 0.995; exemplar same-person rate >= 0.999; the margin "
        "rule by benchmarks/calibrate_grouping.py on three albums of training people",
        margin_distance=0.12,
        margin_ratio=1.15,
    ),
    "arcface": SpaceCalibration(
        group_distance=0.5,
        exemplar_distance=0.4,
        neighbors=32,
        source="not measured (no ArcFace model files offline): Immich's max distance 0.5, "
        "exemplar gate kept stricter by the same rule as dlib's; the margin rule's distance is "
        "verification's gate in this space, its ratio dlib's",
        margin_distance=0.6,
        margin_ratio=1.15,
    ),
}


def calibration(space: str) -> SpaceCalibration:
    """Thresholds for an embedding space name (``"dlib"`` or ``"arcface"``)."""
    try:
        return CALIBRATIONS[space]
    except KeyError:
        known = ", ".join(sorted(CALIBRATIONS))
        raise ValueError(f"unknown embedding space {space!r}; calibrated spaces: {known}") from None


@dataclass(frozen=True)
class FaceRecord:
    """One face to group.

    face_id: stable unique id; photo_id: the photo it is in (faces of one photo are never one
    person); embedding: (D,) float32, L2-normalised identity vector; degraded: a face whose
    embedding is unreliable (damaged, without detail): it may join a person of reliable faces,
    but two degraded faces are never put into one person by their embeddings (damage makes
    different people look alike), only by albumfix.people.verify or the user.
    """

    face_id: str
    photo_id: str
    embedding: np.ndarray
    degraded: bool = False


@dataclass
class Overrides:
    """Manual corrections; they always win over automatic grouping.

    pinned: face_id -> person id (names, merges and splits pin faces to a person).
    excluded: faces never grouped (label None) and hence never exemplars.
    cannot_link: pairs of face ids that must never be one person (from splits).
    Entries naming faces that are not part of the input are ignored.
    """

    pinned: dict[str, str] = field(default_factory=dict)
    excluded: set[str] = field(default_factory=set)
    cannot_link: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class Person:
    """An existing person (from an earlier run) with the faces already assigned to it."""

    person_id: str
    faces: list[FaceRecord]


@dataclass
class Grouping:
    """labels: face_id -> person id, or None for an excluded face."""

    labels: dict[str, str | None]

    def people(self) -> dict[str, list[str]]:
        """person id -> its face ids, both sorted."""
        out: dict[str, list[str]] = {}
        for face_id in sorted(self.labels):
            person = self.labels[face_id]
            if person is not None:
                out.setdefault(person, []).append(face_id)
        return dict(sorted(out.items()))


def group_faces(
    faces: Sequence[FaceRecord],
    space: str = "dlib",
    overrides: Overrides | None = None,
    distance: float | None = None,
) -> Grouping:
    """Groups faces into people.

    faces: records with (D,) unit embeddings of one space; space: its calibration name;
    overrides: manual decisions; distance: average-linkage threshold overriding the calibrated
    one (benchmarks sweep it). Returns a label for every input face.
    """
    overrides = overrides or Overrides()
    kept = sorted((f for f in faces if f.face_id not in overrides.excluded), key=lambda f: f.face_id)
    if len({f.face_id for f in kept}) != len(kept):
        raise ValueError("face ids must be unique")
    labels = _group(kept, overrides, space, distance)
    labels.update({f.face_id: None for f in faces if f.face_id in overrides.excluded})
    return Grouping(labels)


def assign_new(
    existing: Sequence[Person],
    new_faces: Sequence[FaceRecord],
    space: str = "dlib",
    overrides: Overrides | None = None,
    distance: float | None = None,
) -> Grouping:
    """Assigns new faces to existing people or to new people formed among themselves.

    existing: people of an earlier run, kept exactly as they are; new_faces: faces not grouped
    yet. Same result as ``group_faces`` on all faces with every existing face pinned to its
    person (a new pin in ``overrides`` wins). Returns labels for the new faces only.
    """
    overrides = overrides or Overrides()
    pinned = {f.face_id: p.person_id for p in existing for f in p.faces}
    pinned.update(overrides.pinned)
    merged = Overrides(pinned, overrides.excluded, overrides.cannot_link)
    everyone = group_faces([f for p in existing for f in p.faces] + list(new_faces), space, merged, distance)
    return Grouping({f.face_id: everyone.labels[f.face_id] for f in new_faces})


def _group(
    records: Sequence[FaceRecord], overrides: Overrides, space: str, distance: float | None
) -> dict[str, str]:
    """Runs the constrained agglomeration on face_id-sorted records; returns face_id -> person id."""
    if not records:
        return {}
    cal = calibration(space)
    threshold = cal.group_distance if distance is None else float(distance)
    emb = _unit_rows(np.stack([r.embedding for r in records]))
    people = sorted({overrides.pinned[r.face_id] for r in records if r.face_id in overrides.pinned})
    colour_of = {person: i for i, person in enumerate(people)}
    colour = np.array([colour_of.get(overrides.pinned.get(r.face_id), -1) for r in records])
    rows, cols = _knn_links(emb, cal.neighbors, threshold)
    engine = _Agglomeration(emb, _tokens(records, overrides.cannot_link), colour,
                            np.array([r.degraded for r in records], bool))
    engine.run(rows, cols, threshold)
    owner = engine.join_fragments(cal.margin_distance, cal.margin_ratio) if cal.margin_ratio else engine.owner
    return _name_people(records, owner, engine.colour, people)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float64 rows scaled to unit length (guards slightly off-norm inputs)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must stack to (N, D), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("embeddings must be finite and non-zero")
    return x / norms


def _knn_links(emb: np.ndarray, k: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate links: each face's k nearest faces within ``threshold`` cosine distance.

    emb: (N, D) unit rows. Returns (rows, cols) int64 arrays of links (face, neighbour),
    neighbour != face. Memory O(N k); exact search up to albumfix.people.neighbours.EXACT_LIMIT
    faces, an inverted-file index beyond (near-linear time).
    """
    from albumfix.people.neighbours import nearest

    n = emb.shape[0]
    if n < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # float32 search (half the memory); merges recompute exact float64 distances, so the small
    # slack only admits a few extra candidates
    cosine, idx = nearest(emb, emb, min(k + 1, n))
    src = np.broadcast_to(np.arange(n)[:, None], idx.shape)
    keep = (cosine <= threshold + 1e-5) & (idx != src) & (idx >= 0)
    return src[keep].astype(np.int64), idx[keep].astype(np.int64)


def _tokens(records: Sequence[FaceRecord], cannot_link: set[tuple[str, str]]) -> list[set[int]]:
    """Per face the ints it may not share with another face of its person (photo, one token of
    all degraded faces, must-not-links)."""
    photo_token: dict[str, int] = {}
    tokens = [{photo_token.setdefault(r.photo_id, len(photo_token))} for r in records]
    degraded_token = len(photo_token)
    for t, r in zip(tokens, records):
        if r.degraded:
            t.add(degraded_token)
    index = {r.face_id: i for i, r in enumerate(records)}
    pairs = sorted({tuple(sorted(p)) for p in cannot_link if p[0] != p[1]})
    next_token = degraded_token + 1
    for a, b in pairs:
        if a in index and b in index:
            tokens[index[a]].add(next_token)
            tokens[index[b]].add(next_token)
            next_token += 1
    return tokens


class _Agglomeration:
    """Closest-first average linkage over candidate links, with cannot-link tokens and colours.

    Colours are pinned people: groups of two different colours never merge; a group joining a
    colour must not share a token with any face of that colour (the whole person, not just the
    group it joins). The heap holds each group's nearest allowed neighbour only; average linkage
    is reducible (a merged group is never closer to a third group than the nearer of its parts)
    and merges only ever forbid more, so only groups whose nearest neighbour merged, or turned
    out forbidden, need a new scan.
    """

    def __init__(self, emb: np.ndarray, tokens: list[set[int]], colour: np.ndarray, degraded: np.ndarray) -> None:
        """emb: (N, D) unit rows; tokens: per face; colour: (N,) int, -1 for unpinned faces;
        degraded: (N,) bool, the faces whose embedding is unreliable (FaceRecord.degraded)."""
        n = emb.shape[0]
        self.degraded = np.asarray(degraded, bool).copy()
        self.owner = np.arange(n)
        self.sums = emb.copy()
        self.count = np.ones(n)
        self.colour = colour.astype(np.int64)
        self.version = np.zeros(n, dtype=np.int64)
        self.members = [[i] for i in range(n)]
        self.toks = [set(t) for t in tokens]
        self.colour_toks: dict[int, set[int]] = {}
        for i in np.flatnonzero(self.colour >= 0).tolist():
            self.colour_toks.setdefault(int(self.colour[i]), set()).update(tokens[i])
        self.adj: dict[int, set[int]] = {}
        self.nearest: dict[int, int] = {}  # group -> its queued nearest neighbour
        self.pointed_by: dict[int, set[int]] = {}  # group -> groups whose nearest it is
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.threshold = 0.0

    def run(self, rows: np.ndarray, cols: np.ndarray, threshold: float) -> np.ndarray:
        """Merges along links while within threshold; returns (N,) int64 group id per face."""
        self.threshold = threshold
        for a, b in zip(rows.tolist(), cols.tolist()):
            self.adj.setdefault(a, set()).add(b)
            self.adj.setdefault(b, set()).add(a)
        for a in sorted(self.adj):
            self._rescan(a)
        while self.heap:
            _, a, b, va, vb = heapq.heappop(self.heap)
            if self.version[a] != va or self.version[b] != vb:
                continue
            if self._allowed(a, b):
                self._merge(a, b)
            else:
                self._rescan(a)
        return self.owner

    def _allowed(self, a: int, b: int) -> bool:
        """Whether groups a and b may become (part of) one person."""
        ca, cb = int(self.colour[a]), int(self.colour[b])
        if ca >= 0 and cb >= 0:
            return ca == cb
        ta = self.colour_toks[ca] if ca >= 0 else self.toks[a]
        tb = self.colour_toks[cb] if cb >= 0 else self.toks[b]
        return ta.isdisjoint(tb)

    def _rescan(self, a: int) -> None:
        """Finds group a's nearest allowed neighbour within the threshold and queues the pair."""
        self._forget(a)
        others = np.fromiter(self.adj.get(a, ()), dtype=np.int64)
        if others.size == 0:
            return
        d = 1.0 - (self.sums[others] @ self.sums[a]) / (self.count[others] * self.count[a])
        near = np.flatnonzero(d <= self.threshold)
        for i in near[np.lexsort((others[near], d[near]))].tolist():
            b = int(others[i])
            if self._allowed(a, b):
                self.nearest[a] = b
                self.pointed_by.setdefault(b, set()).add(a)
                heapq.heappush(self.heap, (float(d[i]), a, b, int(self.version[a]), int(self.version[b])))
                return

    def join_fragments(self, distance: float, ratio: float) -> np.ndarray:
        """After `run`: the margin rule's rounds (module docstring, step 2) over the groups;
        returns (N,) int64 group id per face.

        The first round searches every group's FRAGMENT_NEIGHBOURS nearest groups. Average
        linkage to a union is the size-weighted mean of the linkages to its parts, so a group
        with no other group within `distance` never gets one: later rounds search only the
        groups of sharp faces that had one (and what they became) against those and the groups
        that lay within ratio x distance of them, which holds every nearest group and runner-up
        the rule can use."""
        from albumfix.people.neighbours import nearest

        reach = ratio * distance
        queries = base = np.flatnonzero(self.count > 0)
        first_round = True
        while len(queries) and len(base) >= 2:
            means = self.sums[base] / self.count[base, None]
            dist, idx = nearest(means, self.sums[queries] / self.count[queries, None],
                                min(FRAGMENT_NEIGHBOURS, len(base)))
            found = np.where(idx >= 0, base[np.maximum(idx, 0)], -1)  # (Q, K) group ids
            other = (found >= 0) & (found != queries[:, None])
            close = (other & (dist <= distance)).any(axis=1) & ~self.degraded[queries]
            first: dict[int, tuple[float, int]] = {}
            runner_up: dict[int, float] = {}
            for row in np.flatnonzero(close).tolist():
                a = int(queries[row])
                near = [(float(d), int(b)) for d, b, ok in zip(dist[row], found[row], other[row])
                        if ok and self._allowed(a, int(b))][:2]
                if near:
                    first[a] = near[0]
                    runner_up[a] = near[1][0] if len(near) > 1 else float("inf")
            pairs = [(a, b) for a, (d, b) in first.items()
                     if a < b and first.get(b, (0.0, -1))[1] == a and d <= distance
                     and min(runner_up[a], runner_up[b]) >= ratio * d]  # first holds no degraded group
            if first_round:
                within = found[close][(dist[close] <= reach) & other[close]]
                base = np.union1d(queries[close], within)
                first_round = False
            queries = queries[close]
            for a, b in pairs:
                self._combine(a, b)
            if not pairs:
                break
            queries, base = queries[self.count[queries] > 0], base[self.count[base] > 0]
        return self.owner

    def _combine(self, a: int, b: int) -> None:
        """Group b's faces, sums, tokens and colour join group a's (b is left empty)."""
        ca, cb = int(self.colour[a]), int(self.colour[b])
        if max(ca, cb) >= 0 and min(ca, cb) < 0:
            self.colour_toks[max(ca, cb)] |= self.toks[a] if ca < 0 else self.toks[b]
        self.colour[a] = max(ca, cb)
        self.sums[a] += self.sums[b]
        self.count[a] += self.count[b]
        self.count[b] = 0
        self.degraded[a] |= self.degraded[b]
        self.owner[self.members[b]] = a
        self.members[a].extend(self.members[b])
        self.members[b] = []
        self.toks[a] |= self.toks[b]
        self.toks[b] = set()

    def _merge(self, a: int, b: int) -> None:
        """Merges groups a and b into the one with more neighbours, then rescans what changed."""
        if (len(self.adj[a]), -a) < (len(self.adj[b]), -b):
            a, b = b, a
        self._combine(a, b)
        self.version[a] += 1
        self.version[b] += 1
        gone = self.adj.pop(b)
        for x in gone:
            self.adj[x].discard(b)
            if x != a:
                self.adj[x].add(a)
        self.adj[a] |= gone
        self.adj[a] -= {a, b}
        stale = self.pointed_by.pop(a, set()) | self.pointed_by.pop(b, set())
        self._forget(b)
        self._rescan(a)
        for x in sorted(stale - {a, b}):
            self._rescan(x)

    def _forget(self, a: int) -> None:
        """Drops group a's queued nearest neighbour from the bookkeeping."""
        old = self.nearest.pop(a, None)
        if old is not None and old in self.pointed_by:
            self.pointed_by[old].discard(a)


def _name_people(records: Sequence[FaceRecord], owner: np.ndarray, colour: np.ndarray,
                 people: list[str]) -> dict[str, str]:
    """face_id -> person id: pinned colours keep their id, other groups their smallest free face_id.

    records are sorted by face_id, so a group's members in index order are its face ids in
    sorted order.
    """
    used = set(people)
    names: dict[int, str] = {}
    order = np.argsort(owner, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(owner[order]) != 0])
    for members in np.split(order, starts[1:]):
        group = int(owner[members[0]])
        if colour[group] >= 0:
            names[group] = people[int(colour[group])]
            continue
        ids = [records[i].face_id for i in members.tolist()]
        name = next((fid for fid in ids if fid not in used), None)
        suffix = 1
        while name is None or name in used:
            name, suffix = f"{ids[0]}~{suffix}", suffix + 1
        names[group] = name
        used.add(name)
    return {rec.face_id: names[int(owner[i])] for i, rec in enumerate(records)}
