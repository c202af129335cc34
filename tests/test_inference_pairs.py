"""Tests of albumfix.train.inference_pairs: training pairs made the way `albumfix restore` sees
faces, on real photos with albumfix's real dlib analysis (detection and landmarks on the damaged
photo), a real training cache, and the tiny registered model of test_train for the training and
evaluation runs that read them."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from albumfix.album.imageio import decode
from albumfix.faces.backends import create_analyzer
from albumfix.faces.landmarks import mirror_landmarks
from albumfix.train.dataset import AugmentConfig, PairStream, build_dataset, load_cache
from albumfix.train.evaluate import EvalConfig, evaluate
from albumfix.train.inference_pairs import (
    build_inference_pairs, evaluation_pairs, inference_samples, load_pairs, make_pair,
)
from albumfix.train.trainer import train
from test_train import TINY, tiny_config

ALBUM = Path(__file__).resolve().parents[1] / "sample_album"
S = TINY.size


def _small(path: Path, side: int = 320) -> np.ndarray:
    rgb = decode(path).rgb8()
    scale = side / max(rgb.shape[:2])
    return cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def pairs_setup(tmp_path_factory):
    """A training cache of two "people" (two real photos of one man, and their mirror images:
    "a" trains, "d" is held out at val_fraction 0.5) and its pairs file."""
    work = tmp_path_factory.mktemp("pairs")
    photos = {"podium.png": _small(ALBUM / "2009" / "podium.jpg"), "oval.png": _small(ALBUM / "2009" / "oval office.jpg")}
    for person, flip in (("a", False), ("d", True)):
        (work / "photos" / person).mkdir(parents=True)
        for name, rgb in photos.items():
            cv2.imwrite(str(work / "photos" / person / name), np.ascontiguousarray((rgb[:, ::-1] if flip else rgb)[..., ::-1]))
    build_dataset([work / "photos"], work / "c.npz", size=S, val_fraction=0.5, work_dir=work, progress=lambda m: None)
    cache = load_cache(work / "c.npz")
    report = build_inference_pairs(work / "c.npz", work / "pairs.npz", variants=3, seed=5, workers=1,
                                   work_dir=work, progress=lambda m: None)
    return work, cache, report


def test_pairs_are_cropped_with_the_landmarks_found_on_the_damaged_photo(pairs_setup):
    work, cache, report = pairs_setup
    pairs = load_pairs(work / "pairs.npz", cache)
    with_exemplar = int(np.sum(cache.is_gt & (cache.exemplar >= 0)))
    assert with_exemplar == 4 and report.attempted == 3 * with_exemplar
    assert set(cache.split.tolist()) == {0, 1}
    assert report.pairs == len(pairs) >= 8 and report.undetected == report.attempted - report.pairs
    assert set(pairs.tone.tolist()) <= {"color", "gray", "sepia"}
    for i in range(len(pairs)):
        lq, target = pairs.lq_crop(i), pairs.target_crop(i)
        assert lq.shape == target.shape == (S, S, 3)
        assert not np.array_equal(lq, target)  # damaged input, clean truth
        # landmarks found on the damaged photo: near the clean ones through the same transform, not equal
        error = np.linalg.norm(pairs.lq_landmarks[i] - pairs.truth_landmarks[i], axis=1).mean()
        assert 0 < error < 0.08 * S
        # input and truth are cropped with one transform: their coarse pictures coincide, and
        # shifting the truth by 3 px pulls them apart
        blur = lambda x: cv2.GaussianBlur(x.astype(np.float32), (0, 0), 2.0)  # noqa: E731
        aligned = np.abs(blur(lq) - blur(target)).mean()
        shifted = np.abs(blur(lq) - blur(np.roll(target, 3, axis=1))).mean()
        assert aligned < shifted


def test_a_photo_without_a_findable_face_gives_no_pair():
    analyzer = create_analyzer("dlib", "dlib", device="cpu")
    blank = np.full((200, 200, 3), 128, np.uint8)
    lm = np.tile(np.array([[100.0, 100.0]], np.float32), (68, 1))
    assert make_pair(blank, lm, (50, 50, 150, 150), np.random.default_rng(0), analyzer.detector,
                     analyzer.landmarker, S) is None


def test_a_rebuild_reuses_the_shards_and_a_foreign_cache_is_refused(pairs_setup, tmp_path):
    work, cache, report = pairs_setup
    again = build_inference_pairs(work / "c.npz", tmp_path / "again.npz", variants=3, seed=5, workers=1,
                                  work_dir=work, progress=lambda m: None)
    first, second = load_pairs(work / "pairs.npz"), load_pairs(tmp_path / "again.npz")
    assert again.pairs == report.pairs
    assert np.array_equal(first.lq, second.lq) and np.array_equal(first.lq_landmarks, second.lq_landmarks)
    part = build_inference_pairs(work / "c.npz", tmp_path / "part.npz", variants=3, seed=5, workers=1,
                                 work_dir=work, crops=1, progress=lambda m: None)
    assert part.attempted == 3 and load_pairs(tmp_path / "part.npz").base.tolist() == first.base[:part.pairs].tolist()
    other = load_cache(work / "c.npz")
    other.landmarks = other.landmarks[:2]  # a cache with another crop count
    with pytest.raises(ValueError, match="another cache"):
        load_pairs(work / "pairs.npz", other)


def test_pair_stream_mixes_inference_pairs_by_share(pairs_setup):
    work, cache, _ = pairs_setup
    pairs = load_pairs(work / "pairs.npz", cache)
    fixed = pairs.of_split(cache, "train")
    lqs = {pairs.lq_crop(int(i)).tobytes() for i in fixed} | {pairs.lq_crop(int(i))[:, ::-1].tobytes() for i in fixed}
    only_pairs = PairStream(cache, cache.pairs("train"), AugmentConfig(pairs_share=1.0), 0, pairs)
    assert all(only_pairs[k].lq.tobytes() in lqs for k in range(12))
    by_lq = {pairs.lq_crop(int(i)).tobytes(): (int(i), False) for i in fixed}
    by_lq.update({pairs.lq_crop(int(i))[:, ::-1].tobytes(): (int(i), True) for i in fixed})
    flips = set()
    for k in range(12):  # a mirrored item mirrors its target and landmarks with it
        item = only_pairs[k]
        i, flipped = by_lq[item.lq.tobytes()]
        target, lm = pairs.target_crop(i), pairs.lq_landmarks[i]
        if flipped:
            target, lm = target[:, ::-1], mirror_landmarks(lm, S)
        assert np.array_equal(item.target, target) and np.allclose(item.lq_landmarks, lm)
        flips.add(flipped)
    assert flips == {False, True}
    plain = PairStream(cache, cache.pairs("train"), AugmentConfig(pairs_share=0.0), 0, pairs)
    without = PairStream(cache, cache.pairs("train"), AugmentConfig(), 0)
    assert all(np.array_equal(plain[k].lq, without[k].lq) for k in range(6))
    assert not any(plain[k].lq.tobytes() in lqs for k in range(6))


def test_training_and_evaluation_read_the_pairs(pairs_setup, tmp_path):
    work, cache, _ = pairs_setup
    config = tiny_config(tmp_path, "run", steps=3, cache=str(work / "c.npz"), pairs=str(work / "pairs.npz"),
                         val_count=2)
    result = train(config)
    assert result.finished and result.val_psnr is not None
    samples = inference_samples(cache, load_pairs(work / "pairs.npz"), "train")
    assert len(samples) == len(evaluation_pairs(cache, load_pairs(work / "pairs.npz"), "train")) <= 2
    report = evaluate(EvalConfig(cache=str(work / "c.npz"), checkpoint=str(result.checkpoint), split="train",
                                 pairs=str(work / "pairs.npz"), threads=1, device="cpu"))
    assert report.faces == len(samples) and report.people == 1
    assert report.degradation == "inference pairs pairs.npz"
    assert np.isclose(report.variants[0].psnr, np.mean([_psnr(s.lq, s.target) for s in samples]))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / mse))
