"""Tests for albumfix.people.exemplars against direct least-squares reference computations."""
from __future__ import annotations

import numpy as np
import pytest

from albumfix.people.exemplars import (
    DEFAULT_GROUPS,
    ExemplarFace,
    LandmarkGroup,
    affine_landmark_distance,
    choose_exemplars,
    face_size,
    weighted_affine_distance,
)


def _face(rng: np.random.Generator) -> np.ndarray:
    """(68, 2) float64 landmark-like points in a 200 px box."""
    return rng.uniform(20.0, 220.0, size=(68, 2))


def _affine(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random well-conditioned affine image of (N, 2) points."""
    m = np.array([[1.3, 0.2], [-0.15, 0.8]]) + 0.05 * rng.normal(size=(2, 2))
    return points @ m.T + rng.uniform(-50, 50, size=2)


def _grouped_reference(lq: np.ndarray, ex: np.ndarray, groups: tuple[LandmarkGroup, ...]) -> float:
    """Per group: lstsq of [ex 1] A = lq, weight * Frobenius norm of the residual; / LQ size."""
    total = 0.0
    for g in groups:
        idx = list(g.indices)
        src = np.hstack([ex[idx], np.ones((len(idx), 1))])
        a, *_ = np.linalg.lstsq(src, lq[idx], rcond=None)
        total += g.weight * np.linalg.norm(src @ a - lq[idx])
    return total / face_size(lq)


def test_default_groups_are_the_published_rule() -> None:
    eyes, mouth = DEFAULT_GROUPS
    assert eyes.indices == tuple(range(17, 27)) + tuple(range(36, 48)) and eyes.weight == 1.01
    assert mouth.indices == tuple(range(48, 68)) and mouth.weight == 1.49


def test_exact_affine_image_has_zero_distance_and_noise_increases_it() -> None:
    rng = np.random.default_rng(0)
    lq = _face(rng)
    ex = _affine(lq, rng)
    assert affine_landmark_distance(lq, ex) == pytest.approx(0.0, abs=1e-9)
    assert weighted_affine_distance(lq, ex, np.ones(68)) == pytest.approx(0.0, abs=1e-12)
    noise = rng.normal(size=(68, 2))
    grouped = [affine_landmark_distance(lq, ex + s * noise) for s in (0.5, 1.0, 2.0)]
    weighted = [weighted_affine_distance(lq, ex + s * noise, np.ones(68)) for s in (0.5, 1.0, 2.0)]
    assert 0 < grouped[0] < grouped[1] < grouped[2]
    assert 0 < weighted[0] < weighted[1] < weighted[2]


def test_grouped_distance_matches_reference_and_batches() -> None:
    rng = np.random.default_rng(1)
    lq = _face(rng)
    ex = np.stack([_face(rng) for _ in range(5)])
    batched = affine_landmark_distance(lq, ex)
    assert batched.shape == (5,)
    for k in range(5):
        expected = _grouped_reference(lq, ex[k], DEFAULT_GROUPS)
        assert batched[k] == pytest.approx(expected, rel=1e-9)
        assert affine_landmark_distance(lq, ex[k]) == pytest.approx(expected, rel=1e-9)
    custom = (LandmarkGroup("jaw", tuple(range(17)), 2.0),)
    assert affine_landmark_distance(lq, ex[0], custom) == pytest.approx(
        _grouped_reference(lq, ex[0], custom), rel=1e-9
    )


def test_weighted_distance_matches_paper_formula_and_direct_least_squares() -> None:
    rng = np.random.default_rng(2)
    lq, ex = _face(rng), np.stack([_face(rng) for _ in range(3)])
    w = rng.uniform(0.0, 2.0, size=68)
    got = weighted_affine_distance(lq, ex, w)
    for k in range(3):
        ex_h = np.vstack([ex[k].T, np.ones(68)])  # L~, (3, 68)
        a = lq.T @ np.diag(w) @ ex_h.T @ np.linalg.inv(ex_h @ np.diag(w) @ ex_h.T)  # the paper
        paper = np.sum(w * np.sum((a @ ex_h - lq.T) ** 2, axis=0)) / face_size(lq) ** 2
        sw = np.sqrt(w)[:, None]  # direct: minimise sum w_i |A l~_i - l_i|^2
        sol, *_ = np.linalg.lstsq(sw * ex_h.T, sw * lq, rcond=None)
        direct = np.sum(w * np.sum((ex_h.T @ sol - lq) ** 2, axis=1)) / face_size(lq) ** 2
        assert got[k] == pytest.approx(paper, rel=1e-8)
        assert got[k] == pytest.approx(direct, rel=1e-8)


def test_zero_weights_ignore_landmarks_and_scale_is_normalised() -> None:
    rng = np.random.default_rng(3)
    lq = _face(rng)
    ex = _affine(lq, rng)
    ex[:17] += rng.normal(scale=10.0, size=(17, 2))  # jaw only
    w = np.ones(68)
    w[:17] = 0.0
    assert weighted_affine_distance(lq, ex, w) == pytest.approx(0.0, abs=1e-12)
    assert affine_landmark_distance(lq, ex) == pytest.approx(0.0, abs=1e-9)  # jaw unused
    ex[60] += 5.0
    d = affine_landmark_distance(lq, ex)
    assert affine_landmark_distance(3.0 * lq + 7.0, ex) == pytest.approx(d, rel=1e-9)
    assert affine_landmark_distance(lq, _affine(ex, rng)) == pytest.approx(d, rel=1e-6)


def test_shape_validation() -> None:
    with pytest.raises(ValueError, match="expected lq"):
        affine_landmark_distance(np.zeros((5, 2)), np.zeros((68, 2)))
    with pytest.raises(ValueError, match="non-negative"):
        weighted_affine_distance(np.ones((68, 2)), np.ones((68, 2)), -np.ones(68))


def _candidate(face_id: str, photo_id: str, emb: np.ndarray, landmarks: np.ndarray) -> ExemplarFace:
    return ExemplarFace(face_id, photo_id, (emb / np.linalg.norm(emb)).astype(np.float32),
                        landmarks.astype(np.float32))


def test_choose_exemplars_filters_ranks_and_breaks_ties() -> None:
    rng = np.random.default_rng(4)
    lq_lm = _face(rng)
    base = rng.normal(size=128)
    same = lambda: base + 0.1 * rng.normal(size=128) / np.sqrt(128)  # noqa: E731  identity distance ~0.005
    lq = _candidate("lq", "photo-1", base, lq_lm)
    noise = rng.normal(size=(68, 2))
    cands = [
        _candidate("same-photo", "photo-1", same(), _affine(lq_lm, rng)),  # perfect shape, wrong photo
        _candidate("stranger", "photo-2", rng.normal(size=128), _affine(lq_lm, rng)),  # fails the gate
        _candidate("far", "photo-3", same(), lq_lm + 4.0 * noise),
        _candidate("near", "photo-4", same(), lq_lm + 1.0 * noise),
        _candidate("mid", "photo-5", same(), lq_lm + 2.0 * noise),
    ]
    chosen = choose_exemplars(lq, cands, k=3)
    assert [c.face_id for c in chosen] == ["near", "mid", "far"]
    assert chosen[0].distance < chosen[1].distance < chosen[2].distance
    assert all(c.identity_distance < 0.05 for c in chosen)
    assert chosen[0].distance == pytest.approx(affine_landmark_distance(lq_lm, cands[3].landmarks), rel=1e-5)
    assert [c.face_id for c in choose_exemplars(lq, cands)] == ["near"]
    assert choose_exemplars(lq, cands[:2]) == []  # nothing eligible -> caller reports it
    assert [c.face_id for c in choose_exemplars(lq, cands[1:2], identity_gate=2.0)] == ["stranger"]

    emb = same()
    twins = [_candidate(fid, f"p-{fid}", emb, lq_lm + noise) for fid in ("b", "a", "c")]
    for order in ([0, 1, 2], [2, 1, 0], [1, 2, 0]):
        picked = choose_exemplars(lq, [twins[i] for i in order], k=3)
        assert [c.face_id for c in picked] == ["a", "b", "c"]


def test_a_gate_at_the_nearest_identity_distance_keeps_the_nearest_face() -> None:
    """The plan gates a verified face at its nearest candidate's distance plus a margin; with no
    margin the nearest must still pass (one formula for both, not a near-equal second one)."""
    from albumfix.people.exemplars import identity_distances

    rng = np.random.default_rng(9)
    lq_lm = _face(rng)
    lq = _candidate("lq", "photo-1", rng.normal(size=128), lq_lm)
    cands = [_candidate(f"c{k}", f"photo-{k + 2}", rng.normal(size=128), lq_lm + rng.normal(size=(68, 2)))
             for k in range(20)]
    distances = identity_distances(lq.embedding, [c.embedding for c in cands])
    nearest = int(np.argmin(distances))
    chosen = choose_exemplars(lq, cands, k=5, identity_gate=float(distances[nearest]))
    assert [c.face_id for c in chosen] == [cands[nearest].face_id]
    assert chosen[0].identity_distance == distances[nearest]


def test_a_candidate_given_as_views_counts_at_its_nearest_view() -> None:
    """Candidates may carry (V, D) views (a verified face compares with a sharp face's
    resolution ladder): the gate and the reported distance use the nearest view."""
    from albumfix.people.exemplars import identity_distances

    rng = np.random.default_rng(12)
    lq_lm = _face(rng)
    query = rng.normal(size=128)
    lq = _candidate("lq", "photo-1", query, lq_lm)
    far = rng.normal(size=128)
    near = query + 0.1 * rng.normal(size=128)
    plain = _candidate("a", "photo-2", far, lq_lm)
    viewed = _candidate("a", "photo-2", np.stack([far, near]), lq_lm)
    d_far, d_near = identity_distances(query, [far, near])
    assert d_near < 0.05 < d_far
    assert identity_distances(query, [np.stack([far, near]), far]).tolist() == [d_near, d_far]
    assert choose_exemplars(lq, [plain], identity_gate=0.05) == []
    (chosen,) = choose_exemplars(lq, [viewed], identity_gate=0.05)
    assert chosen.face_id == "a"
    assert chosen.identity_distance == identity_distances(lq.embedding, [viewed.embedding])[0]
    assert abs(chosen.identity_distance - d_near) < 1e-6
