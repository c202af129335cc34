"""The canonical cuts of a run's work (albumfix.stages.chunks)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from albumfix.stages.analyse import EMBED_BATCH_PHOTOS, PhotoToAnalyse
from albumfix.stages.chunks import analysis_groups, restore_blocks
from albumfix.stages.restore import ExemplarRef, FaceTask, PhotoTask


def _photo(name: str, exemplars_per_face: list[int]) -> PhotoTask:
    exemplar = ExemplarRef("e", Path("e.jpg"), np.zeros((68, 2), np.float32), None, 0.1)
    faces = tuple(FaceTask(f"{name}-{k}", np.zeros((68, 2), np.float32), (0, 0, 1, 1), None, "dlib", 0.0,
                           (exemplar,) * n) for k, n in enumerate(exemplars_per_face))
    return PhotoTask(name, Path(name), Path(name), faces)


def test_analysis_groups_are_fixed_runs_of_photos_in_order():
    photos = [PhotoToAnalyse(f"h{k}", f"{k}.jpg", Path(f"{k}.jpg")) for k in range(2 * EMBED_BATCH_PHOTOS + 3)]
    groups = list(analysis_groups(photos))
    assert [len(g) for g in groups] == [EMBED_BATCH_PHOTOS, EMBED_BATCH_PHOTOS, 3]
    assert [p for g in groups for p in g] == photos


def test_restore_blocks_close_once_their_restorations_reach_the_size():
    # restorations per photo: 1 (unguided), 3 (one face, 3 exemplars fused), 2 (two faces), 1, 1, 1
    photos = [_photo("a", [0]), _photo("b", [3]), _photo("c", [1, 0]), _photo("d", [1]), _photo("e", [0]),
              _photo("f", [0])]
    blocks = list(restore_blocks(photos, 4))
    assert [[p.relpath for p in b] for b in blocks] == [["a", "b"], ["c", "d", "e"], ["f"]]
    assert list(restore_blocks([], 4)) == []
