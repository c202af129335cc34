"""Do no harm: every restored face is checked in its photo before it is kept.

`guard_face` pastes one restored face at a strength s (0 keeps the original face, 1 takes the
restoration whole) and keeps the first s, from the requested one down (`STRENGTH_STEPS`), where:
- s is at most the face's `detail_ceiling`: 1 up to an `edge_detail` (dimensionless) of
  DETAIL_CEILING[0], falling linearly to DETAIL_CEILING[2] at DETAIL_CEILING[1] and above;
- identity (cosine distance of unit embeddings by the analyser's embedder, at the face's own
  landmarks in the photo): guided, the pasted face is nearer the exemplars that guided it than
  the input was, by REFERENCE_GAIN at least; unguided, within SELF_DISTANCE of the input;
- sharpness (`albumfix.faces.quality.face_sharpness`) is at least MIN_SHARPNESS_RATIO x the input's.
None passing: the original face stays (strength 0). Returns the pixels (None: keep the original)
and a `GuardResult` recording the strength, the ceiling, both measures and why.
Calibrated on albums of training people by `benchmarks/calibrate_guard.py` (identity, sharpness)
and `benchmarks/calibrate_strength.py` (ceiling); the history is in docs/CALIBRATION.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np

STRENGTH_STEPS = (1.0, 0.6, 0.3)
SELF_DISTANCE = {"dlib": 0.035, "arcface": 0.3}
# how much nearer its references a guided face must come (arcface: scaled from dlib by 8, the
# ratio of the two spaces' self distances; not measured, no ArcFace model offline)
REFERENCE_GAIN = {"dlib": 0.003, "arcface": 0.024}
MIN_SHARPNESS_RATIO = 0.8
# (detail where the ceiling starts to fall, detail where it reaches its floor, the floor)
DETAIL_CEILING = (0.12, 0.16, 0.60)


def detail_ceiling(detail: float, rule: tuple[float, float, float] = DETAIL_CEILING) -> float:
    """The highest strength (0-1) a face of this `edge_detail` (dimensionless) may be pasted at:
    1 up to rule[0], linear down to the floor rule[2] at rule[1], then flat; rounded to 0.01."""
    start, end, floor = rule
    return round(float(np.clip(1.0 + (floor - 1.0) * (detail - start) / (end - start), floor, 1.0)), 2)


@dataclass
class GuardResult:
    """The guard's decision for one face. strength: what was kept (0: the original face);
    reason: "" when the restoration passed at the requested strength, else why it was lowered;
    ceiling: the highest strength the face's own detail allowed (`detail_ceiling`);
    identity_input / identity_output: cosine distance to the references (or, without references,
    0 and the distance to the input); sharpness_input / sharpness_output: band sharpness."""

    strength: float
    reason: str
    ceiling: float
    identity_input: float
    identity_output: float
    sharpness_input: float
    sharpness_output: float

    def to_json(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _cosine(a: np.ndarray, refs: np.ndarray) -> float:
    """Mean cosine distance of unit vector a (D,) to unit rows refs (K, D)."""
    return float(np.mean(1.0 - refs @ a))


def guard_face(
    paste: Callable[[float], np.ndarray],
    to_rgb: Callable[[np.ndarray], np.ndarray],
    embed: Callable[[np.ndarray], np.ndarray],
    original_rgb: np.ndarray,
    landmarks: np.ndarray,
    input_embedding: np.ndarray,
    references: Sequence[np.ndarray],
    strength: float,
    space: str = "dlib",
    min_sharpness_ratio: float = MIN_SHARPNESS_RATIO,
    final: Callable[[float], np.ndarray] | None = None,
    detail: float = 0.0,
) -> tuple[np.ndarray | None, GuardResult]:
    """Paste one face at the highest safe strength.

    paste(s): the photo pixels with the face pasted at strength s; to_rgb: those pixels as
    (H, W, 3) uint8 RGB; embed(rgb): (D,) unit embedding of the face at its landmarks in rgb;
    original_rgb: the photo before pasting (H, W, 3) uint8; landmarks: (68, 2) photo px;
    input_embedding: the face's stored (D,) unit embedding; references: (D,) unit embeddings of
    the person's faces that guided it ([] when unguided); final(s): the pixels to return for the
    strength chosen (None: paste(s)), e.g. with the photo's own fine detail added back, which
    must not count as the restorer's sharpness; detail: the face's stored `edge_detail`, which
    caps the strength (`detail_ceiling`). Returns (pixels or None to keep the original,
    GuardResult).
    """
    refs = np.stack(references) if len(references) else None
    ident_in = _cosine(input_embedding, refs) if refs is not None else 0.0
    from albumfix.faces.quality import face_sharpness

    sharp_in = face_sharpness(original_rgb, landmarks)
    if refs is not None:
        limit = ident_in - REFERENCE_GAIN.get(space, REFERENCE_GAIN["dlib"])
    else:
        limit = SELF_DISTANCE.get(space, SELF_DISTANCE["dlib"])
    target = refs if refs is not None else input_embedding[None]
    ceiling = detail_ceiling(detail)
    reason = ""
    if ceiling < strength:
        strength, reason = ceiling, f"strength at most {ceiling:.2f}: the face keeps real detail ({detail:.3f})"
    last = (ident_in, sharp_in)
    for s in [strength] + [x for x in STRENGTH_STEPS if x < strength]:
        pixels = paste(s)
        rgb = to_rgb(pixels)
        ident_out = _cosine(embed(rgb), target)
        sharp_out = face_sharpness(rgb, landmarks)
        last = (ident_out, sharp_out)
        problems = []
        if ident_out > limit:
            problems.append(f"identity {ident_out:.3f} > {limit:.3f}"
                            + (f" (references: input {ident_in:.3f} less the gain required)" if refs is not None
                               else " (to the input)"))
        if sharp_out < min_sharpness_ratio * sharp_in:
            problems.append(f"sharpness {sharp_out:.2f} < {min_sharpness_ratio:g} x input {sharp_in:.2f}")
        if not problems:
            chosen = pixels if final is None else final(s)
            return chosen, GuardResult(s, reason, ceiling, ident_in, ident_out, sharp_in, sharp_out)
        reason = f"at strength {s:g}: " + "; ".join(problems)
    return None, GuardResult(0.0, reason + "; original face kept", ceiling, ident_in, last[0], sharp_in, last[1])
