"""ONNX ops on activations that become weight, affine, batch norm, clip, pool and flatten
steps (the layers of a BNN)."""
from __future__ import annotations

from dataclasses import replace
from math import prod
from typing import Optional

import numpy as np

from ..fold import RefusedError
from ..steps import AffineStep, BatchNormStep, ClipStep, FlattenStep, PoolStep, RoundStep, WeightStep
from .symbols import OpsBase, Sym, attrs


class LayerOps(OpsBase):
    """One method per op: op_<OpType>(node, name) returns the output's Sym."""

    def op_Identity(self, node, name):
        return self.sym[node.input[0]]

    op_Dropout = op_Identity

    def op_Gemm(self, node, name):
        a = attrs(node)
        x = self._act(node, name)
        if node.input[1] not in self.const or a.get("transA", 0):
            raise RefusedError(f"{name}: the weight must be a constant B (and transA = 0)")
        w = self.const[node.input[1]] * a.get("alpha", 1.0)
        w = self._columns_in_canonical_order(x, w if a.get("transB", 0) else w.T, name)
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = self._bias(node.input[2], w.shape[0], name) * a.get("beta", 1.0)
        return self._then(x, WeightStep(name, "linear", w, 0, bias), shape=(w.shape[0],))

    def op_MatMul(self, node, name):
        x = self._act(node, name)
        if node.input[1] not in self.const or self.const[node.input[1]].ndim != 2:
            raise RefusedError(f"{name}: the weight must be a constant matrix [K, N]")
        w = self._columns_in_canonical_order(x, self.const[node.input[1]].T, name)
        return self._then(x, WeightStep(name, "linear", w), shape=(w.shape[0],))

    @staticmethod
    def _columns_in_canonical_order(x: Sym, w: np.ndarray, name: str) -> np.ndarray:
        """The weight [N, K] of a dense layer as it reads refbnn's vector: a vector flattened in
        another order (H, W, C from an NHWC graph) has its columns permuted back, exactly."""
        if len(x.shape) != 1:
            raise RefusedError(f"{name}: a dense layer on a tensor of shape {list(x.actual_shape)}; "
                               "refbnn's linear layer reads a vector (flatten first)")
        if w.ndim != 2 or w.shape[1] != x.shape[0]:
            raise RefusedError(f"{name}: weight shape {list(w.shape)} for an input of {x.shape[0]} values")
        if x.order is None:
            return w
        canonical = np.empty_like(w)
        canonical[:, list(x.order)] = w
        return canonical

    def op_Conv(self, node, name):
        a = attrs(node)
        x = self._canonical(node, name, "a convolution")
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
        v = self._channels(const, x, name)
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

    def op_Round(self, node, name):
        return self._then(self._act(node, name), RoundStep(name))

    def op_Neg(self, node, name):
        return self._then(self._act(node, name), AffineStep(name, mul=np.float64(-1)))

    def op_BatchNormalization(self, node, name):
        x = self._canonical(node, name, "a batch norm")
        if not all(i in self.const for i in node.input[1:5]):
            raise RefusedError(f"{name}: scale, bias, mean and variance must be constants")
        g, b, m, v = (np.asarray(self.const[i], dtype=np.float64) for i in node.input[1:5])
        if any(p.shape != (x.shape[0],) for p in (g, b, m, v)):
            raise RefusedError(f"{name}: parameters of shapes {[list(p.shape) for p in (g, b, m, v)]} for "
                               f"{x.shape[0]} channels")
        if attrs(node).get("training_mode", 0):
            raise RefusedError(f"{name}: batch norm in training mode")
        return self._then(x, BatchNormStep(name, g, b, m, v, float(attrs(node).get("epsilon", 1e-5))))

    def op_Clip(self, node, name):
        x = self._act(node, name)
        a = attrs(node)
        lo, hi = a.get("min"), a.get("max")
        for k, attr in ((1, "lo"), (2, "hi")):
            if len(node.input) > k and node.input[k]:
                if node.input[k] not in self.const:
                    raise RefusedError(f"{name}: clip bounds must be constants")
                val = float(self.const[node.input[k]])
                lo, hi = (val, hi) if attr == "lo" else (lo, val)
        return self._then(x, ClipStep(name, lo, hi))

    def op_MaxPool(self, node, name):
        a = attrs(node)
        x = self._canonical(node, name, "max pooling")
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
        if attrs(node).get("axis", 1) != 1:
            raise RefusedError(f"{name}: flatten with axis {attrs(node)['axis']}; refbnn keeps the batch axis")
        return self._flat(x, name)

    def _flat(self, x: Sym, name: str) -> Sym:
        if x.kind != "act":
            raise RefusedError(f"{name}: flatten of a {x.kind} tensor")
        if len(x.shape) == 1:
            return x
        flat = self._then(x, FlattenStep(name), shape=(prod(x.shape),))
        if not x.layout:
            return flat
        # The graph flattens its own axis order (H, W, C for NHWC): entry j of its vector is
        # canonical entry order[j]; the next dense layer's columns are permuted back.
        order = np.arange(prod(x.shape)).reshape(x.shape).transpose(x.layout).ravel()
        return replace(flat, order=tuple(int(k) for k in order))

    def op_Reshape(self, node, name):
        x = self.sym[node.input[0]]
        if node.input[1] not in self.const:
            raise RefusedError(f"{name}: the target shape must be computable from constants")
        target = [int(t) for t in self.const[node.input[1]]]
        full = (1,) + x.actual_shape
        target = [full[k] if t == 0 and not attrs(node).get("allowzero", 0) else t for k, t in enumerate(target)]
        size = prod(full)
        if -1 in target:
            known = prod(t for t in target if t != -1)
            target[target.index(-1)] = size // known if known else 0
        if prod(target) != size or target[0] != 1:
            raise RefusedError(f"{name}: reshape to {target} of a tensor of shape {list(full)} (the batch axis "
                               "must stay first and whole)")
        return self._reshaped(x, tuple(target[1:]), name)

    def _reshaped(self, x: Sym, target: tuple[int, ...], name: str) -> Sym:
        """A reshape that only relabels axes: the same shape or a flatten (also when written as
        Squeeze/Unsqueeze of size-1 axes); anything else is refused."""
        if target == x.actual_shape:
            return x
        if len(target) == 1:
            return self._flat(x, name)
        moved = _size_one_axes_moved(x, target)
        if moved is not None:
            return moved
        raise RefusedError(f"{name}: reshape of {list(x.actual_shape)} to {list(target)}: only a flatten "
                           "(or adding/removing axes of size 1) is a layout change refbnn can follow")

    def _axes(self, node, name: str) -> list[int]:
        a = attrs(node)
        if "axes" in a:
            return [int(v) for v in a["axes"]]
        if len(node.input) > 1 and node.input[1]:
            return [int(v) for v in np.ravel(self._const_input(node, 1, name))]
        return []

    def op_Squeeze(self, node, name):
        x = self.sym[node.input[0]]
        full = (1,) + x.actual_shape
        axes = sorted(k % len(full) for k in self._axes(node, name)) or [k for k, d in enumerate(full) if d == 1]
        if 0 in axes:
            raise RefusedError(f"{name}: squeezing the batch axis")
        if any(full[k] != 1 for k in axes):
            raise RefusedError(f"{name}: squeezing an axis of size > 1")
        return self._reshaped(x, tuple(d for k, d in enumerate(full) if k not in axes)[1:], name)

    def op_Unsqueeze(self, node, name):
        x = self.sym[node.input[0]]
        rank = len(x.actual_shape) + 1
        axes = self._axes(node, name)
        out_rank = rank + len(axes)
        axes = sorted(k % out_rank for k in axes)
        if 0 in axes:
            raise RefusedError(f"{name}: a new axis before the batch axis")
        dims = iter(x.actual_shape)
        target = tuple(1 if k in axes else next(dims) for k in range(1, out_rank))
        return self._reshaped(x, target, name)

    def op_Transpose(self, node, name):
        x = self.sym[node.input[0]]
        rank = len(x.actual_shape) + 1
        perm = [int(p) for p in attrs(node).get("perm", list(range(rank))[::-1])]
        if sorted(perm) != list(range(rank)) or perm[0] != 0:
            raise RefusedError(f"{name}: transpose {perm} moves the batch axis; a layout Transpose keeps it first")
        if x.kind != "act":
            raise RefusedError(f"{name}: transpose of a {x.kind} tensor")
        old = x.layout or tuple(range(len(x.shape)))
        layout = tuple(old[p - 1] for p in perm[1:])
        if x.order is not None or len(x.shape) == 1:
            return x                     # a vector's only transpose is the identity
        return replace(x, layout=() if list(layout) == sorted(layout) else layout)


def _size_one_axes_moved(x: Sym, target: tuple[int, ...]) -> Optional[Sym]:
    """A reshape of a [C, H, W] tensor that only moves axes of size 1 (tf2onnx writes
    NHWC -> NCHW of one channel so) is a transpose: the same tensor with a new layout."""
    actual = x.actual_shape
    if x.kind != "act" or x.order is not None or len(target) != 3 or len(actual) != 3 or \
            [d for d in target if d != 1] != [d for d in actual if d != 1]:
        return None
    axes = x.layout or tuple(range(3))
    big = iter([axes[k] for k, d in enumerate(actual) if d != 1])
    ones = iter([axes[k] for k, d in enumerate(actual) if d == 1])
    layout = tuple(next(ones) if d == 1 else next(big) for d in target)
    return replace(x, layout=() if list(layout) == sorted(layout) else layout)
