"""GPU restoration benchmark: faces/s and peak memory of asffnet512 and albumfix-s128 at fp32, bf16
and fp16 over batch sizes, with the baseline (one face at a time, fp32) measured in the same run.

    make bench-gpu                                          # the same as:
    .venv/bin/python benchmarks/bench_gpu.py --out runs/bench-gpu [--device cuda:N] [--budget 420]
    .venv/bin/python benchmarks/bench_gpu.py --device cpu --quick --out DIR   # smoke run (the tests)

Rows per model: the baseline of benchmarks/bench_restore.py (spectral norm unfolded, each face's
MLS grid in NumPy, fp32, batch 1), then RestoreEngine as `albumfix restore` runs it (spectral norm
folded, channels_last, autocast) at each precision and batch 1, 2, 4, ... Weights are random
(timing only). A row is warmed up by one batch, probed by a second, then timed over enough faces
to last about --row-seconds (at least two batches), the GPU synchronised before and after; its
peak memory is torch.cuda.max_memory_allocated over the timed part. A precision stops growing its
batch once a batch runs out of memory (the engine halved it: the row says `backed_off`).

The sweep is budgeted by time: each model gets an equal share of what is left of --budget seconds,
and a row starts only when its estimated time fits its model's share, so with the default budget
the run ends within 8 minutes, start-up included. It writes DIR/bench_gpu-<UTC time>.json (the
environment and every row) and prints a Markdown table for `docs/BENCHMARKS.md`. Without a CUDA GPU (and
without --quick) it prints one line on stderr and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from albumfix.devices import DeviceError, resolve_device
from albumfix.restore import ASFFNetConfig, create_model, get_config, register_config
from albumfix.restore.engine import RestoreEngine
from bench_restore import NumpyMLSASFFNet, make_jobs, run_baseline

MODELS = ("albumfix-s128", "asffnet512")
PRECISIONS = ("fp32", "bf16", "fp16")
BATCHES = (1, 2, 4, 8, 16, 32, 64)
QUICK_MODEL = ASFFNetConfig(name="bench-tiny32", size=32, extractor_widths=(8, 8, 16), feature_channels=16,
                            mask_widths=(4, 4, 8), decoder_channels=8, asff_blocks=1, extractor_res_blocks=1,
                            mask_radius=1, warp="exact")


@dataclass
class Row:
    """One measurement: `faces` faces restored in `seconds` (wall, s); peak_mib: peak GPU memory
    allocated while timed (MiB; None on the CPU); precision_used: what the engine ran at the end
    (fp32 after a NaN fallback); backed_off: the engine lowered the batch (out of memory)."""

    model: str
    method: str  # "baseline" | "engine"
    precision: str
    precision_used: str
    batch: int
    faces: int
    seconds: float
    faces_per_s: float
    speedup: float  # faces_per_s / the same model's baseline faces_per_s
    peak_mib: float | None
    backed_off: bool


class Clock:
    """Wall time of a device's work: synchronises a GPU before reading the time."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None


def faces_for(seconds_per_face: float, batch: int, args: argparse.Namespace) -> int:
    """Faces to time: about --row-seconds of work, a multiple of `batch`, at least two batches and
    at most --max-faces (or two batches if more)."""
    batches = math.ceil(args.row_seconds / max(seconds_per_face, 1e-9) / batch)
    return min(max(2, batches), max(2, args.max_faces // batch)) * batch


def time_baseline(name: str, clock: Clock, args: argparse.Namespace) -> Row:
    """The baseline row of model `name`: one face at a time, fp32, unfolded, NumPy MLS."""
    torch.manual_seed(0)
    model = NumpyMLSASFFNet(get_config(name)).eval().to(clock.device)
    size = get_config(name).size
    run_baseline(model, make_jobs(size, 1), clock.device)  # warm-up
    start = clock.now()
    run_baseline(model, make_jobs(size, 1, seed=1), clock.device)
    faces = faces_for(clock.now() - start, 1, args)
    jobs = make_jobs(size, faces)
    clock.reset_peak()
    start = clock.now()
    run_baseline(model, jobs, clock.device)
    seconds = clock.now() - start
    return Row(name, "baseline", "fp32", "fp32", 1, faces, seconds, faces / seconds, 1.0, clock.peak_mib(), False)


class EngineRows:
    """Engine rows of one model on one device; `module` is shared by every row (placed once) and
    records the batch size of each call the engine makes (`batches`)."""

    def __init__(self, name: str, clock: Clock) -> None:
        torch.manual_seed(0)
        self.name = name
        self.clock = clock
        self.size = get_config(name).size
        self.module = create_model(name, fold=True).eval()
        self.batches: list[int] = []
        self.module.register_forward_pre_hook(lambda module, args: self.batches.append(args[0].shape[0]))

    def probe(self, precision: str, batch: int) -> tuple[RestoreEngine, float]:
        """A ready engine and its time per face (s) from one batch after a warm-up batch."""
        engine = RestoreEngine(self.module, device=str(self.clock.device), batch_size=batch, precision=precision)
        engine.restore(make_jobs(self.size, batch))
        start = self.clock.now()
        engine.restore(make_jobs(self.size, batch, seed=1))
        return engine, (self.clock.now() - start) / batch

    def time(self, engine: RestoreEngine, precision: str, batch: int, faces: int, baseline: Row) -> Row:
        """The timed row of `engine` over `faces` faces."""
        jobs = make_jobs(self.size, faces, seed=2)
        self.batches.clear()
        self.clock.reset_peak()
        start = self.clock.now()
        engine.restore(jobs)
        seconds = self.clock.now() - start
        backed_off = min(self.batches) < batch or engine.device != str(self.clock.device)
        rate = faces / seconds
        return Row(self.name, "engine", precision, engine.precision, batch, faces, seconds, rate,
                   rate / baseline.faces_per_s, self.clock.peak_mib(), backed_off)


def bench_model(name: str, clock: Clock, args: argparse.Namespace, deadline: float) -> list[Row]:
    """Every row of model `name` that fits before `deadline` (time.perf_counter() s)."""
    baseline = time_baseline(name, clock, args)
    rows = [baseline]
    print(f"  {name} baseline: {baseline.faces_per_s:.2f} faces/s", flush=True)
    engines = EngineRows(name, clock)
    per_face = {p: 0.0 for p in args.precisions}  # last measured s/face: estimates the next probe
    for batch in args.batches:
        for precision in list(per_face):
            if time.perf_counter() + 2 * batch * per_face[precision] >= deadline:
                return rows
            engine, per_face[precision] = engines.probe(precision, batch)
            faces = faces_for(per_face[precision], batch, args)
            if time.perf_counter() + faces * per_face[precision] > deadline:
                return rows
            row = engines.time(engine, precision, batch, faces, baseline)
            rows.append(row)
            peak = "-" if row.peak_mib is None else f"{row.peak_mib:.0f}"
            print(f"  {name} {precision} batch {batch}: {row.faces_per_s:.2f} faces/s, peak {peak} MiB"
                  f"{' (backed off: stops here)' if row.backed_off else ''}", flush=True)
            if row.backed_off:
                del per_face[precision]
    return rows


def environment(device: torch.device, args: argparse.Namespace) -> dict:
    """What the numbers were measured on."""
    env = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
           "budget_s": args.budget, "quick": args.quick}
    if device.type == "cuda":
        env.update(device_name=torch.cuda.get_device_name(device),
                   capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    else:
        env.update(device_name=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return env


def markdown_table(rows: list[Row]) -> str:
    """The rows as a Markdown table (for docs/BENCHMARKS.md)."""
    lines = ["| model | method | precision | batch | faces/s | speed-up | peak MiB |",
             "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        peak = "" if r.peak_mib is None else f"{r.peak_mib:.0f}"
        used = r.precision if r.precision_used == r.precision else f"{r.precision} (ran {r.precision_used})"
        lines.append(f"| {r.model} | {r.method} | {used} | {r.batch}{' (backed off)' * r.backed_off} | "
                     f"{r.faces_per_s:.2f} | {r.speedup:.2f}x | {peak} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for bench_gpu-<UTC time>.json")
    p.add_argument("--device", default="cuda", help="cuda | cuda:N (cpu only with --quick)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the whole sweep")
    p.add_argument("--row-seconds", type=float, default=3.0, help="timed work per row (s)")
    p.add_argument("--max-faces", type=int, default=512, help="most faces timed per row")
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    p.add_argument("--batches", type=int, nargs="+", default=list(BATCHES))
    p.add_argument("--quick", action="store_true",
                   help="smoke run: a tiny model, batches 1 and 2, four faces a row (runs on the CPU)")
    args = p.parse_args(argv)
    if args.quick:
        register_config(QUICK_MODEL, overwrite=True)
        args.models, args.batches, args.max_faces = [QUICK_MODEL.name], [1, 2], 4
    return args


def usable_device(args: argparse.Namespace) -> torch.device | str:
    """The device to measure on, or the one-line reason there is none."""
    if not args.quick and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        return (f"no CUDA GPU visible (torch {torch.__version__}, {build}); this benchmark needs one "
                f"(--device cpu --quick is a smoke run, benchmarks/bench_restore.py measures the CPU)")
    try:
        device = resolve_device(args.device)
    except DeviceError as exc:
        return str(exc)
    if device.type != "cuda" and not args.quick:
        return f"--device {args.device} is not a CUDA GPU; only --quick runs elsewhere"
    return device


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = usable_device(args)
    if isinstance(device, str):
        print(f"bench_gpu: {device}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    env = environment(device, args)
    print("environment:", ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    clock, rows = Clock(device), []
    for index, name in enumerate(args.models):
        share = (args.budget - (time.perf_counter() - started)) / (len(args.models) - index)
        rows += bench_model(name, clock, args, time.perf_counter() + share)
    env["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_gpu-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.json"
    path.write_text(json.dumps({"environment": env, "rows": [asdict(r) for r in rows]}, indent=2))
    print(f"\n{markdown_table(rows)}\n\nwrote {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
