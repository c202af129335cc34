"""Walk an album: every photo file, in a deterministic order, nothing that is not the album's.

Rules: recursive; suffixes jpg/jpeg/png/tif/tiff/webp/bmp (heic/heif when pillow-heif is
installed), case-insensitive; hidden files and folders (leading dot), macOS resource forks
(`._*`), `Thumbs.db`, `desktop.ini` and `.DS_Store` are skipped; symlinks are followed only when
they resolve inside the album (a link out of the album is ignored, a loop is never entered);
the output folder is excluded if it lies below the album. Names may hold any character.
`select_files` narrows a scan to the files a `--files-from` list names.
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


def split_file_list(data: bytes, null: bool = False) -> list[str]:
    """The entries of a `--files-from` list: NUL-separated (`find -print0`) when `null`, else one
    per line; empty entries dropped, repeats kept once, names decoded as the OS does (any byte
    sequence survives)."""
    entries = data.split(b"\0" if null else b"\n")
    return list(dict.fromkeys(os.fsdecode(e) for e in entries if e))


def select_files(album: Path, files: list[AlbumFile], entries: list[str],
                 cwd: Path | None = None) -> tuple[list[AlbumFile], dict[str, str]]:
    """The scanned `files` that `entries` name, in scan order, and {entry: reason} for the
    entries that name none. An entry is an absolute path, or relative to `cwd` (as `find ALBUM`
    prints it) or to the album root, the first of these inside the album winning; it must be a
    file the scan accepts."""
    album = album.resolve()
    by_relpath = {f.relpath: f for f in files}
    chosen: set[str] = set()
    rejected: dict[str, str] = {}
    for entry in entries:
        found = _existing_paths(entry, (Path.cwd() if cwd is None else cwd, album))
        inside = [p.relative_to(album).as_posix() for p in found if p.is_relative_to(album)]
        if not found:
            rejected[entry] = "no such file"
        elif not inside:
            rejected[entry] = f"not inside the album {album}"
        elif inside[0] not in by_relpath:
            rejected[entry] = "not a photo file of the album (a folder, hidden, junk or unknown suffix)"
        else:
            chosen.add(inside[0])
    return [f for f in files if f.relpath in chosen], rejected


def _existing_paths(entry: str, bases: tuple[Path, ...]) -> list[Path]:
    """Each existing `base / entry` (an absolute entry ignores the bases), its folder resolved
    and its own name kept, as the scan lists a link to a photo."""
    found = []
    for base in bases:
        path = Path(os.path.abspath(base / entry))
        if os.path.lexists(path):
            found.append(path.parent.resolve() / path.name)
    return found
