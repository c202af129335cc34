"""The Ray Data backend (`--backend ray`): the same stages as the local run, on a Ray cluster.

The driver (albumfix/pipeline.py) keeps the index, the lock and the reports; this backend only
runs stages and hands their results back, in the driver's order:
- analysis: a Dataset of the canonical analysis groups (albumfix.stages.chunks), each row one
  group of photo *paths* (never their bytes), mapped by stateless tasks of `threads` CPUs; each
  worker process loads the face models once and keeps them for the tasks it runs after;
- restoration: a Dataset of blocks of photo tasks (plain data: paths, landmarks, embeddings)
  through a pool of actors that load the restorer once each (on a GPU with --gpus-per-worker),
  restore, compose and write each photo atomically, and return its PhotoResult.
A face's pixels do not depend on how photos were dealt to workers (albumfix.stages.chunks);
with the same --threads, device and precision the outputs equal the local run's. Every worker
sets torch's thread count explicitly (Ray sets OMP_NUM_THREADS from the CPUs it grants).
An error in one photo fails that photo inside its task; a run-ending error (a model or device
unusable, no space) comes back as such and ends the run; a worker killed mid-task is retried by
Ray (writes are atomic and results deterministic, so a retry writes the same bytes).

Offline and private: usage statistics off, no authentication token written unless the user
set RAY_AUTH_MODE, no runtime environment shipped. Album and OUTPUT must be on a path every node
reads: each node is asked first, and a node that cannot is a usage error (exit 2).
`ray` is imported here only (pip install 'albumfix[ray]').
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from albumfix.errors import AlbumfixError, FatalError, UsageError, one_line
from albumfix.settings import Settings
from albumfix.stages.analyse import PhotoAnalysis, PhotoToAnalyse, analyse_group
from albumfix.stages.chunks import restore_blocks
from albumfix.stages.context import RunContext
from albumfix.stages.models import Models
from albumfix.stages.restore import PhotoResult, PhotoTask, Restorer

log = logging.getLogger("albumfix")

BATCHES_PER_BLOCK = 4  # model batches of faces a restoring actor takes at once (it pads the last)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}

_process_models: dict[str, Models] = {}  # in a Ray worker process: settings' repr -> its Models


def worker_settings(settings: Settings) -> Settings:
    """The settings a worker runs with: --threads CPUs (and torch threads) each, 1 for 0 (a
    node may have many CPUs; the local run's 0, all of this machine's, is no count to copy)."""
    return replace(settings, threads=settings.threads or 1)


def _models(settings: Settings) -> Models:
    """This worker process's Models for `settings` (loaded once, kept for later tasks)."""
    key = repr(settings)
    if key not in _process_models:
        _process_models[key] = Models(settings)
    return _process_models[key]


def _load_seconds() -> float:
    """Seconds this worker process has spent loading models (Models.load_seconds), in all."""
    return sum(s for models in _process_models.values() for s in models.load_seconds.values())


def _run_rows(jobs: list[bytes], work) -> dict:
    """Output columns for a batch of job rows: each pickled job's results, work(*job) pickled,
    or the run-ending error it raised ("fatal": its message; "" when none); the worker process
    ("worker": host:pid) and the seconds the job spent loading models there ("load_s": 0.0
    when they were loaded before)."""
    out: dict[str, list] = {"results": [], "fatal": [], "worker": [], "load_s": []}
    for job in jobs:
        loaded = _load_seconds()
        try:
            results, fatal = pickle.dumps(work(*pickle.loads(job))), ""
        except AlbumfixError as exc:
            results, fatal = pickle.dumps(None), str(exc)
        out["results"].append(results)
        out["fatal"].append(fatal)
        out["worker"].append(f"{socket.gethostname()}:{os.getpid()}")
        out["load_s"].append(_load_seconds() - loaded)
    return out


def _analyse(settings: Settings, index: str, group: list[PhotoToAnalyse]) -> list[PhotoAnalysis]:
    return analyse_group(group, _models(settings).analyzer(), Path(index))


def _restore(settings: Settings, out: str, index: str, tasks: list[PhotoTask]) -> list[PhotoResult]:
    restorer = Restorer(_models(settings), Path(out), Path(index))
    return [r for task in tasks for r in restorer.submit(task)] + restorer.flush()


def _analyse_rows(batch: dict) -> dict:
    """Ray task: job rows (settings, index path, a group of PhotoToAnalyse) -> their PhotoAnalysis lists."""
    return _run_rows(batch["job"], _analyse)


class _RestoringActor:
    """Ray actor: job rows (settings, OUT, index path, a block of PhotoTasks) -> their
    PhotoResult lists, with the engine it loads kept for later blocks. Built without arguments
    (the rows carry them), it restarts cleanly when its process is killed."""

    def __call__(self, batch: dict) -> dict:
        return _run_rows(batch["job"], _restore)


def _can_use(album: str, out: str) -> str:
    """Ray task run on each node: "" when this node reads the album and writes OUTPUT's parent,
    else why not."""
    out_dir = out if os.path.isdir(out) else os.path.dirname(out)
    if not os.access(album, os.R_OK | os.X_OK):
        return f"node {socket.gethostname()} cannot read the album {album}"
    if not os.access(out_dir, os.W_OK | os.X_OK):
        return f"node {socket.gethostname()} cannot write {out_dir}"
    return ""


class RayBackend:
    """Runs the stages on a Ray cluster: the one at `--ray-address`, or a Ray instance started
    for this run (shut down at `close`).

    model_load_s: per stage ("analyse", "restore"), each worker process (host:pid) that loaded
    models for it -> the seconds it spent loading them (a benchmark's number; a restarted actor
    is a new process)."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.settings = worker_settings(ctx.settings)
        self.model_load_s: dict[str, dict[str, float]] = {"analyse": {}, "restore": {}}
        self._connected = False  # this run connected (and disconnects at close)
        self._checked = False

    def connect(self) -> None:
        """Connect and check the nodes now rather than at the first stage (a benchmark times
        Ray's start-up apart)."""
        self._ray()

    def _ray(self):
        """The ray module, connected (unless this process already is: a host application's or a
        test's own connection is used and left open) and checked once: every node reads the
        album and writes OUTPUT."""
        try:
            import ray
        except ImportError as exc:
            raise UsageError("--backend ray needs Ray: pip install 'albumfix[ray]'") from exc
        if not ray.is_initialized():
            self._connect(ray)
        if not self._checked:
            self._configure(ray)
            self._check_nodes(ray)
            self._checked = True
        return ray

    def _connect(self, ray) -> None:
        """Join --ray-address (else RAY_ADDRESS, else start a Ray instance for this run) with
        RAY_ENV's defaults (nothing sent anywhere, no token file); the run's SIGINT/SIGTERM
        handlers stay."""
        for name, value in RAY_ENV.items():
            os.environ.setdefault(name, value)
        logging.getLogger("ray").setLevel(logging.WARNING)
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        address, cpus = self.settings.ray_address or os.environ.get("RAY_ADDRESS"), None
        if not address:  # a Ray instance of our own (even where another runs), with one CPU more than a
            # worker takes at least, so no worker holds every CPU (an actor pool that does can hang: Ray issue 44687)
            address, cpus = "local", max(os.cpu_count() or 1, self.settings.threads + 1)
        try:
            ray.init(address=address, num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise UsageError(f"cannot join the Ray cluster {self.settings.ray_address or '(new)'}: {exc}") from exc
        finally:
            for s, handler in handlers.items():  # the run's stop request keeps SIGINT/SIGTERM
                signal.signal(s, handler)
        self._connected = True

    @staticmethod
    def _configure(ray) -> None:
        """Ray Data as the driver needs it: results in the order given, no progress bars or
        execution logs of its own on stderr."""
        import ray.data

        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)

    def _check_nodes(self, ray) -> None:
        """UsageError when a live node cannot read the album or write OUTPUT."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        check = ray.remote(num_cpus=0)(_can_use)
        nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
        answers = ray.get([check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                           .remote(str(self.ctx.album), str(self.ctx.out)) for node in nodes])
        refused = [a for a in answers if a]
        if refused:
            raise UsageError(f"{refused[0]}: album and OUTPUT must be on a path every Ray node reads")

    def _concurrency(self, ray) -> int:
        """Workers at once: --workers, or the cluster's CPUs over each worker's, kept below the
        cluster's CPUs (an actor pool that takes them all can hang a 2-CPU machine)."""
        cpus = int(ray.cluster_resources().get("CPU", 1))
        fit = max(1, (cpus - 1) // self.settings.threads)
        return min(self.settings.workers, fit) if self.settings.workers else fit

    def analyse(self, groups: Iterable[list[PhotoToAnalyse]]) -> Iterator[list[PhotoAnalysis]]:
        """Each group's PhotoAnalysis list, in the groups' order."""
        rows = [{"job": pickle.dumps((self.settings, str(self.ctx.index_path), g))} for g in groups]
        if not rows:
            return
        ray = self._ray()
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _analyse_rows, batch_size=1, num_cpus=self.settings.threads,
            compute=ray.data.TaskPoolStrategy(size=self._concurrency(ray)))
        yield from self._results(ds, "analyse")

    def restore(self, tasks: Iterable[PhotoTask]) -> Iterator[PhotoResult]:
        """Each photo's PhotoResult, in the tasks' order."""
        job = (self.settings, str(self.ctx.out), str(self.ctx.index_path))
        rows = [{"job": pickle.dumps((*job, b))}
                for b in restore_blocks(tasks, BATCHES_PER_BLOCK * self.settings.batch_size)]
        if not rows:
            return
        ray = self._ray()
        ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _RestoringActor, batch_size=1, num_cpus=self.settings.threads, num_gpus=self.settings.gpus_per_worker,
            compute=ray.data.ActorPoolStrategy(size=self._concurrency(ray)))  # actors restart, tasks retry (Ray Data's defaults)
        for results in self._results(ds, "restore"):
            yield from results

    def _results(self, ds, stage: str) -> Iterator[list]:
        """Each output row's results (a list), in order, its model load time counted in
        model_load_s[stage]; a row that carries a run-ending error ends the run; a stop request
        ends the iteration (Ray cancels the rest)."""
        rows = iter(ds.iter_rows())
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except Exception as exc:  # Ray's own failure (a worker that cannot start, a lost node)
                raise FatalError(f"the Ray run failed: {one_line(exc)}") from exc
            if row["load_s"]:
                loads = self.model_load_s[stage]
                loads[row["worker"]] = loads.get(row["worker"], 0.0) + row["load_s"]
            if row["fatal"]:
                raise FatalError(row["fatal"])
            yield pickle.loads(row["results"])
            if self.ctx.stop.requested:
                return

    def close(self) -> None:
        """Disconnect from the cluster; a Ray instance started for this run stops with it (a
        joined cluster stays up)."""
        if self._connected:
            import ray

            ray.shutdown()
            self._connected = False
