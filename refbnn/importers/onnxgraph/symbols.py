"""What the ONNX reader tracks per tensor (`Sym`), node helpers, and the shared base of
the op handlers: looking up activations and constants, per-channel constants."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from ..fold import RefusedError
from ..steps import Step

# The QONNX ops under every name they were published with: qonnx's own, FINN's, and the
# `onnx.brevitas` of the FINN model zoo's bnn_pynq files (Brevitas' old export).
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general", "qonnx", "finn", "onnx.brevitas")


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
    `base`: for a binarised tensor, the steps of the tensor that was binarised.

    `shape` and the steps are always in refbnn's canonical layout ([C, H, W], a vector in
    C order). A graph that holds the tensor otherwise (NHWC after a layout Transpose, a
    vector flattened in H, W, C order) is described by `layout` or `order`: layout changes
    are bookkeeping, never steps (docs/semantics.md §10.1)."""

    steps: tuple
    shape: tuple[int, ...]
    kind: str = "act"
    strict: bool = True
    ref: Optional["Sym"] = None
    base: Optional[tuple] = None
    sign: str = "any"
    layout: tuple[int, ...] = ()       # actual axis k holds canonical axis layout[k]; () = canonical
    order: Optional[tuple[int, ...]] = None   # a vector: actual entry j is canonical entry order[j]

    @property
    def actual_shape(self) -> tuple[int, ...]:
        """The shape the source graph sees (the canonical [C, H, W] shape permuted by `layout`)."""
        return tuple(self.shape[k] for k in self.layout) if self.layout else self.shape

    def derive(self, steps: tuple, **kw) -> "Sym":
        """A tensor of the same shape and layout computed by `steps` (an elementwise map)."""
        return replace(self, steps=steps, **{"kind": "act", "strict": True, "ref": None, "base": None,
                                             "sign": "any", **kw})


def node_name(node) -> str:
    """How messages name a node: its name (or first output) and op."""
    return f"node {(node.name or (node.output[0] if node.output else '?'))[:80]!r} ({node.op_type[:40]})"


def attrs(node) -> dict:
    """The node's attributes as Python values."""
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class OpsBase:
    """State and helpers shared by the op handlers: `const` (name -> array) and `sym`
    (name -> Sym) of the tensors seen so far."""

    const: dict[str, np.ndarray]
    sym: dict[str, Sym]

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
    def _channels(const: np.ndarray, x: "Sym | tuple[int, ...]", name: str) -> np.ndarray:
        """A constant that broadcasts against [batch, *actual shape] of `x` as one value per
        canonical channel (or a scalar); a constant on a permuted tensor is permuted back."""
        sym = x if isinstance(x, Sym) else None
        shape = sym.shape if sym is not None else tuple(x)
        actual = sym.actual_shape if sym is not None else shape
        const = np.asarray(const, dtype=np.float64)
        if const.ndim > len(actual) + 1:
            raise RefusedError(f"{name}: a constant of rank {const.ndim} on an activation of rank {len(actual) + 1}")
        try:
            full = np.broadcast_to(const, (1,) + tuple(actual))[0]
        except ValueError:
            raise RefusedError(f"{name}: constant of shape {list(const.shape)} does not broadcast "
                               f"to the activation's shape {list(actual)}") from None
        if sym is not None and sym.layout:
            full = np.transpose(full, np.argsort(sym.layout))
        elif sym is not None and sym.order is not None:
            canonical = np.empty_like(full)
            canonical[list(sym.order)] = full
            full = canonical
        rows = full.reshape(shape[0], -1)
        if not np.all(rows == rows[:, :1]):
            raise RefusedError(f"{name}: a constant that varies within a channel (over positions)")
        v = rows[:, 0]
        return np.float64(v[0]) if np.all(v == v[0]) else v

    @staticmethod
    def _then(s: Sym, *steps: Step, shape: Optional[tuple] = None, **kw) -> Sym:
        """`s` followed by `steps`; a new `shape` starts a canonical tensor, else the layout stays."""
        if shape is not None:
            return Sym(s.steps + steps, shape, **kw)
        return s.derive(s.steps + steps, **kw)

    def _canonical(self, node, name: str, what: str) -> Sym:
        """The activation input of a layout-sensitive op (Conv, MaxPool, BatchNormalization)."""
        x = self._act(node, name)
        if x.layout and list(x.layout) != sorted(x.layout):
            raise RefusedError(f"{name}: {what} over a tensor whose axes are permuted "
                               f"(axes {list(x.layout)} of [C, H, W]): its channels are not refbnn's channels; "
                               "a Transpose back to [C, H, W] before it makes it representable")
        return x

    def _const_input(self, node, k: int, name: str) -> np.ndarray:
        if len(node.input) <= k or node.input[k] not in self.const:
            raise RefusedError(f"{name}: input {k} must be a constant")
        return self.const[node.input[k]]
