"""The degradation-robust identity embedder (albumfix.train.identity): its chip set keeps the
calibration people out of training, distillation pulls a damaged face onto its sharp
descriptor, and the weights it writes load into the embedder the scan uses."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import SAMPLE_ALBUM


def _sample_rgb(name: str) -> np.ndarray:
    return np.asarray(ImageOps.exif_transpose(Image.open(SAMPLE_ALBUM / "2009" / f"{name}.jpg")).convert("RGB"))


@pytest.fixture(scope="module")
def identity_root(tmp_path_factory):
    """ROOT/<person>/*.jpg: a training person with 4 photos (so in the calibration album) and
    one with 2 (trained on); both names fall in the training split."""
    from albumfix.train.dataset import person_split

    root = tmp_path_factory.mktemp("identity") / "faces"
    for person, count in (("obama", 4), ("obama-twin", 2)):
        assert person_split(f"faces/{person}", 0.1) == 0
        folder = root / person
        folder.mkdir(parents=True)
        for k in range(count):
            image = Image.fromarray(_sample_rgb(("oval office", "podium")[k % 2]))
            (ImageOps.mirror(image) if k >= 2 else image).save(folder / f"{k}.jpg", quality=95)
    return root


def test_identity_set_holds_the_calibration_people_out_of_training(identity_root, tmp_path):
    from albumfix.train.dataset import people_photos
    from albumfix.train.identity import build_identity_set, calibration_people

    assert calibration_people(people_photos([identity_root], "train")) == {"faces/obama"}
    data = build_identity_set([identity_root], tmp_path / "set.npz", variants=2, jobs=1, say=lambda _m: None)
    assert data.clean.shape == (6, 150, 150, 3) and data.damaged.shape == (6, 2, 150, 150, 3)
    assert data.validation.tolist() == [p == "faces/obama" for p in data.people]
    assert not np.array_equal(data.damaged[0, 0], data.clean[0])  # damaged, not a copy
    again = build_identity_set([identity_root], tmp_path / "set.npz", say=lambda _m: None)  # reused
    assert np.array_equal(again.damaged, data.damaged)


def _tiny_set():
    """Two people's chips (a sharp chip and a damaged copy each) and the first face's (sharp
    photo, damaged photo, (68, 2) landmarks)."""
    from albumfix.degrade import apply_photo_damage, sample_photo_damage
    from albumfix.faces.backends import create_analyzer
    from albumfix.faces.backends.dlib_resnet import face_chips
    from albumfix.train.identity import IdentitySet

    analyzer = create_analyzer("dlib", "dlib", device="cpu")
    clean, damaged, photos = [], [], []
    for k, name in enumerate(("oval office", "podium")):
        rgb = _sample_rgb(name)
        face = max(analyzer.analyse(rgb), key=lambda f: (f.box[2] - f.box[0]))
        worse, _ = apply_photo_damage(rgb, sample_photo_damage(np.random.default_rng(k), "web-thumbnail"))
        clean.append(face_chips(rgb, [face.landmarks])[0])
        damaged.append(face_chips(worse, [face.landmarks]))
        photos.append((rgb, worse, face.landmarks))
    # face "a" is trained on and also validated (so validation sees the training work), "b" is not
    data = IdentitySet(np.stack([clean[0], *clean]), np.stack([damaged[0], *damaged]),
                       np.array(["a", "a", "b"]), np.array([False, True, True]))
    return data, photos[0]


def test_distillation_pulls_the_damaged_face_onto_its_sharp_descriptor(tmp_path, monkeypatch):
    from albumfix.faces.backends import unit_rows
    from albumfix.faces.backends.dlib_resnet import TorchDlibEmbedder, embed_chips, face_chips
    from albumfix.train.identity import IdentityTraining, train_robust_embedder

    data, (sharp, damaged, landmarks) = _tiny_set()
    out = tmp_path / "id.safetensors"
    record = train_robust_embedder(data, out, IdentityTraining(steps=12, batch=2, lr=2e-4, warmup=1, eval_every=4),
                                   say=lambda _m: None)
    assert record["steps"] == 12 and record["train_faces"] == 1 and record["validation_faces"] == 2
    assert len(record["history"]) == 3

    target = unit_rows(embed_chips(data.clean[:1]))
    before = 1 - float((unit_rows(embed_chips(data.damaged[0])) * target).sum())
    after = 1 - float((unit_rows(embed_chips(data.damaged[0], weights=out)) * target).sum())
    assert after < 0.5 * before, (before, after)
    # the scan's embedder: the tuned network for a degraded face, dlib's own for a sharp one
    from albumfix.faces.backends import create_analyzer
    from albumfix.faces.quality import is_degraded

    assert not is_degraded(sharp, landmarks) and is_degraded(damaged, landmarks)
    embedder = TorchDlibEmbedder(degraded_weights=out)
    box = [(0.0, 0.0, 1.0, 1.0)]
    for rgb, weights in ((sharp, None), (damaged, out)):
        chip = face_chips(rgb, [landmarks])
        vector = embedder.embed(rgb, box, [landmarks])[0]
        assert np.allclose(vector, unit_rows(embed_chips(chip, weights=weights))[0], atol=1e-6)

    # the scan uses identity weights found in the user's models folder
    models = tmp_path / "home" / "models"
    models.mkdir(parents=True)
    (models / "albumfix-id-robust.safetensors").write_bytes(out.read_bytes())
    monkeypatch.setenv("ALBUMFIX_HOME", str(tmp_path / "home"))
    assert create_analyzer("dlib", "dlib").embedding_part.degraded_weights == models / "albumfix-id-robust.safetensors"


def test_identity_weights_of_another_kind_are_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    from albumfix.faces.analyzer import BackendUnavailable
    from albumfix.faces.backends.dlib_resnet import read_robust_weights

    with pytest.raises(BackendUnavailable, match="not found"):
        read_robust_weights(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "albumfix"})
    with pytest.raises(BackendUnavailable, match="not an albumfix identity"):
        read_robust_weights(other)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BackendUnavailable, match="unreadable"):
        read_robust_weights(tmp_path / "junk.safetensors")



def test_only_the_tuned_stages_learn(tmp_path):
    import torch

    from albumfix.faces.backends.dlib_resnet import load_dlib_resnet, read_robust_weights
    from albumfix.train.identity import IdentityTraining, train_robust_embedder

    data, _ = _tiny_set()
    out = tmp_path / "id.safetensors"
    cfg = IdentityTraining(steps=8, batch=2, lr=2e-4, warmup=1, eval_every=8, tuned_stages=1)
    record = train_robust_embedder(data, out, cfg, say=lambda _m: None)
    assert record["best_step"] == 8, record  # the trained student was kept, not dlib's own
    assert record["best"]["own_distance"] < record["before"]["own_distance"]
    tuned = read_robust_weights(out)
    dlib = {k: v.half().float() for k, v in load_dlib_resnet().named_parameters()}  # stored as fp16
    changed = {".".join(k.split(".")[:2 if k.startswith("stages") else 1])
               for k in dlib if not torch.equal(tuned[k], dlib[k])}
    assert changed == {"stem", "stages.0"}, changed


def test_the_shipped_identity_network_brings_damaged_faces_nearer_their_sharp_descriptor(tmp_path, monkeypatch):
    """The scan's default: the shipped fine-tuned network (no user copy) embeds damaged faces
    of the sample album nearer the sharp photo's dlib descriptor than dlib's own network does."""
    from albumfix.degrade import apply_photo_damage, sample_photo_damage
    from albumfix.faces.backends import create_analyzer, identity_weights_path, unit_rows
    from albumfix.faces.backends.dlib_resnet import embed_chips, face_chips
    from albumfix.paths import SHIPPED_MODELS_DIR

    monkeypatch.setenv("ALBUMFIX_HOME", str(tmp_path / "home"))
    shipped = identity_weights_path()
    assert shipped == SHIPPED_MODELS_DIR / "albumfix-id-robust.safetensors"
    analyzer = create_analyzer("dlib", "dlib", device="cpu")
    assert analyzer.embedding_part.degraded_weights == shipped

    gains = []
    for name in ("oval office", "podium"):
        rgb = _sample_rgb(name)
        face = max(analyzer.analyse(rgb), key=lambda f: (f.box[2] - f.box[0]))
        sharp = unit_rows(embed_chips(face_chips(rgb, [face.landmarks])))
        for seed in range(4):
            worse, _ = apply_photo_damage(rgb, sample_photo_damage(np.random.default_rng(seed), "training"))
            chip = face_chips(worse, [face.landmarks])
            dlib_d = 1 - float((unit_rows(embed_chips(chip)) @ sharp[0])[0])
            tuned_d = 1 - float((unit_rows(embed_chips(chip, weights=shipped)) @ sharp[0])[0])
            gains.append(dlib_d - tuned_d)
    assert np.mean(gains) > 0 and np.mean(np.array(gains) > 0) >= 0.5, gains


def test_a_sharp_faces_resolution_ladder_meets_its_damaged_copies(tmp_path, monkeypatch):
    """The scan stores, for each sharp face, the shipped network's descriptors of it seen at lower
    resolutions (unit rows, one per LADDER_SCALES; none for a degraded face). Damaged copies of
    the sample album's faces, embedded as the scan embeds degraded faces, lie nearer the nearest
    rung of their own ladder than their own sharp descriptor, in every damage family."""
    from albumfix.degrade import PHOTO_FAMILIES, apply_photo_damage, sample_photo_damage
    from albumfix.faces.backends import create_analyzer, identity_weights_path, unit_rows
    from albumfix.faces.backends.dlib_resnet import LADDER_SCALES, embed_chips, face_chips
    from albumfix.faces.quality import is_degraded

    monkeypatch.setenv("ALBUMFIX_HOME", str(tmp_path / "home"))
    analyzer = create_analyzer("dlib", "dlib", device="cpu")
    gains = {family: [] for family in PHOTO_FAMILIES}
    for name in ("oval office", "podium"):
        rgb = _sample_rgb(name)
        face = max(analyzer.analyse(rgb), key=lambda f: (f.box[2] - f.box[0]))
        assert face.ladder.shape == (len(LADDER_SCALES), 128) and face.ladder.dtype == np.float32
        assert np.allclose(np.linalg.norm(face.ladder, axis=1), 1.0, atol=1e-5)
        for seed, family in enumerate(PHOTO_FAMILIES * 2):
            worse, _ = apply_photo_damage(rgb, sample_photo_damage(np.random.default_rng(seed), family))
            if not is_degraded(worse, face.landmarks):
                continue
            query = unit_rows(embed_chips(face_chips(worse, [face.landmarks]), weights=identity_weights_path()))[0]
            gains[family].append((1 - float(face.embedding @ query)) - (1 - float(np.max(face.ladder @ query))))
        damaged = apply_photo_damage(rgb, sample_photo_damage(np.random.default_rng(0), "web-thumbnail"))[0]
        assert all(f.ladder is None for f in analyzer.analyse(damaged) if is_degraded(damaged, f.landmarks))
    assert all(len(g) >= 2 and np.mean(g) > 0 for g in gains.values()), gains
