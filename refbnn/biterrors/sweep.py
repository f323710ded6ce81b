"""Accuracy under bit errors: one repetition, a sweep over BERs, and its summary.

Each batch j of repetition r reads the model through its own flip pattern (keyed by
`refbnn.biterrors.masks.pattern`, or taken from a mask file). The engine is built
once; a pattern is applied with `engine.with_flips` (masks) or `engine.flipped`
(flat indices, in place), which negate the flipped weights in the form the engine
already holds instead of rebuilding it. A sweep draws each batch's keyed bits once
and uses them at every BER (docs/engine.md, "Bit errors without rebuilding").
"""
from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field
from fractions import Fraction
from math import sqrt
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from ..engines.protocol import Engine
from ..formats.files import InputError
from ..formats.maskfile import MaskSet
from ..formats.values import exact
from ..semantics.model import Model
from .masks import ErrorModel, below, draw_bytes, error_batches, keyed_draws, pattern, raw_threshold
from .protect import Protection, restrict, unprotected_indices


def correct_under_errors(engine: Engine, x: np.ndarray, y: np.ndarray, em: ErrorModel, r: int,
                         given: Optional[MaskSet] = None, protect: Optional[Protection] = None) -> int:
    """Correct predictions in repetition r: each batch j under its own flip pattern (keyed,
    or taken from a MaskSet), less the bits `protect` keeps free of errors. `engine` is a
    clean engine of the model."""
    correct = 0
    for j, sl in error_batches(len(y), em.batch_size):
        if given is not None:
            weights, acts = given.pattern(r, j, sl.stop - sl.start)
        else:
            weights, acts = pattern(engine.model, em, r, j, sl.stop - sl.start)
        weights, acts = restrict(engine.model, protect, weights, acts)
        correct += _correct(engine, x[sl], y[sl], weights, acts)
    return correct


def _correct(engine: Engine, x: np.ndarray, y: np.ndarray, weights: list, acts: dict) -> int:
    """Correct predictions of one batch read through one flip pattern."""
    flipped = engine.with_flips(weights) if any(w is not None for w in weights) else engine
    return int((np.asarray(flipped.predictions(x, act_masks=acts or None)) == y).sum())


MAX_REPS = 10_000      # repetitions per BER: the 95% interval is then ~2% of the spread
MAX_WORK = 2**44       # multiply-adds (plus drawn bits) of one sweep: about an hour on 2 cores


def sweep_work(model: Model, n_inputs: int, reps: int, n_bers: int, em: ErrorModel) -> int:
    """Multiply-adds of `reps` repetitions at `n_bers` BERs over `n_inputs` inputs, plus the
    bits drawn for their flip patterns (one pattern per batch of em.batch_size inputs)."""
    batches = -(-n_inputs // em.batch_size)
    return reps * n_bers * n_inputs * model.multiply_adds + reps * batches * draw_bytes(model, em) // 8


def check_sweep_size(model: Model, n_inputs: int, reps: int, n_bers: int, em: ErrorModel, where: str) -> None:
    """Refuse, before any work, a sweep past MAX_REPS repetitions or MAX_WORK (an InputError
    naming `where`, the option or field that asked for it)."""
    if reps > MAX_REPS:
        raise InputError(f"{where}: {reps} repetitions per BER, past the limit of {MAX_REPS}")
    work = sweep_work(model, n_inputs, reps, n_bers, em)
    if work > MAX_WORK:
        raise InputError(f"{where}: {reps} repetitions x {n_bers} BERs x {n_inputs} inputs need about {work:.2g} "
                         f"multiply-adds, past the limit of {MAX_WORK:.2g} (fewer repetitions, BERs or inputs)")


def accuracy_sweep(engine: Engine, x: np.ndarray, y: np.ndarray, bers: Sequence[tuple[str, float]], reps: int,
                   em: ErrorModel, given: Optional[MaskSet] = None,
                   progress: Optional[Callable[[int, int], None]] = None,
                   protect: Optional[Protection] = None) -> list["Summary"]:
    """Exact accuracy of each repetition r < reps at each BER (named, value) of `bers`, under
    the error model `em` with its p replaced by each BER (or under the masks of `given`),
    less the bits `protect` keeps free of errors (refbnn.biterrors.protect).

    Equal to `correct_under_errors` at each BER and repetition; faster, because each batch's
    keyed draws are made once and serve every BER (the mask at p is `below(draw, p)`, and
    the masks are nested in p): the candidates below the largest BER are found in one pass,
    each BER adds its new flips to the previous BER's, negated in place by the engine."""
    n = len(y)
    if given is not None:
        counts = [[correct_under_errors(engine, x, y, em, r, given, protect) for r in range(reps)] for _ in bers]
        return [Summary(name, [Fraction(c, n) for c in row]) for (name, _), row in zip(bers, counts)]
    counts = [[0] * reps for _ in bers]
    ascending = sorted((p, b) for b, (_, p) in enumerate(bers) if p > 0)
    keys = [(r, j, sl) for r in range(reps) for j, sl in error_batches(n, em.batch_size)]
    for (r, j, sl), draws in zip(keys, _draws(engine.model, em, keys, [p for p, _ in ascending])):
        if len(ascending) < len(bers):   # BER 0: the clean predictions
            clean = _correct(engine, x[sl], y[sl], [], {})
            for b, (_, p) in enumerate(bers):
                counts[b][r] += clean if p <= 0 else 0
        if draws is not None:
            steps, acts = draws
            model = engine.model
            steps = [None if s is None else [unprotected_indices(model, protect, i, idx) for idx in s]
                     for i, s in zip(model.weight_indices, steps)]
            kept = {i: None if protect is None else protect.input_mask(model, i) for i in acts}
            # Masks are nested in p: going up the sorted BERs only adds flips. Each step negates
            # just the new ones, on top of the earlier steps; leaving the stack undoes them all.
            with ExitStack() as stack:
                for k, (p, b) in enumerate(ascending):
                    flipped = stack.enter_context(engine.flipped([None if s is None else s[k] for s in steps]))
                    masks = {i: below(raw[:sl.stop - sl.start], p) if kept[i] is None
                             else below(raw[:sl.stop - sl.start], p) & ~kept[i][None] for i, raw in acts.items()}
                    counts[b][r] += _correct(flipped, x[sl], y[sl], [], masks)
        if progress is not None and sl.stop == n:
            progress(r + 1, reps)
    return [Summary(name, [Fraction(c, n) for c in row]) for (name, _), row in zip(bers, counts)]


def _draws(model, em: ErrorModel, keys: list, ps: list[float]) -> Iterator[Optional[tuple]]:
    """For each (r, j, _) of `keys`: the nested flip steps of every weight tensor at the
    ascending BERs ps, and the raw activation draws; None if no BER is above 0."""
    for r, j, _ in keys:
        if not ps:
            yield None
            continue
        weights, acts = keyed_draws(model, em, r, j)
        yield [None if raw is None else _nested_flips(raw, ps) for raw in weights], acts


def _nested_flips(raw: np.ndarray, ps: list[float]) -> list[np.ndarray]:
    """For ascending BERs ps: the flat indices that join the mask at each p (the mask at p_k is
    the union of the first k + 1 steps). An entry joins at the first p_k with
    `below(raw, p_k)`, i.e. raw >> 11 < ceil(p_k 2^53) (see `raw_threshold`)."""
    candidates = np.flatnonzero(below(raw, ps[-1]))
    x = raw.reshape(-1)[candidates] >> np.uint64(11)
    cuts = np.array([raw_threshold(p) >> 11 for p in ps], dtype=np.uint64)   # at most 2^53 each
    step = np.searchsorted(cuts, x, side="right")          # the first k with x < cuts[k]
    step = step.astype(np.uint8 if len(ps) <= 256 else np.uint32)   # small keys: a fast radix sort
    order = np.argsort(step, kind="stable")
    ends = np.cumsum(np.bincount(step, minlength=len(ps)))
    return np.split(candidates[order], ends[:-1])


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard tables).
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table above, then the Cornish-Fisher expansion (error < 1e-4)."""
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass
class Summary:
    """Accuracy over R repetitions at one BER: mean, sample standard deviation, min, max and
    the 95% Student-t interval over repetitions (docs/semantics.md §6)."""

    ber: str
    accuracies: list[Fraction] = field(default_factory=list)
    ddof: int = 1          # the contract's sample standard deviation; 0 only to recompute others' claims

    @property
    def mean(self) -> Fraction:
        return sum(self.accuracies, Fraction(0)) / len(self.accuracies)

    @property
    def std(self) -> float:
        acc = [float(a) for a in self.accuracies]
        return float(np.std(acc, ddof=self.ddof)) if len(acc) > 1 else 0.0

    @property
    def ci95(self) -> Optional[list[float]]:
        r = len(self.accuracies)
        if r < 2:
            return None
        half = t_quantile_975(r - 1) * self.std / sqrt(r)
        return [max(0.0, float(self.mean) - half), min(1.0, float(self.mean) + half)]

    def as_dict(self) -> dict:
        return {"ber": self.ber, "reps": len(self.accuracies), "mean": exact(self.mean), "std": self.std,
                "min": exact(min(self.accuracies)), "max": exact(max(self.accuracies)),
                "ci95": self.ci95, "accuracies": [exact(a) for a in self.accuracies]}
