"""Hypothesis strategies: random models of every shape docs/semantics.md §2 allows, with data.

Structure (layer kinds, sizes, block orders, padding, polarity, Z, an input
binarisation) is drawn by
Hypothesis so it shrinks well; bits, thresholds and inputs come from a NumPy
generator keyed by a drawn seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from refbnn.semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight

BLOCK_ORDERS = ("threshold", "pool-threshold", "threshold-pool")


@dataclass
class Case:
    model: Model
    x: np.ndarray
    y: np.ndarray


def _thresholds(rng, n: int, fan_in: int, magnitude: int) -> tuple[int, ...]:
    """Thresholds near the middle of the reachable range [-fan_in*M, fan_in*M], so that
    both outputs, ties (h = s) and tiny margins all occur."""
    spread = max(1, fan_in * magnitude // 3)
    return tuple(int(v) for v in rng.integers(-spread, spread + 1, n))


@st.composite
def model_cases(draw, max_inputs: int = 6, wide: bool = False) -> Case:
    """A random valid model and a small data set whose labels make accuracy > 0."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    z = draw(st.sampled_from([1, 2, 3, 7, 255]))
    signed = draw(st.booleans())
    image = draw(st.booleans())
    layers = []
    # a model that binarises its own input (§2.6): its first weight layer reads +-1
    binarise = draw(st.integers(0, 3)) == 0
    magnitude = 1 if binarise else z
    if image:
        c, h, w = draw(st.integers(1, 3)), draw(st.integers(2, 9)), draw(st.integers(2, 9))
        shape = (c, h, w)
        for _ in range(draw(st.integers(1, 2))):
            k = draw(st.sampled_from([1, 2, 3]))
            pad = draw(st.integers(0, 1))
            if min(h, w) + 2 * pad < k:
                break
            n = draw(st.integers(1, 4))
            order = draw(st.sampled_from(BLOCK_ORDERS))
            ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
            if min(ho, wo) < 2:
                order = "threshold"
            layers.append(Conv2d(Weight.from_array(rng.integers(0, 2, (n, c, k, k))), pad))
            pol = tuple(int(p) for p in rng.choice([1, -1], n))
            thr = Threshold(_thresholds(rng, n, c * k * k, magnitude), pol)
            if order == "pool-threshold":
                layers += [MaxPool2d(), thr]
            elif order == "threshold-pool":
                layers += [thr, MaxPool2d()]
            else:
                layers.append(thr)
            if order != "threshold":
                ho, wo = ho // 2, wo // 2
            c, h, w, magnitude = n, ho, wo, 1
        layers.append(Flatten())
        k_in = c * h * w
    else:
        k_in = draw(st.integers(1, 64 if wide else 12))
        shape = (k_in,)
    has_neurons = any(isinstance(layer, Threshold) for layer in layers)
    for _ in range(draw(st.integers(0 if has_neurons else 1, 2))):
        n = draw(st.integers(1, 40 if wide else 6))
        layers.append(Linear(Weight.from_array(rng.integers(0, 2, (n, k_in)))))
        pol = tuple(int(p) for p in rng.choice([1, -1], n))
        layers.append(Threshold(_thresholds(rng, n, k_in, magnitude), pol))
        k_in, magnitude = n, 1
    classes = draw(st.integers(1, 4))
    layers.append(Linear(Weight.from_array(rng.integers(0, 2, (classes, k_in)))))
    input_threshold = None
    if binarise:
        pol = tuple(int(p) for p in rng.choice([1, -1], shape[0]))
        input_threshold = Threshold(tuple(int(v) for v in rng.integers(-z, z, shape[0])), pol)
    model = Model.build(shape, z, layers, input_threshold)
    inputs = draw(st.integers(1, max_inputs))
    lo = -z if signed else 0
    x = rng.integers(lo, z + 1, (inputs,) + shape)
    y = rng.integers(0, classes, inputs)
    return Case(model, x, y)
