"""The experiments' verdict statistics (refbnn/experiments/verdicts.py) against values computed
another way: SciPy's exact Mann-Whitney test for the permutation p (both its enumerated and
its sampled branch), the exact null distribution for the normal approximation's critical
value, and a design where the one-sided and the two-sided interval differ."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refbnn.experiments import verdicts
from refbnn.experiments.verdicts import compare, permutation_p, shift_interval, u_null_counts

scipy_stats = pytest.importorskip("scipy.stats")


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_the_enumerated_permutation_p_is_scipys_exact_mann_whitney(m, n, seed):
    """Property: without ties, permutation_p(lower, higher) is the exact one-sided p of the
    Mann-Whitney test that `higher` is greater (scipy, method="exact")."""
    values = np.random.default_rng(seed).permutation(m + n).astype(float)     # distinct: no ties
    lower, higher = values[:m].tolist(), values[m:].tolist()
    expected = scipy_stats.mannwhitneyu(higher, lower, alternative="greater", method="exact").pvalue
    assert permutation_p(lower, higher) == pytest.approx(expected, rel=1e-12)


def test_the_sampled_permutation_p_is_within_its_binomial_error_of_the_exact_one():
    """11 against 11: C(22, 11) = 705,432 splits > EXACT_SPLITS, so 20,000 are sampled; the
    estimate (k + 1) / 20,001 lies within 5 binomial standard errors of scipy's exact p."""
    assert math.comb(22, 11) > verdicts.EXACT_SPLITS
    rng = np.random.default_rng(3)
    lower = rng.normal(0, 1, 11).tolist()
    higher = (rng.normal(0.6, 1, 11)).tolist()
    exact = scipy_stats.mannwhitneyu(higher, lower, alternative="greater", method="exact").pvalue
    assert 0.001 < exact < 0.5
    assert abs(permutation_p(lower, higher) - exact) <= 5 * math.sqrt(exact * (1 - exact) / 20_000) + 1 / 20_001


@pytest.mark.parametrize("m, n", [(3, 4), (5, 5), (2, 9), (1, 1)])
def test_the_null_counts_are_the_enumerated_distribution(m, n):
    """u_null_counts (a recursion on the largest pooled value) against brute force: every
    split of m + n distinct values into m and n, its U counted pair by pair."""
    import itertools

    brute = [0] * (m * n + 1)
    for hi in itertools.combinations(range(m + n), n):
        lo = [i for i in range(m + n) if i not in hi]
        brute[sum(1 for h in hi for low in lo if h > low)] += 1
    assert u_null_counts(m, n) == tuple(brute)


@pytest.mark.parametrize("m, n", [(64, 64), (70, 60), (80, 80)])
def test_the_normal_critical_value_is_the_exact_one_past_the_table(m, n):
    """Past EXACT_U_CELLS the critical value comes from the normal approximation (variance
    m n (m + n + 1) / 12, continuity correction 1/2); at these sizes it equals the exact
    critical value computed from the exact null distribution (measured: 2394, 2453, 3683)."""
    assert m * n > verdicts.EXACT_U_CELLS
    counts, total = u_null_counts(m, n), math.comb(m + n, n)
    tail = np.cumsum(np.array(counts[::-1], dtype=object))[::-1]
    exact = next(c for c in range(m * n + 1) if tail[c] <= 0.05 * total)
    assert verdicts._critical(m, n, 0.05) == exact


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**32 - 1))
def test_with_ties_the_permutation_p_is_the_midrank_one(m, n, seed):
    """Property: with ties (values from 0..2), permutation_p equals the permutation test of
    U computed the other way, from midranks: U = (sum of the higher sample's midranks)
    - n (n + 1) / 2, which counts a tie as 1/2 by construction."""
    import itertools

    values = np.random.default_rng(seed).integers(0, 3, m + n).astype(float)
    lower, higher = values[:m].tolist(), values[m:].tolist()
    ranks = scipy_stats.rankdata(values)
    observed = ranks[m:].sum() - n * (n + 1) / 2
    splits = list(itertools.combinations(range(m + n), n))
    hits = sum(1 for hi in splits if ranks[list(hi)].sum() - n * (n + 1) / 2 >= observed - 1e-9)
    assert permutation_p(lower, higher) == pytest.approx(hits / len(splits), rel=1e-12)


def test_a_sampled_p_is_never_0():
    """11 against 11, every higher value above every lower one: no sampled split reaches the
    observed U, and the sampled p is 1/20,001 (the observed split counted), never 0."""
    assert permutation_p([0.0] * 11, [1.0] * 11) == 1 / 20_001


@pytest.mark.parametrize("m, n", [(3, 3), (11, 11)])
def test_all_tied_values_give_p_one_in_both_branches(m, n):
    """All values equal: every split has the observed U (ties count 1/2), so p = 1, in the
    enumerated branch (3 against 3) and the sampled one (11 against 11: every draw counts)."""
    assert permutation_p([0.5] * m, [0.5] * n) == 1.0


def test_one_sided_and_two_sided_intervals_differ_where_the_design_allows_only_one():
    """3 against 3: the smallest attainable p is 1/20 = 0.05. The one-sided 95% bound exists
    (U = 9 has P = 1/20 <= 0.05), the two-sided 95% interval does not (it needs 0.025): a
    mistake that used the one-sided level for both would give a finite interval."""
    s = shift_interval([1.0, 2.0, 3.0], [5.0, 6.0, 7.0])
    assert math.isinf(s.low) and math.isinf(s.high)
    assert s.lower_bound == 2.0          # d sorted: the smallest difference 5 - 3 = 2 is d_{N-c+1} with c = 9
    assert s.upper_bound == 6.0          # and d_c = d_9 = 7 - 1 = 6


# -- the outcome rule and the report line at their edges --------------------------------------

@pytest.mark.parametrize("direction, base, other, outcome", [
    ("lower", [1, 2, 3], [4, 5, 6], "not held"),      # higher at p = 1/20 = alpha exactly: contradicted
    ("lower", [1, 3, 5], [2, 4, 6], "cannot tell"),   # neither side significant
    ("higher", [1, 3, 5], [2, 4, 6], "cannot tell"),
])
def test_lower_is_contradicted_at_p_equal_to_alpha_and_undecided_otherwise(direction, base, other, outcome):
    """"p <= alpha" is significant on both sides of the rule: 3 against 3 separated
    completely has p = 1 / C(6, 3) = 0.05, exactly alpha."""
    assert compare("c", direction, base, other).outcome == outcome


def test_not_lower_holds_when_the_bound_is_exactly_the_margin():
    """"not lower" holds when the one-sided lower bound L >= -margin x |median(base)|: with
    median(base) = 1 and margin = -L the two sides are equal, and equality holds."""
    base = [0.5, 0.8, 1.0, 1.2, 2.5, 0.9, 1.1, 0.7, 1.3, 1.0]      # median 1, mean 1.1: the median counts
    other = [b + 0.01 for b in base]
    assert float(np.median(base)) == 1.0 and float(np.mean(base)) == pytest.approx(1.1)
    low = shift_interval(base, other).lower_bound
    assert -1 < low < 0
    assert compare("c", "not lower", base, other, margin=-low).outcome == "held"
    assert compare("c", "not lower", base, other, margin=-low * 0.999).outcome == "cannot tell"


def test_a_comparison_uses_its_own_alpha_for_the_interval_and_refuses_an_unknown_direction():
    """compare(alpha=0.2) gives shift_interval's bounds at 0.2 (narrower than at 0.05), and
    a direction other than higher / lower / not lower is a ValueError naming it."""
    base, other = [1.0, 2.5, 3.0, 4.2], [2.0, 3.1, 4.4, 5.0]
    c = compare("c", "higher", base, other, alpha=0.2)
    assert c.shift == shift_interval(base, other, 0.2) != shift_interval(base, other, 0.05)
    with pytest.raises(ValueError, match="sideways"):
        compare("c", "sideways", base, other)


def test_the_report_line_by_hand():
    """[1, 2, 3] against [4, 5, 6]: means 5 vs 2; the differences 1 2 2 3 3 3 4 4 5 have median
    3; the two-sided 95% interval needs p <= 0.025 < 1/20, so it is (-inf, inf); p = 1/20 =
    0.05, the smallest attainable; held. "not lower" reports p(lower), here 1 (nothing
    lower)."""
    c = compare("fc-8, trained at 0.05 vs 0", "higher", [1, 2, 3], [4, 5, 6])
    assert c.line("mean T-bar") == ("fc-8, trained at 0.05 vs 0: mean T-bar 5 vs 2; shift 3, 95% CI (-inf, inf): "
                                    "too few repetitions for a 95% interval; p = 0.05 (smallest attainable 0.05): held")
    assert c.shift.low == -math.inf and c.shift.high == math.inf
    n = compare("fc-8", "not lower", [1, 2, 3], [4, 5, 6])
    assert "; p(lower) = 1 (smallest attainable 0.05): " in n.line("mean VAR(Pi)")


def test_a_finite_two_sided_interval_is_the_exact_test_inverted_at_half_alpha():
    """Property: 8 against 8 (C(16, 8) = 12,870 splits): the two-sided 95% interval [low,
    high] is where SciPy's exact one-sided tests at 0.025 start to reject: other - low + e
    is not significantly higher, other - low - e is; alike at high. The report line shows it."""
    rng = np.random.default_rng(5)
    base, other = rng.normal(0, 1, 8).tolist(), rng.normal(1, 1, 8).tolist()
    s = shift_interval(base, other)
    e = 1e-9

    def p_higher(shift):
        return scipy_stats.mannwhitneyu([o - shift for o in other], base, alternative="greater",
                                        method="exact").pvalue

    def p_lower(shift):
        return scipy_stats.mannwhitneyu([o - shift for o in other], base, alternative="less",
                                        method="exact").pvalue
    assert p_higher(s.low - e) <= 0.025 < p_higher(s.low + e)
    assert p_lower(s.high + e) <= 0.025 < p_lower(s.high - e)
    line = compare("c", "higher", base, other).line("mean")
    assert f"; shift {s.estimate:.3g}, 95% CI [{s.low:.3g}, {s.high:.3g}]; p = " in line


def test_enumeration_reaches_exact_splits_and_sampling_is_seeded(monkeypatch):
    """At total = EXACT_SPLITS splits the p is still enumerated (3 against 3: 20 splits, a
    clean separation has p = 1/20 exactly); one split fewer allowed and it is sampled,
    (hits + 1) / 20,001, the same value on every call (seeded)."""
    monkeypatch.setattr(verdicts, "EXACT_SPLITS", 20)
    assert permutation_p([1, 2, 3], [4, 5, 6]) == 1 / 20
    monkeypatch.setattr(verdicts, "EXACT_SPLITS", 19)
    sampled = permutation_p([1, 2, 3], [4, 5, 6])
    assert sampled != 1 / 20 and sampled * 20_001 == round(sampled * 20_001)
    assert permutation_p([1, 2, 3], [4, 5, 6]) == sampled
