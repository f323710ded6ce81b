"""The paired comparison of two protections under the same flips (refbnn profile --protect).

Repetition r of both arms reads the same keyed flip masks, less the protected bits
(refbnn.biterrors.protect), so the difference d_r = a_r - b_r of their accuracies is a
paired observation. The test asks whether arm a is better: the exact one-sided sign-flip
(permutation) test of the mean difference. Under the null hypothesis (no difference in
distribution) each d_r is as likely to have either sign, so

    p = #{s in {-1, +1}^R : sum_r s_r |d_r| >= sum_r d_r} / 2^R,

enumerated exactly for R <= EXACT_REPS repetitions (a Monte Carlo estimate from the seed
beyond). Its smallest attainable value is 2^-R: with 4 repetitions, p >= 1/16.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Sequence

import numpy as np

EXACT_REPS = 16
DRAWS = 2**16


def sign_flip_p(differences: Sequence[Fraction], seed: int = 0) -> Fraction:
    """One-sided p-value of "mean difference > 0" (module docstring), as an exact fraction
    when enumerated. Differences are exact accuracies differences (Fractions)."""
    d = [Fraction(v) for v in differences]
    if not d:
        raise ValueError("no repetitions to compare")
    den = math.lcm(*(v.denominator for v in d))   # Python ints: NumPy's gcd overflows past 2^63
    ints = [int(v * den) for v in d]             # exact: integers over one common denominator
    observed = sum(ints)
    r = len(d)
    # |sum| <= r * max|d|: int64 holds it exactly when that stays below 2^62, else Python ints
    mags = np.array([abs(v) for v in ints], dtype=np.int64 if r * max(map(abs, ints)) < 2**62 else object)
    if r <= EXACT_REPS:
        signs = ((np.arange(2**r)[:, None] >> np.arange(r)) & 1) * 2 - 1        # every sign vector
        sums = (signs.astype(mags.dtype) * mags[None, :]).sum(axis=1)
        return Fraction(int(np.count_nonzero(sums >= observed)), 2**r)
    rng = np.random.default_rng(seed)
    signs = rng.integers(0, 2, (DRAWS, r)) * 2 - 1
    sums = (signs.astype(mags.dtype) * mags[None, :]).sum(axis=1)
    return Fraction(int(np.count_nonzero(sums >= observed)) + 1, DRAWS + 1)   # never 0 from sampling
