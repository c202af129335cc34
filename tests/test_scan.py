"""Album scan: recursive, deterministic, junk and links out of the album ignored, any file name."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from albumfix.album.scan import content_hash, scan_album


def _img(path, value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)


def test_scan_finds_photos_recursively_in_order_and_skips_junk(tmp_path):
    album = tmp_path / "album"
    names = ["b.jpg", "a.PNG", "sub/c.tif", "sub/deeper/d.webp", "e.bmp", "f.jpeg", "g.TIFF",
             "name with spaces.jpg", "ünïcødé/фото.jpg", "new\nline.png"]
    for n in names:
        _img(album / n)
    for junk in [".DS_Store", "Thumbs.db", "._a.jpg", ".hidden.jpg", ".hiddendir/x.jpg", "notes.txt",
                 "desktop.ini"]:
        p = album / junk
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"junk")
    found = [f.relpath for f in scan_album(album)]
    assert found == sorted(n for n in names)
    assert found == [f.relpath for f in scan_album(album)]  # deterministic


def test_symlinks_out_of_album_and_loops_are_not_followed(tmp_path):
    album, outside = tmp_path / "album", tmp_path / "outside"
    _img(album / "in.jpg")
    _img(outside / "secret.jpg")
    os.symlink(outside, album / "link_out")
    os.symlink(outside / "secret.jpg", album / "file_link_out.jpg")
    os.symlink(album, album / "loop")
    os.symlink(album / "in.jpg", album / "inner_link.jpg")
    found = [f.relpath for f in scan_album(album)]
    assert "in.jpg" in found and "inner_link.jpg" in found
    assert not any("secret" in f or f.startswith("link_out") for f in found)
    assert not any(f.startswith("loop/") for f in found)


def test_output_folder_inside_album_is_excluded(tmp_path):
    album = tmp_path / "album"
    _img(album / "a.jpg")
    _img(album / "out" / "a.jpg")
    assert [f.relpath for f in scan_album(album, exclude=album / "out")] == ["a.jpg"]


def test_content_hash_depends_on_bytes_only(tmp_path):
    _img(tmp_path / "x.png", 1)
    _img(tmp_path / "y.png", 1)
    _img(tmp_path / "z.png", 2)
    assert content_hash(tmp_path / "x.png") == content_hash(tmp_path / "y.png")
    assert content_hash(tmp_path / "x.png") != content_hash(tmp_path / "z.png")
