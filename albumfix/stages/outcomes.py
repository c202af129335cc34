"""What a run reports: one `PhotoReport` per album file, the `RunReport`, and `Outcomes`, the
driver's one place that fails, finishes and publishes a photo.

One classifier (errors.as_fatal) decides whether an exception ends the run or fails the photo in
hand: `photo_error` for a stage's work on one photo, `run_error` for what reached the driver.
"""
from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from albumfix import __version__
from albumfix.album.index import AlbumIndex, OutputRow
from albumfix.errors import (EXIT_FATAL, EXIT_OK, EXIT_SOME_FAILED, FatalError, as_fatal, exit_code_for_signal,
                             one_line)

log = logging.getLogger("albumfix")


@dataclass
class PhotoReport:
    """One album file's outcome. path relative to the album, output relative to OUT."""

    path: str
    status: str = "pending"  # restored | unchanged | failed | skipped | pending (not reached)
    reason: str = ""
    output: str | None = None
    faces: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """The photo's object in `--json`'s `photos` and on a `--jsonl` line."""
        return dict(vars(self))


@dataclass
class RunReport:
    """The JSON summary (`--json`) with stable keys; later stages only add keys."""

    album: Path
    output: Path
    photos: list[PhotoReport]
    people: list[dict]
    seconds: float
    dry_run: bool = False
    interrupted: str | None = None  # "SIGINT" | "SIGTERM" when a signal stopped the run early
    error: str | None = None  # the fatal error that stopped the run

    @property
    def exit_code(self) -> int:
        """4 after a fatal error, 128 + signal when stopped by one, 1 when a photo failed, else 0."""
        if self.error is not None:
            return EXIT_FATAL
        if self.interrupted is not None:
            return exit_code_for_signal(signal.Signals[self.interrupted])
        return EXIT_SOME_FAILED if any(p.status == "failed" for p in self.photos) else EXIT_OK

    def to_json(self, photos: bool = True) -> dict:
        """The `--json` document; without `photos` it is `--jsonl`'s last line."""
        count = lambda status: sum(p.status == status for p in self.photos)  # noqa: E731
        data = {
            "version": __version__,
            "album": str(self.album),
            "output": str(self.output),
            "dry_run": self.dry_run,
            "interrupted": self.interrupted,
            "error": self.error,
            "summary": {
                "photos": len(self.photos),
                "restored": count("restored"),
                "unchanged": count("unchanged"),
                "failed": count("failed"),
                "skipped": count("skipped"),
                "pending": count("pending"),
                "faces": sum(len(p.faces) for p in self.photos),
                "people": len(self.people),
                "seconds": round(self.seconds, 3),
            },
            "photos": [p.to_json() for p in self.photos],
            "people": self.people,
        }
        if not photos:
            del data["photos"]
        return data


def photo_error(exc: Exception, what: str, index: Path) -> str:
    """`what: Type: message`, the one-line reason a photo failed because of `exc`; raises the
    run-ending error instead when `exc` makes every photo impossible (errors.as_fatal; `index`:
    the album index's path, named in its message)."""
    fatal = as_fatal(exc, index)
    if fatal is exc:
        raise exc
    if fatal is not None:
        raise fatal from exc
    return f"{what}: {one_line(exc)}"


def run_error(exc: Exception, index: Path) -> str:
    """The message of the FatalError that `exc`, which reached the driver, stands for (logged);
    re-raises `exc` when it stands for none (a bug, or a usage error)."""
    fatal = as_fatal(exc, index)
    if not isinstance(fatal, FatalError):
        raise exc
    log.error("%s", fatal)
    return str(fatal)


class Outcomes:
    """Records each photo's end, once: fail, finish (its output row done), publish (hand the
    final report to `on_photo`, e.g. a `--jsonl` line). Owned by the driver."""

    def __init__(self, on_photo: Callable[[PhotoReport], None] | None = None):
        self.on_photo = on_photo
        self._published: set[str] = set()

    def fail(self, report: PhotoReport, reason: str) -> None:
        report.status, report.reason = "failed", reason
        log.warning("%s: %s", report.path, reason)
        self.publish(report)

    def finish(self, ix: AlbumIndex, row: OutputRow, report: PhotoReport, status: str, restored: dict,
               publish: bool = True) -> None:
        """The photo's output is written: its row done with `restored` (per face id, the
        restoration's facts), its report `status`; published unless `publish` is false (a
        later pass may redo it)."""
        report.status = status
        row.state, row.status = "done", status
        row.detail = {"reason": report.reason, "restored": restored}
        ix.mark_output(row)
        if publish:
            self.publish(report)

    def publish(self, report: PhotoReport) -> None:
        """Hand a photo's final report to `on_photo`, once."""
        if self.on_photo is not None and report.path not in self._published:
            self._published.add(report.path)
            self.on_photo(report)
