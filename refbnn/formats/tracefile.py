"""Trace files (docs/semantics.md §11.1): another implementation's per-layer values, for
`refbnn verify --trace`.

An `.npz` with any subset of:
- `h{l}`: the integer pre-activations entering threshold layer l (l = the layer's index in
  the model, as `refbnn inspect` numbers it), shape [I, *shape of that h];
- `a{l}`: the +-1 outputs of threshold layer l, shape [I, *its output shape]; also
  accepted as 0/1 bits or booleans;
- `scores`: the class scores [I, classes]; `predictions`: class indices [I].
Integers may be stored as floats when every value is integral. Anything else is an
error naming the file and the array.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ..semantics.model import Model, Threshold
from .files import InputError, atomic_open
from .npzfile import npz_arrays, npz_headers

MAX_TRACE_BYTES = 2**32
_NAME = re.compile(r"(h|a)([0-9]{1,3})")


@dataclass
class Trace:
    """The arrays of a trace, validated and converted: h as int64, a as int8 +-1."""

    path: str
    h: dict[int, np.ndarray] = field(default_factory=dict)
    a: dict[int, np.ndarray] = field(default_factory=dict)
    scores: Optional[np.ndarray] = None
    predictions: Optional[np.ndarray] = None

    def names(self) -> list[str]:
        """The arrays present, in layer order (h before a), then scores and predictions."""
        layers = sorted(set(self.h) | set(self.a))
        out = [n for l in layers for n in ((f"h{l}",) if l in self.h else ()) + ((f"a{l}",) if l in self.a else ())]
        return out + [n for n in ("scores", "predictions") if getattr(self, n) is not None]


def trace_integers(name: str, key: str, v: np.ndarray) -> np.ndarray:
    """An h, scores or predictions array as int64: integers, or floats with integral values."""
    if v.dtype.kind in "iu":
        return v.astype(np.int64)
    if v.dtype.kind == "f":
        if not np.all(np.isfinite(v)):
            raise InputError(f"{name}: {key}: holds NaN or infinity")
        if not np.all(v == np.round(v)) or np.max(np.abs(v), initial=0) > 2**53:
            bad = np.flatnonzero(v != np.round(v))
            raise InputError(f"{name}: {key}: expected integers, got {v.flat[bad[0]] if len(bad) else 'huge values'}"
                             f"{f' at flat index {bad[0]}' if len(bad) else ''}")
        return v.astype(np.int64)
    raise InputError(f"{name}: {key}: expected integers, got dtype {v.dtype}")


def trace_signs(name: str, key: str, v: np.ndarray) -> np.ndarray:
    """An a{l} array as int8 +-1: from +-1, 0/1 bits or booleans (anything else refused)."""
    if v.dtype == bool:
        return np.where(v, 1, -1).astype(np.int8)
    v = trace_integers(name, key, v)
    values = set(np.unique(v).tolist())
    if values <= {-1, 1}:
        return v.astype(np.int8)
    if values <= {0, 1}:
        return np.where(v == 1, 1, -1).astype(np.int8)
    if values <= {-1, 0, 1}:
        raise InputError(f"{name}: {key}: holds -1, 0 and +1; a threshold output is +-1 (a sign(0) = 0? "
                         "refbnn's contract gives -1 at h = s, docs/semantics.md §2.3)")
    raise InputError(f"{name}: {key}: expected +-1, 0/1 or booleans, got values {sorted(values)[:4]}")


def read_trace(path: str | os.PathLike, model: Model, inputs: int) -> Trace:
    """Read and validate a trace for `model` on a data set of `inputs` inputs."""
    name = os.fspath(path)
    headers = npz_headers(path, MAX_TRACE_BYTES)
    thresholds = [i for i, layer in enumerate(model.layers) if isinstance(layer, Threshold)]
    expected = {}
    for key in headers:
        m = _NAME.fullmatch(key)
        if m and int(m.group(2)) in thresholds:
            l = int(m.group(2))
            expected[key] = (inputs,) + (model.shapes[l - 1] if m.group(1) == "h" else model.shapes[l])
        elif key == "scores":
            expected[key] = (inputs, model.classes)
        elif key == "predictions":
            expected[key] = (inputs,)
        else:
            raise InputError(f"{name}: {key}: unknown array (expected h{{l}} or a{{l}} for a threshold layer l "
                             f"in {thresholds}, scores, predictions)")
    if not expected:
        raise InputError(f"{name}: the trace holds no arrays; it must cover at least one layer")
    for key, shape in expected.items():
        if headers[key].shape != shape:
            raise InputError(f"{name}: {key}: shape {list(headers[key].shape)}, expected {list(shape)}")
    arrays = npz_arrays(path, headers, list(expected))
    trace = Trace(name)
    for key, v in arrays.items():
        if key == "scores":
            trace.scores = trace_integers(name, key, v)
        elif key == "predictions":
            p = trace_integers(name, key, v)
            if np.any((p < 0) | (p >= model.classes)):
                raise InputError(f"{name}: predictions: values outside 0..{model.classes - 1}")
            trace.predictions = p
        elif key[0] == "h":
            trace.h[int(key[1:])] = trace_integers(name, key, v)
        else:
            trace.a[int(key[1:])] = trace_signs(name, key, v)
    return trace


def write_trace_file(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write trace arrays (already checked by `trace_integers` / `trace_signs`) atomically,
    after checking that every array has one row per input."""
    if not arrays:
        raise InputError("trace: nothing to write (give h, a, scores or predictions)")
    rows = {len(v) for v in arrays.values()}
    if len(rows) != 1:
        raise InputError(f"trace: arrays have different numbers of inputs: {sorted(rows)}")
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)
