"""Checkpoint files: reading, writing, validating and finding ASFFNet weights.

Formats: ``.safetensors`` (albumfix's own; metadata carries ``config``) and PyTorch ``.pth`` /
``.pt`` files, read only with ``torch.load(weights_only=True)`` (no pickled code ever runs); a
``.pth`` may hold the state dict itself or a dict with key ``params`` (the authors' layout).
Every load is strict: same keys, same shapes.

Where weights live (a file per configuration, ``<config>.safetensors``):
  shipped: albumfix/weights/ inside the package;
  user:    $ALBUMFIX_HOME/models, else $XDG_DATA_HOME/albumfix/models, else
           ~/.local/share/albumfix/models (filled by `import_weights`).
A user file takes precedence over the shipped one of the same configuration.
"""
from __future__ import annotations

import functools
import hashlib
import json
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from albumfix.atomic import atomic_write_bytes
from albumfix.paths import SHIPPED_MODELS_DIR, find_model_file, user_models_dir
from albumfix.restore.asffnet import ASFFNet
from albumfix.restore.configs import ASFFNetConfig, get_config, list_configs

FORMAT_TAG = "albumfix"
SUFFIX = ".safetensors"
TORCH_SUFFIXES = (".pth", ".pt")
SHIPPED_DIR = SHIPPED_MODELS_DIR


class WeightsError(RuntimeError):
    """A weights file is unreadable, unsafe or does not fit the model; the message is one line."""


@dataclass(frozen=True)
class WeightsInfo:
    """One weights file: configuration name, location, sha256 (hex), origin and size in bytes."""

    config: str
    path: Path
    sha256: str
    source: str  # "shipped" | "user"
    size: int


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message (or its type name)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (on CPU, as stored) and string metadata of a weights file.

    Raises WeightsError for a missing, unreadable or unsafe file or an unknown suffix.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == SUFFIX:
        return _read_safetensors(path)
    if suffix in TORCH_SUFFIXES:
        return _read_torch(path), {}
    raise WeightsError(f"{path.name}: unsupported weights format (use .safetensors or .pth)")


def _read_safetensors(
    path: Path, with_tensors: bool = True
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors (empty unless `with_tensors`) and metadata of a safetensors file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {key: f.get_tensor(key) for key in f.keys()} if with_tensors else {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(
            f"{path.name}: not a readable safetensors file ({_first_line(exc)})"
        ) from None
    return tensors, metadata


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise WeightsError(
                f"{path.name}: refused, it pickles {found.group(1)}, not only tensors"
            ) from None
        raise WeightsError(f"{path.name}: not a readable PyTorch weights file") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"{path.name}: not a readable PyTorch file ({_first_line(exc)})"
        ) from None
    if isinstance(obj, dict) and "params" in obj:
        obj = obj["params"]
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path.name}: expected a state dict or a dict with key 'params'")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        raise WeightsError(f"{path.name}: entry {bad[0]!r} is not a named tensor")
    return obj


def _shapes(state: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


def _differences(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]
) -> tuple[list[str], list[str], list[str]]:
    """Sorted (missing, unexpected, wrong-shape) keys of `found` relative to `expected`."""
    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & found.keys() if expected[k] != found[k])
    return missing, unexpected, wrong


def _mismatch(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> str:
    """One-line description of how `found` differs from `expected` ('' when they agree)."""
    missing, unexpected, wrong = _differences(expected, found)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} shape mismatches (e.g. {k}: file {found[k]}, model {expected[k]})"
        )
    return "; ".join(parts)


@functools.lru_cache(maxsize=None)
def config_signature(config: ASFFNetConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the state dict of `config` (cached per configuration)."""
    return _shapes(ASFFNet(config).state_dict())


def infer_config(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Name of the registered configuration whose keys and shapes `state` has exactly.

    metadata["config"] (albumfix files) is tried first. Raises WeightsError naming the closest
    configuration when none matches.
    """
    found = _shapes(state)
    names = list_configs()
    hinted = (metadata or {}).get("config")
    if hinted in names:
        names.remove(hinted)
        names.insert(0, hinted)
    scored = []
    for name in names:
        expected = config_signature(get_config(name))
        n_diff = sum(len(keys) for keys in _differences(expected, found))
        if n_diff == 0:
            return name
        scored.append((n_diff, name, _mismatch(expected, found)))
    if not scored:
        raise WeightsError("no model configuration is registered")
    _, name, diff = min(scored)
    raise WeightsError(f"weights match no known configuration (closest {name!r}: {diff})")


def load_state(
    model: nn.Module, state: dict[str, torch.Tensor], label: str, allow_missing: bool = False
) -> list[str]:
    """Validated copy of `state` into `model` (WeightsError on any mismatch or non-finite tensor).
    allow_missing (fine-tuning): model keys that `state` lacks, such as a head added since, keep
    their values instead of being an error. Returns those keys, sorted ([] when strict)."""
    if getattr(model, "is_folded", False):
        raise WeightsError(f"{label}: the model is folded; load weights before fold_spectral_norm")
    expected, found = _shapes(model.state_dict()), _shapes(state)
    missing = sorted(expected.keys() - found.keys()) if allow_missing else []
    diff = _mismatch({k: v for k, v in expected.items() if k not in missing}, found)
    if diff:
        name = getattr(getattr(model, "config", None), "name", type(model).__name__)
        raise WeightsError(f"{label} does not fit configuration {name!r}: {diff}")
    bad = next(
        (k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()), None
    )
    if bad is not None:
        raise WeightsError(f"{label}: tensor {bad} holds NaN or infinite values")
    model.load_state_dict(state, strict=not missing)
    return missing


BEHAVIOUR_FIELDS = ("warp", "mls_eps", "mask_radius", "residual")


def config_behaviour(config: ASFFNetConfig) -> str:
    """JSON of the configuration fields that change what the model computes without changing a
    tensor shape: weights trained under other values would load cleanly and restore wrongly."""
    return json.dumps({name: getattr(config, name) for name in BEHAVIOUR_FIELDS}, sort_keys=True)


def check_behaviour(metadata: dict[str, str], config: ASFFNetConfig, label: str) -> None:
    """Refuse an albumfix file whose recorded behaviour differs from `config`'s (files written
    before the record existed have none, and are refused the same way)."""
    if metadata.get("format") != FORMAT_TAG:
        return  # foreign files (the authors' .pth) carry no record
    stored, current = metadata.get("behaviour"), config_behaviour(config)
    if stored != current:
        raise WeightsError(f"{label} was trained for {config.name!r} computing {stored or 'an older, unrecorded variant'}, "
                           f"but {config.name!r} now computes {current}: retrain or use matching weights")


def load_weights(model: nn.Module, path: str | Path) -> dict[str, str]:
    """Load a weights file strictly into `model` (dtype converted); returns the file's metadata."""
    path = Path(path)
    state, metadata = read_state_dict(path)
    config = getattr(model, "config", None)
    stored = metadata.get("config")
    if stored and config is not None and stored != config.name:
        raise WeightsError(f"{path.name} holds weights of {stored!r}, not {config.name!r}")
    if config is not None:
        check_behaviour(metadata, config, path.name)
    load_state(model, state, path.name)
    return metadata


def _write_safetensors(
    state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    """Write atomically (temporary file in the target folder, fsync, rename)."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def save_weights(
    model: ASFFNet,
    path: str | Path,
    dtype: torch.dtype = torch.float16,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Save `model` (unfolded) as safetensors; parameters cast to `dtype`, buffers unchanged.

    The spectral-norm vectors u, v are buffers and stay float32 so sigma keeps full precision.
    metadata (str -> str) is stored with "format" = "albumfix", "config" = model.config.name and
    "behaviour" = config_behaviour(model.config).
    """
    path = Path(path)
    if model.is_folded:
        raise WeightsError("cannot save a folded model; save before fold_spectral_norm")
    buffers = {name for name, _ in model.named_buffers()}
    state = {
        k: v.to(dtype) if k not in buffers and v.is_floating_point() else v
        for k, v in model.state_dict().items()
    }
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(format=FORMAT_TAG, config=model.config.name, behaviour=config_behaviour(model.config))
    _write_safetensors(state, path, meta)
    return path


def weights_config(path: str | Path) -> str | None:
    """The configuration an albumfix .safetensors file was saved from (its metadata), read
    without its tensors; None for a foreign or unreadable file."""
    path = Path(path)
    if path.suffix != SUFFIX or not path.is_file():
        return None
    try:
        metadata = _read_safetensors(path, with_tensors=False)[1]
    except WeightsError:
        return None
    return metadata.get("config") if metadata.get("format") == FORMAT_TAG else None


def find_weights(config_name: str) -> Path | None:
    """The weights file for `config_name`: the user's import first, else the shipped one."""
    return find_model_file(f"{config_name}{SUFFIX}", SHIPPED_DIR)


def _describe(path: Path, source: str) -> WeightsInfo:
    try:
        config = _read_safetensors(path, with_tensors=False)[1].get("config", path.stem)
    except WeightsError:
        config = path.stem
    return WeightsInfo(config, path, file_sha256(path), source, path.stat().st_size)


def list_weights() -> list[WeightsInfo]:
    """All shipped and user weights files (shipped first), with checksums."""
    found = []
    for source, folder in (("shipped", SHIPPED_DIR), ("user", user_models_dir())):
        if folder.is_dir():
            found += [_describe(p, source) for p in sorted(folder.glob(f"*{SUFFIX}"))]
    return found


def import_weights(path: str | Path) -> WeightsInfo:
    """Validate a weights file and copy it into the user models folder as safetensors.

    The configuration is inferred from the keys and shapes (the authors' ASFFNet512.pth gives
    "asffnet512"); the tensors are loaded strictly into that configuration, then written
    unchanged (same dtypes) to ``<user models>/<config>.safetensors``, replacing an earlier
    import. The source file's name and sha256 are kept in the metadata. A file without a
    behaviour record (a .pth) is taken to match the configuration's current behaviour.
    """
    path = Path(path)
    state, metadata = read_state_dict(path)
    name = infer_config(state, metadata)
    config = get_config(name)
    check_behaviour(metadata, config, path.name)
    load_state(ASFFNet(config), state, path.name)
    meta = dict(metadata)
    meta.update(
        format=FORMAT_TAG, config=name, behaviour=config_behaviour(config), source_file=path.name,
        source_sha256=file_sha256(path)
    )
    dest = user_models_dir() / f"{name}{SUFFIX}"
    _write_safetensors(state, dest, meta)
    return _describe(dest, "user")
