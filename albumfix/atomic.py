"""Crash-safe file writes: temp name in the same folder, flush + fsync, rename over the target.

A reader (or a re-run after SIGKILL) sees either the old file or the complete new one, never a
half-written file. Leftover temp files of a killed run start with `.albumfix-tmp-` and are
removed by `remove_stale_temps`. A write that fails for lack of space removes its temp file and
raises `NoSpaceError`, which names the folder.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".albumfix-tmp-"
# disk full, quota exceeded, file larger than the process may write (RLIMIT_FSIZE)
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class NoSpaceError(OSError):
    """A write failed for lack of space in `folder`; str() is a one-line message naming it."""

    def __init__(self, folder: Path, cause: OSError):
        super().__init__(cause.errno, f"no space left to write in {folder} ({cause.strerror})")
        self.folder = folder

    def __str__(self) -> str:
        return self.strerror


def _default_mode() -> int:
    """0o666 less the process umask: the mode a plain open() would give (mkstemp gives 0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _temp_beside(target: Path):
    """Yields (fd, temp path) of a new temp file in target's folder (created as needed); the
    temp file is removed when the body fails, and a lack of space becomes NoSpaceError."""
    folder = Path(target).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)
        try:
            yield fd, tmp
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS and not isinstance(exc, NoSpaceError):
            raise NoSpaceError(folder, exc) from exc
        raise
    _fsync_dir(folder)


def atomic_write_bytes(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically (creating parent folders)."""
    with _temp_beside(target) as (fd, tmp):
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source` byte-for-byte to `target` atomically, keeping its times and mode."""
    with _temp_beside(target) as (fd, tmp):
        with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        shutil.copystat(source, tmp)
        os.replace(tmp, target)


def remove_stale_temps(root: Path) -> int:
    """Delete temp files left by a killed run under `root`; returns how many."""
    removed = 0
    for path in Path(root).rglob(TEMP_PREFIX + "*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
