"""The edges of docs/semantics.md §12.2, each as a test on a built case: does the case
reach it? The conformance suite picks cases that do, and the tests check that the
strategies draw each one."""
from __future__ import annotations

from fractions import Fraction
from typing import Callable

import numpy as np

from ..engines.fast import weight_signs
from ..formats.values import parse_rational
from ..semantics.model import Conv2d, Linear, MaxPool2d, Threshold
from ..oracle.diagnose import reference_arrays
from .build import Case, past_every_margin


def _arrays(case: Case) -> dict:
    return reference_arrays(case.model, case.x)


def _tie(case: Case, first: bool) -> bool:
    arrays = _arrays(case)
    for nl in case.model.neuron_layers:
        if (nl.weight_index == case.model.weight_indices[0]) != first:
            continue
        h = arrays[f"h{nl.threshold_index}"]
        s = np.array(case.model.layers[nl.threshold_index].thresholds).reshape((1, -1) + (1,) * (h.ndim - 2))
        if np.any(h == s):
            return True
    return False


def score_tie(case: Case) -> bool:
    """Some input's two largest class scores are equal (the prediction takes the smaller index)."""
    scores = _arrays(case)["scores"]
    return scores.shape[1] > 1 and bool(np.any(np.sort(scores, axis=1)[:, -2] == scores.max(axis=1)))


def odd_map_before_pool(case: Case) -> bool:
    """A maxpool2d reads a map of odd height or width (its last row or column is dropped)."""
    shapes = (case.model.input_shape,) + case.model.shapes
    return any(isinstance(layer, MaxPool2d) and (shapes[i][1] % 2 or shapes[i][2] % 2)
               for i, layer in enumerate(case.model.layers))


def hidden_padding(case: Case) -> bool:
    """A conv2d past the first weight layer pads its input."""
    first = case.model.weight_indices[0]
    return any(isinstance(layer, Conv2d) and layer.padding and i != first for i, layer in enumerate(case.model.layers))


def float32_rounding(case: Case) -> bool:
    """A float32 implementation of a linear first layer on x/Z, comparing with s/Z, decides
    differently from the exact integers at some neuron and input."""
    m = case.model
    first = m.weight_indices[0]
    if m.input_threshold is not None or not isinstance(m.layers[first], Linear):
        return False
    thr = m.layers[first + 1]
    if not isinstance(thr, Threshold):
        return False
    w = weight_signs(m, first).astype(np.int64)
    x = case.x.reshape(len(case.x), -1)
    exact = x @ w.T > np.array(thr.thresholds)
    x32 = (x.astype(np.float32) / np.float32(m.Z)).astype(np.float32)
    approx = x32 @ w.T.astype(np.float32) > (np.array(thr.thresholds, dtype=np.float32) / np.float32(m.Z))
    return bool(np.any(exact != approx))


def _bs(case: Case) -> list[Fraction]:
    return [parse_rational(b, "b") for b in case.request["b"]]


EDGES: dict[str, tuple[str, Callable[[Case], bool]]] = {
    "tie-first-layer": ("a first-layer pre-activation equals its threshold (h = s)", lambda c: _tie(c, True)),
    "tie-hidden-layer": ("a hidden pre-activation equals its threshold (h = s)", lambda c: _tie(c, False)),
    "score-tie": ("two top class scores tie", score_tie),
    "data-below-z": ("every |x| < Z", lambda c: int(np.abs(c.x).max()) < c.model.Z),
    "data-reaches-z": ("some |x| = Z", lambda c: int(np.abs(c.x).max()) == c.model.Z),
    "z-not-power-of-two": ("Z is not a power of two (x/Z is not exact in binary)",
                           lambda c: c.model.Z & (c.model.Z - 1) != 0),
    "odd-map-before-pool": ("a map of odd size enters a maxpool2d", odd_map_before_pool),
    "float32-rounding": ("float32 sums of x/Z decide a first-layer neuron wrongly", float32_rounding),
    "polarity": ("a threshold with polarity -1", lambda c: "polarity" in c.features),
    "pool-first": ("conv -> maxpool -> threshold", lambda c: "pool-first" in c.features),
    "threshold-first": ("conv -> threshold -> maxpool", lambda c: "threshold-first" in c.features),
    "padding-hidden-layer": ("a hidden conv2d with padding", hidden_padding),
    "binarized-input": ("the network binarises its input (§2.6)", lambda c: "binarized-input" in c.features),
    "fractional-b": ("a b that is not an integer", lambda c: any(b.denominator > 1 for b in _bs(c))),
    "b-past-every-margin": ("a b above every margin (T^b = 0)",
                            lambda c: any(b >= past_every_margin(c.model) for b in _bs(c))),
    "activations-targeted": ("bit errors on the hidden layers' inputs too",
                             lambda c: bool(c.request["bit_errors"] and c.request["bit_errors"]["activations"])),
}


def reached(case: Case) -> set[str]:
    """The names of the edges the case reaches."""
    return {name for name, (_, test) in EDGES.items() if test(case)}
