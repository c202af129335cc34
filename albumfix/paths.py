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
