"""Loading trained weights back: EMA models from checkpoints, and the spectral-norm settling an
EMA copy needs; shared by the trainer and the evaluator (so neither imports the other)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


@torch.no_grad()
def settle_spectral_norm(model: nn.Module, iterations: int = 10) -> None:
    """Refine every spectral-norm u, v of `model` for its own weights (the EMA copies the training
    model's vectors, which track the training weights, not their average)."""
    from albumfix.restore.layers import SNConv2d

    for module in model.modules():
        if isinstance(module, SNConv2d):
            module.power_iteration(iterations)


def load_ema_from_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The EMA model of a training checkpoint, in eval mode (for evaluation or export)."""
    from albumfix.restore import create_model

    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = create_model(json.loads(payload["config"])["model"], device=device)
    model.load_state_dict(payload["ema"])
    return model.eval()
