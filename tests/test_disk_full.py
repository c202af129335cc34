"""A write that fails for lack of space stops the run (exit 4, the folder named), leaves no temp
file and no partial output, and the next run with space resumes to the outputs of one run.

The lack of space is real: the child process may write no file larger than 150 KB
(RLIMIT_FSIZE; writes past it fail with EFBIG). At batch size 1 the first write above that is
the restored 1975/group.png (181 KB), the album's first photo, so the run stops with no photo
written. (At batch size 8 it would be the copy of scans/coffee.png, 449 KB: the same writer.)"""
from __future__ import annotations

import json
import resource
import signal
import subprocess

from conftest import REPO, cli_command, photo_outputs, restore_all_args, run_cli, seeded_output

FILE_SIZE_LIMIT = 150_000


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death (Python does so too)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_no_space_stops_the_run_and_the_next_run_resumes(album_copy, analysed_index, random_weights,
                                                         reference_restore, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    command = cli_command("restore", str(album_copy), "-o", str(out), *restore_all_args(random_weights),
                          "--batch-size", "1", "--json", "-q")
    full = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=_limit_file_size)
    assert full.returncode == 4, full.stderr
    message = f"no space left to write in {out / '1975'}"
    assert message in full.stderr
    data = json.loads(full.stdout)  # the summary of what was done is still printed
    assert message in data["error"]
    assert {p["path"]: p["status"] for p in data["photos"]} == {
        "1975/group.png": "pending", "1998/old print.jpg": "pending", "2009/oval office.jpg": "pending",
        "2009/podium.jpg": "pending", "scans/coffee.png": "pending"}
    assert photo_outputs(out) == {}  # no partial output
    assert not list(out.rglob(".albumfix-tmp-*"))  # and no temp file
    assert not (out / "report.html").exists()

    resumed = run_cli("restore", str(album_copy), "-o", str(out), *restore_all_args(random_weights), "--json", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert photo_outputs(out) == photo_outputs(reference_restore[0])
