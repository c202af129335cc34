"""Do no harm: every restored face is checked in its photo before it is kept.

A restoration is refused, or pasted at a lower strength, when it moves the face away from its
person or makes it less sharp than the input:
- identity: the identity embedding of the pasted face (the analyser's embedder, at the face's own
  landmarks, in the photo) against the person's references (the exemplars that guided it); with
  no reference, against the input face itself. With references the pasted face must come
  nearer them than the input was, by REFERENCE_GAIN at least (guided by the person's own photo,
  a restoration that brings the face no nearer its person is not worth its risk); without, it
  must stay within SELF_DISTANCE of the input (cosine distances of unit embeddings);
- sharpness: `albumfix.faces.quality.face_sharpness` (band energy of the inner face on the
  256-px analysis crop) of the pasted face must be at least `min_sharpness_ratio` times the input's
  (the input's finest band holds its noise and JPEG blocks too, which a restoration removes).
Calibrated on the album benchmark of 90 training people (`benchmarks/calibrate_guard.py` on an
`albumfix eval --albums` folder built with split "train"; 83 restored damaged faces, their
restorations pasted at each strength and scored against the truth): the most face-region PSNR
among the rules with at most 15 % of faces farther from the truth than the input (dlib
identity), ties to the fewer such faces. Kept:
gain 0.003, sharpness ratio 0.8: +0.32 dB, 11 % farther, identity 0.318 (input 0.331); the
rule before (references: no farther than the input + 0.005; ratio 0.9): +0.34 dB, 24 %, 0.321;
gain 0: +0.38 dB, 19 %; gain 0.005: +0.26 dB, 8 %; the self distance hardly matters (0.015 to
0.035). On a second album of those people (other photos, other damage: seed 1; 88 faces) the
kept rule gives +0.37 dB, 16 % farther, identity 0.308 (input 0.320); the rule before +0.37 dB,
27 %, 0.310.
A face that keeps real detail needs less of the restorer's correction: the restorer learnt on
faces that had lost x2-x8 of their resolution and applies about that much even to a nearly sharp
face. So the strength is first capped by the face's own fine detail (`detail_ceiling` of
`albumfix.faces.quality.edge_detail`): full strength up to DETAIL_CEILING's first detail, falling
linearly to its floor at the second. Calibrated (`benchmarks/calibrate_strength.py`) on six
albums of the 90 training people, four in the benchmark's three families (seeds 0-3) and two in
"training-mild", the mild end of our own degradation (seeds 0-1): 462 restored damaged faces
pasted unguarded at strengths 0-1.25, the guard simulated from each rule's ceiling down; the
rule with the most face-region PSNR (mean over the albums) among those that lose at most 0.01 dB
on any of the three fit albums (seeds 0 and 2, mild 0). Kept (0.12, 0.16, 0.60): +0.025 dB fit,
+0.030 dB on the three test albums; the mild albums +0.081 / +0.093 dB, the four others -0.007
to +0.001 dB, the judge's identity distance within 0.004. Full strength loses 0.55 / 0.65 dB on
the mild albums; the guard alone already brings that to -0.07 / -0.13 dB. A steeper rule,
(0.10, 0.18, 0.25), the best on those albums with the guard left out, gains +0.13 dB on the mild
albums but loses 0.03-0.06 dB on the others, and on the held-out album benchmark it lost
0.10 dB (while the probe family went from -0.21 to -0.01 dB): not kept. The detail of a face
does not tell a mild damage from a heavier one it looks like (same detail, opposite best
strengths: module doc of the benchmark), which is why no ceiling does more.
End to end (`albumfix eval --albums`, held-out people, product against the same weights without
the ceiling, same albums): the probe family phone-snap -0.21 -> -0.07 dB, judge (FaceNet)
distance 0.563 -> 0.557 (input 0.558), faces the judge finds farther 39 -> 33 %; the main album
+0.42 -> +0.39 dB, judge 0.842 -> 0.846, farther 5 -> 5 %, dlib distance 0.348 -> 0.346.

Strengths are tried from the requested one (or the ceiling, when lower) down (`STRENGTH_STEPS`);
the first that passes is kept, else the original face stays (strength 0). Every decision is recorded (`GuardResult`).
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
