"""Certified predictions under bounded bit errors: the network corollary of Theorem 1.

See proofs/theorem1.md, "Network corollary". For input i the certified k_i is the
largest k such that any k weight flips in each neuron (per filter for conv) and in
each output unit leave the prediction unchanged:

  k_i = min( floor(T/2) over every neuron and position,            (Theorem 1)
             floor((s_c - s_j - 1) / 4M) for classes j < c,          (strictly above)
             floor((s_c - s_j) / 4M)     for classes j > c )         (ties go to c)

with T from eq. 1 / eq. 2 (floor(T/2) = `tolerated_flips(odd_margin(h, s), Z)`,
refbnn.semantics.theorem1) and M the input magnitude of the output layer. A layer
whose bound reaches its fan-in tolerates flipping all of its weights and does not
limit k (the fan-in cap of the corollary).

`certified_k` is the definition on one reference run; `certified_ks` is the same
vectorised over a batch with the fast engine, and a test asserts they agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import prod
from typing import Optional

import numpy as np

from ..engines.fast import FastEngine
from ..engines.ops import first_layer_input, im2col
from ..formats.values import exact
from ..semantics.model import Conv2d, Model, Run
from ..semantics.theorem1 import odd_margin, tolerated_flips

SCORES = "scores"


def _fan_in(model: Model, weight_index: int) -> int:
    return prod(model.layers[weight_index].weight.shape[1:])


def _output_magnitude(model: Model) -> int:
    last = len(model.layers) - 1
    return model.first_input_bound if model.weight_indices[0] == last else 1


def max_fan_in(model: Model) -> int:
    """No unit has more weights than this: k beyond it means every weight may flip."""
    return max(_fan_in(model, i) for i in model.weight_indices)


@dataclass(frozen=True)
class Certificate:
    k: int                 # certified flips per neuron and per output unit
    bottleneck: str        # "layer L" (threshold layer index) or "scores"


def certified_k(model: Model, run: Run) -> Certificate:
    """The certified k of one input from its reference run (the definition)."""
    cap = max_fan_in(model)
    bounds: list[tuple[int, str]] = []
    for nl, h in zip(model.neuron_layers, run.h):
        s = model.layers[nl.threshold_index].thresholds
        z = model.Z if nl.first else 1
        best = cap
        for idx, v in enumerate(h):
            best = min(best, tolerated_flips(odd_margin(v, s[idx // nl.positions]), z))
        if best >= _fan_in(model, nl.weight_index):
            best = cap                       # all of its weights may flip
        bounds.append((best, f"layer {nl.threshold_index}"))
    scores = run.scores
    c = run.prediction
    four_m = 4 * _output_magnitude(model)
    score_bound = cap
    for j, sj in enumerate(scores):
        if j < c:
            score_bound = min(score_bound, (scores[c] - sj - 1) // four_m)
        elif j > c:
            score_bound = min(score_bound, (scores[c] - sj) // four_m)
    if score_bound >= _fan_in(model, len(model.layers) - 1):
        score_bound = cap
    bounds.append((score_bound, SCORES))
    k, where = min(bounds, key=lambda t: t[0])
    return Certificate(k, where)


def certified_ks(engine: FastEngine, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """certified_k for every input, vectorised on the fast engine's exact integers.
    Returns k per input and the bottleneck name per input."""
    ks = np.empty(len(x), dtype=np.int64)
    where: list[str] = []
    for sl in engine.memory_slices(len(x)):
        ks[sl], names = certified_ks_of_outputs(engine, engine.outputs(x[sl]))
        where += names
    return ks, where


def certified_ks_of_outputs(engine: FastEngine, outs: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """certified_ks for the inputs whose clean outputs (`FastEngine.outputs`) are outs."""
    model = engine.model
    cap = max_fan_in(model)
    names = _bottleneck_names(model)
    cols = []
    for nl in model.neuron_layers:
        m = engine.odd_margins(nl.threshold_index, outs[nl.threshold_index - 1])
        z = model.Z if nl.first else 1
        best = tolerated_flips(m.reshape(len(m), -1), z).min(axis=1)
        best[best >= _fan_in(model, nl.weight_index)] = cap
        cols.append(np.minimum(best, cap))
    cols.append(_score_bound(outs[-1], _output_magnitude(model), cap,
                             _fan_in(model, len(model.layers) - 1)))
    table = np.stack(cols, axis=1)
    return table.min(axis=1), [names[j] for j in table.argmin(axis=1)]   # first minimum, as min()


def _bottleneck_names(model: Model) -> list[str]:
    return [f"layer {nl.threshold_index}" for nl in model.neuron_layers] + [SCORES]


def _score_bound(scores: np.ndarray, magnitude: int, cap: int, fan_in: int) -> np.ndarray:
    s = scores.reshape(len(scores), -1).astype(np.int64)
    c = np.argmax(s, axis=1)
    top = s[np.arange(len(s)), c][:, None]
    j = np.arange(s.shape[1])[None, :]
    gap = np.where(j < c[:, None], top - s - 1, top - s)     # strict above j < c
    gap = np.where(j == c[:, None], cap * 4 * magnitude, gap)
    bound = np.minimum(gap.min(axis=1) // (4 * magnitude), cap)
    bound[bound >= fan_in] = cap
    return bound


def adversarial_masks(engine: FastEngine, x_i: np.ndarray, k: int, rng: Optional[np.random.Generator] = None) -> list[np.ndarray]:
    """Bit masks flipping, in every unit, the (at most) k weights that push it hardest
    toward changing its output on input x_i, ties broken at random with `rng`: for a
    neuron, the weights whose summands agree with its output sign, summed over its
    positions; for the predicted class c, those lowering s_c; for the others, those
    raising s_j."""
    model = engine.model
    outs = engine.outputs(x_i[None])
    masks = []
    for i in model.weight_indices:
        layer = model.layers[i]
        inp = first_layer_input(model, x_i[None]) if i == 0 else outs[i - 1]
        signs = engine.weight_matrix(i).astype(np.float64)               # [N, F]
        fields = _fields(layer, inp)                                      # [P, F]
        direction = _direction(engine, model, i, outs)                    # [N, P] in {-1, 0, 1}
        # flipping weight j moves h by -2 w_j x_j: it helps where -direction * w_j x_j > 0
        push = -(direction @ fields) * signs                             # [N, F]
        if rng is not None:
            push = push + rng.random(push.shape) * 0.5                  # random order among equals
        order = np.argsort(-push, axis=1)[:, :k]
        mask = np.zeros(signs.shape, dtype=bool)
        rows = np.arange(len(signs))[:, None]
        mask[rows, order] = np.take_along_axis(push, order, axis=1) >= 1
        masks.append(mask.reshape(layer.weight.shape))
    return masks


def _fields(layer, inp: np.ndarray) -> np.ndarray:
    if isinstance(layer, Conv2d):
        cols = im2col(inp.astype(np.float64), layer.weight.shape[-1], layer.padding)
        return cols.reshape(-1, cols.shape[-1])
    return inp.reshape(1, -1).astype(np.float64)


def _direction(engine, model: Model, i: int, outs: list[np.ndarray]) -> np.ndarray:
    """For each unit of weight layer i and each of its positions: +1 if raising h there
    moves it toward changing the output, -1 if lowering does, 0 if it does not matter."""
    if i == len(model.layers) - 1:
        scores = outs[i].reshape(-1)
        c = int(np.argmax(scores))
        d = np.ones((len(scores), 1))
        d[c] = -1                      # lower the predicted class, raise the others
        return d
    nxt = i + 1
    pooled = not any(nl.threshold_index == nxt for nl in model.neuron_layers)
    t = nxt + 1 if pooled else nxt
    g = engine.signed_margins(t, outs[t - 1])[0]
    d = -np.sign(g.reshape(g.shape[0], -1))   # move g toward 0
    if not pooled:
        return d
    n, ho, wo = outs[i][0].shape       # spread each pooled direction over its 2x2 window
    full = np.zeros((n, ho, wo))
    dp = d.reshape(n, ho // 2, wo // 2)
    full[:, :ho // 2 * 2, :wo // 2 * 2] = np.repeat(np.repeat(dp, 2, axis=1), 2, axis=2)
    return full.reshape(n, -1)


def check_certificates(engine, reference_cls, x: np.ndarray, ks: np.ndarray, draws: int,
                       seed: int) -> list[dict]:
    """Draw `draws` certified inputs (k_i >= 1) at random, flip k_i weights per unit
    adversarially, and run the reference interpreter. Returns one record per draw;
    `changed` must be False for all of them (True would be a bug in the proof or code)."""
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(ks >= 1)
    out = []
    if len(candidates) == 0:
        return out
    for _ in range(draws):
        i = int(rng.choice(candidates))
        masks = adversarial_masks(engine, x[i], int(ks[i]), rng)
        clean = reference_cls(engine.model).run(x[i]).prediction
        flipped = reference_cls(engine.model, masks).run(x[i]).prediction
        out.append({"input": i, "k": int(ks[i]), "flips": int(sum(m.sum() for m in masks)),
                    "prediction": clean, "under_flips": flipped, "changed": clean != flipped})
    return out


def certified_accuracy(engine: FastEngine, x: np.ndarray, y: np.ndarray, ks_wanted: list[int]) -> dict:
    """What `refbnn certify` reports: accuracy, the certified k per input, certified
    accuracy at each wanted k (inputs correct *and* certified at k) and how many inputs
    each layer (or the class scores) limits."""
    ks, where = certified_ks(engine, x)
    return certificate_summary(engine.model, ks, where, engine.predictions(x) == y, ks_wanted)


def certificate_summary(model: Model, ks: np.ndarray, where: list[str], correct: np.ndarray,
                        ks_wanted: list[int]) -> dict:
    """certified_accuracy's document from the certified k and bottleneck per input and
    which inputs are predicted correctly."""
    n = len(correct)
    return {"inputs": n, "accuracy": exact(Fraction(int(correct.sum()), n)),
            "certified_accuracy": {str(k): exact(Fraction(int((correct & (ks >= k)).sum()), n))
                                   for k in ks_wanted},
            "bottleneck": {name: where.count(name) for name in _bottleneck_names(model)},
            "certified_k": [int(k) for k in ks]}
