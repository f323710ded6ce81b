"""The batch-norm fold (refbnn/semantics/batchnorm.py) against the float decision itself:
the exporter and the importer share the rule, so their agreement cannot see a mistake in
it. Here every reachable integer h is decided directly, in exact rational arithmetic on
the float64 affine form a * h + c that the float network computes, and compared with the
folded integer threshold."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refbnn.semantics.batchnorm import batchnorm_thresholds, sign_threshold

REACH = 40
finite = st.floats(-50, 50, allow_nan=False, allow_infinity=False)


def _fires(s: int, polarity: int, h: int) -> bool:
    return (h > s) if polarity > 0 else (h <= s)


@settings(max_examples=300, deadline=None)
@given(finite, finite, st.booleans())
@example(1.0, -3.0, True)       # tau = 3 exactly: a tie at h = 3, -1 for v > 0
@example(1.0, -3.0, False)      # the same tie, +1 for v >= 0
@example(-2.0, 5.0, True)       # a < 0: polarity -1, tau = 2.5
@example(0.0, 0.0, False)       # a = 0, c = 0: constant +1 for v >= 0, -1 for v > 0
def test_the_threshold_decides_every_reachable_h_as_the_affine_form(a, c, strict):
    """Property: for every integer |h| <= reach, the folded (s, polarity) gives +1 exactly
    where a h + c > 0 (strict) or >= 0, computed exactly as rationals of the float64 a, c."""
    s, polarity, _ = sign_threshold(a, c, strict, REACH)
    for h in range(-REACH, REACH + 1):
        v = Fraction(a) * h + Fraction(c)
        assert _fires(s, polarity, h) == (v > 0 if strict else v >= 0), (h, s, polarity)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite, finite, finite, st.floats(0, 100)), min_size=1, max_size=6),
       st.sampled_from([1e-5, 1.0, 1e3, 1e8]), st.sampled_from([1.0, 1 / 255, 1 / 3]))
def test_a_large_eps_folds_as_the_float_batch_norm_decides(channels, eps, scale):
    """Property: with eps up to 1e8 (BN's scale near 0, tau far beyond reach or near it),
    the thresholds give the decision of the float network's own batch norm on v = scale * h,
    evaluated as mul * v + add in float64 (written out in the test, not borrowed from the
    code under test) and compared exactly. (Mutation note: `a > 0` -> `a >= 0` in
    sign_threshold is equivalent: a = 0 returns before it.)"""
    gamma, beta, mean, var = (np.array(c) for c in zip(*channels))
    s, polarity, _ = batchnorm_thresholds(gamma, beta, mean, var, eps, scale, REACH)
    mul = gamma / np.sqrt(var + eps)          # the float network's batch norm, written out here
    add = beta - mean * mul
    a = np.float64(scale) * mul
    for n in range(len(gamma)):
        for h in range(-REACH, REACH + 1):
            v = Fraction(float(a[n])) * h + Fraction(float(add[n]))
            assert _fires(s[n], polarity[n], h) == (v > 0), (n, h)
