"""Crop-level restoration by damage level, and the damage estimator's error, on held-out people.

For each damage preset (mild x1-x2, light, default x2-x8, heavy) the first --limit held-out
crops of the training cache are damaged (seeded per crop, as `albumfix eval`), and each model
restores them guided (albumfix's exemplar) and unguided (the input as its own exemplar). Rows:
PSNR gain over the input per preset, so over-correction of mild damage and under-correction of
heavy damage show side by side. For a model with a damage head, the estimator's RMS error and
correlation against the true band levels (albumfix.restore.damage) per band.

    .venv/bin/python benchmarks/bench_damage.py --model albumfix-s128 \\
        --model albumfix-s128-aware=runs/albumfix-s128-aware/albumfix-s128-aware.safetensors [--limit 120]

A model is NAME (its registered weights) or NAME=WEIGHTS. Prints a Markdown table; --out writes JSON.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from albumfix.restore import create_model, find_weights
from albumfix.restore.damage import DAMAGE_BANDS, estimated_and_true_db
from albumfix.train.dataset import collate, evaluation_samples, load_cache, restore_samples
from albumfix.train.metrics import psnr

PRESETS = ("mild", "light", "default", "heavy")


def estimator_error(model, samples) -> dict:
    """RMS error (dB) and Pearson correlation of the predicted band levels, per band."""
    b = collate(samples)
    predicted, true = (t.numpy() for t in estimated_and_true_db(model.damage, b.lq, b.target))
    return {band: {"rms_db": float(np.sqrt(np.mean((predicted[:, k] - true[:, k]) ** 2))),
                   "corr": float(np.corrcoef(predicted[:, k], true[:, k])[0, 1]),
                   "true_mean_db": float(true[:, k].mean())}
            for k, band in enumerate(DAMAGE_BANDS)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("cache/train-s128.npz"))
    parser.add_argument("--model", action="append", required=True, help="NAME or NAME=WEIGHTS")
    parser.add_argument("--limit", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = load_cache(args.cache)
    samples = {p: evaluation_samples(cache, "val", args.limit, degradation=p) for p in PRESETS}
    results = {}
    for spec in args.model:
        name, _, weights = spec.partition("=")
        model = create_model(name, weights=weights or find_weights(name), fold=True)
        rows = {}
        for preset, chosen in samples.items():
            inputs = [psnr(s.lq, s.target) for s in chosen]
            row = {"input_psnr": float(np.mean(inputs))}
            for mode in ("guided", "unguided"):
                out = restore_samples(model, chosen, mode == "guided")
                gains = np.array([psnr(o, s.target) for o, s in zip(out, chosen)]) - np.array(inputs)
                row[mode] = {"gain": float(gains.mean()), "worse": float(np.mean(gains < 0))}
            if model.config.damage_head:
                row["estimator"] = estimator_error(model, chosen)
            rows[preset] = row
        results[spec] = rows
    print(f"held-out crops per preset: {args.limit}\n")
    print("| model | preset | input dB | guided gain | unguided gain | guided worse |")
    print("|---|---|---|---|---|---|")
    for spec, rows in results.items():
        for preset, r in rows.items():
            print(f"| {spec.partition('=')[0]} | {preset} | {r['input_psnr']:.2f} | {r['guided']['gain']:+.2f} | "
                  f"{r['unguided']['gain']:+.2f} | {r['guided']['worse']:.0%} |")
    for spec, rows in results.items():
        if "estimator" in next(iter(rows.values())):
            print(f"\ndamage estimator of {spec.partition('=')[0]}: RMS error dB (correlation) per band")
            print("| preset | " + " | ".join(DAMAGE_BANDS) + " |")
            print("|---|" + "---|" * len(DAMAGE_BANDS))
            for preset, r in rows.items():
                print(f"| {preset} | " + " | ".join(
                    f"{r['estimator'][b]['rms_db']:.1f} ({r['estimator'][b]['corr']:.2f})" for b in DAMAGE_BANDS) + " |")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
