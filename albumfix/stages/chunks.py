"""The canonical batches every backend cuts a run's work into, so that outputs never depend on
how work was split between processes or machines.

- Analysis: the photos to analyse, in the driver's order (the album's, by name), in groups of
  `EMBED_BATCH_PHOTOS`; a group's faces are embedded together (albumfix.stages.analyse), and an
  embedding may depend on its batch-mates' shapes, so both backends embed exactly these groups.
- Restoration needs no canonical cut: the engine pads every forward to its fixed batch size, so
  a face's pixels do not depend on its batch-mates (albumfix.restore.engine); photos may be
  dealt to workers in any blocks. A worker pads the last model batch of each block it is
  handed, so `restore_blocks` makes blocks of several model batches of faces: on a CPU a padded
  row costs what a face does.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from albumfix.stages.analyse import EMBED_BATCH_PHOTOS, PhotoToAnalyse
from albumfix.stages.restore import PhotoTask

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


def restore_blocks(tasks: Iterable[PhotoTask], restorations: int) -> Iterator[list[PhotoTask]]:
    """Consecutive photo tasks, each block closed once its restorations (one per face and
    exemplar, one for an unguided face) reach `restorations`; the last block may hold fewer."""
    block: list[PhotoTask] = []
    count = 0
    for task in tasks:
        block.append(task)
        count += sum(max(1, len(face.exemplars)) for face in task.faces)
        if count >= restorations:
            yield block
            block, count = [], 0
    if block:
        yield block
