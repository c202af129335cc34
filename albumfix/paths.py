"""Where albumfix keeps the user's files outside any album (no imports of its own: every layer
may use it)."""
from __future__ import annotations

import os
from pathlib import Path


def user_models_dir() -> Path:
    """The user's weights folder (may not exist yet): $ALBUMFIX_HOME/models, else
    $XDG_DATA_HOME/albumfix/models, else ~/.local/share/albumfix/models."""
    home = os.environ.get("ALBUMFIX_HOME")
    if home:
        return Path(home).expanduser() / "models"
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "albumfix" / "models"


SHIPPED_MODELS_DIR = Path(__file__).resolve().parent / "weights"  # weights inside the package


def find_model_file(filename: str, shipped: Path = SHIPPED_MODELS_DIR) -> Path | None:
    """A weights file by name: the user's copy (`user_models_dir`) first, else the one shipped in
    `shipped`; None when neither exists."""
    for folder in (user_models_dir(), shipped):
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None
