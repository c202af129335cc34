"""Errors that end a whole run, each with its documented exit code, and the rule that tells a
failure of one photo from one that makes every photo impossible.

0 all photos ok; 1 some photos failed (the rest done); 2 usage error; 3 album not found or
unreadable; 4 fatal (model, weights or device unusable, output disk full, index unusable);
5 another run is using the output folder; 130 / 143 stopped by SIGINT / SIGTERM (128 + signal).
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from albumfix.atomic import NoSpaceError

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ALBUM = 3
EXIT_FATAL = 4
EXIT_BUSY = 5
REASON_MAX_CHARS = 300


class AlbumfixError(Exception):
    """Base class; `exit_code` is what the CLI returns."""

    exit_code = EXIT_FATAL


class UsageError(AlbumfixError):
    exit_code = EXIT_USAGE


class AlbumError(AlbumfixError):
    exit_code = EXIT_ALBUM


class FatalError(AlbumfixError):
    exit_code = EXIT_FATAL


class BusyError(AlbumfixError):
    """Another albumfix process holds the output folder's lock."""

    exit_code = EXIT_BUSY


class Interrupted(AlbumfixError):
    """A stop signal arrived before the run could start any work (e.g. while waiting for the lock)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.exit_code = exit_code_for_signal(signum)


def exit_code_for_signal(signum: int) -> int:
    """128 + the signal number, as a shell reports a process ended by that signal."""
    return 128 + signum


def one_line(exc: BaseException) -> str:
    """`Type: message` on one line (dlib's and OpenCV's messages span several), at most
    REASON_MAX_CHARS characters: a photo's `reason`."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= REASON_MAX_CHARS else text[: REASON_MAX_CHARS - 1] + "…"


def as_fatal(exc: BaseException, index: Path) -> AlbumfixError | None:
    """The run-ending error `exc` stands for, or None when it concerns only the photo in hand.

    Fatal: albumfix's own run-ending errors as they are; a write that failed for lack of space
    (disk full, quota, file-size limit: `atomic.NoSpaceError`, which names the folder); any
    error of the album index at `index` (SQLite, e.g. "database or disk is full"), which every
    photo needs."""
    if isinstance(exc, AlbumfixError):
        return exc
    if isinstance(exc, NoSpaceError):
        return FatalError(str(exc))
    if isinstance(exc, sqlite3.Error):
        return FatalError(f"album index {index} unusable: {exc}")
    return None
