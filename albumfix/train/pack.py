"""A training pack: a cache and a pairs file cut to a byte budget, to carry to a rented GPU.

A GPU machine lent for a few minutes receives the working tree plus at most a few tens of MiB of
ignored files, so the full cache (about 70 MB) and pairs file (about 50 MB) do not travel.
`make_pack` keeps whole training people in a fixed order (a hash of the person's name, so a
smaller budget keeps a prefix of a larger one's people) with every ground-truth crop and its
exemplar, and the first `val_pairs` validation pairs; then the made-as-inference pairs of the
kept crops, up to `pairs_fraction` of the budget. A crop or pair costs its JPEG bytes plus its
rows of the other arrays (landmarks, paths, ...). Crops stay the same JPEG bytes (no
re-encoding), exemplar and pair indices are remapped to the pack.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from albumfix.train.dataset import TrainingCache, load_cache, pack_jpegs, save_cache, unpack_jpegs
from albumfix.train.inference_pairs import InferencePairs, load_pairs, save_pairs

MIB = 1 << 20
FILE_OVERHEAD = 16 * 1024  # two .npz files: zip and array headers, the JSON meta


@dataclass(frozen=True)
class PackReport:
    """What `make_pack` wrote: files, their bytes, crops, train / val pairs and made pairs kept."""

    cache: Path
    pairs: Path | None
    bytes: int
    crops: int
    train_pairs: int
    val_pairs: int
    made_pairs: int


def _remap(size: int, keep: np.ndarray) -> np.ndarray:
    """(size,) int64: the position of each index in sorted `keep`, -1 for indices not kept."""
    remap = np.full(size, -1, np.int64)
    remap[np.asarray(sorted(keep), np.int64)] = np.arange(len(keep))
    return remap


def subset_cache(cache: TrainingCache, keep: np.ndarray) -> TrainingCache:
    """The crops `keep` (sorted crop indices) of `cache`; an exemplar outside the subset becomes
    -1. Returns a new TrainingCache with its own packed JPEG bytes."""
    keep = np.asarray(sorted(set(int(i) for i in keep)), np.int64)
    remap = _remap(len(cache), keep)
    jpegs = unpack_jpegs(cache.jpeg, cache.jpeg_offsets)
    data, offsets = pack_jpegs([jpegs[i] for i in keep])
    per_crop = {f.name: getattr(cache, f.name)[keep] for f in fields(cache)
                if f.name not in ("jpeg", "jpeg_offsets", "people", "meta")}
    exemplar = cache.exemplar[keep]
    per_crop["exemplar"] = np.where(exemplar >= 0, remap[np.maximum(exemplar, 0)], -1).astype(np.int32)
    meta = dict(cache.meta, packed_from=len(cache))
    return TrainingCache(jpeg=data, jpeg_offsets=offsets, people=cache.people, meta=meta, **per_crop)


def row_bytes(record, per_row: tuple[str, ...]) -> int:
    """Bytes one row takes in the arrays `per_row` of a cache or pairs record."""
    return sum(getattr(record, name)[:1].nbytes for name in per_row)


CROP_ROWS = ("jpeg_offsets", "landmarks", "embeddings", "person", "paths", "source_side", "is_gt", "exemplar",
             "exemplar_distance", "split")
PAIR_ROWS = ("lq_offsets", "target_offsets", "lq_landmarks", "truth_landmarks", "base", "variant", "tone")


def _crop_bytes(cache: TrainingCache, i: int) -> int:
    """JPEG bytes of crop i plus its rows of the other arrays."""
    return int(cache.jpeg_offsets[i + 1] - cache.jpeg_offsets[i]) + row_bytes(cache, CROP_ROWS)


def _person_order(cache: TrainingCache, split: str) -> list[int]:
    """Person indices with pairs in `split`, ordered by a hash of their name."""
    people = sorted(set(int(p) for p in cache.person[cache.pairs(split)]))
    return sorted(people, key=lambda p: hashlib.sha1(str(cache.people[p]).encode()).hexdigest())


def choose_crops(cache: TrainingCache, budget: int, val_pairs: int) -> np.ndarray:
    """Crop indices for a pack of at most `budget` bytes (JPEGs and rows; module docstring)."""
    keep: set[int] = set()
    used = 0

    def add(indices) -> None:
        nonlocal used
        for i in indices:
            if i not in keep:
                keep.add(i)
                used += _crop_bytes(cache, i)

    val = cache.pairs("val")[:val_pairs]
    add([int(i) for i in val] + [int(cache.exemplar[i]) for i in val])
    train = cache.pairs("train")
    for person in _person_order(cache, "train"):
        crops = [int(i) for i in train[cache.person[train] == person]]
        needed = set(crops) | {int(cache.exemplar[i]) for i in crops}
        cost = sum(_crop_bytes(cache, i) for i in needed - keep)
        if used + cost > budget:
            break
        add(sorted(needed))
    return np.asarray(sorted(keep), np.int64)


def subset_pairs(pairs: InferencePairs, cache: TrainingCache, keep: np.ndarray, budget: int) -> InferencePairs:
    """The pairs whose base crop is in `keep` (crop indices of `cache`), in file order, up to
    `budget` bytes (JPEGs and rows); bases remapped to positions in sorted `keep`."""
    remap = _remap(len(cache), keep)
    chosen, used = [], 0
    overhead = row_bytes(pairs, PAIR_ROWS)
    for i in np.flatnonzero(remap[pairs.base] >= 0):
        cost = overhead + int(pairs.lq_offsets[i + 1] - pairs.lq_offsets[i]
                              + pairs.target_offsets[i + 1] - pairs.target_offsets[i])
        if used + cost > budget:
            break
        chosen.append(int(i))
        used += cost
    lq, target = unpack_jpegs(pairs.lq, pairs.lq_offsets), unpack_jpegs(pairs.target, pairs.target_offsets)
    lq_data, lq_offsets = pack_jpegs([lq[i] for i in chosen])
    t_data, t_offsets = pack_jpegs([target[i] for i in chosen])
    return replace(pairs, lq=lq_data, lq_offsets=lq_offsets, target=t_data, target_offsets=t_offsets,
                   lq_landmarks=pairs.lq_landmarks[chosen], truth_landmarks=pairs.truth_landmarks[chosen],
                   base=remap[pairs.base[chosen]].astype(np.int32), variant=pairs.variant[chosen],
                   tone=pairs.tone[chosen], meta=dict(pairs.meta, cache_crops=len(keep), packed_from=len(pairs)))


def make_pack(cache_path: Path | str, out_dir: Path | str, pairs_path: Path | str | None = None,
              budget_mib: float = 60.0, pairs_fraction: float = 0.35, val_pairs: int = 32) -> PackReport:
    """Write `out_dir`/train-pack.npz (and pairs-pack.npz with a pairs file), together within
    `budget_mib` MiB (the people names and FILE_OVERHEAD for the files' headers kept aside)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = load_cache(cache_path)
    budget = int(budget_mib * MIB) - int(cache.people.nbytes) - FILE_OVERHEAD
    crop_budget = budget if pairs_path is None else int(budget * (1 - pairs_fraction))
    keep = choose_crops(cache, crop_budget, val_pairs)
    packed = subset_cache(cache, keep)
    cache_out = out_dir / "train-pack.npz"
    save_cache(packed, cache_out)
    pairs_out, made = None, 0
    if pairs_path is not None:
        rest = budget - sum(_crop_bytes(packed, i) for i in range(len(packed)))
        pairs = subset_pairs(load_pairs(pairs_path, cache), cache, keep, rest)
        pairs_out = out_dir / "pairs-pack.npz"
        save_pairs(pairs, pairs_out)
        made = len(pairs)
    total = cache_out.stat().st_size + (pairs_out.stat().st_size if pairs_out else 0)
    return PackReport(cache=cache_out, pairs=pairs_out, bytes=total, crops=len(packed),
                      train_pairs=len(packed.pairs("train")), val_pairs=len(packed.pairs("val")), made_pairs=made)
