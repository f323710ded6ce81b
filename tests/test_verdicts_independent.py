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
from refbnn.experiments.verdicts import permutation_p, shift_interval, u_null_counts

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
