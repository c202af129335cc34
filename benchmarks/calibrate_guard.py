"""Calibrate the do-no-harm guard (albumfix/guard.py) on a scanned benchmark album of *training* people.

Build and scan the album first (as for benchmarks/calibrate_verify.py; the held-out people stay
untouched), then:

    python benchmarks/calibrate_guard.py runs/albums-train
    python benchmarks/calibrate_guard.py runs/albums-train --gains=-0.005,0,0.003   # "=" before a negative value

(a negative gain is a tolerance: gain -0.005 is the rule before, "no farther than the input +
0.005"). Measured (session 8, 83 faces, 48 guided, input identity 0.331): gain 0.003 with
sharpness 0.8 +0.324 dB, 10.8 % farther, identity 0.318 (kept); the rule before +0.342 dB,
24.1 %, 0.321; a full table is in docs/CALIBRATION.md.

It restores the album once without the guard (`albumfix restore --no-guard`, the product's
exemplars), then, for every restored damaged face, pastes that restoration at each strength of
a ladder (a linear blend with the input inside the pasted region, as the paste-back does) and
measures what the guard sees (identity distance to the exemplars that guided the face, or to the
input when unguided; band sharpness) and what the user gets (face-region PSNR and identity
distance to the truth, by dlib and by the FaceNet judge). Each rule of the grid (the reference
gain a guided face must make, the self distance an unguided face may move, the sharpness ratio)
then picks, per face, the first strength that passes among those the guard tries (the face's
detail ceiling, then the lower STRENGTH_STEPS), and is scored: mean PSNR gain over the input,
share of faces farther from the truth than the input and mean identity distance, by each
embedder, and the judge's share of farther faces in the worst damage family. The measured faces
are kept in WORK/guard-faces.json, so another grid scores at once.
"""
from __future__ import annotations

import argparse
import itertools
import json
import shutil
from pathlib import Path

import numpy as np

from albumfix.album.index import AlbumIndex
from albumfix.faces.backends import FaceBox, create_analyzer
from albumfix.faces.quality import face_sharpness
from albumfix.guard import STRENGTH_STEPS, detail_ceiling
from albumfix.train.albums import FaceScorer, _cli, farther_share, load_manifest, match_faces, read_rgb

LADDER = (1.0, 0.8, 0.6, 0.45, 0.3, 0.15, 0.0)


def unguarded_run(work: Path) -> tuple[dict, Path]:
    """The album restored with the product's plan and no guard (made once) -> (run JSON, folder)."""
    out = work / "out-unguarded"
    saved = out / ".albumfix" / "run.json"
    if not saved.exists():
        shutil.rmtree(out, ignore_errors=True)
        (out / ".albumfix").mkdir(parents=True)
        shutil.copyfile(work / "out-scan" / ".albumfix" / "index.sqlite", out / ".albumfix" / "index.sqlite")
        result, _, err = _cli(["restore", str(work / "album"), "-o", str(out), "--no-guard"], None)
        if result is None:
            raise RuntimeError(f"albumfix restore printed no JSON: {err}")
        saved.write_text(json.dumps(result))
    return json.loads(saved.read_text()), out


def measure_faces(work: Path, ladder: tuple[float, ...] = LADDER) -> list[dict]:
    """Per restored damaged face: guided or not, its damage family and stored `edge_detail`,
    and per strength of `ladder` what the guard sees ("reference" or "self" distance, "sharpness") and the truth figures ("psnr", "identity")."""
    photos = load_manifest(work)
    run, out = unguarded_run(work)
    matched = match_faces(photos, run)
    rows = {r.face_id: r for r in AlbumIndex(out / ".albumfix" / "index.sqlite").faces()}
    embedder = create_analyzer("dlib", "dlib", device="cpu").embedding_part
    scorer = FaceScorer()
    faces = []
    for photo in photos:
        if not photo.family or not (out / photo.path).exists():
            continue
        truth, lq = read_rgb(work / photo.truth), read_rgb(work / "album" / photo.path)
        restored = read_rgb(out / photo.path).astype(np.float32)
        for k, face in enumerate(photo.faces):
            found = matched.get((photo.path, k))
            if not found or not found.get("restored"):
                continue
            row, info = rows[found["id"]], found["restored"]
            guides = info.get("fused") or ([info["exemplar"]] if info.get("guided") else [])
            refs = np.stack([rows[g].embedding for g in guides]) if guides else None
            box = FaceBox(tuple(row.box), 1.0, None, "truth")
            truth_desc = scorer.descriptors(truth, face)
            detail = float(row.quality.get("detail", 0.0))
            steps = {}
            for s in sorted({*ladder, *candidate_strengths(detail)}, reverse=True):
                img = np.clip(np.round(lq + s * (restored - lq)), 0, 255).astype(np.uint8)
                e = embedder.embed(img, [box], [row.landmarks])[0]
                m = scorer.measure(img, truth, face, truth_desc)
                steps[s] = {"reference": float(np.mean(1 - refs @ e)) if refs is not None else None,
                            "self": float(1 - e @ row.embedding), "sharpness": face_sharpness(img, row.landmarks),
                            "psnr": m["psnr"], "identity": m["identity"], "judge": m["judge"]}
            faces.append({"guided": refs is not None, "steps": steps, "family": photo.family, "detail": detail})
    return faces


def candidate_strengths(detail: float) -> list[float]:
    """The strengths albumfix.guard.guard_face tries for a face of this edge detail, in order:
    its detail ceiling (at most 1), then the lower STRENGTH_STEPS."""
    top = detail_ceiling(detail)
    return [top] + [s for s in STRENGTH_STEPS if s < top]


def strength_chosen(face: dict, gain: float, self_distance: float, sharpness_ratio: float) -> float:
    """The guard's choice for one measured face under a rule (albumfix.guard.guard_face, the
    detail ceiling included)."""
    before = face["steps"][0.0]
    for s in candidate_strengths(face["detail"]):
        x = face["steps"][s]
        near = (x["reference"] <= before["reference"] - gain) if face["guided"] else (x["self"] <= self_distance)
        if near and x["sharpness"] >= sharpness_ratio * before["sharpness"]:
            return s
    return 0.0


def score_rule(faces: list[dict], gain: float, self_distance: float, sharpness_ratio: float) -> dict:
    chosen = [face["steps"][strength_chosen(face, gain, self_distance, sharpness_ratio)] for face in faces]
    before = [face["steps"][0.0] for face in faces]

    def worse(m: str, family: str | None = None) -> float:
        """Share of the faces (of one family, or all) farther from the truth by measure m."""
        keep = [family is None or face["family"] == family for face in faces]
        return farther_share([c[m] for c, k in zip(chosen, keep) if k], [b[m] for b, k in zip(before, keep) if k])

    return {"psnr_gain": float(np.mean([c["psnr"] - b["psnr"] for c, b in zip(chosen, before)])),
            "worse": worse("identity"), "identity": float(np.mean([c["identity"] for c in chosen])),
            "judge_worse": worse("judge"), "judge": float(np.mean([c["judge"] for c in chosen])),
            "judge_worse_max": max(worse("judge", family) for family in {face["family"] for face in faces})}


def measured_faces(work: Path) -> list[dict]:
    """`measure_faces` of the album, kept in WORK/guard-faces.json (delete it after a change of
    weights or code) so that other grids score without measuring again."""
    saved = work / "guard-faces.json"
    if not saved.exists():
        saved.write_text(json.dumps(measure_faces(work)))
    faces = json.loads(saved.read_text())
    for face in faces:
        face["steps"] = {float(s): x for s, x in face["steps"].items()}
    return faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work", type=Path, help="benchmark folder with album/, truth/, manifest.json, out-scan/")
    parser.add_argument("--gains", default="-0.005,0,0.001,0.002,0.003,0.005")
    parser.add_argument("--self-distances", default="0.015,0.035")
    parser.add_argument("--sharpness-ratios", default="0.8,0.85,0.9")
    args = parser.parse_args()
    for name in ("out-scan", "truth"):
        if not (args.work / name).exists():
            raise SystemExit(f"{args.work / name} is missing: build and scan the album first (module doc)")
    faces = measured_faces(args.work)
    print(f"{len(faces)} restored damaged faces, {sum(f['guided'] for f in faces)} guided; input identity "
          f"{np.mean([f['steps'][0.0]['identity'] for f in faces]):.4f}, judge "
          f"{np.mean([f['steps'][0.0]['judge'] for f in faces]):.4f}")
    print(f"{'gain':>6} {'self':>6} {'sharp':>5} {'dPSNR':>7} {'worse':>6} {'ident':>7} {'j-worse':>7} {'judge':>7} "
          f"{'j-worse, worst family':>21}")
    grid = itertools.product(*(map(float, a.split(",")) for a in (args.gains, args.self_distances, args.sharpness_ratios)))
    for gain, self_distance, ratio in grid:
        r = score_rule(faces, gain, self_distance, ratio)
        print(f"{gain:>6.3f} {self_distance:>6.3f} {ratio:>5.2f} {r['psnr_gain']:>+7.3f} {r['worse']:>6.1%} "
              f"{r['identity']:>7.4f} {r['judge_worse']:>7.1%} {r['judge']:>7.4f} {r['judge_worse_max']:>21.1%}")


if __name__ == "__main__":
    main()
