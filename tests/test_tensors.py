"""albumfix.restore.tensors: the one image <-> tensor conversion of inference and training
(RGB, channels first, float32 in [-1, 1]); exact round trip, rounding and saturation on the way
back, and the training batches built by it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from albumfix.restore.tensors import images_to_tensor, tensor_to_images


def every_level() -> np.ndarray:
    """(2, 16, 16, 3) uint8: every grey level 0..255 once per channel, the channels differing."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = np.stack([levels, levels[::-1], levels.T], axis=-1)
    return np.stack([image, image[::-1, ::-1]])


def test_images_become_channels_first_minus_one_to_one():
    images = every_level()
    t = images_to_tensor(images)
    assert t.shape == (2, 3, 16, 16) and t.dtype == torch.float32 and t.device.type == "cpu"
    assert float(t.min()) == -1.0 and float(t.max()) == 1.0  # 0 -> -1, 255 -> 1 exactly
    assert torch.equal(t[1, 2], torch.from_numpy(images[1, ..., 2]).float() / 127.5 - 1.0)  # RGB order kept
    assert float(t[0, 0, 0, 1]) == np.float32(1.0) / np.float32(127.5) - 1.0
    assert torch.equal(images_to_tensor(list(images)), t)  # B arrays of (S, S, 3) alike


def test_round_trip_is_exact_for_every_level():
    images = every_level()
    assert np.array_equal(tensor_to_images(images_to_tensor(images)), images)
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    back = tensor_to_images(images_to_tensor(noisy).requires_grad_(True) * 1.0)  # a model output with grad
    assert back.dtype == np.uint8 and back.shape == (3, 8, 8, 3) and np.array_equal(back, noisy)


def test_the_way_back_rounds_to_nearest_and_saturates():
    # (t + 1) * 127.5 = 0.4, 0.6, 127.45, 254.55 -> 0, 1, 127, 255; outside [-1, 1] -> 0 / 255
    scaled = torch.tensor([0.4, 0.6, 127.45, 254.55, -40.0, 400.0])
    t = (scaled / 127.5 - 1.0).reshape(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert tensor_to_images(t)[0, 0, :, 0].tolist() == [0, 1, 127, 255, 0, 255]


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 3), np.uint8), np.zeros((1, 4, 4, 4), np.uint8),
                                 np.zeros((1, 4, 4, 3), np.float32)])
def test_anything_but_uint8_rgb_batches_is_refused(bad):
    with pytest.raises(ValueError, match=r"expected \(B, S, S, 3\) uint8 images"):
        images_to_tensor(bad)


def test_training_batches_use_the_same_conversion():
    from albumfix.train.dataset import TrainingSample, collate

    rng = np.random.default_rng(1)
    images = every_level()
    landmarks = rng.uniform(0, 16, (68, 2)).astype(np.float32)
    samples = [TrainingSample(lq=image, ref=image[::-1].copy(), target=image[:, ::-1].copy(),
                              lq_landmarks=landmarks, ref_landmarks=landmarks, tone="color") for image in images]
    batch = collate(samples)
    assert torch.equal(batch.lq, images_to_tensor(images))
    assert torch.equal(batch.target, images_to_tensor(images[:, :, ::-1]))
