"""Evaluation of a restoration model on held-out people.

Every ground-truth crop of the split is degraded once with the named preset (seeded per crop, so
every run and every model sees the same inputs) and compared, against its target (the ground
truth in the same print tone), in three variants: "input" (the degraded crop as is),
"unguided" (the model with the exemplar replaced by the input itself) and "guided" (the model
with the exemplar albumfix chose when the cache was built). With a pairs file (`--pairs`, see
`inference_pairs`) the inputs are instead crops made the way `albumfix restore` makes them: the
whole photo damaged, the face found and aligned on the damaged photo, the truth cropped with the
same transform (the first damage of every held-out crop).

Metrics (per face, averaged):
- PSNR in dB on RGB, [0, 255], over all pixels and channels (peak 255);
- SSIM on BT.601 luminance Y in [0, 255] (Gaussian window sigma 1.5, 11 px, K1 0.01, K2 0.03);
- identity distance: Euclidean distance between dlib 128-d face descriptors of the restored crop
  and of the ground-truth crop, both computed at the known crop landmarks (lower = same person;
  dlib's usual same-person threshold is 0.6).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from albumfix.atomic import atomic_write_bytes
from albumfix.train.metrics import psnr, ssim_luma

VARIANTS = ("input", "unguided", "guided")
VARIANT_HELP = {
    "input": "the degraded input as is (same size)",
    "unguided": "model with the exemplar replaced by the input itself",
    "guided": "model with albumfix's chosen exemplar",
}


@dataclass
class EvalConfig:
    """Options of `evaluate`.

    cache: training cache (.npz); split: "val" (held-out people) or "train"; limit: first N
    pairs (None: all); weights: a .safetensors / .pth weights file, or checkpoint: a training
    checkpoint (its EMA weights are used); model: configuration name (with `weights`);
    degradation: preset name; seed: degradation seed (each pair is seeded by (seed, crop index));
    pairs: a pairs file of the cache (`albumfix pairs`): evaluate its pairs instead ("" : none);
    identity: compute dlib identity distances; batch_size, device, threads: inference settings;
    out: JSON report path ("" : none); examples: PNG sheet of the first `example_count` pairs,
    columns input | unguided | guided | exemplar | ground truth ("" : none).
    """

    cache: str = "cache/train-s128.npz"
    split: str = "val"
    limit: int | None = None
    weights: str = ""
    checkpoint: str = ""
    model: str = "albumfix-s128"
    degradation: str = "default"
    seed: int = 1234
    pairs: str = ""
    identity: bool = True
    batch_size: int = 16
    device: str = "auto"
    threads: int = 2
    out: str = ""
    examples: str = ""
    example_count: int = 8


@dataclass
class VariantMetrics:
    """Means over the evaluated faces. psnr (dB, RGB); ssim (luminance); identity (Euclidean
    distance of unit dlib descriptors, None when not computed)."""

    name: str
    psnr: float
    ssim: float
    identity: float | None


@dataclass
class EvalReport:
    """The evaluation: one VariantMetrics per variant, counts, and guided-vs-unguided win rates
    (share of faces where guided has the higher PSNR / the lower identity distance)."""

    variants: list[VariantMetrics]
    faces: int
    people: int
    split: str
    degradation: str
    weights: str
    guided_psnr_win_rate: float
    guided_identity_win_rate: float | None
    seconds: float

    def to_json(self) -> str:
        """The report as indented JSON."""
        return json.dumps(asdict(self), indent=2)

    def table(self) -> str:
        """A plain-text table of the metrics, one row per variant."""
        lines = [f"{self.faces} faces of {self.people} {self.split} people, degradation {self.degradation!r}, "
                 f"weights {self.weights}",
                 f"{'variant':<10} {'PSNR dB':>8} {'SSIM':>7} {'identity':>9}  meaning"]
        for v in self.variants:
            ident = "-" if v.identity is None else f"{v.identity:.4f}"
            lines.append(f"{v.name:<10} {v.psnr:>8.2f} {v.ssim:>7.4f} {ident:>9}  {VARIANT_HELP[v.name]}")
        lines.append(f"guided beats unguided: PSNR on {self.guided_psnr_win_rate:.0%} of faces"
                     + ("" if self.guided_identity_win_rate is None
                        else f", identity on {self.guided_identity_win_rate:.0%}"))
        return "\n".join(lines)


class CropEmbedder:
    """dlib 128-d descriptors of aligned crops at known landmarks (the faces backend's dlib
    embedder, given a box around the landmarks)."""

    def __init__(self) -> None:
        from albumfix.faces.backends.dlib_backend import DlibModels

        self.embedder = DlibModels.load().embedder()

    def __call__(self, crop: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """crop: (S, S, 3) uint8 RGB; landmarks: (68, 2) crop px -> (128,) float32 unit vector."""
        from albumfix.faces.backends import FaceBox

        x0, y0 = landmarks.min(axis=0)
        x1, y1 = landmarks.max(axis=0)
        box = FaceBox(box=(float(x0), float(y0), float(x1), float(y1)), score=1.0, keypoints=None, detector="given")
        return self.embedder.embed(np.ascontiguousarray(crop), [box], [landmarks.astype(np.float32)])[0]


def _load_model(config: EvalConfig, device):
    """The model to evaluate, in eval mode with spectral norm folded."""
    from albumfix.restore import create_model, fold_spectral_norm
    from albumfix.train.checkpoints import load_ema_from_checkpoint, settle_spectral_norm

    if config.checkpoint:
        model = load_ema_from_checkpoint(config.checkpoint, device)
        settle_spectral_norm(model)
        return fold_spectral_norm(model)
    if not config.weights:
        raise ValueError("evaluate needs weights or a checkpoint")
    return create_model(config.model, weights=config.weights, device=device, fold=True)


def _write_sheet(path: Path, samples: list, unguided: list, guided: list, count: int) -> None:
    rows = [np.hstack([s.lq, u, g, s.ref, s.target]) for s, u, g in zip(samples[:count], unguided, guided)]
    if rows:
        ok, buf = cv2.imencode(".png", np.vstack(rows)[..., ::-1])
        if ok:
            atomic_write_bytes(path, buf.tobytes())


def evaluate(config: EvalConfig) -> EvalReport:
    """Evaluate input / unguided / guided on `config.split` (see the module docstring)."""
    import torch

    from albumfix.devices import resolve_device
    from albumfix.restore.precision import ieee_fp32
    from albumfix.train.dataset import evaluation_samples, load_cache, restore_samples
    from albumfix.train.inference_pairs import evaluation_pairs, load_pairs

    start = time.monotonic()
    torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    cache = load_cache(config.cache)
    if config.pairs:
        pairs = load_pairs(config.pairs, cache)
        chosen = evaluation_pairs(cache, pairs, config.split, config.limit)
        samples, bases = [pairs.sample(cache, int(i)) for i in chosen], pairs.base[chosen]
        degradation = f"inference pairs {Path(config.pairs).name}"
    else:
        samples = evaluation_samples(cache, config.split, config.limit, config.seed, config.degradation)
        bases, degradation = cache.pairs(config.split)[:config.limit], config.degradation
    if not samples:
        raise ValueError(f"no {config.split} pairs in {config.cache}")
    model = _load_model(config, device)
    with ieee_fp32(device):  # the metrics are of the model in fp32, not TF32
        outputs = {"input": [s.lq for s in samples],
                   "unguided": restore_samples(model, samples, False, device, config.batch_size),
                   "guided": restore_samples(model, samples, True, device, config.batch_size)}
    embed = CropEmbedder() if config.identity else None
    truth = [embed(s.target, s.lq_landmarks) for s in samples] if embed else None
    per_face: dict[str, dict[str, np.ndarray]] = {}
    for name, images in outputs.items():
        metrics = {"psnr": np.array([psnr(i, s.target) for i, s in zip(images, samples)]),
                   "ssim": np.array([ssim_luma(i, s.target) for i, s in zip(images, samples)])}
        if embed:
            metrics["identity"] = np.array([float(np.linalg.norm(embed(i, s.lq_landmarks) - t))
                                            for i, s, t in zip(images, samples, truth)])
        per_face[name] = metrics
    variants = [VariantMetrics(name=n, psnr=float(m["psnr"].mean()), ssim=float(m["ssim"].mean()),
                               identity=float(m["identity"].mean()) if "identity" in m else None)
                for n, m in per_face.items()]
    report = EvalReport(
        variants=variants, faces=len(samples), people=len(set(cache.person[bases].tolist())),
        split=config.split, degradation=degradation, weights=config.checkpoint or config.weights,
        guided_psnr_win_rate=float(np.mean(per_face["guided"]["psnr"] > per_face["unguided"]["psnr"])),
        guided_identity_win_rate=(float(np.mean(per_face["guided"]["identity"] < per_face["unguided"]["identity"]))
                                  if embed else None),
        seconds=time.monotonic() - start)
    if config.out:
        atomic_write_bytes(Path(config.out), report.to_json().encode())
    if config.examples:
        _write_sheet(Path(config.examples), samples, outputs["unguided"], outputs["guided"], config.example_count)
    return report
