"""The embedded backend: the stages run in this process, one analysis group and one photo after
another, the models loaded once per run (albumfix.stages.models)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from albumfix.stages.analyse import PhotoAnalysis, PhotoToAnalyse, analyse_group
from albumfix.stages.context import RunContext
from albumfix.stages.models import Models
from albumfix.stages.restore import PhotoResult, PhotoTask, Restorer


class LocalBackend:
    """Runs the stages here. A stop request (ctx.stop) ends analysis after the photo in hand;
    restoration ends when the driver stops handing tasks, with the photos in hand finished."""

    def __init__(self, ctx: RunContext, models: Models):
        self.ctx = ctx
        self.models = models

    def analyse(self, groups: Iterable[list[PhotoToAnalyse]]) -> Iterator[list[PhotoAnalysis]]:
        """Each group's PhotoAnalysis list, in order (albumfix.stages.analyse.analyse_group)."""
        stop = lambda: self.ctx.stop.requested  # noqa: E731
        for group in groups:
            if stop():
                return
            yield analyse_group(group, self.models.analyzer(), self.ctx.index_path, stop)

    def restore(self, tasks: Iterable[PhotoTask]) -> Iterator[PhotoResult]:
        """Each photo's PhotoResult as soon as it is written or failed (albumfix.stages.restore)."""
        restorer = Restorer(self.models, self.ctx.out, self.ctx.index_path)
        for task in tasks:
            yield from restorer.submit(task)
        yield from restorer.flush()

    def close(self) -> None:
        """Nothing to release: the models go with the run."""
