"""A float BNN as a list of steps in forward order: what every importer reads a source into.

An ONNX graph, a QONNX graph and a PyTorch state dict with a layout file all become
the same few steps; `refbnn.importers.fold` turns the steps into the integer model
(docs/semantics.md §10). Each step names where it came from (`where`: an ONNX node,
a layout step), so that a refusal can point at it.

Per-channel constants are float64 vectors of one entry per channel (the first axis of
the activation, without the batch axis), or scalars.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..semantics.batchnorm import batchnorm_affine


@dataclass(frozen=True)
class WeightStep:
    """`linear` (w [N, K]) or `conv2d` (w [N, C, k, k], stride 1, `padding`), with an optional bias [N].
    `w` holds float values that must be +-alpha_n per output channel n (alpha_n > 0)."""

    where: str
    kind: str
    w: np.ndarray
    padding: int = 0
    bias: Optional[np.ndarray] = None


@dataclass(frozen=True)
class AffineStep:
    """v -> mul * v + add, per channel (Mul, Add, Sub, Div by constants; a fused bias)."""

    where: str
    mul: np.ndarray = field(default_factory=lambda: np.float64(1))
    add: np.ndarray = field(default_factory=lambda: np.float64(0))


@dataclass(frozen=True)
class BatchNormStep:
    """Inference batch norm: gamma (v - mean) / sqrt(var + eps) + beta, per channel."""

    where: str
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    def as_affine(self) -> AffineStep:
        """The same map as mul * v + add, in float64."""
        mul, add = batchnorm_affine(self.gamma, self.beta, self.mean, self.var, self.eps)
        return AffineStep(self.where, mul, add)


@dataclass(frozen=True)
class RoundStep:
    """Round to the nearest integer; only on the network input, where the input map scaled
    back (u * Z for --input x/Z) gives the integers x again (refbnn's own ONNX export)."""

    where: str


@dataclass(frozen=True)
class ClipStep:
    """clip(v, lo, hi) (Clip, Hardtanh); None is unbounded."""

    where: str
    lo: Optional[float]
    hi: Optional[float]


@dataclass(frozen=True)
class PoolStep:
    """Max pooling, 2x2 windows, stride 2, no padding (the only pooling refbnn has)."""

    where: str


@dataclass(frozen=True)
class FlattenStep:
    """[C, H, W] -> vector in C order."""

    where: str


@dataclass(frozen=True)
class SignStep:
    """Binarisation of v: +1 iff v > 0 (`strict`) or v >= 0; else -1.

    `zero`: the op outputs a third value 0 at v == 0 (torch.sign, ONNX Sign).
    `tensor`: the name of the source's tensor that holds this step's output, when it
    has one, so that `--check` can compare the signs layer by layer; `levels` the
    two values that tensor holds for -1 and +1; `layout` the order of its axes when the
    source holds it permuted (NHWC: (1, 2, 0) of [C, H, W]; () when canonical)."""

    where: str
    strict: bool
    zero: bool = False
    tensor: Optional[str] = None
    levels: tuple[float, float] = (-1.0, 1.0)
    layout: tuple[int, ...] = ()
    order: Optional[tuple[int, ...]] = None     # a vector: source entry j is refbnn's entry order[j]


@dataclass(frozen=True)
class MonotoneStep:
    """An op on the class scores that keeps their order (Softmax, LogSoftmax); only at the end."""

    where: str


Step = (WeightStep | AffineStep | BatchNormStep | ClipStep | PoolStep | FlattenStep | SignStep | MonotoneStep
        | RoundStep)
