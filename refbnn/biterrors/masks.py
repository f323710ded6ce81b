"""The bit error model (paper section II-C, docs/semantics.md §6): keyed flip masks and mask files.

- Symmetric: every targeted stored bit reads flipped with the same probability p.
- Transient: a flip affects one read; the stored model is unchanged afterwards.
- Targets: the weight bits of the chosen weight layers (default: all, first and
  last included) and, optionally, the +-1 activations that feed hidden weight layers.
- Granularity: one flip pattern per batch of `batch_size` inputs. Per input is
  batch_size = 1, per pass is batch_size >= the data set size.

Masks are *keyed*, not streamed: the mask of tensor t in repetition r and batch j
is `numpy.random.default_rng([seed, r, j, t]).random(shape) < p`. Tensors are
numbered **weights first**: t = 0 .. L-1 for the L weight tensors in layer order,
then t = L, L+1, ... for the activation tensors (the inputs of the hidden weight
layers, in layer order; shape [batch size, *input shape of that layer]). So a mask
never depends on which other tensors are targeted, on the engine, on evaluation
order or threads, and any implementation can rebuild it.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from typing import Iterator, Optional

import numpy as np

from ..formats.files import InputError, atomic_open
from ..formats.npzfile import npz_arrays, npz_headers
from ..semantics.model import Model


@dataclass(frozen=True)
class ErrorModel:
    """What to flip, how often, and how the flip patterns are keyed."""

    p: float
    seed: int = 0
    batch_size: int = 128
    layers: Optional[tuple[int, ...]] = None   # weight layer indices; None = all
    activations: bool = False

    def targets(self, model: Model) -> list[int]:
        return list(model.weight_indices) if self.layers is None else list(self.layers)


def activation_layers(model: Model) -> list[int]:
    """The hidden weight layers, whose +-1 inputs can be targeted."""
    return list(model.weight_indices[1:])


def keyed_mask(seed: int, r: int, j: int, t: int, shape: tuple[int, ...], p: float) -> np.ndarray:
    """docs/semantics.md §6: default_rng([seed, r, j, t]).random(shape) < p. The definition;
    `pattern` computes the very same bits faster (see `below`)."""
    return np.random.default_rng([seed, r, j, t]).random(shape) < p


def keyed_draws(model: Model, em: ErrorModel, r: int, j: int) -> tuple[list, dict]:
    """The raw 64-bit outputs behind the masks of repetition r, batch j: for every targeted
    tensor t, default_rng([seed, r, j, t]).bit_generator.random_raw(shape) (weights: one per
    weight layer, None where untargeted; activations: {layer: [batch_size, ...]} if
    targeted). The mask at BER p is `below(draw, p)`, so one draw serves every p of a sweep,
    and the masks are nested in p."""
    targets = set(em.targets(model))
    weights = []
    for t, i in enumerate(model.weight_indices):
        shape = model.layers[i].weight.shape
        weights.append(_raw([em.seed, r, j, t], shape) if i in targets else None)
    acts = {}
    if em.activations:
        n_weights = len(model.weight_indices)
        for k, i in enumerate(activation_layers(model)):
            acts[i] = _raw([em.seed, r, j, n_weights + k], (em.batch_size,) + model.shapes[i - 1])
    return weights, acts


def _raw(key: list[int], shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(key).bit_generator.random_raw(prod(shape)).reshape(shape)


def raw_threshold(p: float) -> int:
    """The integer c with raw < c  <=>  random() < p, for the 64-bit outputs raw of numpy's
    default generator (PCG64), whose random() is (raw >> 11) * 2^-53 exactly.

    For an integer x = raw >> 11: x * 2^-53 < p  <=>  x < p * 2^53 (scaling by a power of two
    is exact)  <=>  x < ceil(p * 2^53) (x is an integer); and raw >> 11 < C  <=>  raw < C * 2^11.
    So c = ceil(p * 2^53) * 2^11, a Python int (2^64 when p = 1: every raw is below it)."""
    return ceil(p * 2.0**53) << 11


def below(raw: np.ndarray, p: float) -> np.ndarray:
    """random() < p for the raw outputs `raw` (see `raw_threshold`): the keyed mask at BER p."""
    c = raw_threshold(p)
    if c >= 2**64:
        return np.ones(raw.shape, dtype=bool)
    return raw < np.uint64(c)


def masks_at(draws: tuple[list, dict], p: float, batch: int) -> tuple[list, dict]:
    """The flip pattern at BER p from `keyed_draws` (None where nothing can flip), activation
    masks cut to the `batch` inputs of a short last batch."""
    weights, acts = draws
    if p <= 0:
        return [None] * len(weights), {}
    return ([None if u is None else below(u, p) for u in weights],
            {i: below(u[:batch], p) for i, u in acts.items()})


def pattern(model: Model, em: ErrorModel, r: int, j: int, batch: int) -> tuple[list, dict]:
    """The flip pattern of repetition r, batch j (of `batch` inputs): weight masks (one
    per weight layer, None where untargeted) and activation masks {layer: [batch, ...]}.
    Each mask equals `keyed_mask(seed, r, j, t, shape, p)` (docs/semantics.md §6)."""
    if em.p <= 0:
        return [None] * len(model.weight_indices), {}
    return masks_at(keyed_draws(model, em, r, j), em.p, batch)


def error_batches(n: int, batch_size: int) -> Iterator[tuple[int, slice]]:
    """(j, slice) of the j-th batch of `batch_size` inputs (the last may be shorter)."""
    for j, start in enumerate(range(0, n, batch_size)):
        yield j, slice(start, min(n, start + batch_size))


# -- mask files ---------------------------------------------------------------------------

MASK_BYTES = 2**32   # all arrays of one mask file together (bool: one byte per bit)


def _check_layout(layout: dict, batch_size: int, model: Model, name: str) -> tuple[int, int]:
    """Check the mask arrays' names, dtypes and shapes (from headers or arrays: anything with
    .shape and .dtype) against `model`; return (R, J)."""
    def fail(field_: str, msg: str) -> InputError:
        return InputError(f"{name}: {field_}: {msg}")

    n_w = len(model.weight_indices)
    hidden = activation_layers(model)
    allowed = {f"w{t}" for t in range(n_w)} | {f"a{n_w + k}" for k in range(len(hidden))}
    unknown = sorted(set(layout) - allowed)
    if unknown:
        raise fail(unknown[0][:40], f"unknown array (this model has w0..w{n_w - 1}"
                                    f"{f' and a{n_w}..a{n_w + len(hidden) - 1}' if hidden else ''})")
    rj = None
    for key, arr in sorted(layout.items()):
        if arr.dtype != np.bool_:
            raise fail(key, f"expected dtype bool, got {arr.dtype}")
        t = int(key[1:])
        if key[0] == "w":
            want = model.layers[model.weight_indices[t]].weight.shape
        else:
            want = (batch_size,) + model.shapes[hidden[t - n_w] - 1]
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
    """Flip patterns read from a masks file (layout in docs/semantics.md §3.4):
    `batch_size` (int scalar), `w{t}` bool [R, J, *weight shape] per weight tensor t,
    optionally `a{t}` bool [R, J, batch_size, *input shape] for activation tensor t."""

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
        n_w = len(self.model.weight_indices)
        weights = [self.weights[t][r, j] if t in self.weights else None for t in range(n_w)]
        hidden = activation_layers(self.model)
        acts = {hidden[t - n_w]: a[r, j, :batch] for t, a in self.acts.items()}
        return weights, acts


def _batch_size(value, name: str) -> int:
    if value.shape != () or value.dtype.kind not in "iu" or not 1 <= int(value) <= 2**20:
        raise InputError(f"{name}: batch_size: expected a positive integer scalar (at most 2^20)")
    return int(value)


def read_masks(path: str, model: Model, n_inputs: Optional[int] = None) -> MaskSet:
    """Read and validate a masks file against `model` (no pickle), and check that its
    batches cover `n_inputs` inputs when given. Names, dtypes, shapes and the total size
    are checked from the headers before any mask is decoded."""
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


def write_masks(path: str, model: Model, em: ErrorModel, reps: int, n_inputs: int) -> None:
    """Write the keyed masks of `reps` repetitions over `n_inputs` inputs (atomically)."""
    n_batches = (n_inputs + em.batch_size - 1) // em.batch_size
    need = reps * n_batches * draw_bytes(model, em) // 8
    if need > MASK_BYTES:
        raise InputError(f"--reps, --inputs: {reps} repetitions x {n_batches} batches of masks need {need} "
                         f"bytes, past the mask file limit of {MASK_BYTES}")
    arrays: dict[str, np.ndarray] = {"batch_size": np.array(em.batch_size)}
    n_w = len(model.weight_indices)
    targets = set(em.targets(model))
    for t, i in enumerate(model.weight_indices):
        if i in targets:
            arrays[f"w{t}"] = np.stack([np.stack([keyed_mask(em.seed, r, j, t, model.layers[i].weight.shape, em.p)
                                                  for j in range(n_batches)]) for r in range(reps)])
    if em.activations:
        for k, i in enumerate(activation_layers(model)):
            shape = (em.batch_size,) + model.shapes[i - 1]
            arrays[f"a{n_w + k}"] = np.stack([np.stack([keyed_mask(em.seed, r, j, n_w + k, shape, em.p)
                                                        for j in range(n_batches)]) for r in range(reps)])
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def error_model(model: Model, p: float, seed: int, granularity: str, batch_size: int,
                layers: Optional[tuple[int, ...]], activations: bool, n_inputs: int) -> ErrorModel:
    """The error model of the command-line options: `granularity` batch (a pattern per
    `batch_size` inputs), input (per input) or pass (one pattern for all `n_inputs`)."""
    size = {"batch": batch_size, "input": 1, "pass": n_inputs}[granularity]
    if layers is not None and any(i not in model.weight_indices for i in layers):
        raise ValueError(f"layers: {list(layers)} are not all weight layers "
                         f"({', '.join(map(str, model.weight_indices))})")
    em = ErrorModel(p, seed, size, layers, activations)
    need = draw_bytes(model, em)
    if need > MAX_DRAW_BYTES:
        raise InputError(f"--batch-size: the flip patterns of one batch of {size} inputs need {need} bytes "
                         f"of draws, past the limit of {MAX_DRAW_BYTES} (use a smaller batch, or no --activations)")
    return em


MAX_DRAW_BYTES = 2**31   # the uniforms of one batch's flip pattern (float64)


def draw_bytes(model: Model, em: ErrorModel) -> int:
    """Bytes of the uniform draws behind one batch's flip pattern (8 per targeted bit)."""
    bits = sum(prod(model.layers[i].weight.shape) for i in em.targets(model))
    if em.activations:
        bits += em.batch_size * sum(prod(model.shapes[i - 1]) for i in activation_layers(model))
    return 8 * bits
