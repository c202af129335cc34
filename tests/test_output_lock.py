"""One albumfix process at a time per output folder: a second run exits 5 naming the first, or
waits with --wait; a lock left by a killed process never blocks; concurrent runs end with the
outputs of one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

from albumfix.album.lock import output_lock
from conftest import REPO, cli_command, photo_outputs, restore_all_args, run_cli, seeded_output, tripled_reference
from test_signals import read_until_restored, start_restore


def wait_for_line(stream, text: str) -> None:
    """Read `stream` until a line holds `text`."""
    for line in stream:
        if text in line:
            return
    raise AssertionError(f"the process ended without printing {text!r}")


def test_a_run_or_people_edit_on_a_locked_output_exits_5_naming_the_holder(album_copy, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    with output_lock(out):
        busy = run_cli("restore", str(album_copy), "-o", str(out), "-q")
        edit = run_cli("people", "name", str(album_copy), "someone", "X", "-o", str(out))
        waited = run_cli("scan", str(album_copy), "-o", str(out), "--wait", "0.5")
    assert busy.returncode == 5
    assert f"another albumfix run (pid {os.getpid()}, started " in busy.stderr
    assert f"is using {out}" in busy.stderr and "--wait" in busy.stderr
    assert edit.returncode == 5 and f"pid {os.getpid()}" in edit.stderr
    assert waited.returncode == 5 and "after waiting 0.5 s" in waited.stderr
    assert not (out / "report.html").exists()  # the busy runs did nothing


def test_wait_runs_once_the_holder_is_done(album_copy, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    with output_lock(out):
        proc = subprocess.Popen(cli_command("scan", str(album_copy), "-o", str(out), "--wait", "600", "--json"),
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_line(proc.stderr, "waiting up to 600 s")
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert json.loads(stdout)["summary"]["photos"] == 5


def test_sigterm_ends_a_wait_for_the_lock(album_copy, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    with output_lock(out):
        proc = subprocess.Popen(cli_command("scan", str(album_copy), "-o", str(out), "--wait", "600"),
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_line(proc.stderr, "waiting up to 600 s")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "stopped by SIGTERM before any work was done" in stderr


def test_a_lock_left_by_a_killed_process_never_blocks(album_copy, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    holder = textwrap.dedent(f"""
        import sys, time
        from albumfix.album.lock import output_lock
        with output_lock({str(out)!r}):
            print("locked", flush=True)
            time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], cwd=REPO, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "locked"
    assert run_cli("scan", str(album_copy), "-o", str(out), "-q").returncode == 5
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    scan = run_cli("scan", str(album_copy), "-o", str(out), "-q")
    assert scan.returncode == 0, scan.stderr


def test_concurrent_runs_take_turns_and_end_with_the_outputs_of_one(tripled_album, analysed_index, random_weights,
                                                                    reference_restore, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    first = start_restore(tripled_album, out, random_weights, "--batch-size", "1")
    read_until_restored(first)
    first.send_signal(signal.SIGSTOP)  # the first run holds the lock mid-restoration
    try:
        second = run_cli("restore", str(tripled_album), "-o", str(out), *restore_all_args(random_weights))
        assert second.returncode == 5 and f"(pid {first.pid}, started" in second.stderr
        waiting = subprocess.Popen(cli_command("restore", str(tripled_album), "-o", str(out),
                                               *restore_all_args(random_weights), "--wait", "600", "--json"),
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_line(waiting.stderr, f"(pid {first.pid}, started")
    finally:
        first.send_signal(signal.SIGCONT)
    first_lines = [json.loads(line) for line in first.stdout]
    assert first.wait(timeout=300) == 0, first.stderr.read()
    stdout, stderr = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, stderr
    assert first_lines[-1]["summary"]["pending"] == 0
    assert json.loads(stdout)["summary"]["restored"] == 12  # found done, nothing redone
    assert photo_outputs(out) == tripled_reference(reference_restore)
