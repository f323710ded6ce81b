"""The results of `refbnn metrics` as one JSON-ready dict (SPEC section 9).

Exact quantities are written as `{"exact": "p/q", "value": float}`; the float is
only for reading, the string is the result.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Optional, Sequence

import numpy as np

from .importance import accuracy, importance_variance
from .margin import t_bar


def exact(q: Fraction | int) -> dict:
    """A rational as SPEC's JSON object: always "p/q", even for integers ("1/1")."""
    q = Fraction(q)
    return {"exact": f"{q.numerator}/{q.denominator}", "value": float(q)}


def parse_bs(text: str) -> list[tuple[str, Fraction]]:
    """`--b 2,0.5,1/2` -> [("2", 2), ("0.5", 1/2), ("1/2", 1/2)], each read exactly."""
    out = []
    for token in text.split(","):
        token = token.strip()
        try:
            b = Fraction(token)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"--b: {token!r} is not a rational number (write 2, 0.5 or 1/2)") from None
        if b < 0:
            raise ValueError(f"--b: {token!r} is negative; b must be >= 0")
        out.append((token, b))
    if not out:
        raise ValueError("--b: give at least one value")
    return out


def metrics(engine, x: np.ndarray, y: np.ndarray, bs: Sequence[tuple[str, Fraction]],
            with_importance: bool, progress: Optional[Callable[[int, int], None]] = None) -> dict:
    """Accuracy, T tuple, T-bar, per-layer breakdown and (optionally) Pi and VAR(Pi)."""
    model = engine.model
    values = [b for _, b in bs]
    tol = engine.tolerance(x, values)
    acc = accuracy(engine.predictions(x), y)
    T = {name: tol.overall[b] for name, b in bs}
    result = {
        "engine": engine.name,
        "inputs": int(len(y)),
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
    if with_importance:
        pi = engine.importance(x, y, progress=progress)
        result["importance"] = [exact(p) for p in pi]
        result["var_importance"] = exact(importance_variance(pi))
    return result
