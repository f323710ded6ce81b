"""The claims file layout (docs/semantics.md §11.2): the keys `refbnn verify --claims`
accepts at every depth, shared by the checker (refbnn.oracle.checker) and the writer
for other frameworks (refbnn.claims)."""
from __future__ import annotations

from fractions import Fraction
from typing import Any, Optional, Sequence

import numpy as np

from .files import InputError

KNOWN = {"accuracy", "T", "T_bar", "layers", "importance", "var_importance", "predictions",
         "inputs", "neurons", "bit_errors", "engine", "model", "data", "profile"}   # engine, model, data, profile: informational
BIT_ERROR_KEYS = {"seed", "batch_size", "layers", "activations", "results", "inputs", "rng",
                  "model", "data", "engine", "granularity"}     # the last four: informational
# The keys `refbnn metrics --json` writes per threshold layer, and `refbnn eval --json` per BER.
LAYER_KEYS = {"layer", "weight_layer", "type", "first", "neurons", "positions", "T", "T_bar"}
RESULT_KEYS = {"ber", "reps", "mean", "std", "min", "max", "ci95", "accuracies"}


def jsonable(obj: Any) -> Any:
    """Claims built in Python (Fractions, NumPy numbers and arrays) as the JSON layout."""
    if isinstance(obj, Fraction):
        return {"exact": f"{obj.numerator}/{obj.denominator}"}
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, Fraction) else f"{k.numerator}/{k.denominator}": jsonable(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    return obj


def bit_errors_claims(seed: int, batch_size: int, granularity: str, layers: Optional[Sequence[int]],
                      activations: bool, inputs: int, results: list[dict]) -> dict:
    """The `bit_errors` block of a claims file (§11.2), as `refbnn eval --json`, `profile`
    and the experiment records write it: how the flips were drawn (the error model) and one
    summary per BER (`refbnn.biterrors.sweep.Summary.as_dict`)."""
    return {"seed": seed, "batch_size": batch_size, "granularity": granularity,
            "layers": None if layers is None else list(layers), "activations": activations,
            "inputs": inputs, "results": results}


def _keys(where: str, obj: Any, allowed: set) -> None:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected an object")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InputError(f"{where}.{str(unknown[0])[:40]}: unknown key (known: {', '.join(sorted(allowed))})")


def check_layout(doc: Any, name: str) -> None:
    """Refuse unknown keys at every depth and entries of the wrong kind; the values are
    checked against the model by `refbnn verify`."""
    if not isinstance(doc, dict):
        raise InputError(f"{name}: expected a JSON object of claims")
    unknown = sorted(set(doc) - KNOWN)
    if unknown:
        raise InputError(f"{name}: {str(unknown[0])[:40]}: unknown claim (known: {', '.join(sorted(KNOWN))})")
    for key in ("T",):
        if key in doc and (not isinstance(doc[key], dict) or not doc[key]):
            raise InputError(f"{name}: {key}: expected an object from b to value")
    for key in ("layers", "importance", "predictions"):
        if key in doc and not isinstance(doc[key], list):
            raise InputError(f"{name}: {key}: expected a list")
    for k, entry in enumerate(doc.get("layers", [])):
        _keys(f"{name}: layers[{k}]", entry, LAYER_KEYS)
        if "T_bar" in entry and "T" not in entry:
            raise InputError(f"{name}: layers[{k}].T_bar: needs the claimed T (its b values) beside it")
    if "T_bar" in doc and "T" not in doc:      # T-bar is the mean of the claimed tuple T
        raise InputError(f"{name}: T_bar: needs the claimed T (its b values) beside it")
    if "bit_errors" in doc:
        be = doc["bit_errors"]
        _keys(f"{name}: bit_errors", be, BIT_ERROR_KEYS)
        results = be.get("results")
        if not isinstance(results, list) or not results:
            raise InputError(f"{name}: bit_errors.results: expected a non-empty list")
        for k, entry in enumerate(results):
            where = f"{name}: bit_errors.results[{k}]"
            _keys(where, entry, RESULT_KEYS)
            if not isinstance(entry.get("ber"), str):
                raise InputError(f"{where}.ber: expected the BER as a string, e.g. \"0.01\"")
            if not isinstance(entry.get("accuracies"), list) or not entry["accuracies"]:
                raise InputError(f"{where}.accuracies: expected one accuracy per repetition")
