"""Album context in verification (albumfix.people.context): cannot-link within a photo and chains
of verified faces, alone and through the real plan (albumfix.plan) on an index of synthetic rows."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from albumfix.album.index import AlbumIndex, FaceRow
from albumfix.people import context
from albumfix.people.context import chain_witnesses, photo_cannot_link, same_photo_conflicts
from albumfix.people.verify import verify_people
from albumfix.plan import build_plan
from albumfix.settings import Settings
from albumfix.stages.context import NoProgress
from test_plan import _quality
from test_verify import _at_distance, _unit

OFF = replace(context.CONTEXT, cannot_link=False, chain=False, passes=1)


def test_cannot_link_takes_the_people_of_the_reliable_faces_of_the_photo_but_its_own():
    photos = ["p1", "p1", "p1", "p2"]
    people = ["A", "B", None, "C"]
    reliable = [True, False, True, True]
    assert photo_cannot_link(["p1", "p2", "p3"], photos, people, reliable) == [{"A"}, {"C"}, set()]
    assert photo_cannot_link(["p1", "p2"], photos, people, reliable, queries=[0, 3]) == [set(), set()]


def test_faces_of_one_photo_accepted_as_one_person_are_all_in_conflict():
    assert same_photo_conflicts(["p1", "p1", "p1", "p2"], ["A", "A", "B", "A"]) == {0, 1}
    assert same_photo_conflicts(["p1", "p2"], ["A", "A"]) == set()


def test_a_chain_witness_is_verified_with_enough_more_detail_and_size():
    detail, iod = np.array([0.16, 0.16, 0.14, 0.16]), np.array([40.0, 40.0, 40.0, 20.0])
    verified = np.array([True, False, True, True])
    m = chain_witnesses(detail[None], iod[None], verified[None], np.array([[0.1], [0.0]]), np.array([[40.0], [40.0]]),
                        ratio=1.5)
    assert m.tolist() == [[True, False, False, False], [True, False, True, False]]


def test_an_excluded_person_neither_wins_nor_competes():
    rng = np.random.default_rng(3)
    query = _unit(rng.normal(size=128))
    faces = np.stack([_at_distance(query, d, rng) for d in (0.08, 0.08, 0.085, 0.085, 0.2, 0.2)])
    photos, people = ["a1", "a2", "b1", "b2", "c1", "c2"], ["A", "A", "B", "B", "C", "C"]
    (v,) = verify_people(query[None], ["q"], faces, photos, people)
    assert v.person is None and "about as near" in v.reason
    (v,) = verify_people(query[None], ["q"], faces, photos, people, excluded=[{"A"}])
    assert v.person == "B" and abs(v.runner_up - 0.2) < 1e-9
    assert [c.person for c in v.candidates] == ["B", "C"]
    (v,) = verify_people(query[None], ["q"], faces, photos, people, excluded=[{"B"}])
    assert v.person == "A"


def _row(face_id: str, photo: str, embedding: np.ndarray, rng: np.random.Generator, detail: float,
         idx: int = 0) -> FaceRow:
    landmarks = (rng.random((68, 2)) * 100).astype(np.float32)
    return FaceRow(face_id, photo, idx, (0.0, 0.0, 100.0, 100.0), 1.0, landmarks, embedding.astype(np.float32),
                   "dlib", _quality(0.9 if detail >= 0.25 else 0.1, detail), None)


def _build(tmp_path, rows: list[FaceRow], rules, name: str):
    with AlbumIndex(tmp_path / f"{name}.sqlite") as ix:
        for photo in sorted({r.content_hash for r in rows}):
            ix.store_analysis(photo, "k", (100, 100), "ok", "", [r for r in rows if r.content_hash == photo])
        saved = context.CONTEXT
        context.CONTEXT = rules
        try:
            return build_plan(ix, ix.faces(), Settings(), NoProgress())
        finally:
            context.CONTEXT = saved


def _person(rows: list[FaceRow], rng, query: np.ndarray, name: str, distance: float, n: int = 3,
            photo_of_first: str | None = None) -> None:
    """n sharp faces of a person, each in its own photo (the first in `photo_of_first` when
    given), about `distance` from the query and within grouping distance of each other."""
    centre = _at_distance(query, distance, rng)
    for k in range(n):
        spread = _at_distance(query, 1.0, rng)  # orthogonal to the query: its distance stays about the same
        photo = photo_of_first if (k == 0 and photo_of_first) else f"photo-{name}{k}"
        rows.append(_row(f"{name}{k}", photo, _unit(centre + 0.08 * spread), rng, detail=0.5,
                         idx=1 if k == 0 and photo_of_first else 0))


def _cannot_link_album():
    """A degraded face q about as near A (0.09) as B (0.095); A's sharp face a0 sits in q's photo."""
    rng = np.random.default_rng(5)
    query = _unit(rng.normal(size=128))
    rows = [_row("q", "group-photo", query, rng, detail=0.05)]
    _person(rows, rng, query, "a", 0.09, photo_of_first="group-photo")
    _person(rows, rng, query, "b", 0.095)
    _person(rows, rng, query, "c", 0.25)
    return rows


def test_cannot_link_verifies_a_face_whose_rival_is_in_its_own_photo(tmp_path):
    rows = _cannot_link_album()
    before = _build(tmp_path, rows, OFF, "off")
    assert not before.faces["q"].verified and before.faces["q"].exemplars == []
    assert "about as near" in before.faces["q"].verify_reason
    plan = _build(tmp_path, rows, replace(OFF, cannot_link=True), "on")
    face, people = plan.faces["q"], {f.row.face_id: f.person for f in plan.faces.values()}
    assert face.verified and face.person == people["b0"] != people["a0"]
    assert face.exemplars and all(c.face_id.startswith("b") for c in face.exemplars)


def test_cannot_link_ignores_a_degraded_face_of_the_photo(tmp_path):
    """The face in the query's photo is degraded too: its group person is no evidence."""
    rows = _cannot_link_album()
    a0 = next(r for r in rows if r.face_id == "a0")
    a0.quality = _quality(0.1, 0.05)
    plan = _build(tmp_path, rows, replace(OFF, cannot_link=True), "on")
    assert not plan.faces["q"].verified


def test_two_faces_of_one_photo_verified_as_one_person_are_both_refused(tmp_path):
    rng = np.random.default_rng(8)
    anchor = _unit(rng.normal(size=128))
    q1, q2 = _at_distance(anchor, 0.02, rng), _at_distance(anchor, 0.02, rng)
    rows = [_row("q1", "pair", q1, rng, detail=0.05), _row("q2", "pair", q2, rng, detail=0.05, idx=1)]
    _person(rows, rng, anchor, "a", 0.08)  # too far to group either face with A, near enough to verify
    _person(rows, rng, anchor, "z", 0.3)
    before = _build(tmp_path, rows, OFF, "off")
    assert before.faces["q1"].verified and before.faces["q2"].verified  # both A: one of them is wrong
    plan = _build(tmp_path, rows, replace(OFF, cannot_link=True, passes=3), "on")
    for fid in ("q1", "q2"):
        assert not plan.faces[fid].verified and plan.faces[fid].exemplars == []
        assert "same person" in plan.faces[fid].verify_reason


def _chain_album():
    """A moderately damaged face m clearly A (0.06 against B's 0.2), and a worse face w of the same
    person, 0.02 from m, but about as near A's sharp faces (0.10) as B's (0.11)."""
    rng = np.random.default_rng(11)
    w = _unit(rng.normal(size=128))
    m = _at_distance(w, 0.02, rng)
    rows = [_row("w", "photo-w", w, rng, detail=0.02), _row("m", "photo-m", m, rng, detail=0.15)]
    for name, to_w, to_m in (("a", 0.10, 0.06), ("b", 0.11, 0.20)):
        centre = _near_both(w, m, to_w, to_m, rng)
        for k in range(3):  # a person's faces within grouping distance of each other
            spread = rng.normal(size=w.shape)
            spread -= np.stack([w, m]).T @ np.linalg.lstsq(np.stack([w, m]).T, spread, rcond=None)[0]
            rows.append(_row(f"{name}{k}", f"photo-{name}{k}", _unit(centre + 0.08 * _unit(spread)), rng, detail=0.5))
    return rows


def _near_both(w: np.ndarray, m: np.ndarray, to_w: float, to_m: float, rng) -> np.ndarray:
    """A unit vector at cosine distance about to_w from w and to_m from m (m near w)."""
    basis = np.stack([w, _unit(m - (m @ w) * w)])
    mw = np.array([m @ w, m @ basis[1]])
    cw = 1 - to_w
    y = ((1 - to_m) - cw * mw[0]) / mw[1]
    rest = max(0.0, 1 - cw * cw - y * y)
    other = rng.normal(size=w.shape)
    other -= basis.T @ (basis @ other)
    return cw * w + y * basis[1] + np.sqrt(rest) * _unit(other)


def test_the_chain_verifies_a_damaged_face_through_a_verified_better_one(tmp_path):
    rows = _chain_album()
    before = _build(tmp_path, rows, OFF, "off")
    assert before.faces["m"].verified and not before.faces["w"].verified
    plan = _build(tmp_path, rows, replace(OFF, chain=True, passes=3), "chain")
    people = {f.row.face_id: f.person for f in plan.faces.values()}
    assert plan.faces["w"].verified and people["w"] == people["m"] == people["a0"]
    assert plan.faces["w"].exemplars and all(c.face_id.startswith("a") for c in plan.faces["w"].exemplars)
    one_pass = _build(tmp_path, rows, replace(OFF, chain=True, passes=1), "one")
    assert not one_pass.faces["w"].verified  # the link needs m verified first


@pytest.mark.parametrize("ratio", [8.0])
def test_the_chain_needs_a_witness_with_enough_more_detail(tmp_path, ratio):
    plan = _build(tmp_path, _chain_album(), replace(OFF, chain=True, chain_detail_ratio=ratio, passes=3), "strict")
    assert not plan.faces["w"].verified
