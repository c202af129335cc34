"""The album-wide margin rule that verifies a degraded face's person (albumfix.people.verify)."""
from __future__ import annotations

import numpy as np

from albumfix.people.verify import CALIBRATIONS, verify_people


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _at_distance(anchor: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector at exactly `cosine` distance from unit `anchor`."""
    other = rng.normal(size=anchor.shape)
    other = _unit(other - (other @ anchor) * anchor)
    c = 1.0 - cosine
    return c * anchor + np.sqrt(1.0 - c * c) * other


def _album(rng, d_a: float, d_b: float):
    """A query and two people of three faces each, the query at d_a from A's faces, d_b from B's."""
    query = _unit(rng.normal(size=128))
    faces = [_at_distance(query, d_a, rng) for _ in range(3)] + [_at_distance(query, d_b, rng) for _ in range(3)]
    return query, np.stack(faces), ["pa1", "pa2", "pa3", "pb1", "pb2", "pb3"], ["A"] * 3 + ["B"] * 3


def test_nearest_person_is_accepted_with_a_clear_margin():
    rng = np.random.default_rng(0)
    query, faces, photos, people = _album(rng, 0.09, 0.14)
    (v,) = verify_people(query[None], ["q"], faces, photos, people)
    assert v.person == "A" and abs(v.distance - 0.09) < 1e-9 and abs(v.runner_up - 0.14) < 1e-9


def test_two_people_about_as_near_are_refused():
    cal = CALIBRATIONS["dlib"]
    rng = np.random.default_rng(1)
    query, faces, photos, people = _album(rng, 0.09, 0.09 + cal.margin / 2)
    (v,) = verify_people(query[None], ["q"], faces, photos, people)
    assert v.person is None and "about as near" in v.reason


def test_a_margin_small_for_the_distance_fails_the_ratio_test():
    cal = CALIBRATIONS["dlib"]
    d_a = cal.gate - 0.005
    d_b = d_a * cal.ratio - 0.001  # just short of the ratio, though wider than the margin
    assert cal.ratio > 1 and d_b - d_a > cal.margin
    rng = np.random.default_rng(7)
    query, faces, photos, people = _album(rng, d_a, d_b)
    (v,) = verify_people(query[None], ["q"], faces, photos, people)
    assert v.person is None and "ratio" in v.reason
    query, faces, photos, people = _album(rng, d_a, d_a * cal.ratio + 0.002)
    (v,) = verify_people(query[None], ["q"], faces, photos, people)
    assert v.person == "A"


def test_a_person_beyond_the_gate_is_refused_even_when_alone():
    cal = CALIBRATIONS["dlib"]
    rng = np.random.default_rng(2)
    query = _unit(rng.normal(size=128))
    faces = np.stack([_at_distance(query, cal.gate + 0.01, rng) for _ in range(2)])
    (v,) = verify_people(query[None], ["q"], faces, ["p1", "p2"], ["A", "A"])
    assert v.person is None and "gate" in v.reason
    faces = np.stack([_at_distance(query, cal.gate - 0.01, rng) for _ in range(2)])
    (v,) = verify_people(query[None], ["q"], faces, ["p1", "p2"], ["A", "A"])
    assert v.person == "A" and v.runner_up == float("inf")


def test_faces_of_the_query_photo_never_count():
    rng = np.random.default_rng(3)
    query, faces, photos, people = _album(rng, 0.05, 0.10)
    photos = ["q"] * 3 + photos[3:]  # A's faces all sit in the query's own photo
    (v,) = verify_people(query[None], ["q"], faces, photos, people)
    assert v.person == "B"
    (v,) = verify_people(query[None], ["q"], faces, ["q"] * 6, people)
    assert v.person is None and "outside this photo" in v.reason
    allowed = np.array([[True, True, True, False, False, False]])  # only A may be compared with
    (v,) = verify_people(query[None], ["q"], faces, photos, people, allowed=lambda q, f: allowed[q, f])
    assert v.person is None


def test_person_distance_is_the_mean_of_its_nearest_faces():
    cal = CALIBRATIONS["dlib"]
    rng = np.random.default_rng(4)
    query = _unit(rng.normal(size=128))
    near = [0.05, 0.06, 0.07]
    faces = np.stack([_at_distance(query, d, rng) for d in near + [0.5] * 4])
    (v,) = verify_people(query[None], ["q"], faces, [f"p{i}" for i in range(7)], ["A"] * 7)
    assert cal.nearest == 3 and abs(v.distance - np.mean(near)) < 1e-9


def test_a_person_seen_once_competes_but_is_never_accepted():
    rng = np.random.default_rng(6)
    query = _unit(rng.normal(size=128))
    faces = np.stack([_at_distance(query, 0.05, rng), _at_distance(query, 0.10, rng), _at_distance(query, 0.10, rng)])
    (v,) = verify_people(query[None], ["q"], faces, ["p1", "p2", "p3"], ["bystander", "B", "B"])
    assert v.person is None and "seen only 1" in v.reason


def test_a_person_counts_as_seen_by_all_its_faces_in_other_photos():
    """Seen twice though only one face is clearly better than the query: the person is no
    bystander, but a distance resting on one face must pass the stricter lone ratio."""
    cal = CALIBRATIONS["dlib"]
    rng = np.random.default_rng(12)
    query = _unit(rng.normal(size=128))
    d_a = 0.05
    allowed = np.array([[True, False, True, True]])  # A's second face is no better than the query

    def album(d_b: float):
        faces = np.stack([_at_distance(query, d, rng) for d in (d_a, 0.01, d_b, d_b)])
        return verify_people(query[None], ["q"], faces, ["p1", "p2", "p3", "p4"], ["A", "A", "B", "B"],
                             allowed=lambda q, f: allowed[q, f])[0]

    assert cal.lone_ratio > cal.ratio
    v = album(d_a * cal.lone_ratio + 0.002)
    assert v.person == "A" and abs(v.distance - d_a) < 1e-9
    v = album(d_a * cal.lone_ratio - 0.002)  # passes the usual ratio, not the lone one
    assert max(d_a * cal.ratio, d_a + cal.margin) < d_a * cal.lone_ratio - 0.002
    assert v.person is None and f"ratio {cal.lone_ratio:g}" in v.reason
    faces = np.stack([_at_distance(query, d_a, rng), _at_distance(query, 0.3, rng), _at_distance(query, 0.3, rng)])
    (v,) = verify_people(query[None], ["q"], faces, ["p1", "q", "p3"], ["A", "A", "B"])
    assert v.person is None and "seen only 1" in v.reason  # its other face sits in the query's photo


def test_a_face_counts_at_its_nearest_view():
    """A sharp face seen at lower resolutions (its resolution ladder) is compared with a damaged
    query at its nearest view: far as it is sharp, near as it would look damaged."""
    cal = CALIBRATIONS["dlib"]
    rng = np.random.default_rng(11)
    query, faces, photos, people = _album(rng, 0.11, 0.115)  # as embedded: two people about as near
    (v,) = verify_people(query[None], ["q"], faces, photos, people)
    assert v.person is None
    lowered = np.stack([_at_distance(query, 0.05, rng) for _ in range(3)]
                       + [_at_distance(query, 0.2, rng) for _ in range(3)])  # A's faces lowered are near
    views = np.stack([faces, lowered], axis=1)  # (6, 2, 128)
    (v,) = verify_people(query[None], ["q"], views, photos, people)
    assert v.person == "A" and abs(v.distance - 0.05) < 1e-9 and abs(v.runner_up - 0.115) < 1e-9
    assert v.runner_up - v.distance >= cal.margin and v.runner_up >= cal.ratio * v.distance
    single = verify_people(query[None], ["q"], faces[:, None], photos, people)
    assert single == verify_people(query[None], ["q"], faces, photos, people)
