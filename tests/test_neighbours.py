"""Nearest faces at archive scale (albumfix.people.neighbours) and the margin rule computed on a
query's candidate people only (albumfix.people.verify): the same decisions as comparing every
query with every face."""
from __future__ import annotations

import numpy as np
import pytest

from albumfix.people import neighbours, verify
from albumfix.people.verify import CALIBRATIONS, verify_people


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _clustered(rng: np.random.Generator, groups: int, size: int, spread: float) -> np.ndarray:
    centres = _unit(rng.normal(size=(groups, 64)))
    return _unit(np.repeat(centres, size, axis=0) + rng.normal(scale=spread, size=(groups * size, 64)))


def test_exact_search_returns_the_true_nearest_and_pads_when_k_exceeds_the_base():
    rng = np.random.default_rng(0)
    base, queries = _unit(rng.normal(size=(50, 16))), _unit(rng.normal(size=(7, 16)))
    distance, index = neighbours.nearest(base, queries, 60)
    truth = 1.0 - queries @ base.T
    assert np.array_equal(index[:, :50], np.argsort(truth, axis=1, kind="stable"))
    assert np.allclose(distance[:, :50], np.sort(truth, axis=1), atol=1e-5)
    assert np.all(index[:, 50:] == -1) and np.all(np.isinf(distance[:, 50:]))


def test_the_inverted_file_index_finds_nearly_all_true_neighbours_and_is_repeatable(monkeypatch):
    rng = np.random.default_rng(1)
    base = _clustered(rng, 400, 10, 0.03)
    queries = base[::7]
    exact_d, exact_i = neighbours.nearest(base, queries, 10)
    monkeypatch.setattr(neighbours, "EXACT_LIMIT", 1000)
    approx_d, approx_i = neighbours.nearest(base, queries, 10)
    again_d, again_i = neighbours.nearest(base, queries, 10)
    assert np.array_equal(approx_i, again_i) and np.array_equal(approx_d, again_d)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_i, exact_i)])
    assert recall >= 0.97, recall
    found = approx_i >= 0
    assert np.allclose(approx_d[found], (1.0 - np.einsum("qkd,qd->qk", base[approx_i], queries))[found], atol=1e-5)


def _reference(queries, q_photos, views, f_photos, f_people, allowed, cal):
    """The rule with every query compared with every face: (person, distance, runner-up) each."""
    people = sorted(set(f_people))
    out = []
    for i, q in enumerate(queries):
        per = []
        for person in people:
            d = sorted(float((1.0 - views[f] @ q).min()) for f in range(len(f_people))
                       if f_people[f] == person and f_photos[f] != q_photos[i] and allowed[i, f])[:cal.nearest]
            seen = sum(1 for f in range(len(f_people)) if f_people[f] == person and f_photos[f] != q_photos[i])
            per.append((np.mean(d) if d else np.inf, person, len(d), seen))
        per.sort(key=lambda t: (t[0], people.index(t[1])))
        (best, person, used, seen), second = per[0], per[1][0] if len(per) > 1 else np.inf
        ratio = cal.lone_ratio if used == 1 else cal.ratio
        ok = (np.isfinite(best) and seen >= cal.min_faces and best <= cal.gate
              and second - best >= cal.margin and second >= ratio * best)
        out.append((person if ok else None, best, second))
    return out


def _album(rng: np.random.Generator):
    """60 families of 8 people with 5 faces each (2 views a face), and 300 damaged queries of
    them: near people crowd each query, as in a large family archive."""
    families, members, faces = 60, 8, 5
    family = np.repeat(_unit(rng.normal(size=(families, 128))), members, axis=0)
    centres = _unit(family + rng.normal(scale=0.02, size=family.shape))
    views = _unit(np.repeat(centres, faces, axis=0)[:, None, :]
                  + rng.normal(scale=0.025, size=(len(centres) * faces, 2, 128)))
    people = [f"P{i:03d}" for i in range(len(centres)) for _ in range(faces)]
    photos = [f"photo{i}" for i in range(len(people))]
    owners = rng.integers(0, len(centres), 300)
    queries = _unit(centres[owners] + rng.normal(scale=0.03, size=(300, 128)))
    q_photos = [photos[o * faces] for o in owners]  # each query shares a photo with one of its person's faces
    allowed = rng.random((300, len(people))) < 0.9
    return queries, q_photos, views, photos, people, allowed


def _outcomes(found):
    return [(v.person, v.distance, v.runner_up) for v in found]


def _assert_same(found, truth):
    for (person, best, second), (t_person, t_best, t_second) in zip(_outcomes(found), truth):
        assert person == t_person
        assert best == pytest.approx(t_best, abs=1e-9)
        assert second == pytest.approx(t_second, abs=1e-9)


@pytest.mark.parametrize("first_views", [64, 6])
def test_comparing_only_candidate_people_gives_the_decisions_of_comparing_everyone(monkeypatch, first_views):
    """Queries whose runner-up may lie beyond the first search are searched again, wider."""
    rng = np.random.default_rng(2)
    queries, q_photos, views, photos, people, allowed = _album(rng)
    monkeypatch.setattr(verify, "CANDIDATE_VIEWS", first_views)
    assert len(people) * 2 > verify.CANDIDATE_VIEWS  # the bounded path is the one tested
    found = verify_people(queries, q_photos, views, photos, people, allowed=lambda q, f: allowed[q, f])
    truth = _reference(queries, q_photos, views, photos, people, allowed, CALIBRATIONS["dlib"])
    accepted = sum(1 for person, _, _ in truth if person is not None)
    assert 30 <= accepted <= 270, accepted  # both outcomes occur
    _assert_same(found, truth)


def test_a_capped_candidate_search_refuses_rather_than_accepts_a_wrong_person(monkeypatch):
    rng = np.random.default_rng(3)
    queries, q_photos, views, photos, people, allowed = _album(rng)
    truth = _reference(queries, q_photos, views, photos, people, allowed, CALIBRATIONS["dlib"])
    monkeypatch.setattr(verify, "CANDIDATE_VIEWS", 6)  # the runner-up is often outside this
    monkeypatch.setattr(verify, "MAX_CANDIDATE_VIEWS", 6)
    found = verify_people(queries, q_photos, views, photos, people, allowed=lambda q, f: allowed[q, f])
    capped = [v.person for v in found]
    assert all(p is None or p == t for p, (t, _, _) in zip(capped, truth))
    assert sum(p is None for p in capped) > sum(t is None for t, _, _ in truth)  # some refused by the bound


def test_an_album_without_witnesses_verifies_nobody():
    rng = np.random.default_rng(4)
    queries, q_photos, views, photos, people, allowed = _album(rng)
    found = verify_people(queries[:3], q_photos[:3], views, photos, people, witnesses=np.zeros(len(people), bool))
    assert [v.person for v in found] == [None] * 3
    assert all("no clearly better face" in v.reason and not v.candidates for v in found)
