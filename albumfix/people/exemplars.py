"""Choosing exemplars: which photo of the same person guides the restoration of a degraded face.

Landmarks are 68-point iBUG (x, y) arrays. Both faces must be given in one kind of frame (each in
its own aligned crop, or each in its own photo): the affine fit absorbs any position, scale,
rotation and shear between the two, so only the *shape* difference remains. Residuals are
measured in the LQ face's frame and divided by the LQ face size (root-mean-square distance of
its 68 landmarks from their centroid), so distances are unit-free and comparable across faces;
ranking exemplars of one LQ face is unaffected by that normalisation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from albumfix.people.cluster import calibration


@dataclass(frozen=True)
class LandmarkGroup:
    """Landmarks fitted together: indices into the 68 points and the group's weight."""

    name: str
    indices: tuple[int, ...]
    weight: float


DEFAULT_GROUPS: tuple[LandmarkGroup, ...] = (
    LandmarkGroup("brows_eyes", tuple(range(17, 27)) + tuple(range(36, 48)), 1.01),
    LandmarkGroup("mouth", tuple(range(48, 68)), 1.49),
)
"""The published ASFFNet selection rule (ASFFNET.md section 4); nose and jaw unused."""


@dataclass(frozen=True)
class ExemplarFace:
    """A face as seen by exemplar selection.

    face_id, photo_id: as in grouping; embedding: (D,) float32 unit identity vector, or (V, D)
    views of the face (`identity_distances`); landmarks: (68, 2) float32 (x, y) in the common
    frame (see module docstring).
    """

    face_id: str
    photo_id: str
    embedding: np.ndarray
    landmarks: np.ndarray


@dataclass(frozen=True)
class ExemplarChoice:
    """A chosen exemplar: landmark distance (unit-free) and cosine identity distance to the LQ."""

    face_id: str
    distance: float
    identity_distance: float


def face_size(landmarks: np.ndarray) -> float:
    """(68, 2) -> RMS distance of the landmarks from their centroid, in the landmarks' units."""
    pts = np.asarray(landmarks, dtype=np.float64)
    size = float(np.sqrt(np.mean(np.sum((pts - pts.mean(axis=0)) ** 2, axis=1))))
    if not np.isfinite(size) or size <= 0:
        raise ValueError("landmarks must be finite and not all equal")
    return size


def _as_batch(lq: np.ndarray, ex: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validates shapes: lq (68, 2), ex (68, 2) or (K, 68, 2) -> float64 lq, (K, 68, 2), single?"""
    lq = np.asarray(lq, dtype=np.float64)
    ex = np.asarray(ex, dtype=np.float64)
    single = ex.ndim == 2
    ex = ex[None] if single else ex
    if lq.shape != (68, 2) or ex.ndim != 3 or ex.shape[1:] != (68, 2):
        raise ValueError(f"expected lq (68, 2) and ex (68, 2) or (K, 68, 2), got {lq.shape}, {ex.shape}")
    return lq, ex, single


def group_landmark_distances(
    lq: np.ndarray, ex: np.ndarray, groups: Sequence[LandmarkGroup] = DEFAULT_GROUPS
) -> np.ndarray:
    """Per-group shape residuals: group g's own least-squares affine map exemplar -> LQ, then
    ||residual||_F / ``face_size(lq)`` (unweighted). lq: (68, 2); ex: (68, 2) or (K, 68, 2) ->
    (K, G) float64 (K = 1 for one exemplar)."""
    lq, ex, _ = _as_batch(lq, ex)
    scale = face_size(lq)
    out = np.zeros((ex.shape[0], len(groups)))
    for g, group in enumerate(groups):
        idx = np.asarray(group.indices)
        src = ex[:, idx] - ex[:, idx].mean(axis=1, keepdims=True)  # (K, n, 2)
        dst = lq[idx] - lq[idx].mean(axis=0)  # (n, 2)
        linear = np.linalg.pinv(src) @ dst  # (K, 2, 2); centring removes the translation
        residual = (src @ linear - dst) / scale
        out[:, g] = np.sqrt(np.sum(residual**2, axis=(1, 2)))
    return out


def affine_landmark_distance(
    lq: np.ndarray, ex: np.ndarray, groups: Sequence[LandmarkGroup] = DEFAULT_GROUPS
) -> float | np.ndarray:
    """The published grouped rule: sum over groups of weight * ||residual||_F
    (`group_landmark_distances`). lq: (68, 2); ex: (68, 2) -> float, or (K, 68, 2) -> (K,) float64.
    """
    total = group_landmark_distances(lq, ex, groups) @ np.array([g.weight for g in groups])
    return float(total[0]) if np.asarray(ex).ndim == 2 else total


def weighted_affine_distance(lq: np.ndarray, ex: np.ndarray, w: np.ndarray) -> float | np.ndarray:
    """The paper's per-landmark weighted rule: D = sum_i w_i ||A l~_i - l_i||^2.

    A = L_d W L~^T (L~ W L~^T)^-1 with L~ the exemplar landmarks plus a row of ones, W = diag(w);
    residuals divided by ``face_size(lq)`` (so D is in squared face sizes).
    lq: (68, 2); ex: (68, 2) -> float or (K, 68, 2) -> (K,); w: (68,) non-negative weights.
    """
    lq, ex, single = _as_batch(lq, ex)
    w = np.asarray(w, dtype=np.float64)
    if w.shape != (68,) or np.any(w < 0):
        raise ValueError("w must be (68,) and non-negative")
    ex_h = np.concatenate([ex, np.ones(ex.shape[:2] + (1,))], axis=2).transpose(0, 2, 1)  # (K, 3, 68)
    gram = np.einsum("kin,n,kjn->kij", ex_h, w, ex_h)  # L~ W L~^T, (K, 3, 3)
    cross = np.einsum("ni,n,kjn->kij", lq, w, ex_h)  # L_d W L~^T, (K, 2, 3)
    affine = cross @ np.linalg.pinv(gram, hermitian=True)  # (K, 2, 3)
    residual = (np.einsum("kij,kjn->kni", affine, ex_h) - lq) / face_size(lq)  # (K, 68, 2)
    dist = np.einsum("n,kni->k", w, residual**2)
    return float(dist[0]) if single else dist


def identity_distances(query: np.ndarray, candidates: Sequence[np.ndarray]) -> np.ndarray:
    """Cosine distances of (D,) `query` to each candidate, (D,) or (V, D) views of one face (its
    nearest view counts) -> (K,) float64; row-wise sums, not a matrix product, so each
    candidate's value does not depend on its position."""
    q = np.asarray(query, dtype=np.float64)
    out = np.empty(len(candidates))
    for k, c in enumerate(candidates):
        views = np.atleast_2d(np.asarray(c, dtype=np.float64))
        out[k] = np.min(1.0 - np.sum(views * q, axis=1) / np.sqrt(np.sum(views**2, axis=1) * np.sum(q**2)))
    return out


def choose_exemplars(
    lq_face: ExemplarFace,
    candidates: Sequence[ExemplarFace],
    k: int = 1,
    identity_gate: float | None = None,
    space: str = "dlib",
    groups: Sequence[LandmarkGroup] = DEFAULT_GROUPS,
) -> list[ExemplarChoice]:
    """Picks up to k exemplars for an LQ face from its person's eligible faces.

    Candidates in the LQ face's own photo are never used, nor those farther than identity_gate
    (cosine distance of the embeddings; default: the space's calibrated exemplar gate).
    The rest are ranked by ``affine_landmark_distance``; ties by identity distance, then face_id.
    Returns [] when no candidate qualifies.
    """
    gate = calibration(space).exemplar_distance if identity_gate is None else identity_gate
    pool = [c for c in candidates if c.photo_id != lq_face.photo_id and c.face_id != lq_face.face_id]
    if not pool or k < 1:
        return []
    identity = identity_distances(lq_face.embedding, [c.embedding for c in pool])
    ok = np.flatnonzero(identity <= gate)
    if ok.size == 0:
        return []
    shape = affine_landmark_distance(lq_face.landmarks, np.stack([pool[i].landmarks for i in ok]), groups)
    ranked = sorted(zip(shape.tolist(), identity[ok].tolist(), ok.tolist()),
                    key=lambda t: (t[0], t[1], pool[t[2]].face_id))
    return [ExemplarChoice(pool[i].face_id, d, idd) for d, idd, i in ranked[:k]]
