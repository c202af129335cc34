"""Training loop for albumfix's ASFFNet configurations.

`train(TrainConfig)` trains on a cache made by `albumfix.train.dataset.build_dataset`, with
AdamW, linear warm-up then cosine decay, an exponential moving average (EMA) of the weights,
gradient clipping, mixed precision on CUDA (bf16 autocast, or fp16 with a GradScaler on GPUs
without bf16 tensor cores; see `albumfix.restore.precision`), and an optional hinge-GAN patch
discriminator. fp32 is IEEE fp32 throughout (no TF32).

Everything needed to continue lives in `<out_dir>/checkpoint.pt` (model, EMA, optimisers,
schedulers, GradScaler, step, wall time, the CPU's random generator and that of the GPU in use),
written atomically every `checkpoint_every` steps, every `checkpoint_minutes`, and at the end; a
new `train` call with the same out_dir resumes from it, on any device and with any number of
GPUs visible. The data stream is a pure function of (seed, sample number) (see `PairStream`), so
a resumed run sees exactly the batches the uninterrupted run would have. On the CPU the resumed
weights are bit-identical to the uninterrupted run's; on a GPU they are not quite, because CUDA's
`grid_sample` backward (the guidance warp) accumulates with atomics in no fixed order.
`<out_dir>/log.jsonl` gets one JSON line per logged step (and per validation); progress lines
go to stderr. The EMA weights are exported with `albumfix.restore.weights.save_weights`.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import sys
import time
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from albumfix.atomic import atomic_write_bytes
from albumfix.devices import resolve_device
from albumfix.restore.damage import damage_levels
from albumfix.restore.precision import check_precision, ieee_fp32, resolve_precision
from albumfix.train.dataset import AugmentConfig, PairStream, collate, evaluation_samples, load_cache
from albumfix.train.inference_pairs import inference_samples, load_pairs
from albumfix.train.checkpoints import settle_spectral_norm
from albumfix.train.losses import (
    IdentityLoss, LossWeights, PatchDiscriminator, discriminator_hinge_loss, restoration_loss,
)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
CHECKPOINT_VERSION = 1
GPU_DATA_WORKERS = 4
SCHEDULES = ("steps", "minutes")


@dataclass
class TrainConfig:
    """All training options (load from TOML/JSON with `load_train_config`).

    cache: training cache (.npz from build_dataset); out_dir: checkpoint, log and export folder;
    model: registered configuration name (its size must equal the cache's crop size).
    steps: length of the schedule; stop_after: end this invocation after this many steps
    (checkpointed; a later call resumes); max_minutes: stop once the run's total training wall
    time (all resumed parts) passes this. batch_size: pairs per step; num_workers: DataLoader
    worker processes (0: load in the training process; None: 0 on the CPU, whose cores train,
    and `GPU_DATA_WORKERS` on a GPU, which one process cannot keep fed).
    lr: peak AdamW learning rate; warmup_steps: linear warm-up; min_lr_ratio: final lr / peak
    (cosine); schedule: "steps" (the cosine runs over `steps`) or "minutes" (over max_minutes of
    training wall time, for a fixed time budget on hardware of unknown speed; `steps` then only
    caps the run, and a resumed run's lr follows the clock, not the step); weight_decay, betas: AdamW; grad_clip: max gradient L2 norm (0: off).
    ema_decay: EMA factor per step (warm-started as min(decay, (1 + t) / (10 + t))).
    loss: loss weights; disc_lr, disc_width: patch discriminator (used when loss.adversarial > 0).
    augment: on-the-fly degradation and augmentation. pairs: a pairs file of the cache made the way
    inference sees them (`albumfix pairs`, "": none); with it, a share augment.pairs_share of
    the items are those pairs and validation runs on its held-out pairs. seed: data stream and
    initialisation.
    threads: torch CPU threads; device: "auto" | "cpu" | "cuda" | "cuda:N" | "mps" (see
    albumfix.devices); precision: "auto"
    (bf16 or fp16 autocast on CUDA, fp32 on CPU) | "fp32" | "bf16" | "fp16" (with a GradScaler).
    checkpoint_every / checkpoint_minutes: checkpoint cadence in steps / wall minutes;
    log_every: steps between log lines; val_every: steps between validations of the EMA model on
    `val_count` held-out pairs (0: only at the end); export: fp16 safetensors path for the EMA
    weights at the end ("" : `<out_dir>/<model>.safetensors`).
    init_weights: start a new run from these weights (fine-tuning): a .safetensors / .pth file or
    a training checkpoint (its EMA). Tensors the model has and the file lacks (a head added
    since) keep their fresh initialisation; any other mismatch is an error. Not used on resume.
    new_lr_scale: the peak lr of those fresh tensors is lr * new_lr_scale (a new head learns from
    scratch while the rest is only fine-tuned).
    """

    cache: str = "cache/train-s128.npz"
    out_dir: str = "runs/albumfix-s128"
    model: str = "albumfix-s128"
    steps: int = 20000
    stop_after: int | None = None
    max_minutes: float | None = None
    batch_size: int = 8
    num_workers: int | None = None
    lr: float = 2e-4
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    schedule: str = "steps"
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    loss: LossWeights = field(default_factory=LossWeights)
    disc_lr: float = 1e-4
    disc_width: int = 32
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    pairs: str = ""
    seed: int = 0
    threads: int = 2
    device: str = "auto"
    precision: str = "auto"
    checkpoint_every: int = 500
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    val_every: int = 0
    val_count: int = 32
    export: str = ""
    init_weights: str = ""
    new_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")


@dataclass
class TrainResult:
    """What a `train` call did. step: steps done in total; start_step: where this call began
    (> 0: resumed); wall_seconds: total training wall time over all parts; last_loss: mean total
    loss of the last logged window; val_psnr / val_psnr_input: last validation (dB) or None;
    weights: exported EMA weights or None (run not finished)."""

    step: int
    start_step: int
    finished: bool
    wall_seconds: float
    last_loss: float
    val_psnr: float | None
    val_psnr_input: float | None
    checkpoint: Path
    log: Path
    weights: Path | None


def _coerce(value, kind):
    """Convert a JSON/TOML/CLI value to the annotated field type `kind`."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        items = json.loads(value) if isinstance(value, str) else value
        return tuple(_coerce(v, a) for v, a in zip(items, args))
    if kind is bool:
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    return kind(value)


def _from_mapping(cls, data: dict):
    """Build dataclass `cls` from a (nested) mapping; unknown keys raise ValueError."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} option(s): {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in data.items():
        kind = hints[name]
        kwargs[name] = _from_mapping(kind, value) if is_dataclass(kind) else _coerce(value, kind)
    return cls(**kwargs)


def apply_overrides(config: TrainConfig, overrides: list[str] | dict[str, object]) -> TrainConfig:
    """Return `config` with "key=value" (or {key: value}) overrides; nested keys use a dot:
    "loss.adversarial=0.01", "augment.degradation=heavy"."""
    items = overrides.items() if isinstance(overrides, dict) else (o.split("=", 1) for o in overrides)
    result = config
    for key, value in items:
        head, _, rest = str(key).strip().partition(".")
        hints = typing.get_type_hints(TrainConfig)
        if head not in hints:
            raise ValueError(f"unknown TrainConfig option {head!r}")
        if rest:
            inner = getattr(result, head)
            inner_hints = typing.get_type_hints(type(inner))
            if rest not in inner_hints:
                raise ValueError(f"unknown option {key!r}")
            result = replace(result, **{head: replace(inner, **{rest: _coerce(value, inner_hints[rest])})})
        else:
            result = replace(result, **{head: _coerce(value, hints[head])})
    return result


def load_train_config(path: str | Path | None = None,
                      overrides: list[str] | dict[str, object] | None = None) -> TrainConfig:
    """TrainConfig from a TOML (.toml) or JSON file (sections [loss], [augment] for the nested
    options), then `overrides` (see `apply_overrides`). No file: the defaults."""
    config = TrainConfig()
    if path is not None:
        path = Path(path)
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
        config = _from_mapping(TrainConfig, data)
    return apply_overrides(config, overrides or [])


def data_workers(num_workers: int | None, device: torch.device) -> int:
    """DataLoader worker processes: `num_workers` as given, or for None 0 on the CPU and
    GPU_DATA_WORKERS (at most the CPU count) on a GPU."""
    if num_workers is not None:
        return num_workers
    return min(GPU_DATA_WORKERS, os.cpu_count() or 1) if device.type == "cuda" else 0


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Multiplier of the peak lr at `step`: linear warm-up over `warmup` steps, then cosine decay
    to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema_params <- decay * ema_params + (1 - decay) * params; buffers (spectral-norm u, v) copied."""
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)
    for eb, b in zip(ema.buffers(), model.buffers()):
        eb.copy_(b)


@dataclass
class _State:
    """Everything the loop mutates (and the checkpoint stores)."""

    model: nn.Module
    ema: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    disc: nn.Module | None
    disc_optimizer: torch.optim.Optimizer | None
    autocast: torch.dtype | None  # None: fp32
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    identity: nn.Module | None = None  # IdentityLoss when the identity or feature weight is set (frozen)
    clock: dict = field(default_factory=dict)  # {"seconds": wall time} read by a "minutes" schedule
    step: int = 0
    wall_seconds: float = 0.0


def load_initial_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Copy the tensors of a weights file or checkpoint (EMA) into `model` for fine-tuning.
    Returns the model keys the file lacks (left as initialised); raises WeightsError when the
    file has keys the model lacks, other shapes, non-finite values or another behaviour."""
    from albumfix.restore.weights import check_behaviour, load_state, read_state_dict

    path = Path(path)
    if path.suffix == ".pt":
        state = torch.load(path, map_location="cpu", weights_only=True)["ema"]
    else:
        state, metadata = read_state_dict(path)
        check_behaviour(metadata, model.config, path.name)
    return load_state(model, state, path.name, allow_missing=True)


def _build_state(config: TrainConfig, device: torch.device) -> _State:
    from albumfix.restore import create_model

    torch.manual_seed(config.seed)
    model = create_model(config.model, device=device)
    fresh = set(load_initial_weights(model, config.init_weights)) if config.init_weights else set()
    model.train()
    ema = copy.deepcopy(model).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        groups.setdefault((p.ndim > 1, name in fresh), []).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": params, "weight_decay": config.weight_decay if decays else 0.0,
          "lr": config.lr * (config.new_lr_scale if is_fresh else 1.0)}
         for (decays, is_fresh), params in sorted(groups.items())],
        lr=config.lr, betas=config.betas)
    clock = {"seconds": 0.0}  # the training wall time, kept current by the loop (schedule "minutes")
    if config.schedule == "minutes":
        if not config.max_minutes:
            raise ValueError('schedule = "minutes" needs max_minutes')
        budget = config.max_minutes * 60

        def factor(step: int) -> float:
            if step < config.warmup_steps:
                return lr_factor(step, config.warmup_steps, config.steps, config.min_lr_ratio)
            return lr_factor(round(1000 * min(1.0, clock["seconds"] / budget)), 0, 1000, config.min_lr_ratio)
    else:
        def factor(step: int) -> float:
            return lr_factor(step, config.warmup_steps, config.steps, config.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    disc = disc_optimizer = None
    if config.loss.adversarial > 0:
        disc = PatchDiscriminator(config.disc_width).to(device)
        disc_optimizer = torch.optim.AdamW(disc.parameters(), lr=config.disc_lr, betas=(0.5, 0.99), weight_decay=0.0)
    autocast = resolve_precision(config.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=autocast is torch.float16)
    identity = IdentityLoss().to(device) if config.loss.identity or config.loss.feature else None
    return _State(model, ema, optimizer, scheduler, disc, disc_optimizer, autocast, scaler, identity, clock=clock)


def rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """The random generators training may draw from: the CPU's ("torch_rng") and, on a GPU, that
    GPU's own ("device_rng"; one state, whatever the number of GPUs visible)."""
    states = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        states["device_rng"] = torch.cuda.get_rng_state(device)
    return states


def restore_rng_states(payload: dict, device: torch.device) -> None:
    """Set the generators saved by `rng_states`: the CPU's, and the GPU's onto the GPU now in
    use (a checkpoint from another device, or from an older layout, leaves that one alone)."""
    torch.set_rng_state(payload["torch_rng"])
    if device.type == "cuda" and "device_rng" in payload:
        torch.cuda.set_rng_state(payload["device_rng"], device)


def save_checkpoint(state: _State, config: TrainConfig, path: Path, device: torch.device) -> None:
    """Write the full training state (trained on `device`) to `path` atomically."""
    payload = {
        "version": CHECKPOINT_VERSION,
        "config": json.dumps(asdict(config)),
        "step": state.step,
        "wall_seconds": state.wall_seconds,
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        **rng_states(device),
    }
    if state.scaler.is_enabled():
        payload["scaler"] = state.scaler.state_dict()
    if state.disc is not None:
        payload["disc"] = state.disc.state_dict()
        payload["disc_optimizer"] = state.disc_optimizer.state_dict()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(state: _State, path: Path, device: torch.device) -> None:
    """Restore `state` (built on `device`) in place from a checkpoint written by `save_checkpoint`.

    The file is read onto the CPU; `load_state_dict` moves weights and optimiser moments to the
    parameters' device and keeps AdamW's `step` counts on the CPU, where AdamW wants them (on
    the GPU every step would wait on a device-to-host copy per parameter tensor)."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path}: unsupported checkpoint version {payload.get('version')}")
    state.model.load_state_dict(payload["model"])
    state.ema.load_state_dict(payload["ema"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.scheduler.load_state_dict(payload["scheduler"])
    if state.disc is not None and "disc" in payload:
        state.disc.load_state_dict(payload["disc"])
        state.disc_optimizer.load_state_dict(payload["disc_optimizer"])
    if state.scaler.is_enabled() and "scaler" in payload:
        state.scaler.load_state_dict(payload["scaler"])
    restore_rng_states(payload, device)
    state.step = int(payload["step"])
    state.wall_seconds = float(payload["wall_seconds"])


@dataclass
class Validation:
    """Mean PSNR (dB, RGB) on held-out pairs: guided (the pair's exemplar), unguided (the input as
    its own exemplar) and the input; damage_error: RMS error of the damage head's levels in dB
    per band (None without a head)."""

    guided: float
    unguided: float
    input: float
    damage_error: list[float] | None


@torch.no_grad()
def validate(model: nn.Module, samples: list, device: torch.device, batch_size: int = 16) -> Validation:
    """Score `model` on TrainingSamples (see `Validation`)."""
    from albumfix.restore.damage import estimated_and_true_db
    from albumfix.train.dataset import restore_samples
    from albumfix.train.metrics import psnr

    was_training = model.training
    model.eval()
    scores = {guided: float(np.mean([psnr(o, s.target) for o, s in
                                     zip(restore_samples(model, samples, guided, device, batch_size), samples)]))
              for guided in (True, False)}
    damage_error = None
    if getattr(model.config, "damage_head", False):
        batch = collate(samples).to(device)
        estimated, true = estimated_and_true_db(model.damage, batch.lq, batch.target)
        damage_error = (estimated - true).square().mean(0).sqrt().tolist()
    model.train(was_training)
    return Validation(scores[True], scores[False], float(np.mean([psnr(s.lq, s.target) for s in samples])), damage_error)


def _autocast(state: _State, device: torch.device):
    """The forward passes' autocast context (disabled for fp32)."""
    return torch.autocast(device_type=device.type, dtype=state.autocast, enabled=state.autocast is not None)


def _train_step(state: _State, batch, config: TrainConfig, device: torch.device) -> dict[str, float]:
    """One optimisation step (generator, then discriminator when enabled); returns loss terms.

    Under fp16 the losses are scaled by the GradScaler (a pass-through otherwise); gradients are
    unscaled before clipping, and one scaler update follows both optimiser steps."""
    scaler = state.scaler
    damage = estimated = None
    with _autocast(state, device):
        if config.loss.damage and state.model.config.damage_head:
            # one estimate serves the loss and, detached, the forward (as the forward would make it)
            estimated = state.model.damage(batch.lq)
            damage = (estimated, damage_levels(batch.lq, batch.target))
        pred = state.model(batch.lq, batch.ref, batch.lq_landmarks, batch.ref_landmarks,
                           damage=None if estimated is None else estimated.detach())
        fake_logits = state.disc(pred) if state.disc is not None else None
    loss = restoration_loss(pred.float(), batch.target, config.loss,
                            None if fake_logits is None else fake_logits.float(), identity_loss=state.identity,
                            damage=damage)
    state.optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss.total).backward()
    scaler.unscale_(state.optimizer)
    grad_norm = float(nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip or float("inf")))
    skipped = not math.isfinite(grad_norm)
    if not skipped:  # a non-finite loss or gradient would poison the weights and the EMA for good
        scaler.step(state.optimizer)
    state.clock["seconds"] = state.wall_seconds
    state.scheduler.step()
    terms = dict(loss.terms, total=float(loss.total.detach()), grad_norm=grad_norm, skipped=float(skipped))
    if state.disc is not None:
        with _autocast(state, device):
            d_loss = discriminator_hinge_loss(state.disc(batch.target).float(), state.disc(pred.detach()).float())
        state.disc_optimizer.zero_grad(set_to_none=True)
        scaler.scale(d_loss).backward()
        scaler.step(state.disc_optimizer)
        terms["disc"] = float(d_loss.detach())
    scaler.update()
    decay = min(config.ema_decay, (1 + state.step) / (10 + state.step))
    update_ema(state.ema, state.model, decay)
    return terms


def _log(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def train(config: TrainConfig) -> TrainResult:
    """Train (or resume) per `config`; see the module docstring. Returns a TrainResult."""
    device = resolve_device(config.device)
    with ieee_fp32(device):
        return _train_on(device, config)


def _train_on(device: torch.device, config: TrainConfig) -> TrainResult:
    """`train` on `device`, with TF32 off."""
    from torch.utils.data import DataLoader

    from albumfix.restore import get_config, save_weights

    torch.set_num_threads(config.threads)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out_dir / CHECKPOINT_NAME, out_dir / LOG_NAME
    cache = load_cache(config.cache)
    if get_config(config.model).size != cache.size:
        raise ValueError(f"model {config.model} needs {get_config(config.model).size}-px crops; "
                         f"{config.cache} holds {cache.size}-px crops")
    state = _build_state(config, device)
    if ckpt_path.exists():
        load_checkpoint(state, ckpt_path, device)
    start_step = state.step
    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    say(f"training {config.model} on {device}: {len(cache.pairs('train'))} train pairs, "
        f"batch {config.batch_size}, steps {start_step} -> {config.steps}")
    pairs = load_pairs(config.pairs, cache) if config.pairs else None
    stream = PairStream(cache, cache.pairs("train"), config.augment, config.seed, pairs)
    end_step = config.steps if config.stop_after is None else min(config.steps, start_step + config.stop_after)
    if config.max_minutes is not None and state.wall_seconds >= config.max_minutes * 60:
        end_step = start_step
    loader = DataLoader(stream, batch_size=config.batch_size, collate_fn=collate,
                        num_workers=data_workers(config.num_workers, device),
                        sampler=range(start_step * config.batch_size, end_step * config.batch_size))
    val_samples = (inference_samples(cache, pairs, "val", config.val_count) if pairs is not None
                   else evaluation_samples(cache, "val", config.val_count))
    val_psnr = val_input = None
    window: list[float] = []
    last_loss = float("nan")
    segment_start = time.monotonic()
    base_wall = state.wall_seconds
    last_ckpt_time = segment_start

    def run_validation() -> None:
        nonlocal val_psnr, val_input
        if val_samples:
            settle_spectral_norm(state.ema)
            v = validate(state.ema, val_samples, device)
            val_psnr, val_input = v.guided, v.input
            _log(log_path, {"step": state.step, "val_psnr": v.guided, "val_psnr_unguided": v.unguided,
                            "val_psnr_input": v.input, "val_damage_rms_db": v.damage_error,
                            "wall": state.wall_seconds})
            levels = "" if v.damage_error is None else ", damage RMS " + "/".join(f"{e:.1f}" for e in v.damage_error) + " dB"
            say(f"step {state.step}: val PSNR {v.guided:.2f} dB (unguided {v.unguided:.2f}, input {v.input:.2f}{levels})")

    step_start = time.monotonic()
    for batch in loader:
        terms = _train_step(state, batch.to(device), config, device)
        state.step += 1
        now = time.monotonic()
        state.wall_seconds = base_wall + (now - segment_start)
        window.append(terms["total"])
        if state.step % config.log_every == 0 or state.step == end_step:
            last_loss = float(np.mean(window))
            sec = (now - step_start) / len(window)
            record = {"step": state.step, "lr": state.scheduler.get_last_lr()[0], "loss": last_loss,
                      "sec_per_step": sec, "wall": state.wall_seconds,
                      **{k: v for k, v in terms.items() if k != "total"}}
            _log(log_path, record)
            say(f"step {state.step}/{config.steps} loss {last_loss:.4f} lr {record['lr']:.2e} "
                f"{sec:.2f} s/step, eta {(config.steps - state.step) * sec / 60:.0f} min")
            window, step_start = [], time.monotonic()
        if config.val_every and state.step % config.val_every == 0:
            run_validation()
        over_time = config.max_minutes is not None and state.wall_seconds >= config.max_minutes * 60
        if (state.step % config.checkpoint_every == 0 or now - last_ckpt_time >= config.checkpoint_minutes * 60
                or over_time):
            save_checkpoint(state, config, ckpt_path, device)
            last_ckpt_time = time.monotonic()
        if over_time:
            say(f"stopping at step {state.step}: {config.max_minutes} min of training reached")
            break
    if window:
        last_loss = float(np.mean(window))
    save_checkpoint(state, config, ckpt_path, device)
    finished = state.step >= config.steps or (
        config.max_minutes is not None and state.wall_seconds >= config.max_minutes * 60)
    weights = None
    if finished:
        if not (config.val_every and state.step % config.val_every == 0):
            run_validation()
        weights = Path(config.export) if config.export else out_dir / f"{config.model}.safetensors"
        settle_spectral_norm(state.ema)
        save_weights(state.ema, weights, dtype=torch.float16, metadata={
            "steps": state.step, "train_wall_seconds": round(state.wall_seconds),
            "cache": Path(config.cache).name, "recipe": json.dumps(asdict(config))})
        say(f"exported EMA weights to {weights}")
    return TrainResult(step=state.step, start_step=start_step, finished=finished, wall_seconds=state.wall_seconds,
                       last_loss=last_loss, val_psnr=val_psnr, val_psnr_input=val_input,
                       checkpoint=ckpt_path, log=log_path, weights=weights)
