"""The same album restored by the local backend and by Ray with 1 and 2 workers (issue 30):
analysis photos/s, restoration faces/s, Ray's start-up apart, the driver's peak memory, the
models' load time, Ray's object store; and what a driver killed mid-restoration costs.

    python benchmarks/bench_backends.py ALBUM [--threads N] [--configs local,ray1,ray2,ray1-kill] [--json FILE]

Each configuration runs in a fresh process (its own peak memory) on a fresh OUT, the driver in
that process (albumfix.pipeline.Pipeline), timed by the progress it reports: the analysis stage
runs from `analyse` to the next stage, restoration from `restore` to the end. Ray starts its own
instance (no --ray-address); its start-up (connecting and asking the nodes) is timed apart,
before the run. Ray with 2 workers gives each `threads` // 2 threads (at least 1).

Model load s: per worker process, the seconds it spent creating its models (Models.load_seconds,
imports included), analysis workers / restoring actors (RayBackend.model_load_s); local: the
analyzer / the engine. Object store (Ray): the bytes in use across the nodes, polled every
STORE_POLL_S from the driver during the run (its peak; a shorter spike can be missed), and the
bytes spilled to disk by the run's end, read before Ray shuts down with it (Ray's
FormatGlobalMemoryInfo, which `ray memory --stats-only` and Ray Data's own stats read).

ray1-kill runs `albumfix restore --backend ray --workers 1 --jsonl` as child processes: once
uninterrupted, then on a fresh OUT SIGKILLed once half of the photos the uninterrupted run
restored are reported restored, then again to the end; the processes the killed driver started
(Ray's) get 30 s to end, then are killed by their ids (named in `outlived_kill`). Seconds
redone = killed + resumed - uninterrupted (each a process's wall seconds, its Ray start-up and
model loads included); committed: photos whose output row was done at the kill (the index's).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fresh_process import measure

CONFIGS = ("local", "ray1", "ray2", "ray1-kill")
STORE_POLL_S = 0.25
MIB = 1024 ** 2


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


class _ObjectStore(threading.Thread):
    """Polls the connected Ray instance's object store (all nodes) every STORE_POLL_S: `peak`,
    the most bytes in use seen; after `stop`, `spilled`, the bytes spilled to disk in all, and
    `capacity`, the bytes it may hold."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        import ray
        from ray._private.internal_api import get_state_from_address

        self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
        self._done = threading.Event()
        self.peak = self.spilled = self.capacity = 0

    def _read(self):
        from ray._private.internal_api import get_memory_info_reply

        stats = get_memory_info_reply(self._state).store_stats
        self.peak = max(self.peak, stats.object_store_bytes_used)
        return stats

    def run(self) -> None:
        while not self._done.wait(STORE_POLL_S):
            self._read()

    def stop(self) -> None:
        self._done.set()
        self.join()
        stats = self._read()
        self.spilled, self.capacity = stats.spilled_bytes_total, stats.object_store_bytes_avail


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
    startup, store = 0.0, None
    if config != "local":
        started = time.perf_counter()
        pipeline.backend.connect()  # now, so the stages' times exclude Ray's start-up
        startup = time.perf_counter() - started
        store = _ObjectStore()
        store.start()
        close = pipeline.backend.close

        def read_the_store_then_close() -> None:  # the run shuts its Ray instance down at its end
            store.stop()
            close()

        pipeline.backend.close = read_the_store_then_close
    started = time.perf_counter()
    report = pipeline.run().to_json()
    end = time.perf_counter()
    analyse_s, photos = clock.seconds("analyse", end)
    restore_s, _ = clock.seconds("restore", end)
    faces = sum(1 for p in report["photos"] for f in p["faces"] if "restored" in f and p["status"] == "restored")
    if store is None:
        loads = pipeline.models.load_seconds
        analysis_load, restore_load = [loads.get("analyzer")], [loads.get("engine")]
    else:
        analysis_load, restore_load = (list(pipeline.backend.model_load_s[s].values()) for s in ("analyse", "restore"))
    return {
        "config": config, "threads_per_worker": worker_threads, "workers": workers or 1,
        "startup_s": round(startup, 2), "run_s": round(end - started, 2),
        "analysed_photos": photos, "analyse_s": round(analyse_s, 2),
        "photos_per_s": round(photos / analyse_s, 3) if analyse_s else None,
        "restored_faces": faces, "restore_s": round(restore_s, 2),
        "faces_per_s": round(faces / restore_s, 3) if restore_s else None,
        "driver_peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "analysis_load_s": [round(s, 2) for s in analysis_load if s is not None],
        "restore_load_s": [round(s, 2) for s in restore_load if s is not None],
        "store_peak_mib": round(store.peak / MIB, 2) if store else None,
        "store_spilled_mib": round(store.spilled / MIB, 2) if store else None,
        "store_capacity_mib": round(store.capacity / MIB, 1) if store else None,
        "error": report["error"], "failed_photos": report["summary"]["failed"],
    }


def _restore_process(album: Path, out: Path, threads: int, kill_at: int | None = None) -> dict:
    """`albumfix restore ALBUM -o OUT --backend ray --workers 1 --jsonl` as a child process, to
    its end or SIGKILLed once `kill_at` photos are reported restored. Returns its wall seconds,
    exit code, photos reported and restored, and the names of the processes it started that
    outlived a kill by 30 s (then killed here by their ids)."""
    import psutil

    command = [sys.executable, "-m", "albumfix.cli", "restore", str(album), "-o", str(out), "--backend", "ray",
               "--workers", "1", "--threads", str(threads), "--jsonl", "-q"]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stderr, \
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True) as proc:
        photos, restored, started_by_it = 0, 0, []
        for line in proc.stdout:
            photo = json.loads(line)
            photos += "path" in photo
            restored += photo.get("status") == "restored"
            if kill_at is not None and restored >= kill_at:
                started_by_it = psutil.Process(proc.pid).children(recursive=True)  # Ray's, orphaned by the kill
                proc.kill()
                break
        code = proc.wait()
        seconds = time.perf_counter() - started
        if code not in (0, 1, -signal.SIGKILL):  # 1: some photo failed
            stderr.seek(0)
            sys.exit(f"albumfix restore failed ({code}): {stderr.read()[-2000:]}")
    _, alive = psutil.wait_procs(started_by_it, timeout=30)
    outlived = []
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            outlived.append(p.name())
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    return {"seconds": seconds, "exit_code": code, "photos": photos, "restored": restored, "outlived": outlived}


def run_killed(album: Path, threads: int) -> dict:
    """ray1-kill: an uninterrupted restore, then one SIGKILLed halfway through restoration and
    resumed (module docstring)."""
    base = Path(tempfile.mkdtemp(prefix="bench-ray1-kill-"))
    whole = _restore_process(album, base / "whole", threads)
    killed = _restore_process(album, base / "out", threads, kill_at=max(1, whole["restored"] // 2))
    with contextlib.closing(sqlite3.connect(base / "out" / ".albumfix" / "index.sqlite")) as db:
        committed, = db.execute("SELECT COUNT(*) FROM outputs WHERE state = 'done'").fetchone()
    resumed = _restore_process(album, base / "out", threads)
    return {
        "config": "ray1-kill", "threads_per_worker": threads, "workers": 1,
        "uninterrupted_s": round(whole["seconds"], 2), "killed_s": round(killed["seconds"], 2),
        "was_killed": killed["exit_code"] == -signal.SIGKILL, "restored_at_kill": killed["restored"],
        "committed_at_kill": committed, "resumed_s": round(resumed["seconds"], 2),
        "redone_s": round(killed["seconds"] + resumed["seconds"] - whole["seconds"], 2),
        "photos": whole["photos"], "restored_photos": whole["restored"], "outlived_kill": killed["outlived"],
        "exit_codes": [whole["exit_code"], killed["exit_code"], resumed["exit_code"]],
    }


def _cell(value) -> str:
    """A table cell: "-" for none, a list's items comma-separated."""
    if value is None or value == []:
        return "-"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def print_tables(rows: list[dict]) -> None:
    """The runs' table, then the kill configurations' table (Markdown)."""
    runs = [r for r in rows if not r["config"].endswith("-kill")]
    kills = [r for r in rows if r["config"].endswith("-kill")]
    if runs:
        print("| backend | workers x threads | start-up s | analysis photos/s | restoration faces/s | run s | "
              "driver peak MiB | model load s (analysis / restoration) | object store peak MiB | spilled MiB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            print(f"| {r['config']} | {r['workers']} x {r['threads_per_worker']} | {r['startup_s']} | "
                  f"{r['photos_per_s']} ({r['analysed_photos']} in {r['analyse_s']} s) | "
                  f"{r['faces_per_s']} ({r['restored_faces']} in {r['restore_s']} s) | {r['run_s']} | "
                  f"{r['driver_peak_mib']} | {_cell(r['analysis_load_s'])} / {_cell(r['restore_load_s'])} | "
                  f"{_cell(r['store_peak_mib'])} | {_cell(r['store_spilled_mib'])} |")
    if kills:
        print()
        print("| backend | uninterrupted s | killed run s | photos committed at kill | resumed run s | seconds redone |")
        print("|---|---|---|---|---|---|")
        for r in kills:
            committed = f"{r['committed_at_kill']} of {r['photos']}" if r["was_killed"] else "not killed: it ended first"
            print(f"| {r['config']} | {r['uninterrupted_s']} | {r['killed_s']} | {committed} | "
                  f"{r['resumed_s']} | {r['redone_s']} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("album", type=Path)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all, per configuration")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: run this configuration
    args = parser.parse_args()
    if args.one:
        album = args.album.resolve()
        row = run_killed(album, args.threads) if args.one == "ray1-kill" else run_one(album, args.one, args.threads)
        print(json.dumps(row))
        return
    rows = [measure(__file__, [str(args.album), "--threads", str(args.threads)], config)
            for config in args.configs.split(",")]
    print_tables(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
