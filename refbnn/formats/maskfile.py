"""The mask file (docs/semantics.md §3.4): explicit flip patterns, read without pickle.

`batch_size` (an integer scalar), `w{t}` bool [R, J, *weight shape] per weight tensor t
and optionally `a{t}` bool [R, J, batch_size, *input shape] per activation tensor t,
with t numbered as `refbnn.semantics.fliptargets` says (weights first). R repetitions,
J batches of `batch_size` inputs. Names, dtypes, shapes and the total size are checked
from the headers before any mask is decoded.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ..semantics.fliptargets import flip_targets
from ..semantics.model import Model
from .files import InputError, atomic_open
from .npzfile import npz_arrays, npz_headers

MASK_BYTES = 2**32   # all arrays of one mask file together (bool: one byte per bit)


def _check_layout(layout: dict, batch_size: int, model: Model, name: str) -> tuple[int, int]:
    """Check the mask arrays' names, dtypes and shapes (from headers or arrays: anything with
    .shape and .dtype) against `model`; return (R, J)."""
    def fail(field_: str, msg: str) -> InputError:
        return InputError(f"{name}: {field_}: {msg}")

    targets = {ft.name: ft for ft in flip_targets(model)}
    unknown = sorted(set(layout) - set(targets))
    if unknown:
        names = [ft.name for ft in flip_targets(model)]
        weights = [n for n in names if n[0] == "w"]
        acts = [n for n in names if n[0] == "a"]
        raise fail(unknown[0][:40], f"unknown array (this model has {weights[0]}..{weights[-1]}"
                                    f"{f' and {acts[0]}..{acts[-1]}' if acts else ''})")
    rj = None
    for key, arr in sorted(layout.items()):
        if arr.dtype != np.bool_:
            raise fail(key, f"expected dtype bool, got {arr.dtype}")
        ft = targets[key]
        want = ft.shape if ft.kind == "w" else (batch_size,) + ft.shape
        if len(arr.shape) != 2 + len(want) or tuple(arr.shape[2:]) != tuple(want):
            raise fail(key, f"shape {list(arr.shape)}, expected [R, J, {', '.join(map(str, want))}]")
        if rj is not None and tuple(arr.shape[:2]) != rj:
            raise fail(key, f"R, J = {list(arr.shape[:2])} differ from the other arrays' {list(rj)}")
        rj = tuple(arr.shape[:2])
    if rj is None:
        raise fail("w0", "the file holds no masks")
    if 0 in rj:
        raise fail(sorted(layout)[0], f"R, J = {list(rj)}: no repetitions or no batches")
    return rj


class MaskSet:
    """Flip patterns read from a masks file (the layout in the module docstring)."""

    def __init__(self, arrays: dict[str, np.ndarray], model: Model, name: str):
        if "batch_size" not in arrays:
            raise InputError(f"{name}: batch_size: missing")
        self.batch_size = _batch_size(arrays["batch_size"], name)
        masks = {k: v for k, v in arrays.items() if k != "batch_size"}
        self.reps, self.n_batches = _check_layout(masks, self.batch_size, model, name)
        self.weights = {int(k[1:]): v for k, v in masks.items() if k[0] == "w"}
        self.acts = {int(k[1:]): v for k, v in masks.items() if k[0] == "a"}
        self.model = model

    def pattern(self, r: int, j: int, batch: int) -> tuple[list, dict]:
        """Weight masks (one per weight layer, None where the file has none) and activation
        masks {layer: [batch, ...]} of repetition r, batch j (of `batch` inputs)."""
        weights, acts = [], {}
        for ft in flip_targets(self.model):
            if ft.kind == "w":
                weights.append(self.weights[ft.t][r, j] if ft.t in self.weights else None)
            elif ft.t in self.acts:
                acts[ft.layer] = self.acts[ft.t][r, j, :batch]
        return weights, acts


def _batch_size(value, name: str) -> int:
    if value.shape != () or value.dtype.kind not in "iu" or not 1 <= int(value) <= 2**20:
        raise InputError(f"{name}: batch_size: expected a positive integer scalar (at most 2^20)")
    return int(value)


def read_masks(path: str, model: Model, n_inputs: Optional[int] = None) -> MaskSet:
    """Read and validate a masks file against `model` (no pickle), and check that its
    batches cover `n_inputs` inputs when given."""
    headers = npz_headers(path, MASK_BYTES)
    if "batch_size" not in headers:
        raise InputError(f"{path}: batch_size: missing")
    if headers["batch_size"].shape != ():
        raise InputError(f"{path}: batch_size: expected a positive integer scalar")
    batch_size = _batch_size(npz_arrays(path, headers, ["batch_size"])["batch_size"], path)
    layout = {k: h for k, h in headers.items() if k != "batch_size"}
    _check_layout(layout, batch_size, model, path)
    total = sum(h.nbytes for h in layout.values())
    if total > MASK_BYTES:
        raise InputError(f"{path}: the masks declare {total} bytes, past the limit of {MASK_BYTES}")
    masks = MaskSet({"batch_size": np.array(batch_size), **npz_arrays(path, headers, layout)}, model, path)
    if n_inputs is not None and masks.n_batches < -(-n_inputs // masks.batch_size):
        raise InputError(f"{path}: w0: {masks.n_batches} batches of {masks.batch_size} "
                         f"do not cover {n_inputs} inputs")
    return masks


def write_mask_file(path: str, batch_size: int, masks: dict[str, np.ndarray]) -> None:
    """Write mask arrays {w{t} / a{t}: bool [R, J, ...]} and the batch size (atomically)."""
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, batch_size=np.array(batch_size), **masks)
