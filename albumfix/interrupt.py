"""Graceful stop: SIGINT (Ctrl-C) and SIGTERM (a timer's timeout, `kill`) ask a run to stop
after the photo in hand.

The first signal only records itself; the pipeline reads the record between photos, so the
work in progress (a dlib detection, one model batch, a photo's write) finishes, the index stays
consistent and the summary of what was done is printed. A second signal, of either kind, ends
the process at once as it would end without albumfix; writes are atomic, so even that leaves
nothing half-written.
"""
from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from albumfix.errors import Interrupted

log = logging.getLogger("albumfix")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether a stop was asked for and by which signal; a plain StopRequest() never fires."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def signal_name(self) -> str | None:
        """"SIGINT" or "SIGTERM" once requested, else None."""
        return signal.Signals(self.signum).name if self.signum is not None else None

    def raise_if_requested(self) -> None:
        """Interrupted (exit 128 + signal) when a stop was asked for: for waits before any work."""
        if self.signum is not None:
            raise Interrupted(self.signum, f"stopped by {self.signal_name} before any work was done")

    def _receive(self, signum: int, frame) -> None:
        if self.signum is not None:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        log.warning("%s received: stopping after the photo in hand (send it again to stop at once)",
                    self.signal_name)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM set the yielded StopRequest for the body; the previous handlers come
    back afterwards. Call from the main thread (Python delivers signals there only)."""
    request = StopRequest()
    previous = {signum: signal.signal(signum, request._receive) for signum in STOP_SIGNALS}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
