"""The shipped restorer improves faces: a regression in the weights, the tone handling or the
model code fails here.

Faces: the astronaut of scikit-image's sample data (NASA, public domain; installed with
face-alignment), found and aligned by albumfix's own dlib analysis, then damaged at crop level
by albumfix's damage model at fixed seeds: DAMAGES draws of the training preset ("default",
x2-x8), where the restorer must gain MIN_GAIN_DB and bring the face nearer its truth, and as
many of the mild end ("mild", x1-x2), where it must not lose PSNR. The restorer runs unguided (the face is its
own exemplar: the album holds no other photo of her), as `restore` runs a face it has no
exemplar for. Identity is dlib's descriptor distance to the truth at the truth's landmarks.
"""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from albumfix.degrade import apply_degradation, apply_look, get_preset, sample_degradation
from albumfix.faces.align import ffhq_transform, landmarks_to_crop, warp_to_crop
from albumfix.faces.backends import create_analyzer
from albumfix.restore import create_model, find_weights
from albumfix.settings import Settings
from albumfix.train.dataset import TrainingSample, restore_samples
from albumfix.train.evaluate import CropEmbedder
from albumfix.train.metrics import psnr

DAMAGES = 8
SIZE = 128
# Measured on the shipped albumfix-s128-aware weights (0.2.0) when this test was written: default
# +1.09 dB, dlib distance 0.397 -> 0.393; mild +0.22 dB, distance 0.218 -> 0.243. The weights
# before them (albumfix-s128, 0.1.1) gave +0.89 dB, 0.397 -> 0.414 and -0.21 dB on mild: they
# fail here. The margins leave room for another CPU's rounding, not for a regression. On mild
# damage identity is not required to improve: that face is already near its truth, and no
# shipped restorer so far brings it nearer.
MIN_GAIN_DB = {"default": 0.8, "mild": 0.0}
MIN_IDENTITY_GAIN = {"default": 0.0, "mild": None}


@pytest.fixture(scope="module")
def astronaut_face() -> tuple[np.ndarray, np.ndarray]:
    """(S, S, 3) uint8 aligned truth crop and its (68, 2) crop landmarks."""
    photo = skimage.data.astronaut()
    faces = create_analyzer(faces="dlib", landmarks="dlib", cnn_fallback=False).analyse(photo)
    face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))  # hers, 90 px wide
    assert face.box[2] - face.box[0] > 80
    transform = ffhq_transform(face.landmarks, SIZE)
    return warp_to_crop(photo, transform), landmarks_to_crop(face.landmarks, transform).astype(np.float32)


def damaged_faces(truth: np.ndarray, landmarks: np.ndarray, preset: str) -> list[TrainingSample]:
    """DAMAGES pairs of `truth` damaged by `preset`, seeded by their number."""
    samples = []
    for k in range(DAMAGES):
        d = sample_degradation(np.random.default_rng([20261205, k]), SIZE, get_preset(preset))
        lq = apply_degradation(truth, d)
        samples.append(TrainingSample(lq=lq, ref=lq, target=apply_look(truth, d), lq_landmarks=landmarks,
                                      ref_landmarks=landmarks, tone=d.tone))
    return samples


@pytest.mark.parametrize("preset", sorted(MIN_GAIN_DB))
def test_the_shipped_restorer_beats_the_input_and_keeps_the_person(astronaut_face, preset):
    truth, landmarks = astronaut_face
    name = Settings().model
    model = create_model(name, weights=find_weights(name), fold=True)
    samples = damaged_faces(truth, landmarks, preset)
    torch.set_num_threads(2)
    restored = restore_samples(model, samples, guided=False)
    gain = np.mean([psnr(r, s.target) - psnr(s.lq, s.target) for r, s in zip(restored, samples)])
    assert gain >= MIN_GAIN_DB[preset], f"{preset}: restorer gains {gain:+.2f} dB"
    if MIN_IDENTITY_GAIN[preset] is None:
        return
    embed = CropEmbedder()
    reference = embed(truth, landmarks)
    before = np.mean([np.linalg.norm(embed(s.lq, landmarks) - reference) for s in samples])
    after = np.mean([np.linalg.norm(embed(r, landmarks) - reference) for r in restored])
    assert before - after >= MIN_IDENTITY_GAIN[preset], f"{preset}: identity {before:.3f} -> {after:.3f}"
