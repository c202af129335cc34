"""All run options in one dataclass: each field's default and --help text, the one source of the
options of `scan` and `restore` (albumfix/cli_options.py builds them).

Precedence (highest first): command-line flag, environment variable `ALBUMFIX_<NAME>` (typer reads
these for every flag), config file (`--config FILE` or `ALBUMFIX_CONFIG`, TOML with the same
names as the fields, e.g. `device = "cpu"`), then the defaults below.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from albumfix.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

OVERWRITE_CHOICES = ("never", "always", "if-newer")
RESTORE_CHOICES = ("auto", "all", "none")
FACES_CHOICES = ("auto", "dlib", "insightface")
LANDMARKS_CHOICES = ("auto", "dlib", "fan")
BACKEND_CHOICES = ("local", "ray")


class SettingsError(UsageError):
    """An option value is invalid (a usage error, exit code 2)."""


def option(default: Any, help: str, *, scan: bool = True, shown: str | None = None,
           short: str | None = None, metavar: str | None = None) -> Any:
    """A Settings field that is an option of `restore` (and of `scan` unless scan=False): `help` is
    its --help text, `shown` how --help shows the default where the value itself says too little
    (albumfix/cli_options.py builds the options from these)."""
    commands = ("scan", "restore") if scan else ("restore",)
    return field(default=default, metadata={"help": help, "commands": commands, "shown": shown,
                                            "short": short, "metavar": metavar})


@dataclass
class Settings:
    """Options of `scan` and `restore`, each with its default and --help text. Sizes in pixels of
    the (oriented) photo."""

    output: Path | None = option(None, "Output folder; refused when inside the album.",
                                 shown="ALBUM-restored beside the album", short="-o")
    overwrite: str = option("never", "Existing files in OUTPUT that albumfix did not write: "
                            "never|always|if-newer (if the photo is newer); files albumfix wrote are "
                            "always updated.", scan=False)
    dry_run: bool = option(False, "Plan and report; write nothing.")
    faces: str = option("auto", "Face detector+embedder: auto|dlib|insightface.")
    landmarks: str = option("auto", "68-point landmarks: auto|dlib|fan.")
    models_dir: Path | None = option(None, "insightface model root.", shown="~/.insightface")
    upsample: int = option(1, "dlib HOG upsampling steps (finds smaller faces, slower; at 1 down to "
                           "a ~40 px box).")
    cnn_fallback: bool = option(True, "Try dlib's slower CNN detector when HOG finds no face.")
    max_megapixels: float = option(180.0, "Refuse larger images (decompression-bomb guard).")
    restore: str = option("auto", "Which faces: auto (degraded ones) | all | none.")
    min_face_size: int = option(24, "Skip faces whose eye-to-eye distance is below this many px.")
    exemplars: int = option(1, "Exemplars per degraded face: each guides one restoration and the "
                            "outputs are fused per facial region (K times the model work); 0 restores "
                            "without guidance.")
    model: str = option("albumfix-s128-aware", "Model configuration (see `albumfix models`).", scan=False)
    weights: Path | None = option(None, "Checkpoint file.", shown="the registered weights of --model",
                                  scan=False)
    device: str = option("auto", "auto|cpu|cuda|cuda:N|mps.", scan=False)
    batch_size: int = option(8, "Faces per model call (restore halves it on GPU out-of-memory).",
                             scan=False)
    precision: str = option("auto", "auto (bf16/fp16 on GPU, fp32 on CPU) | fp32.", scan=False)
    strength: float = option(1.0, "0 keeps the original face, 1 the restored one.", scan=False)
    guard: bool = option(True, "Check each restored face: lower the strength, or keep the original, "
                         "where restoring moves it away from its person or makes it less sharp.",
                         scan=False)
    save_faces: bool = option(False, "Also write LQ | exemplar | restored strips to "
                              "OUTPUT/.albumfix/faces/.", scan=False)
    threads: int = option(0, "torch CPU threads; 0: one per CPU albumfix may use (outputs are "
                          "byte-identical for one count, so set it where that matters).", scan=False)
    backend: str = option("local", "Where the stages run: local (this process) | ray (a Ray cluster; "
                          "pip install 'albumfix[ray]'; album and OUTPUT on a path every node reads).")
    ray_address: str | None = option(None, "--backend ray: the cluster to join, auto (the one `ray start` "
                                     "runs here) or HOST:PORT.", shown="a Ray instance started for this run")
    workers: int = option(0, "--backend ray: photos analysed and restored at once (Ray workers); 0: as "
                          "many as the cluster's CPUs allow.")
    gpus_per_worker: float = option(0.0, "--backend ray: GPUs each restoring worker reserves (e.g. 1, or "
                                    "0.5 to share one); 0: restore on CPUs.", scan=False)
    wait: float = option(0.0, "When another albumfix run is using OUTPUT, wait up to this long for it "
                         "instead of exiting with code 5.", metavar="SECONDS")

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
            (self.backend in BACKEND_CHOICES, f"--backend must be one of {BACKEND_CHOICES}"),
            (self.workers >= 0, "--workers must be >= 0"),
            (self.gpus_per_worker >= 0, "--gpus-per-worker must be >= 0"),
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
