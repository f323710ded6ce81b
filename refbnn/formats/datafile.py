"""The data file (docs/semantics.md §3.2): an `.npz` with integer arrays `x` and `y`.

`x` has shape [I, *input shape] and |x| <= Z; `y` has shape [I] with labels in
0..classes-1. Loading never unpickles (`allow_pickle=False`), and the array
headers are checked against `LIMITS` before any array is read.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from math import prod

import numpy as np

from ..semantics.model import Model
from .files import InputError, atomic_open

LIMITS = {"values": 2**31}   # x values in one data file


@dataclass(frozen=True)
class Dataset:
    """Inputs x [I, *input_shape] (int64) and labels y [I] (int64)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def _header(name: str, zf: zipfile.ZipFile, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of member `key` from its .npy header, without reading the data."""
    with zf.open(f"{key}.npy") as f:
        try:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        except ValueError as e:
            raise InputError(f"{name}: {key}: not a valid .npy array ({e})") from None
    return shape, dtype


def read_data(path: str | os.PathLike, model: Model) -> Dataset:
    """Read and validate a data file against `model` (input shape, Z, classes)."""
    name = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path)
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror})") from None
    except zipfile.BadZipFile:
        raise InputError(f"{name}: not an .npz file (expected a zip of .npy arrays x and y)") from None
    with zf:
        members = sorted(zf.namelist())
        if members != ["x.npy", "y.npy"]:
            raise InputError(f"{name}: expected exactly the arrays x and y, found "
                             f"{', '.join(m.removesuffix('.npy') for m in members) or 'none'}")
        xshape, xdtype = _header(name, zf, "x")
        yshape, ydtype = _header(name, zf, "y")
    for key, dtype in (("x", xdtype), ("y", ydtype)):
        if dtype.kind not in "iu":
            raise InputError(f"{name}: {key}: expected an integer array, got dtype {dtype}")
    want = (len(xshape) and xshape[0],) + model.input_shape
    if tuple(xshape) != want:
        raise InputError(f"{name}: x: shape {list(xshape)} does not match [I, *input.shape] = "
                         f"[I, {', '.join(map(str, model.input_shape))}]")
    if prod(xshape) > LIMITS["values"]:
        raise InputError(f"{name}: x: {prod(xshape)} values exceed the limit {LIMITS['values']}")
    if tuple(yshape) != (xshape[0],):
        raise InputError(f"{name}: y: shape {list(yshape)}, expected [{xshape[0]}] (one label per input)")
    if xshape[0] == 0:
        raise InputError(f"{name}: x: the data set is empty")
    with np.load(path, allow_pickle=False) as npz:
        x = npz["x"]
        y = npz["y"]
    # Range checks in the file's own dtype first: a uint64 beyond int64 must not wrap.
    bad = np.flatnonzero(np.abs(x.astype(np.float64).ravel()) > model.Z)
    if bad.size:
        idx = np.unravel_index(bad[0], x.shape)
        raise InputError(f"{name}: x{list(map(int, idx))}: value {int(x[idx])} outside |x| <= Z = {model.Z}")
    badl = np.flatnonzero((y < 0) | (y >= model.classes))
    if badl.size:
        raise InputError(f"{name}: y[{badl[0]}]: label {int(y[badl[0]])} outside 0..{model.classes - 1}")
    return Dataset(x.astype(np.int64), y.astype(np.int64))


def write_data(path: str | os.PathLike, x: np.ndarray, y: np.ndarray) -> None:
    """Write a data file atomically (uncompressed npz of int64 arrays)."""
    with atomic_open(path, "wb") as f:
        np.savez(f, x=np.asarray(x, dtype=np.int64), y=np.asarray(y, dtype=np.int64))
