"""A frozen TensorFlow graph (GraphDef protobuf, `.pb`) read without TensorFlow and run in torch.

Only what the identity judge's graph needs (`albumfix.train.judge`): float32 constants and the
ops of an inference CNN (Conv2D, BiasAdd, Relu, pools, ConcatV2, Add, Mul, MatMul, Reshape,
FusedBatchNorm, and the L2 normalisation's Square, Sum, Maximum, Rsqrt). OpenCV 5 dropped its
TensorFlow importer and OpenCV 4 cannot sit beside it in one environment, hence this reader.

Layout: TensorFlow's 4-d tensors are NHWC; here they are held NCHW (torch's), and every op that
names an axis or flattens maps it. The protobuf is decoded from its wire format (varints and
length-delimited fields); the field numbers are those of tensorflow/core/framework/*.proto.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

_DTYPES = {1: np.float32, 3: np.int32, 9: np.int64}  # DataType enum: DT_FLOAT, DT_INT32, DT_INT64
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def wire_fields(buf: bytes) -> list[tuple[int, int | bytes]]:
    """A protobuf message -> [(field number, value)]: ints for varints, bytes otherwise."""
    out, i = [], 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"protobuf wire type {wire} is not supported")
        out.append((number, value))
    return out


def _packed_ints(values: list) -> list[int]:
    """Repeated int64 / int32 fields, packed (one bytes value) or not (ints)."""
    out = []
    for v in values:
        if isinstance(v, int):
            out.append(v)
        else:
            i = 0
            while i < len(v):
                n, i = _varint(v, i)
                out.append(n - (1 << 64) if n >= 1 << 63 else n)
    return out


def _packed_floats(values: list[bytes]) -> list[float]:
    """Repeated float fields, packed (one bytes value) or not (4 bytes each)."""
    return [x for v in values for x in struct.unpack(f"<{len(v) // 4}f", v)]


def _tensor(buf: bytes) -> np.ndarray:
    """A TensorProto -> array (dtype 1, shape 2 (dim 2, size 1), tensor_content 4, float_val 5,
    int_val 7, int64_val 10; a single value fills the whole shape)."""
    fields = wire_fields(buf)
    dtype = _DTYPES[next(v for n, v in fields if n == 1)]
    shape_msg = next((v for n, v in fields if n == 2), b"")
    shape = [_packed_ints([s for k, s in wire_fields(d) if k == 1] or [0])[0]
             for n, d in wire_fields(shape_msg) if n == 2]
    content = next((v for n, v in fields if n == 4), None)
    if content is not None:
        return np.frombuffer(content, dtype).reshape(shape).copy()
    if dtype == np.float32:
        vals = _packed_floats([v for n, v in fields if n == 5])
    else:
        vals = _packed_ints([v for n, v in fields if n in (7, 10)])
    arr = np.asarray(vals, dtype)
    return np.full(shape, arr[0], dtype) if arr.size == 1 and shape else arr.reshape(shape)


def _attr(buf: bytes):
    """An AttrValue -> python value: list (1: ints 3 or floats 4), s 2, i 3, f 4, b 5, type 6,
    tensor 8; a shape (7) or function is returned as raw bytes."""
    number, value = wire_fields(buf)[0] if buf else (0, b"")
    if number == 1:
        items = wire_fields(value)
        ints = _packed_ints([v for n, v in items if n == 3])
        return ints or _packed_floats([v for n, v in items if n == 4])
    if number == 2:
        return value.decode()
    if number == 4:
        return struct.unpack("<f", value)[0]
    if number == 5:
        return bool(value)
    if number == 8:
        return _tensor(value)
    return value


@dataclass
class Node:
    """One GraphDef node: its op, its data inputs (node names) and its decoded attributes."""

    name: str
    op: str
    inputs: list[str]
    attrs: dict = field(default_factory=dict)


def read_graph(path: str | Path) -> list[Node]:
    """A frozen GraphDef file -> its nodes in file order (GraphDef.node is field 1; NodeDef:
    name 1, op 2, input 3, attr 5 as map entries key 1 / value 2). Control inputs are dropped."""
    nodes = []
    for number, msg in wire_fields(Path(path).read_bytes()):
        if number != 1:
            continue
        name, op, inputs, attrs = "", "", [], {}
        for n, v in wire_fields(msg):
            if n == 1:
                name = v.decode()
            elif n == 2:
                op = v.decode()
            elif n == 3 and not v.startswith(b"^"):
                inputs.append(v.decode().split(":")[0])
            elif n == 5:
                entry = dict(wire_fields(v))
                attrs[entry[1].decode()] = _attr(entry.get(2, b""))
        nodes.append(Node(name, op, inputs, attrs))
    return nodes


def _same_pad(x: torch.Tensor, kernel: tuple[int, int], stride: tuple[int, int], value: float) -> torch.Tensor:
    """TensorFlow's SAME padding of an NCHW tensor (the odd pixel goes after)."""
    pads = []
    for size, k, s in ((x.shape[3], kernel[1], stride[1]), (x.shape[2], kernel[0], stride[0])):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


def _channel_vector(value: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """A per-channel constant (C,) meeting an NCHW tensor: shaped (1, C, 1, 1)."""
    return value.view(1, -1, 1, 1) if other.dim() == 4 and value.dim() == 1 and value.numel() > 1 else value


class TFGraph(torch.nn.Module):
    """The nodes of `read_graph` as a torch module: forward(x) runs from the graph's Placeholder
    (x: NCHW) to `output` (the last node by default). 4-d outputs come back NCHW."""

    def __init__(self, nodes: list[Node], output: str | None = None) -> None:
        super().__init__()
        self.consts = {n.name: torch.from_numpy(n.attrs["value"]) for n in nodes if n.op == "Const"}
        # the nodes without their arrays, so that the weights are held once (as consts)
        self.nodes = {n.name: replace(n, attrs={k: v for k, v in n.attrs.items() if k != "value"}) for n in nodes}
        self.output = output or nodes[-1].name
        self.input = next(n.name for n in nodes if n.op == "Placeholder")
        self.order = self._topological(self.output)
        for w in {n.inputs[1] for n in nodes if n.op == "Conv2D"}:  # filters: HWIO -> torch's OIHW
            self.consts[w] = self.consts[w].permute(3, 2, 0, 1).contiguous()
        for op in {self.nodes[k].op for k in self.order} - set(self._OPS) - {"Const", "Placeholder"}:
            raise ValueError(f"the graph uses op {op}, which this reader does not run")

    def _topological(self, output: str) -> list[str]:
        order, seen, stack = [], set(), [(output, False)]
        while stack:
            name, done = stack.pop()
            if done:
                order.append(name)
            elif name not in seen:
                seen.add(name)
                stack.append((name, True))
                stack.extend((i, False) for i in reversed(self.nodes[name].inputs) if i not in seen)
        return order

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: dict[str, torch.Tensor] = {self.input: x}
        for name in self.order:
            node = self.nodes[name]
            if node.op == "Const":
                values[name] = self.consts[name]
            elif node.op != "Placeholder":
                values[name] = self._OPS[node.op](self, node, [values[i] for i in node.inputs])
        return values[self.output]

    # --- ops: (self, node, input tensors) -> tensor ---------------------------------------------
    def _conv(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        x, w = args
        if node.attrs.get("data_format", "NHWC") != "NHWC":
            raise ValueError("only NHWC graphs are supported")
        stride = tuple(node.attrs["strides"][1:3])
        if node.attrs["padding"] == "SAME":
            x = _same_pad(x, tuple(w.shape[2:]), stride, 0.0)
        return F.conv2d(x, w, stride=stride)

    def _pool(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        (x,) = args
        kernel, stride = tuple(node.attrs["ksize"][1:3]), tuple(node.attrs["strides"][1:3])
        if node.attrs["padding"] == "SAME":
            if node.op == "AvgPool":
                raise ValueError("AvgPool with SAME padding is not supported")
            x = _same_pad(x, kernel, stride, float("-inf"))
        pool = F.max_pool2d if node.op == "MaxPool" else F.avg_pool2d
        return pool(x, kernel, stride)

    def _concat(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        *parts, axis = args
        axis = int(axis)
        if parts[0].dim() == 4:
            axis = _NHWC_TO_NCHW[axis % 4]
        return torch.cat(parts, dim=axis)

    def _binary(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        a, b = args
        a, b = _channel_vector(a, b), _channel_vector(b, a)
        return {"Add": torch.add, "AddV2": torch.add, "Mul": torch.mul, "Maximum": torch.maximum}[node.op](a, b)

    def _reshape(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        """The frozen graph's shapes were folded for one image: the batch axis is kept as given."""
        x, shape = args
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)
        out = x.reshape(x.shape[0], *[int(s) for s in shape[1:]])
        return out.permute(0, 3, 1, 2) if out.dim() == 4 else out

    def _batch_norm(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        x, scale, offset, mean, var = args
        shape = (1, -1, 1, 1) if x.dim() == 4 else (1, -1)
        inv = (scale / torch.sqrt(var + node.attrs.get("epsilon", 1e-3))).view(shape)
        return (x - mean.view(shape)) * inv + offset.view(shape)

    def _sum(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        x, axes = args
        dims = [int(a) for a in axes.reshape(-1)]
        if x.dim() == 4:
            dims = [_NHWC_TO_NCHW[d % 4] for d in dims]
        return x.sum(dim=dims, keepdim=bool(node.attrs.get("keep_dims", False)))

    def _matmul(self, node: Node, args: list[torch.Tensor]) -> torch.Tensor:
        a, b = args
        a = a.t() if node.attrs.get("transpose_a") else a
        b = b.t() if node.attrs.get("transpose_b") else b
        return a @ b

    _OPS = {
        "Conv2D": _conv, "MaxPool": _pool, "AvgPool": _pool, "ConcatV2": _concat,
        "Add": _binary, "AddV2": _binary, "Mul": _binary, "Maximum": _binary,
        "BiasAdd": lambda self, node, a: a[0] + _channel_vector(a[1], a[0]),
        "Relu": lambda self, node, a: F.relu(a[0]),
        "Identity": lambda self, node, a: a[0],
        "Square": lambda self, node, a: a[0] * a[0],
        "Rsqrt": lambda self, node, a: torch.rsqrt(a[0]),
        "Reshape": _reshape, "FusedBatchNorm": _batch_norm, "Sum": _sum, "MatMul": _matmul,
    }
