"""The same album restored by the local backend and by Ray with 1 and 2 workers (issue 30):
analysis photos/s, restoration faces/s, Ray's start-up apart, the driver's peak memory.

    python benchmarks/bench_backends.py ALBUM [--threads N] [--configs local,ray1,ray2] [--json FILE]

Each configuration runs in a fresh process (its own peak memory) on a fresh OUT, the driver in
that process (albumfix.pipeline.Pipeline), timed by the progress it reports: the analysis stage
runs from `analyse` to the next stage, restoration from `restore` to the end. Ray starts its own
instance (no --ray-address); its start-up (connecting and asking the nodes) is timed apart,
before the run. Ray with 2 workers gives each `threads` // 2 threads (at least 1).
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from fresh_process import measure

CONFIGS = ("local", "ray1", "ray2")


class _Clock:
    """A Progress that records when each stage starts and how many items it has."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, float, int]] = []

    def stage(self, name: str, total: int) -> None:
        self.starts.append((name, time.perf_counter(), total))

    def advance(self, n: int = 1) -> None:
        pass

    def seconds(self, name: str, end: float) -> tuple[float, int]:
        """(seconds, items) of the stage `name`: from its start to the next stage's (or `end`)."""
        for k, (stage, start, total) in enumerate(self.starts):
            if stage == name:
                until = self.starts[k + 1][1] if k + 1 < len(self.starts) else end
                return until - start, total
        return 0.0, 0


def run_one(album: Path, config: str, threads: int) -> dict:
    """Restore `album` into a fresh OUT with one configuration, in this process."""
    from albumfix.pipeline import Pipeline
    from albumfix.settings import Settings

    workers = {"local": 0, "ray1": 1, "ray2": 2}[config]
    worker_threads = max(1, threads // workers) if workers else threads
    out = Path(tempfile.mkdtemp(prefix=f"bench-{config}-")) / "out"
    settings = Settings(output=out, threads=worker_threads, backend="local" if config == "local" else "ray",
                        workers=workers).validate()
    clock = _Clock()
    pipeline = Pipeline(album, settings, progress=clock)
    startup = 0.0
    if config != "local":
        started = time.perf_counter()
        pipeline.backend.connect()  # now, so the stages' times exclude Ray's start-up
        startup = time.perf_counter() - started
    started = time.perf_counter()
    report = pipeline.run().to_json()
    end = time.perf_counter()
    analyse_s, photos = clock.seconds("analyse", end)
    restore_s, _ = clock.seconds("restore", end)
    faces = sum(1 for p in report["photos"] for f in p["faces"] if "restored" in f and p["status"] == "restored")
    return {
        "config": config, "threads_per_worker": worker_threads, "workers": workers or 1,
        "startup_s": round(startup, 2), "run_s": round(end - started, 2),
        "analysed_photos": photos, "analyse_s": round(analyse_s, 2),
        "photos_per_s": round(photos / analyse_s, 3) if analyse_s else None,
        "restored_faces": faces, "restore_s": round(restore_s, 2),
        "faces_per_s": round(faces / restore_s, 3) if restore_s else None,
        "driver_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "error": report["error"], "failed_photos": report["summary"]["failed"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("album", type=Path)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all, per configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: run this configuration
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.album.resolve(), args.one, args.threads)))
        return
    rows = [measure(__file__, [str(args.album), "--threads", str(args.threads)], config)
            for config in args.configs.split(",")]
    print("| backend | workers x threads | start-up s | analysis photos/s | restoration faces/s | run s | driver peak MiB |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['workers']} x {r['threads_per_worker']} | {r['startup_s']} | "
              f"{r['photos_per_s']} ({r['analysed_photos']} in {r['analyse_s']} s) | "
              f"{r['faces_per_s']} ({r['restored_faces']} in {r['restore_s']} s) | {r['run_s']} | {r['driver_peak_mib']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
