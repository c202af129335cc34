"""`--backend ray`: the same run on a Ray cluster (albumfix.distributed.ray_cluster) gives the
local run's outputs and index, byte for byte; a corrupt photo fails alone; a killed worker or a
killed driver changes nothing in the end; a two-node cluster works; no Ray process outlives the
tests. One small cluster (ray.cluster_utils.Cluster, CPUs pinned, object store small) serves
the module; every run is a separate driver process joining it, as a user's would."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time

import psutil
import pytest

from albumfix.distributed import ray_cluster
from albumfix.distributed.ray_cluster import RayBackend, _can_use, _models, _run_rows, worker_settings
from albumfix.settings import Settings
from albumfix.stages.context import RunContext
from albumfix.stages.models import cpu_threads
from conftest import REPO, cli_command, photo_outputs, restore_all_args, run_cli, seeded_output

THREADS = cpu_threads(0)  # the local reference run's torch threads (its --threads 0)


def _ray_processes() -> set[int]:
    """Process ids of Ray's own processes on this machine (gcs, raylet, agents, workers)."""
    found = set()
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        text = " ".join(proc.info["cmdline"] or []) + " " + (proc.info["name"] or "")
        if "ray::" in text or "/ray/" in text or "raylet" in text or "gcs_server" in text:
            found.add(proc.info["pid"])
    return found


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster with THREADS + 1 logical CPUs (workers of THREADS threads, one
    at a time, below the cluster's CPUs) and a 100 MB object store; every Ray process it or the
    tests started is gone afterwards."""
    os.environ.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
    from ray.cluster_utils import Cluster

    before = _ray_processes()
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": THREADS + 1, "object_store_memory": 100 * 1024 ** 2, "include_dashboard": False})
    yield cluster
    cluster.shutdown()
    deadline = time.monotonic() + 30
    while (left := _ray_processes() - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:  # e.g. agents a SIGKILLed driver's session left: reaped by their ids
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    assert not left, f"Ray processes left running: {sorted(left)}"


def _ray_args(cluster, weights, *more: str) -> list[str]:
    return [*restore_all_args(weights), "--backend", "ray", "--ray-address", cluster.address,
            "--threads", str(THREADS), *more]


SMALL_BATCHES = ("--batch-size", "1")  # blocks of 4 restorations: the tripled album's 15 in 4 blocks


@pytest.fixture(scope="module")
def tripled_small_batches(tripled_album, analysed_index, random_weights, tmp_path_factory) -> dict[str, bytes]:
    """The outputs of a local run over tripled_album at SMALL_BATCHES (the shape changes the
    last bits of some faces, so Ray runs at that batch size compare with this)."""
    out = seeded_output(analysed_index, tmp_path_factory.mktemp("tripled-small") / "out")
    result = run_cli("restore", str(tripled_album), "-o", str(out), *restore_all_args(random_weights),
                     *SMALL_BATCHES, "-q")
    assert result.returncode == 0, result.stderr
    return photo_outputs(out)


def _index_rows(out) -> dict[str, list]:
    """The index's faces, photos and outputs (without times and model seconds)."""
    with sqlite3.connect(out / ".albumfix" / "index.sqlite") as db:
        rows = {table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
                for table in ("faces", "photos")}
        outputs = []
        for relpath, target, key, state, status, detail in db.execute(
                "SELECT relpath, output_relpath, output_key, state, status, detail FROM outputs ORDER BY relpath"):
            detail = json.loads(detail)
            for info in detail.get("restored", {}).values():
                info.pop("seconds")
            outputs.append((relpath, target, key, state, status, detail))
    return {**rows, "outputs": outputs}


def test_a_ray_run_equals_the_local_run_and_a_rerun_does_nothing(cluster, album_copy, analysed_index,
                                                                  reference_restore, random_weights, tmp_path):
    out = tmp_path / "out"  # no index: analysis runs on the cluster too
    result = run_cli("restore", str(album_copy), "-o", str(out), *_ray_args(cluster, random_weights), "--json", "-q")
    assert result.returncode == 0, result.stderr
    reference, reference_json = reference_restore
    assert photo_outputs(out) == photo_outputs(reference)
    assert _index_rows(out) == _index_rows(reference)
    with sqlite3.connect(analysed_index) as db:  # the local scan's analysis, row for row
        assert sorted(db.execute("SELECT * FROM faces").fetchall()) == _index_rows(out)["faces"]
    data = json.loads(result.stdout)
    assert data["summary"] | {"seconds": 0} == reference_json["summary"] | {"seconds": 0}
    written = {p: (out / p).stat().st_mtime_ns for p in photo_outputs(out)}
    again = run_cli("restore", str(album_copy), "-o", str(out), *_ray_args(cluster, random_weights), "--json", "-q")
    assert again.returncode == 0, again.stderr
    assert {p: (out / p).stat().st_mtime_ns for p in photo_outputs(out)} == written
    assert [p["status"] for p in json.loads(again.stdout)["photos"]] == [p["status"] for p in data["photos"]]


def test_a_corrupt_photo_fails_alone(cluster, album_copy, analysed_index, reference_restore, random_weights, tmp_path):
    album = tmp_path / "album"
    shutil.copytree(album_copy, album)
    (album / "broken.jpg").write_bytes((album_copy / "2009/podium.jpg").read_bytes()[:400])
    out = seeded_output(analysed_index, tmp_path / "out")
    result = run_cli("restore", str(album), "-o", str(out), *_ray_args(cluster, random_weights), "--json", "-q")
    assert result.returncode == 1, result.stderr  # some photo failed
    photos = {p["path"]: p for p in json.loads(result.stdout)["photos"]}
    assert photos.pop("broken.jpg")["status"] == "failed"
    assert all(p["status"] in ("restored", "unchanged") for p in photos.values())
    assert photo_outputs(out) == photo_outputs(reference_restore[0])


def _run_and_kill(command: list[str], kill) -> tuple[int, list[dict], str]:
    """Run a `restore --jsonl` driver; kill(proc, lines) is called after each line it prints
    and returns True once it has struck. Returns (exit code, the photo lines, stderr)."""
    with tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
        lines, struck = [], kill(proc, [])
        for line in proc.stdout:
            lines.append(json.loads(line))
            struck = struck or kill(proc, lines)
        code = proc.wait()
        stderr.seek(0)
        return code, [line for line in lines if "path" in line], stderr.read()


def test_a_killed_worker_is_retried_and_the_outputs_do_not_change(cluster, tripled_album, analysed_index,
                                                                   tripled_small_batches, random_weights, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")  # each copy's analysis is the sample album's
    killed = []

    def kill_the_restoring_worker(proc, lines) -> bool:
        if killed:
            return True
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            workers = [p for p in psutil.process_iter(["pid", "cmdline"])
                       if "_RestoringActor" in " ".join(p.info["cmdline"] or [])]
            if workers:
                time.sleep(1)  # loading its model or restoring its first block: the work takes far longer
                os.kill(workers[0].info["pid"], signal.SIGKILL)
                killed.append(workers[0].info["pid"])
                return True
            time.sleep(0.2)
        return True

    code, lines, stderr = _run_and_kill(
        cli_command("restore", str(tripled_album), "-o", str(out), *_ray_args(cluster, random_weights, *SMALL_BATCHES),
                    "--jsonl"),
        kill_the_restoring_worker)
    assert killed, "no restoring worker was seen"
    assert code == 0, stderr
    assert len(lines) == 15 and all(line["status"] in ("restored", "unchanged") for line in lines)
    assert photo_outputs(out) == tripled_small_batches


def test_a_stopped_then_killed_driver_resumes_to_the_same_outputs(cluster, tripled_album, analysed_index,
                                                                   tripled_small_batches, random_weights, tmp_path):
    """SIGTERM stops a Ray run as it stops a local one (exit 143, the photos not done reported
    pending); a driver then killed with SIGKILL mid-run leaves nothing the next run cannot
    finish, to the local run's bytes."""
    out = seeded_output(analysed_index, tmp_path / "out")
    args = _ray_args(cluster, random_weights, *SMALL_BATCHES)
    command = cli_command("restore", str(tripled_album), "-o", str(out), *args, "--jsonl")

    def after_the_first_restored_photo(signum):
        def strike(proc, lines) -> bool:
            if any(line.get("status") == "restored" for line in lines):
                proc.send_signal(signum)
                return True
            return False
        return strike

    code, lines, stderr = _run_and_kill(command, after_the_first_restored_photo(signal.SIGTERM))
    assert code == 143, stderr
    statuses = [line["status"] for line in lines]
    assert len(lines) == 15 and "pending" in statuses and "restored" in statuses
    code, lines, _ = _run_and_kill(command, after_the_first_restored_photo(signal.SIGKILL))
    assert code == -signal.SIGKILL and 1 <= sum(line["status"] == "restored" for line in lines) < 15
    result = run_cli("restore", str(tripled_album), "-o", str(out), *args, "--json", "-q")
    assert result.returncode == 0, result.stderr
    assert photo_outputs(out) == tripled_small_batches


def test_a_two_node_cluster_gives_the_same_outputs(cluster, album_copy, analysed_index, reference_restore,
                                                   random_weights, tmp_path):
    node = cluster.add_node(num_cpus=THREADS, object_store_memory=100 * 1024 ** 2)
    try:
        out = seeded_output(analysed_index, tmp_path / "out")
        result = run_cli("restore", str(album_copy), "-o", str(out), *_ray_args(cluster, random_weights), "--json", "-q")
        assert result.returncode == 0, result.stderr
        assert photo_outputs(out) == photo_outputs(reference_restore[0])
    finally:
        cluster.remove_node(node)


def test_a_node_that_cannot_read_the_album_is_named(tmp_path):
    (tmp_path / "out").mkdir()
    assert _can_use(str(tmp_path), str(tmp_path / "out")) == ""
    assert "cannot read the album" in _can_use(str(tmp_path / "not-mounted-here"), str(tmp_path / "out"))
    assert "cannot write" in _can_use(str(tmp_path), str(tmp_path / "missing" / "out"))


class _Rows:
    """A Dataset's stand-in: iter_rows over given rows."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def iter_rows(self):
        return iter(self.rows)


def test_a_worker_reports_its_model_load_once_and_the_driver_counts_it_per_worker(tmp_path, monkeypatch):
    """The job that loads a worker's models reports the seconds in its row (`load_s`), the next
    one 0.0; the driver adds them up per stage and worker process, results unchanged."""
    monkeypatch.setattr(ray_cluster, "_process_models", {})
    (tmp_path / "album").mkdir()
    settings = worker_settings(Settings(output=tmp_path / "out").validate())

    def analyse_nothing() -> list:
        _models(settings).analyzer()
        return []

    batches = [_run_rows([pickle.dumps(())], analyse_nothing) for _ in range(2)]
    rows = [{column: values[0] for column, values in batch.items()} for batch in batches]
    assert rows[0]["load_s"] > 0 and rows[1]["load_s"] == 0.0
    assert rows[0]["worker"] == rows[1]["worker"]
    backend = RayBackend(RunContext.create(tmp_path / "album", settings))
    assert list(backend._results(_Rows(rows), "analyse")) == [[], []]
    assert backend.model_load_s == {"analyse": {rows[0]["worker"]: rows[0]["load_s"]}, "restore": {}}
