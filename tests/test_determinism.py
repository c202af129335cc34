"""A face's restored pixels do not depend on its batch-mates, on where the work was cut into
chunks, or on the thread count being left to the environment."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from albumfix.pipeline import Pipeline
from albumfix.stages.models import cpu_threads
from albumfix.restore import ASFFNet, fold_spectral_norm
from albumfix.restore.engine import RestoreEngine
from albumfix.settings import Settings
from conftest import photo_outputs, restore_all_args, run_cli, seeded_output, tiny_model_config
from test_engine import make_jobs

TINY = tiny_model_config("determinism-tiny")


class ShapeRecorder(nn.Module):
    """The tiny model, recording the batch size of every forward."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.config, self.rows = inner, inner.config, []

    def forward(self, lq, ref, lq_landmarks, ref_landmarks):
        self.rows.append(lq.shape[0])
        return self.inner(lq, ref, lq_landmarks, ref_landmarks)


def test_a_face_gets_the_same_bytes_whatever_shares_its_batch():
    torch.manual_seed(0)
    model = ShapeRecorder(fold_spectral_norm(ASFFNet(TINY)).eval())
    engine = RestoreEngine(model, device="cpu", batch_size=4)
    jobs = make_jobs(7, seed=11)
    together = engine.restore(jobs)  # chunks of 4 and 3 faces
    alone = engine.restore([jobs[5]])
    elsewhere = engine.restore([jobs[1], jobs[5], jobs[0]])  # another row, other batch-mates
    assert np.array_equal(together[5].image, alone[0].image)
    assert np.array_equal(together[5].image, elsewhere[1].image)
    assert np.array_equal(together[1].image, elsewhere[0].image)
    assert model.rows == [4, 4, 4, 4]  # short chunks are padded: one shape for every face


def test_one_photo_restored_alone_equals_it_restored_with_the_album(album_copy, analysed_index, random_weights,
                                                                  reference_restore, tmp_path):
    photo = "1975/group.png"  # three faces: a chunk of 3 padded to 8 alone, 5 faces with the album
    out = seeded_output(analysed_index, tmp_path / "out")
    (tmp_path / "list").write_text(photo + "\n")
    alone = run_cli("restore", str(album_copy), "-o", str(out), *restore_all_args(random_weights),
                    "--files-from", str(tmp_path / "list"), "-q")
    assert alone.returncode == 0, alone.stderr
    assert photo_outputs(out) == {photo: photo_outputs(reference_restore[0])[photo]}


def test_the_torch_thread_count_is_set_explicitly(album_copy, random_weights, tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # as OMP_NUM_THREADS=3 would
        Pipeline(album_copy, Settings(output=tmp_path / "out", weights=random_weights, threads=1)).models.engine()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert cpu_threads(0) == len(os.sched_getaffinity(0)) and cpu_threads(5) == 5

