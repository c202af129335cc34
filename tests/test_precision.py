"""albumfix.restore.precision on the CPU: TF32 off (and back) around fp32 work on any device, and
reproducible cuDNN settings scoped to a block. torch's switches are process-wide, so every test
checks that the previous values come back."""
from __future__ import annotations

import pytest
import torch

from albumfix.restore import precision
from albumfix.restore.precision import ieee_fp32, precision_name, reproducible_cudnn
from conftest import fp32_switches


def test_ieee_fp32_on_a_gpu_turns_tf32_off_and_gives_the_host_its_setting_back(host_allows_tf32):
    host = fp32_switches()
    assert host["cuda.matmul"] == "tf32" and host["cudnn.conv"] == "tf32"  # torch's defaults + "high"
    with ieee_fp32(torch.device("cuda", 1)):
        inside = fp32_switches()
    assert inside["cuda.matmul"] == inside["cudnn.conv"] == "ieee"
    assert inside["mkldnn.matmul"] == host["mkldnn.matmul"]  # the CPU's switches are not the GPU's
    assert fp32_switches() == host
    assert torch.get_float32_matmul_precision() == "high"  # the legacy view still reads consistently
    with pytest.raises(KeyError), ieee_fp32(torch.device("cuda")):
        raise KeyError("a failing batch")
    assert fp32_switches() == host


def test_ieee_fp32_on_the_cpu_covers_onednn_and_other_devices_are_left_alone(host_allows_tf32):
    host = fp32_switches()
    assert host["mkldnn.matmul"] == "tf32"
    with ieee_fp32(torch.device("cpu")):
        inside = fp32_switches()
    assert inside["mkldnn.matmul"] == inside["mkldnn.conv"] == "ieee"
    assert inside["cuda.matmul"] == "tf32"
    with ieee_fp32(torch.device("meta")):
        assert fp32_switches() == host
    assert fp32_switches() == host


def test_ieee_fp32_uses_the_legacy_flags_on_torch_before_2_9(monkeypatch, host_allows_tf32):
    monkeypatch.setattr(precision, "_has_fp32_precision_switches", lambda: False)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with ieee_fp32(torch.device("cuda")):
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with ieee_fp32(torch.device("cpu")):  # no legacy TF32 flag for the CPU
        assert torch.backends.cuda.matmul.allow_tf32


def test_reproducible_cudnn_is_scoped_to_the_block(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)  # the host's own choice
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    with reproducible_cudnn():
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic


def test_precision_names_round_trip():
    assert [precision_name(precision.resolve_precision(p, torch.device("cpu"))) for p in ("fp32", "bf16", "fp16")] \
        == ["fp32", "bf16", "fp16"]
