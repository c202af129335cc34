"""The album pipeline end to end on the real sample album: outputs, JSON, incremental re-runs,
dry runs, overwrite policy, refusal to write inside the album."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from albumfix.errors import AlbumError, UsageError
from albumfix.pipeline import Pipeline
from albumfix.stages import analyse
from albumfix.stages.restore import Restorer
from albumfix.settings import Settings
from conftest import run_cli, seeded_output

PHOTO_KEYS = {"path", "status", "reason", "output", "faces"}
FACE_KEYS = {"id", "box", "score", "quality", "action", "reason", "person", "person_confirmed", "exemplars"}


def _settings(out, weights, **kw) -> Settings:
    return Settings(output=out, weights=weights, **kw).validate()


@pytest.fixture(scope="module")
def restored(album_copy, analysed_index, random_weights, tmp_path_factory):
    """One full restore of the sample album (analysis reused from the session's scan)."""
    out = seeded_output(analysed_index, tmp_path_factory.mktemp("restored") / "out")
    pipeline = Pipeline(album_copy, _settings(out, random_weights, restore="all"))
    report = pipeline.run()
    return out, report, pipeline


def test_outputs_mirror_album_and_json_has_stable_keys(album_copy, restored):
    out, report, _ = restored
    data = report.to_json()
    assert set(data) >= {"version", "album", "output", "summary", "photos", "people"}
    assert set(data["summary"]) >= {"photos", "restored", "unchanged", "failed", "skipped", "faces",
                                    "people", "seconds"}
    by_path = {p["path"]: p for p in data["photos"]}
    assert sorted(by_path) == ["1975/group.png", "1998/old print.jpg", "2009/oval office.jpg",
                               "2009/podium.jpg", "scans/coffee.png"]
    for p in data["photos"]:
        assert set(p) >= PHOTO_KEYS
        assert p["status"] in ("restored", "unchanged")
        assert (out / p["output"]).is_file()
        for face in p["faces"]:
            assert set(face) >= FACE_KEYS
    # nothing to restore: byte-for-byte copy with the file's times
    coffee = by_path["scans/coffee.png"]
    assert coffee["status"] == "unchanged" and coffee["faces"] == []
    assert (out / "scans/coffee.png").read_bytes() == (album_copy / "scans/coffee.png").read_bytes()
    assert os.stat(out / "scans/coffee.png").st_mtime_ns == os.stat(album_copy / "scans/coffee.png").st_mtime_ns
    # a restored photo: new pixels, same size, report entries for its faces
    old = by_path["1998/old print.jpg"]
    assert old["status"] == "restored"
    assert any("restored" in f and f["restored"]["model"] == "albumfix-s128" for f in old["faces"])
    # every restoration is capped by its face's own detail (--restore all: sharp faces too)
    guards = [f["restored"]["guard"] for p in data["photos"] for f in p["faces"] if "restored" in f]
    assert guards and all(g["strength"] <= g["ceiling"] <= 1.0 for g in guards)
    assert any(g["ceiling"] < 1.0 for g in guards)
    a = np.asarray(Image.open(album_copy / "1998/old print.jpg"))
    b = np.asarray(Image.open(out / "1998/old print.jpg"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert (out / "report.html").is_file() and "old print.jpg" in (out / "report.html").read_text()
    assert not (out / ".albumfix" / "faces").exists()  # face strips only with --save-faces
    assert (out / ".albumfix" / "index.sqlite").is_file()
    assert json.loads(json.dumps(data)) == data  # JSON-serialisable as is


def test_orientation_output_is_upright_with_tag_reset(album_copy, restored):
    out, report, _ = restored
    assert {p.path: p.status for p in report.photos}["2009/oval office.jpg"] == "restored"
    src = Image.open(album_copy / "2009/oval office.jpg")
    dst = Image.open(out / "2009/oval office.jpg")
    assert src.getexif()[0x0112] == 6
    assert dst.size == (src.size[1], src.size[0])  # pixels rotated upright once
    assert dst.getexif()[0x0112] == 1  # and the tag reset, so viewers do not rotate again


def test_grayscale_photo_stays_grayscale(restored):
    out, _, _ = restored
    group = np.asarray(Image.open(out / "1975/group.png"))
    assert group.ndim == 2 or np.array_equal(group[..., 0], group[..., 1])


def test_rerun_with_nothing_changed_does_no_model_work(album_copy, restored, random_weights):
    out, first, _ = restored
    again = Pipeline(album_copy, _settings(out, random_weights, restore="all"))
    report = again.run()
    assert again.models._analyzer is None and again.models._engine is None  # no model was even loaded
    strip = lambda d: {k: v for k, v in d.items() if k != "summary"}  # noqa: E731
    assert strip(report.to_json()) == strip(first.to_json())


def test_new_weights_at_the_same_path_redo_restored_photos(album_copy, analysed_index, tmp_path):
    import torch

    from albumfix.restore import create_model
    from albumfix.restore.weights import save_weights

    weights = tmp_path / "mine.safetensors"
    torch.manual_seed(1)
    save_weights(create_model("albumfix-s128"), weights)
    out = seeded_output(analysed_index, tmp_path / "out")
    first = Pipeline(album_copy, _settings(out, weights)).run().to_json()
    torch.manual_seed(2)
    save_weights(create_model("albumfix-s128"), weights)  # e.g. a fine-tune exported over the old file
    again = Pipeline(album_copy, _settings(out, weights))
    second = again.run().to_json()
    restored = sorted(p["path"] for p in first["photos"] if p["status"] == "restored")
    assert restored and sorted(p["path"] for p in second["photos"] if p["status"] == "restored") == restored
    assert again.models._engine is not None  # the model ran again
    third = Pipeline(album_copy, _settings(out, weights))
    third.run()
    assert third.models._engine is None  # the same weights again: nothing to redo


def test_changed_photo_is_the_only_one_reprocessed(album_copy, analysed_index, random_weights,
                                                   tmp_path, monkeypatch):
    album = tmp_path / "album"
    shutil.copytree(album_copy, album)
    out = seeded_output(analysed_index, tmp_path / "out")
    Pipeline(album, _settings(out, random_weights)).run()
    Image.open(album / "2009/podium.jpg").rotate(3).save(album / "2009/podium.jpg", quality=90)
    analysed, restored = [], []
    real_locate = analyse.locate_faces
    monkeypatch.setattr(analyse, "locate_faces",
                        lambda analyzer, item: analysed.append(item.relpath) or real_locate(analyzer, item))
    real_submit = Restorer.submit
    monkeypatch.setattr(Restorer, "submit", lambda self, task: restored.append(task.relpath) or real_submit(self, task))
    Pipeline(album, _settings(out, random_weights)).run()
    assert analysed == ["2009/podium.jpg"]
    assert set(restored) <= {"2009/podium.jpg", "1998/old print.jpg"}  # its exemplar may change


def test_dry_run_writes_nothing(album_copy, random_weights, tmp_path):
    out = tmp_path / "out"
    report = Pipeline(album_copy, _settings(out, random_weights, dry_run=True, cnn_fallback=False)).run()
    assert not out.exists()
    assert report.to_json()["dry_run"] is True
    assert all(p.reason == "dry run: nothing written" for p in report.photos if p.status != "failed")


def test_output_inside_album_is_refused(album_copy, tmp_path):
    with pytest.raises(UsageError):
        Pipeline(album_copy, Settings(output=album_copy / "restored"))
    with pytest.raises(UsageError):
        Pipeline(album_copy, Settings(output=album_copy))
    with pytest.raises(AlbumError):
        Pipeline(tmp_path / "missing", Settings())


def test_cli_exit_codes_for_usage_and_missing_album(album_copy, tmp_path):
    inside = run_cli("restore", str(album_copy), "-o", str(album_copy / "x"))
    assert inside.returncode == 2 and "inside the album" in inside.stderr
    missing = run_cli("restore", str(tmp_path / "nope"))
    assert missing.returncode == 3 and "album not found" in missing.stderr
    bad_option = run_cli("restore", str(album_copy), "--overwrite", "sometimes")
    assert bad_option.returncode == 2


@pytest.mark.parametrize("policy,expect_replaced", [("never", False), ("always", True), ("if-newer", True)])
def test_overwrite_policy_for_files_albumfix_did_not_write(album_copy, analysed_index, random_weights,
                                                            tmp_path, policy, expect_replaced):
    out = seeded_output(analysed_index, tmp_path / "out")
    foreign = out / "scans" / "coffee.png"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"someone else's file")
    os.utime(foreign, ns=(0, 0))  # older than the album photo, so if-newer replaces it
    report = Pipeline(album_copy, _settings(out, random_weights, overwrite=policy, restore="none")).run()
    status = {p.path: p for p in report.photos}["scans/coffee.png"]
    if expect_replaced:
        assert foreign.read_bytes() == (album_copy / "scans/coffee.png").read_bytes()
        assert status.status == "unchanged"
    else:
        assert foreign.read_bytes() == b"someone else's file"
        assert status.status == "skipped" and "not written by albumfix" in status.reason


def test_other_identity_weights_redo_the_analysis(album_copy, analysed_index, random_weights, tmp_path, monkeypatch):
    """Degraded faces' embeddings come from the identity network: a different file in the
    user's models folder makes every photo analysed again; the same file again does not."""
    from safetensors.torch import save_file

    from albumfix.faces.backends import IDENTITY_WEIGHTS_FILE, identity_weights_path
    from albumfix.faces.backends.dlib_resnet import read_robust_weights

    monkeypatch.setenv("ALBUMFIX_HOME", str(tmp_path / "home"))
    out = seeded_output(analysed_index, tmp_path / "out")
    analysed = []
    real_locate = analyse.locate_faces
    monkeypatch.setattr(analyse, "locate_faces",
                        lambda analyzer, item: analysed.append(item.relpath) or real_locate(analyzer, item))
    Pipeline(album_copy, _settings(out, random_weights)).run()
    assert analysed == []  # the session's scan used the shipped identity weights too
    state = read_robust_weights(identity_weights_path())
    state["stem.0.weight"] = state["stem.0.weight"] * 1.01
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    save_file(state, str(models / IDENTITY_WEIGHTS_FILE), metadata={"format": "albumfix-identity"})
    Pipeline(album_copy, _settings(out, random_weights)).run()
    assert sorted(analysed) == sorted(str(p.relative_to(album_copy)) for p in album_copy.rglob("*.*"))
    analysed.clear()
    Pipeline(album_copy, _settings(out, random_weights)).run()
    assert analysed == []


def test_faces_no_person_verifies_get_a_second_look_kept_in_the_index(restored):
    """The group print's three damaged faces are verified as nobody: each restoration is
    embedded (a second look) and kept, so the re-run above has nothing left to look at."""
    from albumfix.album.index import AlbumIndex

    out, report, pipeline = restored
    faces = {f["id"]: f for p in report.to_json()["photos"] for f in p["faces"]}
    with AlbumIndex(out / ".albumfix" / "index.sqlite") as ix:
        looks = ix.looks(pipeline._look_key)
    unverified = {fid for fid, f in faces.items() if f["unguided"] == "not_verified"}
    assert unverified and unverified <= set(looks)
    assert all(faces[fid]["action"] == "restore" and faces[fid]["unguided"] for fid in looks)
    assert all(v.shape == (128,) and abs(np.linalg.norm(v) - 1) < 1e-4 for v in looks.values())


def test_a_second_look_that_verifies_redoes_the_photo_in_the_same_run(album_copy, analysed_index, random_weights,
                                                                      tmp_path, monkeypatch):
    """A look that verifies a face (here the second look at one face of the group print is made
    to be the Oval Office face: the random restorer's own look would verify nobody) guides it in
    the same run; each photo is published once, with its final report; a re-run does nothing."""
    from albumfix.album.index import AlbumIndex
    from albumfix.stages import compose

    with AlbumIndex(analysed_index) as ix:
        sharp = {r.face_id: r.embedding for r in ix.faces()}["a42b31c9801033ec-0"]
    real_paste = compose._paste

    def paste(photo, pixels, face, *rest):
        pasted, guard, look = real_paste(photo, pixels, face, *rest)
        return pasted, guard, (sharp.copy() if face.task.face_id == "c5c1d97c41e94ef6-1" else look)

    monkeypatch.setattr(compose, "_paste", paste)
    out = seeded_output(analysed_index, tmp_path / "out")
    published = []
    pipeline = Pipeline(album_copy, _settings(out, random_weights, restore="all"),
                        on_photo=lambda r: published.append(json.loads(json.dumps(r.to_json()))))
    report = pipeline.run().to_json()
    face = {f["id"]: f for p in report["photos"] for f in p["faces"]}["c5c1d97c41e94ef6-1"]
    assert face["person"] == "a42b31c9801033ec-0" and face["restored"]["exemplar"] in {
        "a42b31c9801033ec-0", "cdb8fe2b39a32670-0"}
    assert "second look" in face["reason"] and face["unguided"] in (None, "guard_rejected")
    by_path = lambda photos: sorted(photos, key=lambda p: p["path"])  # noqa: E731
    assert by_path(published) == by_path(report["photos"])  # each photo once, with its final report
    again = Pipeline(album_copy, _settings(out, random_weights, restore="all"))
    assert again.run().to_json()["photos"] == report["photos"] and again.models._engine is None
