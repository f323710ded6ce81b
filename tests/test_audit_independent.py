"""verify's injector audit and its accuracy judgment (refbnn/oracle/statistics.py) against
values computed another way: every check's p-value recomputed here with SciPy from the
masks' flip counts (the normal approximation with continuity correction, the two-sided
chi-square of the dispersion, the chi-square of the bit positions, Pearson's test), every
branch that only some inputs reach (one pattern, BER 0, few flips, narrow tensors, two
batches), the degenerate t-tests, and the exact expected accuracy against brute force."""
from __future__ import annotations

import statistics
from fractions import Fraction

import numpy as np
import pytest
from conftest import enumerated_expected_accuracy

from refbnn.biterrors.masks import ErrorModel
from refbnn.biterrors.sweep import correct_under_errors
from refbnn.engines.fast import FastEngine
from refbnn.formats.maskfile import MaskSet
from refbnn.oracle.statistics import (EXACT_BITS, _correlation_p, audit_masks, chi2_two_sided, exact_expected_accuracy,
                                      gamma_lower, incomplete_beta, judge_accuracies, one_sample_p, welch_p)
from refbnn.semantics.model import Linear, Model, Threshold, Weight

scipy_stats = pytest.importorskip("scipy.stats")


def _model(*shapes) -> Model:
    """Linear layers of the given [out, in] weight shapes (all +1), thresholds 0 between."""
    layers = []
    for k, (out, inp) in enumerate(shapes):
        layers.append(Linear(Weight.from_array(np.ones((out, inp), dtype=int))))
        if k < len(shapes) - 1:
            layers.append(Threshold((0,) * out))
    return Model.build((shapes[0][1],), 1, layers)


def _audit(model, arrays, em, alpha=0.01, batch=4):
    checks = audit_masks(MaskSet({"batch_size": np.array(batch), **arrays}, model, "masks"), model, em, alpha)
    return {c["check"]: c for c in checks}


def _scipy_checks(counts: dict, masks: dict, n_bits: dict, p: float) -> dict:
    """Each audit check's p-value, computed from the counts with SciPy (the module
    docstring's definitions, written out independently)."""
    out = {}
    for name, c in counts.items():
        n = c.size * n_bits[name]
        z = (abs(c.sum() - n * p) - 0.5) / np.sqrt(n * p * (1 - p))
        out[f"{name}: flip count"] = 2 * scipy_stats.norm.sf(max(z, 0))
        d = ((c - c.mean()) ** 2).sum() / (n_bits[name] * p * (1 - p))
        out[f"{name}: spread"] = min(1, 2 * min(scipy_stats.chi2.cdf(d, c.size - 1), scipy_stats.chi2.sf(d, c.size - 1)))
        flat = masks[name].reshape(c.size, -1)
        if flat.shape[1] >= 8 and c.sum() >= 40:
            by_pos = np.array([flat[:, k::8].sum() for k in range(8)])
            share = np.array([len(range(k, flat.shape[1], 8)) for k in range(8)])
            out[f"{name}: bit positions"] = scipy_stats.chisquare(by_pos, c.sum() * share / share.sum()).pvalue
        if c.shape[1] > 2:
            out[f"{name}: batches independent"] = scipy_stats.pearsonr(c[:, :-1].ravel(), c[:, 1:].ravel()).pvalue
    a, b = sorted(counts)
    out[f"{a}, {b}: independent"] = scipy_stats.pearsonr(counts[a].ravel(), counts[b].ravel()).pvalue
    return out


@pytest.mark.parametrize("seed", range(5))
def test_every_audit_check_is_its_textbook_test(seed):
    """Property: on masks of 4 repetitions x 5 batches (20 patterns) over a 12-bit and a
    6-bit weight tensor, every check's p-value equals the textbook test computed here from
    the flip counts with SciPy, and no other check is made. 12 bits is not a multiple of 8,
    so bit positions 0-3 of a byte occur twice per pattern and 4-7 once: the expected
    counts are unequal, as the check must weigh them."""
    model, p = _model((3, 4), (2, 3)), 0.25
    rng = np.random.default_rng(seed)
    masks = {"w0": rng.random((4, 5, 3, 4)) < p, "w1": rng.random((4, 5, 2, 3)) < p}
    counts = {k: v.reshape(4, 5, -1).sum(axis=2).astype(float) for k, v in masks.items()}
    assert counts["w0"].sum() >= 40     # 240 bits at p = 0.25: 60 expected
    want = _scipy_checks(counts, masks, {"w0": 12, "w1": 6}, p)
    got = _audit(model, masks, ErrorModel(p, 0, 4))
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name]["p_value"] == pytest.approx(want[name], rel=1e-7, abs=1e-12), name
    total = int(masks["w0"].sum())
    assert got["w0: flip count"]["detail"] == f"{total} flips in 20 patterns of 12 bits; Binomial mean 60.0"
    d = ((counts["w0"] - counts["w0"].mean()) ** 2).sum() / (12 * p * (1 - p))
    assert got["w0: spread"]["detail"] == f"index of dispersion {d:.1f} on 19 degrees of freedom"
    by_pos = [int(masks["w0"].reshape(20, 12)[:, k::8].sum()) for k in range(8)]
    assert got["w0: bit positions"]["detail"] == f"flips per bit position within a byte: {by_pos}"
    assert got["w0, w1: independent"]["detail"] == "correlation of per-pattern flip counts"
    assert got["w0: batches independent"]["detail"] == "correlation of flip counts of consecutive batches"


def test_a_count_near_its_mean_has_p_one_after_the_continuity_correction():
    """By hand: 20 patterns of 12 bits at p = 1/4 expect 60 flips; 60 flips exactly give
    |60 - 60| - 1/2 < 0, so z is taken as 0 and p = 1; 62 flips give z = 1.5 / sqrt(45)
    = 0.2236, p = 2 (1 - Phi(0.2236)) = 0.8231."""
    model = _model((3, 4), (2, 3))
    for flips, want in ((60, 1.0), (62, 2 * scipy_stats.norm.sf(1.5 / np.sqrt(45)))):
        w0 = np.zeros((4, 5, 12), dtype=bool)
        w0.reshape(-1)[np.linspace(0, 239, flips).astype(int)] = True
        got = _audit(model, {"w0": w0.reshape(4, 5, 3, 4)}, ErrorModel(0.25, 0, 4, layers=(0,)))
        assert got["w0: flip count"]["p_value"] == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.8231, abs=1e-4)


def test_one_pattern_has_no_spread_and_no_correlations():
    """With one repetition of one batch there is one count per tensor: no spread (a
    chi-square of 0 degrees of freedom), no bit positions below 40 flips, and the
    correlation of two single counts has no information: p = 1."""
    model = _model((3, 4), (2, 3))
    masks = {"w0": np.zeros((1, 1, 3, 4), dtype=bool), "w1": np.zeros((1, 1, 2, 3), dtype=bool)}
    masks["w0"][0, 0, 0, :3] = True          # 3 flips of 12 at p = 1/4: exactly the mean
    got = _audit(model, masks, ErrorModel(0.25, 0, 4))
    assert sorted(got) == ["w0, w1: independent", "w0: flip count", "w1: flip count"]
    assert got["w0: flip count"]["p_value"] == 1.0 and got["w0, w1: independent"]["p_value"] == 1.0
    # w1: 0 flips of 6 at p = 1/4 (1.5 expected): z = (1.5 - 0.5) / sqrt(6 * 3/16) = 0.9428
    assert got["w1: flip count"]["p_value"] == pytest.approx(2 * scipy_stats.norm.sf(1 / np.sqrt(6 * 3 / 16)))


def test_at_ber_0_any_flip_fails_and_none_passes():
    """p = 0: the Binomial has no spread; no flips is exactly the expectation (p-value 1),
    one flip is impossible (p-value 0). No spread check: it would divide by 0."""
    model = _model((3, 4), (2, 3))
    clean = {"w0": np.zeros((2, 3, 3, 4), dtype=bool), "w1": np.zeros((2, 3, 2, 3), dtype=bool)}
    got = _audit(model, clean, ErrorModel(0.0, 0, 4))
    assert got["w0: flip count"]["p_value"] == 1.0 and not any(k.endswith("spread") for k in got)
    clean["w1"][1, 2, 0, 0] = True
    got = _audit(model, clean, ErrorModel(0.0, 0, 4))
    assert got["w1: flip count"]["p_value"] == 0.0 and got["w0: flip count"]["p_value"] == 1.0


@pytest.mark.parametrize("n_bits, flips, checked", [(8, 40, True), (8, 39, False), (7, 49, False)])
def test_bit_positions_are_checked_from_8_bits_and_40_flips(n_bits, flips, checked):
    """The bit-position check needs a whole byte per pattern and at least 40 flips (5 per
    position expected): 8 bits with 40 flips are checked, 39 flips or 7 bits are not."""
    model = _model((1, n_bits), (2, 1))
    w0 = np.zeros((2, 5, n_bits), dtype=bool)
    w0.reshape(-1)[np.linspace(0, w0.size - 1, flips).astype(int)] = True
    got = _audit(model, {"w0": w0.reshape(2, 5, 1, n_bits)}, ErrorModel(0.5, 0, 4, layers=(0,)))
    assert ("w0: bit positions" in got) == checked


@pytest.mark.parametrize("batches, checked", [(3, True), (2, False)])
def test_consecutive_batches_are_correlated_from_three_batches(batches, checked):
    """The check of consecutive batches pairs batch j with j + 1 in every repetition: with
    3 batches there are 2 pairs per repetition, with 2 batches only 1, too few to test."""
    model = _model((3, 4), (2, 3))
    rng = np.random.default_rng(1)
    w0 = rng.random((6, batches, 3, 4)) < 0.5
    got = _audit(model, {"w0": w0}, ErrorModel(0.5, 0, 4, layers=(0,)))
    assert ("w0: batches independent" in got) == checked


def test_flips_outside_the_targets_are_counted_and_fail():
    """Weights of an untargeted layer: 0 flips pass (p-value 1), 3 flips fail (0), the
    detail counts them; activations flipped when only weights are targeted fail, and are
    audited like weights when activations are targeted."""
    model = _model((3, 4), (2, 3))
    em = ErrorModel(0.25, 0, 4, layers=(0,))
    w0 = np.random.default_rng(2).random((2, 3, 3, 4)) < 0.25
    w1 = np.zeros((2, 3, 2, 3), dtype=bool)
    got = _audit(model, {"w0": w0, "w1": w1}, em)
    assert got["w1: untargeted"]["p_value"] == 1.0
    assert got["w1: untargeted"]["detail"] == "0 flips in a tensor that is not targeted"
    w1[0, 0, 1] = True
    got = _audit(model, {"w0": w0, "w1": w1}, em)
    assert got["w1: untargeted"]["p_value"] == 0.0 and not got["w1: untargeted"]["pass"]
    assert got["w1: untargeted"]["detail"] == "3 flips in a tensor that is not targeted"
    a2 = np.zeros((2, 3, 4, 3), dtype=bool)          # the second layer's input, batches of 4
    a2[1, 2, 0, 0] = a2[0, 1, 3, 2] = True
    got = _audit(model, {"w0": w0, "a2": a2}, em)
    assert got["a2: untargeted"]["p_value"] == 0.0
    assert got["a2: untargeted"]["detail"] == "2 flips in activations that are not targeted"
    got = _audit(model, {"w0": w0, "a2": a2}, ErrorModel(0.25, 0, 4, layers=(0,), activations=True))
    assert "a2: untargeted" not in got and got["a2: flip count"]["detail"].startswith("2 flips in 6 patterns of 12 bits")


def test_a_check_at_the_bonferroni_bound_passes():
    """The rule is p >= alpha / m (m checks): with alpha = 2 and two checks the bound is
    exactly 1, which the untargeted tensor's p-value of 1 meets and the count's (< 1) does not."""
    model = _model((3, 4), (2, 3))
    w0 = np.zeros((1, 1, 3, 4), dtype=bool)
    got = _audit(model, {"w0": w0, "w1": np.zeros((1, 1, 2, 3), dtype=bool)},
                 ErrorModel(0.25, 0, 4, layers=(0,)), alpha=2.0)
    assert len(got) == 2 and got["w1: untargeted"]["pass"] and not got["w0: flip count"]["pass"]


def test_correlation_p_is_pearsons_test_and_its_degenerate_cases():
    """_correlation_p = scipy.stats.pearsonr's two-sided p; fewer than 4 pairs say nothing
    (1); a constant side says nothing (1) unless both sides are the same nonzero constant
    (a reused mask: 0); perfectly correlated counts give a p near 0, not a division by 0."""
    rng = np.random.default_rng(3)
    for n in (4, 5, 30):
        a, b = rng.integers(0, 9, n).astype(float), rng.integers(0, 9, n).astype(float)
        if a.std() and b.std():
            assert _correlation_p(a, b) == pytest.approx(scipy_stats.pearsonr(a, b).pvalue, rel=1e-7)
    a = np.array([1.0, 4.0, 2.0, 8.0, 5.0])
    assert _correlation_p(a[:3], a[:3]) == 1.0
    assert _correlation_p(a, a) < 1e-6 and _correlation_p(a, -a) < 1e-6
    assert _correlation_p(np.full(5, 3.0), np.full(5, 3.0)) == 0.0
    assert _correlation_p(np.zeros(5), np.zeros(5)) == 1.0
    assert _correlation_p(np.full(5, 3.0), a) == 1.0 and _correlation_p(a, np.full(5, 3.0)) == 1.0
    assert _correlation_p(np.full(5, 3.0), np.full(5, 2.0)) == 1.0


def test_the_degenerate_t_tests():
    """Without spread the t statistic is undefined: equal means give p = 1, different ones
    0. A single value has no variance of its own, so Welch's test against it is the one-
    sample test of the other side's mean against it (SciPy's ttest_1samp)."""
    assert welch_p([0.5, 0.5], [0.5, 0.5]) == 1.0 and welch_p([0.5, 0.5], [0.7, 0.7]) == 0.0
    assert welch_p([0.5], [0.5]) == 1.0 and welch_p([0.5], [0.6]) == 0.0
    b = [0.3, 0.7, 0.6, 0.55]
    want = scipy_stats.ttest_1samp(b, 0.5).pvalue
    assert welch_p([0.5], b) == pytest.approx(want, rel=1e-9) and welch_p(b, [0.5]) == pytest.approx(want, rel=1e-9)
    assert one_sample_p([0.9, 0.9], 0.9) == 1.0 and one_sample_p([0.9, 0.9], 0.8) == 0.0
    assert one_sample_p([0.9], 0.9) == 1.0 and one_sample_p([0.85], 0.9) == 0.0


def test_distribution_tails_at_their_ends():
    """I_0(a, b) = 0 and I_1(a, b) = 1; P(s, 0) = 0; a chi-square statistic of 0 (no spread
    at all: a reused mask) has two-sided p-value 0."""
    assert incomplete_beta(2.0, 3.0, 0.0) == 0.0 and incomplete_beta(2.0, 3.0, 1.0) == 1.0
    assert gamma_lower(3.5, 0.0) == 0.0 and chi2_two_sided(0.0, 5) == 0.0


def test_exact_expected_accuracy_is_brute_force_over_three_tensors():
    """Property: three weight tensors of 4, 2 and 2 bits (unequal, so each one's slice of
    the flip pattern is at a different place): the enumeration equals conftest's brute
    force at p = 0.1, and at p = 1 (only the all-flipped pattern has weight) too."""
    model = Model.build((2,), 1, [Linear(Weight.from_array([[1, -1], [1, 1]])), Threshold((0, -1)),
                                  Linear(Weight.from_array([[1, -1]])), Threshold((-1,)),
                                  Linear(Weight.from_array([[1], [-1]]))])
    x = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]])
    y = np.asarray(FastEngine(model).predictions(x))
    y[0] = 1 - y[0]
    for p in (0.1, 1.0):        # the float BER's exact binary value, as Fraction(em.p) reads it
        got = exact_expected_accuracy(FastEngine(model), x, y, ErrorModel(p, 0, 4))
        assert got == enumerated_expected_accuracy(model, x, y, Fraction(p))
    assert enumerated_expected_accuracy(model, x, y, Fraction(1)) != enumerated_expected_accuracy(model, x, y, 0)


@pytest.mark.parametrize("bits", [EXACT_BITS, EXACT_BITS + 1])
def test_enumeration_stops_past_exact_bits(bits):
    """Up to EXACT_BITS targeted bits (12: 4,096 patterns) every pattern is enumerated;
    one more and the judgment falls back to sampling (None here)."""
    model = _model((bits, 1), (2, bits))
    x, y = np.array([[1], [-1]]), np.array([0, 1])
    got = exact_expected_accuracy(FastEngine(model), x, y, ErrorModel(0.1, 0, 2, layers=(0,)))
    assert (got is not None) == (bits <= EXACT_BITS)


def test_welch_judgment_reports_refbnns_own_repetitions():
    """With more than EXACT_BITS targeted bits the accuracies are judged by Welch's test
    against refbnn's keyed repetitions: 30 of them (or as many as theirs), whose mean and
    sample standard deviation (ddof 1) are reported; p = SciPy's Welch test; a p-value
    equal to alpha passes."""
    model = _model((4, 4), (3, 4))
    rng = np.random.default_rng(4)
    x = rng.choice([-1, 1], (40, 4))
    engine = FastEngine(model)
    y = np.asarray(engine.predictions(x))
    em = ErrorModel(0.2, 7, 10)
    theirs = [0.7, 0.8, 0.75, 0.9, 0.65]
    ours = [correct_under_errors(engine, x, y, em, r) / 40 for r in range(30)]
    v = judge_accuracies(engine, x, y, em, theirs, 0.01)
    assert v["test"] == "Welch t-test against refbnn's 30 repetitions"
    assert v["mean"] == pytest.approx(statistics.mean(ours), abs=1e-12)
    assert v["std"] == pytest.approx(statistics.stdev(ours), abs=1e-12)
    assert v["p_value"] == pytest.approx(scipy_stats.ttest_ind(theirs, ours, equal_var=False).pvalue, rel=1e-7)
    assert v["their_reps"] == 5 and v["their_mean"] == pytest.approx(0.76)
    assert judge_accuracies(engine, x, y, em, theirs, v["p_value"])["pass"]
    assert judge_accuracies(engine, x, y, em, [0.8] * 31, 0.01)["test"].endswith("against refbnn's 31 repetitions")


def test_two_patterns_have_a_spread_and_ber_1_has_none():
    """Two patterns (1 repetition x 2 batches) are enough for the spread check (1 degree of
    freedom). At BER 1 every bit flips: all flipped is exactly the expectation (p-value 1),
    one bit left is impossible (0); no spread check, whose denominator p (1 - p) is 0."""
    model = _model((3, 4), (2, 3))
    two = np.zeros((1, 2, 3, 4), dtype=bool)
    two[0, 0, 0, 0] = True
    assert "w0: spread" in _audit(model, {"w0": two}, ErrorModel(0.25, 0, 4, layers=(0,)))
    every = np.ones((2, 3, 3, 4), dtype=bool)
    got = _audit(model, {"w0": every}, ErrorModel(1.0, 0, 4, layers=(0,)))
    assert got["w0: flip count"]["p_value"] == 1.0 and not any(k.endswith("spread") for k in got)
    every[1, 2, 2, 3] = False
    assert _audit(model, {"w0": every}, ErrorModel(1.0, 0, 4, layers=(0,)))["w0: flip count"]["p_value"] == 0.0


def test_few_or_constant_counts_say_nothing_unless_they_are_one_reused_mask():
    """Fewer than 4 pairs: p = 1 even for the same nonzero constant (too few to tell); from 4
    pairs on, the same nonzero constant on both sides (one mask reused) gives 0."""
    assert _correlation_p(np.full(3, 2.0), np.full(3, 2.0)) == 1.0
    assert _correlation_p(np.full(4, 2.0), np.full(4, 2.0)) == 0.0


@pytest.mark.parametrize("reps, theirs", [(1, [0.8]), (2, [0.8])])
def test_welch_judgment_with_one_or_two_reference_repetitions(reps, theirs):
    """refbnn's own spread is the sample standard deviation of its repetitions, 0 for a
    single one (not NaN); with two, the ordinary sample standard deviation."""
    model = _model((4, 4), (3, 4))
    x = np.random.default_rng(6).choice([-1, 1], (40, 4))
    engine = FastEngine(model)
    y = np.asarray(engine.predictions(x))
    em = ErrorModel(0.2, 7, 10)
    ours = [correct_under_errors(engine, x, y, em, r) / 40 for r in range(reps)]
    v = judge_accuracies(engine, x, y, em, theirs, 0.01, reference_reps=reps)
    assert v["std"] == (0.0 if reps == 1 else pytest.approx(statistics.stdev(ours), abs=1e-12))
