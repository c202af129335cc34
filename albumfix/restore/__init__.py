"""Face restoration models: named ASFFNet configurations, one factory, weight helpers.

    model = create_model("albumfix-s128", weights=find_weights("albumfix-s128"), fold=True)
    out = model(lq, ref, lq_landmarks, ref_landmarks)   # (B, 3, S, S) in [-1, 1]

Importing this package does not import torch: the configuration registry is plain Python, and
the torch-backed names (ASFFNet, the weight helpers, fold_spectral_norm) load on first use, so
`import albumfix.restore.blend` or `list_configs()` stay cheap.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from albumfix.restore.configs import ASFFNetConfig, get_config, list_configs, register_config

if TYPE_CHECKING:
    import torch

    from albumfix.restore.asffnet import ASFFNet

_LAZY = {
    "ASFFNet": "albumfix.restore.asffnet",
    "fold_spectral_norm": "albumfix.restore.layers",
    "WeightsError": "albumfix.restore.weights",
    "WeightsInfo": "albumfix.restore.weights",
    "find_weights": "albumfix.restore.weights",
    "import_weights": "albumfix.restore.weights",
    "list_weights": "albumfix.restore.weights",
    "load_weights": "albumfix.restore.weights",
    "save_weights": "albumfix.restore.weights",
}


def __getattr__(name: str) -> Any:
    """Resolve the torch-backed public names on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def create_model(
    name: str,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    *,
    fold: bool = False,
) -> ASFFNet:
    """Build the registered configuration `name`.

    weights: a .safetensors or .pth file loaded strictly (WeightsError on mismatch); the model
    is then put in eval mode. Without weights the model is randomly initialised, train mode.
    device: where to put the model (default: CPU). fold: replace the spectral-norm convs by
    plain convs with the folded weight (inference only; the model can then no longer load or
    save checkpoints).
    """
    from albumfix.restore.asffnet import ASFFNet
    from albumfix.restore.layers import fold_spectral_norm
    from albumfix.restore.weights import load_weights

    model = ASFFNet(get_config(name))
    if weights is not None:
        load_weights(model, weights)
        model.eval()
    if fold:
        fold_spectral_norm(model)
    if device is not None:
        model.to(device)
    return model


__all__ = [
    "ASFFNet",
    "ASFFNetConfig",
    "WeightsError",
    "WeightsInfo",
    "create_model",
    "find_weights",
    "fold_spectral_norm",
    "get_config",
    "import_weights",
    "list_configs",
    "list_weights",
    "load_weights",
    "register_config",
    "save_weights",
]
