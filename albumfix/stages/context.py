"""The run's context, owned by the driver: album and output paths, the index's location, the
progress display, the stop request, OUT's lock and the album index (a throw-away copy of it in
a dry run, so nothing is written)."""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from albumfix.album.index import AlbumIndex
from albumfix.album.lock import output_lock
from albumfix.atomic import remove_stale_temps
from albumfix.errors import AlbumError, UsageError
from albumfix.interrupt import StopRequest
from albumfix.settings import Settings

INDEX_DIR = ".albumfix"


class Progress(Protocol):
    """What a run tells a progress display; the CLI supplies a rich one on a TTY."""

    def stage(self, name: str, total: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...


class NoProgress:
    """A progress display that shows nothing."""

    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass


def resolve_paths(album: Path, settings: Settings) -> tuple[Path, Path]:
    """(album, out) as absolute paths; refuses a missing album and an OUT inside the album."""
    album = Path(album).expanduser()
    if not album.exists():
        raise AlbumError(f"album not found: {album}")
    if not album.is_dir():
        raise AlbumError(f"album is not a folder: {album}")
    if not os.access(album, os.R_OK | os.X_OK):
        raise AlbumError(f"album is not readable: {album}")
    album = album.resolve()
    out = settings.output or album.parent / f"{album.name}-restored"
    out = Path(out).expanduser().resolve()
    if out == album or out.is_relative_to(album):
        raise UsageError(f"output folder {out} is inside the album; albumfix never writes there")
    return album, out


def index_path(out: Path) -> Path:
    return out / INDEX_DIR / "index.sqlite"


@dataclass
class RunContext:
    """One run's album, OUT and settings, with its progress display and stop request."""

    album: Path
    out: Path
    settings: Settings
    progress: Progress = field(default_factory=NoProgress)
    stop: StopRequest = field(default_factory=StopRequest)

    @classmethod
    def create(cls, album: Path, settings: Settings, progress: Progress | None = None,
               stop: StopRequest | None = None) -> "RunContext":
        """The context of a run on `album` (paths checked by `resolve_paths`)."""
        album, out = resolve_paths(album, settings)
        return cls(album, out, settings, progress or NoProgress(), stop or StopRequest())

    @property
    def index_path(self) -> Path:
        return index_path(self.out)

    def lock(self):
        """OUT's lock for a run that writes (a dry run writes nothing and reads a snapshot)."""
        if self.settings.dry_run:
            return nullcontext()
        return output_lock(self.out, self.settings.wait, self.stop.raise_if_requested)

    def open_index(self) -> AlbumIndex:
        """The album index; a throw-away copy of it for --dry-run, so nothing is written."""
        path = self.index_path
        if not self.settings.dry_run:
            if self.out.exists():
                remove_stale_temps(self.out)
            return AlbumIndex(path)
        scratch = Path(tempfile.mkdtemp(prefix="albumfix-dry-run-"))
        if path.exists():
            with sqlite3.connect(path) as src, sqlite3.connect(scratch / "index.sqlite") as dst:
                src.backup(dst)
        ix = AlbumIndex(scratch / "index.sqlite")
        original_close = ix.close

        def close_and_clean() -> None:
            original_close()
            shutil.rmtree(scratch, ignore_errors=True)

        ix.close = close_and_clean
        return ix
