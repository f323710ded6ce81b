"""The batch-norm fold (refbnn/semantics/batchnorm.py) against the float decision itself:
the exporter and the importer share the rule, so their agreement cannot see a mistake in
it. Here every reachable integer h is decided directly, in exact rational arithmetic on
the float64 affine form a * h + c that the float network computes, and compared with the
folded integer threshold."""
from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refbnn.semantics.batchnorm import batchnorm_affine, batchnorm_thresholds, sign_threshold, tau_as_float

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


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 50, width=32), st.floats(0, 100, width=32)), min_size=1, max_size=6),
       st.sampled_from([1e-5, 1e-3, 0.1]))
def test_float32_parameters_are_widened_before_the_arithmetic(channels, eps):
    """Property: float32 parameters (as ONNX initializers hold them) fold exactly as their
    float64 values do: batch norm's a = gamma / sqrt(var + eps) is computed in float64
    (docs/semantics.md §8), never in the float32 of the file. (var + eps in float32 would
    round: e.g. var = 1, eps = 1e-5 gives 1.00001001 in float32, 1.00001 in float64.)"""
    gamma32, var32 = (np.array(c, dtype=np.float32) for c in zip(*channels))
    zeros = np.zeros_like(gamma32)
    mul32, add32 = batchnorm_affine(gamma32, zeros, zeros, var32, eps)
    mul64, add64 = batchnorm_affine(gamma32.astype(np.float64), zeros, zeros, var32.astype(np.float64), eps)
    assert mul32.dtype == np.float64
    assert mul32.tobytes() == mul64.tobytes() and add32.tobytes() == add64.tobytes()


def test_the_float32_rounding_the_widening_avoids_is_real():
    """The case the property above guards, by hand: var = 1, eps = 1e-5, gamma = 1. In
    float64 a = 1/sqrt(1.00001) = 0.999995000037...; in float32 arithmetic var + eps rounds
    to 1.0000100136 and a to 0.99999499; the two differ, and the fold must give float64's."""
    mul, _ = batchnorm_affine(np.float32([1.0]), np.float32([0.0]), np.float32([0.0]), np.float32([1.0]), 1e-5)
    assert mul[0] == 1 / np.sqrt(1.00001)
    assert np.float32(1) / np.sqrt(np.float32(1) + np.float32(1e-5)) != mul[0]


def test_tau_past_the_float_range_reports_the_largest_float_of_its_sign():
    """tau_as_float: a tau beyond float's range (a scale near 0: c / a = 10^400) is reported
    as +-sys.float_info.max, the sign kept; a tau inside the range as the nearest float."""
    assert tau_as_float(Fraction(10**400)) == sys.float_info.max
    assert tau_as_float(-Fraction(10**400, 3)) == -sys.float_info.max
    assert tau_as_float(Fraction(5, 2)) == 2.5
    assert tau_as_float(Fraction(-1, 3)) == -1 / 3
