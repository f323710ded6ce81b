"""ONNX ops on activations that become weight, affine, batch norm, clip, pool and flatten
steps (the layers of a BNN)."""
from __future__ import annotations

from math import prod

import numpy as np

from ..fold import RefusedError
from ..steps import AffineStep, BatchNormStep, ClipStep, FlattenStep, PoolStep, WeightStep
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
        a = attrs(node)
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
        if attrs(node).get("axis", 1) != 1:
            raise RefusedError(f"{name}: flatten with axis {attrs(node)['axis']}; refbnn keeps the batch axis")
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
        target = [full[k] if t == 0 and not attrs(node).get("allowzero", 0) else t for k, t in enumerate(target)]
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
