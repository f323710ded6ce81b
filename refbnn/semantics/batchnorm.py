"""Batch norm followed by a sign, as an integer threshold (docs/semantics.md §8, §10.3).

The one rule behind both the trainer's export (`refbnn.training.export`) and the
importer's fold (`refbnn.importers.fold`). A float network decides +1 iff

    a * h + c > 0   (v > 0, the authors' sign)   or   a * h + c >= 0   (v >= 0)

for the integer pre-activation h. With tau = -c / a, computed *exactly* as a Fraction
of the float64 a and c (no rounding after the float parameters themselves):

  a > 0, v > 0:  h > tau   <=> h > floor(tau)        polarity +1, s = floor(tau)
  a > 0, v >= 0: h >= tau  <=> h > ceil(tau) - 1     polarity +1, s = ceil(tau) - 1
  a < 0, v > 0:  h < tau   <=> h <= ceil(tau) - 1    polarity -1, s = ceil(tau) - 1
  a < 0, v >= 0: h <= tau  <=> h <= floor(tau)       polarity -1, s = floor(tau)
  a = 0:         constant: +1 iff c > 0 (c >= 0); s = -reach - 1 (always +1) or reach (never)

(each equivalence because h is an integer). s is kept as computed, so eq. 1 measures the
margin to the real threshold even where it lies beyond the reachable |h| <= reach (such a
neuron is constant, and Theorem 1's bound is still true); it is clamped only to the model
file's limit |s| <= THRESHOLD_LIMIT, which changes no output since reach is far below it.
"""
from __future__ import annotations

import math
import sys
from fractions import Fraction
from typing import Optional, Sequence

import numpy as np

THRESHOLD_LIMIT = 2**53   # |s| in a model file (docs/semantics.md §3); every reachable |h| is below it


def batchnorm_affine(gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Inference batch norm gamma (v - mean) / sqrt(var + eps) + beta as mul * v + add, in
    float64: mul = gamma / sqrt(var + eps), add = beta - mean * mul."""
    mul = np.asarray(gamma, dtype=np.float64) / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    return mul, np.asarray(beta, dtype=np.float64) - np.asarray(mean, dtype=np.float64) * mul


def sign_threshold(a: float, c: float, strict: bool, reach: int) -> tuple[int, int, Optional[Fraction]]:
    """(s, polarity, tau) of the integer threshold that equals "+1 iff a h + c > 0" (`strict`)
    or ">= 0" on every integer |h| <= reach (the table in the module docstring); tau is
    None for a = 0 (a constant output)."""
    if a == 0:
        up = c > 0 if strict else c >= 0
        return (-reach - 1 if up else reach), 1, None
    tau = -Fraction(c) / Fraction(a)
    floor, ceil = math.floor(tau), math.ceil(tau)
    if a > 0:
        s, polarity = (floor, 1) if strict else (ceil - 1, 1)
    else:
        s, polarity = (ceil - 1, -1) if strict else (floor, -1)
    return max(-THRESHOLD_LIMIT, min(THRESHOLD_LIMIT, s)), polarity, tau


def tau_as_float(tau: Fraction) -> float:
    """tau for reports; past the float range (a scale near 0), the largest float of its
    sign, which lies beyond every reachable h as tau does."""
    try:
        return float(tau)
    except OverflowError:
        return sys.float_info.max if tau > 0 else -sys.float_info.max


def batchnorm_thresholds(gamma: Sequence[float], beta: Sequence[float], mean: Sequence[float],
                         var: Sequence[float], eps: float, scale: float, reach: int
                         ) -> tuple[list[int], list[int], list[Optional[Fraction]]]:
    """Per channel (s, polarity, tau) of BN -> sign (+1 iff BN(v) > 0, docs/semantics.md §8)
    where the float pre-activation v = scale * h of the integer h (scale = 1/Z in the first
    layer, whose float network reads x / Z; 1 elsewhere)."""
    mul, add = batchnorm_affine(gamma, beta, mean, var, eps)
    a = np.float64(scale) * mul          # the importer composes the same product in the same order
    out = [sign_threshold(float(a_n), float(c_n), True, reach) for a_n, c_n in zip(a, add)]
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]
