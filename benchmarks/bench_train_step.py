"""Training speed on this machine: seconds per optimisation step of a recipe, in fp32 (the
baseline, as `albumfix train` runs on a CPU) against bf16 autocast and channels-last memory, and
optionally against other registered model configurations (issue 31, item 3: what buys more
learning per CPU-hour).

Every row runs the trainer's own step (`albumfix.train.trainer`: forward, the recipe's losses
including the identity network, backward, clipping, AdamW, EMA) on the same batches of the
recipe's cache, built once. Rows are timed round-robin for --repeats rounds of --steps steps and
each keeps its fastest round, so load from other processes disturbs every row alike; one warm-up
step per row and round is excluded. The loss of the first batch is printed beside each row (bf16
changes it a little; a large change would say the precision is not usable for training).

    .venv/bin/python benchmarks/bench_train_step.py --recipe tools/albumfix-s128-aware-stage2.toml
    .venv/bin/python benchmarks/bench_train_step.py --rows fp32 bf16 fp32-cl bf16-cl --json runs/bench-train-step.json
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace

import torch

from albumfix.train.dataset import PairStream, collate, load_cache
from albumfix.train.inference_pairs import load_pairs
from albumfix.train.trainer import _build_state, _train_step, apply_overrides, load_train_config

ROWS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "fp32-cl": ("fp32", True), "bf16-cl": ("bf16", True)}


def fixed_batches(config, count: int) -> list:
    """`count` training batches of the recipe's stream (its augmentation and pairs), as the trainer sees them."""
    cache = load_cache(config.cache)
    pairs = load_pairs(config.pairs, cache) if config.pairs else None
    stream = PairStream(cache, cache.pairs("train"), config.augment, config.seed, pairs)
    n = config.batch_size
    return [collate([stream[k * n + i] for i in range(n)]) for k in range(count)]


def channels_last(batch):
    """The batch with its image tensors in channels-last memory."""
    return replace(batch, **{name: getattr(batch, name).contiguous(memory_format=torch.channels_last)
                             for name in ("lq", "ref", "target")})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="tools/albumfix-s128-aware-stage2.toml")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--models", nargs="*", default=[], help="other registered configurations, in fp32")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per row and round")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    base = apply_overrides(load_train_config(args.recipe), {"init_weights": ""})  # speed only: fresh weights
    batches = fixed_batches(base, args.steps + 1)
    rows = {name: (replace(base, precision=precision), layout) for name, (precision, layout) in
            ((r, ROWS[r]) for r in args.rows)}
    rows.update({model: (replace(base, model=model, precision="fp32"), False) for model in args.models})
    states, best, first_loss = {}, {}, {}
    for name, (config, layout) in rows.items():
        state = _build_state(config, device)
        if layout:
            state.model.to(memory_format=torch.channels_last)
            state.ema.to(memory_format=torch.channels_last)
        states[name] = state
        first_loss[name] = _train_step(state, channels_last(batches[0]) if layout else batches[0], config, device)["total"]
    for _ in range(args.repeats):
        for name, (config, layout) in rows.items():
            timed = [channels_last(b) if layout else b for b in batches[1:]]
            start = time.perf_counter()
            for batch in timed:
                _train_step(states[name], batch, config, device)
            best[name] = min(best.get(name, float("inf")), (time.perf_counter() - start) / len(timed))
    baseline = best[next(iter(rows))]
    print(f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}, "
          f"batch {base.batch_size}, {args.recipe}")
    print(f"| row | s/step | speed vs {next(iter(rows))} | first-batch loss |\n|---|---|---|---|")
    for name in rows:
        print(f"| {name} | {best[name]:.2f} | {baseline / best[name]:.2f}x | {first_loss[name]:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"recipe": args.recipe, "threads": args.threads, "torch": torch.__version__,
                       "rows": {n: {"sec_per_step": best[n], "first_loss": first_loss[n]} for n in rows}}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
