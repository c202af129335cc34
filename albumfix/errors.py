"""Errors that end a whole run, each with its documented exit code.

0 all photos ok; 1 some photos failed (the rest done); 2 usage error; 3 album not found or
unreadable; 4 fatal (model, weights or device unusable).
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_ALBUM = 3
EXIT_FATAL = 4


class AlbumfixError(Exception):
    """Base class; `exit_code` is what the CLI returns."""

    exit_code = EXIT_FATAL


class UsageError(AlbumfixError):
    exit_code = EXIT_USAGE


class AlbumError(AlbumfixError):
    exit_code = EXIT_ALBUM


class FatalError(AlbumfixError):
    exit_code = EXIT_FATAL
