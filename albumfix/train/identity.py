"""A degradation-robust identity embedder: dlib's network fine-tuned so that a damaged face lands
where the same face, sharp, lands.

Why: a blurred, faded or sepia face's dlib descriptor drifts away from its own person's sharp
photos, so grouping and the exemplar verification (`albumfix.people.verify`) fail on exactly the
faces that need a guide. The student starts as dlib's own network (`DlibResNet`, read from
`face_recognition_models`) and learns, by distillation from the frozen original (the teacher):

    loss = (1 - cos(S(damaged chip), T(clean chip)))  +  clean_weight * (1 - cos(S(clean chip), T(clean chip)))

The first term pulls a damaged face onto its own sharp descriptor; the second keeps sharp faces
where dlib puts them, so the grouping thresholds calibrated on dlib's space stay valid. A third,
contrastive term (weight `contrast_weight`) ranks: the damaged face's softmax over the teacher's
sharp descriptors of *every* training face (temperature `temperature`) must put its mass on its
own person's faces, so pulling damaged faces together never pulls different people together.

Data (`build_identity_set`): the photos of the training people of `../shared/data/faces`
(`person_split` 0), minus the people of the verification calibration album
(`calibration_people`), which are the validation set here. Each photo's main face is found by
albumfix's own dlib analysis on the clean photo; the whole photo is damaged `variants` times with
the training degradation family only (`sample_photo_damage(rng, "training")`: blur, downscale
x2-x8, noise, fading, gray or sepia, JPEG), so the album benchmark's aged-print and
web-thumbnail families stay unseen; the damaged chip is cut with the clean landmarks jittered
(the detector's landmarks on a damaged face are off by about that much). Chips are dlib's
150 x 150 aligned chips (`face_chips`).

The defaults of `IdentityTraining` are the shipped recipe (stem and first two stages tuned, lr 3e-5,
400 steps); what was measured to choose it is in docs/CALIBRATION.md, and the shipped weights'
model card is albumfix/weights/IDENTITY_MODEL_CARD.md.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from albumfix.degrade import apply_photo_damage, sample_photo_damage
from albumfix.faces.quality import eye_centres
from albumfix.train.dataset import album_people, main_face, people_photos

CALIBRATION_PEOPLE = 90  # build_albums(split="train", people=90): the verification calibration album
LANDMARK_JITTER = 0.02  # landmark noise, fraction of the inter-ocular distance (per point, plus a shift)


@dataclass
class IdentitySet:
    """clean: (N, 150, 150, 3) uint8 chips of the sharp photos; damaged: (N, V, 150, 150, 3)
    uint8 chips of V damaged copies; people: (N,) person names; validation: (N,) bool, the
    calibration people (never trained on)."""

    clean: np.ndarray
    damaged: np.ndarray
    people: np.ndarray
    validation: np.ndarray

    def save(self, path: Path) -> None:
        np.savez(path, clean=self.clean, damaged=self.damaged, people=self.people, validation=self.validation)

    @classmethod
    def load(cls, path: Path) -> "IdentitySet":
        with np.load(path) as data:
            return cls(data["clean"], data["damaged"], data["people"], data["validation"])


def calibration_people(by_person: dict[str, list[Path]]) -> set[str]:
    """The training people (`people_photos(roots, "train")`) of the verification calibration
    album, kept out of embedder training."""
    return set(album_people(by_person, CALIBRATION_PEOPLE))


def jitter_landmarks(landmarks: np.ndarray, rng: np.random.Generator, fraction: float = LANDMARK_JITTER) -> np.ndarray:
    """(68, 2) photo px -> the same with Gaussian noise of `fraction` x inter-ocular distance per
    point and once for the whole face (a shift)."""
    left, right = eye_centres(landmarks)
    iod = float(np.linalg.norm(right - left))
    sigma = fraction * max(iod, 1.0)
    return landmarks + rng.normal(0, sigma, landmarks.shape) + rng.normal(0, sigma, (1, 2))


def _photo_chips(task: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """(photo path, variants, seed) -> (clean chip (150, 150, 3), damaged chips (V, 150, 150, 3))
    or None when no face is found."""
    from albumfix.faces.backends.dlib_resnet import face_chips

    path, variants, seed = task
    analyzer = _worker_analyzer()
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    face = main_face(analyzer.analyse(rgb), rgb.shape[1], rgb.shape[0])
    if face is None:
        return None
    landmarks = np.asarray(face.landmarks, np.float64)
    rng = np.random.default_rng(seed)
    clean = face_chips(rgb, [landmarks])[0]
    damaged = []
    for _ in range(variants):
        photo, _truth = apply_photo_damage(rgb, sample_photo_damage(rng, "training"))
        damaged.append(face_chips(photo, [jitter_landmarks(landmarks, rng)])[0])
    return clean, np.stack(damaged)


_ANALYZER = None


def _worker_analyzer():
    """This worker process's dlib analyzer (one torch thread: the workers share the cores)."""
    global _ANALYZER
    if _ANALYZER is None:
        from albumfix.faces.backends import create_analyzer

        torch.set_num_threads(1)
        _ANALYZER = create_analyzer("dlib", "dlib", device="cpu")
    return _ANALYZER


def build_identity_set(roots: Sequence[Path], out: Path, variants: int = 3, jobs: int = 2, seed: int = 0,
                       say: Callable[[str], None] = print) -> IdentitySet:
    """Build (or load, when `out` exists) the distillation set of the module docstring."""
    out = Path(out)
    if out.exists():
        return IdentitySet.load(out)
    by_person = people_photos(roots, "train")
    held = calibration_people(by_person)
    tasks, owners = [], []
    for person in sorted(by_person):
        for path in by_person[person]:
            tasks.append((str(path), variants, seed * 1_000_003 + len(tasks)))
            owners.append(person)
    say(f"identity set: {len(tasks)} photos of {len(by_person)} training people "
        f"({len(held)} held for validation), {variants} damaged copies each")
    clean, damaged, people = [], [], []
    start = time.monotonic()
    with get_context("spawn").Pool(jobs) as pool:
        for i, (person, result) in enumerate(zip(owners, pool.imap(_photo_chips, tasks, chunksize=8))):
            if result is not None:
                clean.append(result[0])
                damaged.append(result[1])
                people.append(person)
            if (i + 1) % 500 == 0:
                say(f"  {i + 1}/{len(tasks)} photos, {len(clean)} faces, {time.monotonic() - start:.0f} s")
    people_arr = np.array(people)
    result = IdentitySet(np.stack(clean), np.stack(damaged), people_arr, np.isin(people_arr, sorted(held)))
    out.parent.mkdir(parents=True, exist_ok=True)
    result.save(out)
    return result


# ---------------------------------------------------------------- training
@dataclass
class IdentityTraining:
    """steps: optimiser steps; batch: damaged chips per step (plus batch // 2 clean ones);
    lr: AdamW peak learning rate (cosine decay to lr / 10 after `warmup` steps);
    clean_weight: weight of the clean-chip term (module docstring); contrast_weight, temperature:
    weight and softmax temperature of the gallery term (module docstring); eval_every: steps between
    validations (the best is kept: `train_robust_embedder`); threads: torch CPU threads;
    tuned_stages: the stem and this many residual stages learn, the later stages and the head
    stay dlib's (0-5; 5: the whole network).
    The defaults are the measured recipe (docs/CALIBRATION.md)."""

    steps: int = 400
    batch: int = 24
    lr: float = 3e-5
    warmup: int = 10
    clean_weight: float = 1.0
    contrast_weight: float = 0.2
    temperature: float = 0.1
    weight_decay: float = 0.0
    eval_every: int = 100
    threads: int = 2
    seed: int = 0
    tuned_stages: int = 2


def _descriptors(model: torch.nn.Module, chips: np.ndarray, batch: int = 64) -> torch.Tensor:
    """(N, 150, 150, 3) uint8 -> (N, 128) unit descriptors of `model` (no gradient)."""
    from albumfix.faces.backends.dlib_resnet import DESCRIPTOR_SIZE, chips_to_tensor

    out = []
    with torch.inference_mode():
        for start in range(0, len(chips), batch):
            out.append(torch.nn.functional.normalize(model(chips_to_tensor(chips[start:start + batch])), dim=1))
    return torch.cat(out) if out else torch.zeros((0, DESCRIPTOR_SIZE))


def retrieval(model: torch.nn.Module, data: IdentitySet, index: np.ndarray, teacher: torch.nn.Module) -> dict:
    """How well `model` finds the person of each damaged chip of the photos `index`, among the
    clean chips of the other photos of those people embedded by the teacher (as in an album:
    only degraded faces are embedded by the tuned network). Returns top-1 accuracy, the mean
    cosine distance of a damaged chip to its own clean chip, the clean chips' drift from the
    teacher (mean cosine distance), the share passing a 0.02 margin test with the right person
    and the coverage of the best margin threshold at 99.5 % precision."""
    gallery = _descriptors(teacher, data.clean[index]).numpy()
    clean_student = _descriptors(model, data.clean[index]).numpy()
    people = data.people[index]
    names = sorted(set(people))
    member = np.array(names)[:, None] == people[None, :]
    own, gaps, right = [], [], []
    for v in range(data.damaged.shape[1]):
        query = _descriptors(model, data.damaged[index, v]).numpy()
        dist = 1.0 - query @ gallery.T
        own.extend(np.diag(dist))
        np.fill_diagonal(dist, np.inf)  # the photo's own clean chip never counts
        per_person = np.stack([np.where(member[j][None, :], dist, np.inf).min(axis=1) for j in range(len(names))], 1)
        order = np.argsort(per_person, axis=1)
        best = np.array(names)[order[:, 0]]
        rows = np.arange(len(query))
        second = per_person[rows, order[:, 1]] if len(names) > 1 else np.full(len(query), np.inf)
        gaps.append(second - per_person[rows, order[:, 0]])
        right.append(best == people)
    gaps, right = np.concatenate(gaps), np.concatenate(right)
    return {"top1": float(right.mean()), "own_distance": float(np.mean(own)),
            "clean_drift": float(np.mean(1.0 - np.sum(clean_student * gallery, axis=1))),
            "margin_right": float((right & (gaps >= 0.02)).mean()),
            "coverage_at_995": coverage_at_precision(gaps, right, 0.995), "queries": len(right)}


def coverage_at_precision(gaps: np.ndarray, right: np.ndarray, precision: float) -> float:
    """The largest share of queries a margin threshold can accept while at least `precision` of
    the accepted have the right person. gaps: (Q,) margins (runner-up minus nearest); right:
    (Q,) bool, the nearest person is the true one. A scale-free figure of a margin rule."""
    order = np.argsort(-gaps, kind="stable")
    correct = np.cumsum(right[order])
    accepted = np.arange(1, len(order) + 1)
    ok = np.flatnonzero(correct >= precision * accepted)
    return float((ok.max() + 1) / len(order)) if len(ok) else 0.0


def train_robust_embedder(data: IdentitySet, out: Path, cfg: IdentityTraining = IdentityTraining(),
                          say: Callable[[str], None] = print) -> dict:
    """Fine-tune dlib's network on `data` (module docstring); write the best student (by
    validation top-1, ties by the smaller damaged-to-own-sharp distance) as fp16 safetensors to
    `out` with its training record in the metadata. Returns the record (steps, seconds,
    validation figures before and after)."""
    from safetensors.torch import save_file

    from albumfix.faces.backends.dlib_resnet import chips_to_tensor, load_dlib_resnet

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    teacher = load_dlib_resnet()
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    train_idx = np.flatnonzero(~data.validation)
    val_idx = np.flatnonzero(data.validation)
    say(f"{len(train_idx)} training faces, {len(val_idx)} validation faces, {data.damaged.shape[1]} damaged copies each")
    targets = {flip: _descriptors(teacher, data.clean[train_idx][:, :, ::-1] if flip else data.clean[train_idx])
               for flip in (False, True)}
    gallery = targets[False]  # (N, 128) the teacher's sharp descriptors of the training faces
    person_of = np.unique(data.people[train_idx], return_inverse=True)[1]
    before = retrieval(teacher, data, val_idx, teacher)
    say(f"validation before: {json.dumps(before)}")
    if cfg.tuned_stages < len(student.stages):  # the later stages and the head keep dlib's weights
        for module in (*student.stages[cfg.tuned_stages:], student.fc):
            module.requires_grad_(False)
    learning = [p for p in student.parameters() if p.requires_grad]
    decay = [p for p in learning if p.ndim > 1]
    rest = [p for p in learning if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * t)))

    best = {**before, "step": 0}
    best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    start, history = time.monotonic(), []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        pick = rng.integers(0, len(train_idx), cfg.batch)
        variant = rng.integers(0, data.damaged.shape[1], cfg.batch)
        flip = rng.random(cfg.batch) < 0.5
        chips = data.damaged[train_idx[pick], variant]
        chips = np.where(flip[:, None, None, None], chips[:, :, ::-1], chips)
        clean_pick = pick[: cfg.batch // 2]
        clean = data.clean[train_idx[clean_pick]]
        clean = np.where(flip[: len(clean_pick), None, None, None], clean[:, :, ::-1], clean)
        target = torch.where(torch.from_numpy(flip)[:, None], targets[True][pick], targets[False][pick])
        emb = torch.nn.functional.normalize(student(chips_to_tensor(np.concatenate([chips, clean]))), dim=1)
        damaged_loss = (1.0 - (emb[: cfg.batch] * target).sum(1)).mean()
        clean_loss = (1.0 - (emb[cfg.batch:] * target[: len(clean_pick)]).sum(1)).mean()
        loss = damaged_loss + cfg.clean_weight * clean_loss
        if cfg.contrast_weight:
            logits = emb[: cfg.batch] @ gallery.T / cfg.temperature  # (B, N) against every sharp face
            positive = torch.from_numpy(person_of[pick][:, None] == person_of[None, :])
            contrast = (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~positive, -torch.inf), 1)).mean()
            loss = loss + cfg.contrast_weight * contrast
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(learning, 1.0)
        opt.step()
        if (step + 1) % 25 == 0:
            say(f"step {step + 1}/{cfg.steps}: damaged {damaged_loss.item():.4f} clean {clean_loss.item():.4f} "
                f"({(time.monotonic() - start) / (step + 1):.2f} s/step)")
        if (step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps:
            student.eval()
            figures = retrieval(student, data, val_idx, teacher)
            student.train()
            figures["step"] = step + 1
            history.append(figures)
            say(f"validation at {step + 1}: {json.dumps(figures)}")
            if (figures["top1"], -figures["own_distance"]) > (best["top1"], -best["own_distance"]):
                best = {**figures}
                best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
    record = {"steps": cfg.steps, "best_step": best["step"], "seconds": round(time.monotonic() - start),
              "train_faces": int(len(train_idx)), "validation_faces": int(len(val_idx)),
              "before": before, "best": best, "history": history, "config": cfg.__dict__}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.to(torch.float16).contiguous() if v.is_floating_point() and k != "channel_means" else v.contiguous()
               for k, v in best_state.items()}
    save_file(tensors, str(out), metadata={"format": "albumfix-identity", "record": json.dumps(record)})
    return record
