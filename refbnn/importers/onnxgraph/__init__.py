"""Read an ONNX or QONNX graph into steps (refbnn.importers.steps), docs/semantics.md §10.

Real exported graphs compute much on constants: the binarised weights are often a
subgraph of the float latent weights (Greater/Where, Sign/Sub/Add of a
straight-through estimator, Transpose), shapes come from Shape/Gather/Concat. Every
node whose inputs are all constant is evaluated first (`onnx.reference`, and NumPy
for the three QONNX ops), `Shape` of an activation included, since its shape is
known. What remains is one chain of activations, matched op by op:

| ONNX ops | step |
|---|---|
| Gemm, MatMul, Conv (stride 1, padding p) | WeightStep (a bias too) |
| Add, Sub, Mul, Div with a constant; BatchNormalization | AffineStep, BatchNormStep |
| Clip | ClipStep |
| MaxPool 2x2 stride 2 | PoolStep |
| Flatten, Reshape to [batch, -1] (also as Squeeze) | FlattenStep |
| Transpose keeping the batch axis first | nothing: the tensor's `layout` (NHWC graphs) |
| Sign; Greater/Less(OrEqual) + Where or Cast; BipolarQuant; Quant (1 bit); MultiThreshold (1 step) | SignStep |
| x + (sign(x) - x) (a straight-through estimator) | the sign itself |
| Softmax, LogSoftmax at the end | MonotoneStep |
| Identity, Dropout | nothing |

Layout changes are bookkeeping: a tensor carries its axis order (`Sym.layout`), constants
on it are permuted back to [C, H, W], and a vector flattened in H, W, C order permutes
the next dense layer's columns. Anything else on an activation is refused with the
node's name, op, and what would make it representable (`refusals`).

The reader is split by job: `constants` (constant folding, the QONNX ops in NumPy),
`layers` (weight, affine, batch norm, clip, pool, flatten, layout), `binarise` (the sign
idioms), `scores` (the output's softmax and normalisations) and `refusals` (why an op
cannot be represented); this module walks the graph and dispatches each node to its
`op_<OpType>` handler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..fold import RefusedError
from ..steps import Step
from .binarise import BinariseOps
from .constants import evaluate_constant
from .layers import LayerOps
from .refusals import reason
from .scores import ScoreOps
from .symbols import QONNX_DOMAINS, Sym, attrs, node_name

__all__ = ["Graph", "read_graph", "QONNX_DOMAINS"]


@dataclass
class Graph:
    """The steps of a graph, its input and output."""

    steps: list[Step]
    input_name: str
    input_shape: Optional[tuple[int, ...]]     # without the batch axis; None if not static
    batch: Optional[int]                       # a fixed batch size, None if dynamic
    output_name: str
    qonnx: bool
    input_layout: tuple[int, ...] = ()          # (1, 2, 0): the graph reads [H, W, C] (NHWC)


class _Reader(LayerOps, BinariseOps, ScoreOps):
    """Walks the nodes in order: constants are evaluated, activations become Syms."""

    def __init__(self, model):
        self.model = model
        self.const: dict[str, np.ndarray] = {}
        self.sym: dict[str, Sym] = {}

    def node(self, node) -> None:
        name = node_name(node)
        ins = [i for i in node.input if i]
        if not ins or not node.output or not node.output[0]:
            raise RefusedError(f"{name}: a node without inputs or outputs")
        if node.op_type == "Shape" and ins[0] in self.sym:
            a = attrs(node)
            full = np.array((1,) + self.sym[ins[0]].actual_shape, dtype=np.int64)
            self.const[node.output[0]] = full[a.get("start", 0):a.get("end", len(full))]
            return
        if all(i in self.const for i in ins):
            evaluate_constant(node, self.const, self.model.opset_import)
            return
        missing = [i for i in ins if i not in self.const and i not in self.sym]
        if missing:
            raise RefusedError(f"{name}: input {missing[0]!r} is not produced before this node")
        handler = getattr(self, f"op_{node.op_type}", None)
        if handler is None or (node.domain not in ("", "ai.onnx") and node.domain not in QONNX_DOMAINS):
            raise RefusedError(f"{name}: {reason(node.op_type, node.domain)}")
        try:
            out = handler(node, name)
        except RefusedError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, AttributeError, ZeroDivisionError) as e:
            # attributes or constants of the wrong type or shape: a damaged or hand-made node
            raise RefusedError(f"{name}: malformed ({type(e).__name__}: {str(e)[:100]})") from None
        if out is not None:
            self.sym[node.output[0]] = out


def _static_shape(value_info) -> tuple[Optional[int], Optional[tuple[int, ...]]]:
    dims = value_info.type.tensor_type.shape.dim
    vals = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if not vals:
        return None, None
    rest = vals[1:]
    return vals[0], (tuple(rest) if all(v for v in rest) else None)


_ELEMENTWISE = {"Identity", "Cast", "Mul", "Add", "Sub", "Div", "Neg", "Clip", "Sign"}
NHWC_TO_NCHW = [0, 3, 1, 2]


def _reads_nhwc(graph, input_name: str, shape: Optional[tuple[int, ...]]) -> bool:
    """True when the graph input is NHWC: the first node on it (past elementwise ops, such as
    an input scaling) that cares about axes is a Transpose to NCHW, as tf2onnx writes it, or,
    for one channel, the Reshape [H, W, 1] -> [1, H, W] that tf2onnx writes instead."""
    from onnx import numpy_helper

    inits = {t.name: t for t in graph.initializer}
    derived = {input_name}
    for node in graph.node:
        if not derived.intersection(node.input):
            continue
        if node.op_type == "Transpose":
            perm = [a.ints for a in node.attribute if a.name == "perm"]
            return bool(perm) and list(perm[0]) == NHWC_TO_NCHW
        if node.op_type == "Reshape" and shape is not None and len(shape) == 3 and shape[2] == 1 \
                and len(node.input) > 1 and node.input[1] in inits:
            target = [int(v) for v in numpy_helper.to_array(inits[node.input[1]])]
            return target[1:] == [1, shape[0], shape[1]]
        if node.op_type not in _ELEMENTWISE:
            return False
        derived.update(node.output)
    return False


def read_graph(model, input_shape: Optional[tuple[int, ...]] = None) -> Graph:
    """The steps of an ONNX ModelProto; `input_shape` ([C, H, W] or [K]) where the graph has none."""
    from onnx import numpy_helper

    g = model.graph
    reader = _Reader(model)
    for init in g.initializer:
        try:
            reader.const[init.name] = numpy_helper.to_array(init)
        except Exception as e:   # a damaged tensor: data that does not fit its dims or type
            raise RefusedError(f"initializer {init.name[:80]!r}: unreadable ({type(e).__name__}: "
                               f"{str(e)[:100]})") from None
    inputs = [i for i in g.input if i.name not in reader.const]
    if len(inputs) != 1:
        raise RefusedError(f"graph: {len(inputs)} inputs; refbnn models have one")
    if len(g.output) < 1:
        raise RefusedError("graph: no output")
    batch, shape = _static_shape(inputs[0])
    nhwc = _reads_nhwc(g, inputs[0].name, shape) and (input_shape is not None or len(shape or ()) == 3)
    if nhwc and input_shape is None:
        shape = (shape[2], shape[0], shape[1])      # refbnn's model and data keep [C, H, W]
    shape = input_shape or shape
    if shape is None:
        raise RefusedError(f"graph input {inputs[0].name!r}: the shape is not static; give --input-shape C,H,W")
    layout = (1, 2, 0) if nhwc else ()
    reader.sym[inputs[0].name] = Sym((), tuple(shape), layout=layout)
    for node in g.node:
        if node.op_type == "Constant":
            evaluate_constant(node, reader.const, model.opset_import)
            continue
        if node.op_type in ("If", "Loop", "Scan"):
            raise RefusedError(f"{node_name(node)}: control flow")
        reader.node(node)
    out = g.output[0].name
    result = reader.sym.get(out)
    if result is None or result.kind != "act":
        raise RefusedError(f"graph output {out!r}: not computed from the input as a float tensor")
    qonnx = any(n.domain in QONNX_DOMAINS for n in g.node)
    return Graph(list(result.steps), inputs[0].name, tuple(shape), batch, out, qonnx, layout)
