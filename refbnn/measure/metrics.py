"""The results of `refbnn metrics` as one JSON-ready dict (docs/semantics.md §9).

Exact quantities are written as `{"exact": "p/q", "value": float}`
(`refbnn.formats.values.exact`); the float is only for reading.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional, Sequence

import numpy as np

from ..engines.protocol import Engine
from ..formats.values import exact
from ..semantics.accuracy import accuracy
from ..semantics.importance import importance_variance
from ..semantics.margin import Tolerance, t_bar
from ..semantics.model import WEIGHT_LAYERS, Conv2d, Model, Threshold


def metrics(engine: Engine, x: np.ndarray, y: np.ndarray, bs: Sequence[tuple[str, Fraction]],
            with_importance: bool, progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Accuracy, T tuple, T-bar, per-layer breakdown and (optionally) Pi and VAR(Pi)."""
    tol = engine.tolerance(x, [b for _, b in bs])
    acc = accuracy(engine.predictions(x), y)
    pi = engine.importance(x, y, progress=progress) if with_importance else None
    return metrics_document(engine.name, engine.model, len(y), bs, tol, acc, pi)


def metrics_document(engine_name: str, model: Model, n_inputs: int, bs: Sequence[tuple[str, Fraction]],
                     tol: Tolerance, acc: Fraction, pi: Optional[Sequence[Fraction]]) -> dict:
    """The `refbnn metrics --json` document from the T tuple (with its layer breakdown),
    the accuracy and Pi (or None)."""
    T = {name: tol.overall[b] for name, b in bs}
    result = {
        "engine": engine_name,
        "inputs": int(n_inputs),
        "neurons": model.neurons,
        "accuracy": exact(acc),
        "T": {name: exact(v) for name, v in T.items()},
        "T_bar": exact(t_bar(T)),
        "layers": [],
    }
    for nl, per_b in zip(model.neuron_layers, tol.layers):
        lt = {name: per_b[b] for name, b in bs}
        result["layers"].append({
            "layer": nl.threshold_index, "weight_layer": nl.weight_index,
            "type": model.layers[nl.weight_index].type, "first": nl.first,
            "neurons": nl.channels, "positions": nl.positions,
            "T": {name: exact(v) for name, v in lt.items()}, "T_bar": exact(t_bar(lt))})
    if pi is not None:
        result["importance"] = [exact(p) for p in pi]
        result["var_importance"] = exact(importance_variance(pi))
    return result


def describe_model(model: Model) -> dict:
    """What `refbnn inspect` shows: per layer its type, output shape, weight bits, the
    global numbers of its neurons and notes (padding; which equation; polarity -1 count)."""
    neuron_at = {nl.threshold_index: nl for nl in model.neuron_layers}
    layers = []
    for i, layer in enumerate(model.layers):
        bits = len(layer.weight.bits) if isinstance(layer, WEIGHT_LAYERS) else 0
        notes, neurons = (f"padding {layer.padding}" if isinstance(layer, Conv2d) else ""), ""
        if isinstance(layer, Threshold):
            nl = neuron_at[i]
            neurons = f"{nl.offset}..{nl.offset + nl.channels - 1}"
            negative = sum(1 for p in layer.polarity if p < 0)
            notes = f"{'eq. 2 (/Z)' if nl.first else 'eq. 1'}; {negative} with polarity -1"
        layers.append({"type": layer.type, "output_shape": list(model.shapes[i]), "weight_bits": bits,
                       "neurons": neurons, "notes": notes})
    inp = {"shape": list(model.input_shape), "Z": model.Z}
    if model.input_threshold is not None:       # the model binarises its input (§2.6)
        inp["binarize"] = {"thresholds": list(model.input_threshold.thresholds),
                           "polarity": list(model.input_threshold.polarity)}
    return {"input": inp, "neurons": model.neurons,
            "classes": model.classes, "weight_bits": sum(l["weight_bits"] for l in layers),
            "layers": layers}
