"""SIGINT and SIGTERM stop a run after the photo in hand: the summary of what was done is
printed, nothing is half-written, and the next run ends with the outputs of an uninterrupted one."""
from __future__ import annotations

import json
import signal
import subprocess

import pytest

from conftest import (REPO, cli_command, photo_outputs, restore_all_args, run_cli, seeded_output,
                      tripled_reference)


def start_restore(album, out, weights, *extra: str) -> subprocess.Popen:
    """`albumfix restore --jsonl` over `album` as a child whose stdout is read line by line."""
    command = cli_command("restore", str(album), "-o", str(out), *restore_all_args(weights), "--jsonl", *extra)
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_until_restored(proc: subprocess.Popen) -> list[dict]:
    """The photo lines up to and including the first restored photo."""
    lines = []
    while not lines or lines[-1].get("status") != "restored":
        line = proc.stdout.readline()
        assert line, f"the run ended before restoring a photo: {proc.stderr.read()}"
        lines.append(json.loads(line))
    return lines


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_during_restoration_then_resume(tripled_album, analysed_index, random_weights,
                                                    reference_restore, tmp_path, signum, code):
    out = seeded_output(analysed_index, tmp_path / "out")
    proc = start_restore(tripled_album, out, random_weights, "--batch-size", "1")
    lines = read_until_restored(proc)
    proc.send_signal(signum)
    lines += [json.loads(line) for line in proc.stdout]
    assert proc.wait(timeout=120) == code, proc.stderr.read()
    summary, photos = lines[-1], lines[:-1]
    assert summary["interrupted"] == signum.name and "photos" not in summary
    assert sorted(p["path"] for p in photos) == sorted(f"{c}/{n}" for c in "abc"
                                                       for n in photo_outputs(reference_restore[0]))
    pending = [p for p in photos if p["status"] == "pending"]
    assert pending and summary["summary"]["pending"] == len(pending)  # it stopped early
    assert all(p["status"] in ("restored", "unchanged") for p in photos if p not in pending)
    assert all(f"stopped by {signum.name}" in p["reason"] for p in pending)
    expected = tripled_reference(reference_restore)
    done = photo_outputs(out)
    assert done == {path: expected[path] for path in done}  # what was written is complete
    assert not list(out.rglob(".albumfix-tmp-*"))

    resumed = run_cli("restore", str(tripled_album), "-o", str(out), *restore_all_args(random_weights), "--json", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert photo_outputs(out) == expected
    assert json.loads(resumed.stdout)["summary"]["pending"] == 0
