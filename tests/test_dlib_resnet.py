"""The torch port of dlib's face recognition ResNet against dlib itself: albumfix's parser on the
real model file and on bytes from dlib's own serialiser, descriptors of real sample_album faces
and of generated chips against dlib's compute_face_descriptor, batching, gradients, embedder.

Measured here (dlib 20.0, torch 2.13 CPU): max abs descriptor difference to dlib 3.3e-7 on the 5
faces of the sample album, at most 4.4e-7 on the generated chips except the all-black one
(1.8e-6); descriptor values up to about 0.4, lengths about 1.4. Tolerance 1e-5.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from albumfix.album.imageio import decode
from albumfix.faces.backends import dlib_resnet
from albumfix.faces.backends.dlib_backend import DlibModels, face_shapes
from albumfix.faces.backends.dlib_resnet import (
    AddPrev,
    Affine,
    Conv,
    DlibResNet,
    DlibStream,
    FullyConnected,
    Pool,
    Relu,
    TorchDlibEmbedder,
    default_model_path,
    embed_chips,
    face_chips,
    load_dlib_resnet,
    pad_add,
    parse_dlib_net,
    read_dlib_net,
)
from conftest import SAMPLE_ALBUM

TOLERANCE = 1e-5  # measured: at most 1.8e-6
PHOTOS = ("1975/group.png", "1998/old print.jpg", "2009/oval office.jpg", "2009/podium.jpg")


@pytest.fixture(scope="module")
def net():
    return read_dlib_net()


@pytest.fixture(scope="module")
def dlib_models():
    return DlibModels.load()


@pytest.fixture(scope="module")
def album_faces(dlib_models):
    """[(rgb, boxes, landmarks)] of the sample photos with faces, dlib's HOG boxes and 68 points."""
    detector, landmarker = dlib_models.detector(cnn_fallback=False), dlib_models.landmarker()
    found = []
    for name in PHOTOS:
        rgb = decode(SAMPLE_ALBUM / name).rgb8()
        boxes = detector.detect(rgb)
        found.append((rgb, boxes, landmarker.landmarks(rgb, boxes)))
    return found


@pytest.fixture(scope="module")
def generated_chips(album_faces) -> np.ndarray:
    """(6, 150, 150, 3) uint8: noise, black, white, a colour ramp, a real chip mirrored and
    brightened, the same chip with a dark band."""
    rng = np.random.default_rng(11)
    ramp = np.linspace(0, 255, 150, dtype=np.float32)
    colour_ramp = np.stack([ramp[None, :].repeat(150, 0), ramp[:, None].repeat(150, 1),
                            255 - ramp[None, :].repeat(150, 0)], axis=-1)
    rgb, _, landmarks = album_faces[3]
    real = face_chips(rgb, landmarks)[0]
    banded = real.copy()
    banded[60:80] //= 4
    chips = [rng.integers(0, 256, (150, 150, 3)), np.zeros((150, 150, 3)), np.full((150, 150, 3), 255),
             colour_ramp, np.clip(real[:, ::-1].astype(np.int32) + 40, 0, 255), banded]
    return np.stack([np.asarray(c, dtype=np.uint8) for c in chips])


def dlib_descriptors_of_chips(dlib_models, chips: np.ndarray) -> np.ndarray:
    """dlib's descriptors of (N, 150, 150, 3) uint8 aligned chips -> (N, 128) float64."""
    return np.array([np.array(v) for v in dlib_models.resnet().compute_face_descriptor(list(chips))])


def dlib_descriptors_of_photo(dlib_models, rgb, boxes, landmarks) -> np.ndarray:
    """dlib's descriptors of the faces of a photo (dlib aligns the chips itself) -> (N, 128)."""
    shapes = face_shapes([b.box for b in boxes], landmarks)
    return np.array([np.array(v) for v in dlib_models.resnet().compute_face_descriptor(rgb, shapes)])


# ------------------------------------------------------------------ the parser
def test_primitive_reads_decode_dlibs_own_serialiser():
    import dlib

    values = [0.04, -1.5, 3e-9, 0.0, 1e30, -123456.789]
    stream = DlibStream(dlib.vector(values).__getstate__()[0])  # a column matrix<double>
    assert (stream.integer(), stream.integer()) == (-len(values), -1)  # -rows, -columns
    assert [stream.real() for _ in values] == values
    assert stream.at_end()
    stream = DlibStream(dlib.rectangle(-5, 3, 300, 70000).__getstate__()[0])
    assert [stream.integer() for _ in range(4)] == [-5, 3, 300, 70000]
    assert stream.at_end()


def test_parser_reads_108_layer_records_and_5_6_million_parameters(net):
    kinds = [type(layer) for layer in net.layers]
    assert len(net.layers) == 108
    assert {k: kinds.count(k) for k in set(kinds)} == {
        Conv: 29, Affine: 29, Relu: 29, AddPrev: 14, Pool: 6, FullyConnected: 1}
    assert net.parameter_count() == 5_614_592
    assert len(net.nesting) == 130 and net.nesting.count(1) == 22  # + 10 tags, 4 x (2 tags, skip)
    pools = [layer for layer in net.layers if isinstance(layer, Pool)]
    assert [(p.kind, p.window, p.stride, p.padding) for p in pools] == (
        [("max", (3, 3), (2, 2), (0, 0))] + [("avg", (2, 2), (2, 2), (0, 0))] * 4
        + [("avg", (0, 0), (1, 1), (0, 0))])
    stem, fc = net.layers[0], net.layers[-1]
    assert stem.weight.shape == (32, 3, 7, 7) and stem.stride == (2, 2) and stem.padding == (0, 0)
    assert fc.weight.shape == (128, 256)
    assert net.input_size == (150, 150)
    assert np.allclose(net.channel_means, (122.782, 117.001, 104.298), atol=1e-4)
    assert np.isclose(net.margin, 0.04) and np.isclose(net.distance_threshold, 0.6)


def test_truncated_extended_or_foreign_files_are_refused(tmp_path):
    data = default_model_path().read_bytes()
    with pytest.raises(ValueError, match="more bytes"):
        parse_dlib_net(data[:-1])
    with pytest.raises(ValueError, match="1 bytes left"):
        parse_dlib_net(data + b"\x00")
    with open(default_model_path().with_name("shape_predictor_5_face_landmarks.dat"), "rb") as f:
        with pytest.raises(ValueError):
            parse_dlib_net(f.read(4096))
    patched = bytearray(data)
    patched[data.index(b"con_4")] = ord("C")  # "Con_4": a layer type the parser does not know
    with pytest.raises(ValueError, match="unsupported layer 'Con_4'"):
        parse_dlib_net(bytes(patched))


def test_records_that_do_not_form_dlibs_resnet_are_refused(net):
    nesting = list(net.nesting)
    tag = nesting.index(1)
    nesting[tag - 1], nesting[tag] = 1, 2  # the first skip one layer further out
    with pytest.raises(ValueError, match="tag and skip"):
        DlibResNet(replace(net, nesting=tuple(nesting)))
    without_a_relu = net.layers[:6] + net.layers[7:]
    with pytest.raises(ValueError, match="not a residual block"):
        DlibResNet(replace(net, layers=without_a_relu))


# ------------------------------------------------------------------ the module against dlib
def test_residual_add_zero_pads_channels_rows_and_columns():
    small = torch.arange(8.0).view(1, 2, 2, 2)
    big = torch.ones(1, 3, 3, 3)
    expected = torch.ones(1, 3, 3, 3)
    expected[:, :2, :2, :2] += small
    assert torch.equal(pad_add(small, big), expected) and torch.equal(pad_add(big, small), expected)


def test_descriptors_equal_dlib_on_real_album_faces(dlib_models, album_faces):
    ours, theirs = [], []
    for rgb, boxes, landmarks in album_faces:
        ours.append(embed_chips(face_chips(rgb, landmarks)))
        theirs.append(dlib_descriptors_of_photo(dlib_models, rgb, boxes, landmarks))
    ours, theirs = np.concatenate(ours), np.concatenate(theirs)
    assert ours.shape == (5, 128) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() <= TOLERANCE
    assert np.all(np.abs(np.linalg.norm(ours, axis=1) - 1.4) < 0.2)  # raw, not unit length


def test_descriptors_equal_dlib_on_generated_chips(dlib_models, generated_chips):
    ours = embed_chips(generated_chips, batch_size=4)
    theirs = dlib_descriptors_of_chips(dlib_models, generated_chips)
    assert np.abs(ours - theirs).max() <= TOLERANCE
    pairwise = np.linalg.norm(ours[:, None] - ours[None], axis=-1)
    assert pairwise[np.triu_indices(len(ours), 1)].min() > 0.05  # six different descriptors


def test_cropping_instead_of_padding_the_residual_add_misses_dlib(dlib_models, generated_chips, monkeypatch):
    def cropping_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        rows, cols = min(a.shape[2], b.shape[2]), min(a.shape[3], b.shape[3])
        return pad_add(a[:, :, :rows, :cols], b[:, :, :rows, :cols])

    monkeypatch.setattr(dlib_resnet, "pad_add", cropping_add)
    chips = generated_chips[4:]
    assert np.abs(embed_chips(chips) - dlib_descriptors_of_chips(dlib_models, chips)).max() > 100 * TOLERANCE


def test_a_batch_equals_its_chips_one_by_one(generated_chips):
    batched = embed_chips(generated_chips, batch_size=len(generated_chips))
    single = np.concatenate([embed_chips(chip[None]) for chip in generated_chips])
    assert np.abs(batched - single).max() <= 1e-6


def test_gradients_flow_to_the_chips_and_features_come_per_stage(generated_chips):
    model = load_dlib_resnet()
    chips = torch.from_numpy(generated_chips[3:]).permute(0, 3, 1, 2).float().requires_grad_(True)
    descriptor, features = model(chips, return_features=True)
    assert descriptor.shape == (3, 128) and descriptor.dtype == torch.float32
    assert [tuple(f.shape[1:]) for f in features] == [
        (32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4), (256, 2, 2)]
    (descriptor.square().sum() + sum(f.mean() for f in features)).backward()
    assert torch.isfinite(chips.grad).all()
    assert (chips.grad.flatten(1).abs().sum(1) > 0).all()
    assert all(p.grad is None for p in model.parameters())  # the shared module stays frozen
    assert sum(p.numel() for p in model.parameters()) == 5_614_592


def test_wrong_chip_shapes_are_refused():
    with pytest.raises(ValueError, match="150"):
        load_dlib_resnet()(torch.zeros(1, 3, 160, 160))
    with pytest.raises(ValueError, match="uint8"):
        embed_chips(np.zeros((1, 150, 150, 3), dtype=np.float32))


# ------------------------------------------------------------------ the embedder
def test_torch_embedder_gives_dlib_embedders_unit_vectors(dlib_models, album_faces):
    rgb, boxes, landmarks = album_faces[0]
    torch_embedder, dlib_embedder = TorchDlibEmbedder(batch_size=1), dlib_models.embedder()
    ours, theirs = torch_embedder.embed(rgb, boxes, landmarks), dlib_embedder.embed(rgb, boxes, landmarks)
    assert torch_embedder.name == dlib_embedder.name == "dlib"
    assert len(ours) == len(boxes) == 2 and all(v.shape == (128,) and v.dtype == np.float32 for v in ours)
    assert np.abs(np.array(ours) - np.array(theirs)).max() <= TOLERANCE
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    assert torch_embedder.embed(rgb, [], []) == []


def test_embedding_several_photos_in_one_batch_equals_one_photo_at_a_time(album_faces):
    """The scan embeds the faces of several photos together: the same vectors as photo by photo
    (to float rounding), and the sharp faces' resolution ladders only with a degraded-face network."""
    from albumfix.faces.backends import identity_weights_path
    from albumfix.faces.backends.dlib_resnet import LADDER_SCALES

    for embedder in (TorchDlibEmbedder(), TorchDlibEmbedder(degraded_weights=identity_weights_path())):
        together = embedder.embed_many(album_faces)
        assert [len(v) for v, _ in together] == [len(b) for _, b, _ in album_faces]
        for (rgb, boxes, landmarks), (vectors, ladders) in zip(album_faces, together):
            (alone, alone_ladders), = embedder.embed_many([(rgb, boxes, landmarks)])
            assert np.abs(np.array(vectors) - np.array(alone)).max() <= TOLERANCE
            for a, b in zip(ladders, alone_ladders):
                assert (a is None) == (b is None) and (a is None or np.abs(a - b).max() <= TOLERANCE)
        ladders = [r for _, rs in together for r in rs]
        if embedder.degraded_weights is None:
            assert all(r is None for r in ladders)
        else:
            assert any(r is not None and r.shape == (len(LADDER_SCALES), 128) for r in ladders)
    assert TorchDlibEmbedder().embed_many([]) == []


def test_the_callers_judgement_of_degraded_faces_picks_the_network(album_faces):
    """The scan passes the degraded flags it computed with the face's quality: a face flagged
    degraded is embedded by the degraded-face network without a ladder, one flagged sharp by
    dlib's with its ladder, whatever the embedder would have judged; flags must match the faces."""
    from albumfix.faces.backends import identity_weights_path
    from albumfix.faces.quality import is_degraded

    rgb, boxes, landmarks = album_faces[0]
    embedder = TorchDlibEmbedder(degraded_weights=identity_weights_path())
    judged = [is_degraded(rgb, lm) for lm in landmarks]
    (own_vectors, own_ladders), = embedder.embed_many([(rgb, boxes, landmarks)])
    (same_vectors, _), = embedder.embed_many([(rgb, boxes, landmarks)], [judged])
    assert np.abs(np.array(own_vectors) - np.array(same_vectors)).max() <= TOLERANCE
    flipped = [not d for d in judged]
    (vectors, ladders), = embedder.embed_many([(rgb, boxes, landmarks)], [flipped])
    plain = TorchDlibEmbedder().embed(rgb, boxes, landmarks)
    for k, d in enumerate(flipped):
        assert (ladders[k] is None) == d and (own_ladders[k] is None) == judged[k]
        if not d:
            assert np.abs(vectors[k] - plain[k]).max() <= TOLERANCE
        else:
            assert np.abs(vectors[k] - plain[k]).max() > 1e-3  # the tuned network moved it
    with pytest.raises(ValueError, match="flags"):
        embedder.embed_many([(rgb, boxes, landmarks)], [flipped[:1]])
