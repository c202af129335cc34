"""Restoration throughput: faces per second of RestoreEngine against a straightforward baseline.

Baseline (measured in the same run, as the authors' code runs): one face at a time, fp32,
spectral norm unfolded (sigma recomputed in every conv call), the MLS grid computed per face in
NumPy float64 (`mls_affine_grid_numpy`) and copied to the device.
Engine: `RestoreEngine` as the CLI uses it (spectral norm folded once, batched torch MLS on the
device, channels_last on CUDA), at batch 1 and at each batch size of --batches, in fp32 and under
autocast (bf16 by default; autocast also runs on the CPU).
Weights are random (timing only). Every row restores the same faces; one warm-up batch per row is
excluded from its time (set --warmup 0 to skip it for slow configurations). Rows are timed
round-robin for --repeats rounds and each keeps its fastest run, so load from other processes on
a shared machine disturbs every row alike.

    .venv/bin/python benchmarks/bench_restore.py --models albumfix-s128 --faces 16 --batches 1 4 8
    .venv/bin/python benchmarks/bench_restore.py --device cuda --json out/bench_restore.json
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from albumfix.devices import resolve_device
from albumfix.restore import ASFFNet, get_config
from albumfix.restore.engine import RestoreEngine, RestoreJob
from albumfix.restore.tensors import images_to_tensor, tensor_to_images
from albumfix.restore.mls import mls_affine_grid_numpy, sample_grid

LARGE_SIZE = 256  # configurations with S >= this use --faces-large


class NumpyMLSASFFNet(ASFFNet):
    """ASFFNet whose guidance warp computes each face's MLS grid in NumPy (float64) on the CPU,
    as the authors do, then samples it with the model's own grid convention."""

    def warp_guidance(
        self, ref_features: torch.Tensor, lq_landmarks: torch.Tensor, ref_landmarks: torch.Tensor
    ) -> torch.Tensor:
        """(B, F, h, w) guidance features -> the same warped onto the LQ geometry."""
        convention = self.config.warp
        src, dst = self.warp_points(lq_landmarks, ref_landmarks)
        anchor = "src" if convention == "published" else "dst"  # see albumfix.restore.mls
        height, width = ref_features.shape[-2:]
        grids = [
            mls_affine_grid_numpy(
                s.cpu().numpy(), d.cpu().numpy(), height, width, self.config.mls_eps, anchor
            )
            for s, d in zip(src, dst)
        ]
        coords = torch.from_numpy(np.stack(grids)).float().to(ref_features.device)
        return sample_grid(ref_features, coords, convention)


@dataclass
class Row:
    """One measurement: `faces` faces restored in `seconds` (wall, s)."""

    model: str
    method: str  # "baseline" | "engine"
    precision: str  # "fp32" | "bf16" | "fp16"
    batch: int
    faces: int
    seconds: float
    faces_per_s: float
    speedup: float  # faces_per_s / the baseline's faces_per_s of the same model


def make_jobs(size: int, count: int, seed: int = 0) -> list[RestoreJob]:
    """`count` random guided jobs of crop side `size` (landmarks in the central 60% of the crop)."""
    rng = np.random.default_rng(seed)
    jobs = []
    for _ in range(count):
        lm = rng.uniform(0.2 * size, 0.8 * size, (68, 2)).astype(np.float32)
        jobs.append(
            RestoreJob(
                lq=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                ref=rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                lq_landmarks=lm,
                ref_landmarks=(lm + rng.normal(0, 2, lm.shape)).astype(np.float32),
            )
        )
    return jobs


def run_baseline(model: NumpyMLSASFFNet, jobs: list[RestoreJob], device: torch.device) -> None:
    """Restore `jobs` one at a time in fp32, as the authors' test script does."""
    with torch.inference_mode():
        for job in jobs:
            out = model(
                images_to_tensor(job.lq[None], device),
                images_to_tensor(job.ref[None], device),
                torch.from_numpy(job.lq_landmarks[None]).to(device),
                torch.from_numpy(job.ref_landmarks[None]).to(device),
            )
            tensor_to_images(out)


@dataclass
class Contender:
    """One row to time: `run` restores all the faces once; `warm` is its untimed warm-up."""

    method: str  # "baseline" | "engine"
    precision: str
    batch: int
    run: Callable[[], object]
    warm: Callable[[], object]


def baseline_contender(
    name: str, jobs: list[RestoreJob], device: torch.device, warmup: int
) -> Contender:
    """The baseline on `jobs`, warmed up on the first `warmup` faces."""
    torch.manual_seed(0)
    model = NumpyMLSASFFNet(get_config(name)).eval().to(device)
    return Contender(
        "baseline",
        "fp32",
        1,
        run=lambda: run_baseline(model, jobs, device),
        warm=lambda: run_baseline(model, jobs[:warmup], device),
    )


def engine_contender(
    name: str, jobs: list[RestoreJob], device: str, batch: int, precision: str, warmup: int
) -> Contender:
    """RestoreEngine at `batch` and `precision` on `jobs`, warmed up by `warmup` batches."""
    torch.manual_seed(0)
    engine = RestoreEngine(
        name, device=device, batch_size=batch, precision=precision, allow_random=True
    )
    return Contender(
        "engine",
        precision,
        batch,
        run=lambda: engine.restore(jobs),
        warm=lambda: [engine.restore(jobs[:batch]) for _ in range(warmup)],
    )


def bench_model(name: str, args: argparse.Namespace) -> list[Row]:
    """All rows of one configuration: the baseline, then the engine per precision and batch.

    Rows are timed round-robin, --repeats rounds, keeping each row's fastest run, so that load
    from other processes on a shared machine disturbs all rows alike.
    """
    size = get_config(name).size
    count = args.faces_large if size >= LARGE_SIZE else args.faces
    jobs = make_jobs(size, count)
    device, warmup = args.device, args.warmup
    contenders = [baseline_contender(name, jobs, resolve_device(device), min(warmup, count))]
    for precision in args.precisions:
        for batch in sorted({b for b in args.batches if b <= count}):
            contenders.append(engine_contender(name, jobs, device, batch, precision, warmup))
    for c in contenders:
        c.warm()
    best = [math.inf] * len(contenders)
    for round_ in range(args.repeats):
        for i, c in enumerate(contenders):
            start = time.perf_counter()
            c.run()
            best[i] = min(best[i], time.perf_counter() - start)
            print(
                f"  round {round_ + 1}: {name} {c.method} {c.precision} batch {c.batch}: "
                f"{count / best[i]:.3f} faces/s (best so far)",
                flush=True,
            )
    base = count / best[0]
    return [
        Row(name, c.method, c.precision, c.batch, count, t, count / t, count / t / base)
        for c, t in zip(contenders, best)
    ]


def print_table(rows: list[Row]) -> None:
    """Fixed-width table; '*' marks each model/precision's best batch."""
    best = {}
    for r in rows:
        key = (r.model, r.method, r.precision)
        if key not in best or r.faces_per_s > best[key].faces_per_s:
            best[key] = r
    print(
        f"{'model':<14} {'method':<9} {'prec':<5} {'batch':>5} {'faces':>5} {'s':>8} "
        f"{'faces/s':>9} {'s/face':>8} {'speed-up':>8}"
    )
    for r in rows:
        mark = "*" if best[(r.model, r.method, r.precision)] is r and r.method == "engine" else " "
        print(
            f"{r.model:<14} {r.method:<9} {r.precision:<5} {r.batch:>5} {r.faces:>5} {r.seconds:>8.2f} "
            f"{r.faces_per_s:>9.3f} {r.seconds / r.faces:>8.2f} {r.speedup:>7.2f}x{mark}"
        )


def environment(device: str) -> dict[str, str | int]:
    """What the numbers were measured on."""
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        name = torch.cuda.get_device_name(resolved)
    else:
        name = platform.processor() or platform.machine()
    return {
        "device": str(resolved),
        "device_name": name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["albumfix-s128", "asffnet512"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--faces", type=int, default=16, help="faces per measurement (S < 256)")
    p.add_argument("--faces-large", type=int, default=2, help="faces per measurement (S >= 256)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"]
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up batches per row")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per row; the fastest is kept")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", metavar="PATH", help="also write the rows and environment as JSON")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(args.device)
    print("environment:", ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    rows = [row for name in args.models for row in bench_model(name, args)]
    print()
    print_table(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "rows": [asdict(r) for r in rows]}, f, indent=2)


if __name__ == "__main__":
    main()
