"""Rebuild sample_album/ from public-domain / CC0 images shipped inside registry packages.

Sources (downloaded with the ordinary package clients into --sources, default /tmp/albumfix-sources):
- PyPI sdist `face_recognition==1.3.0` (MIT), tests/test_images/: obama.jpg, obama2.jpg,
  obama3.jpg (official White House photos, public domain), biden.jpg (public domain).
- Debian package `facedetect`: examples/grace_hopper_512x512.jpg (US Navy photo, public domain).
- scikit-image (installed with face-alignment): data/astronaut.png (NASA, public domain),
  data/coffee.png (CC0).

Degradations use albumfix's own `albumfix.degrade`. Before writing, the script checks by
content that no two sources are copies or crops of each other (aligned-face correlation), so a
degraded photo's own original can never serve as its exemplar.

    python tools/build_sample_album.py [--sources DIR] [--out sample_album]
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from albumfix.faces.align import ffhq_transform, warp_to_crop
from albumfix.faces.backends import create_analyzer
from albumfix.degrade import Degradation, Fade, Noise, apply_degradation, apply_tone, gaussian_kernel

FR_IMAGES = "face_recognition-1.3.0/tests/test_images"
DUPLICATE_NCC = 0.8  # aligned-face correlation above this means "the same shot" (measured:
# a crop of the same shot 0.88, different photos <= 0.68)


def fetch_sources(folder: Path) -> dict[str, Path]:
    """Download the two packages (pip, apt) if needed and return source name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    sdist = folder / "face_recognition-1.3.0.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "face_recognition==1.3.0", "-d", str(folder)], check=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(folder, members=[m for m in tar.getmembers() if m.name.startswith(FR_IMAGES)],
                       filter="data")
    hopper = folder / "usr/share/doc/facedetect/examples/grace_hopper_512x512.jpg"
    if not hopper.exists():
        subprocess.run(["apt-get", "download", "facedetect"], cwd=folder, check=True)
        deb = next(folder.glob("facedetect_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(folder)], check=True)
    import skimage

    skdata = Path(skimage.__file__).parent / "data"
    fr = folder / FR_IMAGES
    return {"obama": fr / "obama.jpg", "obama2": fr / "obama2.jpg", "obama3": fr / "obama3.jpg",
            "biden": fr / "biden.jpg", "hopper": hopper, "astronaut": skdata / "astronaut.png",
            "coffee": skdata / "coffee.png", "obama_partial_face": fr / "obama_partial_face.jpg"}


def load_rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def square_around_face(rgb: np.ndarray, analyzer, side: int, face_frac: float) -> np.ndarray:
    """A square crop centred on the largest face, the face box taking `face_frac` of the side,
    resized to `side` px (INTER_AREA)."""
    face = max(analyzer.analyse(rgb), key=lambda f: f.box[2] - f.box[0])
    x0, y0, x1, y1 = face.box
    half = min((x1 - x0) / face_frac / 2, rgb.shape[0] / 2, rgb.shape[1] / 2)
    cx = np.clip((x0 + x1) / 2, half, rgb.shape[1] - half)
    cy = np.clip((y0 + y1) / 2 + 0.15 * (y1 - y0), half, rgb.shape[0] - half)
    crop = rgb[int(cy - half):int(cy + half), int(cx - half):int(cx + half)]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)


def aligned_face(rgb: np.ndarray, analyzer) -> np.ndarray:
    """(32, 32) float32 zero-mean unit-norm gray centre of the largest face's aligned crop."""
    face = max(analyzer.analyse(rgb), key=lambda f: f.box[2] - f.box[0])
    crop = warp_to_crop(rgb, ffhq_transform(face.landmarks, 64)).astype(np.float32).mean(axis=2)
    crop = crop[20:52, 16:48]  # eyes to mouth: inside the photo even for a face cut at the edge
    crop -= crop.mean()
    return crop / (np.linalg.norm(crop) + 1e-6)


def check_distinct(sources: dict[str, Path], used: list[str], analyzer) -> None:
    """Refuse to build when two used sources show the same shot; prove the check works on a
    known crop (obama_partial_face is a crop of obama.jpg)."""
    faces = {name: aligned_face(load_rgb(sources[name]), analyzer) for name in used + ["obama_partial_face"]}
    known = float((faces["obama"] * faces["obama_partial_face"]).sum())
    print(f"check: obama vs its own crop obama_partial_face: NCC {known:.3f} (must be > {DUPLICATE_NCC})")
    assert known > DUPLICATE_NCC, "duplicate check failed to recognise a known crop"
    for i, a in enumerate(used):
        for b in used[i + 1:]:
            ncc = float((faces[a] * faces[b]).sum())
            print(f"check: {a} vs {b}: NCC {ncc:.3f}")
            if ncc > DUPLICATE_NCC:
                raise SystemExit(f"{a} and {b} look like the same shot (NCC {ncc:.3f})")


def old_print(image: np.ndarray, tone: str, scale: float, blur: float, grain: float, jpeg: int,
              seed: int) -> np.ndarray:
    """A faded, blurred, grainy, small scan of a square print, via albumfix's degradation model."""
    d = Degradation(
        tone=tone, blur1=gaussian_kernel(blur, blur, 0.0), scale1=float(np.sqrt(scale)),
        interp1=cv2.INTER_AREA, noise1=Noise("grain", grain, True, 0.8, seed), jpeg1=None,
        fade=Fade(contrast=0.75, black=25.0, gain=(1.0, 1.0, 1.0)), scratch_seed=None, scratch_count=0,
        blur2=gaussian_kernel(0.6, 0.6, 0.0), scale2=float(scale), interp2=cv2.INTER_AREA,
        noise2=Noise("gaussian", 3.0, True, 0.0, seed + 1), jpeg2=jpeg, interp_up=cv2.INTER_CUBIC)
    return apply_degradation(image, d)


def save_jpeg(rgb: np.ndarray, path: Path, quality: int, exif_orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(rgb)
    kwargs = {}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    im.save(path, quality=quality, **kwargs)


def build(sources: dict[str, Path], out: Path) -> None:
    analyzer = create_analyzer("dlib", "dlib")
    check_distinct(sources, ["obama", "obama2", "obama3", "biden", "hopper", "astronaut"], analyzer)
    out.mkdir(parents=True, exist_ok=True)

    # Sharp exemplars of one person. The portrait is stored sideways with EXIF Orientation 6,
    # as cameras do: viewers (and albumfix) rotate it upright once.
    save_jpeg(square_around_face(load_rgb(sources["obama2"]), analyzer, 640, 0.4),
              out / "2009" / "podium.jpg", 92)
    portrait = square_around_face(load_rgb(sources["obama"]), analyzer, 640, 0.4)
    save_jpeg(np.rot90(portrait, k=1).copy(), out / "2009" / "oval office.jpg", 92, exif_orientation=6)

    # A faded sepia print of the same person: restored with guidance from the photos above.
    room = square_around_face(load_rgb(sources["obama3"]), analyzer, 512, 0.3)
    save_jpeg(old_print(room, "sepia", scale=5.0, blur=1.6, grain=10.0, jpeg=70, seed=11),
              out / "1998" / "old print.jpg", 90)

    # A black-and-white group photo of three people seen once: restored without guidance.
    tiles = [square_around_face(load_rgb(sources[n]), analyzer, 256, 0.45) for n in ("biden", "hopper", "astronaut")]
    group = np.full((768, 768, 3), 150, np.uint8)  # studio backdrop; the print is square
    group[256:512] = np.concatenate(tiles, axis=1)
    faded = old_print(group, "gray", scale=3.0, blur=1.2, grain=8.0, jpeg=75, seed=23)
    (out / "1975").mkdir(exist_ok=True)
    Image.fromarray(faded[:, :, 0]).save(out / "1975" / "group.png")

    # A photo without faces: copied byte-for-byte.
    (out / "scans").mkdir(exist_ok=True)
    Image.open(sources["coffee"]).save(out / "scans" / "coffee.png")
    print(f"sample album written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=Path("/tmp/albumfix-sources"))
    parser.add_argument("--out", type=Path, default=Path("sample_album"))
    args = parser.parse_args()
    build(fetch_sources(args.sources), args.out)


if __name__ == "__main__":
    main()
