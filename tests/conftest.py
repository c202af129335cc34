"""Shared fixtures: the real sample album, real (randomly initialised) model weights, and an
album index analysed once per session so that tests of later stages need not re-run dlib."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tiny_model_config(name: str, residual: bool = False, tone_head: bool = False):
    """A tiny ASFFNet configuration (S = 32) for fast model and engine tests."""
    from albumfix.restore.configs import ASFFNetConfig

    return ASFFNetConfig(name=name, size=32, extractor_widths=(8, 8, 16), feature_channels=16,
                         mask_widths=(4, 4, 8), decoder_channels=8, asff_blocks=1,
                         extractor_res_blocks=1, mask_radius=1, warp="exact", residual=residual,
                         tone_head=tone_head)
SAMPLE_ALBUM = REPO / "sample_album"


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "albumfix.cli", *args]


def run_cli(*args: str, honour_permissions: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `albumfix ARGS` as a separate process (exit codes, stdout/stderr split).
    honour_permissions: when running as root, drop the capabilities that let root read any
    file (util-linux `setpriv`), so permission bits apply as they do for a normal user."""
    command = cli_command(*args)
    if honour_permissions and os.geteuid() == 0:
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module (`pytestmark = pytest.mark.usefixtures(...)`): on the
    shared 2-core machine, 2 OpenMP threads spin-wait badly on small tensors."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def album_copy(tmp_path_factory) -> Path:
    """A pristine copy of sample_album (tests must not modify it; copy again to change it)."""
    dst = tmp_path_factory.mktemp("albums") / "album"
    shutil.copytree(SAMPLE_ALBUM, dst, ignore=shutil.ignore_patterns("README.md"))
    return dst


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """albumfix-s128 weights, randomly initialised and saved in our real format (safetensors).
    Tests of the pipeline's mechanics use them so they do not depend on the shipped file."""
    import torch

    from albumfix.restore import create_model
    from albumfix.restore.weights import save_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "random-s128.safetensors"
    save_weights(create_model("albumfix-s128"), path)
    return path


@pytest.fixture(scope="session")
def analysed_index(album_copy, tmp_path_factory) -> Path:
    """An index of album_copy after `scan` with the default analysis settings."""
    out = tmp_path_factory.mktemp("scanned") / "out"
    result = run_cli("scan", str(album_copy), "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out / ".albumfix" / "index.sqlite"


def seeded_output(analysed_index: Path, out: Path) -> Path:
    """A new OUT folder that starts with a copy of the analysed index."""
    (out / ".albumfix").mkdir(parents=True)
    shutil.copy2(analysed_index, out / ".albumfix" / "index.sqlite")
    return out


def fp32_switches() -> dict[str, str]:
    """torch's fp32 precision switch per backend and op ("ieee", "tf32", "none" = inherited)."""
    import torch

    return {"cuda.matmul": torch.backends.cuda.matmul.fp32_precision,
            "cudnn.conv": torch.backends.cudnn.conv.fp32_precision,
            "mkldnn.matmul": torch.backends.mkldnn.matmul.fp32_precision,
            "mkldnn.conv": torch.backends.mkldnn.conv.fp32_precision}


@pytest.fixture()
def host_allows_tf32():
    """The process allows TF32 matmuls, as a host application may (set_float32_matmul_precision
    "high": cuBLAS and oneDNN matmuls then use TF32); every switch is put back afterwards."""
    import torch

    legacy, saved = torch.get_float32_matmul_precision(), fp32_switches()
    torch.set_float32_matmul_precision("high")
    yield
    torch.set_float32_matmul_precision(legacy)
    holders = {"cuda.matmul": torch.backends.cuda.matmul, "cudnn.conv": torch.backends.cudnn.conv,
               "mkldnn.matmul": torch.backends.mkldnn.matmul, "mkldnn.conv": torch.backends.mkldnn.conv}
    for name, value in saved.items():
        holders[name].fp32_precision = value


def photo_outputs(out: Path) -> dict[str, bytes]:
    """OUT's photos (relative path -> bytes), without albumfix's own files (its index and
    images, report.html, the review's page and decisions file)."""
    own = {"report.html", "review.html", "review-decisions.txt"}
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and ".albumfix" not in p.parts and p.relative_to(out).as_posix() not in own}


def comparable_photos(photos: list[dict]) -> list[dict]:
    """A run's photo objects without timings."""
    photos = json.loads(json.dumps(photos))
    for p in photos:
        for f in p["faces"]:
            f.get("restored", {}).pop("seconds", None)
    return photos


def restore_all_args(weights: Path) -> list[str]:
    """Options of the reference restoration (random weights, every usable face)."""
    return ["--weights", str(weights), "--restore", "all"]


@pytest.fixture(scope="session")
def reference_restore(album_copy, analysed_index, random_weights, tmp_path_factory) -> tuple[Path, dict]:
    """(OUT, JSON) of one uninterrupted `restore --restore all` of the sample album in one process:
    what every stopped, resumed, partial or concurrent run must end with, byte for byte."""
    out = seeded_output(analysed_index, tmp_path_factory.mktemp("reference") / "out")
    result = run_cli("restore", str(album_copy), "-o", str(out), *restore_all_args(random_weights), "--json", "-q")
    assert result.returncode == 0, result.stderr
    return out, json.loads(result.stdout)


@pytest.fixture(scope="session")
def tripled_album(album_copy, tmp_path_factory) -> Path:
    """The sample album three times over (a/, b/, c/): 15 photos, 12 with faces to restore, each
    copy analysed as its original (same content), so its outputs are the reference's."""
    album = tmp_path_factory.mktemp("tripled") / "album"
    for copy in "abc":
        shutil.copytree(album_copy, album / copy)
    return album


def tripled_reference(reference_restore) -> dict[str, bytes]:
    """The outputs a run over tripled_album must end with."""
    expected = photo_outputs(reference_restore[0])
    return {f"{copy}/{name}": data for copy in "abc" for name, data in expected.items()}
