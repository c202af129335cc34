"""`albumfix restore` through the command line: what it writes besides the photos (report.html,
the --save-faces strips), config files, `--overwrite if-newer` against a newer foreign file, and
a dry run over an existing index."""
from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image

from albumfix.restore.blend import STRIP_EMPTY_GREY
from conftest import restore_all_args, run_cli, seeded_output

CROP = 128  # albumfix-s128's face crop: a strip is CROP x 3 CROP


@pytest.fixture(scope="module")
def saved_faces(album_copy, analysed_index, random_weights, tmp_path_factory) -> tuple[Path, dict]:
    """(OUT, JSON) of one `restore --restore all --save-faces` of the sample album."""
    out = seeded_output(analysed_index, tmp_path_factory.mktemp("save-faces") / "out")
    result = run_cli("restore", str(album_copy), "-o", str(out), *restore_all_args(random_weights), "--save-faces",
                     "--json", "-q")
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


def restored_faces(data: dict) -> dict[str, dict]:
    """face id -> face object, for the faces a run restored."""
    return {f["id"]: f for p in data["photos"] for f in p["faces"] if "restored" in f}


def test_save_faces_writes_one_strip_per_restored_face(saved_faces):
    out, data = saved_faces
    faces = restored_faces(data)
    strips = sorted((out / ".albumfix" / "faces").iterdir())
    assert {p.name for p in strips} == {f"{face_id}.png" for face_id in faces}
    guided = {face_id for face_id, f in faces.items() if f["restored"]["exemplar"]}
    assert guided and guided != set(faces)  # the sample album has guided and unguided faces
    for path in strips:
        strip = np.asarray(Image.open(path).convert("RGB"))
        assert strip.shape == (CROP, 3 * CROP, 3)  # LQ | exemplar | restored
        exemplar_panel = strip[:, CROP:2 * CROP]
        if path.stem in guided:
            assert exemplar_panel.std() > 10  # a face, not the empty panel
        else:
            assert (exemplar_panel == STRIP_EMPTY_GREY).all()
        assert strip[:, :CROP].std() > 10 and strip[:, 2 * CROP:].std() > 10
        # the report shows the same strip (as a JPEG thumbnail)
        thumb = np.asarray(Image.open(out / ".albumfix" / "report" / f"{path.stem}.jpg").convert("RGB"))
        assert thumb.shape == strip.shape
        assert np.abs(thumb.astype(float) - strip).mean() < 3


class _Page(HTMLParser):
    """The parts of report.html a reader sees: headings, images, captions, the summary table."""

    def __init__(self):
        super().__init__()
        self.headings: list[str] = []
        self.images: list[dict] = []
        self.captions: list[str] = []
        self.table: dict[str, str] = {}
        self._tag, self._th = None, None

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        if tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        self._tag = None

    def handle_data(self, data):
        if self._tag == "h2":
            self.headings.append(data)
        elif self._tag == "figcaption":
            self.captions.append(data)
        elif self._tag == "th":
            self._th = data
        elif self._tag == "td":
            self.table[self._th] = data


def test_report_html_shows_each_restored_photo_before_and_after_with_its_faces(album_copy, saved_faces):
    out, data = saved_faces
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    restored = [p for p in data["photos"] if p["status"] == "restored"]
    assert len(restored) == 4
    assert page.headings == [p["path"] for p in restored]  # the faceless coffee.png is not shown
    assert {k: page.table[k] for k in ("photos", "restored", "unchanged", "failed")} == {
        k: str(data["summary"][k]) for k in ("photos", "restored", "unchanged", "failed")}
    target = lambda image: (out / unquote(image["src"])).resolve()  # noqa: E731  (links are relative to OUT)
    befores = [target(i) for i in page.images if i["alt"] == "before"]
    afters = [target(i) for i in page.images if i["alt"] == "after"]
    assert befores == [(album_copy / p["path"]).resolve() for p in restored]  # the originals, in the album
    assert afters == [(out / p["output"]).resolve() for p in restored]
    assert all(path.is_file() for path in afters)
    strips = [target(i) for i in page.images if i["alt"] == "LQ | exemplar | restored"]
    faces = restored_faces(data)
    assert strips == [(out / ".albumfix" / "report" / f"{face_id}.jpg").resolve() for face_id in faces]
    assert all(path.is_file() for path in strips)
    face_captions = [c for c in page.captions if c not in ("before", "after")]
    assert len(face_captions) == len(faces)
    for caption, (face_id, face) in zip(face_captions, faces.items()):
        exemplar = face["restored"]["exemplar"]
        assert caption.startswith(f"{face_id}: ")
        assert (f"exemplar {exemplar}" if exemplar else "no exemplar (unguided)") in caption


def test_config_file_sets_restore_settings_and_flags_override_it(album_copy, analysed_index, tmp_path,
                                                                 monkeypatch):
    def faces_by_action(*args: str) -> dict[str, list[str]]:
        result = run_cli("restore", str(album_copy), "-o", str(out), *args, "--json", "-q")
        assert result.returncode == 0, result.stderr
        actions: dict[str, list[str]] = {}
        for photo in json.loads(result.stdout)["photos"]:
            for face in photo["faces"]:
                actions.setdefault(face["action"], []).append(photo["path"])
        return actions

    out = seeded_output(analysed_index, tmp_path / "out")
    everything = tmp_path / "all.toml"
    everything.write_text('restore = "all"\n')
    # by default the sharp 2009 photos guide the others and are not restored themselves
    assert "2009/podium.jpg" in faces_by_action("--dry-run").get("exemplar", [])
    # restore = "all" from the file: every usable face is restored, the sharp ones too
    by_file = faces_by_action("--config", str(everything), "--dry-run")
    assert "2009/podium.jpg" in by_file["restore"] and "exemplar" not in by_file
    monkeypatch.setenv("ALBUMFIX_CONFIG", str(everything))  # the same file named by the environment
    assert faces_by_action("--dry-run") == by_file
    monkeypatch.delenv("ALBUMFIX_CONFIG")
    # a flag wins over the file
    assert "restore" not in faces_by_action("--config", str(everything), "--restore", "none", "--dry-run")
    # and a real run with restore = "none" from a file writes the photos unchanged
    nothing = tmp_path / "none.toml"
    nothing.write_text('restore = "none"\n')
    assert "restore" not in faces_by_action("--config", str(nothing))
    for photo in ("1975/group.png", "1998/old print.jpg", "2009/podium.jpg"):
        assert (out / photo).read_bytes() == (album_copy / photo).read_bytes()


def test_overwrite_if_newer_keeps_a_newer_foreign_file(album_copy, analysed_index, tmp_path):
    out = seeded_output(analysed_index, tmp_path / "out")
    foreign = out / "scans" / "coffee.png"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"someone else's newer file")
    album_mtime = (album_copy / "scans" / "coffee.png").stat().st_mtime_ns
    os.utime(foreign, ns=(album_mtime + 10**9, album_mtime + 10**9))  # a second newer than the album's photo
    result = run_cli("restore", str(album_copy), "-o", str(out), "--overwrite", "if-newer", "--restore", "none",
                     "--json", "-q")
    assert result.returncode == 0, result.stderr
    photos = {p["path"]: p for p in json.loads(result.stdout)["photos"]}
    coffee = photos["scans/coffee.png"]
    assert coffee["status"] == "skipped" and "not written by albumfix (--overwrite if-newer)" in coffee["reason"]
    assert foreign.read_bytes() == b"someone else's newer file"
    assert foreign.stat().st_mtime_ns == album_mtime + 10**9
    assert all(p["status"] == "unchanged" for path, p in photos.items() if path != "scans/coffee.png")


def _tree(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under folder: relative path -> (bytes, mtime ns)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_dry_run_over_an_existing_index_changes_nothing_and_plans_the_real_run(
        album_copy, analysed_index, random_weights, saved_faces, tmp_path, monkeypatch):
    out = seeded_output(analysed_index, tmp_path / "out")
    scratch = tmp_path / "tmp"  # the dry run's copy of the index goes here, and must go away
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    before = _tree(out)
    result = run_cli("restore", str(album_copy), "-o", str(out), *restore_all_args(random_weights), "--dry-run",
                     "--json", "-q")
    assert result.returncode == 0, result.stderr
    assert _tree(out) == before  # the index untouched, no output, no lock, no report
    assert list(scratch.iterdir()) == []
    data = json.loads(result.stdout)
    assert data["dry_run"] is True
    assert all(p["reason"] == "dry run: nothing written" for p in data["photos"])
    # what it says it would do is what the same restore did for real (saved_faces), but for
    # what the real run's second looks added: restored faces no person verified were looked at
    # again (no look verified one here; the people offered are ranked by the look), which a dry
    # run cannot do
    second = re.compile(r"; on a second look at its restoration, [^)]*")
    real = json.loads(json.dumps(saved_faces[1]))
    dry = {f["id"]: f for p in data["photos"] for f in p["faces"]}
    looked = [f for p in real["photos"] for f in p["faces"] if second.search(f["reason"])]
    assert looked and all(f["unguided"] == "not_verified" for f in looked)
    for f in looked:
        f["reason"] = second.sub("", f["reason"])
        assert {c["person"] for c in f["candidates"]} <= {c["person"] for c in dry[f["id"]]["candidates"]}
        f["candidates"] = dry[f["id"]]["candidates"]
    plan = lambda d: [(p["path"], p["status"], [{k: v for k, v in f.items() if k != "restored"}  # noqa: E731
                                                for f in p["faces"]]) for p in d["photos"]]
    assert plan(data) == plan(real)
