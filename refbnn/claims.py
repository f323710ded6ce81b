"""Write claims and trace files from another framework's NumPy arrays (docs/semantics.md §11).

    from refbnn.claims import write_claims, write_trace
    write_claims("claims.json", accuracy=acc, T={2: t2, 4: t4}, importance=pi,
                 var_importance=var, predictions=preds)
    write_trace("trace.npz", h={1: h1, 4: h4}, a={1: a1, 4: a4}, scores=scores)

Values may be Python or NumPy numbers, `Fraction`s (written exactly, as
{"exact": "p/q"}) or floats (checked within `refbnn verify --atol`); arrays are NumPy
arrays (from PyTorch: `tensor.numpy()`). Layer numbers l are the threshold layers'
indices in the model (`refbnn inspect` shows them). Both files are validated against
the documented layout before anything is written, and written atomically.
"""
from __future__ import annotations

import json
import os
from fractions import Fraction
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .formats.claimsfile import check_layout
from .formats.files import InputError, atomic_open
from .formats.tracefile import trace_integers, trace_signs, write_trace_file


def _number(v: Any, where: str) -> Any:
    if isinstance(v, Fraction):
        return {"exact": f"{v.numerator}/{v.denominator}"}
    if isinstance(v, (bool, np.bool_)):
        raise InputError(f"{where}: expected a number, got a boolean")
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            raise InputError(f"{where}: NaN or infinity")
        return float(v)
    if isinstance(v, np.ndarray) and v.shape == ():
        return _number(v.item(), where)
    raise InputError(f"{where}: expected a number, got {type(v).__name__}")


def _b_map(T: Mapping, where: str) -> dict:
    return {str(b) if not isinstance(b, Fraction) else f"{b.numerator}/{b.denominator}": _number(v, f"{where}[{b}]")
            for b, v in T.items()}


def _numbers(values: Sequence, where: str) -> list:
    return [_number(v, f"{where}[{k}]") for k, v in enumerate(np.asarray(values, dtype=object).ravel())]


def claims_dict(accuracy=None, T: Optional[Mapping] = None, T_bar=None, layers: Optional[Sequence[Mapping]] = None,
                importance: Optional[Sequence] = None, var_importance=None, predictions: Optional[Sequence] = None,
                inputs: Optional[int] = None, neurons: Optional[int] = None,
                bit_errors: Optional[Mapping] = None) -> dict:
    """The claims as the JSON object `refbnn verify --claims` reads (only the given keys)."""
    doc: dict[str, Any] = {}
    if accuracy is not None:
        doc["accuracy"] = _number(accuracy, "accuracy")
    if T is not None:
        doc["T"] = _b_map(T, "T")
    if T_bar is not None:
        doc["T_bar"] = _number(T_bar, "T_bar")
    if layers is not None:
        doc["layers"] = []
        check_layout({"layers": [dict(e) for e in layers]}, "claims")   # the keys, before converting
        for k, entry in enumerate(layers):
            out = {key: (_b_map(v, f"layers[{k}].T") if key == "T" else _number(v, f"layers[{k}].{key}")
                         if key != "type" and not isinstance(v, bool) else v) for key, v in entry.items()}
            doc["layers"].append(out)
    if importance is not None:
        doc["importance"] = _numbers(importance, "importance")
    if var_importance is not None:
        doc["var_importance"] = _number(var_importance, "var_importance")
    if predictions is not None:
        doc["predictions"] = [int(p) for p in np.asarray(predictions).ravel()]
    for key, v in (("inputs", inputs), ("neurons", neurons)):
        if v is not None:
            doc[key] = int(v)
    if bit_errors is not None:
        be = dict(bit_errors)
        be["results"] = [{k: (_numbers(v, f"bit_errors.results[{j}].{k}") if k == "accuracies" else v)
                          for k, v in dict(r).items()} for j, r in enumerate(be.get("results", []))]
        doc["bit_errors"] = be
    check_layout(doc, "claims")
    return doc


def write_claims(path: str | os.PathLike, **claims) -> dict:
    """Validate and write a claims file (atomically); returns the JSON object written.
    Keywords as `claims_dict`."""
    doc = claims_dict(**claims)
    if not doc:
        raise InputError("claims: nothing to write")
    with atomic_open(path, "w") as f:
        json.dump(doc, f, indent=1)
    return doc


def write_trace(path: str | os.PathLike, h: Optional[Mapping[int, Any]] = None, a: Optional[Mapping[int, Any]] = None,
                scores=None, predictions=None) -> list[str]:
    """Validate and write a trace file (atomically): h{l} and a{l} for threshold layer l,
    scores and predictions, each with one row per input. Returns the array names."""
    arrays: dict[str, np.ndarray] = {}     # the reader's rules (formats.tracefile), applied before writing
    for l, v in (h or {}).items():
        arrays[f"h{int(l)}"] = trace_integers("trace", f"h{l}", np.asarray(v))
    for l, v in (a or {}).items():
        arrays[f"a{int(l)}"] = trace_signs("trace", f"a{l}", np.asarray(v))
    for key, v in (("scores", scores), ("predictions", predictions)):
        if v is not None:
            arrays[key] = trace_integers("trace", key, np.asarray(v))
    write_trace_file(path, arrays)
    return sorted(arrays)
