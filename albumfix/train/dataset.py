"""Training data: a compact cache of aligned face crops with exemplars, and on-the-fly degradation.

Building (`build_dataset`) runs albumfix's own inference code on identity folders
`ROOT/<person>/*.jpg`: the face analyser (detection, 68 landmarks, dlib embedding), the FFHQ
alignment with a reflect border, and the exemplar choice (`choose_exemplars`, the same call the
restore pipeline makes). Every photo's analysis is appended to a JSONL log beside the cache, so a
killed build resumes where it stopped. The cache is one `.npz` (written atomically):

| key | shape, dtype | meaning |
|---|---|---|
| `jpeg`, `jpeg_offsets` | (total,) uint8, (N + 1,) int64 | crop i = JPEG bytes jpeg[off[i]:off[i+1]] (quality 95) |
| `landmarks` | (N, 68, 2) float32 | crop landmarks, (x, y) crop px |
| `embeddings` | (N, 128) float16 | dlib descriptor of the face in its photo |
| `person` | (N,) int32 | index into `people` |
| `people` | (P,) str | "<source folder>/<person folder>" |
| `paths` | (N,) str | photo path relative to its source root's parent |
| `source_side` | (N,) float32 | side of the crop square in photo px (< S: the crop was upsampled) |
| `is_gt` | (N,) bool | usable as ground truth (source_side >= min_gt_ratio * S) |
| `exemplar` | (N,) int32 | crop index of the chosen exemplar (same person, other photo); -1: none |
| `exemplar_distance` | (N,) float32 | its affine landmark distance |
| `split` | (N,) uint8 | 0 = train, 1 = validation (whole people, by a hash of the name) |
| `meta` | () str | JSON: size, quality, build settings |

At S = 128 a crop is ~6-9 KB as JPEG, so ~8.5k crops take ~60 MB instead of 400 MB raw.
"""
from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from albumfix.atomic import atomic_write_bytes
from albumfix.faces.analyzer import DetectedFace, FaceAnalyzer
from albumfix.faces.landmarks import mirror_landmarks
from albumfix.degrade import DegradationConfig, apply_degradation, apply_look, get_preset, sample_degradation

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
CACHE_VERSION = 1

@dataclass(frozen=True)
class SourcePhoto:
    """One photo of an identity folder. key: "<source>/<person>/<file>"; person: "<source>/<person>"."""

    path: Path
    key: str
    person: str


@dataclass
class PhotoAnalysis:
    """The main face of one photo, as the analyser saw it (landmarks None: no face found).

    landmarks: (68, 2) float32 photo px; embedding: (128,) float32 or None; box: (x0, y0, x1, y1).
    """

    key: str
    person: str
    landmarks: np.ndarray | None
    embedding: np.ndarray | None
    box: tuple[float, float, float, float] | None


@dataclass
class TrainingCache:
    """The loaded cache (see the module docstring for every field); crops decode on demand."""

    jpeg: np.ndarray
    jpeg_offsets: np.ndarray
    landmarks: np.ndarray
    embeddings: np.ndarray
    person: np.ndarray
    people: np.ndarray
    paths: np.ndarray
    source_side: np.ndarray
    is_gt: np.ndarray
    exemplar: np.ndarray
    exemplar_distance: np.ndarray
    split: np.ndarray
    meta: dict

    @property
    def size(self) -> int:
        """Crop side S in px."""
        return int(self.meta["size"])

    def __len__(self) -> int:
        return int(self.landmarks.shape[0])

    def crop(self, index: int) -> np.ndarray:
        """Crop `index` as (S, S, 3) uint8 RGB."""
        return decode_jpeg(self.jpeg, self.jpeg_offsets, index)

    def pairs(self, split: str) -> np.ndarray:
        """Indices of ground-truth crops of `split` ("train" or "val") that have an exemplar."""
        code = {"train": 0, "val": 1}[split]
        return np.flatnonzero(self.is_gt & (self.exemplar >= 0) & (self.split == code))


@dataclass(frozen=True)
class BuildReport:
    """What `build_dataset` made: counts, size on disk and time."""

    path: Path
    photos: int
    faces: int
    crops: int
    gt_crops: int
    train_pairs: int
    val_pairs: int
    people: int
    val_people: int
    bytes: int
    seconds: float


def list_photos(roots: Sequence[Path]) -> list[SourcePhoto]:
    """All photos under each ROOT/<person>/, sorted; a person is named "<ROOT name>/<folder>"."""
    photos: list[SourcePhoto] = []
    for root in roots:
        root = Path(root)
        for person_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for path in sorted(person_dir.iterdir()):
                if path.suffix.lower() in PHOTO_SUFFIXES:
                    person = f"{root.name}/{person_dir.name}"
                    photos.append(SourcePhoto(path=path, key=f"{person}/{path.name}", person=person))
    return photos


def main_face(faces: list[DetectedFace], width: int, height: int) -> DetectedFace | None:
    """The photo's subject among DetectedFace records: the largest face, with faces whose box
    misses the photo centre counted at a quarter of their area. None when `faces` is empty."""
    def weight(face: DetectedFace) -> float:
        x0, y0, x1, y1 = face.box
        inside = x0 <= width / 2 <= x1 and y0 <= height / 2 <= y1
        return (x1 - x0) * (y1 - y0) * (1.0 if inside else 0.25)
    return max(faces, key=weight, default=None)


def _analysis_to_json(a: PhotoAnalysis) -> str:
    return json.dumps({
        "key": a.key, "person": a.person,
        "landmarks": None if a.landmarks is None else np.round(a.landmarks, 3).tolist(),
        "embedding": None if a.embedding is None else np.round(a.embedding, 6).tolist(),
        "box": None if a.box is None else [round(float(v), 2) for v in a.box],
    })


def _analysis_from_json(line: str) -> PhotoAnalysis:
    d = json.loads(line)
    return PhotoAnalysis(
        key=d["key"], person=d["person"],
        landmarks=None if d["landmarks"] is None else np.asarray(d["landmarks"], np.float32),
        embedding=None if d["embedding"] is None else np.asarray(d["embedding"], np.float32),
        box=None if d["box"] is None else tuple(d["box"]))


def read_analysis_log(log_path: Path) -> dict[str, PhotoAnalysis]:
    """Analyses already in the JSONL log, by photo key; a torn last line (killed run) is skipped."""
    done: dict[str, PhotoAnalysis] = {}
    if not Path(log_path).exists():
        return done
    with open(log_path, encoding="utf-8") as fh:
        for line in fh:
            try:
                a = _analysis_from_json(line)
            except (json.JSONDecodeError, KeyError):
                continue
            done[a.key] = a
    return done


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB with EXIF orientation applied, via albumfix's own decoder."""
    from albumfix.album.imageio import decode

    return decode(path).rgb8()


def analyse_photos(photos: Sequence[SourcePhoto], log_path: Path, analyzer: FaceAnalyzer,
                   progress: Callable[[str], None] | None = None) -> dict[str, PhotoAnalysis]:
    """Analyse every photo not yet in `log_path` (appending one JSON line each, flushed), and
    return all analyses by key. analyzer: a FaceAnalyzer; its main face per photo is kept."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    done = read_analysis_log(log_path)
    todo = [p for p in photos if p.key not in done]
    start = time.monotonic()
    with open(log_path, "a", encoding="utf-8") as fh:
        for count, photo in enumerate(todo, 1):
            rgb = read_rgb(photo.path)
            face = main_face(analyzer.analyse(rgb), rgb.shape[1], rgb.shape[0])
            a = PhotoAnalysis(
                key=photo.key, person=photo.person,
                landmarks=None if face is None else np.asarray(face.landmarks, np.float32),
                embedding=None if face is None or face.embedding is None else np.asarray(face.embedding, np.float32),
                box=None if face is None else tuple(float(v) for v in face.box))
            fh.write(_analysis_to_json(a) + "\n")
            fh.flush()
            done[a.key] = a
            if progress and (count % 50 == 0 or count == len(todo)):
                rate = count / max(time.monotonic() - start, 1e-9)
                progress(f"analysed {count}/{len(todo)} new photos ({rate:.1f}/s)")
    return done


def person_split(person: str, val_fraction: float, salt: str = "albumfix-val") -> int:
    """1 (validation) for a deterministic `val_fraction` of people by a SHA-1 of the name, else 0."""
    digest = hashlib.sha1(f"{salt}:{person}".encode()).digest()
    return int(int.from_bytes(digest[:8], "big") / 2**64 < val_fraction)


def people_photos(roots: Sequence[Path], split: str = "train", val_fraction: float = 0.1) -> dict[str, list[Path]]:
    """Person name -> sorted photo paths, for the people of `split` ("train" | "val")."""
    by_person: dict[str, list[Path]] = {}
    for photo in list_photos([Path(r) for r in roots]):
        if person_split(photo.person, val_fraction) == (split == "val"):
            by_person.setdefault(photo.person, []).append(photo.path)
    return by_person


def album_people(by_person: dict[str, list[Path]], people: int | None) -> list[str]:
    """The people an album of `people` persons is built from: sorted names with 4+ photos."""
    return sorted(p for p, files in by_person.items() if len(files) >= 4)[:people]


def encode_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.reshape(-1)


@dataclass
class _Crops:
    """Parallel lists, one entry per aligned crop: photo key, person, JPEG bytes (uint8 array),
    crop landmarks (68, 2) float32, embedding (128,) float16, source square side in photo px."""

    keys: list[str]
    persons: list[str]
    jpegs: list[np.ndarray]
    landmarks: list[np.ndarray]
    embeddings: list[np.ndarray]
    sides: list[float]


def make_crops(photos: Sequence[SourcePhoto], analyses: dict[str, PhotoAnalysis], size: int,
               quality: int = 95) -> _Crops:
    """Aligned (S, S) crops (reflect border) of every analysed face, JPEG-encoded at `quality`."""
    from albumfix.faces.align import aligned_crop

    out = _Crops([], [], [], [], [], [])
    for photo in photos:
        a = analyses.get(photo.key)
        if a is None or a.landmarks is None or a.embedding is None:
            continue
        t, crop, crop_landmarks = aligned_crop(read_rgb(photo.path), a.landmarks, size)
        out.keys.append(photo.key)
        out.persons.append(photo.person)
        out.jpegs.append(encode_jpeg(crop, quality))
        out.landmarks.append(crop_landmarks)
        out.embeddings.append(a.embedding.astype(np.float16))
        out.sides.append(size / t.scale)
    return out


def choose_training_exemplars(keys: Sequence[str], landmarks: np.ndarray, embeddings: np.ndarray,
                              person: np.ndarray, candidate_ok: np.ndarray,
                              targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every crop in `targets` (bool (N,)), the exemplar albumfix's inference picks
    (`choose_exemplars`, default identity gate) among the same person's other crops with
    `candidate_ok`. keys: (N,) photo keys; landmarks (N, 68, 2) crop px; embeddings (N, 128).
    Returns (exemplar index (N,) int32, -1 = none; landmark distance (N,) float32, inf = none)."""
    from albumfix.people.exemplars import ExemplarFace, choose_exemplars

    faces = [ExemplarFace(face_id=k, photo_id=k, embedding=np.asarray(e, np.float32), landmarks=lm)
             for k, e, lm in zip(keys, embeddings, landmarks)]
    position = {k: i for i, k in enumerate(keys)}
    n = len(faces)
    exemplar = np.full(n, -1, np.int32)
    distance = np.full(n, np.inf, np.float32)
    for i in np.flatnonzero(targets):
        candidates = np.flatnonzero((person == person[i]) & candidate_ok)
        candidates = candidates[candidates != i]
        picks = choose_exemplars(faces[i], [faces[j] for j in candidates], k=1) if candidates.size else []
        if picks:
            exemplar[i] = position[picks[0].face_id]
            distance[i] = float(picks[0].distance)
    return exemplar, distance


def build_dataset(roots: Sequence[Path | str], out_path: Path | str, size: int = 128,
                  val_fraction: float = 0.1, min_gt_ratio: float = 1.0, min_ref_ratio: float = 0.75,
                  quality: int = 95, analyzer: str = "dlib", work_dir: Path | str | None = None,
                  progress: Callable[[str], None] | None = None) -> BuildReport:
    """Build the training cache `out_path` (.npz) from identity folders ROOT/<person>/*.jpg.

    size: crop side S; val_fraction: share of people held out (by name hash); a crop is ground
    truth when its source square is >= min_gt_ratio * S photo px, and an exemplar candidate when
    >= min_ref_ratio * S; quality: JPEG quality of stored crops; analyzer: create_analyzer name;
    work_dir: folder of the resumable analysis log `analysis-<analyzer>.jsonl` (default: beside
    out_path); photos are keyed "<root name>/<person>/<file>", so caches built from different
    subsets of the same roots share one log.
    """
    from albumfix.faces.backends import create_analyzer

    start = time.monotonic()
    say = progress or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out_path = Path(out_path)
    roots = [Path(r) for r in roots]
    log_path = Path(work_dir or out_path.parent) / f"analysis-{analyzer}.jsonl"
    photos = list_photos(roots)
    say(f"{len(photos)} photos of {len({p.person for p in photos})} people; analysis log {log_path}")
    analyses = analyse_photos(photos, log_path, create_analyzer(analyzer, analyzer, cnn_fallback=False), say)
    crops = make_crops(photos, analyses, size, quality)
    say(f"{len(crops.keys)} aligned crops at {size} px")
    people = sorted(set(crops.persons))
    person_index = {p: i for i, p in enumerate(people)}
    person = np.array([person_index[p] for p in crops.persons], np.int32)
    landmarks = np.stack(crops.landmarks)
    sides = np.asarray(crops.sides, np.float32)
    is_gt = sides >= min_gt_ratio * size
    exemplar, distance = choose_training_exemplars(
        crops.keys, landmarks, np.stack(crops.embeddings), person, sides >= min_ref_ratio * size, is_gt)
    split_of_person = np.array([person_split(p, val_fraction) for p in people], np.uint8)
    meta = {"version": CACHE_VERSION, "size": size, "quality": quality, "analyzer": analyzer,
            "val_fraction": val_fraction, "min_gt_ratio": min_gt_ratio, "min_ref_ratio": min_ref_ratio,
            "roots": [str(r) for r in roots]}
    jpeg, offsets = pack_jpegs(crops.jpegs)
    cache = TrainingCache(
        jpeg=jpeg, jpeg_offsets=offsets, landmarks=landmarks, embeddings=np.stack(crops.embeddings),
        person=person, people=np.array(people), paths=np.array(crops.keys), source_side=sides,
        is_gt=is_gt, exemplar=exemplar, exemplar_distance=distance, split=split_of_person[person], meta=meta)
    save_cache(cache, out_path)
    report = BuildReport(
        path=out_path, photos=len(photos), faces=sum(a.landmarks is not None for a in analyses.values()),
        crops=len(cache), gt_crops=int(cache.is_gt.sum()), train_pairs=len(cache.pairs("train")),
        val_pairs=len(cache.pairs("val")), people=len(people), val_people=int(split_of_person.sum()),
        bytes=out_path.stat().st_size, seconds=time.monotonic() - start)
    say(f"wrote {out_path} ({report.bytes / 1e6:.1f} MB): {report.crops} crops, {report.gt_crops} GT, "
        f"{report.train_pairs} train / {report.val_pairs} val pairs, {report.val_people} of {report.people} people held out")
    return report


def pack_jpegs(jpegs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate encoded JPEGs: -> (bytes (total,) uint8, offsets (N + 1,) int64); none gives
    empty bytes and offsets [0]."""
    offsets = np.concatenate([[0], np.cumsum([len(j) for j in jpegs])]).astype(np.int64)
    data = np.concatenate(jpegs) if len(jpegs) else np.zeros(0, np.uint8)
    return data.astype(np.uint8), offsets


def unpack_jpegs(data: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Inverse of `pack_jpegs`: the list of encoded images."""
    return [data[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def decode_jpeg(data: np.ndarray, offsets: np.ndarray, index: int) -> np.ndarray:
    """Image `index` of packed JPEGs (see `pack_jpegs`) as (S, S, 3) uint8 RGB."""
    return cv2.imdecode(data[offsets[index]:offsets[index + 1]], cv2.IMREAD_COLOR)[..., ::-1].copy()


def save_cache(cache: TrainingCache, path: Path | str) -> None:
    """Write `cache` as one .npz, atomically (temp file + rename)."""
    buffer = io.BytesIO()
    arrays = {f.name: getattr(cache, f.name) for f in fields(cache) if f.name != "meta"}
    np.savez(buffer, meta=np.array(json.dumps(cache.meta)), **arrays)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_cache(path: Path | str) -> TrainingCache:
    """Load a cache written by `build_dataset` (everything in memory; crops stay JPEG)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("version") != CACHE_VERSION:
        raise ValueError(f"{path}: cache version {meta.get('version')}, expected {CACHE_VERSION}; rebuild it")
    return TrainingCache(meta=meta, **arrays)


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly sampling of one training pair.

    degradation: preset name of the LQ degradation; flip_prob: mirror the whole triple;
    landmark_jitter: std in px (at S = 128, scaled with S) added to the LQ landmarks, as
    landmarks detected on a degraded photo are noisy; ref_degrade_prob: chance the exemplar gets
    the "light" degradation (album exemplars are not pristine either); pairs_share: chance a
    training item is a pair made the way inference sees it (`inference_pairs`, when the run has
    a pairs file) instead of a crop degraded on the fly; mild_share: chance a crop degraded on
    the fly gets the "mild" preset instead of `degradation` (nearly sharp inputs, which the
    restorer must leave nearly alone); wrong_ref_prob: chance the exemplar is replaced by a
    random training crop of another person, so the restorer learns to ignore an exemplar that
    does not fit; self_ref_prob: chance the exemplar is the input itself (how `restore` runs a
    face it has no exemplar for), so the same weights serve guided and unguided faces.
    """

    degradation: str = "default"
    mild_share: float = 0.0
    flip_prob: float = 0.5
    landmark_jitter: float = 1.0
    ref_degrade_prob: float = 0.3
    pairs_share: float = 0.5
    wrong_ref_prob: float = 0.0
    self_ref_prob: float = 0.0


@dataclass
class TrainingSample:
    """One pair. lq, ref, target: (S, S, 3) uint8 RGB; the target is the ground truth with the
    input's look (tone and fading, `apply_look`): the restorer restores detail and keeps the
    print's tone. lq_landmarks, ref_landmarks: (68, 2) float32 crop px; tone: the print tone of
    lq and target ("color", "gray", "sepia")."""

    lq: np.ndarray
    ref: np.ndarray
    target: np.ndarray
    lq_landmarks: np.ndarray
    ref_landmarks: np.ndarray
    tone: str


def _mirror(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal mirror of an (S, S, 3) crop and its (68, 2) landmarks (integer pixel centres)."""
    return np.ascontiguousarray(image[:, ::-1]), mirror_landmarks(landmarks, image.shape[1])


def make_sample(cache: TrainingCache, index: int, rng: np.random.Generator, augment: AugmentConfig,
                degradation: DegradationConfig | None = None) -> TrainingSample:
    """Build the training pair of GT crop `index` with its cached exemplar, drawing all randomness
    from `rng`. degradation overrides the preset named in `augment`."""
    cfg = degradation or get_preset(augment.degradation)
    gt = cache.crop(index)
    lm = cache.landmarks[index].astype(np.float32)
    ref_index = int(cache.exemplar[index])
    ref = cache.crop(ref_index)
    ref_lm = cache.landmarks[ref_index].astype(np.float32)
    if rng.random() < augment.flip_prob:
        gt, lm = _mirror(gt, lm)
        ref, ref_lm = _mirror(ref, ref_lm)
    d = sample_degradation(rng, cache.size, cfg)
    lq = apply_degradation(gt, d)
    ref = _maybe_degrade_ref(ref, rng, augment)
    lq_lm = lm + rng.normal(0.0, augment.landmark_jitter * cache.size / 128.0, lm.shape).astype(np.float32)
    return TrainingSample(lq=lq, ref=ref, target=apply_look(gt, d), lq_landmarks=lq_lm,
                          ref_landmarks=ref_lm, tone=d.tone)


def _maybe_degrade_ref(ref: np.ndarray, rng: np.random.Generator, augment: AugmentConfig) -> np.ndarray:
    """The exemplar crop, given the "light" degradation with chance augment.ref_degrade_prob."""
    if rng.random() < augment.ref_degrade_prob:
        return apply_degradation(ref, sample_degradation(rng, ref.shape[0], get_preset("light")))
    return ref


def augment_fixed_pair(sample: TrainingSample, rng: np.random.Generator, augment: AugmentConfig) -> TrainingSample:
    """A ready-made pair (input and target fixed, e.g. `inference_pairs`) augmented as
    `make_sample` augments: the whole triple mirrored, the exemplar maybe lightly degraded."""
    lq, lq_lm, target, ref, ref_lm = sample.lq, sample.lq_landmarks, sample.target, sample.ref, sample.ref_landmarks
    if rng.random() < augment.flip_prob:
        lq, lq_lm = _mirror(lq, lq_lm)
        ref, ref_lm = _mirror(ref, ref_lm)
        target = np.ascontiguousarray(target[:, ::-1])
    return TrainingSample(lq=lq, ref=_maybe_degrade_ref(ref, rng, augment), target=target, lq_landmarks=lq_lm,
                          ref_landmarks=ref_lm, tone=sample.tone)


class PairStream:
    """Map-style dataset over an endless, reproducible stream of training pairs.

    Item k is pair perm_e[k mod n] of epoch e = k // n, where perm_e is a permutation seeded by
    (seed, e), and its augmentation is seeded by (seed, e, k). So item k is the same whatever
    the DataLoader workers, and a resumed run continues the stream from k = step * batch_size.
    With `pairs` (an `inference_pairs.InferencePairs` of the same cache), item k is instead, with
    chance augment.pairs_share, a random one of the pairs made from the crops in `indices`.
    """

    def __init__(self, cache: TrainingCache, indices: np.ndarray, augment: AugmentConfig, seed: int,
                 pairs=None):
        if len(indices) == 0:
            raise ValueError("no training pairs (ground-truth crops with an exemplar) in this split")
        self.cache = cache
        self.indices = np.asarray(indices)
        self.augment = augment
        self.seed = seed
        self.degradation = get_preset(augment.degradation)
        self.mild = get_preset("mild")
        self.pairs = pairs
        self.fixed = np.zeros(0, np.int64) if pairs is None else np.flatnonzero(np.isin(pairs.base, self.indices))
        self._perm_epoch = -1
        self._perm = self.indices

    def __len__(self) -> int:
        return len(self.indices)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.indices)
            self._perm_epoch = epoch
        return self._perm

    def __getitem__(self, k: int) -> TrainingSample:
        epoch, position = divmod(int(k), len(self.indices))
        index = int(self._permutation(epoch)[position])
        rng = np.random.default_rng([self.seed, epoch, int(k)])
        if len(self.fixed) and self.augment.pairs_share > 0 and rng.random() < self.augment.pairs_share:
            fixed = int(self.fixed[rng.integers(len(self.fixed))])
            sample = augment_fixed_pair(self.pairs.sample(self.cache, fixed), rng, self.augment)
            return self._swap_exemplar(sample, int(self.pairs.base[fixed]), rng)
        mild = self.augment.mild_share > 0 and rng.random() < self.augment.mild_share
        sample = make_sample(self.cache, index, rng, self.augment, self.mild if mild else self.degradation)
        return self._swap_exemplar(sample, index, rng)

    def _swap_exemplar(self, sample: TrainingSample, index: int, rng: np.random.Generator) -> TrainingSample:
        """With augment.wrong_ref_prob another person's crop, with augment.self_ref_prob the input
        itself, becomes the exemplar (no draw at all when both are 0: older streams unchanged)."""
        wrong, own = self.augment.wrong_ref_prob, self.augment.self_ref_prob
        if wrong <= 0 and own <= 0:
            return sample
        u = rng.random()
        if u < wrong:
            others = self.indices[self.cache.person[self.indices] != self.cache.person[index]]
            other = int(others[rng.integers(len(others))])
            return replace(sample, ref=self.cache.crop(other), ref_landmarks=self.cache.landmarks[other].astype(np.float32))
        if u < wrong + own:
            return replace(sample, ref=sample.lq, ref_landmarks=sample.lq_landmarks)
        return sample


def evaluation_samples(cache: TrainingCache, split: str = "val", limit: int | None = None,
                       seed: int = 1234, degradation: str = "default") -> list[TrainingSample]:
    """Fixed evaluation pairs of `split`: no flips or jitter, the exemplar as chosen, the default
    degradation seeded per crop by (seed, crop index). The first `limit` pairs in crop order."""
    indices = cache.pairs(split)[:limit]
    augment = AugmentConfig(degradation=degradation, flip_prob=0.0, landmark_jitter=0.0, ref_degrade_prob=0.0)
    return [make_sample(cache, int(i), np.random.default_rng([seed, int(i)]), augment) for i in indices]


@dataclass
class Batch:
    """A collated batch. lq, ref, target: (B, 3, S, S) float32 in [-1, 1]; lq_landmarks,
    ref_landmarks: (B, 68, 2) float32 crop px."""

    lq: "torch.Tensor"  # noqa: F821
    ref: "torch.Tensor"  # noqa: F821
    target: "torch.Tensor"  # noqa: F821
    lq_landmarks: "torch.Tensor"  # noqa: F821
    ref_landmarks: "torch.Tensor"  # noqa: F821

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in
                       (self.lq, self.ref, self.target, self.lq_landmarks, self.ref_landmarks)))


def restore_samples(model, samples: Sequence[TrainingSample], guided: bool, device="cpu",
                    batch_size: int = 16) -> list[np.ndarray]:
    """(S, S, 3) uint8 restorations of TrainingSamples by `model`, without gradients, in batches;
    guided takes each sample's exemplar, unguided feeds the input as its own (as `restore` runs a
    face it has no exemplar for)."""
    import torch

    from albumfix.restore.tensors import tensor_to_images

    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            batch = collate(samples[start:start + batch_size]).to(device)
            ref, ref_lm = (batch.ref, batch.ref_landmarks) if guided else (batch.lq, batch.lq_landmarks)
            out.extend(tensor_to_images(model(batch.lq, ref, batch.lq_landmarks, ref_lm)))
    return out


def collate(samples: Sequence[TrainingSample]) -> Batch:
    """Stack TrainingSamples into a Batch of float32 tensors."""
    import torch

    from albumfix.restore.tensors import images_to_tensor

    return Batch(
        lq=images_to_tensor([s.lq for s in samples]),
        ref=images_to_tensor([s.ref for s in samples]),
        target=images_to_tensor([s.target for s in samples]),
        lq_landmarks=torch.from_numpy(np.stack([s.lq_landmarks for s in samples])),
        ref_landmarks=torch.from_numpy(np.stack([s.ref_landmarks for s in samples])),
    )
