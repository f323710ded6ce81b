"""Accuracy under bit errors: one repetition, a sweep over BERs, and its summary.

Each batch j of repetition r reads the model through its own flip pattern (keyed by
`refbnn.biterrors.masks.pattern`, or taken from a mask file). The engine is built
once; each pattern is applied with `engine.with_flips`, which negates the flipped
weights in the form the engine already holds instead of rebuilding it. A sweep draws
the keyed uniforms of each batch once and thresholds them at every BER.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from math import sqrt
from typing import Callable, Optional, Sequence

import numpy as np

from ..formats.values import exact
from .masks import ErrorModel, MaskSet, batches, keyed_uniforms, masks_at, pattern


def correct_under_errors(engine, x: np.ndarray, y: np.ndarray, em: ErrorModel, r: int,
                         given: Optional[MaskSet] = None) -> int:
    """Correct predictions in repetition r: each batch j under its own flip pattern (keyed,
    or taken from a MaskSet). `engine` is a clean engine of the model."""
    correct = 0
    for j, sl in batches(len(y), em.batch_size):
        if given is not None:
            weights, acts = given.pattern(r, j, sl.stop - sl.start)
        else:
            weights, acts = pattern(engine.model, em, r, j, sl.stop - sl.start)
        correct += _correct(engine, x[sl], y[sl], weights, acts)
    return correct


def _correct(engine, x: np.ndarray, y: np.ndarray, weights: list, acts: dict) -> int:
    """Correct predictions of one batch read through one flip pattern."""
    flipped = engine.with_flips(weights) if any(w is not None for w in weights) else engine
    return int((np.asarray(flipped.predictions(x, act_masks=acts or None)) == y).sum())


def accuracy_sweep(engine, x: np.ndarray, y: np.ndarray, bers: Sequence[tuple[str, float]], reps: int,
                   em: ErrorModel, given: Optional[MaskSet] = None,
                   progress: Optional[Callable[[int, int], None]] = None) -> list["Summary"]:
    """Exact accuracy of each repetition r < reps at each BER (named, value) of `bers`, under
    the error model `em` with its p replaced by each BER (or under the masks of `given`).

    Equal to `correct_under_errors` at each BER and repetition; faster, because the keyed
    uniforms of each (r, j, t) are drawn once and thresholded at every BER (the mask at p
    is draw < p, docs/semantics.md §6)."""
    n = len(y)
    if given is not None:
        counts = [[correct_under_errors(engine, x, y, em, r, given) for r in range(reps)]
                  for _ in bers]
    else:
        counts = [[0] * reps for _ in bers]
        any_flips = any(p > 0 for _, p in bers)
        for r in range(reps):
            for j, sl in batches(n, em.batch_size):
                draws = keyed_uniforms(engine.model, em, r, j) if any_flips else ([], {})
                for b, (_, p) in enumerate(bers):
                    weights, acts = masks_at(draws, p, sl.stop - sl.start) if p > 0 else ([], {})
                    counts[b][r] += _correct(engine, x[sl], y[sl], weights, acts)
            if progress is not None:
                progress(r + 1, reps)
    return [Summary(name, [Fraction(c, n) for c in row]) for (name, _), row in zip(bers, counts)]


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

    @property
    def mean(self) -> Fraction:
        return sum(self.accuracies, Fraction(0)) / len(self.accuracies)

    @property
    def std(self) -> float:
        acc = [float(a) for a in self.accuracies]
        return float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0

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
