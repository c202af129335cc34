"""benchmarks/bench_gpu.py: a smoke run on the CPU (tiny model) writes its JSON and table, and a
machine without a CUDA GPU gets one line and a non-zero exit instead of a benchmark."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "bench_gpu.py"


def run_bench(*args: str, **env: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **env)
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180,
                          cwd=REPO, env=environ)


def test_quick_cpu_run_writes_every_row_as_json_and_a_table(tmp_path):
    result = run_bench("--device", "cpu", "--quick", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    [path] = tmp_path.glob("bench_gpu-*.json")
    report = json.loads(path.read_text())
    assert report["environment"]["device"] == "cpu" and report["environment"]["quick"]
    rows = report["rows"]
    assert [(r["method"], r["precision"], r["batch"]) for r in rows] == [("baseline", "fp32", 1)] + [
        ("engine", p, b) for b in (1, 2) for p in ("fp32", "bf16", "fp16")]
    assert all(r["faces_per_s"] > 0 and 2 * r["batch"] <= r["faces"] <= 4 and r["peak_mib"] is None for r in rows)
    assert not any(r["backed_off"] for r in rows)
    assert "| bench-tiny32 | baseline | fp32 | 1 |" in result.stdout


def test_without_a_cuda_gpu_it_says_so_in_one_line_and_fails(tmp_path):
    result = run_bench("--out", str(tmp_path / "out"), CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no CUDA GPU visible" in result.stderr
    assert not (tmp_path / "out").exists()
