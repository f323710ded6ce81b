"""A refbnn model as a standard ONNX graph (opset 17) whose float decisions equal the
integer model's on every input the contract allows (docs/semantics.md §13).

The graph reads u, the input map of the integer data (`--input`, x/Z by default), and
outputs the class scores:

- `(u - B) * (1/A)` then `Round` gives the integers x back. The exporter checks, for
  every channel and every integer |x| <= Z, that float32 arithmetic rounds back to x
  (`_check_input_map`), so the first layer sums integers like every other layer;
- `MatMul` / `Conv` (stride 1, equal pads) with +-1 float32 weights: every sum is an
  integer of magnitude at most fan-in * Z < 2^24, so float32 holds it exactly;
- a threshold is `Cast` to double, `Sub` s + 1/2, `Mul` by the polarity, `Greater` 0,
  `Where` +1 / -1: h is an integer and s + 1/2 lies halfway between two integers, exact
  in double for |s| < 2^52, so no rounding can move a decision (+1 iff p (h - s - 1/2) > 0:
  h > s for polarity +1, h <= s for polarity -1);
- an input binarisation (§2.6) is the same threshold on x itself;
- `MaxPool` (2x2, stride 2) on h or on +-1, `Flatten` (axis 1) in C order.

With `qonnx=True` the same network is written in FINN's QONNX dialect: the weights are
`BipolarQuant` of their +-1 values, and a threshold layer is one `MultiThreshold` per
channel (domain qonnx.custom_op.general) on p h with threshold p (s + 1/2), out_scale 2 and
out_bias -1: +1 iff p h >= p (s + 1/2), the same decision, which FINN streams as a
threshold. Its thresholds are float32, exact halves for |s| < 2^23 (refused beyond).

refbnn's importer reads the graph back to the very same model (`tests/test_export.py`).
"""
from __future__ import annotations

from math import prod

import numpy as np

from ..engines.fast import weight_signs
from ..formats.files import InputError
from ..semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold

OPSET = 17
QONNX = "qonnx.custom_op.general"
FLOAT32_EXACT = 2**24      # every integer below this is a float32
FLOAT32_HALVES = 2**23     # s + 1/2 is a float32 for |s| below this (QONNX's thresholds)
DOUBLE_HALVES = 2**52      # s + 1/2 is a double for |s| below this


def signs32(model: Model, i: int) -> np.ndarray:
    """Layer i's weights as +-1 float32 (exact)."""
    return weight_signs(model, i).astype(np.float32)


class _Graph:
    def __init__(self):
        from onnx import numpy_helper
        self.numpy_helper = numpy_helper
        self.nodes, self.inits, self.k = [], [], 0

    def name(self, stem: str) -> str:
        self.k += 1
        return f"{stem}_{self.k}"

    def const(self, value, dtype=np.float32) -> str:
        n = self.name("c")
        self.inits.append(self.numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def op(self, op_type: str, inputs: list[str], domain: str = "", **attrs) -> str:
        from onnx import helper
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"/{out}", domain=domain, **attrs))
        return out


def _check_limits(model: Model, qonnx: bool) -> None:
    """What float32 and double cannot hold exactly is refused, with the reason."""
    limit, what = (FLOAT32_HALVES, "2^23, where s + 1/2 is no longer a float32 (QONNX's thresholds)") if qonnx \
        else (DOUBLE_HALVES, "2^52, where s + 1/2 is no longer a double")
    layers = [(i, model.layers[i]) for i in (nl.threshold_index for nl in model.neuron_layers)]
    if model.input_threshold is not None:
        layers.append(("input.binarize", model.input_threshold))
    for i, t in layers:
        if max(abs(v) for v in t.thresholds) >= limit:
            where = i if isinstance(i, str) else f"layers[{i}]"
            raise InputError(f"{where}.thresholds: |s| >= {what}; the export cannot place that decision exactly")
    first = model.weight_indices[0]
    for i in model.weight_indices:
        w = model.layers[i].weight
        reach = prod(w.shape[1:]) * (model.first_input_bound if i == first else 1)
        if reach >= FLOAT32_EXACT:
            raise InputError(f"layers[{i}]: fan-in x input bound = {reach} >= 2^24: float32 sums would round; "
                             "the ONNX export cannot compute h exactly")


def _check_input_map(model: Model, a: np.ndarray, b: np.ndarray) -> None:
    """For every channel and every integer |x| <= Z: Round((float32(a x + b) - b) * (1/a)) == x
    in float32, as the graph computes it (u given in float32)."""
    x = np.arange(-model.Z, model.Z + 1, dtype=np.float64)
    for c, (ac, bc) in enumerate(zip(a, b)):
        u = (ac * x + bc).astype(np.float32)
        back = np.round((u - np.float32(bc)) * np.float32(1.0 / ac))
        if not np.array_equal(back, x.astype(np.float32)):
            bad = int(x[np.argmax(back != x)])
            raise InputError(f"--input: channel {c}: the float32 input of x = {bad} does not round back to "
                             f"{bad}; the ONNX export cannot recover the integers")


def to_onnx(model: Model, input_a, input_c, qonnx: bool = False):
    """The ONNX ModelProto of `model` for the input map u = input_a * x + input_c (per channel);
    with `qonnx`, in FINN's QONNX dialect."""
    from onnx import TensorProto, checker, helper

    _check_limits(model, qonnx)
    channels = model.input_shape[0]
    a = np.broadcast_to(np.asarray(input_a, dtype=np.float64), (channels,))
    b = np.broadcast_to(np.asarray(input_c, dtype=np.float64), (channels,))
    _check_input_map(model, a, b)
    g = _Graph()
    per_channel = (-1,) + (1,) * (len(model.input_shape) - 1)     # broadcast over [C, H, W] or [K]
    v = "u"
    if np.any(b != 0):
        v = g.op("Sub", [v, g.const(b.reshape(per_channel))])
    v = g.op("Mul", [v, g.const((1.0 / a).reshape(per_channel))])
    v = g.op("Round", [v])
    threshold = _multithreshold if qonnx else _threshold

    def weight(w: np.ndarray) -> str:
        c = g.const(w)
        return g.op("BipolarQuant", [c, g.const(1.0)], domain=QONNX) if qonnx else c

    if model.input_threshold is not None:
        v = threshold(g, v, model.input_threshold, len(model.input_shape) + 1)
    shapes = (model.input_shape,) + model.shapes
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Linear):
            v = g.op("MatMul", [v, weight(signs32(model, i).T)])
        elif isinstance(layer, Conv2d):
            p = layer.padding
            v = g.op("Conv", [v, weight(signs32(model, i))], pads=[p, p, p, p],
                     kernel_shape=list(layer.weight.shape[2:]))
        elif isinstance(layer, Threshold):
            v = threshold(g, v, layer, len(shapes[i]) + 1)
        elif isinstance(layer, MaxPool2d):
            v = g.op("MaxPool", [v], kernel_shape=[2, 2], strides=[2, 2])
        elif isinstance(layer, Flatten):
            v = g.op("Flatten", [v], axis=1)
    g.nodes[-1].output[0] = "scores"
    inp = helper.make_tensor_value_info("u", TensorProto.FLOAT, ["batch", *model.input_shape])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", model.classes])
    graph = helper.make_graph(g.nodes, "refbnn", [inp], [out], g.inits)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(QONNX, 1)] if qonnx else [])
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="refbnn")
    proto.ir_version = 8
    if not qonnx:        # the checker does not know QONNX's ops; qonnx's own tools check those graphs
        checker.check_model(proto)
    return proto


def _threshold(g: _Graph, v: str, t: Threshold, rank: int) -> str:
    """+1 iff p (h - s - 1/2) > 0, per channel (axis 1), in double: exact for integer h."""
    shape = (-1,) + (1,) * (rank - 2)
    h = g.op("Cast", [v], to=11)                                   # DOUBLE
    centred = g.op("Sub", [h, g.const((np.array(t.thresholds, dtype=np.float64) + 0.5).reshape(shape),
                                      np.float64)])
    signed = g.op("Mul", [centred, g.const(np.array(t.polarity, dtype=np.float64).reshape(shape), np.float64)])
    fires = g.op("Greater", [signed, g.const(0.0, np.float64)])
    return g.op("Where", [fires, g.const(1.0), g.const(-1.0)])


def _multithreshold(g: _Graph, v: str, t: Threshold, rank: int) -> str:
    """QONNX: +1 iff p h >= p (s + 1/2) per channel, one MultiThreshold (0/1 scaled to +-1)."""
    shape = (-1,) + (1,) * (rank - 2)
    p = np.array(t.polarity, dtype=np.float32)
    if np.any(p < 0):
        v = g.op("Mul", [v, g.const(p.reshape(shape))])
    cuts = (p * (np.array(t.thresholds, dtype=np.float64) + 0.5)).astype(np.float32).reshape(-1, 1)
    return g.op("MultiThreshold", [v, g.const(cuts)], domain=QONNX, out_dtype="BIPOLAR", out_scale=2.0,
                out_bias=-1.0, data_layout="NCHW" if rank == 4 else "NC")


def write_onnx(path: str, model: Model, input_a, input_c, qonnx: bool = False) -> None:
    """Write the graph atomically."""
    from ..formats.files import atomic_open

    proto = to_onnx(model, input_a, input_c, qonnx)
    with atomic_open(path, "wb") as f:
        f.write(proto.SerializeToString())


def input_map_of(text: str, model: Model) -> tuple[np.ndarray, np.ndarray]:
    """(A, B) of `--input` for this model, as `refbnn import --input` reads it."""
    from ..importers.inputs import parse_input_map
    try:
        return parse_input_map(text, model.Z, model.input_shape[0])
    except ValueError as e:
        raise InputError(str(e)) from None

