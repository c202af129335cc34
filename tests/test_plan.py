"""The plan's verification of a degraded face by the album's sharp faces seen at its resolution
(albumfix.plan with albumfix.people.verify), on a real index of synthetic face rows."""
from __future__ import annotations

import numpy as np

from albumfix.album.index import AlbumIndex, FaceRow
from albumfix.plan import build_plan, identity_views
from albumfix.settings import Settings
from albumfix.stages.context import NoProgress
from test_verify import _at_distance, _unit



def _quality(score: float, detail: float) -> dict:
    return {"interocular_px": 60.0, "sharpness": 1.0, "noise": 1.0, "blockiness": 0.0, "yaw_deg": 0.0,
            "landmark_spread": 1.0, "landmarks_ok": True, "landmark_problem": "", "score": score,
            "detail": detail}


def _row(face_id: str, embedding: np.ndarray, rng: np.random.Generator, sharp: bool,
         ladder: np.ndarray | None = None) -> FaceRow:
    landmarks = (rng.random((68, 2)) * 100).astype(np.float32)
    return FaceRow(face_id, f"photo-{face_id}", 0, (0.0, 0.0, 100.0, 100.0), 1.0, landmarks,
                   embedding.astype(np.float32), "dlib",
                   _quality(0.9, 0.5) if sharp else _quality(0.1, 0.05), ladder)


def _plan(tmp_path, with_ladders: bool, look_near: str | None = None, look_distance: float = 0.03,
          query_detail: float = 0.05):
    """Two people of three sharp faces each, mutually near, and one degraded face at about 0.111
    from A's faces and 0.120 from B's as embedded (too near to tell); A's faces seen at lower
    resolution lie at 0.04. look_near: give the degraded face a second look `look_distance` from
    the mean of that person's faces (None: no look); query_detail: the face's `edge_detail` (at
    the default it lacks detail)."""
    rng = np.random.default_rng(21)
    query = _unit(rng.normal(size=128))
    rows = [_row("q", query, rng, sharp=False)]
    rows[0].quality["detail"] = query_detail
    for person, distance, lowered in (("a", 0.11, 0.04), ("b", 0.112, 0.2)):
        centre = _at_distance(query, distance, rng)
        for k in range(3):
            spread = _at_distance(query, 1.0, rng)  # orthogonal to the query: its distance stays about the same
            ladder = np.stack([_at_distance(query, lowered, rng) for _ in range(3)])
            rows.append(_row(f"{person}{k}", _unit(centre + 0.1 * spread), rng, sharp=True,
                             ladder=ladder if with_ladders else None))
    looks = None
    if look_near:
        mean = _unit(np.mean([r.embedding for r in rows if r.face_id.startswith(look_near)], axis=0))
        looks = {"q": _at_distance(mean, look_distance, rng).astype(np.float32)}
    with AlbumIndex(tmp_path / f"i{with_ladders}{look_near}{look_distance}{query_detail}.sqlite") as ix:
        for r in rows:
            ix.store_analysis(r.content_hash, "k", (100, 100), "ok", "", [r])
        return build_plan(ix, ix.faces(), Settings(), NoProgress(), looks=looks)


def test_a_degraded_face_is_verified_by_the_sharp_faces_seen_at_its_resolution(tmp_path):
    without = _plan(tmp_path, with_ladders=False).faces["q"]
    assert without.action == "restore" and not without.verified and without.exemplars == []
    assert "about as near" in without.verify_reason
    plan = _plan(tmp_path, with_ladders=True)
    face = plan.faces["q"]
    people = {f.row.face_id: f.person for f in plan.faces.values()}
    assert face.verified and face.person == people["a0"] == people["a1"] != people["b0"]
    assert face.exemplars and all(c.face_id.startswith("a") for c in face.exemplars)
    assert face.exemplars[0].identity_distance < 0.05  # measured at the nearest view


def test_a_face_no_person_verifies_asks_for_a_second_look_and_is_verified_by_it(tmp_path):
    first = _plan(tmp_path, with_ladders=False).faces["q"]
    assert first.unguided == "not_verified" and first.wants_look and not first.seen_again
    for person in ("a", "b"):  # the look decides, whichever person it is near
        plan = _plan(tmp_path, with_ladders=False, look_near=person)
        face = plan.faces["q"]
        assert face.verified and face.seen_again and not face.wants_look
        assert face.person == plan.faces[f"{person}0"].person and "second look" in face.reason
        assert face.exemplars and all(c.face_id.startswith(person) for c in face.exemplars)
        assert np.array_equal(face.query, face.look)  # identity tests compare the look
    far = _plan(tmp_path, with_ladders=False, look_near="a", look_distance=0.08).faces["q"]
    assert not far.verified and "> gate 0.07" in far.verify_reason and "second look" in far.verify_reason
    # the people offered to confirm are ranked by the look, nearer its person than the damaged face
    assert far.candidates[0].person == first.candidates[0].person == _plan(tmp_path, False).faces["a0"].person
    assert far.candidates[0].distance < first.candidates[0].distance - 0.01
    sharp = _plan(tmp_path, with_ladders=True, look_near="b").faces["q"]
    assert sharp.verified and not sharp.seen_again  # its own embedding verified it: the look is not used
    assert all(c.face_id.startswith("a") for c in sharp.exemplars)


def test_a_face_to_restore_that_keeps_detail_is_verified_at_the_sharp_gate(tmp_path):
    """A damaged face whose damage leaves detail (0.3: not degraded, still far below its
    witnesses') that grouping leaves alone is verified too, but only within the grouping distance."""
    seen_near = _plan(tmp_path, with_ladders=True, query_detail=0.3).faces["q"]  # A's views at 0.04
    assert seen_near.action == "restore" and seen_near.verified and not seen_near.seen_again
    assert seen_near.exemplars and all(c.face_id.startswith("a") for c in seen_near.exemplars)
    far = _plan(tmp_path, with_ladders=False, query_detail=0.3).faces["q"]  # A at 0.111: passes 0.12, not 0.07
    assert not far.verified and not far.exemplars and "> gate 0.07" in far.verify_reason
    assert not far.wants_look  # a face with detail is not looked at again


def test_identity_views_are_the_embedding_then_the_ladder():
    rng = np.random.default_rng(3)
    ladder = np.stack([_unit(rng.normal(size=128)) for _ in range(3)])
    row = _row("x", _unit(rng.normal(size=128)), rng, sharp=True, ladder=ladder)
    views = identity_views(row)
    assert views.shape == (4, 128) and np.array_equal(views[0], row.embedding) and np.allclose(views[1:], ladder)
    row.ladder = None
    assert identity_views(row).shape == (1, 128)
