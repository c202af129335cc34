"""Tests of weight files: import of the authors' layout, safetensors round trips, registry, safety."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from albumfix.restore import (
    WeightsError,
    create_model,
    find_weights,
    fold_spectral_norm,
    import_weights,
    list_weights,
    load_weights,
    save_weights,
)
from albumfix.restore import weights as weights_mod
from albumfix.restore.configs import get_config, register_config
from albumfix.restore.weights import config_behaviour, file_sha256, read_state_dict, user_models_dir, weights_config
from conftest import tiny_model_config

@pytest.fixture(autouse=True)
def _isolated_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """User folder under tmp_path and an empty shipped folder; one intra-op thread."""
    monkeypatch.setenv("ALBUMFIX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(weights_mod, "SHIPPED_DIR", tmp_path / "shipped")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_user_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert user_models_dir() == tmp_path / "home" / "models"
    monkeypatch.delenv("ALBUMFIX_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert user_models_dir() == tmp_path / "xdg" / "albumfix" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert user_models_dir() == tmp_path / "h" / ".local" / "share" / "albumfix" / "models"


def test_import_of_the_authors_pth_layout_round_trips_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = create_model("asffnet512")
    source = tmp_path / "ASFFNet512.pth"
    torch.save({"params": original.state_dict()}, source)

    info = import_weights(source)
    assert info.config == "asffnet512" and info.source == "user"
    assert info.path == user_models_dir() / "asffnet512.safetensors"
    assert info.sha256 == file_sha256(info.path) and info.size == info.path.stat().st_size
    assert find_weights("asffnet512") == info.path
    assert [w.config for w in list_weights()] == ["asffnet512"]

    reloaded = create_model("asffnet512", weights=info.path)
    assert not reloaded.training
    assert _same_state(reloaded.state_dict(), original.state_dict())
    metadata = read_state_dict(info.path)[1]
    assert metadata["source_sha256"] == file_sha256(source) and metadata["config"] == "asffnet512"
    # Identical tensors give identical outputs; check one block on a small input to be explicit.
    original.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(reloaded.LQ_Model(x), original.LQ_Model(x))


def test_save_and_load_light_model_in_float16(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create_model("albumfix-s128")
    path = save_weights(model, tmp_path / "out" / "s128.safetensors", metadata={"step": 1200})
    fresh = create_model("albumfix-s128", weights=path)
    buffers = {k for k, _ in model.named_buffers()}
    fresh_state = fresh.state_dict()
    for key, value in model.state_dict().items():
        loaded = fresh_state[key]
        if key in buffers:  # spectral-norm u, v stay float32
            assert torch.equal(loaded, value), key
        else:
            assert torch.equal(loaded, value.half().float()), key
    meta = load_weights(create_model("albumfix-s128"), path)
    assert meta == {"step": "1200", "format": "albumfix", "config": "albumfix-s128",
                    "behaviour": config_behaviour(get_config("albumfix-s128"))}
    assert not list((tmp_path / "out").glob(".*tmp"))  # no temporary file left behind
    assert weights_config(path) == "albumfix-s128"  # read from the metadata alone
    (tmp_path / "foreign.safetensors").write_bytes(b"not safetensors")
    assert weights_config(tmp_path / "foreign.safetensors") is None and weights_config(tmp_path / "none.pth") is None


def test_user_weights_take_precedence_over_shipped(tmp_path: Path) -> None:
    model = create_model("albumfix-s128")
    assert find_weights("albumfix-s128") is None
    shipped = save_weights(model, weights_mod.SHIPPED_DIR / "albumfix-s128.safetensors")
    assert find_weights("albumfix-s128") == shipped
    user = save_weights(model, user_models_dir() / "albumfix-s128.safetensors", dtype=torch.float32)
    assert find_weights("albumfix-s128") == user
    listed = list_weights()
    assert [(w.source, w.config, w.path) for w in listed] == [
        ("shipped", "albumfix-s128", shipped),
        ("user", "albumfix-s128", user),
    ]
    assert listed[1].size > listed[0].size  # float32 vs float16


def test_pth_with_a_pickled_object_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    bad = tmp_path / "evil.pth"
    torch.save({"params": {"w": torch.zeros(1)}, "extra": Payload()}, bad)
    with pytest.raises(WeightsError, match="refused, it pickles"):
        import_weights(bad)
    with pytest.raises(WeightsError, match="refused"):
        load_weights(create_model("albumfix-s128"), bad)
    assert not marker.exists()


def test_mismatched_weights_give_one_line_errors(tmp_path: Path) -> None:
    model = create_model("albumfix-s128")
    state = model.state_dict()
    del state["UpModel.1.bias"]
    state["UpModel.9.bias"] = torch.zeros(4)
    partial = tmp_path / "partial.pth"
    torch.save(state, partial)
    with pytest.raises(WeightsError) as err:
        load_weights(create_model("albumfix-s128"), partial)
    message = str(err.value)
    assert "\n" not in message and "1 missing keys" in message and "1 shape mismatches" in message
    with pytest.raises(WeightsError, match="match no known configuration"):
        import_weights(partial)

    s128 = save_weights(model, tmp_path / "s128.safetensors")
    with pytest.raises(WeightsError, match="not 'asffnet512'"):
        load_weights(create_model("asffnet512"), s128)

    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a readable safetensors"):
        load_weights(model, broken)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"garbage" * 10)
    with pytest.raises(WeightsError, match="not a readable PyTorch"):
        load_weights(model, garbage)
    other = tmp_path / "model.onnx"
    other.write_bytes(b"\x08\x07")
    with pytest.raises(WeightsError, match="unsupported"):
        load_weights(model, other)
    with pytest.raises(WeightsError, match="not found"):
        load_weights(model, tmp_path / "missing.pth")


def test_non_finite_weights_are_rejected(tmp_path: Path) -> None:
    model = create_model("albumfix-s128")
    state = model.state_dict()
    state["UpModel.9.bias"][0] = float("nan")
    path = tmp_path / "nan.pth"
    torch.save({"params": state}, path)
    with pytest.raises(WeightsError, match="NaN"):
        import_weights(path)


def test_folded_models_cannot_be_saved_or_loaded(tmp_path: Path) -> None:
    model = create_model("albumfix-s128")
    path = save_weights(model, tmp_path / "s128.safetensors")
    folded = fold_spectral_norm(create_model("albumfix-s128"))
    with pytest.raises(WeightsError, match="folded"):
        save_weights(folded, tmp_path / "again.safetensors")
    with pytest.raises(WeightsError, match="folded"):
        load_weights(folded, path)
    ready = create_model("albumfix-s128", weights=path, fold=True)
    assert ready.is_folded and not ready.training


def test_weights_of_another_behaviour_are_refused_though_the_shapes_fit(tmp_path: Path) -> None:
    """residual, warp, mask radius and MLS epsilon change no tensor shape, so only the behaviour
    record stops weights trained one way from restoring silently wrong under another."""
    plain = tiny_model_config("test-behaviour")
    register_config(plain, overwrite=True)
    path = save_weights(create_model("test-behaviour"), tmp_path / "plain.safetensors")
    assert create_model("test-behaviour", weights=path) is not None
    register_config(tiny_model_config("test-behaviour", residual=True), overwrite=True)
    with pytest.raises(WeightsError, match='"residual": false'):
        create_model("test-behaviour", weights=path)
    with pytest.raises(WeightsError, match="retrain"):
        import_weights(path)
    state, meta = read_state_dict(path)
    del meta["behaviour"]  # a file written before the record existed
    weights_mod._write_safetensors(state, path, meta)
    with pytest.raises(WeightsError, match="older, unrecorded"):
        create_model("test-behaviour", weights=path)
    register_config(plain, overwrite=True)
