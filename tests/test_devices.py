"""albumfix.devices: the one device rule ("auto" = CUDA, else MPS, else CPU), its errors for
unknown and unusable devices, and every torch part (restorer, training, FAN, dlib's network)
following it. GPUs and MPS are stood in by torch's availability queries."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from albumfix.devices import DeviceError, parse_device, resolve_device
from conftest import REPO


@pytest.fixture
def machine(monkeypatch):
    """Stand in a machine: machine(gpus=2, current=1, mps=False)."""

    def stand_in(gpus: int = 0, current: int = 0, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return stand_in


def test_auto_is_cuda_then_mps_then_cpu(machine):
    machine(gpus=2, current=1, mps=True)
    assert resolve_device("auto") == torch.device("cuda", 1)  # torch's current GPU
    machine(gpus=0, mps=True)
    assert resolve_device("auto") == torch.device("mps")
    machine(gpus=0, mps=False)
    assert resolve_device("auto") == torch.device("cpu")


def test_explicit_devices_and_their_errors(machine):
    machine(gpus=0, mps=False)
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(" CPU ")
    with pytest.raises(DeviceError, match=r"device 'cuda:3' requested but no CUDA GPU is usable .*--device cpu or auto"):
        resolve_device("cuda:3")
    with pytest.raises(DeviceError, match="device 'mps' requested but Apple MPS is not available"):
        resolve_device("mps")
    machine(gpus=2, current=1)
    assert resolve_device("cuda") == torch.device("cuda", 1) and resolve_device("CUDA:0") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match=r"device 'cuda:3' requested but only 2 CUDA device\(s\) exist"):
        resolve_device("cuda:3")
    for bad in ("tpu", "gpu0", "cuda:", "cuda:x", "cuda:-1", ""):
        with pytest.raises(DeviceError, match="unknown device .*; use auto, cpu, cuda, cuda:N or mps"):
            resolve_device(bad)
    assert issubclass(DeviceError, ValueError)  # callers reject bad settings by ValueError


def test_parse_device_names():
    assert [parse_device(n) for n in ("auto", "cpu", "mps", "cuda", " Cuda:12")] == [
        ("auto", None), ("cpu", None), ("mps", None), ("cuda", None), ("cuda", 12)]


def test_importing_the_rule_does_not_import_torch():
    code = "import sys, albumfix.devices; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_restorer_and_training_use_the_one_rule():
    import albumfix.restore.engine
    import albumfix.train.trainer

    assert albumfix.restore.engine.resolve_device is resolve_device
    assert albumfix.train.trainer.resolve_device is resolve_device


def test_face_analysis_torch_parts_follow_auto_onto_mps(machine, monkeypatch, tmp_path):
    """On a Mac (MPS, no CUDA) "auto" puts dlib's network and FAN on MPS, as the restorer."""
    from albumfix.faces.backends import create_analyzer, fan_backend

    machine(gpus=0, mps=True)
    analyzer = create_analyzer(faces="dlib", landmarks="dlib", models_dir=str(tmp_path), device="auto")
    assert analyzer.embedding_part.device == "mps"
    monkeypatch.setattr(fan_backend, "find_checkpoint", lambda models_dir: tmp_path)
    loaded = []
    monkeypatch.setattr(fan_backend, "_load_network", lambda path, mtime, device: loaded.append(device))
    assert fan_backend.FanLandmarker.load(None, device="auto").device == "mps" and loaded == ["mps"]
    machine(gpus=0, mps=False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        create_analyzer(faces="dlib", landmarks="dlib", models_dir=str(tmp_path), device="cuda:1")
