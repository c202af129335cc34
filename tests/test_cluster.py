"""Tests for albumfix.people.cluster: average linkage, cannot-link, overrides, incremental use."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

from albumfix.people.cluster import (
    CALIBRATIONS,
    FaceRecord,
    Grouping,
    Overrides,
    Person,
    assign_new,
    calibration,
    group_faces,
)

D = 128


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _album(rng: np.random.Generator, sizes: list[int], spread: float = 0.15) -> tuple[list[FaceRecord], dict[str, int]]:
    """Faces of len(sizes) people, one face per photo; within-person cosine distance ~ spread^2."""
    centres = _unit(rng.normal(size=(len(sizes), D)))
    faces, truth = [], {}
    for person, size in enumerate(sizes):
        for j in range(size):
            emb = _unit(centres[person] + spread * _unit(rng.normal(size=D)))
            fid = f"f{person:02d}-{j:02d}"
            faces.append(FaceRecord(fid, f"photo-{person}-{j}", emb))
            truth[fid] = person
    return faces, truth


def _partition(labels: dict[str, str | None]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for fid, person in labels.items():
        if person is not None:
            groups.setdefault(person, set()).add(fid)
    return {frozenset(g) for g in groups.values()}


def _truth_partition(truth: dict[str, int]) -> set[frozenset[str]]:
    return _partition({fid: str(p) for fid, p in truth.items()})


def test_separated_people_are_recovered_and_named_by_smallest_face_id() -> None:
    faces, truth = _album(np.random.default_rng(0), [6, 4, 9, 2, 1])
    grouping = group_faces(faces)
    assert _partition(grouping.labels) == _truth_partition(truth)
    for person, fids in grouping.people().items():
        assert person == min(fids)


def test_grouping_does_not_depend_on_input_order() -> None:
    rng = np.random.default_rng(1)
    faces, _ = _album(rng, [5, 5, 5, 3], spread=0.3)
    reference = group_faces(faces, distance=0.12).labels
    for _ in range(3):
        shuffled = [faces[i] for i in rng.permutation(len(faces))]
        assert group_faces(shuffled, distance=0.12).labels == reference


def test_matches_scipy_average_linkage_on_cosine_distance() -> None:
    rng = np.random.default_rng(2)
    centres = _unit(rng.normal(size=(4, D)))
    emb = _unit(centres[rng.integers(0, 4, size=30)] + 0.7 * _unit(rng.normal(size=(30, D))))
    faces = [FaceRecord(f"f{i:02d}", f"p{i}", e) for i, e in enumerate(emb)]
    threshold = 0.3
    ref = fcluster(linkage(pdist(emb.astype(np.float64), "cosine"), "average"), threshold, "distance")
    expected = _partition({f"f{i:02d}": str(c) for i, c in enumerate(ref)})
    got = _partition(group_faces(faces, distance=threshold).labels)
    assert 1 < len(got) < len(faces)  # the threshold cuts the tree somewhere interesting
    assert got == expected


def test_faces_of_one_photo_are_never_one_person_and_the_closer_face_wins() -> None:
    rng = np.random.default_rng(3)
    centre = _unit(rng.normal(size=D))
    twin_a = _unit(centre + 0.05 * _unit(rng.normal(size=D)))
    twin_b = _unit(centre + 0.05 * _unit(rng.normal(size=D)))
    near_a = _unit(twin_a + 0.02 * _unit(rng.normal(size=D)))
    faces = [
        FaceRecord("a", "group-photo", twin_a),
        FaceRecord("b", "group-photo", twin_b),
        FaceRecord("c", "portrait", near_a),
    ]
    labels = group_faces(faces, distance=0.2).labels
    assert labels["a"] != labels["b"]
    assert labels["c"] == labels["a"]


def test_cannot_link_pair_splits_one_identity() -> None:
    faces, _ = _album(np.random.default_rng(4), [4])
    labels = group_faces(faces, overrides=Overrides(cannot_link={("f00-00", "f00-03")})).labels
    assert labels["f00-00"] != labels["f00-03"]
    assert len(set(labels.values())) == 2


def test_pinned_faces_win_and_unpinned_faces_follow_them() -> None:
    faces, _ = _album(np.random.default_rng(5), [5, 5])
    pins = {"f00-00": "grandma", "f01-00": "grandma", "f01-01": "uncle"}
    labels = group_faces(faces, overrides=Overrides(pinned=pins)).labels
    assert labels["f00-00"] == labels["f01-00"] == "grandma"  # a manual merge against the embeddings
    assert labels["f01-01"] == "uncle"  # two pinned people never merge
    assert {labels[f"f00-0{j}"] for j in range(1, 5)} == {"grandma"}
    assert {labels[f"f01-0{j}"] for j in range(2, 5)} <= {"grandma", "uncle"}


def test_excluded_faces_are_never_grouped() -> None:
    faces, _ = _album(np.random.default_rng(6), [4, 3])
    grouping = group_faces(faces, overrides=Overrides(excluded={"f00-01", "f01-02"}))
    assert grouping.labels["f00-01"] is None and grouping.labels["f01-02"] is None
    assert all("f00-01" not in fids and "f01-02" not in fids for fids in grouping.people().values())
    assert len(grouping.people()) == 2


def test_automatic_name_skips_an_id_taken_by_a_pinned_person() -> None:
    faces, _ = _album(np.random.default_rng(7), [3, 2])
    labels = group_faces(faces, overrides=Overrides(pinned={"f01-00": "f00-00"})).labels
    assert labels["f01-00"] == labels["f01-01"] == "f00-00"
    assert labels["f00-00"] == labels["f00-01"] == labels["f00-02"] == "f00-01"


def test_assign_new_joins_existing_people_or_starts_new_ones() -> None:
    faces, truth = _album(np.random.default_rng(8), [6, 6, 4])
    first = [f for f in faces if not f.face_id.endswith(("04", "05")) and truth[f.face_id] != 2]
    later = [f for f in faces if f not in first]
    people = [Person(pid, [f for f in first if f.face_id in fids])
              for pid, fids in group_faces(first).people().items()]
    labels = assign_new(people, later).labels
    assert set(labels) == {f.face_id for f in later}
    assert labels["f00-04"] == labels["f00-05"] == "f00-00"
    assert labels["f01-04"] == labels["f01-05"] == "f01-00"
    assert {labels[f"f02-0{j}"] for j in range(4)} == {"f02-00"}


def test_assign_new_respects_same_photo_and_overrides() -> None:
    faces, _ = _album(np.random.default_rng(9), [5])
    people = [Person("kid", faces[:4])]
    same_photo = FaceRecord("z-new", faces[0].photo_id, faces[4].embedding)
    other = FaceRecord("z-other", "elsewhere", faces[4].embedding)
    assert assign_new(people, [same_photo]).labels == {"z-new": "z-new"}
    assert assign_new(people, [other]).labels == {"z-other": "kid"}
    pinned = assign_new(people, [other], overrides=Overrides(pinned={"z-other": "stranger"})).labels
    assert pinned == {"z-other": "stranger"}
    split = assign_new(people, [other], overrides=Overrides(cannot_link={("f00-02", "z-other")})).labels
    assert split == {"z-other": "z-other"}
    excluded = assign_new(people, [other], overrides=Overrides(excluded={"z-other"})).labels
    assert excluded == {"z-other": None}


def test_empty_inputs_and_grouping_view() -> None:
    assert group_faces([]).labels == {}
    assert Grouping({"b": "p", "a": "p", "c": None}).people() == {"p": ["a", "b"]}


def test_calibration_table() -> None:
    assert set(CALIBRATIONS) == {"dlib", "arcface"}
    for cal in CALIBRATIONS.values():
        assert 0 < cal.exemplar_distance <= cal.group_distance < 1  # the exemplar gate is stricter
    with pytest.raises(ValueError, match="unknown embedding space"):
        calibration("facenet")


def test_rejects_zero_embedding() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        group_faces([FaceRecord("a", "p", np.zeros(D, np.float32)), FaceRecord("b", "q", _unit(np.ones(D)))])


def test_two_degraded_faces_are_never_grouped_but_each_may_join_reliable_faces():
    rng = np.random.default_rng(5)
    a, b = _unit(rng.normal(size=128)), _unit(rng.normal(size=128))
    near = lambda v, s: _unit(v + s * rng.normal(size=128))  # noqa: E731
    faces = [FaceRecord("d1", "p1", near(a, 0.01), degraded=True), FaceRecord("d2", "p2", near(a, 0.01), degraded=True)]
    assert group_faces([FaceRecord(f.face_id, f.photo_id, f.embedding) for f in faces]).labels["d2"] == "d1"
    labels = group_faces(faces).labels
    assert labels["d1"] != labels["d2"]  # alike, but damage makes different people look alike
    faces.append(FaceRecord("s1", "p3", near(a, 0.01)))
    faces.append(FaceRecord("s2", "p4", near(b, 0.05)))
    labels = group_faces(faces).labels
    assert labels["s1"] in (labels["d1"], labels["d2"]) and labels["d1"] != labels["d2"]


def _fragments(rng: np.random.Generator, count: int, apart: float, size: int = 3) -> list[FaceRecord]:
    """`count` tight fragments of `size` faces (one per photo) whose centres are all `apart`
    from each other in cosine distance (a regular polygon around one direction)."""
    u, e1, e2 = np.linalg.qr(rng.normal(size=(D, 3)))[0].T
    chord = 2 - 2 * np.cos(2 * np.pi / count)  # squared distance between neighbouring unit polygon corners
    s = np.sqrt(apart / (chord / 2 - apart))  # so that 1 - cos(centre_i, centre_j) = apart
    faces = []
    for k in range(count):
        angle = 2 * np.pi * k / count
        centre = _unit(u + s * (np.cos(angle) * e1 + np.sin(angle) * e2))
        for j in range(size):
            faces.append(FaceRecord(f"g{k}-{j}", f"photo-{k}-{j}", _unit(centre + 0.01 * _unit(rng.normal(size=D)))))
    return faces


def test_two_fragments_of_a_person_join_by_the_margin_rule(monkeypatch) -> None:
    faces = _fragments(np.random.default_rng(3), 2, apart=0.09)  # beyond the linkage threshold, within the margin's
    cal = calibration("dlib")
    assert cal.group_distance < 0.09 < cal.margin_distance
    assert len(group_faces(faces).people()) == 1
    monkeypatch.setitem(CALIBRATIONS, "dlib", type(cal)(**{**cal.__dict__, "margin_ratio": 0.0}))
    assert len(group_faces(faces).people()) == 2  # the linkage alone leaves them apart


def test_fragments_about_as_near_each_other_stay_apart() -> None:
    """Three fragments the same distance apart: each has a runner-up as near as its nearest."""
    faces = _fragments(np.random.default_rng(4), 3, apart=0.09)
    assert len(group_faces(faces).people()) == 3


def test_the_margin_rule_never_joins_a_fragment_holding_a_degraded_face() -> None:
    faces = _fragments(np.random.default_rng(3), 2, apart=0.09)
    faces[-1] = FaceRecord(faces[-1].face_id, faces[-1].photo_id, faces[-1].embedding, degraded=True)
    assert len(group_faces(faces).people()) == 2
