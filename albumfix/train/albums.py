"""The end-to-end album benchmark: whole photos of held-out people through the real `albumfix`.

`build_albums` makes, from identity folders `ROOT/<person>/*.jpg` (the people of the held-out
split only, `person_split`), one album of whole photos: for every person one damaged photo (the
damage families of `albumfix.degrade.PHOTO_FAMILIES` in turn, or the chosen `families`, e.g. the
probe family "phone-snap" that nothing here was trained on) and 3-5 of their other photos as
they are, plus a few side-by-side photos of two people (damaged too). Each damaged photo has a
ground truth: the clean photo with the same look (tone, fading, cast, vignette), so the judge is
detail and identity, not tone. Faces are located in the clean photos with albumfix's own dlib
analysis (the truth landmarks).

`run_benchmark` runs the real command line (`python -m albumfix.cli`, optionally of another
checkout for before/after comparisons): one `scan`, then one `restore` per variant on a copy of
the scanned index:
- "product": `albumfix restore` as a user runs it;
- "unguided": `--exemplars 0` (no exemplar anywhere);
- "oracle": every face pinned to its true person (as `people merge/split` would), so each
  damaged face is guided by its own person's photos whatever the embeddings say;
- "product-k3": as "product" with `--exemplars 3` (three exemplars guide, outputs fused);
- on request (not in the default run), "unguarded", "unguided-unguarded" and "oracle-unguarded": the
  same with `--no-guard`, what the guard costs or saves, and the restorer's own use of its exemplar
  (oracle-unguarded against unguided-unguarded: the same faces, the guard's rules out of the way).
and scores every damaged face in the output photos against its truth:
- detected (a detected face box overlaps the truth face box, IoU >= 0.3), judged degraded
  (action restore), restored, guided (an exemplar guided the model), exemplar of the right
  person, and damaged faces that served as exemplars (must be 0);
- face-region PSNR (dB, RGB, inside the hull of the truth landmarks' jaw and lifted brows) and
  SSIM (luminance, over the face's bounding box) of input and outputs against the truth, and
  their gain over the input;
- identity, by two embedders: Euclidean distance of unit dlib descriptors of the output and of
  the truth, both at the truth landmarks ("identity"), and the same with FaceNet
  (`albumfix.train.judge`, "judge"), a network albumfix never uses, so that a gain that only
  dlib sees is not counted as identity; "worse" = the output is farther from the truth than
  the input, by each;
- each variant against the first (product) on the same faces: the mean per-face difference of
  PSNR and of both identity distances with its 95 % interval ("paired"), the yardstick for
  "guided beats unguided" and "K = 3 is at least as good as K = 1";
- grouping on the album: pairwise precision and recall of the people found, over every face
  whose person is known.
Faces that are not detected or not restored keep the input's pixels: they count with a zero gain.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from albumfix.atomic import atomic_write_bytes
from albumfix.degrade import DAMAGE_FAMILIES, PHOTO_FAMILIES, apply_photo_damage, sample_photo_damage
from albumfix.faces.analyzer import box_iou
from albumfix.train.dataset import album_people, main_face, people_photos, read_rgb

VARIANT_ARGS = {"product": [], "unguided": ["--exemplars", "0"], "oracle": [], "product-k3": ["--exemplars", "3"],
                "unguarded": ["--no-guard"], "unguided-unguarded": ["--exemplars", "0", "--no-guard"],
                "oracle-unguarded": ["--no-guard"]}
VARIANTS = ("product", "unguided", "oracle", "product-k3")  # the default run; the unguarded ones on request
MANIFEST = "manifest.json"
MIN_IOU = 0.3


@dataclass
class TruthFace:
    """A face whose person is known. landmarks: (68, 2) photo px as nested lists (from the clean
    photo); box: (x0, y0, x1, y1) photo px of the detector on the clean photo."""

    person: str
    landmarks: list
    box: list


@dataclass
class BenchPhoto:
    """One album photo. path: relative to the album; family: damage family, None for an
    untouched photo; truth: ground-truth PNG relative to the benchmark folder (damaged photos
    only); sources: the photo files it was made from; faces: its known faces."""

    path: str
    family: str | None
    truth: str | None
    sources: list[str]
    faces: list[TruthFace] = field(default_factory=list)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic_write_bytes(path, buf.tobytes())


def _side_by_side(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Two photos at the smaller one's height (area downscale), side by side -> (photo, split x)."""
    h = min(a.shape[0], b.shape[0])
    fit = [cv2.resize(x, (max(1, round(x.shape[1] * h / x.shape[0])), h), interpolation=cv2.INTER_AREA)
           if x.shape[0] != h else x for x in (a, b)]
    return np.ascontiguousarray(np.concatenate(fit, axis=1)), fit[0].shape[1]


def _truth_faces(analyzer, rgb: np.ndarray, people: Sequence[str], split_x: int | None) -> list[TruthFace]:
    """The main face of each person: the largest face (of the half split at split_x, left for
    people[0]) whose box holds the centre of its half."""
    faces = analyzer.analyse(rgb)
    halves = [(0, rgb.shape[1])] if split_x is None else [(0, split_x), (split_x, rgb.shape[1])]
    out = []
    for person, (x0, x1) in zip(people, halves):
        # the half's faces with boxes in the half's own coordinates, for main_face's centre rule
        local = [replace(f, box=(f.box[0] - x0, f.box[1], f.box[2] - x0, f.box[3]))
                 for f in faces if x0 <= (f.box[0] + f.box[2]) / 2 < x1]
        face = main_face(local, x1 - x0, rgb.shape[0])
        if face is None:
            return []
        box = (face.box[0] + x0, face.box[1], face.box[2] + x0, face.box[3])
        out.append(TruthFace(person, np.round(face.landmarks, 2).tolist(), [round(v, 1) for v in box]))
    return out


def build_albums(roots: Sequence[Path | str], work_dir: Path | str, people: int | None = None,
                 pairs: int = 6, seed: int = 0, val_fraction: float = 0.1, split: str = "val",
                 families: Sequence[str] = PHOTO_FAMILIES,
                 say: Callable[[str], None] | None = None) -> list[BenchPhoto]:
    """Build `work_dir/album/`, `work_dir/truth/` and `work_dir/manifest.json` (see the module
    docstring) from the people of `roots` in `split` ("val": held out of training, the default;
    "train": for calibrating thresholds without touching the held-out people); people: at most
    this many (None: all with 4 or more photos); pairs: two-person photos; families: the damage
    families, taken in turn (of DAMAGE_FAMILIES). Returns the
    manifest's photos. Deterministic for a seed; an existing manifest is reused as it is."""
    from albumfix.faces.backends import create_analyzer

    work_dir = Path(work_dir)
    if (work_dir / MANIFEST).exists():
        return load_manifest(work_dir)
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    by_person = people_photos(roots, split, val_fraction)
    chosen = album_people(by_person, people)
    analyzer = create_analyzer("dlib", "dlib")
    album, truth = work_dir / "album", work_dir / "truth"
    photos: list[BenchPhoto] = []
    spare: dict[str, list[Path]] = {}
    for i, person in enumerate(chosen):
        rng = np.random.default_rng([seed, i])
        files = [by_person[person][j] for j in rng.permutation(len(by_person[person]))]
        family = families[i % len(families)]
        name = person.replace("/", "-")
        damaged = None
        for k, source in enumerate(files):  # the damaged photo: the first with a findable face
            faces = _truth_faces(analyzer, read_rgb(source), [person], None)
            if faces:
                damaged = (source, faces)
                files = files[:k] + files[k + 1:]
                break
        if damaged is None:
            continue
        n_sharp = int(rng.integers(3, 6))
        for source in files[:n_sharp]:
            rel = f"{name}/{source.stem}{source.suffix.lower()}"
            (album / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, album / rel)
            photos.append(BenchPhoto(rel, None, None, [str(source)],
                                     _truth_faces(analyzer, read_rgb(source), [person], None)))
        spare[person] = files[n_sharp:]
        source, faces = damaged
        clean = read_rgb(source)
        photos.append(_damage(clean, faces, family, [str(source)], f"{name}/damaged-{family}.png",
                              np.random.default_rng([seed, i, 1]), album, truth, work_dir))
    duo = [p for p in chosen if spare.get(p)]
    for k in range(min(pairs, len(duo) // 2)):
        a, b = duo[2 * k], duo[2 * k + 1]
        rgb, split_x = _side_by_side(read_rgb(spare[a][0]), read_rgb(spare[b][0]))
        faces = _truth_faces(analyzer, rgb, [a, b], split_x)
        if len(faces) == 2:
            family = families[k % len(families)]
            photos.append(_damage(rgb, faces, family, [str(spare[a][0]), str(spare[b][0])],
                                  f"pairs/pair{k}-{family}.png", np.random.default_rng([seed, 10_000 + k]),
                                  album, truth, work_dir))
    atomic_write_bytes(work_dir / MANIFEST, json.dumps([asdict(p) for p in photos], indent=1).encode())
    say(f"benchmark album {album}: {len(photos)} photos of {len(chosen)} {split} people, "
        f"{sum(p.family is not None for p in photos)} damaged")
    return photos


def _damage(clean: np.ndarray, faces: list[TruthFace], family: str, sources: list[str], rel: str,
            rng: np.random.Generator, album: Path, truth: Path, work_dir: Path) -> BenchPhoto:
    """Damage one clean photo, write it (PNG: the damage exactly as made) and its truth."""
    damaged, target = apply_photo_damage(clean, sample_photo_damage(rng, family))
    _write_png(album / rel, damaged)
    _write_png(truth / rel, target)
    return BenchPhoto(rel, family, str((truth / rel).relative_to(work_dir)), sources, faces)


def load_manifest(work_dir: Path | str) -> list[BenchPhoto]:
    """The photos of a benchmark folder made by `build_albums`."""
    rows = json.loads((Path(work_dir) / MANIFEST).read_text(encoding="utf-8"))
    return [BenchPhoto(**{**r, "faces": [TruthFace(**f) for f in r["faces"]]}) for r in rows]


# --- running the real command line ----------------------------------------------------------------
def _cli(args: list[str], code: Path | None) -> tuple[dict | None, float, str]:
    """Run `python -m albumfix.cli ARGS --json` (of checkout `code`, else this albumfix) ->
    (parsed JSON or None when it printed none, seconds, stderr tail)."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    if code is not None:
        env["PYTHONPATH"] = str(code)
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "albumfix.cli", *args, "--json", "--quiet"], env=env,
                         cwd=str(code) if code else None, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    try:
        return json.loads(run.stdout), seconds, run.stderr[-2000:]
    except json.JSONDecodeError:
        return None, seconds, run.stderr[-2000:]


def match_faces(photos: list[BenchPhoto], run: dict) -> dict[tuple[str, int], dict]:
    """(album path, truth face index) -> the run's JSON face object that found it (best IoU >=
    MIN_IOU); undetected truth faces are absent."""
    found = {p["path"]: p["faces"] for p in run["photos"]}
    out = {}
    for photo in photos:
        for k, truth in enumerate(photo.faces):
            scored = [(box_iou(truth.box, f["box"]), f) for f in found.get(photo.path, [])]
            best = max(scored, key=lambda t: t[0], default=(0.0, None))
            if best[0] >= MIN_IOU:
                out[(photo.path, k)] = best[1]
    return out


def _pin_true_people(index: Path, matched: dict[tuple[str, int], dict], photos: list[BenchPhoto]) -> None:
    """Pin every matched face to its true person in an album index (as manual assignments)."""
    person = {(p.path, k): f.person for p in photos for k, f in enumerate(p.faces)}
    with sqlite3.connect(index) as db:
        db.executemany("INSERT OR REPLACE INTO assignments VALUES (?, ?, 1)",
                       [(face["id"], "truth:" + person[key]) for key, face in matched.items()])


def run_benchmark(work_dir: Path | str, variants: Sequence[str] = VARIANTS, code: Path | None = None,
                  say: Callable[[str], None] | None = None) -> dict:
    """Scan the benchmark album once, restore it once per variant, score (module docstring).
    code: another albumfix checkout to run (before/after comparisons; it runs in its own folder,
    so the work folder is made absolute first). Returns the report."""
    work_dir = Path(work_dir).resolve()
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    photos = load_manifest(work_dir)
    album = work_dir / "album"
    scan_out = work_dir / "out-scan"
    shutil.rmtree(scan_out, ignore_errors=True)
    scan, scan_seconds, err = _cli(["scan", str(album), "-o", str(scan_out)], code)
    if scan is None:
        raise RuntimeError(f"albumfix scan printed no JSON: {err}")
    say(f"scan: {len(photos)} photos in {scan_seconds:.0f} s")
    matched = match_faces(photos, scan)
    runs, seconds = {}, {"scan": scan_seconds}
    for variant in variants:
        out = work_dir / f"out-{variant}"
        shutil.rmtree(out, ignore_errors=True)
        (out / ".albumfix").mkdir(parents=True)
        shutil.copyfile(scan_out / ".albumfix" / "index.sqlite", out / ".albumfix" / "index.sqlite")
        if variant.startswith("oracle"):
            _pin_true_people(out / ".albumfix" / "index.sqlite", matched, photos)
        result, secs, err = _cli(["restore", str(album), "-o", str(out), *VARIANT_ARGS[variant]], code)
        if result is None:
            say(f"{variant}: no result ({err.strip().splitlines()[-1] if err.strip() else 'no output'})")
            continue
        runs[variant], seconds[variant] = result, secs
        atomic_write_bytes(out / ".albumfix" / "run.json", json.dumps(result).encode())
        say(f"{variant}: restored in {secs:.0f} s")
    report = score(work_dir, photos, scan, runs)
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    report["code"] = str(code) if code else "this albumfix"
    atomic_write_bytes(work_dir / "report.json", json.dumps(report, indent=1).encode())
    return report


# --- scoring --------------------------------------------------------------------------------------
def face_region(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(68, 2) photo px -> (H, W) bool: hull of the jaw, the brows and the brows lifted towards
    the forehead (the region albumfix pastes a restored face into, before feathering)."""
    from albumfix.restore.blend import FOREHEAD_LIFT

    lm = np.asarray(landmarks, np.float64)
    brows = lm[17:27]
    forehead = brows + (brows.mean(axis=0) - lm[8]) * FOREHEAD_LIFT
    hull = cv2.convexHull(np.round(np.concatenate([lm[:17], brows, forehead])).astype(np.int32))
    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


class FaceScorer:
    """Face-region PSNR / SSIM and identity distances (dlib, FaceNet) of photos against a truth."""

    def __init__(self) -> None:
        from albumfix.faces.backends.dlib_backend import DlibModels
        from albumfix.train.judge import FaceNetJudge

        self.embedder = DlibModels.load().embedder()
        self.judge = FaceNetJudge()

    def descriptors(self, rgb: np.ndarray, face: TruthFace) -> tuple[np.ndarray, np.ndarray]:
        """(dlib (128,), FaceNet (512,) unit descriptor) of the face at its truth landmarks."""
        from albumfix.faces.backends import FaceBox

        box = FaceBox(tuple(face.box), 1.0, None, "truth")
        landmarks = np.asarray(face.landmarks, np.float32)
        return self.embedder.embed(rgb, [box], [landmarks])[0], self.judge.embed(rgb, landmarks)

    def measure(self, rgb: np.ndarray, truth: np.ndarray, face: TruthFace,
                truth_desc: tuple[np.ndarray, np.ndarray]) -> dict:
        from albumfix.train.metrics import psnr, ssim_luma

        mask = face_region(np.asarray(face.landmarks), truth.shape)
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        return {"psnr": psnr(rgb[mask], truth[mask]),
                "ssim": ssim_luma(rgb[y0:y1, x0:x1], truth[y0:y1, x0:x1]) if min(y1 - y0, x1 - x0) > 12 else float("nan"),
                **{name: float(np.linalg.norm(mine - theirs)) for name, mine, theirs
                   in zip(("identity", "judge"), self.descriptors(rgb, face), truth_desc)}}


def _pairwise(labels: dict[str, str], truth: dict[str, str]) -> tuple[float, float]:
    """Pairwise precision and recall of predicted person labels against true ones (same keys)."""
    keys = sorted(labels)
    tp = fp = fn = 0
    for a, b in combinations(keys, 2):
        same_pred, same_true = labels[a] == labels[b], truth[a] == truth[b]
        tp += same_pred and same_true
        fp += same_pred and not same_true
        fn += same_true and not same_pred
    return (tp / (tp + fp) if tp + fp else 1.0), (tp / (tp + fn) if tp + fn else 1.0)


def score(work_dir: Path, photos: list[BenchPhoto], scan: dict, runs: dict[str, dict]) -> dict:
    """Per-family figures of the runs (see the module docstring)."""
    scorer = FaceScorer()
    matched = match_faces(photos, scan)
    face_owner = {}  # face id -> (album path, truth face index) or (album path, None) for others
    for p in scan["photos"]:
        for f in p["faces"]:
            face_owner[f["id"]] = (p["path"], None)
    for key, face in matched.items():
        face_owner[face["id"]] = key
    person_of = {(p.path, k): f.person for p in photos for k, f in enumerate(p.faces)}
    damaged_paths = {p.path for p in photos if p.family}
    rows: dict[str, dict[str, list]] = {}
    damaged_exemplars = {v: set() for v in runs}
    run_faces = {v: {(p["path"], f["id"]): f for p in result["photos"] for f in p["faces"]}
                 for v, result in runs.items()}
    for photo in photos:
        if photo.family is None:
            continue
        truth = read_rgb(work_dir / photo.truth)
        images = {"input": read_rgb(work_dir / "album" / photo.path)}
        for v in runs:
            out = work_dir / f"out-{v}" / photo.path
            images[v] = read_rgb(out) if out.exists() else images["input"]
        for k, face in enumerate(photo.faces):
            truth_desc = scorer.descriptors(truth, face)
            found = matched.get((photo.path, k))
            row = {"detected": found is not None,
                   "degraded": bool(found and found["action"] == "restore"),
                   **{f"{v}.{m}": val for v, img in images.items()
                      for m, val in scorer.measure(img, truth, face, truth_desc).items()}}
            for v in runs:
                info = run_faces[v].get((photo.path, found["id"])) if found else None
                restored = (info or {}).get("restored") or {}
                exemplar = restored.get("exemplar") if restored.get("guided") else None
                row[f"{v}.restored"] = bool(restored)
                row[f"{v}.guided"] = exemplar is not None
                owner = face_owner.get(exemplar)
                row[f"{v}.right_person"] = bool(exemplar) and owner is not None and owner[1] is not None \
                    and person_of[owner] == face.person
            for family in (photo.family, "all"):
                for name, value in row.items():
                    rows.setdefault(family, {}).setdefault(name, []).append(value)
    for v, faces in run_faces.items():
        for f in faces.values():
            ex = (f.get("restored") or {}).get("exemplar")
            if ex and face_owner.get(ex, ("", None))[0] in damaged_paths:
                damaged_exemplars[v].add(ex)
    labels = {f["id"]: f["person"] for key, f in matched.items() if f.get("person")}
    truth_people = {f["id"]: person_of[key] for key, f in matched.items() if f.get("person")}
    precision, recall = _pairwise(labels, truth_people)
    return {"families": {fam: _summarise(rows[fam], list(runs)) for fam in (*DAMAGE_FAMILIES, "all") if fam in rows},
            "grouping": {"precision": precision, "recall": recall, "faces": len(labels)},
            "damaged_faces_as_exemplars": {v: sorted(s) for v, s in damaged_exemplars.items()},
            "photos": len(photos), "variants": list(runs)}


def _summarise(rows: dict[str, list], variants: list[str]) -> dict:
    """Means and shares of one family's per-face rows."""
    mean = lambda name: float(np.nanmean(np.asarray(rows[name], np.float64)))  # noqa: E731
    metrics = ("psnr", "ssim", "identity", "judge")
    inp = {m: np.asarray(rows[f"input.{m}"], np.float64) for m in metrics}
    out = {"faces": len(rows["detected"]), "detected": mean("detected"), "degraded": mean("degraded"),
           "input": {m: mean(f"input.{m}") for m in metrics}}
    for v in variants:
        values = {m: np.asarray(rows[f"{v}.{m}"], np.float64) for m in metrics}
        guided = np.asarray(rows[f"{v}.guided"], bool)
        out[v] = {"restored": mean(f"{v}.restored"), "guided": float(guided.mean()),
                  "right_person": float(np.asarray(rows[f"{v}.right_person"])[guided].mean()) if guided.any() else float("nan"),
                  "psnr_gain": float(np.mean(values["psnr"] - inp["psnr"])),
                  "ssim_gain": float(np.nanmean(values["ssim"] - inp["ssim"])),
                  "identity": float(values["identity"].mean()),
                  "worse_identity": farther_share(values["identity"], inp["identity"]),
                  "judge": float(values["judge"].mean()),
                  "worse_judge": farther_share(values["judge"], inp["judge"])}
        if v != variants[0]:
            first = {m: np.asarray(rows[f"{variants[0]}.{m}"], np.float64) for m in ("psnr", "identity", "judge")}
            out[v]["paired"] = {m: paired_difference(values[m], first[m]) for m in first}
    return out


def farther_share(after, before) -> float:
    """Share of faces farther from their truth after than before ("worse"): per-face identity
    distances, same order; a change under 1e-6 is no change."""
    return float(np.mean(np.asarray(after, np.float64) > np.asarray(before, np.float64) + 1e-6))


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """Per-face difference a - b of two runs on the same faces: mean and its 95 % interval
    (normal approximation, mean +- 1.96 standard errors), so that a change between variants
    can be told from the spread of the faces."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "low": float(d.mean() - half), "high": float(d.mean() + half)}


def report_table(report: dict) -> str:
    """The benchmark's report as a plain-text table, one block per family."""
    lines = [f"end-to-end album benchmark ({report['code']}): {report['photos']} photos; "
             f"seconds {report['seconds']}",
             f"grouping: pairwise precision {report['grouping']['precision']:.3f}, recall "
             f"{report['grouping']['recall']:.3f} over {report['grouping']['faces']} faces of known people",
             "damaged faces used as exemplars: " + ", ".join(
                 f"{v} {len(s)}" for v, s in report["damaged_faces_as_exemplars"].items())]
    for family, r in report["families"].items():
        lines.append(f"\n[{family}] {r['faces']} damaged faces: detected {r['detected']:.0%}, "
                     f"judged degraded {r['degraded']:.0%}")
        lines.append(f"  {'variant':<9} {'restored':>8} {'guided':>7} {'right':>6} {'PSNR':>7} {'dPSNR':>6} "
                     f"{'dSSIM':>7} {'dlib':>6} {'worse':>6} {'judge':>6} {'worse':>6}")
        i = r["input"]
        lines.append(f"  {'input':<9} {'':>8} {'':>7} {'':>6} {i['psnr']:>7.2f} {'':>6} {'':>7} {i['identity']:>6.3f} "
                     f"{'':>6} {i['judge']:>6.3f}")
        for v in report["variants"]:
            x = r[v]
            right = "-" if x["right_person"] != x["right_person"] else f"{x['right_person']:.0%}"
            lines.append(f"  {v:<9} {x['restored']:>8.0%} {x['guided']:>7.0%} {right:>6} "
                         f"{i['psnr'] + x['psnr_gain']:>7.2f} {x['psnr_gain']:>+6.2f} {x['ssim_gain']:>+7.4f} "
                         f"{x['identity']:>6.3f} {x['worse_identity']:>6.0%} {x['judge']:>6.3f} {x['worse_judge']:>6.0%}")
        for v in report["variants"][1:]:
            d = r[v]["paired"]
            lines.append(f"  {v} - {report['variants'][0]} per face (95 % interval): " + ", ".join(
                f"{m} {d[m]['mean']:+.3f} [{d[m]['low']:+.3f}, {d[m]['high']:+.3f}]" for m in ("psnr", "identity", "judge")))
    return "\n".join(lines)
