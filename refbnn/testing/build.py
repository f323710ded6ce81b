"""Small contract-valid BNNs, their data and a request, built to reach the edges where
metric implementations go wrong (docs/semantics.md §12.2).

One builder serves two drivers: Hypothesis (`refbnn.testing.strategies`, which shrinks
what it draws) and a seeded NumPy generator (the conformance suite, rebuilt byte for
byte). Every choice goes through a `Draws` object; options are listed simplest first,
because Hypothesis shrinks a choice towards its first option and an integer towards its
lower end. The network is built layer by layer on the generated inputs themselves, so a
threshold can be set to a pre-activation that an input really reaches (a tie).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Optional, Protocol, Sequence

import numpy as np

from ..engines.ops import im2col, maxpool
from ..semantics.model import FEATURES, Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight

Z_CHOICES = (1, 255, 2, 3, 7, 16, 254, 0)    # 0: any Z in 1..255
BERS = ("0.1", "0", "1/4", "0.5", "1", "0.01")


class Draws(Protocol):
    """Where the builder's choices come from."""

    def integer(self, lo: int, hi: int) -> int:
        """An integer in lo..hi (inclusive)."""

    def choice(self, options: Sequence[Any]) -> Any:
        """One of the options."""

    def values(self, n: int, lo: int, hi: int) -> np.ndarray:
        """n integers in lo..hi, as int64."""


class RngDraws:
    """Choices from a NumPy generator (the conformance suite: the same seed, the same case)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def choice(self, options: Sequence[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def values(self, n: int, lo: int, hi: int) -> np.ndarray:
        return self.rng.integers(lo, hi + 1, n).astype(np.int64)


@dataclass(frozen=True)
class Reach:
    """What the builder may use: the features (a subset of FEATURES), at most `max_neurons`
    neurons and `max_inputs` inputs, and what the request asks for."""

    features: frozenset = frozenset(FEATURES)
    max_neurons: int = 16
    max_inputs: int = 8
    bs: Optional[tuple[str, ...]] = None      # fixed b tokens; None: drawn at the edges
    importance: bool = True
    bit_errors: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"features: unknown {', '.join(sorted(unknown))} (known: {', '.join(FEATURES)})")
        if not {"fc", "conv"} & set(self.features):
            raise ValueError("features: a model needs neurons, so keep fc or conv")
        if self.max_neurons < 1 or self.max_inputs < 1:
            raise ValueError("max_neurons and max_inputs must be at least 1")


@dataclass
class Case:
    """A model, its data, the request (docs/semantics.md §12.1) and the features it uses."""

    model: Model
    x: np.ndarray
    y: np.ndarray
    request: dict
    features: frozenset = field(default_factory=frozenset)

    def size(self) -> str:
        """Layers, neurons and inputs, in words (the fuzz report's one line)."""
        weights = len(self.model.weight_indices)
        return (f"{len(self.model.layers)} layers ({weights} weight layers), {self.model.neurons} neurons, "
                f"{self.model.classes} classes, {len(self.y)} inputs, Z = {self.model.Z}")


def build_case(d: Draws, reach: Reach) -> Case:
    """A valid model with data that reach the edges, and a request (the whole builder)."""
    f = reach.features
    z = d.choice(Z_CHOICES) or d.integer(1, 255)
    image = "conv" in f and ("fc" not in f or d.choice([False, True]))
    shape = (d.integer(1, 3), d.integer(1, 9), d.integer(1, 9)) if image else \
        (d.integer(1, 12) if d.choice(["narrow", "wide"]) == "narrow" else d.integer(13, 64),)
    x = inputs(d, shape, z, reach.max_inputs)
    binarise = None
    if "binarized-input" in f and d.choice([False, True]):
        binarise = Threshold(*_thresholds(d, x.reshape(len(x), shape[0], -1), 1, z, f))
    a = _binarised(x, binarise) if binarise else x
    magnitude = 1 if binarise else z
    layers: list = []
    budget = reach.max_neurons
    if image:
        blocks = d.integer(1 if "fc" not in f else 0, 2)
        for _ in range(blocks):
            if budget < 1:
                break
            a, magnitude, n = _conv_block(d, a, magnitude, f, min(budget, max(4, reach.max_neurons // 8)), layers)
            budget -= n
        layers.append(Flatten())
        a = a.reshape(len(a), -1)
    has_neurons = any(isinstance(layer, Threshold) for layer in layers)
    hidden = d.integer(0 if has_neurons else 1, 2) if "fc" in f else 0
    for _ in range(hidden):
        if budget < 1:
            break
        n = d.integer(1, min(budget, max(8, reach.max_neurons // 2)))
        w = _signs(d, (n, a.shape[1]))
        h = a @ w.T
        s, pol = _thresholds(d, h[:, :, None], a.shape[1], magnitude, f)
        layers += [Linear(Weight.from_array(w)), Threshold(s, pol)]
        a, magnitude, budget = _fire(h, s, pol), 1, budget - n
    w, scores = _output_layer(d, a)
    layers.append(Linear(Weight.from_array(w)))
    model = Model.build(shape, z, layers, binarise)
    pred = np.argmax(scores, axis=1)              # ties to the smallest index (§2.5)
    y = (pred + d.values(len(x), 0, model.classes - 1)) % model.classes
    y[0] = pred[0]                                # accuracy > 0, so Pi is defined (§5)
    return Case(model, x, y, build_request(d, reach, model, len(x)), case_features(model))


def inputs(d: Draws, shape: tuple, z: int, max_inputs: int) -> np.ndarray:
    """Inputs that reach Z, stay below it, or are signed (-Z..Z)."""
    n = d.integer(1, max_inputs)
    kind = d.choice(["reaches", "below", "signed"])
    lo, hi = (-z if kind == "signed" else 0), (z - 1 if kind == "below" else z)
    x = np.concatenate([d.values(prod(shape), lo, hi) for _ in range(n)])    # a row per input, as _signs
    if kind == "reaches":
        x[d.integer(0, len(x) - 1)] = z
    return x.reshape((n,) + shape)


def _binarised(x: np.ndarray, t: Threshold) -> np.ndarray:
    """§2.6: per input channel, +1 iff x > s_c (polarity +1) or x <= s_c (polarity -1)."""
    return _fire(x, t.thresholds, t.polarity)


def _fire(h: np.ndarray, s: Sequence[int], pol: Sequence[int]) -> np.ndarray:
    """The threshold rule (§2.3) per channel (axis 1), as int64 +-1."""
    shape = (1, -1) + (1,) * (h.ndim - 2)
    up = h > np.array(s, dtype=np.int64).reshape(shape)
    up ^= (np.array(pol) < 0).reshape(shape)
    return np.where(up, 1, -1).astype(np.int64)


def _signs(d: Draws, shape: tuple) -> np.ndarray:
    """+-1 weights, drawn one output row at a time: dropping a neuron while shrinking leaves
    the other rows as they were."""
    return np.stack([d.values(prod(shape[1:]), 0, 1) for _ in range(shape[0])]).reshape(shape) * 2 - 1


def _conv_block(d: Draws, a: np.ndarray, magnitude: int, f: frozenset, most: int, layers: list):
    """conv2d (at most `most` channels) with its threshold in one of the block orders;
    returns the output, its bound and its number of channels."""
    c, h, w = a.shape[1:]
    pad = d.choice([0, 1]) if "padding" in f else 0
    k = min(d.choice([3, 1, 2]), min(h, w) + 2 * pad)
    n = d.integer(1, most)
    ho, wo = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    orders = ["threshold"] + ["pool-threshold"] * ("pool-first" in f) + ["threshold-pool"] * ("threshold-first" in f)
    order = d.choice(orders) if min(ho, wo) >= 2 else "threshold"
    wt = _signs(d, (n, c, k, k))
    pre = (im2col(a, k, pad) @ wt.reshape(n, -1).T).transpose(0, 3, 1, 2)   # [B, N, Ho, Wo]
    if order == "pool-threshold":
        pre = maxpool(pre)
    s, pol = _thresholds(d, pre.reshape(len(a), n, -1), c * k * k, magnitude, f)
    out = _fire(pre, s, pol)
    layers.append(Conv2d(Weight.from_array(wt), pad))
    layers += {"threshold": [Threshold(s, pol)], "pool-threshold": [MaxPool2d(), Threshold(s, pol)],
               "threshold-pool": [Threshold(s, pol), MaxPool2d()]}[order]
    if order == "threshold-pool":
        out = maxpool(out)
    return np.ascontiguousarray(out), 1, n


def _thresholds(d: Draws, h: np.ndarray, fan_in: int, magnitude: int, f: frozenset):
    """Per channel of h [I, N, positions]: s drawn in the reachable range, equal to a value
    some input reaches (a tie, h = s), one below it (h = s + 1), or outside the range (a
    constant output). Polarities: all +1, mixed, or all -1 (with the polarity feature)."""
    reach = fan_in * magnitude
    s = []
    for n in range(h.shape[1]):
        kind = d.choice(["range", "tie", "above-tie", "outside"])
        if kind == "range":
            s.append(d.integer(-reach, reach))
        elif kind == "outside":
            s.append(d.choice([reach, -reach - 1]))
        else:
            hit = int(h[d.integer(0, h.shape[0] - 1), n, d.integer(0, h.shape[2] - 1)])
            s.append(hit if kind == "tie" else hit - 1)
    pol = [1] * len(s)
    if "polarity" in f:
        kind = d.choice(["positive", "mixed", "negative"])
        pol = [-1] * len(s) if kind == "negative" else \
            [int(v) * 2 - 1 for v in d.values(len(s), 0, 1)] if kind == "mixed" else pol
    return tuple(int(v) for v in s), tuple(pol)


def _output_layer(d: Draws, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class weights, and the scores; optionally with a tie at the top: a copied row (a tie
    for every input), or a row that ties with the winner for one input only."""
    classes = d.integer(1, 4)
    w = _signs(d, (classes, a.shape[1]))
    if classes > 1:
        kind = d.choice(["plain", "tie-one-input", "copied-row"])
        if kind != "plain":
            i = d.integer(0, len(a) - 1)
            top = int(np.argmax(a[i] @ w.T))
            other = d.choice([c for c in range(classes) if c != top])
            row = w[top].copy()
            agree, disagree = np.flatnonzero(row * a[i] > 0), np.flatnonzero(row * a[i] < 0)
            if kind == "tie-one-input" and len(agree) and len(disagree):
                # flipping one agreeing and one disagreeing weight keeps input i's score
                row[agree[0]], row[disagree[0]] = -row[agree[0]], -row[disagree[0]]
            w[other] = row
    return w, a @ w.T


def build_request(d: Draws, reach: Reach, model: Model, inputs: int) -> dict:
    """The request (§12.1): the b values (fractions, values at a margin, and one past every
    margin), whether Pi is asked, and the bit error sweep."""
    if reach.bs is not None:
        bs = list(reach.bs)
    else:
        bs = []
        for _ in range(d.integer(1, 4)):
            kind = d.choice(["integer", "half", "first-layer", "decimal", "past"])
            bs.append(str(d.integer(0, 8)) if kind == "integer" else
                      f"{2 * d.integer(0, 4) + 1}/2" if kind == "half" else
                      f"{2 * d.integer(0, 4) + 1}/{2 * model.Z}" if kind == "first-layer" else
                      d.choice(["0.5", "1.5", "0.25", "2.5"]) if kind == "decimal" else str(past_every_margin(model)))
        bs = list(dict.fromkeys(bs))
    bit_errors = None
    if reach.bit_errors:
        bers = list(dict.fromkeys(d.choice(BERS) for _ in range(d.integer(1, 2))))
        bit_errors = {"ber": bers, "reps": d.integer(1, 3), "seed": d.integer(0, 2**16),
                      "batch_size": d.integer(1, inputs), "activations": d.choice([False, True])}
    return {"b": bs, "importance": reach.importance, "bit_errors": bit_errors}


def past_every_margin(model: Model) -> int:
    """An integer b above every margin the model can have: |h - s - 1/2| < fan-in * M + |s| + 1."""
    bound = 0
    for nl in model.neuron_layers:
        w = model.layers[nl.weight_index].weight
        fan_in = prod(w.shape[1:])
        m = model.first_input_bound if nl.weight_index == model.weight_indices[0] else 1
        bound = max(bound, fan_in * m + max(abs(s) for s in model.layers[nl.threshold_index].thresholds) + 1)
    return bound


def case_features(model: Model) -> frozenset:
    """The features a model uses (what `refbnn fuzz` reports it covered)."""
    out = set()
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Linear) and i != len(model.layers) - 1:
            out.add("fc")
        if isinstance(layer, Conv2d):
            out.add("conv")
            if layer.padding:
                out.add("padding")
        if isinstance(layer, MaxPool2d):
            out.add("pool-first" if isinstance(model.layers[i + 1], Threshold) else "threshold-first")
        if isinstance(layer, Threshold) and any(p < 0 for p in layer.polarity):
            out.add("polarity")
    if model.input_threshold is not None:
        out.add("binarized-input")
        if any(p < 0 for p in model.input_threshold.polarity):
            out.add("polarity")
    return frozenset(out)
