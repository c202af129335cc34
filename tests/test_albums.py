"""The end-to-end album benchmark (albumfix.train.albums) on a tiny album made from the sample
album's real photos: it builds damaged photos with their truth, runs the real command line and
scores what the user gets."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageOps

from albumfix.errors import EXIT_USAGE
from conftest import SAMPLE_ALBUM


@pytest.fixture(scope="module")
def identity_root(tmp_path_factory):
    """ROOT/<person>/*.jpg with one person of four photos (two photos and their mirror images)."""
    root = tmp_path_factory.mktemp("people") / "faces"
    person = root / "obama"
    person.mkdir(parents=True)
    for name in ("oval office", "podium"):
        image = ImageOps.exif_transpose(Image.open(SAMPLE_ALBUM / "2009" / f"{name}.jpg")).convert("RGB")
        image.save(person / f"{name}.jpg", quality=95)
        ImageOps.mirror(image).save(person / f"{name} mirrored.jpg", quality=95)
    return root


@pytest.mark.slow
def test_benchmark_builds_truth_runs_the_cli_and_scores(identity_root, tmp_path):
    from albumfix.train.albums import build_albums, load_manifest, report_table, run_benchmark

    work = tmp_path / "bench"
    photos = build_albums([identity_root], work, val_fraction=1.0)
    damaged = [p for p in photos if p.family]
    assert len(damaged) == 1 and damaged[0].family == "training"
    assert len([p for p in photos if not p.family]) == 3
    truth = np.asarray(Image.open(work / damaged[0].truth))
    album_photo = np.asarray(Image.open(work / "album" / damaged[0].path))
    assert truth.shape == album_photo.shape and not np.array_equal(truth, album_photo)
    assert len(damaged[0].faces) == 1 and np.shape(damaged[0].faces[0].landmarks) == (68, 2)
    assert [p.path for p in load_manifest(work)] == [p.path for p in photos]

    report = run_benchmark(work, variants=("product", "unguided"))
    family = report["families"]["training"]
    # the one damaged face is frontal and about 320 px wide in its 640-px photo: it is found
    assert family["faces"] == 1 and family["detected"] == 1.0
    assert np.isfinite(family["input"]["psnr"]) and 0 < family["input"]["identity"] < 2
    assert 0 < family["input"]["judge"] < 2  # FaceNet distance of the damaged face to its truth
    for variant in ("product", "unguided"):
        assert set(family[variant]) >= {"restored", "guided", "psnr_gain", "identity", "worse_identity",
                                        "judge", "worse_judge"}
    assert family["unguided"]["guided"] == 0.0  # --exemplars 0: nothing guided
    paired = family["unguided"]["paired"]["psnr"]  # one face: the difference, no interval
    assert paired["mean"] == pytest.approx(family["unguided"]["psnr_gain"] - family["product"]["psnr_gain"])
    assert "paired" not in family["product"]
    assert report["grouping"]["faces"] >= 3 and report["grouping"]["precision"] == 1.0
    assert json.loads((work / "report.json").read_text())["families"].keys() == report["families"].keys()
    assert "[training]" in report_table(report)


def test_probe_album_takes_the_families_asked_for(identity_root, tmp_path):
    from albumfix.train.albums import build_albums

    photos = build_albums([identity_root], tmp_path / "probe", val_fraction=1.0, families=("phone-snap",))
    damaged = [p for p in photos if p.family]
    assert [p.family for p in damaged] == ["phone-snap"] and damaged[0].path.endswith("damaged-phone-snap.png")
    assert (tmp_path / "probe" / "album" / damaged[0].path).exists()


@pytest.mark.parametrize("option, value", [("--family", "polaroid"), ("--variant", "oracle-k9")])
def test_eval_refuses_an_unknown_damage_family_or_variant(tmp_path, option, value):
    from typer.testing import CliRunner

    from albumfix.cli import app

    result = CliRunner().invoke(app, ["eval", "--albums", str(tmp_path / "bench"), option, value])
    assert result.exit_code == EXIT_USAGE and f"unknown {option[2:].replace('family', 'damage family')} {value!r}" in result.output
    assert not (tmp_path / "bench").exists()


def test_paired_difference_is_the_mean_per_face_change_with_its_interval():
    from albumfix.train.albums import paired_difference

    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.5, 1.5, 3.5, 2.5])
    d = paired_difference(a, b)  # differences 0.5, 0.5, -0.5, 1.5: mean 0.5, sd 0.8165
    assert d["mean"] == pytest.approx(0.5)
    assert d["high"] - d["mean"] == pytest.approx(1.96 * 0.8165 / 2, rel=1e-3)
    assert d["mean"] - d["low"] == pytest.approx(d["high"] - d["mean"])
