"""`refbnn verify --self`: metamorphic checks of refbnn on the user's own model and data
(docs/semantics.md §11.4). Each check states a property that must hold whatever the
model, and tests it by running refbnn twice, on the model and on a transformed copy.
It is the first thing to run on a model from a new source.
"""
from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from typing import Callable, Optional

import numpy as np

from ..biterrors.masks import ErrorModel, write_masks
from ..biterrors.sweep import accuracy_sweep, correct_under_errors
from ..engines.fast import FastEngine, weight_signs
from ..engines.interpreter import Interpreter
from ..formats.maskfile import read_masks
from ..semantics.accuracy import accuracy
from ..semantics.fliptargets import weight_targets
from ..semantics.importance import importance_variance
from ..semantics.model import Conv2d, Flatten, Linear, Model, Threshold, Weight

B_GRID = [Fraction(v) for v in ("0", "1/2", "1", "3/2", "2", "4", "8", "16", "32", "64")]
REFERENCE_INPUTS = 10          # inputs run through the (slow) bitarray interpreter
REFERENCE_PI_BUDGET = 2**22    # neurons x weight bits up to which it also runs Algorithm 1




def permuted_model(model: Model, t: int, perm: np.ndarray) -> Model:
    """The model with the channels of threshold layer t permuted: the rows of its weight
    layer, its thresholds and polarities, and the matching inputs of the next weight layer
    (through a flatten, a block of H*W columns per channel). It computes the same function."""
    layers = list(model.layers)
    w = max(i for i in range(t) if isinstance(layers[i], (Linear, Conv2d)))
    nxt = min(i for i in range(t + 1, len(layers)) if isinstance(layers[i], (Linear, Conv2d)))
    src = layers[w]
    bits = weight_signs(model, w)[perm] > 0
    layers[w] = Conv2d(Weight.from_array(bits), src.padding) if isinstance(src, Conv2d) else Linear(
        Weight.from_array(bits))
    thr = layers[t]
    layers[t] = Threshold(tuple(thr.thresholds[k] for k in perm), tuple(thr.polarity[k] for k in perm))
    nb = weight_signs(model, nxt) > 0
    if isinstance(layers[nxt], Conv2d):
        nb = nb[:, perm]
        layers[nxt] = Conv2d(Weight.from_array(nb), layers[nxt].padding)
    else:
        through_flatten = any(isinstance(layers[i], Flatten) for i in range(t + 1, nxt))
        block = nb.shape[1] // len(perm) if through_flatten else 1
        cols = (perm[:, None] * block + np.arange(block)[None, :]).ravel()
        layers[nxt] = Linear(Weight.from_array(nb[:, cols]))
    return Model.build(model.input_shape, model.Z, layers, model.input_threshold)


def self_checks(model: Model, x: np.ndarray, y: np.ndarray, seed: int = 0,
                progress: Optional[Callable[[int, int], None]] = None) -> list[dict]:
    """Every metamorphic check on (model, x, y); one dict per check: check, pass, detail."""
    out: list[dict] = []
    steps = 7

    def add(name: str, ok: bool, detail: str) -> None:
        out.append({"check": name, "pass": bool(ok), "detail": detail})

    fast = FastEngine(model)
    preds = np.asarray(fast.predictions(x))
    acc = accuracy(preds, y)
    tol = fast.tolerance(x, B_GRID)
    has_neurons = model.neurons > 0
    pi = fast.importance(x, y) if has_neurons and acc > 0 else None

    # 1. BER 0 is the clean model
    zero = accuracy_sweep(fast, x, y, [("0", 0.0)], 2, ErrorModel(0.0, seed))[0]
    add("BER 0 equals the clean accuracy", all(a == acc for a in zero.accuracies),
        f"clean {float(acc):.6g}; at BER 0: {[float(a) for a in zero.accuracies]}")
    _tick(progress, 1, steps)

    # 2. flipping every weight of a layer negates its h
    outs = fast.outputs(x[:64])
    for ft in weight_targets(model):
        i = ft.layer
        masks = [None] * len(model.weight_indices)
        masks[ft.t] = np.ones(ft.shape, dtype=bool)
        flipped = fast.with_flips(masks).outputs(x[:64])[i]
        add(f"flipping every weight of layer {i} negates its h", np.array_equal(flipped, -outs[i]),
            f"{int((flipped != -outs[i]).sum())} of {outs[i].size} entries differ")
    _tick(progress, 2, steps)

    # 3. permuting a hidden layer's neurons (and the next layer's inputs) changes nothing
    rng = np.random.default_rng(seed)
    for nl in model.neuron_layers:
        perm = rng.permutation(nl.channels)
        other = FastEngine(permuted_model(model, nl.threshold_index, perm))
        same_pred = np.array_equal(np.asarray(other.predictions(x)), preds)
        other_tol = other.tolerance(x, B_GRID)
        same_t = other_tol.overall == tol.overall and other_tol.layers == tol.layers
        detail = f"permutation of {nl.channels} channels: predictions {'equal' if same_pred else 'DIFFER'}, " \
                 f"T {'equal' if same_t else 'DIFFERS'}"
        ok = same_pred and same_t
        if pi is not None:
            other_pi = other.importance(x, y)
            mapped = list(pi)
            for k, c in enumerate(perm):           # new channel k is old channel perm[k]
                mapped[nl.offset + k] = pi[nl.offset + c]
            ok = ok and other_pi == mapped and importance_variance(other_pi) == importance_variance(pi)
            detail += f", Pi {'permuted alike' if other_pi == mapped else 'DIFFERS'}"
        add(f"permuting the neurons of layer {nl.threshold_index} leaves T and VAR(Pi) unchanged", ok, detail)
    _tick(progress, 3, steps)

    # 4. permuting or duplicating the inputs changes no metric
    for name, idx in (("permuting", rng.permutation(len(x))), ("duplicating", np.concatenate([np.arange(len(x))] * 2))):
        xs, ys = x[idx], y[idx]
        t2 = fast.tolerance(xs, B_GRID)
        a2 = accuracy(fast.predictions(xs), ys)
        ok = t2.overall == tol.overall and t2.layers == tol.layers and a2 == acc
        if pi is not None:
            ok = ok and fast.importance(xs, ys) == pi
        add(f"{name} the inputs leaves every metric unchanged", ok,
            f"accuracy {float(a2):.6g} vs {float(acc):.6g}; T {'equal' if t2.overall == tol.overall else 'DIFFERS'}")
    _tick(progress, 4, steps)

    # 5. T^b is non-increasing in b, and T^0 = 1
    values = [tol.overall[b] for b in B_GRID] if has_neurons else []
    add("T^b is non-increasing in b (and T^0 = 1)",
        not has_neurons or (values[0] == 1 and all(a >= b for a, b in zip(values, values[1:]))),
        ", ".join(f"T^{b} = {float(v):.4g}" for b, v in zip(B_GRID, values)))
    _tick(progress, 5, steps)

    # 6. the bitarray interpreter (the definition) agrees with the fast engine
    k = min(REFERENCE_INPUTS, len(x))
    ref = Interpreter(model)
    ok = list(ref.predictions(x[:k])) == [int(p) for p in preds[:k]]
    ok = ok and (not has_neurons or ref.tolerance(x[:k], B_GRID) == fast.tolerance(x[:k], B_GRID))
    bits = sum(len(model.layers[i].weight.bits) for i in model.weight_indices)
    pi_too = has_neurons and model.neurons * bits <= REFERENCE_PI_BUDGET and accuracy(preds[:k], y[:k]) > 0
    if pi_too:
        ok = ok and ref.importance(x[:k], y[:k]) == fast.importance(x[:k], y[:k])
    add("the reference interpreter and the fast engine agree", ok,
        f"predictions and T{' and Pi' if pi_too else ''} on the first {k} inputs")
    _tick(progress, 6, steps)

    # 7. masks written to a file and read back replay the keyed masks
    em = ErrorModel(0.05, seed, batch_size=min(16, len(x)))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "masks.npz")
        write_masks(path, model, em, 2, len(x))
        given = read_masks(path, model, len(x))
        keyed = [correct_under_errors(fast, x, y, em, r) for r in range(2)]
        replayed = [correct_under_errors(fast, x, y, em, r, given) for r in range(2)]
    add("masks written to a file replay the keyed masks", keyed == replayed,
        f"correct per repetition at BER 0.05: keyed {keyed}, replayed {replayed}")
    _tick(progress, 7, steps)
    return out


def _tick(progress, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
