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
Strengths are tried from the requested one down (`STRENGTH_STEPS`); the first that passes is
kept, else the original face stays (strength 0). Every decision is recorded (`GuardResult`).
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


@dataclass
class GuardResult:
    """The guard's decision for one face. strength: what was kept (0: the original face);
    reason: "" when the restoration passed at the requested strength, else why it was lowered;
    identity_input / identity_output: cosine distance to the references (or, without references,
    0 and the distance to the input); sharpness_input / sharpness_output: band sharpness."""

    strength: float
    reason: str
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
) -> tuple[np.ndarray | None, GuardResult]:
    """Paste one face at the highest safe strength.

    paste(s): the photo pixels with the face pasted at strength s; to_rgb: those pixels as
    (H, W, 3) uint8 RGB; embed(rgb): (D,) unit embedding of the face at its landmarks in rgb;
    original_rgb: the photo before pasting (H, W, 3) uint8; landmarks: (68, 2) photo px;
    input_embedding: the face's stored (D,) unit embedding; references: (D,) unit embeddings of
    the person's faces that guided it ([] when unguided); final(s): the pixels to return for the
    strength chosen (None: paste(s)), e.g. with the photo's own fine detail added back, which
    must not count as the restorer's sharpness. Returns (pixels or None to keep the original,
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
    reason = ""
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
            return chosen, GuardResult(s, reason, ident_in, ident_out, sharp_in, sharp_out)
        reason = f"at strength {s:g}: " + "; ".join(problems)
    return None, GuardResult(0.0, reason + "; original face kept", ident_in, last[0], sharp_in, last[1])
