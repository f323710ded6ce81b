"""The exact probability that a hidden neuron's output flips under weight bit errors.

A closed form (no sampling) from Theorem 1's odd margin; `refbnn eval
--exact-neuron-flips` prints its mean per hidden layer (docs/bit-errors.md).
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from math import comb
from typing import Sequence

import numpy as np

from ..engines.fast import FastEngine
from ..engines.ops import first_layer_input, im2col
from ..semantics.model import Conv2d, Model
from ..semantics.theorem1 import flips_to_change


def neuron_flip_probability(agree: int, disagree: int, m: int, p: Fraction) -> Fraction:
    """P(a hidden neuron's output flips) when each of its weights flips independently with
    probability p, exactly.

    With g = 2(h - s) - 1 and m = |g|, `agree` summands w_j x_j equal sign(g) and
    `disagree` do not. Flipping X of the agreeing and Y of the disagreeing summands moves
    g by -4 sign(g) (X - Y), so the output flips iff X - Y >= f = flips_to_change(m), with
    X ~ Bin(agree, p) and Y ~ Bin(disagree, p) independent:
        P = sum_{x - y >= f} C(a, x) p^x (1-p)^(a-x) * C(d, y) p^y (1-p)^(d-y)."""
    p = Fraction(p)
    q = 1 - p
    f = flips_to_change(m)
    px = [comb(agree, x) * p**x * q**(agree - x) for x in range(agree + 1)]
    py = [comb(disagree, y) * p**y * q**(disagree - y) for y in range(disagree + 1)]
    return sum((px[x] * py[y] for x in range(agree + 1) for y in range(disagree + 1) if x - y >= f),
               Fraction(0))


@lru_cache(maxsize=4096)
def _binom_pmf(n: int, p: float) -> np.ndarray:
    """Binomial(n, p) probabilities in float64, via log-gamma (stable for n in the thousands).
    Cached: a layer's (agree, disagree) pairs share few distinct n. Read only."""
    from math import lgamma, log

    k = np.arange(n + 1)
    if p <= 0:
        return (k == 0).astype(float)
    if p >= 1:
        return (k == n).astype(float)
    lg = np.array([lgamma(n + 1) - lgamma(i + 1) - lgamma(n - i + 1) for i in k])
    return np.exp(lg + k * log(p) + (n - k) * log(1 - p))


@lru_cache(maxsize=4096)
def _binom_tail(n: int, p: float) -> np.ndarray:
    """tail[k] = P(X >= k) for X ~ Binomial(n, p), k = 0 .. n + 1. Read only."""
    return np.concatenate([np.cumsum(_binom_pmf(n, p)[::-1])[::-1], [0.0]])


def flip_probability_float(agree: int, disagree: int, m: int, p: float) -> float:
    """`neuron_flip_probability` evaluated in float64: sum_y P(Y = y) P(X >= f + y)."""
    f = flips_to_change(m)
    tail = _binom_tail(agree, p)
    py = _binom_pmf(disagree, p)
    idx = np.minimum(f + np.arange(disagree + 1), agree + 1)
    return float((py * tail[np.maximum(idx, 0)]).sum())


def neuron_flip_probabilities(engine: FastEngine, x: np.ndarray, ps: Sequence[float]) -> dict[int, np.ndarray]:
    """Per threshold layer directly after a weight layer that reads +-1 (not the integer
    input), [neurons, len(ps)]: each neuron's output flip probability averaged over inputs
    and positions, per p. Computed from the closed form, grouped by the distinct
    (neuron, agree, disagree, m)."""
    counts = flip_counts(engine.model)
    for sl in engine.memory_slices(len(x)):
        add_flip_counts(counts, engine, x[sl], engine.outputs(x[sl]))
    return flip_probabilities_of_counts(engine.model, counts, ps)


def flip_counts(model: Model) -> dict[int, dict[tuple[int, int, int, int], int]]:
    """Empty counts for add_flip_counts: per layer it covers, (neuron, agree, disagree, m) -> count."""
    return {nl.threshold_index: {} for nl in model.neuron_layers
            if not nl.first and nl.weight_index == nl.threshold_index - 1}   # a layer reading integers
                                                          # or pooled h: not a binomial difference


def add_flip_counts(counts: dict, engine: FastEngine, x: np.ndarray, outs: list[np.ndarray]) -> None:
    """Count the (neuron, agree, disagree, m) of the inputs x whose clean outputs are outs."""
    model = engine.model
    for nl in model.neuron_layers:
        if nl.threshold_index not in counts:
            continue
        layer = model.layers[nl.weight_index]
        inp = outs[nl.weight_index - 1] if nl.weight_index else first_layer_input(model, x)
        h = outs[nl.weight_index]
        if isinstance(layer, Conv2d):   # real (non-padded) taps at each position
            real = im2col(np.ones_like(inp[:1], dtype=np.int64), layer.weight.shape[-1], layer.padding)
            k_real = np.broadcast_to(real.sum(axis=-1)[0][None, None], h.shape)
        else:
            k_real = np.full(h.shape, inp.shape[1], dtype=np.int64)
        hv = h.astype(np.int64)
        g = engine.signed_margins(nl.threshold_index, h)
        # K summands of +-1 add up to h, so (K + h) / 2 of them are +1
        plus = (k_real + hv) // 2
        agree = np.where(g > 0, plus, k_real - plus)
        channel = np.broadcast_to(np.arange(h.shape[1]).reshape((1, -1) + (1,) * (h.ndim - 2)), h.shape)
        key = np.stack([channel.ravel(), agree.ravel(), (k_real - agree).ravel(), np.abs(g).ravel()], axis=1)
        uniq, cnt = np.unique(key, axis=0, return_counts=True)
        layer_counts = counts[nl.threshold_index]
        for (n, a, d, m), c in zip(uniq.tolist(), cnt.tolist()):
            layer_counts[(n, a, d, m)] = layer_counts.get((n, a, d, m), 0) + c


def flip_probabilities_of_counts(model: Model, counts: dict, ps: Sequence[float]) -> dict[int, np.ndarray]:
    """neuron_flip_probabilities from the counts of add_flip_counts."""
    out: dict[int, np.ndarray] = {}
    channels = {nl.threshold_index: nl.channels for nl in model.neuron_layers}
    for t, layer_counts in counts.items():
        per = np.zeros((channels[t], len(ps)))
        totals = np.zeros(channels[t])
        known: dict[tuple[int, int, int], np.ndarray] = {}      # neurons share (agree, disagree, m)
        for (n, a, d, m), c in layer_counts.items():
            if (a, d, m) not in known:
                known[(a, d, m)] = np.array([flip_probability_float(a, d, m, p) for p in ps])
            per[n] += c * known[(a, d, m)]
            totals[n] += c
        out[t] = per / totals[:, None]
    return out


def layer_flip_probabilities(engine: FastEngine, x: np.ndarray, ps: Sequence[float]) -> dict[int, list[float]]:
    """Mean output flip probability of each hidden threshold layer over inputs, neurons and
    positions, per p: the mean of `neuron_flip_probabilities` over the layer's neurons
    (every neuron has the same number of inputs and positions)."""
    return {t: per.mean(axis=0).tolist() for t, per in neuron_flip_probabilities(engine, x, ps).items()}
