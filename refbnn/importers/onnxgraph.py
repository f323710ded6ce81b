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
| Flatten, Reshape to [batch, -1] | FlattenStep |
| Sign; Greater/Less(OrEqual) + Where or Cast; BipolarQuant; Quant (1 bit); MultiThreshold (1 step) | SignStep |
| x + (sign(x) - x) (a straight-through estimator) | the sign itself |
| Softmax, LogSoftmax at the end | MonotoneStep |
| Identity, Dropout | nothing |

Anything else on an activation is refused with the node's name and op.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Optional

import numpy as np

from .fold import RefusedError
from .steps import AffineStep, BatchNormStep, ClipStep, FlattenStep, MonotoneStep, PoolStep, SignStep, Step, WeightStep

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "qonnx", "finn")


@dataclass(frozen=True)
class Sym:
    """An activation tensor: the steps that compute it from the graph input, and its shape
    (without the batch axis). `kind`:
    - "act": a float tensor;
    - "cond": a boolean, v > 0 (`strict`) or v >= 0, v the value after `steps`;
    - "residual": sign(X) - X of a straight-through estimator (`ref`: the sign's Sym);
    - "square": the class scores squared (>= 0), on the way to a normalisation;
    - "persample": one value per input, the same for every class (a reduction over the
      classes), with `sign` "pos", "nonneg" or "any".
    `base`: for a binarised tensor, the steps of the tensor that was binarised."""

    steps: tuple
    shape: tuple[int, ...]
    kind: str = "act"
    strict: bool = True
    ref: Optional["Sym"] = None
    base: Optional[tuple] = None
    sign: str = "any"


@dataclass
class Graph:
    """The steps of a graph, its input and output."""

    steps: list[Step]
    input_name: str
    input_shape: Optional[tuple[int, ...]]     # without the batch axis; None if not static
    batch: Optional[int]                       # a fixed batch size, None if dynamic
    output_name: str
    qonnx: bool


def _name(node) -> str:
    return f"node {(node.name or (node.output[0] if node.output else '?'))[:80]!r} ({node.op_type[:40]})"


def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


# -- the three QONNX ops, as qonnx.custom_op.general defines them ---------------------------

def _bipolar_quant(x, scale):
    return np.where(x >= 0, 1.0, -1.0).astype(x.dtype) * scale


_QUANT_CUTS = {   # 1-bit unsigned Quant: clamp y to [0, 1], then round; high iff y > cut (strict) or >= cut
    "ROUND": (0.5, True), "HALF_EVEN": (0.5, True), "HALF_UP": (0.5, False), "HALF_DOWN": (0.5, True),
    "CEIL": (0.0, True), "FLOOR": (1.0, False), "UP": (0.0, True), "DOWN": (1.0, False)}


def _quant(x, scale, zeropt, bitwidth, signed=1, narrow=0, rounding_mode="ROUND"):
    y = x / scale + zeropt
    if bitwidth == 1 and signed:
        q = np.where(y >= 0, 1.0, -1.0)
    else:
        lo = (-(2 ** (bitwidth - 1)) + int(narrow)) if signed else 0
        hi = (2 ** (bitwidth - 1) - 1) if signed else (2 ** bitwidth - 1 - int(narrow))
        y = np.clip(y, lo, hi)
        mode = rounding_mode.upper() if isinstance(rounding_mode, str) else rounding_mode.decode().upper()
        rounders = {"ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor,
                    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)), "DOWN": np.fix,
                    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
                    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5)}
        q = rounders[mode](y)
    return ((q - zeropt) * scale).astype(x.dtype)


def _multithreshold(x, thresholds, out_scale=1.0, out_bias=0.0, data_layout="NCHW", **_):
    v = np.moveaxis(x, 1, -1)[..., None]
    y = np.count_nonzero(v >= thresholds, axis=-1).astype(x.dtype)
    return np.moveaxis(y, -1, 1) * out_scale + out_bias


_QONNX_EVAL = {"BipolarQuant": _bipolar_quant, "Quant": _quant, "IntQuant": _quant,
               "MultiThreshold": _multithreshold}


class _Reader:
    """Walks the nodes in order: constants are evaluated, activations become Syms."""

    def __init__(self, model):
        self.model = model
        self.const: dict[str, np.ndarray] = {}
        self.sym: dict[str, Sym] = {}

    # -- constants -------------------------------------------------------------------------

    def evaluate(self, node) -> None:
        """Fold a node whose inputs are all constant."""
        from onnx import NodeProto, helper
        from onnx.reference import ReferenceEvaluator

        args = [self.const[i] if i else None for i in node.input]
        if node.domain in QONNX_DOMAINS:
            fn = _QONNX_EVAL.get(node.op_type)
            if fn is None:
                raise RefusedError(f"{_name(node)}: unknown QONNX op")
            try:
                out = [fn(*[a for a in args if a is not None], **_attrs(node))]
            except Exception as e:   # wrong inputs or attributes for the op
                raise RefusedError(f"{_name(node)}: cannot evaluate on its constant inputs "
                                   f"({type(e).__name__}: {str(e)[:120]})") from None
        else:
            names = [f"in{k}" if i else "" for k, i in enumerate(node.input)]
            try:
                inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                          for n, a in zip(names, args) if n]
                outs = [helper.make_tensor_value_info(f"out{k}", 0, None) for k in range(len(node.output))]
                one = NodeProto()
                one.CopyFrom(node)         # the node as it is, attributes included, with renamed tensors
                del one.input[:], one.output[:]
                one.input.extend(names)
                one.output.extend(o.name for o in outs)
                g = helper.make_graph([one], "fold", inputs, outs)
                m = helper.make_model(g, opset_imports=self.model.opset_import)
                out = ReferenceEvaluator(m).run(None, {n: a for n, a in zip(names, args) if n})
            except Exception as e:   # an op the evaluator does not know, or bad attributes
                raise RefusedError(f"{_name(node)}: cannot evaluate on its constant inputs "
                                   f"({type(e).__name__}: {str(e)[:120]})") from None
        for name, value in zip(node.output, out):
            if name:
                self.const[name] = np.asarray(value)

    # -- activations ----------------------------------------------------------------------

    def node(self, node) -> None:
        name = _name(node)
        ins = [i for i in node.input if i]
        if not ins or not node.output or not node.output[0]:
            raise RefusedError(f"{name}: a node without inputs or outputs")
        if node.op_type == "Shape" and ins[0] in self.sym:
            a = _attrs(node)
            full = np.array((1,) + self.sym[ins[0]].shape, dtype=np.int64)
            self.const[node.output[0]] = full[a.get("start", 0):a.get("end", len(full))]
            return
        if all(i in self.const for i in ins):
            self.evaluate(node)
            return
        missing = [i for i in ins if i not in self.const and i not in self.sym]
        if missing:
            raise RefusedError(f"{name}: input {missing[0]!r} is not produced before this node")
        handler = getattr(self, f"op_{node.op_type}", None)
        if handler is None or (node.domain not in ("", "ai.onnx") and node.domain not in QONNX_DOMAINS):
            raise RefusedError(f"{name}: this op on an activation is not something refbnn can represent")
        try:
            out = handler(node, name)
        except RefusedError:
            raise
        except (TypeError, ValueError, IndexError, KeyError, AttributeError, ZeroDivisionError) as e:
            # attributes or constants of the wrong type or shape: a damaged or hand-made node
            raise RefusedError(f"{name}: malformed ({type(e).__name__}: {str(e)[:100]})") from None
        if out is not None:
            self.sym[node.output[0]] = out

    def _act(self, node, name: str, k: int = 0) -> Sym:
        s = self.sym.get(node.input[k])
        if s is None or s.kind != "act":
            raise RefusedError(f"{name}: input {k} must be a float activation")
        return s

    def _one_act(self, node, name: str) -> tuple[Sym, np.ndarray, int]:
        """The activation and the constant of a binary elementwise op, and the activation's position."""
        a, b = node.input[0], node.input[1]
        if a in self.sym and b in self.const:
            return self.sym[a], self.const[b], 0
        if b in self.sym and a in self.const:
            return self.sym[b], self.const[a], 1
        raise RefusedError(f"{name}: an elementwise op of two activations (a residual connection?)")

    @staticmethod
    def _channels(const: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
        """A constant that broadcasts against [batch, *shape] as one value per channel (or a scalar)."""
        const = np.asarray(const, dtype=np.float64)
        if const.ndim > len(shape) + 1:
            raise RefusedError(f"{name}: a constant of rank {const.ndim} on an activation of rank {len(shape) + 1}")
        try:
            full = np.broadcast_to(const, (1,) + tuple(shape))[0]
        except ValueError:
            raise RefusedError(f"{name}: constant of shape {list(const.shape)} does not broadcast "
                               f"to the activation's shape {list(shape)}") from None
        rows = full.reshape(shape[0], -1)
        if not np.all(rows == rows[:, :1]):
            raise RefusedError(f"{name}: a constant that varies within a channel (over positions)")
        v = rows[:, 0]
        return np.float64(v[0]) if np.all(v == v[0]) else v

    @staticmethod
    def _then(s: Sym, *steps: Step, shape: Optional[tuple] = None, **kw) -> Sym:
        return Sym(s.steps + steps, s.shape if shape is None else shape, **kw)

    # -- one method per op ----------------------------------------------------------------

    def op_Identity(self, node, name):
        return self.sym[node.input[0]]

    op_Dropout = op_Identity

    def op_Gemm(self, node, name):
        a = _attrs(node)
        x = self._act(node, name)
        if node.input[1] not in self.const or a.get("transA", 0):
            raise RefusedError(f"{name}: the weight must be a constant B (and transA = 0)")
        w = self.const[node.input[1]] * a.get("alpha", 1.0)
        w = w if a.get("transB", 0) else w.T
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = self._bias(node.input[2], w.shape[0], name) * a.get("beta", 1.0)
        return self._then(x, WeightStep(name, "linear", w, 0, bias), shape=(w.shape[0],))

    def op_MatMul(self, node, name):
        x = self._act(node, name)
        if node.input[1] not in self.const or self.const[node.input[1]].ndim != 2:
            raise RefusedError(f"{name}: the weight must be a constant matrix [K, N]")
        w = self.const[node.input[1]].T
        return self._then(x, WeightStep(name, "linear", w), shape=(w.shape[0],))

    def op_Conv(self, node, name):
        a = _attrs(node)
        x = self._act(node, name)
        if node.input[1] not in self.const:
            raise RefusedError(f"{name}: the weight must be a constant")
        w = self.const[node.input[1]]
        pads = list(a.get("pads", [0] * 4))
        if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            raise RefusedError(f"{name}: auto_pad {a['auto_pad']!r}; export with explicit pads")
        if any(s != 1 for s in a.get("strides", [1, 1])):
            raise RefusedError(f"{name}: stride {list(a['strides'])}; refbnn's conv2d has stride 1")
        if any(d != 1 for d in a.get("dilations", [1, 1])) or a.get("group", 1) != 1:
            raise RefusedError(f"{name}: dilation or groups; refbnn's conv2d has neither")
        if w.ndim != 4 or len(set(pads)) != 1:
            raise RefusedError(f"{name}: a 2-d convolution with equal padding on all sides is needed "
                               f"(weight {list(w.shape)}, pads {pads})")
        bias = self._bias(node.input[2], w.shape[0], name) if len(node.input) > 2 and node.input[2] else None
        p = pads[0]
        shape = (w.shape[0], x.shape[1] + 2 * p - w.shape[2] + 1, x.shape[2] + 2 * p - w.shape[3] + 1) \
            if len(x.shape) == 3 else x.shape
        return self._then(x, WeightStep(name, "conv2d", w, p, bias), shape=shape)

    def _bias(self, tensor: str, n: int, name: str) -> np.ndarray:
        if tensor not in self.const:
            raise RefusedError(f"{name}: the bias must be a constant")
        b = np.asarray(self.const[tensor], dtype=np.float64)
        try:
            return np.broadcast_to(b, (1, n))[0].copy()
        except ValueError:
            raise RefusedError(f"{name}: bias of shape {list(b.shape)} for {n} outputs") from None

    def _elementwise(self, node, name, op: str):
        # The straight-through estimator x + (sign(x) - x): a Sub and an Add of two activations.
        a, b = self.sym.get(node.input[0]), self.sym.get(node.input[1])
        if a is not None and b is not None:
            if op == "Sub" and a.base is not None and a.base is b.steps:
                return Sym(b.steps, b.shape, kind="residual", ref=a)
            if op == "Add":
                for r, x in ((a, b), (b, a)):
                    if r.kind == "residual" and r.steps is x.steps:
                        return r.ref
            return self._scores_by_sample(a, b, name, op)
        x, const, pos = self._one_act(node, name)
        if x.kind == "persample":
            return self._persample_const(x, const, pos, name, op)
        if x.kind != "act":
            raise RefusedError(f"{name}: {op} of a {x.kind} tensor")
        v = self._channels(const, x.shape, name)
        if op == "Add":
            step = AffineStep(name, add=v)
        elif op == "Sub":
            step = AffineStep(name, add=-v) if pos == 0 else AffineStep(name, mul=np.float64(-1), add=v)
        elif op == "Mul":
            step = AffineStep(name, mul=v)
        else:
            if pos == 1:
                raise RefusedError(f"{name}: a constant divided by an activation")
            if np.any(v == 0):
                raise RefusedError(f"{name}: division by zero")
            step = AffineStep(name, mul=1.0 / v)
        # A scale keeps a binarised tensor recognisable for the straight-through pattern.
        return self._then(x, step, base=x.base if op in ("Mul", "Div") else None)

    def op_Add(self, node, name):
        return self._elementwise(node, name, "Add")

    def op_Sub(self, node, name):
        return self._elementwise(node, name, "Sub")

    def op_Mul(self, node, name):
        return self._elementwise(node, name, "Mul")

    def op_Div(self, node, name):
        return self._elementwise(node, name, "Div")

    def op_Neg(self, node, name):
        return self._then(self._act(node, name), AffineStep(name, mul=np.float64(-1)))

    def op_BatchNormalization(self, node, name):
        x = self._act(node, name)
        if not all(i in self.const for i in node.input[1:5]):
            raise RefusedError(f"{name}: scale, bias, mean and variance must be constants")
        g, b, m, v = (np.asarray(self.const[i], dtype=np.float64) for i in node.input[1:5])
        if any(p.shape != (x.shape[0],) for p in (g, b, m, v)):
            raise RefusedError(f"{name}: parameters of shapes {[list(p.shape) for p in (g, b, m, v)]} for "
                               f"{x.shape[0]} channels")
        if _attrs(node).get("training_mode", 0):
            raise RefusedError(f"{name}: batch norm in training mode")
        return self._then(x, BatchNormStep(name, g, b, m, v, float(_attrs(node).get("epsilon", 1e-5))))

    def op_Clip(self, node, name):
        x = self._act(node, name)
        a = _attrs(node)
        lo, hi = a.get("min"), a.get("max")
        for k, attr in ((1, "lo"), (2, "hi")):
            if len(node.input) > k and node.input[k]:
                if node.input[k] not in self.const:
                    raise RefusedError(f"{name}: clip bounds must be constants")
                val = float(self.const[node.input[k]])
                lo, hi = (val, hi) if attr == "lo" else (lo, val)
        return self._then(x, ClipStep(name, lo, hi))

    def op_MaxPool(self, node, name):
        a = _attrs(node)
        x = self._act(node, name)
        if list(a.get("kernel_shape", [])) != [2, 2] or list(a.get("strides", [1, 1])) != [2, 2] or \
                any(a.get("pads", [0])) or a.get("ceil_mode", 0) or any(d != 1 for d in a.get("dilations", [1])):
            raise RefusedError(f"{name}: pooling other than 2x2 windows, stride 2, no padding, floor "
                               f"(kernel {list(a.get('kernel_shape', []))}, strides {list(a.get('strides', []))})")
        if len(node.output) > 1 and node.output[1]:
            raise RefusedError(f"{name}: MaxPool with indices")
        shape = (x.shape[0], x.shape[1] // 2, x.shape[2] // 2) if len(x.shape) == 3 else x.shape
        return self._then(x, PoolStep(name), shape=shape, base=None)

    def op_Flatten(self, node, name):
        x = self.sym[node.input[0]]
        if _attrs(node).get("axis", 1) != 1:
            raise RefusedError(f"{name}: flatten with axis {_attrs(node)['axis']}; refbnn keeps the batch axis")
        return self._flat(x, name)

    def _flat(self, x: Sym, name: str) -> Sym:
        if x.kind != "act":
            raise RefusedError(f"{name}: flatten of a {x.kind} tensor")
        if len(x.shape) == 1:
            return x
        return self._then(x, FlattenStep(name), shape=(prod(x.shape),))

    def op_Reshape(self, node, name):
        x = self.sym[node.input[0]]
        if node.input[1] not in self.const:
            raise RefusedError(f"{name}: the target shape must be computable from constants")
        target = [int(t) for t in self.const[node.input[1]]]
        full = (1,) + x.shape
        target = [full[k] if t == 0 and not _attrs(node).get("allowzero", 0) else t for k, t in enumerate(target)]
        size = prod(full)
        if -1 in target:
            known = prod(t for t in target if t != -1)
            target[target.index(-1)] = size // known if known else 0
        if prod(target) != size or target[0] != 1:
            raise RefusedError(f"{name}: reshape to {target} of a tensor of shape {list(full)}")
        if tuple(target[1:]) == x.shape:
            return x
        if len(target) == 2:
            return self._flat(x, name)
        raise RefusedError(f"{name}: reshape of {list(full)} to {target} (only a flatten is supported)")

    def op_Sign(self, node, name):
        x = self._act(node, name)
        return self._then(x, SignStep(name, strict=True, zero=True, tensor=node.output[0]), base=x.steps)

    def _compare(self, node, name, strict: bool, greater: bool):
        x, const, pos = self._one_act(node, name)
        if x.kind != "act":
            raise RefusedError(f"{name}: comparison of a {x.kind} tensor")
        v = self._channels(const, x.shape, name)
        # x > c is x - c > 0; c > x (x < c) is c - x > 0.
        if greater == (pos == 0):
            step = AffineStep(name, add=-v)
        else:
            step = AffineStep(name, mul=np.float64(-1), add=v)
        return Sym(x.steps + (step,), x.shape, kind="cond", strict=strict, base=x.steps)

    def op_Greater(self, node, name):
        return self._compare(node, name, True, True)

    def op_GreaterOrEqual(self, node, name):
        return self._compare(node, name, False, True)

    def op_Less(self, node, name):
        return self._compare(node, name, True, False)

    def op_LessOrEqual(self, node, name):
        return self._compare(node, name, False, False)

    def op_Not(self, node, name):
        c = self.sym[node.input[0]]
        if c.kind != "cond":
            raise RefusedError(f"{name}: Not of a non-boolean tensor")
        # not (v > 0) is -v >= 0, and not (v >= 0) is -v > 0.
        return replace(c, steps=c.steps + (AffineStep(name, mul=np.float64(-1)),), strict=not c.strict)

    def _binarise(self, c: Sym, name: str, tensor: str, low, high) -> Sym:
        """The two-level tensor `high` where cond holds, else `low`."""
        low = self._channels(low, c.shape, name)
        high = self._channels(high, c.shape, name)
        if np.any(np.asarray(low) == np.asarray(high)):
            raise RefusedError(f"{name}: both branches equal: a constant, not an activation")
        levels = (float(np.ravel(low)[0]), float(np.ravel(high)[0]))
        sign = SignStep(name, strict=c.strict, tensor=tensor if np.ndim(low) == 0 and np.ndim(high) == 0 else None,
                        levels=levels)
        affine = AffineStep(name, mul=(np.asarray(high) - np.asarray(low)) / 2, add=(np.asarray(high) + low) / 2)
        return Sym(c.steps + (sign, affine), c.shape, base=c.base)

    def op_Where(self, node, name):
        c = self.sym.get(node.input[0])
        if c is None or c.kind != "cond" or node.input[1] not in self.const or node.input[2] not in self.const:
            raise RefusedError(f"{name}: Where needs a comparison and two constant branches")
        return self._binarise(c, name, node.output[0], self.const[node.input[2]], self.const[node.input[1]])

    def op_Cast(self, node, name):
        c = self.sym[node.input[0]]
        if c.kind == "cond":
            return self._binarise(c, name, node.output[0], np.float64(0), np.float64(1))
        if c.kind == "act":
            return c      # a float-to-float cast
        raise RefusedError(f"{name}: cast of a {c.kind} tensor")

    def op_Softmax(self, node, name):
        x = self._act(node, name)
        if _attrs(node).get("axis", -1) not in (-1, 1) or len(x.shape) != 1:
            raise RefusedError(f"{name}: softmax over another axis than the classes")
        return self._then(x, MonotoneStep(name))

    op_LogSoftmax = op_Softmax

    # -- a normalisation of the class scores: x - mean(x), x / sqrt(mean(x^2) + eps), ... --
    # Subtracting one value per input from every class, or dividing every class by one
    # positive value per input, keeps the order of the scores, hence the prediction.

    def _scores_by_sample(self, a: Sym, b: Sym, name: str, op: str) -> Sym:
        if op == "Mul" and a is b and a.kind == "act" and len(a.shape) == 1:
            return Sym(a.steps, a.shape, kind="square")
        if a.kind == "act" and b.kind == "persample":
            if op in ("Add", "Sub") or (op in ("Mul", "Div") and b.sign == "pos"):
                return self._then(a, MonotoneStep(name))
        if a.kind == "persample" and b.kind == "act" and (op == "Add" or (op == "Mul" and a.sign == "pos")):
            return self._then(b, MonotoneStep(name))
        raise RefusedError(f"{name}: an elementwise op of two activations (a residual connection?)")

    def _persample_const(self, p: Sym, const, pos: int, name: str, op: str) -> Sym:
        c = np.asarray(const, dtype=np.float64)
        if c.size != 1:
            raise RefusedError(f"{name}: {op} of a per-input value with a tensor")
        v = float(c.ravel()[0])
        if op == "Add" or (op == "Sub" and pos == 0):
            v = v if op == "Add" else -v
            sign = "pos" if (p.sign == "pos" and v >= 0) or (p.sign == "nonneg" and v > 0) else \
                ("nonneg" if p.sign in ("pos", "nonneg") and v == 0 else "any")
        elif op in ("Mul", "Div") and pos == 0 and v > 0:
            sign = p.sign
        else:
            sign = "any"
        return replace(p, sign=sign)

    def _reduce(self, node, name, sign: Optional[str] = None) -> Sym:
        x = self.sym[node.input[0]]
        a = _attrs(node)
        axes = a.get("axes")
        if len(node.input) > 1 and node.input[1]:
            axes = self.const.get(node.input[1])
        if x.kind not in ("act", "square", "persample") or len(x.shape) != 1 or axes is None or \
                sorted(int(v) % 2 for v in np.ravel(axes)) != [1] or not a.get("keepdims", 1):
            raise RefusedError(f"{name}: a reduction that is not over the class scores of each input")
        if sign is None:
            sign = "nonneg" if x.kind == "square" else (x.sign if x.kind == "persample" else "any")
        return Sym(x.steps, (1,), kind="persample", sign=sign)

    def op_ReduceMean(self, node, name):
        return self._reduce(node, name)

    op_ReduceSum = op_ReduceMax = op_ReduceMin = op_ReduceMean

    def op_ReduceL2(self, node, name):
        return self._reduce(node, name, "nonneg")

    op_ReduceL1 = op_ReduceSumSquare = op_ReduceL2

    def op_Pow(self, node, name):
        x = self.sym[node.input[0]]
        e = self._const_input(node, 1, name)
        e = float(np.ravel(e)[0]) if np.size(e) == 1 else None
        if x.kind == "act" and len(x.shape) == 1 and e is not None and e > 0 and e == int(e) and int(e) % 2 == 0:
            return Sym(x.steps, x.shape, kind="square")
        if x.kind == "persample" and e is not None and x.sign in ("pos", "nonneg"):
            return replace(x, sign=x.sign if e > 0 or x.sign == "pos" else "any")
        raise RefusedError(f"{name}: a power that is not the square of the class scores or of a per-input value")

    def op_Sqrt(self, node, name):
        x = self.sym[node.input[0]]
        if x.kind != "persample" or x.sign not in ("pos", "nonneg"):
            raise RefusedError(f"{name}: a square root of something other than a non-negative per-input value")
        return x

    def op_LayerNormalization(self, node, name):
        x = self._act(node, name)
        if len(x.shape) != 1 or _attrs(node).get("axis", -1) not in (-1, 1):
            raise RefusedError(f"{name}: a layer norm that is not over the class scores")
        scale = self._const_input(node, 1, name)
        bias = self._const_input(node, 2, name) if len(node.input) > 2 and node.input[2] else np.float64(0)
        return self._then(x, MonotoneStep(name), AffineStep(name, mul=self._channels(scale, x.shape, name),
                                                            add=self._channels(bias, x.shape, name)))

    # -- QONNX --------------------------------------------------------------------------

    def op_BipolarQuant(self, node, name):
        x = self._act(node, name)
        scale = self._channels(self._const_input(node, 1, name), x.shape, name)
        if np.any(np.asarray(scale) <= 0):
            raise RefusedError(f"{name}: a scale that is not positive")
        cond = Sym(x.steps, x.shape, kind="cond", strict=False, base=x.steps)
        return self._binarise(cond, name, node.output[0], -np.asarray(scale), np.asarray(scale))

    def op_Quant(self, node, name):
        x = self._act(node, name)
        a = _attrs(node)
        scale, zeropt, bits = (self._const_input(node, k, name) for k in (1, 2, 3))
        if not np.all(bits == 1):
            raise RefusedError(f"{name}: a {int(np.ravel(bits)[0])}-bit quantizer: activations with more than "
                               "two levels")
        scale = self._channels(scale, x.shape, name)
        zeropt = self._channels(zeropt, x.shape, name)
        if np.any(np.asarray(scale) <= 0):
            raise RefusedError(f"{name}: a scale that is not positive")
        if a.get("signed", 1):
            qlo, qhi, cut, strict = -1.0, 1.0, 0.0, False    # qonnx: 1-bit signed is bipolar, y >= 0
        else:
            if a.get("narrow", 0):
                raise RefusedError(f"{name}: a 1-bit unsigned narrow quantizer is constant")
            mode = a.get("rounding_mode", b"ROUND")
            mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
            if mode not in _QUANT_CUTS:
                raise RefusedError(f"{name}: rounding mode {mode!r}")
            cut, strict = _QUANT_CUTS[mode]
            qlo, qhi = 0.0, 1.0
        # y = x / scale + zeropt is high iff y > cut (or >=): x - scale (cut - zeropt) > 0.
        shift = AffineStep(name, add=-np.asarray(scale) * (cut - np.asarray(zeropt)))
        cond = Sym(x.steps + (shift,), x.shape, kind="cond", strict=strict, base=x.steps)
        low = (qlo - np.asarray(zeropt)) * np.asarray(scale)
        high = (qhi - np.asarray(zeropt)) * np.asarray(scale)
        return self._binarise(cond, name, node.output[0], low, high)

    op_IntQuant = op_Quant

    def op_MultiThreshold(self, node, name):
        x = self._act(node, name)
        a = _attrs(node)
        layout = a.get("data_layout", b"NCHW")
        layout = layout.decode() if isinstance(layout, bytes) else layout
        if layout not in ("", "NCHW", "NC"):
            raise RefusedError(f"{name}: data layout {layout!r}; refbnn reads channels first")
        t = np.asarray(self._const_input(node, 1, name), dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != 1:
            raise RefusedError(f"{name}: {t.shape[-1] if t.ndim == 2 else '?'} thresholds per channel: "
                               "activations with more than two levels")
        thr = self._channels(t[:, 0] if t.shape[0] > 1 else t[0, 0], x.shape, name)
        cond = Sym(x.steps + (AffineStep(name, add=-np.asarray(thr)),), x.shape, kind="cond", strict=False,
                   base=x.steps)
        scale, bias = float(a.get("out_scale", 1.0)), float(a.get("out_bias", 0.0))
        return self._binarise(cond, name, node.output[0], np.float64(bias), np.float64(scale + bias))

    def _const_input(self, node, k: int, name: str) -> np.ndarray:
        if len(node.input) <= k or node.input[k] not in self.const:
            raise RefusedError(f"{name}: input {k} must be a constant")
        return self.const[node.input[k]]


def _static_shape(value_info) -> tuple[Optional[int], Optional[tuple[int, ...]]]:
    dims = value_info.type.tensor_type.shape.dim
    vals = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if not vals:
        return None, None
    rest = vals[1:]
    return vals[0], (tuple(rest) if all(v for v in rest) else None)


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
    shape = input_shape or shape
    if shape is None:
        raise RefusedError(f"graph input {inputs[0].name!r}: the shape is not static; give --input-shape C,H,W")
    reader.sym[inputs[0].name] = Sym((), tuple(shape))
    for node in g.node:
        if node.op_type == "Constant":
            reader.evaluate(node)
            continue
        if node.op_type in ("If", "Loop", "Scan"):
            raise RefusedError(f"{_name(node)}: control flow")
        reader.node(node)
    out = g.output[0].name
    result = reader.sym.get(out)
    if result is None or result.kind != "act":
        raise RefusedError(f"graph output {out!r}: not computed from the input as a float tensor")
    qonnx = any(n.domain in QONNX_DOMAINS for n in g.node)
    return Graph(list(result.steps), inputs[0].name, tuple(shape), batch, out, qonnx)
