"""Tests of albumfix.train: losses, cache and pair stream, the training loop, evaluation.

The model is a tiny registered ASFFNet configuration (32-px crops) trained on generated
cartoon faces whose 68 landmarks are known, so everything runs on CPU in seconds.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, replace

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import albumfix.restore
from albumfix.faces.landmarks import MIRROR_68, mirror_landmarks
from albumfix.restore import ASFFNetConfig, WeightsError, create_model, register_config
from albumfix.restore.layers import SNConv2d
from albumfix.train.dataset import (
    AugmentConfig,
    PairStream,
    TrainingCache,
    choose_training_exemplars,
    collate,
    encode_jpeg,
    evaluation_samples,
    load_cache,
    pack_jpegs,
    person_split,
    save_cache,
)
from albumfix.train.evaluate import EvalConfig, evaluate
from albumfix.train.metrics import psnr, ssim_luma
from albumfix.train.losses import (
    LossWeights,
    PatchDiscriminator,
    charbonnier_loss,
    psnr_loss,
    fft_loss,
    ms_ssim,
    restoration_loss,
    ssim,
)
from albumfix.train.trainer import (
    GPU_DATA_WORKERS,
    TrainConfig,
    _build_state,
    apply_overrides,
    data_workers,
    load_checkpoint,
    load_initial_weights,
    load_train_config,
    lr_factor,
    save_checkpoint,
    train,
)
from conftest import fp32_switches

TINY = register_config(ASFFNetConfig(
    name="test-tiny32", size=32, extractor_widths=(8, 8, 16), feature_channels=8, mask_widths=(4, 4, 4),
    decoder_channels=8, asff_blocks=1, extractor_res_blocks=1, mask_radius=1, warp="exact"), overwrite=True)
S = 32


def template_landmarks(size: int) -> np.ndarray:
    """A plausible frontal 68-point iBUG layout in an (size, size) crop. (68, 2) float32."""
    s = float(size)
    t = np.linspace(0, np.pi, 17)
    jaw = np.stack([0.5 * s - 0.33 * s * np.cos(t), 0.45 * s + 0.42 * s * np.sin(t)], 1)
    brow_l = np.stack([np.linspace(0.25, 0.45, 5) * s, 0.34 * s - 0.02 * s * np.sin(np.linspace(0, np.pi, 5))], 1)
    brow_r = brow_l.copy()
    brow_r[:, 0] = s - brow_l[::-1, 0]
    nose = np.stack([np.full(4, 0.5 * s), np.linspace(0.4, 0.55, 4) * s], 1)
    nostrils = np.stack([np.linspace(0.44, 0.56, 5) * s, np.full(5, 0.58 * s)], 1)
    a = np.array([np.pi, 2 * np.pi / 3, np.pi / 3, 0, -np.pi / 3, -2 * np.pi / 3])

    def ring(cx, cy, rx, ry, angles):
        return np.stack([cx + rx * np.cos(angles), cy - ry * np.sin(angles)], 1)

    eye_l = ring(0.36 * s, 0.42 * s, 0.06 * s, 0.025 * s, a)
    eye_r = ring(0.64 * s, 0.42 * s, 0.06 * s, 0.025 * s, a)
    outer = ring(0.5 * s, 0.72 * s, 0.12 * s, 0.05 * s,
                 np.concatenate([np.linspace(np.pi, 0, 7), np.linspace(-np.pi / 6, -5 * np.pi / 6, 5)]))
    inner = ring(0.5 * s, 0.72 * s, 0.08 * s, 0.02 * s,
                 np.concatenate([np.linspace(np.pi, 0, 5), np.linspace(-np.pi / 4, -3 * np.pi / 4, 3)]))
    points = np.concatenate([jaw, brow_l, brow_r, nose, nostrils, eye_l, eye_r, outer, inner])
    points[:, 0] -= 0.5  # symmetric about the centre column (size - 1) / 2 of integer pixel centres
    return points.astype(np.float32)


def draw_face(landmarks: np.ndarray, skin: tuple, rng: np.random.Generator, size: int) -> np.ndarray:
    """A cartoon face drawn at its landmarks on a noisy background. (S, S, 3) uint8."""
    img = np.clip(rng.normal(120, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    cv2.fillPoly(img, [np.round(landmarks[:17]).astype(np.int32)], skin)
    centre = landmarks[:17].mean(0)
    cv2.ellipse(img, (int(centre[0]), int(landmarks[19, 1])), (int(0.33 * size), int(0.15 * size)), 0, 180, 360, skin, -1)
    for idx in (range(36, 42), range(42, 48), range(48, 60)):
        colour = (150, 40, 50) if idx.start == 48 else (30, 20, 20)
        cv2.fillPoly(img, [np.round(landmarks[list(idx)]).astype(np.int32)], colour)
    for idx in (range(17, 22), range(22, 27)):
        cv2.polylines(img, [np.round(landmarks[list(idx)]).astype(np.int32)], False, (60, 40, 30), 1)
    return img


def make_cache(path, people: int = 6, photos: int = 4, size: int = S, seed: int = 0) -> TrainingCache:
    """A small cache of generated faces: per person a face shape and skin; per photo a jitter."""
    rng = np.random.default_rng(seed)
    base = template_landmarks(size)
    crops, marks, embeds, person, names = [], [], [], [], []
    for p in range(people):
        shape = base + rng.normal(0, 0.6, base.shape)
        skin = tuple(int(v) for v in rng.integers(120, 230, 3))
        identity = rng.normal(0, 1, 128)
        for k in range(photos):
            lm = (shape + rng.normal(0, 0.3, base.shape)).astype(np.float32)
            crops.append(draw_face(lm, skin, rng, size))
            marks.append(lm)
            e = identity + rng.normal(0, 0.05, 128)
            embeds.append((e / np.linalg.norm(e)).astype(np.float16))
            person.append(p)
            names.append(f"synthetic/p{p}/{k}.jpg")
    landmarks = np.stack(marks)
    person_arr = np.array(person, np.int32)
    keys = names
    is_gt = np.ones(len(crops), bool)
    exemplar, distance = choose_training_exemplars(keys, landmarks, np.stack(embeds), person_arr, is_gt, is_gt)
    jpeg, offsets = pack_jpegs([encode_jpeg(c, 95) for c in crops])
    split = (person_arr >= people - 2).astype(np.uint8)  # the last two people are held out
    cache = TrainingCache(
        jpeg=jpeg, jpeg_offsets=offsets, landmarks=landmarks, embeddings=np.stack(embeds), person=person_arr,
        people=np.array([f"synthetic/p{p}" for p in range(people)]), paths=np.array(keys),
        source_side=np.full(len(crops), float(size), np.float32), is_gt=is_gt, exemplar=exemplar,
        exemplar_distance=distance, split=split, meta={"version": 1, "size": size, "quality": 95})
    save_cache(cache, path)
    return cache


# ---------------------------------------------------------------- losses


def test_losses_vanish_on_identical_images_and_grow_with_error():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1)
    assert abs(float(ssim(x, x)) - 1) < 1e-5 and abs(float(ms_ssim(x, x)) - 1) < 1e-5
    assert float(fft_loss(x, x)) < 1e-6
    assert float(charbonnier_loss(x, x)) == pytest.approx(1e-3, rel=1e-3)
    assert float(ssim(x, y)) < 0.9 and float(ms_ssim(x, y)) < float(ms_ssim(x, (x + y) / 2))
    assert float(fft_loss(x, y)) > 0.01


def test_psnr_loss_is_minus_the_mean_eval_psnr():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 24, 24, 3)).astype(np.float32)
    noisy = np.clip(images + rng.normal(0, [[[[5.0]]], [[[20.0]]], [[[60.0]]]], images.shape), 0, 255)
    to_tensor = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2) / 127.5 - 1  # noqa: E731
    expected = np.mean([psnr(a, b) for a, b in zip(noisy, images)])
    assert float(psnr_loss(to_tensor(noisy), to_tensor(images))) == pytest.approx(-expected, abs=1e-3)
    value = restoration_loss(to_tensor(noisy), to_tensor(images), LossWeights(pixel=0, ssim=0, fft=0, psnr=0.01))
    assert set(value.terms) == {"psnr"} and value.terms["psnr"] == pytest.approx(-0.01 * expected, abs=1e-4)


def test_restoration_loss_terms_and_discriminator():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    disc = PatchDiscriminator(width=8)
    logits = disc(x)
    assert logits.shape == (2, 1, 4, 4)
    value = restoration_loss(x * 0.5, x, LossWeights(adversarial=0.1), fake_logits=logits)
    assert set(value.terms) == {"pixel", "ssim", "fft", "adv"}
    assert float(value.total.detach()) == pytest.approx(sum(value.terms.values()), rel=1e-5)
    with pytest.raises(ValueError):
        restoration_loss(x, x, LossWeights(adversarial=0.1))


def test_identity_loss_reads_the_face_through_dlibs_network_and_guides_the_pixels():
    from PIL import Image, ImageOps

    from albumfix.faces.align import ffhq_transform, warp_to_crop
    from albumfix.faces.backends import create_analyzer
    from albumfix.train.losses import IdentityLoss
    from conftest import SAMPLE_ALBUM

    crops = []
    for name in ("oval office", "podium"):
        rgb = np.asarray(ImageOps.exif_transpose(Image.open(SAMPLE_ALBUM / "2009" / f"{name}.jpg")).convert("RGB"))
        face = max(create_analyzer("dlib", "dlib").analyse(rgb), key=lambda f: f.box[2] - f.box[0])
        crops.append(warp_to_crop(rgb, ffhq_transform(face.landmarks, 128), border="reflect"))
    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    loss = IdentityLoss()
    same_id, same_feat = loss(x, x)
    assert float(same_id) < 1e-5 and float(same_feat) < 1e-5
    blurred = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
    blur_id, blur_feat = loss(blurred, x)
    assert 0 < float(blur_id) < 0.2 and float(blur_feat) > 0.05
    other_id, _ = loss(x.flip(0), x)  # another photo of the same man: farther than his blur
    assert float(other_id) > float(blur_id)
    # the gradient reaches the pixels, and a step along it brings the blurred face back
    pred = blurred.clone().requires_grad_(True)
    identity, feature = loss(pred, x)
    (identity + feature).backward()
    assert pred.grad is not None and float(pred.grad.abs().sum()) > 0
    torch.manual_seed(0)
    with torch.no_grad():
        moved = pred - 0.02 * pred.grad / pred.grad.abs().max()  # at most 2.5 grey levels a pixel
    torch.manual_seed(0)
    before = sum(loss(blurred, x))
    torch.manual_seed(0)
    after = sum(loss(moved, x))
    assert float(after) < float(before)
    value = restoration_loss(blurred, x, LossWeights(identity=0.1, feature=0.05), identity_loss=loss)
    assert {"identity", "feature"} <= set(value.terms)
    with pytest.raises(ValueError):
        restoration_loss(blurred, x, LossWeights(identity=0.1))


def test_discriminator_power_iteration_runs_in_fp32_under_autocast(monkeypatch):
    """On CUDA autocast runs torch.mv in bf16/fp16; spectral norm must run with autocast off."""
    calls = []
    mv = torch.mv

    def recording_mv(matrix, vector):
        calls.append((torch.is_autocast_enabled("cpu"), matrix.dtype, vector.dtype))
        return mv(matrix, vector)

    disc = PatchDiscriminator(width=8).train()
    monkeypatch.setattr(torch, "mv", recording_mv)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = disc(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert logits.shape == (2, 1, 4, 4)
    assert len(calls) >= 2 * 5  # a power iteration and a sigma per layer
    assert set(calls) == {(False, torch.float32, torch.float32)}


def test_discriminator_keeps_the_state_dict_layout_of_torch_spectral_norm():
    """Checkpoints written while the discriminator used nn.utils.spectral_norm still resume."""
    layers = [m for m in PatchDiscriminator(width=8).net if isinstance(m, SNConv2d)]
    assert len(layers) == 5
    for layer in layers:
        reference = nn.utils.spectral_norm(nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                                     layer.stride, layer.padding))
        expected = {k: v.shape for k, v in reference.state_dict().items()}
        assert {k: v.shape for k, v in layer.state_dict().items()} == expected


def test_ssim_luma_matches_identity_and_orders_noise():
    rng = np.random.default_rng(0)
    img = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    noisy = np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
    noisier = np.clip(img + rng.normal(0, 60, img.shape), 0, 255).astype(np.uint8)
    assert ssim_luma(img, img) == pytest.approx(1.0)
    assert 1 > ssim_luma(img, noisy) > ssim_luma(img, noisier)
    assert psnr(img, noisy) > psnr(img, noisier)


def test_lr_schedule_warms_up_then_decays():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, 0.1) == pytest.approx(0.55, abs=1e-6)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)


# ---------------------------------------------------------------- data


def test_mirror_permutation_is_an_involution_swapping_sides():
    assert sorted(MIRROR_68.tolist()) == list(range(68))
    assert np.array_equal(MIRROR_68[MIRROR_68], np.arange(68))
    lm = template_landmarks(64)
    assert np.abs(mirror_landmarks(lm, 64) - lm).max() < 0.6  # the template is left-right symmetric
    batch = np.stack([lm, lm + [3.0, 1.0]]).astype(np.float32)
    assert np.allclose(mirror_landmarks(mirror_landmarks(batch, 64), 64), batch)
    assert mirror_landmarks(batch, 64)[1, 36, 0] == pytest.approx(63 - batch[1, 45, 0])  # eye corners swap


def test_person_split_is_deterministic_and_near_fraction():
    names = [f"p{i}" for i in range(2000)]
    flags = [person_split(n, 0.1) for n in names]
    assert flags == [person_split(n, 0.1) for n in names]
    assert 0.07 < np.mean(flags) < 0.13


def test_cache_round_trip_exemplars_and_pair_stream(tmp_path):
    cache = make_cache(tmp_path / "c.npz")
    loaded = load_cache(tmp_path / "c.npz")
    assert len(loaded) == 24 and loaded.size == S
    assert np.abs(loaded.crop(3).astype(int) - cache.crop(3).astype(int)).mean() < 3
    ex = loaded.exemplar
    assert np.all(ex >= 0) and np.all(ex != np.arange(24)) and np.all(loaded.person[ex] == loaded.person)
    assert set(loaded.person[loaded.pairs("val")]) == {4, 5}
    stream = PairStream(loaded, loaded.pairs("train"), AugmentConfig(), seed=3)
    late, early = stream[37], stream[5]
    again = PairStream(loaded, loaded.pairs("train"), AugmentConfig(), seed=3)
    assert np.array_equal(again[5].lq, early.lq) and np.array_equal(again[37].lq, late.lq)
    assert not np.array_equal(stream[6].lq, early.lq)
    batch = collate([early, late])
    assert batch.lq.shape == (2, 3, S, S) and batch.lq_landmarks.shape == (2, 68, 2)
    assert float(batch.target.min()) >= -1 and float(batch.target.max()) <= 1
    fixed = evaluation_samples(loaded, "val", limit=3)
    assert len(fixed) == 3 and np.array_equal(fixed[0].lq, evaluation_samples(loaded, "val", limit=1)[0].lq)


def test_mild_share_gives_the_stream_inputs_nearer_their_truth(tmp_path):
    cache = make_cache(tmp_path / "c.npz")
    indices = cache.pairs("train")

    def mean_input_psnr(share: float) -> float:
        stream = PairStream(cache, indices, AugmentConfig(mild_share=share, flip_prob=0.0), seed=5)
        return float(np.mean([psnr(stream[k].lq, stream[k].target) for k in range(24)]))

    assert mean_input_psnr(1.0) > mean_input_psnr(0.0) + 1.0


def test_the_stream_swaps_in_another_persons_exemplar_or_the_input_itself(tmp_path):
    cache = make_cache(tmp_path / "c.npz")
    indices = cache.pairs("train")
    plain = PairStream(cache, indices, AugmentConfig(), seed=2)
    unchanged = PairStream(cache, indices, AugmentConfig(wrong_ref_prob=0.0, self_ref_prob=0.0), seed=2)
    assert all(np.array_equal(plain[k].ref, unchanged[k].ref) for k in range(6))
    wrong = PairStream(cache, indices, AugmentConfig(wrong_ref_prob=1.0, flip_prob=0.0, ref_degrade_prob=0.0), seed=2)
    for k in range(6):
        index = int(wrong._permutation(k // len(indices))[k % len(indices)])
        sample = wrong[k]
        donors = [i for i in range(len(cache)) if np.array_equal(cache.crop(i), sample.ref)]
        assert donors and all(cache.person[d] != cache.person[index] for d in donors)
        assert np.array_equal(sample.ref_landmarks, cache.landmarks[donors[0]])
    own = PairStream(cache, indices, AugmentConfig(self_ref_prob=1.0), seed=2)
    assert all(np.array_equal(own[k].ref, own[k].lq) and np.array_equal(own[k].ref_landmarks, own[k].lq_landmarks)
               for k in range(6))


# ---------------------------------------------------------------- training and evaluation


def tiny_config(tmp_path, out: str, **overrides) -> TrainConfig:
    config = TrainConfig(cache=str(tmp_path / "c.npz"), out_dir=str(tmp_path / out), model=TINY.name,
                         steps=8, batch_size=4, lr=3e-3, warmup_steps=2, log_every=1, checkpoint_every=100,
                         val_count=4, threads=1, device="cpu")
    return apply_overrides(config, overrides)


def test_loss_falls_and_weights_export(tmp_path):
    make_cache(tmp_path / "c.npz")
    config = tiny_config(tmp_path, "run", steps=40, **{"augment.degradation": "light"})
    result = train(config)
    assert result.finished and result.step == 40
    losses = [json.loads(line)["loss"] for line in result.log.read_text().splitlines()
              if "loss" in json.loads(line)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    model = create_model(TINY.name, weights=result.weights)
    assert not model.training
    from safetensors import safe_open

    with safe_open(str(result.weights), "pt") as f:
        assert f.get_tensor("UpModel.1.weight_orig").dtype == torch.float16
    report = evaluate(EvalConfig(cache=config.cache, checkpoint=str(result.checkpoint), limit=4, threads=1,
                                 device="cpu", out=str(tmp_path / "eval.json"), examples=str(tmp_path / "ex.png")))
    assert [v.name for v in report.variants] == ["input", "unguided", "guided"]
    assert report.faces == 4 and report.people == 1
    assert all(math.isfinite(v.psnr) and v.identity is not None and v.identity >= 0 for v in report.variants)
    assert json.loads((tmp_path / "eval.json").read_text())["faces"] == 4
    assert cv2.imread(str(tmp_path / "ex.png")).shape == (4 * S, 5 * S, 3)
    assert "guided" in report.table()


def test_resume_continues_exactly(tmp_path):
    make_cache(tmp_path / "c.npz")
    whole = train(tiny_config(tmp_path, "whole"))
    first = train(tiny_config(tmp_path, "parts", stop_after=3))
    assert first.step == 3 and not first.finished and first.weights is None
    second = train(tiny_config(tmp_path, "parts"))
    assert second.start_step == 3 and second.step == 8 and second.finished
    a = torch.load(whole.checkpoint, weights_only=True)
    b = torch.load(second.checkpoint, weights_only=True)
    assert a["step"] == b["step"] == 8
    for key in ("model", "ema"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), (key, name)
    steps = [json.loads(line)["step"] for line in second.log.read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, 9))


def test_config_from_toml_with_overrides(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('steps = 123\nbetas = [0.8, 0.9]\n[loss]\nfft = 0.5\n[augment]\ndegradation = "heavy"\n')
    config = load_train_config(path, ["batch_size=3", "loss.adversarial=0.01", "max_minutes=none"])
    assert config.steps == 123 and config.betas == (0.8, 0.9) and config.batch_size == 3
    assert config.loss.fft == 0.5 and config.loss.adversarial == 0.01 and config.max_minutes is None
    assert config.augment.degradation == "heavy"
    with pytest.raises(ValueError):
        load_train_config(path, ["nope=1"])
    json_path = tmp_path / "train.json"
    json_path.write_text(json.dumps({"steps": 7, "loss": {"pixel": 2.0}}))
    assert load_train_config(json_path).loss.pixel == 2.0


def test_fine_tuning_starts_from_weights_and_keeps_a_new_head_fresh(tmp_path):
    make_cache(tmp_path / "c.npz")
    residual = register_config(replace(TINY, name="test-train-residual", residual=True), overwrite=True)
    toned = register_config(replace(residual, name="test-train-tone", tone_head=True), overwrite=True)
    source = train(tiny_config(tmp_path, "source", model=residual.name, steps=4))
    model = create_model(toned.name)
    fresh_head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("tone.")}
    missing = load_initial_weights(model, source.checkpoint)
    assert missing == sorted(fresh_head)
    ema = torch.load(source.checkpoint, weights_only=True)["ema"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ema.items())
    assert all(torch.equal(model.state_dict()[k], v) for k, v in fresh_head.items())
    tuned = train(tiny_config(tmp_path, "tuned", model=toned.name, steps=3, init_weights=str(source.weights)))
    assert tuned.finished and tuned.start_step == 0
    with pytest.raises(WeightsError, match="unexpected keys"):
        load_initial_weights(create_model(residual.name), tuned.weights)
    with pytest.raises(WeightsError, match="retrain"):  # trained as a residual model, TINY is not
        load_initial_weights(create_model(TINY.name), source.weights)


def test_a_damage_aware_model_learns_its_levels_and_its_new_parts_learn_faster(tmp_path):
    make_cache(tmp_path / "c.npz")
    toned = register_config(replace(TINY, name="test-train-tone", residual=True, tone_head=True), overwrite=True)
    aware = register_config(replace(toned, name="test-train-aware", damage_head=True, exemplar_detail=True),
                            overwrite=True)
    source = train(tiny_config(tmp_path, "source", model=toned.name, steps=2))
    config = tiny_config(tmp_path, "aware", model=aware.name, steps=6, val_every=6, init_weights=str(source.weights),
                         new_lr_scale=10.0, **{"loss.damage": 1.0, "augment.self_ref_prob": 0.5})
    state = _build_state(config, torch.device("cpu"))
    fresh = {id(p) for n, p in state.model.named_parameters() if n.split(".")[0] in ("damage", "damage_modulation",
                                                                                      "exemplar_detail")}
    for group in state.optimizer.param_groups:
        is_fresh = {id(p) in fresh for p in group["params"]}
        assert len(is_fresh) == 1
        assert group["initial_lr"] == pytest.approx(config.lr * (10.0 if is_fresh.pop() else 1.0))
    result = train(config)
    records = [json.loads(line) for line in result.log.read_text().splitlines()]
    assert all(r["damage"] > 0 for r in records if "loss" in r)
    val = [r for r in records if "val_psnr" in r][-1]
    assert len(val["val_damage_rms_db"]) == 3 and all(math.isfinite(e) for e in val["val_damage_rms_db"])
    assert math.isfinite(val["val_psnr_unguided"])
    restored = create_model(aware.name, weights=result.weights)
    assert restored.config.damage_head


@dataclass
class ForwardSeen:
    """What was in force during one model forward."""

    training: bool
    autocast: torch.dtype | None  # None: autocast off
    cpu_matmul: str  # the oneDNN matmul fp32 switch


def record_forwards(monkeypatch) -> list[ForwardSeen]:
    """Every model create_model builds from now on (trainer, EMA, evaluator) records its forwards."""
    seen: list[ForwardSeen] = []
    create = albumfix.restore.create_model

    def hook(module, args):
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
        seen.append(ForwardSeen(module.training, dtype, fp32_switches()["mkldnn.matmul"]))

    def recording_create(*args, **kwargs):
        model = create(*args, **kwargs)
        model.register_forward_pre_hook(hook)
        return model

    monkeypatch.setattr(albumfix.restore, "create_model", recording_create)
    return seen


def test_fp16_trains_under_fp16_autocast_with_a_grad_scaler_and_a_typo_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="precision must be one of"):
        tiny_config(tmp_path, "typo", precision="bf61")
    make_cache(tmp_path / "c.npz")
    seen = record_forwards(monkeypatch)
    result = train(tiny_config(tmp_path, "fp16", steps=2, precision="fp16"))
    assert result.finished
    assert [s.autocast for s in seen if s.training] == [torch.float16, torch.float16]
    scaler = torch.load(result.checkpoint, weights_only=True)["scaler"]
    assert 0 < scaler["scale"] <= 2.0 ** 16


def test_fp32_training_and_evaluation_run_without_tf32(tmp_path, monkeypatch, host_allows_tf32):
    make_cache(tmp_path / "c.npz")
    seen = record_forwards(monkeypatch)
    config = tiny_config(tmp_path, "fp32", steps=2)
    result = train(config)
    trained = len(seen)
    evaluate(EvalConfig(cache=config.cache, checkpoint=str(result.checkpoint), limit=2, identity=False,
                        threads=1, device="cpu"))
    assert trained >= 2 and len(seen) > trained  # the training steps, then the evaluator's passes
    assert {(s.autocast, s.cpu_matmul) for s in seen} == {(None, "ieee")}
    assert fp32_switches()["mkldnn.matmul"] == "tf32"  # the host's setting is back


class VisibleGpus:
    """torch.cuda's random-generator calls for `count` visible GPUs, as torch behaves: GPU i has
    its own state, set_rng_state_all sets GPU i to state i, and an absent GPU raises IndexError."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(count)}
        self.set: list[tuple[int, torch.Tensor]] = []

    def _index(self, device) -> int:
        index = device if isinstance(device, int) else (torch.device(device).index or 0)
        if index >= self.count:
            raise IndexError("list index out of range")
        return index

    def get_rng_state(self, device="cuda") -> torch.Tensor:
        return self.states[self._index(device)].clone()

    def set_rng_state(self, state: torch.Tensor, device="cuda") -> None:
        index = self._index(device)
        self.set.append((index, state.clone()))
        self.states[index] = state.clone()

    def get_rng_state_all(self) -> list[torch.Tensor]:
        return [self.get_rng_state(i) for i in range(self.count)]

    def set_rng_state_all(self, states) -> None:
        for index, state in enumerate(states):
            self.set_rng_state(state, index)

    def install(self, monkeypatch) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        for name in ("get_rng_state", "set_rng_state", "get_rng_state_all", "set_rng_state_all"):
            monkeypatch.setattr(torch.cuda, name, getattr(self, name))


def test_resume_with_fewer_gpus_visible_sets_the_training_gpu_generator_only(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, "gpus")
    state = _build_state(config, torch.device("cpu"))  # weights on the CPU; the GPUs' generators stand in
    two = VisibleGpus(2)
    two.install(monkeypatch)
    two.states[1] = torch.full((16,), 7, dtype=torch.uint8)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(state, config, path, torch.device("cuda", 1))
    payload = torch.load(path, weights_only=True)
    assert torch.equal(payload["device_rng"], two.states[1]) and "cuda_rng" not in payload
    one = VisibleGpus(1)  # CUDA_VISIBLE_DEVICES=1: that GPU is now cuda:0
    one.install(monkeypatch)
    load_checkpoint(state, path, torch.device("cuda", 0))
    assert [(index, state.tolist()) for index, state in one.set] == [(0, [7] * 16)]


def test_resume_leaves_adamw_step_counts_on_the_cpu(tmp_path):
    """The meta device stands in for a GPU: where each optimiser tensor lands after a resume.
    On a GPU, `step` there would cost AdamW a device-to-host sync per parameter tensor."""
    make_cache(tmp_path / "c.npz")
    config = tiny_config(tmp_path, "meta", steps=1, **{"loss.adversarial": 0.1})
    result = train(config)
    meta = torch.device("meta")
    state = _build_state(config, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # copying into meta parameters is a no-op
        load_checkpoint(state, result.checkpoint, meta)
    for optimizer in (state.optimizer, state.disc_optimizer):
        moments = list(optimizer.state.values())
        assert moments and all(m["step"].device.type == "cpu" for m in moments)
        assert all(m["exp_avg"].device == meta and m["exp_avg_sq"].device == meta for m in moments)
    assert state.step == 1


def test_data_workers_default_to_none_on_the_cpu_and_some_on_a_gpu():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert data_workers(None, cpu) == 0
    assert 1 <= data_workers(None, gpu) <= GPU_DATA_WORKERS
    assert data_workers(3, gpu) == 3 and data_workers(2, cpu) == 2
    assert TrainConfig().num_workers is None
