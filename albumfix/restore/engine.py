"""Restoration engine: device choice, batching, mixed precision and out-of-memory back-off.

    engine = RestoreEngine("albumfix-s128", device="auto")
    results = engine.restore([RestoreJob(lq, ref, lq_landmarks, ref_landmarks), ...])

Faces from any number of photos are restored in batches of `batch_size`. On CUDA the model
runs channels_last under bf16 autocast (fp16 on GPUs without bf16 tensor cores, see
`albumfix.restore.precision`); a batch whose output holds NaN/inf is re-run in fp32, and fp32 is
kept from then on. fp32 means IEEE fp32 (no TF32). CPU runs fp32 unless asked otherwise. A GPU
out-of-memory error (the caching allocator's, or a cuBLAS/cuDNN/CUDA allocation failure) halves
the batch (kept for later batches), down to 1, then moves the model to the CPU for the rest; no
face is ever dropped. The same inputs on the same device give the same outputs (no randomness;
cuDNN autotuning off and deterministic cuDNN algorithms while a batch runs, the process's own
cuDNN settings restored after it).

A face's pixels do not depend on the other faces of its batch. Every forward has exactly the
working batch size of rows, a short chunk being padded with copies of its last face, so the
shape a face is computed at never depends on how many faces happen to be pending (a photo alone,
a full album, a resumed run); at one shape the kernels compute every row with the same
arithmetic (no layer mixes samples), so neither the batch-mates nor the row change a face.
Without padding, a face restored alone and in a batch of 8 differed by one grey level on 2 of 38
real faces. Why padding rather than one face per forward: on the GPU batching is the speed, and
on the CPU it still helps a little (albumfix-s128, 2 threads, 32 faces: 0.16 s per face at batch
1, 0.13 s at batch 8). A padded row costs what a face does (one face alone at batch 8: 0.99 s
instead of 0.17 s), so compose.py hands over full chunks and pads only the last one of a run:
at most batch size - 1 rows, under 1 s per run on a CPU.
The thread count changes results as well (1 of 40 faces by one grey level, 1 against 2 threads),
so the pipeline sets it explicitly. An out-of-memory back-off changes the shape, and with it
possibly a grey level on the faces restored after it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from albumfix.devices import DeviceError, resolve_device
from albumfix.restore import create_model, find_weights
from albumfix.restore.precision import ieee_fp32, precision_name, reproducible_cudnn, resolve_precision
from albumfix.restore.tensors import images_to_tensor, tensor_to_images
from albumfix.restore.weights import WeightsError, user_models_dir

log = logging.getLogger(__name__)

# Allocation failures that reach Python as a plain RuntimeError, not torch.OutOfMemoryError:
# cuBLAS/cuDNN workspace or handle allocation, and CUDA calls outside the caching allocator.
_ALLOCATION_FAILURES = ("CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "CUDA error: out of memory")


# Failures after which no face at all can be restored (a run must stop, not skip the face):
# out of memory even for one face on the CPU, NaN/inf from fp32 weights, a device gone.
ENGINE_FAILURES: tuple[type[BaseException], ...] = (
    torch.OutOfMemoryError, FloatingPointError, DeviceError, *filter(None, [getattr(torch, "AcceleratorError", None)]))


@dataclass
class RestoreJob:
    """One face to restore.

    lq: (S, S, 3) uint8 RGB aligned crop; ref: (S, S, 3) uint8 RGB aligned exemplar of the same
    person, or None when there is none; lq_landmarks, ref_landmarks: (68, 2) float32 (x, y) crop
    px (ref_landmarks is ignored and may be None when ref is None).
    """

    lq: np.ndarray
    ref: np.ndarray | None
    lq_landmarks: np.ndarray
    ref_landmarks: np.ndarray | None = None


@dataclass
class RestoredFace:
    """Result of one job: image (S, S, 3) uint8 RGB; guided: False when the face had no exemplar
    and guided itself; seconds: this face's share of its batch's wall time (s)."""

    image: np.ndarray
    guided: bool
    seconds: float


def is_out_of_memory(error: BaseException) -> bool:
    """True for a device out-of-memory error: torch.OutOfMemoryError, or a RuntimeError whose
    message names a cuBLAS, cuDNN or CUDA allocation failure."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in _ALLOCATION_FAILURES)


def _check_job(job: RestoreJob, size: int, index: int) -> None:
    """ValueError naming job `index` when its arrays do not fit a model of crop side `size`."""
    crop = (size, size, 3)
    if job.lq.shape != crop or job.lq.dtype != np.uint8:
        raise ValueError(f"job {index}: lq must be {crop} uint8, got {job.lq.shape} {job.lq.dtype}")
    if np.shape(job.lq_landmarks) != (68, 2):
        raise ValueError(f"job {index}: lq_landmarks must be (68, 2), got {np.shape(job.lq_landmarks)}")
    if job.ref is None:
        return
    if job.ref.shape != crop or job.ref.dtype != np.uint8:
        raise ValueError(f"job {index}: ref must be {crop} uint8, got {job.ref.shape} {job.ref.dtype}")
    if job.ref_landmarks is None or np.shape(job.ref_landmarks) != (68, 2):
        raise ValueError(f"job {index}: ref_landmarks must be (68, 2) when ref is given")


def _load_named_model(name: str, weights: str | Path | None, allow_random: bool) -> nn.Module:
    """Build configuration `name` with its weights (found when None), spectral norm folded, eval.

    With no weights anywhere: WeightsError, unless allow_random (random init, for tests and
    timing only).
    """
    if weights is None:
        weights = find_weights(name)
    if weights is None and not allow_random:
        raise WeightsError(
            f"no weights for model {name!r}: expected {name}.safetensors in {user_models_dir()} "
            f"or shipped with albumfix (import a checkpoint with `albumfix models import FILE`)"
        )
    model = create_model(name, weights=weights, fold=True)
    return model.eval()


class RestoreEngine:
    """Restores batches of aligned faces with one ASFFNet on one device.

    model: a registered configuration name, or a ready nn.Module with `.config.size` and the
    ASFFNet forward signature (used as is: moved to the device and put in eval mode, in place).
    weights: checkpoint file; None looks it up with find_weights(model). device: auto | cpu |
    cuda | cuda:N | mps (see albumfix.devices). batch_size: faces per forward (>= 1). precision: auto | fp32 | bf16 |
    fp16 (see resolve_precision). allow_random: use a randomly initialised model when no
    weights exist instead of raising WeightsError (tests, timing).
    """

    def __init__(
        self,
        model: str | nn.Module = "albumfix-s128",
        weights: str | Path | None = None,
        device: str = "auto",
        batch_size: int = 8,
        precision: str = "auto",
        allow_random: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._device = resolve_device(device)
        self._autocast = resolve_precision(precision, self._device)
        self.batch_size = batch_size
        self._batch = batch_size  # working batch size, lowered by out-of-memory back-off
        self._fell_back = False
        if isinstance(model, str):
            module = _load_named_model(model, weights, allow_random)
        else:
            module = model.eval()
        self._model = self._place(module)

    @property
    def size(self) -> int:
        """Crop side S the model expects (px)."""
        return int(self._model.config.size)

    @property
    def device(self) -> str:
        """The device faces run on now, e.g. "cpu" or "cuda:0" (changes after a CPU fallback)."""
        return str(self._device)

    @property
    def model(self) -> nn.Module:
        """The module in use (eval mode, on `device`)."""
        return self._model

    @property
    def precision(self) -> str:
        """The precision in use now: "fp32", "bf16" or "fp16" (fp32 after a NaN fallback)."""
        return precision_name(self._autocast)

    def _place(self, module: nn.Module) -> nn.Module:
        """Move `module` to the engine's device; channels_last on CUDA."""
        module = module.to(self._device)
        if self._device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        return module

    def _forward(
        self, lq: torch.Tensor, ref: torch.Tensor, lq_lm: torch.Tensor, ref_lm: torch.Tensor
    ) -> torch.Tensor:
        """Model output (B, 3, S, S) float32; autocast output with NaN/inf is redone in fp32."""
        if self._autocast is not None:
            with torch.autocast(self._device.type, dtype=self._autocast):
                out = self._model(lq, ref, lq_lm, ref_lm).float()
            if bool(torch.isfinite(out).all()):
                return out
            log.warning("%s output held NaN/inf; re-running in fp32 from now on", self.precision)
            self._autocast = None
        out = self._model(lq, ref, lq_lm, ref_lm).float()
        if not bool(torch.isfinite(out).all()):
            raise FloatingPointError("the model produced NaN/inf in fp32: its weights are unusable")
        return out

    def _run_chunk(self, jobs: Sequence[RestoreJob]) -> np.ndarray:
        """Restore at most the working batch size of jobs in a forward of exactly that many rows
        (padded with copies of the last job). Returns (len(jobs), S, S, 3) uint8 RGB; faces
        without ref guide themselves."""
        chunk = [*jobs, *[jobs[-1]] * (self._batch - len(jobs))]
        lq = np.stack([j.lq for j in chunk])
        ref = np.stack([j.lq if j.ref is None else j.ref for j in chunk])
        lq_lm = np.stack([j.lq_landmarks for j in chunk]).astype(np.float32)
        ref_lm = np.stack([j.lq_landmarks if j.ref is None else j.ref_landmarks for j in chunk])
        ref_lm = ref_lm.astype(np.float32)
        memory = torch.channels_last if self._device.type == "cuda" else torch.contiguous_format
        with torch.inference_mode(), ieee_fp32(self._device), reproducible_cudnn():
            out = self._forward(
                images_to_tensor(lq, self._device).contiguous(memory_format=memory),
                images_to_tensor(ref, self._device).contiguous(memory_format=memory),
                torch.from_numpy(lq_lm).to(self._device),
                torch.from_numpy(ref_lm).to(self._device),
            )
            return tensor_to_images(out[: len(jobs)])

    def _back_off(self) -> bool:
        """React to an out-of-memory error: halve the working batch, else (at batch 1) move to
        the CPU in fp32 once. Returns False when nothing is left to try."""
        if self._device.type == "cuda":
            torch.cuda.empty_cache()
        if self._batch > 1:
            self._batch //= 2
            log.warning("out of memory on %s; batch size lowered to %d", self.device, self._batch)
            return True
        if self._fell_back:
            return False
        log.warning("out of memory on %s at batch size 1; continuing on the CPU in fp32", self.device)
        self._fell_back = True
        self._device = torch.device("cpu")
        self._autocast = None
        self._model = self._place(self._model)
        self._batch = self.batch_size
        return True

    def restore(self, jobs: Sequence[RestoreJob]) -> list[RestoredFace]:
        """Restore every job (any number, from any photos), in order. See the module docstring."""
        for index, job in enumerate(jobs):
            _check_job(job, self.size, index)
        results: list[RestoredFace] = []
        while len(results) < len(jobs):
            chunk = jobs[len(results) : len(results) + self._batch]
            start = time.perf_counter()
            images = None
            try:
                images = self._run_chunk(chunk)
            except RuntimeError as error:
                if not is_out_of_memory(error):
                    raise
                # handled below, once the failed batch's tensors are released with the traceback
            if images is None:
                if not self._back_off():
                    raise torch.OutOfMemoryError("out of memory for a single face, even on the CPU")
                continue
            share = (time.perf_counter() - start) / len(chunk)
            results += [RestoredFace(img, job.ref is not None, share) for img, job in zip(images, chunk)]
        return results
