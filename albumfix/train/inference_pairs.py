"""Training pairs made the way inference sees them: the whole photo is damaged, albumfix's own
detector and landmarker run on the *damaged* photo, the input crop is aligned with the landmarks
found there and the ground truth is cropped with the *same* transform.

For every ground-truth crop of a training cache that has an exemplar (both splits), `variants`
damages of its source photo are drawn from the "training" whole-photo family
(`degrade.sample_photo_damage`, seeded by (seed, crop index, variant)), so the restorer meets
the blur, resolution and JPEG of a photo as `albumfix restore` crops it (damage at photo scale,
resampled by the alignment, landmark errors of a damaged face), and `albumfix eval --pairs` can
score crops as the product makes them. The analyser is the product's default (dlib HOG with the
upsampled and CNN fallbacks); the face kept is the one whose box overlaps the clean face's box
best (IoU >= MIN_IOU); a damage whose face is not found is dropped and counted, as `restore`
would not see that face either. The exemplar is the base crop's cached one (aligned from its
clean photo, as `restore` aligns exemplars).

The pairs file is one `.npz` (written atomically; shards of SHARD damages in
`<work_dir>/pair-shards/` let a killed build resume):

| key | shape, dtype | meaning |
|---|---|---|
| `lq`, `lq_offsets` | (total,) uint8, (M + 1,) int64 | input crop i as JPEG (quality 95) |
| `target`, `target_offsets` | (total,) uint8, (M + 1,) int64 | ground truth crop i (same transform) |
| `lq_landmarks` | (M, 68, 2) float32 | landmarks found on the damaged photo, crop px |
| `truth_landmarks` | (M, 68, 2) float32 | the clean photo's landmarks through the same transform |
| `base` | (M,) int32 | crop index in the training cache (person, split, exemplar) |
| `variant` | (M,) int16 | damage number of that crop |
| `tone` | (M,) str | print tone of input and target |
| `meta` | () str | JSON: size, cache, seed, variants, attempted / undetected counts |
"""
from __future__ import annotations

import io
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from albumfix.atomic import atomic_write_bytes
from albumfix.degrade import apply_photo_damage, sample_photo_damage
from albumfix.train.dataset import (
    TrainingCache, TrainingSample, decode_jpeg, encode_jpeg, load_cache, pack_jpegs, read_analysis_log, read_rgb,
    unpack_jpegs,
)

PAIRS_VERSION = 1
MIN_IOU = 0.3
SHARD = 256
FAMILY = "training"


@dataclass
class InferencePairs:
    """The loaded pairs file (see the module docstring for every field); crops decode on demand."""

    lq: np.ndarray
    lq_offsets: np.ndarray
    target: np.ndarray
    target_offsets: np.ndarray
    lq_landmarks: np.ndarray
    truth_landmarks: np.ndarray
    base: np.ndarray
    variant: np.ndarray
    tone: np.ndarray
    meta: dict

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def lq_crop(self, i: int) -> np.ndarray:
        """Input crop i: (S, S, 3) uint8 RGB."""
        return decode_jpeg(self.lq, self.lq_offsets, i)

    def target_crop(self, i: int) -> np.ndarray:
        """Ground-truth crop i: (S, S, 3) uint8 RGB."""
        return decode_jpeg(self.target, self.target_offsets, i)

    def of_split(self, cache: TrainingCache, split: str) -> np.ndarray:
        """Pair indices whose base crop is in `split` ("train" | "val") of `cache`."""
        return np.flatnonzero(cache.split[self.base] == {"train": 0, "val": 1}[split])

    def sample(self, cache: TrainingCache, i: int) -> TrainingSample:
        """Pair i as a TrainingSample, with the base crop's cached exemplar."""
        ref = int(cache.exemplar[self.base[i]])
        return TrainingSample(lq=self.lq_crop(i), ref=cache.crop(ref), target=self.target_crop(i),
                              lq_landmarks=self.lq_landmarks[i].astype(np.float32),
                              ref_landmarks=cache.landmarks[ref].astype(np.float32), tone=str(self.tone[i]))


@dataclass(frozen=True)
class PairsReport:
    """What `build_inference_pairs` made: pairs kept, damages tried, faces not found, alignment
    error (mean landmark distance found vs clean, crop px, median over pairs), time."""

    path: Path
    pairs: int
    attempted: int
    undetected: int
    median_landmark_error: float
    seconds: float


@dataclass
class _Made:
    """Parallel lists of made pairs (one shard, or the whole file once merged)."""

    lq: list[np.ndarray]
    target: list[np.ndarray]
    lq_landmarks: list[np.ndarray]
    truth_landmarks: list[np.ndarray]
    base: list[int]
    variant: list[int]
    tone: list[str]
    attempted: int = 0


_WORKER: dict = {}


def _worker_init(size: int, seed: int) -> None:
    from albumfix.faces.backends import create_analyzer
    from albumfix.settings import Settings

    s = Settings()
    analyzer = create_analyzer("dlib", "dlib", upsample=s.upsample, cnn_fallback=s.cnn_fallback, device="cpu")
    _WORKER.update(detector=analyzer.detector, landmarker=analyzer.landmarker, size=size, seed=seed)


def make_pair(rgb: np.ndarray, clean_landmarks: np.ndarray, clean_box: Sequence[float], rng: np.random.Generator,
              detector, landmarker, size: int):
    """One pair from a clean photo: damage it (the "training" family, drawn from `rng`), find its
    face on the damaged photo, crop both with the found landmarks' transform. rgb: (H, W, 3)
    uint8; clean_landmarks: (68, 2) photo px; clean_box: (x0, y0, x1, y1). Returns (lq, target,
    lq crop landmarks, clean landmarks in the crop, tone), or None when the face is not found."""
    from albumfix.faces.align import aligned_crop, landmarks_to_crop
    from albumfix.faces.analyzer import box_iou

    damage = sample_photo_damage(rng, FAMILY)
    damaged, truth = apply_photo_damage(rgb, damage)
    boxes = detector.detect(np.ascontiguousarray(damaged))
    scored = [(box_iou(clean_box, b.box), b) for b in boxes]
    scored = [(iou, b) for iou, b in scored if iou >= MIN_IOU]
    if not scored:
        return None
    best = max(scored, key=lambda s: s[0])[1]
    found = np.asarray(landmarker.landmarks(damaged, [best])[0], np.float32)
    t, lq, lq_lm = aligned_crop(damaged, found, size)
    target = aligned_crop(truth, found, size)[1]
    return lq, target, lq_lm, landmarks_to_crop(clean_landmarks, t), damage.crop_model.tone


def _make_shard(tasks: list[tuple[int, int, str, list, list]]) -> _Made:
    """Pairs of (crop index, variant, photo path, clean landmarks, clean box) tasks, in a worker."""
    w = _WORKER
    out = _Made([], [], [], [], [], [], [])
    for base, variant, path, landmarks, box in tasks:
        out.attempted += 1
        made = make_pair(read_rgb(Path(path)), np.asarray(landmarks, np.float32), box,
                         np.random.default_rng([w["seed"], base, variant]), w["detector"], w["landmarker"], w["size"])
        if made is None:
            continue
        lq, target, lq_lm, truth_lm, tone = made
        out.lq.append(encode_jpeg(lq, 95))
        out.target.append(encode_jpeg(target, 95))
        out.lq_landmarks.append(lq_lm)
        out.truth_landmarks.append(truth_lm)
        out.base.append(base)
        out.variant.append(variant)
        out.tone.append(tone)
    return out


def _save_shard(made: _Made, path: Path) -> None:
    buffer = io.BytesIO()
    lq, target = pack_jpegs(made.lq), pack_jpegs(made.target)
    np.savez(buffer, lq=lq[0], lq_offsets=lq[1], target=target[0], target_offsets=target[1],
             lq_landmarks=np.asarray(made.lq_landmarks, np.float32).reshape(-1, 68, 2),
             truth_landmarks=np.asarray(made.truth_landmarks, np.float32).reshape(-1, 68, 2),
             base=np.asarray(made.base, np.int32), variant=np.asarray(made.variant, np.int16),
             tone=np.asarray(made.tone, dtype="<U8"), attempted=np.int64(made.attempted))
    atomic_write_bytes(path, buffer.getvalue())


def _load_shard(path: Path) -> _Made:
    with np.load(path, allow_pickle=False) as z:
        return _Made(unpack_jpegs(z["lq"], z["lq_offsets"]), unpack_jpegs(z["target"], z["target_offsets"]),
                     list(z["lq_landmarks"]), list(z["truth_landmarks"]), z["base"].tolist(),
                     z["variant"].tolist(), z["tone"].tolist(), int(z["attempted"]))


def _tasks(cache: TrainingCache, variants: int, log_dir: Path) -> list[tuple[int, int, str, list, list]]:
    """(crop index, variant, photo path, clean landmarks, clean box) for every GT crop with an
    exemplar, from the cache's analysis log in `log_dir` (the clean photo's face in photo px)."""
    roots = {Path(r).name: Path(r) for r in cache.meta["roots"]}
    analyses = read_analysis_log(log_dir / f"analysis-{cache.meta['analyzer']}.jsonl")
    tasks = []
    for i in np.flatnonzero(cache.is_gt & (cache.exemplar >= 0)):
        key = str(cache.paths[i])
        a = analyses.get(key)
        if a is None or a.landmarks is None:
            raise ValueError(f"the analysis log in {log_dir} lacks {key}; rebuild the cache with `albumfix dataset`")
        root, rest = key.split("/", 1)
        tasks += [(int(i), v, str(roots[root] / rest), a.landmarks.tolist(), list(a.box)) for v in range(variants)]
    return tasks


def build_inference_pairs(cache_path: Path | str, out_path: Path | str, variants: int = 2, seed: int = 0,
                          workers: int = 1, work_dir: Path | str | None = None, crops: int | None = None,
                          progress: Callable[[str], None] | None = None) -> PairsReport:
    """Build the pairs file `out_path` for the training cache `cache_path` (see the module
    docstring). variants: damages per crop; workers: processes; work_dir: the cache's work
    folder (`albumfix dataset --work-dir`, default: the cache's folder), which holds its analysis
    log and gets the shard folder; crops: only the first N ground-truth crops with an exemplar
    (a build cut short for time: the shards it made are reused). Resumes from the shards a
    killed build left."""
    start = time.monotonic()
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    cache = load_cache(cache_path)
    work_dir = Path(work_dir or Path(cache_path).parent)
    tasks = _tasks(cache, variants, work_dir)[:None if crops is None else crops * variants]
    shard_dir = work_dir / "pair-shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    chunks = [tasks[k:k + SHARD] for k in range(0, len(tasks), SHARD)]
    # a shard's name holds its task count, so a build cut short (`crops`) never passes its
    # partial last shard off as a full one of a longer build, nor the reverse
    names = [shard_dir / f"s{seed}-v{variants}-{k:05d}-n{len(chunk)}.npz" for k, chunk in enumerate(chunks)]
    todo = [k for k, name in enumerate(names) if not name.exists()]
    say(f"{len(tasks)} damages of {len(tasks) // max(variants, 1)} crops in {len(chunks)} shards, "
        f"{len(chunks) - len(todo)} already made")
    size = cache.size
    if todo:
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_worker_init, initargs=(size, seed)) as pool:
            for done, (k, made) in enumerate(zip(todo, pool.imap(_make_shard, [chunks[k] for k in todo])), 1):
                _save_shard(made, names[k])
                rate = done * SHARD / max(time.monotonic() - start, 1e-9)
                say(f"shard {done}/{len(todo)}: {len(made.base)}/{made.attempted} found ({rate:.1f} damages/s)")
    merged = _Made([], [], [], [], [], [], [])
    for name in names:
        part = _load_shard(name)
        for f in fields(_Made):
            if f.name == "attempted":
                merged.attempted += part.attempted
            else:
                getattr(merged, f.name).extend(getattr(part, f.name))
    lq, lq_offsets = pack_jpegs(merged.lq)
    target, target_offsets = pack_jpegs(merged.target)
    lq_lm = np.asarray(merged.lq_landmarks, np.float32)
    truth_lm = np.asarray(merged.truth_landmarks, np.float32)
    error = float(np.median(np.linalg.norm(lq_lm - truth_lm, axis=2).mean(axis=1))) if len(lq_lm) else float("nan")
    meta = {"version": PAIRS_VERSION, "size": size, "cache": Path(cache_path).name, "cache_crops": len(cache),
            "seed": seed, "variants": variants, "family": FAMILY, "attempted": merged.attempted,
            "undetected": merged.attempted - len(merged.base), "median_landmark_error": error}
    pairs = InferencePairs(lq=lq, lq_offsets=lq_offsets, target=target, target_offsets=target_offsets,
                           lq_landmarks=lq_lm, truth_landmarks=truth_lm, base=np.asarray(merged.base, np.int32),
                           variant=np.asarray(merged.variant, np.int16), tone=np.asarray(merged.tone), meta=meta)
    save_pairs(pairs, Path(out_path))
    report = PairsReport(path=Path(out_path), pairs=len(pairs), attempted=merged.attempted,
                         undetected=meta["undetected"], median_landmark_error=error, seconds=time.monotonic() - start)
    say(f"wrote {out_path}: {report.pairs} pairs of {report.attempted} damages ({report.undetected} faces not found), "
        f"median landmark error {error:.2f} crop px")
    return report


def save_pairs(pairs: InferencePairs, path: Path) -> None:
    """Write `pairs` as one .npz, atomically."""
    buffer = io.BytesIO()
    arrays = {f.name: getattr(pairs, f.name) for f in fields(pairs) if f.name != "meta"}
    np.savez(buffer, meta=np.array(json.dumps(pairs.meta)), **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_pairs(path: Path | str, cache: TrainingCache | None = None) -> InferencePairs:
    """Load a pairs file; with `cache`, check it was built from a cache of that size."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("version") != PAIRS_VERSION:
        raise ValueError(f"{path}: pairs version {meta.get('version')}, expected {PAIRS_VERSION}; rebuild it")
    if cache is not None and (meta["cache_crops"] != len(cache) or meta["size"] != cache.size):
        raise ValueError(f"{path} was built from another cache ({meta['cache_crops']} crops of {meta['size']} px); "
                         f"rebuild it with `albumfix pairs`")
    return InferencePairs(meta=meta, **arrays)


def evaluation_pairs(cache: TrainingCache, pairs: InferencePairs, split: str = "val",
                     limit: int | None = None) -> np.ndarray:
    """Pair indices evaluated on `split`: the first damage (variant 0) of each crop that has
    one, in crop order, the first `limit` of them."""
    indices = pairs.of_split(cache, split)
    return indices[pairs.variant[indices] == 0][:limit]


def inference_samples(cache: TrainingCache, pairs: InferencePairs, split: str = "val",
                      limit: int | None = None) -> list[TrainingSample]:
    """The `evaluation_pairs` as TrainingSamples (no augmentation)."""
    return [pairs.sample(cache, int(i)) for i in evaluation_pairs(cache, pairs, split, limit)]
