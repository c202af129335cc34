"""The group and choose stages: decide each face's action, group faces into people, and pick
exemplars for every face to restore. Cheap (no model work), so it runs on every invocation from
what the index holds; only the grouping is stored (manual corrections persist there).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from albumfix.album.index import AlbumIndex, FaceRow
from albumfix.settings import Settings

log = logging.getLogger("albumfix")

CANDIDATES = 3  # people offered for a damaged face left unguided (albumfix review)
# Why a damaged face (action restore) is left unguided, most telling first (`_unguided_cause`);
# "guard_rejected" is decided after restoration (`Plan.attach_restored`).
UNGUIDED_CAUSES = ("guidance_off", "excluded", "no_better_photo", "confirmed", "not_verified", "guard_rejected")


@dataclass(frozen=True)
class Candidate:
    """A person a face left unguided may be: distance d of the album-wide rule
    (albumfix.people.verify; cosine) and `face_id`, that person's face nearest it (a usable face
    clearly better than it, in another photo: confirming the person guides the face)."""

    person: str
    distance: float
    face_id: str

    def to_json(self) -> dict:
        return {"person": self.person, "distance": round(float(self.distance), 5), "face": self.face_id}


def guard_kept_original(restored: dict) -> bool:
    """A face's `restored` info (the run JSON's) says it was guided and the guard kept its
    original face (strength 0): for the review it is a face left unguided."""
    return bool(restored.get("exemplar")) and restored.get("strength") == 0


@dataclass
class FacePlan:
    """What happens to one face. action: restore | exemplar | skip; exemplar_eligible: usable to
    guide another face (not skipped, large enough; `clearly_better` decides per face); confirmed:
    the person was set by a manual edit (`albumfix people name/merge/split/confirm`), not by the
    embeddings; verified: see `_verify`; candidates, unguided: see `_rank_candidates`."""

    row: FaceRow
    action: str
    reason: str
    exemplar_eligible: bool
    person: str | None = None
    confirmed: bool = False
    verified: bool = False  # person passed the album-wide margin rule (albumfix.people.verify)
    verify_reason: str = ""  # why not, for a face to restore that was checked
    look: np.ndarray | None = None  # (D,) its second look, when one is stored (`_verify`)
    seen_again: bool = False  # verified by its second look, not by its own embedding
    exemplars: list = field(default_factory=list)  # [ExemplarChoice], best first
    candidates: list[Candidate] = field(default_factory=list)  # nearest people, nearest first (faces to restore)
    unguided: str | None = None  # of UNGUIDED_CAUSES when a face to restore has no exemplar

    @property
    def query(self) -> np.ndarray:
        """(D,) the embedding that stands for this face in identity tests: its second look when
        that verified it, else its own."""
        return self.look if self.seen_again else self.row.embedding

    @property
    def wants_look(self) -> bool:
        """A damaged face left unguided because no person was verified, never looked at again:
        its restoration without guidance is embedded for a second look (albumfix.pipeline)."""
        return self.unguided == "not_verified" and self.look is None and _degraded(self)


@dataclass
class Plan:
    faces: dict[str, FacePlan]
    names: dict[str, str]
    _by_photo: dict[str, list[FacePlan]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_photo = {}
        for f in self.faces.values():
            self._by_photo.setdefault(f.row.content_hash, []).append(f)

    def by_photo(self, content_hash: str) -> list[FacePlan]:
        """The photo's faces, in stored (face id) order; looked up, not searched."""
        return self._by_photo.get(content_hash, [])

    def faces_to_restore(self, content_hash: str) -> list[str]:
        return [f.row.face_id for f in self.by_photo(content_hash) if f.action == "restore"]

    def exemplars_of(self, face_id: str) -> list[str]:
        """The exemplars that guide the model for this face, best first (each guides one
        restoration; the outputs are fused: albumfix.restore.fusion); [] when unguided."""
        return [c.face_id for c in self.faces[face_id].exemplars]

    def face_reports(self, content_hash: str) -> list[dict]:
        """JSON objects of the photo's faces (ids stable across runs). `unguided` (a cause of
        UNGUIDED_CAUSES, else null) and `candidates` (else []) are set for a damaged face left
        unguided."""
        return [{
            "id": f.row.face_id,
            "box": [round(v, 1) for v in f.row.box],
            "score": round(float(f.row.score), 4),
            "quality": round(float(f.row.quality.get("score", 0.0)), 4),
            "action": f.action,
            "reason": f.reason,
            "person": f.person,
            "person_confirmed": f.confirmed,
            "exemplars": [{"face": c.face_id, "distance": round(float(c.distance), 5)}
                          for c in f.exemplars],
            "unguided": f.unguided,
            "candidates": [c.to_json() for c in f.candidates] if f.unguided else [],
        } for f in self.by_photo(content_hash)]

    def attach_restored(self, report, restored: dict) -> None:
        """Add `"restored": {...}` to the report's face objects (face_id -> info); a guided face
        whose original the guard kept (strength 0) becomes unguided, "guard_rejected"."""
        for face in report.faces:
            if face["id"] in restored:
                face["restored"] = restored[face["id"]]
                if guard_kept_original(face["restored"]):
                    face["unguided"] = "guard_rejected"
                    face["candidates"] = [c.to_json() for c in self.faces[face["id"]].candidates]

    def people_report(self) -> list[dict]:
        people: dict[str, list[str]] = {}
        for f in sorted(self.faces.values(), key=lambda f: f.row.face_id):
            if f.person is not None:
                people.setdefault(f.person, []).append(f.row.face_id)
        return [{"id": pid, "name": self.names.get(pid), "faces": fids}
                for pid, fids in sorted(people.items())]


def build_plan(ix: AlbumIndex, faces: list[FaceRow], settings: Settings, progress,
               looks: dict[str, np.ndarray] | None = None) -> Plan:
    """Decide, group (incrementally, manual corrections first) and choose exemplars. looks: face
    id -> (D,) second look (AlbumIndex.looks; None: none): a damaged face its own embedding does
    not verify is verified again with it."""
    from albumfix.faces.quality import EXEMPLAR_MIN_SIZE, FaceQuality, decide_action

    progress.stage("group", len(faces))
    plans: dict[str, FacePlan] = {}
    for row in faces:
        decision = decide_action(FaceQuality(**row.quality), restore_mode=settings.restore,
                                 min_face_size=settings.min_face_size)
        usable = decision.action != "skip" and row.quality["interocular_px"] >= EXEMPLAR_MIN_SIZE
        plans[row.face_id] = FacePlan(row, decision.action, decision.reason, usable,
                                      look=(looks or {}).get(row.face_id))
    _group(ix, plans)
    _verify(plans)
    ix.replace_automatic_assignments({fid: p.person for fid, p in plans.items()
                                      if p.person is not None and not p.confirmed})
    _choose(plans, settings.exemplars)
    _rank_candidates(plans, settings.exemplars)
    progress.advance(len(faces))
    return Plan(plans, ix.person_names())


def _group(ix: AlbumIndex, plans: dict[str, FacePlan]) -> None:
    """Assign persons: stored people keep their faces, new faces join them or form new people."""
    from albumfix.people.cluster import FaceRecord, Overrides, Person, assign_new

    stored = ix.assignments()
    excluded = {a for a, _ in ix.constraints("exclude")}
    overrides = Overrides(
        pinned={fid: pid for fid, (pid, manual) in stored.items() if manual},
        excluded=excluded,
        cannot_link={(a, b) for a, b in ix.constraints("cannot_link")},
    )
    groupable = [p for p in plans.values() if p.action != "skip" and p.row.embedding is not None]
    labels: dict[str, str | None] = {}
    for space in sorted({p.row.embedder for p in groupable}):  # embedder names are calibration spaces
        members = [p for p in groupable if p.row.embedder == space]
        records = {p.row.face_id: FaceRecord(p.row.face_id, p.row.content_hash, p.row.embedding, _degraded(p))
                   for p in members}
        existing: dict[str, list] = {}
        for fid, rec in records.items():
            if fid in stored and fid not in excluded:
                existing.setdefault(stored[fid][0], []).append(rec)
        new = [rec for fid, rec in records.items() if fid not in stored or fid in excluded]
        people = [Person(pid, recs) for pid, recs in sorted(existing.items())]
        labels.update({r.face_id: p.person_id for p in people for r in p.faces})
        labels.update(assign_new(people, new, space=space, overrides=overrides).labels)
    for fid, person in labels.items():
        plans[fid].person = person
        plans[fid].confirmed = fid in overrides.pinned


def _degraded(p: FacePlan) -> bool:
    """A face without real detail (`edge_detail` below MIN_EXEMPLAR_DETAIL): its identity
    embedding is unreliable, for grouping and for the exemplar gate alike."""
    from albumfix.faces.quality import lacks_detail

    return lacks_detail(p.row.quality.get("detail", 0.0))


def _verify(plans: dict[str, FacePlan], rules=None) -> None:
    """Attach each face to restore to the person of the album it is verified against (the margin
    rule of albumfix.people.verify, which survives damage), unless the user confirmed its person.
    A face left alone by grouping joins that person; `verified` marks faces whose person passed.

    Degraded faces (without detail) first, by their own embeddings. Album context
    (albumfix.people.context; rules: a ContextRules, None: its CONTEXT): the rule runs in up to
    `rules.passes` passes over the faces not yet verified, each pass seeing what the ones before
    settled: with `cannot_link`, the people of the reliable faces of a face's photo are out of its
    running, and faces of one photo verified as one person in a pass are all refused; with
    `chain`, faces verified earlier witness for the more damaged ones. Then the degraded faces
    still not verified that have a second look (`FacePlan.look`, the embedding of their
    restoration without guidance, which the restorer brings nearer their person) go through the
    same passes queried by it; `seen_again` marks those it verifies. Last, the faces to restore
    that keep detail (damage that leaves noise or sharpening, e.g. phone snaps): their embeddings
    are reliable, so a person formed by grouping keeps them, but one grouping left alone (or a
    person without a clearly better face) gets one more chance by the rule. Second looks and
    faces with detail are held to the sharp gate (the grouping distance)."""
    from albumfix.people import context
    from albumfix.people.verify import CALIBRATIONS

    rules = rules or context.CONTEXT
    in_photo: dict[str, list[FacePlan]] = {}
    for o in plans.values():
        in_photo.setdefault(o.row.content_hash, []).append(o)
    for space, members in _members_by_space(plans).items():
        sharp_gate = CALIBRATIONS.get(space, CALIBRATIONS["dlib"]).sharp_gate
        to_verify = [p for p in members if p.action == "restore" and not p.confirmed]
        pending = _verify_passes([p for p in to_verify if _degraded(p)], members, space, rules, in_photo)
        first_reason = {id(q): q.verify_reason for q in pending}
        for q in _verify_passes([p for p in pending if p.look is not None], members, space, rules, in_photo,
                                by_look=True, gate=sharp_gate):
            q.verify_reason = f"{first_reason[id(q)]}; on a second look at its restoration, {q.verify_reason}"
        for q in pending:
            q.seen_again = q.verified
        _verify_passes([p for p in to_verify if not _degraded(p)], members, space, rules, in_photo, gate=sharp_gate)


def _verify_passes(pending: list[FacePlan], members: list[FacePlan], space: str, rules,
                   in_photo: dict[str, list[FacePlan]], by_look: bool = False,
                   gate: float | None = None) -> list[FacePlan]:
    """`_verify`'s passes over the faces `pending` (queried by their second looks when `by_look`,
    else by their own embeddings; gate: the rule's, None: calibrated); returns those still not
    verified."""
    from albumfix.people import context

    position = {id(m): i for i, m in enumerate(members)}
    for _ in range(max(1, rules.passes)):
        if not pending:
            break
        sizes: dict[str, int] = {}
        for p in members:
            sizes[p.person] = sizes.get(p.person, 0) + 1
        excluded = context.photo_cannot_link(
            [q.row.content_hash for q in pending], [m.row.content_hash for m in members],
            [m.person for m in members], [m.confirmed or m.verified or not _degraded(m) for m in members],
            [position[id(q)] for q in pending]) if rules.cannot_link else None
        results = _verify_each(pending, members, space, excluded=excluded,
                               chain_ratio=rules.chain_detail_ratio if rules.chain else None,
                               vectors=[q.look for q in pending] if by_look else None, gate=gate)
        accepted: list[tuple[FacePlan, str]] = []
        for q, v in zip(pending, results):
            alone = sizes[q.person] == 1
            photo_people = {o.person for o in in_photo[q.row.content_hash] if o is not q}
            if v.person is not None and (v.person == q.person or (alone and v.person not in photo_people)):
                accepted.append((q, v.person))
            else:
                q.verify_reason = v.reason or f"verified as another person than its group ({v.person})"
        if rules.cannot_link:
            clash = context.same_photo_conflicts([q.row.content_hash for q, _ in accepted],
                                                 [person for _, person in accepted])
            for i in clash:
                accepted[i][0].verify_reason = (f"another face of this photo verified as the same person "
                                                f"({accepted[i][1]})")
            accepted = [a for i, a in enumerate(accepted) if i not in clash]
        for q, person in accepted:
            q.person, q.verified, q.verify_reason = person, True, ""
        pending = [q for q in pending if not q.verified]
        if not accepted:
            break
    return pending


def _members_by_space(plans: dict[str, FacePlan]) -> dict[str, list[FacePlan]]:
    """The faces with a person and an embedding, by embedding space (sorted by space name): the
    members the album-wide rule compares a face with."""
    with_person = [p for p in plans.values() if p.person is not None and p.row.embedding is not None]
    return {space: [p for p in with_person if p.row.embedder == space]
            for space in sorted({p.row.embedder for p in with_person})}


def _verify_each(queries: list[FacePlan], members: list[FacePlan], space: str,
                 excluded: list[set[str]] | None = None, chain_ratio: float | None = None,
                 vectors: list[np.ndarray] | None = None, gate: float | None = None) -> list:
    """verify_people for each query against the usable faces clearly better than it (a query's
    own row sits in its own photo, which never counts); excluded: the people each query cannot
    be (None: none); chain_ratio: also against the verified faces with that much more detail
    (albumfix.people.context.chain_witnesses; None: not); vectors: (D,) per query, what stands
    for it (None: `FacePlan.query`, e.g. second looks); gate: the rule's gate (None: calibrated).
    Witnesses are chosen by the queries' own detail and size whatever the vectors: a restoration
    is no better a witness than its input."""
    from albumfix.faces.quality import better_than
    from albumfix.people.verify import verify_people

    if not queries:
        return []

    def measures(faces: list[FacePlan]) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([f.row.quality.get("detail", 0.0) for f in faces]),
                np.array([f.row.quality["interocular_px"] for f in faces]))

    (detail, iod), (q_detail, q_iod) = measures(members), measures(queries)
    usable = np.array([m.exemplar_eligible for m in members])
    verified = np.array([m.verified for m in members])

    def witness(f, qd, qi) -> np.ndarray:
        """Members f (indices or a slice) that may witness for queries of detail qd and size qi
        (arrays that broadcast with them) -> bool."""
        ok = better_than(detail[f], iod[f], qd, qi)
        if chain_ratio is not None:
            from albumfix.people.context import chain_witnesses

            ok |= chain_witnesses(detail[f], iod[f], verified[f], qd, qi, chain_ratio)
        return usable[f] & ok

    # both tests only loosen as the query's detail and size fall: the members that may witness
    # for any query are those that may for the least demanding one
    witnesses = witness(slice(None), q_detail.min(), q_iod.min())
    views = [identity_views(m.row) for m in members]
    width = max(len(v) for v in views)  # pad with the embedding again: a repeated view changes no minimum
    padded = np.stack([np.concatenate([v, np.repeat(v[:1], width - len(v), axis=0)]) for v in views])
    vectors = [q.query for q in queries] if vectors is None else vectors
    return verify_people(np.stack(vectors), [q.row.content_hash for q in queries],
                         padded, [m.row.content_hash for m in members],
                         [m.person for m in members], space=space,
                         allowed=lambda q, f: witness(f, q_detail[q], q_iod[q]), ranked=CANDIDATES,
                         excluded=excluded, witnesses=witnesses, gate=gate)


def identity_views(row: FaceRow) -> np.ndarray:
    """(V, D) float32: the face's embedding, then its resolution ladder when it has one of the
    same width (a degraded face is compared with each view: albumfix.people.verify)."""
    emb = np.asarray(row.embedding, np.float32)[None]
    if row.ladder is None or row.ladder.ndim != 2 or row.ladder.shape[1] != emb.shape[1]:
        return emb
    return np.concatenate([emb, row.ladder.astype(np.float32)])


def _verified_gate(p: FacePlan, candidates: list) -> float:
    """Identity gate for a verified face: its person passed the margin rule, so any of the
    person's faces may guide it, except those clearly farther than its nearest one (the margin
    again, face by face: a group of two look-alike siblings still guides each with their own)."""
    from albumfix.people.exemplars import identity_distances
    from albumfix.people.verify import CALIBRATIONS

    if not candidates:
        return float("inf")
    cal = CALIBRATIONS.get(p.row.embedder, CALIBRATIONS["dlib"])
    return float(np.min(identity_distances(p.query, [c.embedding for c in candidates]))) + cal.margin


def _choose(plans: dict[str, FacePlan], k: int) -> None:
    """Top-k exemplars per face to restore, among its person's usable faces that are clearly
    better than it (`clearly_better`: relative, so modest albums still have guidance).

    Identity: a face whose person the user confirmed takes the person's faces as they are; a
    face whose person passed the album-wide margin rule (`_verify`) takes those within the margin
    of its nearest one (`_verified_gate`, by the same `identity_views` as the rule); any other
    face keeps the strict per-exemplar identity gate on the embeddings, which guards automatic
    grouping against someone else's face."""
    from albumfix.faces.quality import FaceQuality, clearly_better
    from albumfix.people.exemplars import ExemplarFace, choose_exemplars

    by_person: dict[str, list[FacePlan]] = {}
    for p in plans.values():
        if p.person is not None and p.exemplar_eligible:
            by_person.setdefault(p.person, []).append(p)

    def as_exemplar(p: FacePlan, vectors: np.ndarray) -> ExemplarFace:
        """vectors: the face's (D,) embedding or (V, D) views, as the identity test compares it."""
        return ExemplarFace(p.row.face_id, p.row.content_hash, vectors, np.asarray(p.row.landmarks, np.float32))

    for p in plans.values():
        if p.action != "restore":
            continue
        if k == 0:
            p.reason = f"{p.reason}; restored without guidance (--exemplars 0)"
            continue
        mine = FaceQuality(**p.row.quality)
        # a verified (hence degraded) face is compared with each candidate's `identity_views`
        candidates = [as_exemplar(c, identity_views(c.row) if p.verified else c.row.embedding)
                      for c in by_person.get(p.person, [])
                      if c is not p and clearly_better(FaceQuality(**c.row.quality), mine)] if p.person else []
        gate = float("inf") if p.confirmed else _verified_gate(p, candidates) if p.verified else None
        p.exemplars = choose_exemplars(as_exemplar(p, p.query), candidates, k=k, identity_gate=gate,
                                       space=p.row.embedder) if candidates else []
        if p.exemplars and p.seen_again:
            p.reason = f"{p.reason}; person verified on a second look (its restoration without guidance)"
        if not p.exemplars:
            why = p.verify_reason or "no face of this person is clearly better"
            unguided = (f"no exemplar ({why}): restored without guidance (if the album has sharp photos "
                        "of them, `albumfix people confirm` this face as that person: `albumfix review` "
                        "offers the nearest people)")
            p.reason = f"{p.reason}; {unguided}" if p.reason else unguided


def _rank_candidates(plans: dict[str, FacePlan], k: int) -> None:
    """For every face to restore: the CANDIDATES people nearest it by the album-wide rule's
    per-person distance (the rule itself decides nothing here), each with their face nearest it,
    as seen by its second look where it has one (nearer its person than the damaged face; the
    distances shown are the look's); and for one left without an exemplar, why
    (`_unguided_cause`). Run after `_choose`; with guidance off (k = 0) no face is ranked."""
    for space, members in (_members_by_space(plans) if k else {}).items():
        queries = [p for p in members if p.action == "restore"]
        vectors = [q.query if q.look is None else q.look for q in queries]
        for q, v in zip(queries, _verify_each(queries, members, space, vectors=vectors)):
            q.candidates = [Candidate(c.person, c.distance, members[c.face].row.face_id) for c in v.candidates]
    for p in plans.values():
        if p.action == "restore" and not p.exemplars:
            p.unguided = _unguided_cause(p, k)


def _unguided_cause(p: FacePlan, k: int) -> str:
    """Why a face to restore has no exemplar (of UNGUIDED_CAUSES): guidance turned off
    (--exemplars 0); excluded by the user (or never embedded); no clearly better face of anyone
    in another photo; its person, set by the user, has no clearly better face; no person
    verified (too far, two about as near, seen once, or the strict gate of a face with detail)."""
    if k == 0:
        return "guidance_off"
    if p.person is None:
        return "excluded"
    if not p.candidates:
        return "no_better_photo"
    return "confirmed" if p.confirmed else "not_verified"
