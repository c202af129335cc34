"""dlib's 128-d face recognition ResNet as a torch module, its weights read without dlib.

The file ``dlib_face_recognition_resnet_model_v1.dat`` (face_recognition_models) is dlib's own
serialisation (dlib/serialize.h, dlib/dnn/core.h, layers.h, loss.h, input.h) of
``loss_metric<fc_no_bias<128, avg_pool_everything<ResNet<input_rgb_image_sized<150>>>>>``:

- integer: a control byte (bit 7 set: negative; bits 0-3: byte count n, 1..8), then the n bytes
  of the magnitude, least significant first. float: mantissa then exponent, each such an
  integer; value = mantissa * 2**exponent. string: length integer, then the bytes. bool: one
  byte, b"1" or b"0". tensor: integer version 2, integers n, k, nr, nc, then n*k*nr*nc
  little-endian float32 in NCHW order. alias tensor (a view into a layer's parameters):
  version 1, n, k, nr, nc, no data.
- order: the loss layer (version 1, "loss_metric_2", margin, distance threshold); the nesting
  versions of every wrapper, output to input (add_layer 2, tag and skip layers 1, the add_layer
  holding the input layer 3); the input layer ("input_rgb_image_sized", means of R, G, B,
  rows, columns); then one record per add_layer, input to output: the layer's details (a name
  with its version, then its fields), 3 stale bools and 3 stale tensors (gradient, cached
  output, parameter gradient); the input's add_layer (version 3) adds its sample expansion
  factor. Tag and skip layers have no record: which layers a residual add joins is fixed by
  dlib's C++ type, and `DlibResNet` checks the records and the nesting against that type.

Network (`DlibResNet`), 150 x 150 chip -> 128 raw descriptor values:
  (x - channel mean) / 256 -> 7x7/2 conv (32) -> affine -> relu -> 3x3/2 max pool: 35 x 35
  stages of residual blocks, widths 32 (3 blocks, 35 px), 64 (4, 17 px), 128 (3, 8 px),
  256 (3, 4 px), 256 (1, 2 px); every stage but the first opens with a down block.
  block: 3x3 conv (stride 1, or 2 unpadded in a down block) -> affine -> relu -> 3x3 conv ->
  affine, added to the block input (a down block's input first 2x2/2 average pooled), then relu.
  The add zero-pads the smaller operand at the end of its channels, rows and columns: a down
  block's branch has more channels, and in the last two down blocks one row and column fewer
  than the pooled input (8 px in: 3 vs 4; 4 px in: 1 vs 2). Cropping instead changes the
  descriptors.
  global average pool -> fully connected 256 -> 128 without bias.
Affine layers are dlib's folded batch norm: y = gamma * x + beta per channel. Weights are kept
as float32 parameters, so the module trains and runs on any device.

Measured (benchmarks/bench_dlib_resnet.py, 64 LFW chips, 2 CPU threads): max abs difference to
dlib's descriptors 6.3e-7; 445 chips/s at batch 32 and 116 at batch 1, dlib 16.7 (one core).
This module imports torch: import it only where it is used (never on the CLI's start-up path).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from albumfix.faces.analyzer import BackendUnavailable
from albumfix.faces.backends import FaceBox, unit_rows
from albumfix.faces.backends.dlib_backend import RESNET, face_shapes, models_folder

CHIP_SIZE = 150
CHIP_PADDING = 0.25  # dlib's default for get_face_chip(s) and compute_face_descriptor
PIXEL_SCALE = 256.0  # dlib's input layer divides (pixel - mean) by 256
DESCRIPTOR_SIZE = 128
# Resolution ladder of a sharp face (`resolution_ladder`): its chip seen at 1/2, 1/4.5 and 1/9 of
# its resolution (75, 33 and 17 px), about a factor 2 apart over the damage families' range
# (downscales x2-x8). Chosen on the verification calibration album of training people (module
# doc of albumfix.people.verify); 3 more forward passes per sharp face, batched with the scan's.
LADDER_SCALES = (2.0, 4.5, 9.0)
LOSS_NAME = "loss_metric_2"
INPUT_NAME = "input_rgb_image_sized"
FLOAT_SPECIAL_EXPONENT = 32000  # dlib's float_details: 32000 inf, 32001 -inf, 32002 nan
NO_BIAS_MODE = 1  # dlib's fc_bias_mode FC_NO_BIAS
CONV_MODE = 0  # dlib's layer_mode CONV_MODE (per-channel affine)
TENSOR_VERSION = 2
ALIAS_VERSION = 1
TAG_OR_SKIP_VERSION = 1
ADD_LAYER_VERSION = 2
INPUT_ADD_LAYER_VERSION = 3


# ---------------------------------------------------------------- dlib's serialisation format
class DlibStream:
    """Read cursor over bytes in dlib's serialisation format; every read advances `pos`.

    A read past the end, or bytes that break the format, raise ValueError with the offset."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def at_end(self) -> bool:
        """True when every byte has been read."""
        return self.pos == len(self.data)

    def fail(self, message: str) -> ValueError:
        """A ValueError naming the current byte offset."""
        return ValueError(f"dlib file, byte {self.pos}: {message}")

    def take(self, count: int) -> memoryview:
        """Reads `count` raw bytes."""
        if self.pos + count > len(self.data):
            raise self.fail(f"needs {count} more bytes, the data ends after {len(self.data) - self.pos}")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self) -> int:
        """Reads a control byte (bit 7: negative, bits 0-3: n in 1..8, bits 4-6 zero) and n
        magnitude bytes, least significant first."""
        control = self.take(1)[0]
        count = control & 0x0F
        if control & 0x70 or not 1 <= count <= 8:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        magnitude = int.from_bytes(self.take(count), "little")
        return -magnitude if control & 0x80 else magnitude

    def real(self) -> float:
        """Reads a float: an integer mantissa, then an integer exponent; mantissa * 2**exponent
        (float32 and float64 alike; dlib's old text format and non-finite values are refused)."""
        mantissa, exponent = self.integer(), self.integer()
        if exponent >= FLOAT_SPECIAL_EXPONENT:
            raise self.fail(f"non-finite float (exponent code {exponent})")
        return math.ldexp(mantissa, exponent)

    def string(self) -> str:
        """Reads an integer length, then that many bytes (ASCII)."""
        return bytes(self.take(self.integer())).decode("ascii")

    def boolean(self) -> bool:
        """Reads one byte, b"1" (True) or b"0" (False)."""
        byte = bytes(self.take(1))
        if byte not in (b"0", b"1"):
            raise self.fail(f"bad bool byte {byte!r}")
        return byte == b"1"

    def shape4(self, version: int) -> tuple[int, int, int, int]:
        """Reads an integer version (must equal `version`), then n, k, nr, nc."""
        found = self.integer()
        if found != version:
            raise self.fail(f"expected version {version}, found {found}")
        shape = tuple(self.integer() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"negative tensor shape {shape}")
        return shape

    def tensor(self) -> np.ndarray:
        """Reads a tensor: version 2, n, k, nr, nc, then n*k*nr*nc little-endian float32.
        Returns (n, k, nr, nc) float32 (a copy)."""
        shape = self.shape4(TENSOR_VERSION)
        values = np.frombuffer(self.take(4 * math.prod(shape)), dtype="<f4")
        return values.astype(np.float32).reshape(shape)

    def alias_shape(self) -> tuple[int, int, int, int]:
        """Reads an alias tensor (a parameter view): version 1, n, k, nr, nc; no data."""
        return self.shape4(ALIAS_VERSION)

    def next_string_starts_with(self, prefix: str) -> bool:
        """Whether a string starting with `prefix` comes next (reads nothing)."""
        start = self.pos
        try:
            return self.string().startswith(prefix)
        except (ValueError, UnicodeDecodeError):
            return False
        finally:
            self.pos = start


# ---------------------------------------------------------------- layer records
@dataclass(frozen=True)
class Conv:
    """dlib con_: weight (O, I, kh, kw) float32 (cross-correlation, as torch), bias (O,)
    float32; stride and zero padding (rows, columns) in px."""

    weight: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class Affine:
    """dlib affine_ in CONV_MODE: y = gamma[c] * x + beta[c]; gamma, beta (C,) float32."""

    gamma: np.ndarray
    beta: np.ndarray


@dataclass(frozen=True)
class Relu:
    """dlib relu_: max(x, 0)."""


@dataclass(frozen=True)
class Pool:
    """dlib max_pool_ / avg_pool_: kind "max" | "avg"; window (rows, columns) px, (0, 0) for the
    whole input; stride and padding px (average pools count only pixels inside the input)."""

    kind: str
    window: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class AddPrev:
    """dlib add_prev_: sum with a tagged earlier output, the smaller zero-padded at the end of
    its channels, rows and columns (which output is fixed by the network's C++ type)."""


@dataclass(frozen=True)
class FullyConnected:
    """dlib fc_ without bias: y = x.flatten() @ weight.T; weight (out, in) float32."""

    weight: np.ndarray


Layer = Union[Conv, Affine, Relu, Pool, AddPrev, FullyConnected]


@dataclass(frozen=True)
class DlibNetFile:
    """A parsed dlib metric-learning network file.

    margin, distance_threshold: loss_metric's training settings (descriptor distance units).
    channel_means: the input layer's R, G, B means (0-255 pixel units); input_size: (rows,
    columns) px. nesting: the version of every wrapper, output to input (add_layer 2, tag or
    skip 1, the input's add_layer 3). layers: one record per add_layer, input to output.
    """

    margin: float
    distance_threshold: float
    channel_means: tuple[float, float, float]
    input_size: tuple[int, int]
    nesting: tuple[int, ...]
    layers: tuple[Layer, ...]

    def parameter_count(self) -> int:
        """Learned numbers in the records (conv weights and biases, gamma, beta, fc weights)."""
        arrays = [v for layer in self.layers for v in vars(layer).values() if isinstance(v, np.ndarray)]
        return sum(a.size for a in arrays)


def _pair(stream: DlibStream) -> tuple[int, int]:
    """Reads two integers (rows, then columns)."""
    return stream.integer(), stream.integer()


def _skip_reals(stream: DlibStream, count: int) -> None:
    """Reads and drops `count` floats (learning-rate and weight-decay multipliers)."""
    for _ in range(count):
        stream.real()


def read_conv(stream: DlibStream) -> Conv:
    """Reads con_4's fields: params tensor, num_filters, nr, nc, stride_y, stride_x, padding_y,
    padding_x, filters and biases alias tensors, 4 multiplier floats."""
    params = stream.tensor().ravel()
    filters = stream.integer()
    window = _pair(stream)
    stride = _pair(stream)
    padding = _pair(stream)
    weight_shape, bias_shape = stream.alias_shape(), stream.alias_shape()
    _skip_reals(stream, 4)
    weight_size, bias_size = math.prod(weight_shape), math.prod(bias_shape)
    if weight_shape[0] != filters or weight_shape[2:] != window or bias_size != filters:
        raise stream.fail(f"conv shapes disagree: {filters} filters {window}, "
                          f"alias tensors {weight_shape} {bias_shape}")
    if params.size != weight_size + bias_size:
        raise stream.fail(f"conv holds {params.size} parameters, its shapes need {weight_size + bias_size}")
    weight = params[:weight_size].reshape(weight_shape)
    return Conv(weight=weight, bias=params[weight_size:], stride=stride, padding=padding)


def read_affine(stream: DlibStream) -> Affine:
    """Reads affine_'s fields: params tensor (gamma then beta), gamma and beta alias tensors,
    mode integer (0: per channel)."""
    params = stream.tensor().ravel()
    gamma_shape, beta_shape = stream.alias_shape(), stream.alias_shape()
    mode = stream.integer()
    channels = math.prod(gamma_shape)
    if mode != CONV_MODE or gamma_shape != beta_shape or params.size != 2 * channels:
        raise stream.fail(f"unsupported affine: mode {mode}, shapes {gamma_shape} {beta_shape}, "
                          f"{params.size} values")
    return Affine(gamma=params[:channels], beta=params[channels:])


def read_relu(stream: DlibStream) -> Relu:
    """relu_ has no fields; reads nothing."""
    return Relu()


def read_pool(stream: DlibStream, kind: str) -> Pool:
    """Reads max_pool_2's or avg_pool_2's fields: nr, nc, stride_y, stride_x, padding_y,
    padding_x."""
    return Pool(kind=kind, window=_pair(stream), stride=_pair(stream), padding=_pair(stream))


def read_add_prev(stream: DlibStream) -> AddPrev:
    """add_prev_ has no fields; reads nothing."""
    return AddPrev()


def read_fully_connected(stream: DlibStream) -> FullyConnected:
    """Reads fc_2's fields: num_outputs, num_inputs, params tensor ((inputs, outputs) row-major),
    weights and biases alias tensors, bias mode integer (1: none), 4 multiplier floats."""
    outputs, inputs = stream.integer(), stream.integer()
    params = stream.tensor().ravel()
    weight_shape, bias_shape = stream.alias_shape(), stream.alias_shape()
    bias_mode = stream.integer()
    _skip_reals(stream, 4)
    if bias_mode != NO_BIAS_MODE or params.size != inputs * outputs or weight_shape[:2] != (inputs, outputs):
        raise stream.fail(f"unsupported fc: bias mode {bias_mode}, "
                          f"{params.size} values for {inputs} x {outputs}")
    return FullyConnected(weight=np.ascontiguousarray(params.reshape(inputs, outputs).T))


LAYER_READERS = {
    "con_4": read_conv,
    "affine_": read_affine,
    "relu_": read_relu,
    "max_pool_2": lambda stream: read_pool(stream, "max"),
    "avg_pool_2": lambda stream: read_pool(stream, "avg"),
    "add_prev_": read_add_prev,
    "fc_2": read_fully_connected,
}


def read_layer(stream: DlibStream) -> Layer:
    """Reads a layer's details: its name-and-version string, then its fields (see LAYER_READERS;
    other layer types and versions raise ValueError)."""
    name = stream.string()
    if name not in LAYER_READERS:
        raise stream.fail(f"unsupported layer {name!r} (supported: {', '.join(LAYER_READERS)})")
    return LAYER_READERS[name](stream)


def skip_stale_state(stream: DlibStream) -> None:
    """Reads and drops what an add_layer stores after its details: 3 bools (setup called,
    gradient stale, output disabled) and 3 tensors (gradient, cached output, parameter
    gradient), each empty in a saved model."""
    for _ in range(3):
        stream.boolean()
    for _ in range(3):
        stream.tensor()


def read_loss(stream: DlibStream) -> tuple[float, float]:
    """Reads the loss layer: version 1, "loss_metric_2", margin and distance threshold floats."""
    version = stream.integer()
    name = stream.string()
    if version != 1 or name != LOSS_NAME:
        raise stream.fail(f"expected a {LOSS_NAME} network (version 1), found {name!r} version {version}")
    return stream.real(), stream.real()


def read_nesting(stream: DlibStream) -> tuple[int, ...]:
    """Reads wrapper versions, output to input (each 1 or 2), up to and including the version
    of the add_layer that holds the input layer (3, followed by the input layer's name)."""
    versions = []
    while True:
        version = stream.integer()
        versions.append(version)
        if stream.next_string_starts_with("input_"):
            if version != INPUT_ADD_LAYER_VERSION:
                raise stream.fail(f"input add_layer version {version}, expected {INPUT_ADD_LAYER_VERSION}")
            return tuple(versions)
        if version not in (TAG_OR_SKIP_VERSION, ADD_LAYER_VERSION):
            raise stream.fail(f"unexpected wrapper version {version}")


def read_input_layer(stream: DlibStream) -> tuple[tuple[float, float, float], tuple[int, int]]:
    """Reads "input_rgb_image_sized", the R, G, B mean floats and the rows and columns integers.
    Returns ((R, G, B) means in 0-255 units, (rows, columns) px)."""
    name = stream.string()
    if name != INPUT_NAME:
        raise stream.fail(f"unsupported input layer {name!r} (expected {INPUT_NAME})")
    means = (stream.real(), stream.real(), stream.real())
    return means, _pair(stream)


def read_layer_records(stream: DlibStream, nesting: tuple[int, ...]) -> tuple[Layer, ...]:
    """Reads one record per add_layer of `nesting`, input to output: details, stale state, and
    after the first (the input's add_layer) its sample expansion factor integer."""
    layers = []
    for index in range(1 + nesting.count(ADD_LAYER_VERSION)):
        layers.append(read_layer(stream))
        skip_stale_state(stream)
        if index == 0:
            stream.integer()
    return tuple(layers)


def parse_dlib_net(data: bytes) -> DlibNetFile:
    """Parse a whole dlib loss_metric network file (bytes as on disk); ValueError when the bytes
    are not one, are truncated, use unsupported layers, or do not end after the last record."""
    stream = DlibStream(data)
    margin, threshold = read_loss(stream)
    nesting = read_nesting(stream)
    means, size = read_input_layer(stream)
    layers = read_layer_records(stream, nesting)
    if not stream.at_end():
        raise stream.fail(f"{len(stream.data) - stream.pos} bytes left after the last layer")
    return DlibNetFile(margin=margin, distance_threshold=threshold, channel_means=means,
                       input_size=size, nesting=nesting, layers=layers)


def default_model_path() -> Path:
    """face_recognition_models' dlib_face_recognition_resnet_model_v1.dat."""
    return models_folder() / RESNET


def read_dlib_net(path: str | Path | None = None) -> DlibNetFile:
    """Parse the file at `path` (None: `default_model_path()`); BackendUnavailable when it is
    missing."""
    file = Path(path or default_model_path())
    if not file.is_file():
        raise BackendUnavailable(f"dlib recognition model {file} missing; reinstall face-recognition-models")
    return parse_dlib_net(file.read_bytes())


# ---------------------------------------------------------------- the network's structure
@dataclass(frozen=True)
class BlockRecords:
    """One residual block: conv, affine, relu, conv, affine, [2x2/2 avg pool of the block input
    (down blocks)], add, relu."""

    conv1: Conv
    affine1: Affine
    conv2: Conv
    affine2: Affine
    shortcut_pool: Pool | None


def match_stem(layers: tuple[Layer, ...]) -> tuple[Conv, Affine, Pool]:
    """The first 4 records: conv, affine, relu, max pool; ValueError otherwise."""
    match layers[:4]:
        case (Conv() as conv, Affine() as affine, Relu(), Pool(kind="max") as pool):
            return conv, affine, pool
    raise ValueError(f"records 0-3 are not conv, affine, relu, max pool: {_names(layers[:4])}")


def match_block(layers: tuple[Layer, ...], start: int) -> tuple[BlockRecords, int]:
    """The residual block whose records begin at `start` -> (block, index after it)."""
    match layers[start:start + 8]:
        case (Conv() as c1, Affine() as a1, Relu(), Conv() as c2, Affine() as a2,
              Pool(kind="avg") as pool, AddPrev(), Relu()):
            return BlockRecords(c1, a1, c2, a2, pool), start + 8
    match layers[start:start + 7]:
        case (Conv() as c1, Affine() as a1, Relu(), Conv() as c2, Affine() as a2, AddPrev(), Relu()):
            return BlockRecords(c1, a1, c2, a2, None), start + 7
    raise ValueError(f"records from {start} are not a residual block: {_names(layers[start:start + 8])}")


def match_head(layers: tuple[Layer, ...]) -> FullyConnected:
    """The last 2 records: global average pool, fully connected; ValueError otherwise."""
    match layers[-2:]:
        case (Pool(kind="avg", window=(0, 0)), FullyConnected() as fc):
            return fc
    raise ValueError(f"the last records are not a global average pool and fc: {_names(layers[-2:])}")


def match_blocks(layers: tuple[Layer, ...]) -> list[BlockRecords]:
    """The residual blocks between the stem (4 records) and the head (2 records)."""
    blocks, index = [], 4
    while index < len(layers) - 2:
        block, index = match_block(layers, index)
        blocks.append(block)
    return blocks


def _names(layers: tuple[Layer, ...]) -> str:
    return ", ".join(type(layer).__name__ for layer in layers)


def expected_nesting(blocks: list[BlockRecords]) -> tuple[int, ...]:
    """Wrapper versions, output to input, of dlib's type for the stem, `blocks` and the head,
    without the innermost add_layer (the stem conv holding the input layer). A block's input is
    tagged (tag1); a down block also tags its branch (tag2) and skips back to tag1 before the
    pool: dlib's residual and residual_down templates."""
    inner_first = [ADD_LAYER_VERSION] * 3  # stem affine, relu, max pool
    for block in blocks:
        inner_first += [TAG_OR_SKIP_VERSION] + [ADD_LAYER_VERSION] * 5  # tag1, conv .. affine
        if block.shortcut_pool is not None:
            inner_first += [TAG_OR_SKIP_VERSION] * 2 + [ADD_LAYER_VERSION]  # tag2, skip1, pool
        inner_first += [ADD_LAYER_VERSION] * 2  # add, relu
    inner_first += [ADD_LAYER_VERSION] * 2  # global pool, fc
    return tuple(reversed(inner_first))


def split_stages(blocks: list[BlockRecords]) -> list[list[BlockRecords]]:
    """Blocks grouped by resolution: a down block opens a new stage."""
    stages: list[list[BlockRecords]] = []
    for block in blocks:
        if block.shortcut_pool is not None or not stages:
            stages.append([])
        stages[-1].append(block)
    return stages


# ---------------------------------------------------------------- torch modules
def pad_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev_: (B, Ca, Ha, Wa) + (B, Cb, Hb, Wb) -> (B, max C, max H, max W), each
    operand zero-padded at the end of its channels, rows and columns."""
    size = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]
    return _zero_pad_to(a, size) + _zero_pad_to(b, size)


def _zero_pad_to(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, *size), zeros after the last channel, row and column."""
    channels, rows, cols = (s - n for s, n in zip(size, x.shape[1:]))
    if channels == rows == cols == 0:
        return x
    return F.pad(x, (0, cols, 0, rows, 0, channels))


def conv_module(record: Conv) -> nn.Conv2d:
    """nn.Conv2d with the record's weights, bias, stride and zero padding."""
    out_channels, in_channels, rows, cols = record.weight.shape
    conv = nn.Conv2d(in_channels, out_channels, (rows, cols), stride=record.stride, padding=record.padding)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(record.weight))
        conv.bias.copy_(torch.from_numpy(record.bias))
    return conv


def pool_module(record: Pool) -> nn.Module:
    """nn.MaxPool2d / nn.AvgPool2d (padding excluded from the mean, as dlib) for a record."""
    if record.kind == "max":
        return nn.MaxPool2d(record.window, record.stride, record.padding)
    return nn.AvgPool2d(record.window, record.stride, record.padding, count_include_pad=False)


class ChannelAffine(nn.Module):
    """dlib's affine_ (folded batch norm): (B, C, H, W) -> gamma[c] * x + beta[c]."""

    def __init__(self, record: Affine) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.from_numpy(record.gamma.copy()).view(1, -1, 1, 1))
        self.beta = nn.Parameter(torch.from_numpy(record.beta.copy()).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        return x * self.gamma + self.beta


class ResidualBlock(nn.Module):
    """relu(pad_add(affine(conv(relu(affine(conv(x))))), shortcut(x))); shortcut: identity, or
    in a down block the 2x2/2 average pool (stride-2 unpadded first conv)."""

    def __init__(self, records: BlockRecords) -> None:
        super().__init__()
        self.conv1 = conv_module(records.conv1)
        self.affine1 = ChannelAffine(records.affine1)
        self.conv2 = conv_module(records.conv2)
        self.affine2 = ChannelAffine(records.affine2)
        pool = records.shortcut_pool
        self.shortcut = nn.Identity() if pool is None else pool_module(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C', H', W') (C' = C, H' = H in plain blocks)."""
        branch = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(pad_add(branch, self.shortcut(x)))


class DlibResNet(nn.Module):
    """dlib's face recognition ResNet (module docstring), built from a parsed file.

    forward(chips): chips (B, 3, 150, 150) float RGB in 0-255 pixel units, dlib's aligned chip
    (`face_chips`) as float, not normalised -> (B, 128) raw descriptors (length about 1.3-1.6;
    dlib's "same person" is euclidean distance < 0.6). Differentiable in the chips; float32 in,
    float32 out (the module's dtype otherwise). return_features=True: (descriptor, [stage
    outputs after relu]) with (B, 32, 35, 35), (B, 64, 17, 17), (B, 128, 8, 8), (B, 256, 4, 4),
    (B, 256, 2, 2).
    """

    def __init__(self, net: DlibNetFile) -> None:
        super().__init__()
        if net.input_size != (CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected a {CHIP_SIZE} x {CHIP_SIZE} input layer, found {net.input_size}")
        conv, affine, pool = match_stem(net.layers)
        blocks = match_blocks(net.layers)
        fc = match_head(net.layers)
        if net.nesting[:-1] != expected_nesting(blocks):
            raise ValueError("the file's tag and skip layers do not sit where dlib's ResNet has them")
        means = torch.tensor(net.channel_means, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("channel_means", means)
        self.stem = nn.Sequential(conv_module(conv), ChannelAffine(affine), nn.ReLU(), pool_module(pool))
        self.stages = nn.ModuleList(
            nn.Sequential(*(ResidualBlock(block) for block in stage)) for stage in split_stages(blocks)
        )
        outputs, inputs = fc.weight.shape
        self.fc = nn.Linear(inputs, outputs, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(fc.weight))

    def forward(
        self, chips: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """(B, 3, 150, 150) 0-255 RGB -> (B, 128) raw descriptors [, stage outputs] (class doc)."""
        if chips.ndim != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected (B, 3, {CHIP_SIZE}, {CHIP_SIZE}) chips, got {tuple(chips.shape)}")
        x = self.stem((chips.to(self.channel_means.dtype) - self.channel_means) / PIXEL_SCALE)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        descriptor = self.fc(x.mean(dim=(2, 3)))
        return (descriptor, features) if return_features else descriptor


def read_robust_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The float32 state dict of a fine-tuned `DlibResNet` saved by
    `albumfix.train.identity.train_robust_embedder` (safetensors, metadata format
    "albumfix-identity"). Raises BackendUnavailable when the file is missing or is not one."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise BackendUnavailable(f"identity weights {path.name} not found in {path.parent}")
    try:
        with safe_open(str(path), framework="pt") as f:
            kind = (f.metadata() or {}).get("format")
            if kind != "albumfix-identity":
                raise BackendUnavailable(f"{path} is not an albumfix identity weights file (format {kind!r})")
            return {k: f.get_tensor(k).float() for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BackendUnavailable(f"identity weights {path} are unreadable: {exc}") from exc


@lru_cache(maxsize=None)
def _shared_resnet(path: str, device: str, weights: str | None) -> DlibResNet:
    model = DlibResNet(read_dlib_net(path))
    if weights is not None:
        model.load_state_dict(read_robust_weights(weights), strict=True)
    return model.to(device).eval().requires_grad_(False)


def load_dlib_resnet(path: str | Path | None = None, device: str | torch.device = "cpu",
                     weights: str | Path | None = None) -> DlibResNet:
    """The network of `path` (None: `default_model_path()`) on `device`, in eval mode with frozen
    parameters (gradients still flow to the chips); weights: a fine-tuned state of the same
    network (`read_robust_weights`) replacing the file's own, None: dlib's. One shared module per
    file, weights and device: copy.deepcopy it before changing it."""
    resolved = Path(path or default_model_path()).resolve()
    tuned = str(Path(weights).resolve()) if weights is not None else None
    return _shared_resnet(str(resolved), str(torch.device(device)), tuned)


# ---------------------------------------------------------------- NumPy helpers and embedder
def chips_to_tensor(chips: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, 150, 150, 3) uint8 RGB -> (N, 3, 150, 150) float32 0-255 on `device`."""
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3) or chips.dtype != np.uint8:
        raise ValueError(f"expected (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 chips, "
                         f"got {chips.shape} {chips.dtype}")
    pixels = torch.from_numpy(np.ascontiguousarray(chips)).to(device)
    return pixels.permute(0, 3, 1, 2).float()


def embed_chips(
    chips: np.ndarray,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    path: str | Path | None = None,
    weights: str | Path | None = None,
) -> np.ndarray:
    """(N, 150, 150, 3) uint8 RGB chips -> (N, 128) float32 raw descriptors (as dlib's
    compute_face_descriptor, not normalised; of the fine-tuned `weights` when given),
    `batch_size` chips per forward pass."""
    model = load_dlib_resnet(path, device, weights)
    out = np.empty((len(chips), DESCRIPTOR_SIZE), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(chips), batch_size):
            batch = chips_to_tensor(chips[start:start + batch_size], device)
            out[start:start + len(batch)] = model(batch).float().cpu().numpy()
    return out


def lowered_chips(chips: np.ndarray, scale: float) -> np.ndarray:
    """(N, 150, 150, 3) uint8 chips -> the same seen at 1/scale of their resolution: area
    downscaled to round(150 / scale) px, bicubic back to 150 (as a small photo is enlarged)."""
    side = max(4, round(CHIP_SIZE / scale))
    return np.stack([cv2.resize(cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA),
                                (CHIP_SIZE, CHIP_SIZE), interpolation=cv2.INTER_CUBIC) for c in chips])


def resolution_ladder(chips: np.ndarray, batch_size: int = 32, device: str | torch.device = "cpu",
                      path: str | Path | None = None, weights: str | Path | None = None) -> np.ndarray:
    """(N, 150, 150, 3) uint8 chips of sharp faces -> (N, len(LADDER_SCALES), 128) float32 unit
    descriptors of each chip lowered to each scale (`lowered_chips`) by the network of `weights`
    (the degraded-face network): where a damaged photo of the same face would land, so a damaged
    face is compared with a sharp one seen at about its own resolution (albumfix.people.verify)."""
    if not len(chips):
        return np.zeros((0, len(LADDER_SCALES), DESCRIPTOR_SIZE), np.float32)
    lowered = np.stack([lowered_chips(chips, s) for s in LADDER_SCALES], axis=1)  # (N, R, 150, 150, 3)
    flat = unit_rows(embed_chips(lowered.reshape(-1, *lowered.shape[2:]), batch_size, device, path, weights))
    return flat.reshape(len(chips), len(LADDER_SCALES), DESCRIPTOR_SIZE)


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(68, 2) photo px -> their bounding box (x0, y0, x1, y1) photo px."""
    x0, y0 = landmarks.min(axis=0)
    x1, y1 = landmarks.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def face_chips(rgb: np.ndarray, landmarks_list: list[np.ndarray]) -> np.ndarray:
    """rgb (H, W, 3) uint8 and one (68, 2) photo-px landmark array per face -> (N, 150, 150, 3)
    uint8 RGB chips aligned as dlib's get_face_chip(img, shape, 150, 0.25) (landmarks rounded
    to whole px, as DlibEmbedder passes them)."""
    if not landmarks_list:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    shapes = face_shapes([landmark_box(lm) for lm in landmarks_list], landmarks_list)
    import dlib  # importable: face_shapes raised BackendUnavailable otherwise

    chips = dlib.get_face_chips(np.ascontiguousarray(rgb), shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
    return np.stack([np.asarray(chip, dtype=np.uint8) for chip in chips])


class TorchDlibEmbedder:
    """Embedder: dlib's descriptor computed by `DlibResNet` in batches on any device, stored
    scaled to unit length (name "dlib": dlib's embedding space, whose grouping and verification
    calibrations apply).

    degraded_weights: a fine-tuned state of the network (`read_robust_weights`; written by
    `albumfix train-identity`; the scan's is `albumfix.faces.backends.identity_weights_path`) that
    embeds the *degraded* faces (no real fine detail: `albumfix.faces.quality.is_degraded`):
    it is trained to put a damaged face where
    dlib puts the same face sharp, so a blurred, faded or sepia face lands near its own person's
    sharp photos, which dlib's own network embeds as always; it also embeds each sharp face's
    `resolution_ladder`. None: dlib's network for every face, and no ladders.
    """

    name = "dlib"

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 32,
                 path: str | Path | None = None, degraded_weights: str | Path | None = None) -> None:
        self.device = device
        self.batch_size = int(batch_size)
        self.path = path
        self.degraded_weights = degraded_weights

    def embed(self, rgb: np.ndarray, faces: list[FaceBox], landmarks: list[np.ndarray]) -> list[np.ndarray]:
        """rgb: (H, W, 3) uint8 -> one (128,) float32 unit vector per face (its landmarks)."""
        return self.embed_many([(rgb, faces, landmarks)])[0][0]

    def embed_many(self, photos: list[tuple[np.ndarray, list[FaceBox], list[np.ndarray]]],
                   degraded: list[list[bool]] | None = None) -> list[tuple[list[np.ndarray], list[np.ndarray | None]]]:
        """`embed` of several photos [(rgb, faces, landmarks)] in shared batches, and each face's
        `resolution_ladder` (len(LADDER_SCALES), 128) float32: for a face with real detail, by
        the degraded-face network; None for a degraded face, and for every face when there is no
        degraded-face network. degraded: per photo, per face, whether it is degraded, when the
        caller has judged it already (`albumfix.faces.quality.lacks_detail` of its stored
        detail); None: judged here (`is_degraded`). Returns per photo (unit vectors, ladders)."""
        from albumfix.faces.quality import is_degraded

        if not photos:
            return []
        counts = [len(landmarks) for _, _, landmarks in photos]
        chips = np.concatenate([face_chips(rgb, landmarks) for rgb, _, landmarks in photos])
        if degraded is not None:
            tuned = np.array([bool(d) for flags in degraded for d in flags], bool)
            if len(tuned) != len(chips):
                raise ValueError(f"degraded has {len(tuned)} flags for {len(chips)} faces")
        elif self.degraded_weights is not None:
            tuned = np.array([is_degraded(rgb, lm) for rgb, _, landmarks in photos for lm in landmarks], bool)
        else:  # one network for every face: nothing to judge
            tuned = np.zeros(len(chips), bool)
        tuned &= self.degraded_weights is not None
        out = np.empty((len(chips), DESCRIPTOR_SIZE), np.float32)
        for mask, weights in ((~tuned, None), (tuned, self.degraded_weights)):
            if mask.any():
                out[mask] = embed_chips(chips[mask], self.batch_size, self.device, self.path, weights)
        ladders: list[np.ndarray | None] = [None] * len(chips)
        sharp = np.flatnonzero(~tuned) if self.degraded_weights is not None else np.zeros(0, np.int64)
        if sharp.size:
            rungs = resolution_ladder(chips[sharp], self.batch_size, self.device, self.path, self.degraded_weights)
            for k, i in enumerate(sharp):
                ladders[i] = rungs[k]
        vectors = list(unit_rows(out))
        bounds = np.cumsum([0, *counts])
        return [(vectors[a:b], ladders[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
