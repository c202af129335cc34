"""Classical baselines on the end-to-end album benchmark: what a plain denoiser gets on the same faces.

After `make bench-albums` (or `albumfix eval --albums DIR`), score, for every damaged face of the
album, the input with a bilateral filter and with non-local means applied inside the face region
(as albumfix pastes a restored face), beside albumfix's own product run:

    python benchmarks/album_baselines.py runs/albums

Printed per method: face-region PSNR gain over the input, and identity distance to the truth with
the share of faces farther from it than the input, by dlib and by the FaceNet judge
(`albumfix/train/judge.py`). Measured (session 10, 79 faces): bilateral +0.23 dB, dlib 0.355
(43 % worse), judge 0.899 (37 %); non-local means +0.29 dB, 0.356 (47 %), 0.897 (47 %); albumfix
+0.41 dB, 0.346 (20 %), 0.843 (5 %); input dlib 0.357, judge 0.912.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from albumfix.train.albums import FaceScorer, face_region, farther_share, load_manifest
from albumfix.train.dataset import read_rgb

FILTERS = {
    "bilateral": lambda rgb: cv2.bilateralFilter(rgb, 7, 30, 5),
    "nl-means": lambda rgb: cv2.fastNlMeansDenoisingColored(rgb, None, 4, 4, 7, 21),
}


def measure(work: Path, variant: str) -> dict[str, list[dict]]:
    """Per method ("input", the FILTERS, the album run `variant`): one FaceScorer.measure per damaged face."""
    scorer = FaceScorer()
    rows: dict[str, list[dict]] = {name: [] for name in ("input", *FILTERS, variant)}
    for photo in load_manifest(work):
        if not photo.family:
            continue
        truth, lq = read_rgb(work / photo.truth), read_rgb(work / "album" / photo.path)
        out = work / f"out-{variant}" / photo.path
        restored = read_rgb(out) if out.exists() else lq
        filtered = {name: f(lq) for name, f in FILTERS.items()}
        for face in photo.faces:
            truth_desc = scorer.descriptors(truth, face)
            mask = face_region(np.asarray(face.landmarks), truth.shape)
            images = {"input": lq, variant: restored}
            for name, img in filtered.items():
                images[name] = lq.copy()
                images[name][mask] = img[mask]
            for name, img in images.items():
                rows[name].append(scorer.measure(img, truth, face, truth_desc))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="benchmark folder after a run (album/, truth/, out-VARIANT/)")
    parser.add_argument("--variant", default="product", help="the albumfix run to show beside [product]")
    args = parser.parse_args()
    rows = measure(args.work, args.variant)
    base = rows["input"]
    print(f"{len(base)} damaged faces")
    print(f"{'method':<10} {'dPSNR':>6} {'dlib':>6} {'worse':>6} {'judge':>6} {'worse':>6}")
    for name, faces in rows.items():
        gain = np.mean([f["psnr"] - b["psnr"] for f, b in zip(faces, base)])
        cols = []
        for m in ("identity", "judge"):
            after, before = [f[m] for f in faces], [b[m] for b in base]
            cols.append(f"{np.mean(after):>6.3f} {farther_share(after, before):>6.0%}")
        print(f"{name:<10} {gain:>+6.2f} {' '.join(cols)}")


if __name__ == "__main__":
    main()
