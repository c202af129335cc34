"""Fusing the restorations of one face guided by K exemplars (`--exemplars K`).

The network takes one exemplar. With K exemplars of the person, the face is restored K times
(once per exemplar) and the K outputs are blended per facial region, each region preferring the
exemplar whose shape matches the face there best (as DMDNet matches each component to its best
reference): for region g (the landmark groups of exemplar selection: brows and eyes, mouth) the
weight of exemplar k is

    w[k, g] = softmax_k( -d[k, g] / SHAPE_TEMPERATURE  -  identity[k] / IDENTITY_TEMPERATURE )

with d[k, g] the group's affine shape residual (`group_landmark_distances`, unit-free) and
identity[k] the cosine identity distance of exemplar k to the face (a surer exemplar counts
more). Each region's weights are spread over the crop by a Gaussian around the region's
landmarks; the rest of the face takes the mean of the region weights. K = 1 returns the single
output unchanged.
"""
from __future__ import annotations

import numpy as np

from albumfix.people.exemplars import DEFAULT_GROUPS, group_landmark_distances

SHAPE_TEMPERATURE = 0.1  # a group residual 0.1 larger (in face sizes) weighs e times less
IDENTITY_TEMPERATURE = 0.05  # the same for 0.05 of cosine identity distance
REGION_SIGMA = 0.10  # spread of a region's weights around its landmarks, fraction of the crop side


def region_maps(crop_landmarks: np.ndarray, size: int) -> np.ndarray:
    """(68, 2) crop px of the face -> (G, S, S) float32 in [0, 1]: for each landmark group, a
    Gaussian of the distance to the nearest of its landmarks (sigma REGION_SIGMA x S)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    sigma = REGION_SIGMA * size
    maps = []
    for group in DEFAULT_GROUPS:
        pts = np.asarray(crop_landmarks, np.float32)[list(group.indices)]
        d2 = np.min((xx[..., None] - pts[:, 0]) ** 2 + (yy[..., None] - pts[:, 1]) ** 2, axis=-1)
        maps.append(np.exp(-d2 / (2 * sigma * sigma)))
    return np.stack(maps)


def fusion_weights(lq_landmarks: np.ndarray, exemplar_landmarks: np.ndarray, identity: np.ndarray,
                   size: int) -> np.ndarray:
    """Per-pixel weights of K restorations (module docstring).

    lq_landmarks: (68, 2) crop px of the face; exemplar_landmarks: (K, 68, 2) crop px of each
    exemplar in its own crop; identity: (K,) cosine identity distances to the face.
    Returns (K, S, S) float32, summing to 1 over K at every pixel."""
    shape = group_landmark_distances(lq_landmarks, exemplar_landmarks)  # (K, G)
    logits = -shape / SHAPE_TEMPERATURE - np.asarray(identity, np.float64)[:, None] / IDENTITY_TEMPERATURE
    logits -= logits.max(axis=0, keepdims=True)
    per_group = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)  # (K, G)
    maps = region_maps(lq_landmarks, size)  # (G, S, S)
    cover = maps.sum(axis=0)  # (S, S)
    rest = np.clip(1.0 - cover, 0.0, None)
    weights = np.einsum("kg,gij->kij", per_group, maps) + per_group.mean(axis=1)[:, None, None] * rest
    return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)


def fuse_restorations(images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(K, S, S, 3) uint8 restorations and (K, S, S) weights -> (S, S, 3) uint8 blend."""
    if len(images) == 1:
        return images[0]
    blended = np.einsum("kij,kijc->ijc", weights.astype(np.float32), images.astype(np.float32))
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
