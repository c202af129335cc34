"""Decoding and encoding keep what matters: orientation once, ICC, EXIF, DPI, depth, alpha, quality."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageCms

from albumfix.album import imageio


def _gradient(h: int, w: int, dtype=np.uint8) -> np.ndarray:
    top = 65535 if dtype == np.uint16 else 255
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * top // max(w - 1, 1), y * top // max(h - 1, 1), (x + y) * top // (h + w)], -1)
    return rgb.astype(dtype)


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[imageio.EXIF_ORIENTATION] = orientation
    exif[0x0132] = "2001:02:03 04:05:06"  # DateTime
    return exif


@pytest.mark.parametrize("orientation,expected_shape", [(1, (20, 40)), (3, (20, 40)), (6, (40, 20)), (8, (40, 20))])
def test_orientation_applied_once_and_reset(tmp_path, orientation, expected_shape):
    px = _gradient(20, 40)
    path = tmp_path / "o.png"
    Image.fromarray(px).save(path, exif=_exif(orientation))
    photo = imageio.decode(path)
    assert photo.pixels.shape[:2] == expected_shape
    ref = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_180)) if orientation == 3 else None
    if ref is not None:
        assert np.array_equal(photo.pixels, ref)
    if orientation == 6:  # viewer rotates 90 degrees clockwise
        assert np.array_equal(photo.pixels, np.rot90(px, k=-1))
    out = tmp_path / "out.png"
    out.write_bytes(imageio.encode(photo, photo.pixels, ".png"))
    again = Image.open(out)
    assert again.getexif()[imageio.EXIF_ORIENTATION] == 1
    assert again.getexif()[0x0132] == "2001:02:03 04:05:06"
    assert np.array_equal(imageio.decode(out).pixels, photo.pixels)  # no second rotation


def test_jpeg_keeps_icc_exif_dpi_and_quality_tables(tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "p.jpg"
    Image.fromarray(_gradient(64, 96)).save(path, quality=93, icc_profile=icc, exif=_exif(1), dpi=(300, 300))
    photo = imageio.decode(path)
    data = imageio.encode(photo, photo.pixels, ".jpg")
    src, out = Image.open(path), Image.open(io.BytesIO(data))
    assert out.info["icc_profile"] == icc
    assert tuple(round(v) for v in out.info["dpi"]) == (300, 300)
    assert out.getexif()[0x0132] == "2001:02:03 04:05:06"
    assert out.quantization == src.quantization  # the source's quality, not a default
    from PIL import JpegImagePlugin
    assert JpegImagePlugin.get_sampling(out) == JpegImagePlugin.get_sampling(src)


def test_low_quality_jpeg_is_not_blown_up_or_degraded(tmp_path):
    path = tmp_path / "q.jpg"
    Image.fromarray(_gradient(64, 64)).save(path, quality=40)
    photo = imageio.decode(path)
    out = Image.open(io.BytesIO(imageio.encode(photo, photo.pixels, ".jpg")))
    assert out.quantization == Image.open(path).quantization


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_rgb_roundtrip_is_lossless(tmp_path, suffix):
    import cv2

    px = _gradient(30, 50, np.uint16)
    path = tmp_path / f"deep{suffix}"
    cv2.imwrite(str(path), px[:, :, ::-1])
    photo = imageio.decode(path)
    assert photo.pixels.dtype == np.uint16 and np.array_equal(photo.pixels, px)
    photo.dpi = (600.0, 600.0)
    out = tmp_path / f"out{suffix}"
    out.write_bytes(imageio.encode(photo, photo.pixels, suffix))
    again = imageio.decode(out)
    assert again.pixels.dtype == np.uint16 and np.array_equal(again.pixels, px)
    assert again.dpi is not None and round(again.dpi[0]) == 600


def test_16bit_gray_png(tmp_path):
    px = (np.arange(40 * 30).reshape(30, 40) * 50).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(px).save(path)
    photo = imageio.decode(path)
    assert photo.pixels.dtype == np.uint16 and photo.pixels.ndim == 2
    assert np.array_equal(photo.pixels, px)
    out = tmp_path / "g16out.png"
    out.write_bytes(imageio.encode(photo, photo.pixels, ".png"))
    assert np.array_equal(imageio.decode(out).pixels, px)


def test_modes_grayscale_alpha_palette_cmyk(tmp_path):
    gray = tmp_path / "g.jpg"
    Image.fromarray(_gradient(20, 20)[:, :, 0]).save(gray)
    assert imageio.decode(gray).pixels.ndim == 2

    rgba = np.dstack([_gradient(20, 20), np.full((20, 20), 128, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(imageio.decode(tmp_path / "a.png").pixels, rgba)

    Image.fromarray(_gradient(20, 20)).convert("P").save(tmp_path / "p.png")
    assert imageio.decode(tmp_path / "p.png").pixels.shape == (20, 20, 3)

    Image.fromarray(_gradient(20, 20)).convert("CMYK").save(tmp_path / "c.jpg")
    photo = imageio.decode(tmp_path / "c.jpg")
    assert photo.pixels.shape == (20, 20, 3) and photo.pixels.dtype == np.uint8


def test_rgb8_view(tmp_path):
    photo = imageio.Photo(pixels=np.full((4, 5), 60000, np.uint16), format="PNG")
    view = photo.rgb8()
    assert view.shape == (4, 5, 3) and view.dtype == np.uint8 and int(view[0, 0, 0]) == 60000 >> 8


def test_decompression_bomb_guard(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 2000)).save(path)
    old = imageio.Image.MAX_IMAGE_PIXELS
    try:
        imageio.set_max_megapixels(5)
        with pytest.raises(imageio.ImageDecodeError, match="too large.*--max-megapixels"):
            imageio.decode(path)
    finally:
        imageio.Image.MAX_IMAGE_PIXELS = old


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is not an image at all", "not a readable image"),
])
def test_bad_files_raise_one_line_reasons(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(imageio.ImageDecodeError, match=reason) as info:
        imageio.decode(path)
    assert "\n" not in str(info.value)


def test_truncated_jpeg_fails_cleanly(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(_gradient(200, 200)).save(buf, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(imageio.ImageDecodeError):
        imageio.decode(path)


def test_write_photo_is_atomic_and_keeps_mtime(tmp_path):
    src = tmp_path / "s.png"
    Image.fromarray(_gradient(10, 10)).save(src)
    os.utime(src, ns=(1_000_000_000_000_000_000, 1_100_000_000_000_000_000))
    photo = imageio.decode(src)
    target = tmp_path / "sub" / "t.png"
    imageio.write_photo(photo, photo.pixels, target, os.stat(src))
    assert target.stat().st_mtime_ns == 1_100_000_000_000_000_000
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".albumfix-tmp-")]


def test_written_files_get_normal_permissions(tmp_path):
    from albumfix.atomic import atomic_write_bytes

    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644
