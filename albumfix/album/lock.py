"""The output-folder lock: one albumfix process at a time writes an output folder (its photos
and its index), whether a `restore`, a `scan` or a `people` edit.

The lock is `filelock`'s exclusive lock (flock(2) on Unix) on `OUT/.albumfix/lock`, held for the
whole run. The kernel drops it when its process ends, however it ends (SIGKILL, a crash, a
power cut), so a killed run never blocks the next one: there is no PID file to go stale. The
holder also writes who it is (pid, start time) to `OUT/.albumfix/lock.owner`; that file only
feeds the message a second process prints and is never trusted for locking.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from albumfix.atomic import atomic_write_bytes
from albumfix.errors import BusyError

log = logging.getLogger("albumfix")

LOCK_FILE = Path(".albumfix") / "lock"
OWNER_FILE = Path(".albumfix") / "lock.owner"
POLL_SECONDS = 0.5


def _no_check() -> None:
    pass


@contextmanager
def output_lock(out: Path, wait: float = 0.0, while_waiting: Callable[[], None] = _no_check) -> Iterator[None]:
    """Hold OUT's lock for the body (creating OUT/.albumfix). When another process holds it:
    BusyError at once (wait 0), or after waiting up to `wait` seconds; `while_waiting` is called
    about every POLL_SECONDS meanwhile and may raise to give up the wait (e.g. on SIGTERM)."""
    out = Path(out)
    (out / LOCK_FILE).parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK_FILE))
    _acquire(lock, out, wait, while_waiting)
    try:
        _write_owner(out)
        yield
    finally:
        lock.release()


def _write_owner(out: Path) -> None:
    """Say who holds the lock, for the message of a second process; only informative, so a
    failure (a full disk, which the run itself will report) is no reason not to run."""
    owner = {"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    try:
        atomic_write_bytes(out / OWNER_FILE, json.dumps(owner).encode())
    except OSError as exc:
        log.warning("could not record the lock's owner in %s: %s", out / OWNER_FILE, exc)


def _acquire(lock: FileLock, out: Path, wait: float, while_waiting: Callable[[], None]) -> None:
    try:
        lock.acquire(timeout=0)
        return
    except Timeout:
        if wait <= 0:
            raise BusyError(f"{holder(out)} is using {out}; try again later or pass --wait SECONDS") from None
    log.info("%s is using %s: waiting up to %g s for it to finish", holder(out), out, wait)
    deadline = time.monotonic() + wait
    while True:
        while_waiting()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BusyError(f"{holder(out)} is still using {out} after waiting {wait:g} s")
        try:
            lock.acquire(timeout=min(POLL_SECONDS, remaining))
            return
        except Timeout:
            continue


def holder(out: Path) -> str:
    """"another albumfix run (pid N, started T)" from the owner file; without pid and time when
    the holder has not written it yet."""
    try:
        owner = json.loads((Path(out) / OWNER_FILE).read_text())
        return f"another albumfix run (pid {owner['pid']}, started {owner['started']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another albumfix run"
