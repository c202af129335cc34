"""All run options in one dataclass, with documented defaults.

Precedence (highest first): command-line flag, environment variable `ALBUMFIX_<NAME>` (typer reads
these for every flag), config file (`--config FILE` or `ALBUMFIX_CONFIG`, TOML with the same
names as the fields, e.g. `device = "cpu"`), then the defaults below.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from albumfix.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

OVERWRITE_CHOICES = ("never", "always", "if-newer")
RESTORE_CHOICES = ("auto", "all", "none")
FACES_CHOICES = ("auto", "dlib", "insightface")
LANDMARKS_CHOICES = ("auto", "dlib", "fan")


class SettingsError(UsageError):
    """An option value is invalid (a usage error, exit code 2)."""


@dataclass
class Settings:
    """Options of `scan` and `restore`. Sizes in pixels of the (oriented) photo."""

    output: Path | None = None  # OUT folder; default: `<album>-restored` beside the album
    overwrite: str = "never"  # existing files in OUT that albumfix did not write: never|always|if-newer
    dry_run: bool = False  # plan and report, write nothing
    faces: str = "auto"  # detector + embedder: auto|dlib|insightface
    landmarks: str = "auto"  # 68-point landmarks: auto|dlib|fan
    models_dir: Path | None = None  # insightface model root (default ~/.insightface)
    upsample: int = 1  # dlib HOG upsampling steps (finds faces down to ~40 px box at 1)
    cnn_fallback: bool = True  # dlib CNN detector when HOG finds nothing (slow on CPU)
    max_megapixels: float = 180.0  # decompression-bomb guard
    restore: str = "auto"  # which faces: auto (degraded ones) | all | none
    min_face_size: int = 24  # faces whose eye distance is below this many px are skipped
    exemplars: int = 1  # exemplars per degraded face, each guides a restoration, fused (restore/fusion.py); 0: none
    model: str = "albumfix-s128"  # restoration model configuration
    weights: Path | None = None  # checkpoint; default: the registered weights of `model`
    device: str = "auto"  # auto|cpu|cuda|cuda:N|mps
    batch_size: int = 8  # faces per model call (halved automatically on GPU out-of-memory)
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU) | fp32
    strength: float = 1.0  # 0 keeps the original face, 1 uses the restored face fully
    guard: bool = True  # lower the strength (or keep the original) where restoring moves the face away from its person or blurs it
    save_faces: bool = False  # write LQ | exemplar | restored strips to OUT/.albumfix/faces/
    threads: int = 0  # torch CPU threads; 0: one per CPU this process may use (set explicitly: it changes pixels)
    wait: float = 0.0  # seconds to wait for another run that holds OUT's lock (0: exit 5 at once)

    def validate(self) -> "Settings":
        """Raise SettingsError for out-of-range values; returns self."""
        checks = [
            (self.overwrite in OVERWRITE_CHOICES, f"--overwrite must be one of {OVERWRITE_CHOICES}"),
            (self.restore in RESTORE_CHOICES, f"--restore must be one of {RESTORE_CHOICES}"),
            (self.faces in FACES_CHOICES, f"--faces must be one of {FACES_CHOICES}"),
            (self.landmarks in LANDMARKS_CHOICES, f"--landmarks must be one of {LANDMARKS_CHOICES}"),
            (0.0 <= self.strength <= 1.0, "--strength must be between 0 and 1"),
            (self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.exemplars >= 0, "--exemplars must be 0 or more"),
            (self.min_face_size >= 0, "--min-face-size must be >= 0"),
            (self.upsample >= 0, "--upsample must be >= 0"),
            (self.max_megapixels > 0, "--max-megapixels must be > 0"),
            (self.precision in ("auto", "fp32"), "--precision must be auto or fp32"),
            (self.threads >= 0, "--threads must be >= 0"),
            (self.wait >= 0, "--wait must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)
        return self

    def key(self, *names: str) -> str:
        """Short hash of the named fields: a stage's results are valid while its key holds."""
        values = {n: getattr(self, n) for n in names}
        blob = json.dumps(values, sort_keys=True, default=str)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def load_settings(config_file: Path | None, given: dict) -> Settings:
    """Defaults, overlaid by the config file, overlaid by the options the user gave (not None)."""
    values: dict = {}
    if config_file is not None:
        try:
            values.update(tomllib.loads(Path(config_file).read_text(encoding="utf-8")))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(f"cannot read config file {config_file}: {exc}") from exc
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise SettingsError(f"unknown setting(s) in {config_file}: {', '.join(unknown)}")
    values.update({k: v for k, v in given.items() if v is not None and k in known})
    for name in ("output", "models_dir", "weights"):
        if values.get(name) is not None:
            values[name] = Path(values[name]).expanduser()
    return Settings(**values).validate()
