"""Tests of the training pack (albumfix.train.pack): a cache and pairs file cut to a byte budget
for a rented GPU, and training on it with the lr schedule over minutes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from albumfix.degrade import apply_degradation, get_preset, sample_degradation
from albumfix.train.dataset import encode_jpeg, load_cache, pack_jpegs
from albumfix.train.inference_pairs import InferencePairs, load_pairs, save_pairs
from albumfix.train.pack import MIB, make_pack
from albumfix.train.trainer import _build_state, train
from test_train import make_cache, tiny_config


def made_pairs(cache, path) -> InferencePairs:
    """Two damages of every ground-truth crop, stored as a pairs file of `cache`."""
    lq, target, marks, bases = [], [], [], []
    for i in np.flatnonzero(cache.is_gt):
        for v in range(2):
            d = sample_degradation(np.random.default_rng([int(i), v]), cache.size, get_preset("light"))
            lq.append(encode_jpeg(apply_degradation(cache.crop(int(i)), d), 95))
            target.append(encode_jpeg(cache.crop(int(i)), 95))
            marks.append(cache.landmarks[i])
            bases.append(int(i))
    (lq_data, lq_off), (t_data, t_off) = pack_jpegs(lq), pack_jpegs(target)
    n = len(bases)
    pairs = InferencePairs(lq=lq_data, lq_offsets=lq_off, target=t_data, target_offsets=t_off,
                           lq_landmarks=np.stack(marks), truth_landmarks=np.stack(marks),
                           base=np.array(bases, np.int32), variant=np.arange(n, dtype=np.int16) % 2,
                           tone=np.array(["color"] * n),
                           meta={"version": 1, "size": cache.size, "cache_crops": len(cache)})
    save_pairs(pairs, path)
    return pairs


def test_a_pack_keeps_whole_people_within_its_budget_and_remaps_every_index(tmp_path):
    cache = make_cache(tmp_path / "c.npz", people=8)
    pairs = made_pairs(cache, tmp_path / "p.npz")
    whole = make_pack(tmp_path / "c.npz", tmp_path / "whole", tmp_path / "p.npz", budget_mib=10)
    assert whole.crops == len(cache) and whole.made_pairs == len(pairs)
    budget = 0.25 * (int(cache.jpeg.nbytes) + int(pairs.lq.nbytes) + int(pairs.target.nbytes)) / MIB
    half = make_pack(tmp_path / "c.npz", tmp_path / "half", tmp_path / "p.npz", budget_mib=budget)
    packed, packed_pairs = load_cache(half.cache), load_pairs(half.pairs)
    assert half.bytes == half.cache.stat().st_size + half.pairs.stat().st_size <= budget * MIB
    assert 0 < half.crops < len(cache) and 0 < half.made_pairs < len(pairs)
    assert half.val_pairs == len(cache.pairs("val"))  # all 8 validation crops fit first
    load_pairs(half.pairs, packed)  # the pairs file belongs to the packed cache
    originals = {cache.paths[i]: i for i in range(len(cache))}
    for i in range(len(packed)):
        source = originals[packed.paths[i]]
        assert np.array_equal(packed.crop(i), cache.crop(source))
        if packed.exemplar[i] >= 0:
            assert packed.paths[packed.exemplar[i]] == cache.paths[cache.exemplar[source]]
    kept_people = {int(p) for p in packed.person[packed.pairs("train")]}
    for p in kept_people:  # a person is kept whole
        assert np.sum(packed.person == p) == np.sum(cache.person == p)
    crops = np.stack([packed.crop(i) for i in range(len(packed))]).astype(np.float32)
    for k in range(len(packed_pairs)):  # each pair's truth is (a re-encoding of) its remapped base crop
        error = np.abs(crops - packed_pairs.target_crop(k).astype(np.float32)).mean(axis=(1, 2, 3))
        assert int(np.argmin(error)) == int(packed_pairs.base[k]) and error.min() < 2.0


def test_training_on_a_pack_with_the_lr_following_the_clock(tmp_path):
    make_cache(tmp_path / "c.npz", people=8)
    made_pairs(load_cache(tmp_path / "c.npz"), tmp_path / "p.npz")
    report = make_pack(tmp_path / "c.npz", tmp_path / "carry", tmp_path / "p.npz", budget_mib=10)
    config = tiny_config(tmp_path, "gpu", cache=str(report.cache), pairs=str(report.pairs), steps=10_000,
                         schedule="minutes", max_minutes=0.05, warmup_steps=2, min_lr_ratio=0.0)
    state = _build_state(config, torch.device("cpu"))
    factor = state.scheduler.lr_lambdas[0]
    assert factor(0) == pytest.approx(0.5)  # warm-up by steps
    state.clock["seconds"] = 0.0
    assert factor(10) == pytest.approx(1.0)
    state.clock["seconds"] = 1.5
    assert factor(10) == pytest.approx(0.5, abs=0.01)  # half the 3-second budget: half the cosine
    state.clock["seconds"] = 3.0
    assert factor(10) == pytest.approx(0.0, abs=1e-6)
    result = train(config)
    assert result.finished and 0 < result.step < 10_000 and result.weights.exists()
    assert result.wall_seconds >= 3.0
    with pytest.raises(ValueError, match="max_minutes"):
        train(tiny_config(tmp_path, "bad", schedule="minutes"))


def test_the_gpu_recipe_runs_on_the_cpu_with_a_tiny_budget(tmp_path):
    """tools/albumfix-s128-aware-gpu.toml as `make train-gpu` runs it, on a 128-px pack, the CPU,
    a 6-second clock and small batches: it starts from the shipped weights and exports."""
    from pathlib import Path

    from albumfix.restore import create_model
    from albumfix.train.trainer import load_train_config

    make_cache(tmp_path / "c.npz", people=4, photos=3, size=128)
    made_pairs(load_cache(tmp_path / "c.npz"), tmp_path / "p.npz")
    report = make_pack(tmp_path / "c.npz", tmp_path / "carry", tmp_path / "p.npz", budget_mib=5)
    recipe = Path(__file__).resolve().parents[1] / "tools/albumfix-s128-aware-gpu.toml"
    config = load_train_config(recipe, [f"cache={report.cache}", f"pairs={report.pairs}", f"out_dir={tmp_path / 'out'}",
                                        "max_minutes=0.1", "batch_size=2", "num_workers=0", "device=cpu", "val_count=2"])
    assert config.schedule == "minutes" and config.init_weights.endswith("albumfix-s128-aware.safetensors")
    result = train(config)
    assert result.finished and result.step >= 1 and result.val_psnr is not None
    assert create_model(config.model, weights=result.weights).config.damage_head
