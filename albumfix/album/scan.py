"""Walk an album: every photo file, in a deterministic order, nothing that is not the album's.

Rules: recursive; suffixes jpg/jpeg/png/tif/tiff/webp/bmp (heic/heif when pillow-heif is
installed), case-insensitive; hidden files and folders (leading dot), macOS resource forks
(`._*`), `Thumbs.db`, `desktop.ini` and `.DS_Store` are skipped; symlinks are followed only when
they resolve inside the album (a link out of the album is ignored, a loop is never entered);
the output folder is excluded if it lies below the album. Names may hold any character.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from albumfix.album.imageio import SUFFIX_FORMATS, heif_available

JUNK_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}


@dataclass(frozen=True)
class AlbumFile:
    """One photo file of the album. relpath uses '/' separators, relative to the album root."""

    relpath: str
    path: Path
    size: int
    mtime_ns: int


def photo_suffixes() -> set[str]:
    """Suffixes scanned now (HEIC/HEIF only with pillow-heif)."""
    suffixes = set(SUFFIX_FORMATS)
    if not heif_available():
        suffixes -= {".heic", ".heif"}
    return suffixes


def _is_junk(name: str) -> bool:
    return name.startswith(".") or name.lower() in JUNK_NAMES  # "._*" forks start with "."


def scan_album(album: Path, exclude: Path | None = None) -> list[AlbumFile]:
    """All photo files under `album`, sorted by relpath (code-point order)."""
    album = album.resolve()
    exclude = exclude.resolve() if exclude else None
    suffixes = photo_suffixes()
    found: list[AlbumFile] = []
    seen_dirs: set[tuple[int, int]] = set()

    def walk(folder: Path) -> None:
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen_dirs:
                return
            seen_dirs.add((st.st_dev, st.st_ino))
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if _is_junk(entry.name):
                continue
            path = Path(entry.path)
            if entry.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(album):
                    continue
            try:
                if entry.is_dir():
                    if exclude is None or path.resolve() != exclude:
                        walk(path)
                    continue
                if not entry.is_file() or path.suffix.lower() not in suffixes:
                    continue
                st = entry.stat()
            except OSError:
                continue
            rel = path.relative_to(album).as_posix()
            found.append(AlbumFile(rel, path, st.st_size, st.st_mtime_ns))

    walk(album)
    found.sort(key=lambda f: f.relpath)
    return found


def content_hash(path: Path) -> str:
    """BLAKE2b-160 hex digest of the file's bytes: the photo's identity in the index."""
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
