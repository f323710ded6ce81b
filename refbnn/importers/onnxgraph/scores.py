"""The class scores: Softmax and LogSoftmax, and normalisations that keep the order of
each input's scores (subtracting one value per input, dividing by a positive one:
a decomposed LayerNorm with Pow/Sqrt, LayerNormalization, L2)."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import numpy as np

from ..fold import RefusedError
from ..steps import AffineStep, MonotoneStep
from .symbols import OpsBase, Sym, attrs


class ScoreOps(OpsBase):
    """One method per op: op_<OpType>(node, name) returns the output's Sym."""

    def op_Softmax(self, node, name):
        x = self._act(node, name)
        if attrs(node).get("axis", -1) not in (-1, 1) or len(x.shape) != 1:
            raise RefusedError(f"{name}: softmax over another axis than the classes")
        return self._then(x, MonotoneStep(name))

    op_LogSoftmax = op_Softmax

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
        a = attrs(node)
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
        if len(x.shape) != 1 or attrs(node).get("axis", -1) not in (-1, 1):
            raise RefusedError(f"{name}: a layer norm that is not over the class scores")
        scale = self._const_input(node, 1, name)
        bias = self._const_input(node, 2, name) if len(node.input) > 2 and node.input[2] else np.float64(0)
        return self._then(x, MonotoneStep(name), AffineStep(name, mul=self._channels(scale, x.shape, name),
                                                            add=self._channels(bias, x.shape, name)))
