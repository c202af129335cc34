"""albumfix as a pipeline stage: --files-from (newline or NUL-separated, from a file or stdin)
limits a run to the files named, whatever their names; --jsonl streams one photo per line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, cli_command, seeded_output

ODD_NAMES = {  # album name -> sample photo it copies
    "a b.jpg": "2009/podium.jpg",
    "new\nline.jpg": "1998/old print.jpg",
    "tab\tname.png": "scans/coffee.png",
    "ünï ☃.jpg": "2009/oval office.jpg",
    "-dash.jpg": "2009/podium.jpg",
    os.fsdecode(b"latin-\xe9.jpg"): "1998/old print.jpg",  # not UTF-8
    "sub dir/x.jpg": "1975/group.png",
    "unlisted.jpg": "2009/podium.jpg",
    ".hidden.jpg": "2009/podium.jpg",
}


@pytest.fixture()
def odd_album(album_copy, tmp_path) -> Path:
    album = tmp_path / "odd album"
    for name, source in ODD_NAMES.items():
        (album / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(album_copy / source, album / name)
    (tmp_path / "outside.jpg").write_bytes((album_copy / "2009/podium.jpg").read_bytes())
    return album


def run_with_list(album: Path, out: Path, data: bytes, *options: str) -> subprocess.CompletedProcess:
    """`albumfix restore --restore none` with `data` on stdin (bytes in, text out)."""
    result = subprocess.run(cli_command("restore", str(album), "-o", str(out), "--restore", "none", "-q", *options),
                            input=data, capture_output=True, cwd=REPO, timeout=300)
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def test_files_from_stdin_nul_separated_with_odd_names(odd_album, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    listed = [name for name in ODD_NAMES if name not in ("unlisted.jpg", ".hidden.jpg", "sub dir/x.jpg")]
    entries = [*listed, str(odd_album / "sub dir/x.jpg"), "missing.jpg", str(tmp_path / "outside.jpg"), ".hidden.jpg"]
    result = run_with_list(odd_album, out, b"\0".join(os.fsencode(e) for e in entries) + b"\0",
                           "--files-from", "-", "--null", "--json")
    assert result.returncode == 1, result.stderr  # the entries that name no photo failed
    by_path = {p["path"]: p for p in json.loads(result.stdout)["photos"]}
    assert set(by_path) == {*listed, "sub dir/x.jpg", "missing.jpg", str(tmp_path / "outside.jpg"), ".hidden.jpg"}
    for name in [*listed, "sub dir/x.jpg"]:
        assert by_path[name]["status"] == "unchanged", by_path[name]
        assert (out / name).read_bytes() == (odd_album / name).read_bytes()
    assert "no such file" in by_path["missing.jpg"]["reason"]
    assert "not inside the album" in by_path[str(tmp_path / "outside.jpg")]["reason"]
    assert "not a photo file of the album" in by_path[".hidden.jpg"]["reason"]
    assert not (out / "unlisted.jpg").exists()


def test_jsonl_streams_the_photo_objects_of_json(odd_album, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    from_cwd = os.path.relpath(odd_album / "ünï ☃.jpg", REPO)  # as `find ALBUM` prints it
    (tmp_path / "list.txt").write_text(f"a b.jpg\n./-dash.jpg\n{from_cwd}\nscans/\n")
    options = ("--files-from", str(tmp_path / "list.txt"))
    streamed = run_with_list(odd_album, out, b"", *options, "--jsonl")
    lines = [json.loads(line) for line in streamed.stdout.splitlines()]  # every line is one JSON document
    assert streamed.returncode == 1, streamed.stderr  # `scans/` names no photo
    document = run_with_list(odd_album, out, b"", *options, "--json")
    whole = json.loads(document.stdout)
    photos, summary = lines[:-1], lines[-1]
    key = lambda p: p["path"]  # noqa: E731
    assert sorted(photos, key=key) == sorted(whole["photos"], key=key)
    assert sorted(map(key, photos)) == ["-dash.jpg", "a b.jpg", "scans/", "ünï ☃.jpg"]
    del whole["photos"], whole["summary"]["seconds"], summary["summary"]["seconds"]
    assert summary == whole


def test_what_a_library_prints_during_a_run_goes_to_stderr(tmp_path):
    """stdout carries albumfix's JSON lines only (Ray, for one, prints its workers' errors on
    stdout): a print from inside the run lands on stderr."""
    album = tmp_path / "album"
    album.mkdir()
    (album / "blank.png").write_bytes(b"")  # fails to decode: one photo line
    noisy = ("import sys\nimport albumfix.pipeline as pipeline\nreal = pipeline.Pipeline.run\n"
             "def run(self, restore=True):\n    print('(raylet) noise from a library')\n    return real(self, restore)\n"
             "pipeline.Pipeline.run = run\nfrom albumfix.cli import main\nmain()\n")
    result = subprocess.run([sys.executable, "-c", noisy, "scan", str(album), "-o", str(tmp_path / "out"), "--jsonl"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # the blank file failed
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("path") for line in lines] == ["blank.png", None]
    assert "noise from a library" in result.stderr
