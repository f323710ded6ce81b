"""The statistics behind verify's and profile's verdicts against values computed another
way: SciPy's implementations (SciPy comes with scikit-learn, already in the test extra),
and the sign-flip test's sampled branch against its own exact enumeration. A one-line
mistake in a tail, a degree of freedom or a side shows here."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from refbnn.measure.paired import DRAWS, EXACT_REPS, sign_flip_p
from refbnn.oracle.statistics import (chi2_two_sided, gamma_lower, incomplete_beta, normal_two_sided, one_sample_p,
                                      t_two_sided, welch_p)

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")

samples = st.lists(st.floats(0, 1, allow_nan=False), min_size=2, max_size=30)
# SciPy warns of cancellation on nearly equal samples; refbnn's values are compared all the same
pytestmark = pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation")


@settings(max_examples=200, deadline=None)
@given(samples, samples)
@example([0.0, 0.0], [0.0, 1.4258098426534053e-140])    # found by this test: df's terms underflowed
def test_welch_p_is_scipys_welch_test(a, b):
    """Property: welch_p = scipy.stats.ttest_ind(equal_var=False), the textbook Welch test
    (Welch-Satterthwaite degrees of freedom, two-sided)."""
    if np.var(a, ddof=1) + np.var(b, ddof=1) == 0:
        return                      # scipy gives nan; welch_p's convention is pinned elsewhere
    expected = scipy_stats.ttest_ind(a, b, equal_var=False).pvalue
    assert welch_p(a, b) == pytest.approx(expected, rel=1e-7, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(samples, st.floats(0, 1))
def test_one_sample_p_is_scipys_one_sample_test(a, mean):
    if np.var(a, ddof=1) == 0:
        return
    expected = scipy_stats.ttest_1samp(a, mean).pvalue
    assert one_sample_p(a, mean) == pytest.approx(expected, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 7, 30, 1000])
@pytest.mark.parametrize("t", [0.0, 0.5, 1.96, 3.0, 12.0])
def test_t_tail_is_scipys(t, df):
    assert t_two_sided(t, df) == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("df", [1, 2, 5, 63, 255])
@pytest.mark.parametrize("quantile", [0.001, 0.2, 0.5, 0.8, 0.999])
def test_chi_square_is_two_sided_with_the_right_degrees_of_freedom(df, quantile):
    """At the q-quantile of chi^2(df) the two-sided p is 2 min(q, 1 - q): the lower tail
    counts as much as the upper, and df is the one given (a df off by one moves it)."""
    x = scipy_stats.chi2.ppf(quantile, df)
    assert chi2_two_sided(x, df) == pytest.approx(2 * min(quantile, 1 - quantile), rel=1e-7)
    assert chi2_two_sided(x, df + 1) != pytest.approx(2 * min(quantile, 1 - quantile), rel=1e-3)


@pytest.mark.parametrize("a, b, x", [(0.5, 0.5, 0.3), (2, 3, 0.9), (15, 0.5, 0.99), (0.5, 40, 0.01), (100, 100, 0.5)])
def test_incomplete_beta_is_scipys(a, b, x):
    assert incomplete_beta(a, b, x) == pytest.approx(scipy_special.betainc(a, b, x), rel=1e-9)


@pytest.mark.parametrize("s, x", [(0.5, 0.1), (1, 1), (3, 10), (31.5, 20), (127.5, 160)])
def test_lower_incomplete_gamma_is_scipys(s, x):
    """Both branches: the series (x < s + 1) and the continued fraction."""
    assert gamma_lower(s, x) == pytest.approx(scipy_special.gammainc(s, x), rel=1e-9)


@pytest.mark.parametrize("z", [0.0, 1.0, 1.959963984540054, 4.0])
def test_normal_tail_is_scipys(z):
    assert normal_two_sided(z) == pytest.approx(2 * scipy_stats.norm.sf(z), rel=1e-12)


# -- the paired sign-flip test (profile --protect) ----------------------------------------------

def test_the_sign_flip_test_is_one_sided():
    """Four positive differences: p = 1/16 (only the all-plus assignment reaches the observed
    sum); four negative ones: p = 1 (every assignment reaches it), where a two-sided test
    would give 1/8 for both."""
    assert sign_flip_p([Fraction(1, 10)] * 4) == Fraction(1, 16)
    assert sign_flip_p([Fraction(-1, 10)] * 4) == Fraction(1)


def _exact_sign_flip_p(d: list[int]) -> Fraction:
    """The definition, enumerated in chunks for R past EXACT_REPS (2^R sign vectors)."""
    r, observed, mags = len(d), sum(d), np.abs(np.array(d, dtype=np.int64))
    count = 0
    for start in range(0, 2**r, 2**16):
        k = np.arange(start, min(2**r, start + 2**16))
        signs = ((k[:, None] >> np.arange(r)) & 1) * 2 - 1
        count += int(np.count_nonzero((signs * mags).sum(axis=1) >= observed))
    return Fraction(count, 2**r)


@pytest.mark.parametrize("seed", [0, 1])
def test_past_16_repetitions_the_sampled_p_is_within_its_binomial_error_of_the_exact_one(seed):
    """R = 20 > EXACT_REPS: sign_flip_p samples 2^16 assignments. Its estimate, (k + 1) /
    (draws + 1), lies within 5 binomial standard errors of the exact p enumerated over all
    2^20 assignments, on a case where p is neither 0 nor 1."""
    rng = np.random.default_rng(seed)
    d = [int(v) for v in rng.integers(-3, 6, 20)]
    assert len(d) > EXACT_REPS
    exact = float(_exact_sign_flip_p(d))
    assert 0.001 < exact < 0.999
    sampled = float(sign_flip_p([Fraction(v, 100) for v in d], seed=seed))
    assert abs(sampled - exact) <= 5 * (exact * (1 - exact) / DRAWS) ** 0.5 + 1 / DRAWS


def test_at_16_repetitions_the_test_enumerates_and_past_it_never_returns_0():
    """R = 16 is enumerated (p = 2^-16 exactly for all-positive differences); R = 17 samples,
    and a sampled p is never 0 ((k + 1) / (draws + 1))."""
    assert sign_flip_p([Fraction(1)] * 16) == Fraction(1, 2**16)
    assert sign_flip_p([Fraction(1)] * 17) == Fraction(1, DRAWS + 1)


def test_the_sign_flip_test_is_exact_where_floats_would_round():
    """d = (2^60 + 1, -2^60) over a common denominator: observed sum 1. The sign vectors
    (+, +) and (+, -) reach it (2^61 + 1 and 1), (-, +) and (-, -) do not: p = 2/4. In
    float64 2^60 + 1 rounds to 2^60 and (+, -) would give 0 < 1: p = 1/4."""
    assert sign_flip_p([Fraction(2**60 + 1, 7), Fraction(-2**60, 7)]) == Fraction(1, 2)


def test_the_sign_flip_test_stays_exact_past_int64():
    """Magnitudes past 2^63 (a common denominator of 3^50) go to Python ints: three positive
    differences give p = 1/8 exactly, as small ones do. (2^70, 2^70 + 1, -1) / 3: the
    observed sum 2^71 is reached only with the first two signs +, either third sign: 2/8."""
    big = Fraction(1, 3**50)
    assert sign_flip_p([big * 3**49 * 2, big * 5, big]) == Fraction(1, 8)
    assert sign_flip_p([Fraction(2**70, 3), Fraction(2**70 + 1, 3), Fraction(-1, 3)]) == Fraction(1, 4)


def test_no_repetitions_is_an_error_in_words():
    with pytest.raises(ValueError, match="^no repetitions to compare$"):
        sign_flip_p([])


def test_the_sampled_sign_flip_test_is_exact_where_floats_would_round():
    """Past EXACT_REPS (17 differences, 15 of them 0): d = (2^58 + 1, -2^58, 0, ...) has
    observed sum 1, reached exactly when the first sign is + (2^59 + 1 or 1): p = 1/2. In
    float64 2^58 + 1 rounds to 2^58, the (+, -) half gives 0 < 1, and p would be 1/4."""
    d = [Fraction(2**58 + 1, 3), Fraction(-2**58, 3)] + [Fraction(0)] * 15
    assert len(d) > EXACT_REPS
    assert abs(float(sign_flip_p(d)) - 0.5) <= 5 * (0.25 / DRAWS) ** 0.5
