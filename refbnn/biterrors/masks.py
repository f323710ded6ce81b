"""The bit error model (paper section II-C, docs/semantics.md §6): keyed flip masks and mask files.

- Symmetric: every targeted stored bit reads flipped with the same probability p.
- Transient: a flip affects one read; the stored model is unchanged afterwards.
- Targets: the weight bits of the chosen weight layers (default: all, first and
  last included) and, optionally, the +-1 activations that feed hidden weight layers.
- Granularity: one flip pattern per batch of `batch_size` inputs. Per input is
  batch_size = 1, per pass is batch_size >= the data set size.

Masks are *keyed*, not streamed: the mask of tensor t in repetition r and batch j
is `numpy.random.default_rng([seed, r, j, t]).random(shape) < p`, with the tensors
numbered as `refbnn.semantics.fliptargets` says (weights first; an activation tensor
has shape [batch size, *input shape of its layer]). So a mask never depends on which
other tensors are targeted, on the engine, on evaluation order or threads, and any
implementation can rebuild it. Mask files: `refbnn.formats.maskfile`.
"""
from __future__ import annotations

from dataclasses import dataclass
from math import ceil, prod
from typing import Iterator, Optional

import numpy as np

from ..engines.ops import input_slices
from ..formats.files import InputError
from ..formats.maskfile import MASK_BYTES, write_mask_file
from ..semantics.fliptargets import FlipTarget, activation_targets, weight_targets
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


def targeted(model: Model, em: "ErrorModel") -> list[FlipTarget]:
    """The tensors `em` flips, in their numbering: the chosen weight layers' weights, and
    every activation tensor if `em.activations`."""
    layers = set(em.targets(model))
    return [ft for ft in weight_targets(model) if ft.layer in layers] + \
        (activation_targets(model) if em.activations else [])


def mask_shape(ft: FlipTarget, batch_size: int) -> tuple[int, ...]:
    """The shape of one batch's mask of `ft`: the weight shape, or [batch size, *shape]."""
    return ft.shape if ft.kind == "w" else (batch_size,) + ft.shape


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
    weights: list = [None] * len(model.weight_indices)
    acts = {}
    for ft in targeted(model, em):
        draw = _raw([em.seed, r, j, ft.t], mask_shape(ft, em.batch_size))
        if ft.kind == "w":
            weights[ft.t] = draw
        else:
            acts[ft.layer] = draw
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
    return enumerate(input_slices(n, batch_size))


def write_masks(path: str, model: Model, em: ErrorModel, reps: int, n_inputs: int) -> None:
    """Write the keyed masks of `reps` repetitions over `n_inputs` inputs (atomically)."""
    n_batches = (n_inputs + em.batch_size - 1) // em.batch_size
    need = reps * n_batches * draw_bytes(model, em) // 8
    if need > MASK_BYTES:
        raise InputError(f"--reps, --inputs: {reps} repetitions x {n_batches} batches of masks need {need} "
                         f"bytes, past the mask file limit of {MASK_BYTES}")
    masks = {ft.name: np.stack([np.stack([keyed_mask(em.seed, r, j, ft.t, mask_shape(ft, em.batch_size), em.p)
                                          for j in range(n_batches)]) for r in range(reps)])
             for ft in targeted(model, em)}
    write_mask_file(path, em.batch_size, masks)


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
    return 8 * sum(prod(mask_shape(ft, em.batch_size)) for ft in targeted(model, em))
