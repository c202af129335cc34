"""An album of valid-but-odd images (1-64 px, 1 x 4000, every Pillow mode, tiny faces, odd
orientation) and broken files: the run finishes, every file is reported, valid images are done
and broken ones failed with a one-line reason; one photo whose analysis raises fails alone."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from albumfix.errors import EXIT_SOME_FAILED
from albumfix.faces.backends.dlib_backend import DlibModels
from albumfix.pipeline import Pipeline
from albumfix.settings import Settings
from conftest import restore_all_args, run_cli, seeded_output

# every Pillow mode a photo file can store (La, RGBa and HSV have no file format), and one that does
MODE_FORMATS = {"1": "PNG", "L": "PNG", "LA": "PNG", "P": "PNG", "PA": "TIFF", "RGB": "JPEG", "RGBA": "WEBP",
                "RGBX": "TIFF", "CMYK": "JPEG", "YCbCr": "TIFF", "LAB": "TIFF", "I": "TIFF", "I;16": "PNG",
                "I;16B": "TIFF", "F": "TIFF"}
SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "WEBP": ".webp", "BMP": ".bmp"}


def _save(im: Image.Image, path: Path, fmt: str, **params) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt, **params)


def _odd_images(album: Path, face: Image.Image) -> None:
    """Valid images albumfix must take in its stride."""
    rng = np.random.default_rng(0)
    for w, h in [(1, 1), (2, 3), (6, 6), (9, 9), (10, 10), (16, 64), (64, 64), (1, 4000), (4000, 1), (6, 4000), (3, 3000)]:
        noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _save(noise, album / "sizes" / f"{w}x{h}.jpg", "JPEG")
        _save(noise.convert("L"), album / "sizes" / f"{w}x{h}.png", "PNG")
    for mode, fmt in MODE_FORMATS.items():
        source = face.convert("RGBA") if "A" in mode else face
        _save(source.convert(mode), album / "modes" / f"{mode.replace(';', '_')}{SUFFIXES[fmt]}", fmt)
    _save(face.convert("P"), album / "modes" / "P.bmp", "BMP")
    for side in (24, 40, 64, 96):  # tiny faces, restored too (--min-face-size 0)
        _save(face.resize((side, side), Image.LANCZOS), album / "tiny" / f"face{side}.png", "PNG")
    exif = Image.Exif()
    exif[0x0112] = 8  # rotated 90 degrees on display
    _save(face.resize((1, 400)), album / "tiny" / "rotated strip.jpg", "JPEG", exif=exif.tobytes())
    deep = (np.asarray(face.resize((48, 48)), np.uint16) * 257)
    import cv2

    cv2.imwrite(str(album / "modes" / "rgb16.png"), deep[:, :, ::-1])
    frames = [face.resize((32, 32)), face.resize((32, 32)).rotate(90)]
    frames[0].save(album / "modes" / "two frames.tif", save_all=True, append_images=frames[1:])


def _broken_files(album: Path, face: Image.Image) -> list[str]:
    """Files with a photo's name that are no readable photo; returns their album paths."""
    png, jpeg = io.BytesIO(), io.BytesIO()
    face.save(png, format="PNG")
    face.save(jpeg, format="JPEG")
    bad_crc = bytearray(png.getvalue())
    bad_crc[30] ^= 0xFF
    broken = {
        "broken/truncated.png": png.getvalue()[:200],
        "broken/bad crc.png": bytes(bad_crc),
        "broken/only soi.jpg": b"\xff\xd8",
        "broken/header only.bmp": b"BM" + bytes(12),
        "broken/empty.webp": b"",
        "broken/garbage.tif": bytes(range(256)) * 4,
        "broken/page.jpg": b"<html><body>not a photo</body></html>",
        "broken/half.jpg": jpeg.getvalue()[: len(jpeg.getvalue()) // 2 - 7] + b"\x00" * 7,
    }
    for name, data in broken.items():
        (album / name).parent.mkdir(parents=True, exist_ok=True)
        (album / name).write_bytes(data)
    return sorted(broken)


def test_odd_and_broken_files_never_stop_a_run(album_copy, random_weights, tmp_path):
    album = tmp_path / "fuzz"
    face = Image.open(album_copy / "2009/podium.jpg").convert("RGB").resize((160, 160), Image.LANCZOS)
    _odd_images(album, face)
    broken = _broken_files(album, face)
    (album / "a folder.jpg").mkdir()  # a folder with a photo's name is no photo
    files = sorted(p.relative_to(album).as_posix() for p in album.rglob("*") if p.is_file())
    out = tmp_path / "out"
    result = run_cli("restore", str(album), "-o", str(out), *restore_all_args(random_weights), "--min-face-size", "0",
                     "--json", "-q")
    assert result.returncode == EXIT_SOME_FAILED, result.stderr  # the broken files failed, the rest was done
    data = json.loads(result.stdout)
    by_path = {p["path"]: p for p in data["photos"]}
    assert sorted(by_path) == files  # every file reported, once
    failed = sorted(path for path, p in by_path.items() if p["status"] == "failed")
    assert failed == broken, [by_path[p] for p in set(failed) ^ set(broken) if p in by_path]
    assert all(by_path[p]["reason"] and "\n" not in by_path[p]["reason"] for p in failed)
    assert any(p["status"] == "restored" for p in data["photos"])  # faces in odd modes were restored
    for path, photo in by_path.items():
        if photo["status"] != "failed":
            assert Image.open(out / photo["output"]).size  # a complete, readable output


def _raise_like_dlib() -> None:
    raise RuntimeError("\n\nError detected at line 623.\nError detected in file ../../dlib/cuda/tensor.h.\n"
                       "Error detected in function dlib::alias_tensor_instance dlib::alias_tensor::operator()"
                       "(dlib::tensor&, size_t) const.\n\nFailing expression was offset+size() <= t.size().\n")


class RaisingOnTinyImages:
    """The real analyzer, raising as dlib 20.0's CNN does on images under 10 px (before albumfix
    stopped running it there): a stand-in for any backend error on one photo. stage: "locate"
    (finding its faces) or "describe" (embedding the faces of a batch of photos that holds it)."""

    def __init__(self, real, stage: str = "locate"):
        self.real = real
        self.stage = stage

    def locate(self, rgb: np.ndarray):
        if self.stage == "locate" and min(rgb.shape[:2]) < 10:
            _raise_like_dlib()
        return self.real.locate(rgb)

    def describe(self, photos, degraded=None):
        if self.stage == "describe" and any(min(rgb.shape[:2]) < 10 for rgb, _ in photos):
            _raise_like_dlib()
        return self.real.describe(photos, degraded)

    def __getattr__(self, name: str):  # search_more and the rest: the real analyzer's
        return getattr(self.real, name)


@pytest.mark.parametrize("stage", ["locate", "describe"])
def test_a_photo_whose_analysis_raises_fails_alone(album_copy, tmp_path, stage):
    """Also when the error comes from embedding a batch of photos: the others of its batch are
    embedded again without it."""
    album = tmp_path / "album"
    shutil.copytree(album_copy, album)
    Image.new("RGB", (6, 6), (120, 90, 60)).save(album / "six.jpg")
    out = tmp_path / "out"  # no index yet: every photo is analysed, in batches with six.jpg
    pipeline = Pipeline(album, Settings(output=out, restore="none"))
    pipeline.models._analyzer = RaisingOnTinyImages(pipeline.models.analyzer(), stage)
    report = pipeline.run()
    assert report.exit_code == EXIT_SOME_FAILED
    data = report.to_json()
    by_path = {p["path"]: p for p in data["photos"]}
    assert by_path["six.jpg"]["status"] == "failed"
    reason = by_path["six.jpg"]["reason"]
    assert reason.startswith("analysis failed: RuntimeError: Error detected at line 623.") and "\n" not in reason
    assert "offset+size() <= t.size()" in reason
    assert all(p["status"] == "unchanged" for path, p in by_path.items() if path != "six.jpg")
    assert pipeline.run().to_json()["photos"][-1]["status"] == "failed"  # not stored: tried again, fails again


def test_dlib_cnn_skips_images_too_small_for_a_face(album_copy):
    detector = DlibModels.load().detector(upsample=0, cnn_fallback=True)
    for h, w in [(6, 6), (9, 9), (1, 4000), (4000, 1), (6, 4000), (63, 500)]:
        assert detector.detect_cnn(np.full((h, w, 3), 128, np.uint8)) == []
    face = Image.open(album_copy / "2009/podium.jpg").convert("RGB").resize((240, 240), Image.LANCZOS)
    assert len(detector.detect_cnn(np.asarray(face))) == 1  # large enough: the CNN still runs
