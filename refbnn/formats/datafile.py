"""The data file (docs/semantics.md §3.2): an `.npz` with integer arrays `x` and `y`.

`x` has shape [I, *input shape] and |x| <= Z; `y` has shape [I] with labels in
0..classes-1. Read through the guarded `refbnn.formats.npzfile` reader: never
unpickles, and the array headers are checked against `LIMITS` before any array
is read.
"""
from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from math import prod

import numpy as np

from ..semantics.model import Model
from .files import InputError, atomic_open
from .npzfile import npz_arrays, npz_headers

LIMITS = {"values": 2**28}   # x values in one data file: 2 GiB as int64 (docs/semantics.md §3.3)


@dataclass(frozen=True)
class Dataset:
    """Inputs x [I, *input_shape] (int64) and labels y [I] (int64)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def read_data(path: str | os.PathLike, model: Model) -> Dataset:
    """Read and validate a data file against `model` (input shape, Z, classes)."""
    name = os.fspath(path)
    headers = npz_headers(path, 8 * LIMITS["values"])
    if sorted(headers) != ["x", "y"]:
        raise InputError(f"{name}: expected exactly the arrays x and y, found "
                         f"{', '.join(sorted(headers))[:200] or 'none'}")
    xh, yh = headers["x"], headers["y"]
    for key, h in headers.items():
        if h.dtype.kind not in "iu":
            raise InputError(f"{name}: {key}: expected an integer array, got dtype {h.dtype}")
    want = (len(xh.shape) and xh.shape[0],) + model.input_shape
    if xh.shape != want:
        raise InputError(f"{name}: x: shape {list(xh.shape)} does not match [I, *input.shape] = "
                         f"[I, {', '.join(map(str, model.input_shape))}]")
    if prod(xh.shape) > LIMITS["values"]:
        raise InputError(f"{name}: x: {prod(xh.shape)} values exceed the limit {LIMITS['values']}")
    if yh.shape != (xh.shape[0],):
        raise InputError(f"{name}: y: shape {list(yh.shape)}, expected [{xh.shape[0]}] (one label per input)")
    if xh.shape[0] == 0:
        raise InputError(f"{name}: x: the data set is empty")
    arrays = npz_arrays(path, headers, ["x", "y"])
    x, y = arrays["x"], arrays["y"]
    # Range checks in the file's own dtype (a uint64 beyond int64 must not wrap), and
    # without a temporary as large as x unless a value is out of range.
    if int(x.max()) > model.Z or int(x.min()) < -model.Z:
        bad = int(np.flatnonzero(((x > model.Z) | (x < -model.Z)).ravel())[0])
        idx = np.unravel_index(bad, x.shape)
        raise InputError(f"{name}: x{list(map(int, idx))}: value {int(x[idx])} outside |x| <= Z = {model.Z}")
    if int(y.min()) < 0 or int(y.max()) >= model.classes:
        badl = int(np.flatnonzero((y < 0) | (y >= model.classes))[0])
        raise InputError(f"{name}: y[{badl}]: label {int(y[badl])} outside 0..{model.classes - 1}")
    return Dataset(x.astype(np.int64, copy=False), y.astype(np.int64, copy=False))


def write_data(path: str | os.PathLike, x: np.ndarray, y: np.ndarray) -> None:
    """Write a data file atomically (uncompressed npz of int64 arrays). The same arrays give
    the same bytes: the zip entries carry a fixed date, not the clock's (np.savez's), so
    that the conformance suite is rebuilt byte for byte."""
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, a in (("x", x), ("y", y)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(a, dtype=np.int64), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), buf.getvalue())
