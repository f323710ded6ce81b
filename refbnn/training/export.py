"""Export a trained float network to the integer model (docs/semantics.md §8): exact by construction.

Batch norm followed by sign becomes an integer threshold by the one rule in
`refbnn.semantics.batchnorm` (shared with the importer's fold): +1 iff
BN(v) > 0 on the float pre-activation v = h / Z in the first layer (the float network
sees x / Z) and v = h elsewhere; tau = -c / a exactly, gamma < 0 gives polarity -1,
gamma = 0 a constant output.

The trainer evaluates through this export (integer thresholds and the fast
engine), so "the trained model's own evaluation" and the interpreter agree on
every input; a float batch norm would not be exact where h equals tau.
"""
from __future__ import annotations

import warnings
from fractions import Fraction
from math import prod

from ..semantics.batchnorm import batchnorm_thresholds, tau_as_float
from ..semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight
from .architectures import Network
from .nn import BatchNorm, BinaryConv2d, BinaryLinear, MaxPool, SignActivation
from .nn import Flatten as FloatFlatten


def fold_batchnorm(bn: BatchNorm, scale: float, reach: int) -> Threshold:
    """The integer threshold equal to BN -> sign on the integer h, where the float network's
    pre-activation is scale * h; `reach` bounds |h| (fan-in * input magnitude)."""
    s, polarity, tau = batchnorm_thresholds(bn.gamma.value, bn.beta.value, bn.running_mean, bn.running_var,
                                            bn.eps, scale, reach)
    # a tau beyond the reachable h decides nothing, whatever its rounding
    near = [t for t in tau if t is not None and t.denominator != 1 and abs(t) <= reach + 1
            and abs(t - round(t)) < Fraction(1, 10**9) * max(1, abs(t))]
    if near:
        warnings.warn(f"threshold tau = {tau_as_float(near[0])!r} lies within float rounding of an integer")
    return Threshold(tuple(s), tuple(polarity))


def export(net: Network, input_shape: tuple[int, ...], z: int) -> Model:
    """The integer model (docs/semantics.md §2) of a (trained) network."""
    layers = []
    first = True
    magnitude, fan_in = z, 0
    for m in net.modules:
        if isinstance(m, BinaryLinear):          # linear, conv and the output layer
            bits = Weight.from_array(m.w.value > 0)
            layers.append(Conv2d(bits, m.padding) if isinstance(m, BinaryConv2d) else Linear(bits))
            fan_in = prod(m.w.value.shape[1:])
        elif isinstance(m, BatchNorm):
            layers.append(fold_batchnorm(m, 1.0 / z if first else 1.0, fan_in * magnitude))
            first, magnitude = False, 1
        elif isinstance(m, MaxPool):
            layers.append(MaxPool2d())
        elif isinstance(m, FloatFlatten):
            layers.append(Flatten())
        elif not isinstance(m, SignActivation):
            raise TypeError(f"cannot export {type(m).__name__}")
    return Model.build(input_shape, z, layers)
