"""The identity judge of the benchmarks: the frozen-graph reader and the FaceNet judge."""
from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from albumfix.train.judge import MARGIN, SIZE, FaceNetJudge, judge_crop
from albumfix.train.tf_graph import TFGraph, read_graph

DATA = Path(__file__).parent / "data" / "judge"


# --- a tiny protobuf writer for hand-made graphs ------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _tensor_attr(array: np.ndarray) -> bytes:
    dtype = {np.dtype(np.float32): 1, np.dtype(np.int32): 3}[array.dtype]
    shape = b"".join(_bytes(2, _int(1, d)) for d in array.shape)
    return _bytes(8, _int(1, dtype) + _bytes(2, shape) + _bytes(4, array.tobytes()))


def _list_attr(ints: list[int]) -> bytes:
    return _bytes(1, _bytes(3, b"".join(_varint(i) for i in ints)))


def _node(name: str, op: str, inputs: list[str], **attrs: bytes) -> bytes:
    msg = _bytes(1, name.encode()) + _bytes(2, op.encode()) + b"".join(_bytes(3, i.encode()) for i in inputs)
    return _bytes(1, msg + b"".join(_bytes(5, _bytes(1, k.encode()) + _bytes(2, v)) for k, v in attrs.items()))


def _const(name: str, array: np.ndarray) -> bytes:
    return _node(name, "Const", [], value=_tensor_attr(array))


def _same_conv_nhwc(x: np.ndarray, w: np.ndarray, stride: int) -> np.ndarray:
    """Direct NHWC convolution with TensorFlow's SAME padding (extra pixel after), by loops."""
    n, h, wd, _ = x.shape
    kh, kw, _, co = w.shape
    oh, ow = -(-h // stride), -(-wd // stride)
    ph = max((oh - 1) * stride + kh - h, 0) // 2
    pw = max((ow - 1) * stride + kw - wd, 0) // 2
    out = np.zeros((n, oh, ow, co), np.float64)
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    y, xx = i * stride + a - ph, j * stride + b - pw
                    if 0 <= y < h and 0 <= xx < wd:
                        out[:, i, j] += x[:, y, xx] @ w[a, b]
    return out


def test_graph_reader_runs_a_hand_made_nhwc_graph_like_tensorflow(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    bias = rng.normal(size=4).astype(np.float32)
    fc = rng.normal(size=(2 * 2 * 8, 3)).astype(np.float32)
    graph = b"".join([
        _node("input", "Placeholder", []),
        _const("w", w), _const("bias", bias), _const("fc", fc), _const("scale", np.array(0.5, np.float32)),
        _const("axis", np.array(3, np.int32)), _const("shape", np.array([1, -1], np.int32)),
        _node("conv", "Conv2D", ["input:0", "w"], strides=_list_attr([1, 2, 2, 1]), padding=_bytes(2, b"SAME"),
              data_format=_bytes(2, b"NHWC")),
        _node("biased", "BiasAdd", ["conv", "bias"]),
        _node("relu", "Relu", ["biased"]),
        _node("half", "Mul", ["scale", "relu"]),
        _node("both", "ConcatV2", ["relu", "half", "axis"]),
        _node("pool", "MaxPool", ["both"], ksize=_list_attr([1, 2, 2, 1]), strides=_list_attr([1, 2, 2, 1]),
              padding=_bytes(2, b"VALID")),
        _node("flat", "Reshape", ["pool", "shape"]),
        _node("out", "MatMul", ["flat", "fc"]),
    ])
    path = tmp_path / "g.pb"
    path.write_bytes(graph)
    x = rng.normal(size=(2, 7, 8, 2)).astype(np.float32)  # odd height: SAME pads one row more at the bottom

    net = TFGraph(read_graph(path))
    got = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()

    relu = np.maximum(_same_conv_nhwc(x, w, 2) + bias, 0)  # (2, 4, 4, 4)
    both = np.concatenate([relu, 0.5 * relu], axis=3)
    pool = both.reshape(2, 2, 2, 2, 2, 8).max(axis=(2, 4))  # (2, 2, 2, 8), NHWC flatten order below
    want = pool.reshape(2, -1) @ fc
    assert got.shape == (2, 3)
    assert np.abs(got - want).max() < 1e-4


def test_graph_reader_refuses_an_op_it_cannot_run(tmp_path):
    path = tmp_path / "g.pb"
    path.write_bytes(_node("input", "Placeholder", []) + _node("out", "Softplus", ["input"]))
    with pytest.raises(ValueError, match="Softplus"):
        TFGraph(read_graph(path))


def test_facenet_judge_equals_opencv_on_real_faces():
    """Reference: OpenCV 4.6's TensorFlow importer on the same three crops (faces of sample_album)."""
    crops = np.stack([cv2.imread(str(DATA / f"face{i}.png"))[..., ::-1] for i in range(3)])
    reference = np.load(DATA / "opencv46-descriptors.npy")
    got = FaceNetJudge().embed_crops(crops)
    assert got.shape == (3, 512)
    assert np.abs(got - reference).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_judge_crop_maps_the_widened_landmark_box_onto_the_crop():
    x_ramp = np.tile(np.arange(400, dtype=np.float64), (300, 1))  # pixel value = its x coordinate / 2
    photo = np.repeat((x_ramp / 2).astype(np.uint8)[..., None], 3, axis=2)
    lm = np.zeros((68, 2))
    lm[:17] = np.stack([np.linspace(100, 300, 17), np.linspace(150, 250, 17)], axis=1)  # jaw x 100..300
    lm[17:27] = [[150, 120]] * 10  # brows
    crop = judge_crop(photo, lm)
    assert crop.shape == (SIZE, SIZE, 3)
    span = 200 * (1 + 2 * MARGIN)
    left = 100 - 200 * MARGIN
    expected = (left + np.arange(SIZE) * span / SIZE) / 2  # the photo x each crop column samples, halved
    assert np.abs(crop[80, 5:-5, 0].astype(float) - expected[5:-5]).max() <= 1.5
