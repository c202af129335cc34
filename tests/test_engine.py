"""RestoreEngine on the CPU with a tiny ASFFNet: shapes, batching, self-guidance, OOM and NaN
paths, precision choice per GPU (capability queries stood in), IEEE fp32 and scoped cuDNN flags."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from albumfix.restore import ASFFNet, WeightsError, fold_spectral_norm
from albumfix.restore.layers import has_spectral_norm
from albumfix.restore.engine import RestoredFace, RestoreEngine, RestoreJob, resolve_precision
from conftest import fp32_switches, tiny_model_config

TINY = tiny_model_config("engine-test-tiny")
S = TINY.size


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    """A randomly initialised tiny ASFFNet, spectral norm folded, eval mode (shared, read-only)."""
    torch.manual_seed(0)
    return fold_spectral_norm(ASFFNet(TINY)).eval()


def make_jobs(n: int, seed: int = 0, with_ref: bool = True) -> list[RestoreJob]:
    """n random jobs of side S with plausible landmarks (inside the crop)."""
    rng = np.random.default_rng(seed)
    jobs = []
    for _ in range(n):
        lq = rng.integers(0, 256, (S, S, 3), dtype=np.uint8)
        lm = rng.uniform(6, S - 6, (68, 2)).astype(np.float32)
        ref = rng.integers(0, 256, (S, S, 3), dtype=np.uint8) if with_ref else None
        ref_lm = (lm + rng.normal(0, 1, (68, 2))).astype(np.float32) if with_ref else None
        jobs.append(RestoreJob(lq, ref, lm, ref_lm))
    return jobs


class SmallGpuDouble(nn.Module):
    """Test double for a device with little memory: raises `error` (CUDA out-of-memory by
    default) for batches larger than `max_batch`, and for the first `failures` calls whatever
    their size. Records batch sizes."""

    def __init__(self, inner: nn.Module, max_batch: int | None = None, failures: int = 0,
                 error=lambda: torch.cuda.OutOfMemoryError("CUDA out of memory (test double)")) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.max_batch = max_batch
        self.failures = failures
        self.error = error
        self.calls: list[int] = []

    def forward(self, lq, ref, lq_landmarks, ref_landmarks):
        self.calls.append(lq.shape[0])
        if len(self.calls) <= self.failures or (self.max_batch and lq.shape[0] > self.max_batch):
            raise self.error()
        return self.inner(lq, ref, lq_landmarks, ref_landmarks)


class NanUnderAutocast(nn.Module):
    """Test double for a model that overflows in reduced precision: NaN output under autocast."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config

    def forward(self, lq, ref, lq_landmarks, ref_landmarks):
        if torch.is_autocast_enabled(lq.device.type):
            return torch.full_like(lq, float("nan"))
        return self.inner(lq, ref, lq_landmarks, ref_landmarks)


def stack(results: list[RestoredFace]) -> np.ndarray:
    return np.stack([r.image for r in results]).astype(np.int16)


def test_missing_weights_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("ALBUMFIX_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="no weights for model 'asffnet512'"):
        RestoreEngine("asffnet512", device="cpu")


def test_named_model_with_random_init():
    engine = RestoreEngine("albumfix-s128", device="cpu", allow_random=True, batch_size=2)
    assert engine.size == 128 and engine.device == "cpu" and engine.precision == "fp32"
    assert engine.model.config.name == "albumfix-s128" and not engine.model.training
    assert not has_spectral_norm(engine.model)  # folded once at load


def test_restore_shapes_guided_flags_and_determinism(tiny_model):
    jobs = make_jobs(3) + make_jobs(2, seed=1, with_ref=False)
    engine = RestoreEngine(tiny_model, device="cpu", batch_size=2)
    results = engine.restore(jobs)
    assert len(results) == 5
    for r in results:
        assert r.image.shape == (S, S, 3) and r.image.dtype == np.uint8
        assert r.seconds > 0
    assert [r.guided for r in results] == [True, True, True, False, False]
    assert np.array_equal(stack(results), stack(engine.restore(jobs)))
    assert engine.restore([]) == []


def test_batched_equals_one_at_a_time(tiny_model):
    jobs = make_jobs(5, seed=2)
    batched = RestoreEngine(tiny_model, device="cpu", batch_size=4).restore(jobs)
    single = RestoreEngine(tiny_model, device="cpu", batch_size=1).restore(jobs)
    assert np.abs(stack(batched) - stack(single)).max() <= 1


def test_no_exemplar_face_guides_itself(tiny_model):
    jobs = make_jobs(2, seed=3, with_ref=False)
    self_ref = [RestoreJob(j.lq, j.lq, j.lq_landmarks, j.lq_landmarks) for j in jobs]
    engine = RestoreEngine(tiny_model, device="cpu", batch_size=2)
    unguided, explicit = engine.restore(jobs), engine.restore(self_ref)
    assert np.array_equal(stack(unguided), stack(explicit))
    assert not any(r.guided for r in unguided) and all(r.guided for r in explicit)
    other = engine.restore(make_jobs(2, seed=3))  # a real exemplar changes the result
    assert not np.array_equal(stack(other), stack(unguided))


def test_out_of_memory_halves_the_batch(tiny_model):
    jobs = make_jobs(7, seed=4)
    reference = RestoreEngine(tiny_model, device="cpu", batch_size=1).restore(jobs)
    double = SmallGpuDouble(tiny_model, max_batch=2)
    engine = RestoreEngine(double, device="cpu", batch_size=8)
    results = engine.restore(jobs)
    assert double.calls == [8, 4, 2, 2, 2, 2]  # every forward has the working batch size of rows
    assert np.abs(stack(results) - stack(reference)).max() <= 1
    double.calls.clear()
    engine.restore(jobs[:4])  # the lowered batch size is kept for later batches
    assert double.calls == [2, 2]


def test_out_of_memory_at_batch_one_falls_back_to_cpu(tiny_model):
    jobs = make_jobs(3, seed=5)
    double = SmallGpuDouble(tiny_model, failures=3)
    engine = RestoreEngine(double, device="cpu", batch_size=4)
    results = engine.restore(jobs)
    assert double.calls == [4, 2, 1, 4]  # fail at 4, 2 and 1 rows; then the CPU with the full batch
    assert len(results) == 3 and engine.device == "cpu"
    hopeless = SmallGpuDouble(tiny_model, failures=10**6)
    with pytest.raises(torch.OutOfMemoryError):
        RestoreEngine(hopeless, device="cpu", batch_size=2).restore(jobs)


# Messages as torch 2.x raises them (a RuntimeError each, not torch.OutOfMemoryError).
ALLOCATION_FAILURES = [
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API call, "
    "so the stacktrace below might be incorrect.\nFor debugging consider passing CUDA_LAUNCH_BLOCKING=1",
]
OTHER_GPU_FAILURES = [
    "CUDA error: an illegal memory access was encountered",
    "cuDNN error: CUDNN_STATUS_EXECUTION_FAILED",
    "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, opa, opb, m, n, k, ...)`",
]


@pytest.mark.parametrize("message", ALLOCATION_FAILURES)
def test_library_allocation_failures_halve_the_batch_too(tiny_model, message):
    jobs = make_jobs(7, seed=4)
    double = SmallGpuDouble(tiny_model, max_batch=2, error=lambda: RuntimeError(message))
    results = RestoreEngine(double, device="cpu", batch_size=8).restore(jobs)
    assert double.calls == [8, 4, 2, 2, 2, 2] and len(results) == 7  # every call padded to the working batch


@pytest.mark.parametrize("message", OTHER_GPU_FAILURES)
def test_other_gpu_errors_end_the_run_at_once(tiny_model, message):
    double = SmallGpuDouble(tiny_model, max_batch=2, error=lambda: RuntimeError(message))
    with pytest.raises(RuntimeError, match="CUDA|cuDNN"):
        RestoreEngine(double, device="cpu", batch_size=8).restore(make_jobs(7, seed=4))
    assert double.calls == [8]  # one (padded) call, no back-off


class GpuStandIn:
    """torch.cuda's capability query for a machine with a Turing GPU 1 and an Ampere GPU 0,
    whose is_bf16_supported() says True (as torch's does on every CUDA GPU: it counts emulation)."""

    CAPABILITIES = {0: (8, 0), 1: (7, 5)}

    def __init__(self) -> None:
        self.asked: list[int] = []

    def get_device_capability(self, device=None):
        index = torch.device(device).index if device is not None else 0
        self.asked.append(index)
        return self.CAPABILITIES[index]


def test_auto_precision_follows_the_compute_capability_of_the_engine_device(monkeypatch):
    gpus = GpuStandIn()
    monkeypatch.setattr(torch.cuda, "get_device_capability", gpus.get_device_capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_precision("auto", torch.device("cuda", 1)) is torch.float16  # Turing: no bf16 cores
    assert resolve_precision("auto", torch.device("cuda", 0)) is torch.bfloat16
    assert gpus.asked == [1, 0]  # the device asked about, not the current one
    for given, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        assert resolve_precision(given, torch.device("cuda", 1)) is dtype
    assert resolve_precision("auto", torch.device("cpu")) is None and gpus.asked == [1, 0]
    for bad in ("bf61", "FP16", "tf32"):
        with pytest.raises(ValueError, match="precision must be one of"):
            resolve_precision(bad, torch.device("cuda", 0))


def test_batches_run_in_ieee_fp32_with_reproducible_cudnn_then_the_process_settings_return(
        tiny_model, host_allows_tf32, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # the host process's own choices
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    host = fp32_switches()
    cudnn, in_force = torch.backends.cudnn, []
    engine = RestoreEngine(tiny_model, device="cpu", batch_size=2, precision="fp32")
    assert torch.backends.cudnn.benchmark  # building an engine changes nothing process-wide
    hook = tiny_model.register_forward_pre_hook(lambda module, args: in_force.append(
        dict(fp32_switches(), benchmark=cudnn.benchmark, deterministic=cudnn.deterministic)))
    try:
        engine.restore(make_jobs(3, seed=7))
    finally:
        hook.remove()
    assert len(in_force) == 2
    for seen in in_force:
        assert seen["mkldnn.matmul"] == "ieee" and seen["mkldnn.conv"] == "ieee"
        assert not seen["benchmark"] and seen["deterministic"]
    assert fp32_switches() == host
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


def test_nan_under_autocast_falls_back_to_fp32(tiny_model):
    jobs = make_jobs(3, seed=6)
    engine = RestoreEngine(NanUnderAutocast(tiny_model), device="cpu", batch_size=2, precision="bf16")
    assert engine.precision == "bf16"
    results = engine.restore(jobs)
    reference = RestoreEngine(tiny_model, device="cpu", batch_size=2, precision="fp32").restore(jobs)
    assert np.array_equal(stack(results), stack(reference))
    assert engine.precision == "fp32"


def test_bad_jobs_are_rejected(tiny_model):
    engine = RestoreEngine(tiny_model, device="cpu")
    good = make_jobs(1)[0]
    with pytest.raises(ValueError, match="job 0: lq"):
        engine.restore([RestoreJob(good.lq[:16], None, good.lq_landmarks)])
    with pytest.raises(ValueError, match="ref_landmarks"):
        engine.restore([RestoreJob(good.lq, good.ref, good.lq_landmarks, None)])
    with pytest.raises(ValueError):
        RestoreEngine(tiny_model, device="cpu", batch_size=0)
