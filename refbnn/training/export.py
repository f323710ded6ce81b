"""Export a trained float network to the integer model (docs/semantics.md §8): exact by construction.

Batch norm followed by sign outputs +1 iff gamma (h - mu) / sqrt(var + eps) + beta > 0.
With tau = mu - beta * sqrt(var + eps) / gamma:

- gamma > 0: +1 iff h > tau  <=>  h > floor(tau)        (h is an integer)
  -> polarity +1, s = floor(tau);
- gamma < 0: +1 iff h < tau  <=>  h <= ceil(tau) - 1
  -> polarity -1, s = ceil(tau) - 1;
- gamma = 0: the output is the constant sign(beta) (+1 iff beta > 0)
  -> polarity +1 with s below every reachable h (always +1) or at its top (never).

The float network sees x / Z, so the first layer's h is the integer h / Z and its
tau is scaled by Z to compare with the integer h of the raw input.

The trainer evaluates through this export (integer thresholds and the fast
engine), so "the trained model's own evaluation" and the interpreter agree on
every input; a float batch norm would not be exact where h equals tau.
"""
from __future__ import annotations

import math
import warnings
from math import prod

import numpy as np

from ..semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight
from .architectures import Network
from .nn import BatchNorm, BinaryConv2d, BinaryLinear, MaxPool, SignActivation
from .nn import Flatten as FloatFlatten


def fold_batchnorm(bn: BatchNorm, scale: float, reach: int) -> Threshold:
    """The integer threshold equal to BN -> sign on integer h = scale * (float h).

    `reach` bounds |h| (fan-in * input magnitude), for the constant outputs of gamma = 0."""
    s_list, pol = [], []
    for mu, var, gamma, beta in zip(bn.running_mean, bn.running_var,
                                    bn.gamma.value.astype(np.float64), bn.beta.value.astype(np.float64)):
        if gamma == 0:
            s_list.append(-reach - 1 if beta > 0 else reach)
            pol.append(1)
            continue
        tau = (mu - beta * math.sqrt(var + bn.eps) / gamma) * scale
        if abs(tau - round(tau)) < 1e-9 * max(1.0, abs(tau)) and tau != round(tau):
            warnings.warn(f"threshold tau = {tau!r} lies within float rounding of an integer")
        if gamma > 0:
            s_list.append(math.floor(tau))
            pol.append(1)
        else:
            s_list.append(math.ceil(tau) - 1)
            pol.append(-1)
    limit = 2**53
    return Threshold(tuple(max(-limit, min(limit, s)) for s in s_list), tuple(pol))


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
            layers.append(fold_batchnorm(m, z if first else 1, fan_in * magnitude))
            first, magnitude = False, 1
        elif isinstance(m, MaxPool):
            layers.append(MaxPool2d())
        elif isinstance(m, FloatFlatten):
            layers.append(Flatten())
        elif not isinstance(m, SignActivation):
            raise TypeError(f"cannot export {type(m).__name__}")
    return Model.build(input_shape, z, layers)
