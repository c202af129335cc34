"""The models the stages use, loaded from the settings alone, each on first use: a re-run with
nothing new loads none. One `Models` per process that runs stages (the local run shares one
between analysis and restoration; each Ray worker holds its own)."""
from __future__ import annotations

import os
import time
from functools import cached_property
from pathlib import Path

from albumfix.errors import FatalError
from albumfix.settings import Settings


def cpu_threads(requested: int) -> int:
    """torch CPU threads: `requested`, or for 0 the CPUs this process may use (the same for
    every run on one machine, unlike torch's default, which follows OMP_NUM_THREADS)."""
    if requested:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class Models:
    """The face analyzer and the restoration engine for `settings`, created on first use.

    load_seconds: "analyzer" / "engine" -> wall seconds its creation took (its modules' first
    import included), for those created: a benchmark's model load time; nothing depends on it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.load_seconds: dict[str, float] = {}
        self._analyzer = None
        self._engine = None

    def _set_threads(self) -> None:
        """torch's CPU thread count, set explicitly: it changes results (embeddings in the last
        bits, restored pixels by a grey level: restore/engine.py), and Ray sets it per worker."""
        import torch

        torch.set_num_threads(cpu_threads(self.settings.threads))

    def analyzer(self):
        """The face analyzer (albumfix.faces.backends.create_analyzer); FatalError when its
        backend or device is unusable here."""
        self._set_threads()
        if self._analyzer is None:
            started = time.perf_counter()
            from albumfix.faces.analyzer import BackendUnavailable
            from albumfix.faces.backends import create_analyzer

            s = self.settings
            try:
                self._analyzer = create_analyzer(
                    faces=s.faces, landmarks=s.landmarks,
                    models_dir=str(s.models_dir) if s.models_dir else None,
                    upsample=s.upsample, cnn_fallback=s.cnn_fallback, device=s.device,
                )
            except (BackendUnavailable, ValueError) as exc:  # ValueError: a device unknown or unusable here
                raise FatalError(str(exc)) from exc
            self.load_seconds["analyzer"] = time.perf_counter() - started
        return self._analyzer

    def engine(self):
        """The restoration engine; FatalError when the model or device is unusable."""
        self._set_threads()
        if self._engine is None:
            started = time.perf_counter()
            from albumfix.restore.engine import RestoreEngine

            s = self.settings
            try:
                self._engine = RestoreEngine(model=self.model_name, weights=s.weights, device=s.device,
                                             batch_size=s.batch_size, precision=s.precision)
            except Exception as exc:  # any failure to load the model or device is fatal
                raise FatalError(f"restoration model unusable: {exc}") from exc
            self.load_seconds["engine"] = time.perf_counter() - started
        return self._engine

    @cached_property
    def model_name(self) -> str:
        """The configuration restore runs: the one a given albumfix weights file was saved from
        (so `--weights FILE` alone is enough), else `--model`."""
        from albumfix.restore.weights import weights_config

        return (weights_config(self.settings.weights) if self.settings.weights else None) or self.settings.model

    @cached_property
    def weights_digest(self) -> str:
        """SHA-256 of the weights file restore uses (given, imported or shipped; "none" when
        there is none), read once: new weights mean new outputs, even at the same path."""
        from albumfix.restore.weights import file_sha256, find_weights

        path = self.settings.weights or find_weights(self.model_name)
        return file_sha256(path) if path and Path(path).is_file() else "none"
