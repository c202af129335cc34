"""The canonical batches every backend cuts a run's work into, so that outputs never depend on
how work was split between processes or machines.

- Analysis: the photos to analyse, in the driver's order (the album's, by name), in groups of
  `EMBED_BATCH_PHOTOS`; a group's faces are embedded together (albumfix.stages.analyse), and an
  embedding may depend on its batch-mates' shapes, so both backends embed exactly these groups.
- Restoration needs no canonical cut: the engine pads every forward to its fixed batch size, so
  a face's pixels do not depend on its batch-mates (albumfix.restore.engine); photos may be
  dealt to workers in any blocks (`blocks`).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from albumfix.stages.analyse import EMBED_BATCH_PHOTOS, PhotoToAnalyse

T = TypeVar("T")


def blocks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last one shorter), in order."""
    block: list[T] = []
    for item in items:
        block.append(item)
        if len(block) == size:
            yield block
            block = []
    if block:
        yield block


def analysis_groups(photos: Iterable[PhotoToAnalyse]) -> Iterator[list[PhotoToAnalyse]]:
    """The canonical analysis groups of `photos` (in the driver's order)."""
    return blocks(photos, EMBED_BATCH_PHOTOS)
