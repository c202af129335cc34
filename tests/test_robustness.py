"""Bad input never stops a run, and a run killed with SIGKILL at any moment resumes to exactly
the outputs of an uninterrupted run."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, cli_command, comparable_photos, photo_outputs, run_cli

def _nasty_album(root: Path, album_copy: Path) -> dict[str, str]:
    """Writes an album of bad files beside two good ones; returns bad name -> expected reason."""
    album = root / "nasty"
    album.mkdir()
    shutil.copy2(album_copy / "2009/podium.jpg", album / "good.jpg")
    shutil.copy2(album_copy / "scans/coffee.png", album / "no_face.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(album / "tiny.png")
    (album / "zero.jpg").write_bytes(b"")
    jpeg = (album_copy / "2009/podium.jpg").read_bytes()
    (album / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    (album / "text.jpg").write_text("just some notes, not a photo\n")
    (album / "unreadable.jpg").write_bytes(jpeg)
    (album / "unreadable.jpg").chmod(0o000)
    buf = io.BytesIO()
    Image.new("L", (5000, 4000), 128).save(buf, format="PNG")
    (album / "huge.png").write_bytes(buf.getvalue())
    png_named_jpg = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(png_named_jpg, format="PNG")
    (album / "png named.jpg").write_bytes(png_named_jpg.getvalue())
    return {"zero.jpg": "empty file", "truncated.jpg": "not a readable image",
            "text.jpg": "not a readable image", "unreadable.jpg": "cannot read",
            "huge.png": "too large"}


def test_nasty_album_reports_each_bad_file_and_finishes_the_rest(album_copy, tmp_path):
    expected = _nasty_album(tmp_path, album_copy)
    out = tmp_path / "out"
    result = run_cli("restore", str(tmp_path / "nasty"), "-o", str(out), "--json", "--restore", "none",
                     "--no-cnn-fallback", "--max-megapixels", "10", honour_permissions=True)
    assert result.returncode == 1, result.stderr
    data = json.loads(result.stdout)
    by_path = {p["path"]: p for p in data["photos"]}
    failed = {p for p, v in by_path.items() if v["status"] == "failed"}
    assert failed == set(expected)
    for name, reason in expected.items():
        assert reason in by_path[name]["reason"], by_path[name]
        assert "\n" not in by_path[name]["reason"]
        assert name in result.stderr  # also in the log
    for ok in ("good.jpg", "no_face.png", "tiny.png", "png named.jpg"):
        assert by_path[ok]["status"] == "unchanged"
        assert (out / ok).read_bytes() == (tmp_path / "nasty" / ok).read_bytes()
    assert data["summary"]["failed"] == len(expected)


def test_sigkill_at_any_moment_then_rerun_gives_identical_outputs(album_copy, random_weights, tmp_path):
    args = ["--weights", str(random_weights), "--restore", "all", "--no-cnn-fallback", "--json", "-q"]
    reference_out = tmp_path / "reference"
    started = time.perf_counter()
    reference = run_cli("restore", str(album_copy), "-o", str(reference_out), *args)
    total = time.perf_counter() - started
    assert reference.returncode == 0, reference.stderr
    expected_files = photo_outputs(reference_out)
    expected_json = comparable_photos(json.loads(reference.stdout)["photos"])
    assert len(expected_files) == 5

    for fraction in (0.2, 0.45, 0.65, 0.8, 0.95):
        out = tmp_path / f"killed-{fraction}"
        proc = subprocess.Popen(cli_command("restore", str(album_copy), "-o", str(out), *args),
                                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(total * fraction)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resumed = run_cli("restore", str(album_copy), "-o", str(out), *args)
        assert resumed.returncode == 0, resumed.stderr
        assert photo_outputs(out) == expected_files, f"killed at {fraction:.0%} of the run"
        assert comparable_photos(json.loads(resumed.stdout)["photos"]) == expected_json
        assert not list(out.rglob(".albumfix-tmp-*"))
