"""Theorem 1 (proofs/theorem1.md): exhaustive on small neurons, Hypothesis on large ones.

The exhaustive checks live in proofs/theorem1.py (runnable on their own); here they
run from pytest, and are shown to refute deliberately wrong bounds. The properties
use adversarial flip sets: the floor(b/2) flips that push h hardest toward the
threshold, not random ones.
"""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from proofs import theorem1
from refbnn.engines.interpreter import Interpreter
from refbnn.measure.certify import certified_k
from refbnn.semantics.margin import margin
from refbnn.semantics.model import Linear, Model, Threshold, Weight
from refbnn.semantics.theorem1 import flips_to_change, signed_margin


@pytest.mark.exhaustive
def test_every_exhaustive_check_holds():
    results = theorem1.all_checks(max_fan_in=10)
    assert [r.name for r in results if not r.holds] == []
    assert sum(r.cases for r in results) > 10**8


@pytest.mark.parametrize("k", [1, 2, 5])
def test_hidden_check_enumerates_every_product_threshold_and_flip_set(k):
    # 2^k product vectors x 2^k flip sets x the 2k + 2 thresholds -k-1..k
    assert theorem1.check_hidden(k).cases == 2**k * 2**k * (2 * k + 2)
    # weight and input flip sets in pairs: 2^k products x 4^k pairs x 2k + 2 thresholds
    assert theorem1.check_input_flips(k).cases == 2**k * 4**k * (2 * k + 2)


@pytest.mark.parametrize("k,z,signed", [(1, 1, False), (2, 3, True), (3, 2, False)])
def test_first_layer_check_enumerates_every_weight_input_threshold_and_flip_set(k, z, signed):
    values = 2 * z + 1 if signed else z + 1
    # 2^k weights x values^k inputs x 2^k flip sets x the 2kZ + 2 thresholds -kZ-1..kZ
    assert theorem1.check_first_layer(k, z, signed).cases == 2**k * values**k * 2**k * (2 * k * z + 2)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pooled_check_enumerates_every_quad_threshold_and_flip_set(k):
    # (2^k)^4 quads of candidate inputs x 2^k flip sets x 2k + 2 thresholds
    assert theorem1.check_pooled(k).cases == 2**(4 * k) * 2**k * (2 * k + 2)


def test_a_bound_too_small_only_at_the_extreme_thresholds_is_refuted():
    # m = 4k + 1 occurs only at s = -k-1 (h = k) and s = k (h = -k). Claiming one flip less
    # there breaks tightness: all k summands agree, yet no set of k flips changes the output.
    k = 5
    res = theorem1.check_hidden(k, bound=lambda m: np.where(m == 4 * k + 1, k - 1, m // 4))
    assert not res.holds and f"s={-k - 1}" in res.counterexamples[0]


def test_polarity_minus_one_is_the_negation_at_every_h():
    h = np.arange(-5, 6)
    assert all(theorem1.polarity_is_vacuous(h, s) for s in range(-6, 6))


@pytest.mark.parametrize("k", [4, 6, 8])
def test_claiming_one_more_flip_is_refuted(k):
    # floor((m-1)/4) + 1 flips are not always tolerated: the enumeration finds a flip set.
    res = theorem1.check_hidden(k, bound=lambda m: (m - 1) // 4 + 1)
    assert not res.holds and "change the output" in res.counterexamples[0]


def test_claiming_one_flip_less_breaks_the_tightness_claim():
    # With a bound one too small, sets of size bound+1 never change the output although
    # enough summands agree: the "exactly when" direction refutes it.
    res = theorem1.check_hidden(6, bound=lambda m: np.maximum((m - 1) // 4 - 1, 0))
    assert not res.holds and "does not change" in " ".join(res.counterexamples)


def test_first_layer_bound_without_Z_is_refuted():
    # Forgetting the Z of eq. 2 (claiming floor(m/4) flips) fails for Z = 3, pooled or not.
    assert not theorem1.check_first_layer(3, 3, signed=False, bound=lambda m: m // 4).holds
    assert not theorem1.check_first_layer_pooled(2, 2, signed=False, bound=lambda m: m // 4).holds
    assert not theorem1.check_input_flips(4, bound=lambda m: (m - 1) // 4 + 1).holds
    assert not theorem1.check_pooled(3, bound=lambda m: (m - 1) // 4 + 1).holds


def test_a_corollary_one_flip_too_generous_is_refuted():
    res = theorem1.check_corollary(1, k_fn=lambda *a: theorem1.certified_k_of(*a) + 1)
    assert not res.holds and "change the prediction" in res.counterexamples[0]


def test_a_corollary_without_the_tie_rule_is_refuted():
    def no_tie_rule(w1, s1, w2, x, z):
        # the score bound floor((s_c - s_j) / 4) for every j, as if ties always went to c
        h1 = np.einsum("cnk,ck->cn", w1, x)
        neuron = np.where(theorem1.tolerated_flips(theorem1.odd_margin(h1, s1), z) >= 2, 2,
                          theorem1.tolerated_flips(theorem1.odd_margin(h1, s1), z)).min(axis=1)
        scores = np.einsum("cnk,ck->cn", w2, np.where(h1 > s1, 1, -1))
        gap = np.abs(scores[:, 0] - scores[:, 1]) // 4
        return np.minimum(np.minimum(neuron, np.where(gap >= 2, 2, gap)), 2)
    assert not theorem1.check_corollary(1, k_fn=no_tie_rule).holds


@given(st.integers(0, 2**32 - 1), st.sampled_from([1, 2]))
def test_the_corollary_checker_computes_refbnns_certified_k(seed, z):
    """Property: on 2-2-2 networks, the checker's vectorised certified k equals
    `refbnn.measure.certify.certified_k` on the reference run, so the enumeration above
    checks refbnn's own rule."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.choice([1, -1], (2, 2)), rng.choice([1, -1], (2, 2))
    s1 = rng.integers(-2 * z - 1, 2 * z + 1, 2)
    x = rng.integers(-z, z + 1, 2)
    model = Model.build((2,), z, [Linear(Weight.from_array(w1)), Threshold(tuple(int(v) for v in s1)),
                                  Linear(Weight.from_array(w2))])
    mine = theorem1.certified_k_of(w1[None], s1[None], w2[None], x[None], z)[0]
    assert mine == certified_k(model, Interpreter(model).run(x)).k


def _neuron(draw, first_layer: bool):
    k = draw(st.integers(1, 4096))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = rng.choice([1, -1], k)
    if first_layer:
        z = draw(st.integers(1, 255))
        lo = -z if draw(st.booleans()) else 0
        x = rng.integers(lo, z + 1, k)
    else:
        z, x = 1, rng.choice([1, -1], k)
    h = int((w * x).sum())
    s = h + draw(st.integers(-40, 40)) * draw(st.sampled_from([1, z]))
    return w, x, z, h, s


def _adversarial(w, x, g_sign, f):
    """The f summands that push h hardest toward the threshold: those agreeing with the
    output, largest |x| first. Returns their indices."""
    push = g_sign * w * x
    order = np.argsort(-push, kind="stable")
    return order[:f][push[order[:f]] > 0]


def _fires(h, s):
    return h > s


def _output_kept_after(w, x, h, s, f):
    """Flip the f most harmful weights (see _adversarial); is the output unchanged?"""
    g_sign = 1 if 2 * (h - s) - 1 > 0 else -1
    w2 = w.copy()
    w2[_adversarial(w, x, g_sign, f)] *= -1
    return _fires(int((w2 * x).sum()), s) == _fires(h, s)


@st.composite
def neurons(draw, first_layer=False):
    return _neuron(draw, first_layer)


@given(neurons(), st.fractions(0, 1))
@example((np.array([1]), np.array([1]), 1, 1, 1), Fraction(1))    # h = s: m = 1, T = 1/2, bound 0
def test_hidden_neuron_survives_floor_b_half_adversarial_flips(neuron, share):
    """Property (Theorem 1): T >= b => the floor(b/2) most harmful weight flips leave the
    output unchanged; for any b in [0, T]."""
    w, x, _, h, s = neuron
    b = margin(h, s) * share
    assert _output_kept_after(w, x, h, s, int(b // 2))


@given(neurons())
def test_one_flip_beyond_floor_T_half_changes_the_output_when_enough_summands_agree(neuron):
    """Property (exact form): floor(T/2) + 1 flips of agreeing summands change the output
    iff there are that many agreeing summands."""
    w, x, _, h, s = neuron
    g = signed_margin(h, s)
    f = int(margin(h, s) // 2) + 1
    assert f == flips_to_change(abs(g))
    agree = int(((1 if g > 0 else -1) * w * x > 0).sum())
    assert (not _output_kept_after(w, x, h, s, f)) == (agree >= f)


@given(neurons(first_layer=True), st.fractions(0, 1))
def test_first_layer_neuron_survives_floor_b_half_flips_with_eq2(neuron, share):
    """Property (Theorem 1, eq. 2): T = |h - s - 1/2| / Z >= b => the floor(b/2) flips of
    the agreeing weights with the largest inputs leave the output unchanged."""
    w, x, z, h, s = neuron
    b = margin(h, s, z) * share
    assert _output_kept_after(w, x, h, s, int(b // 2))


@given(neurons(), st.integers(0, 2**32 - 1))
def test_weight_and_input_flips_count_together(neuron, seed):
    """Property (xnor symmetry): floor(T/2) flips split between weights and input bits of
    agreeing summands leave the output unchanged."""
    w, x, _, h, s = neuron
    g_sign = 1 if 2 * (h - s) - 1 > 0 else -1
    flip = _adversarial(w, x, g_sign, int(margin(h, s) // 2))
    on_input = np.random.default_rng(seed).random(len(flip)) < 0.5
    w2, x2 = w.copy(), x.copy()
    w2[flip[~on_input]] *= -1
    x2[flip[on_input]] *= -1
    assert _fires(int((w2 * x2).sum()), s) == _fires(h, s)


@given(st.integers(1, 512), st.integers(0, 2**32 - 1), st.integers(-30, 30), st.integers(0, 200))
def test_pooled_preactivation_moves_at_most_two_per_flip(k, seed, ds, f):
    """Property: with four candidates sharing the weights, any f flips move max_k h_k by at
    most 2f, and floor(T/2) adversarial flips (against the winning candidate, or against
    each candidate in turn) leave the pooled output unchanged."""
    rng = np.random.default_rng(seed)
    w = rng.choice([1, -1], k)
    xs = rng.choice([1, -1], (4, k))
    h = int((xs * w).sum(axis=1).max())
    flip = rng.choice(k, min(f, k), replace=False)
    w2 = w.copy()
    w2[flip] *= -1
    assert abs(int((xs * w2).sum(axis=1).max()) - h) <= 2 * len(flip)
    s = h + ds
    g_sign = 1 if 2 * (h - s) - 1 > 0 else -1
    for target in range(4):
        adv = _adversarial(w, xs[target], g_sign, int(margin(h, s) // 2))
        w3 = w.copy()
        w3[adv] *= -1
        assert _fires(int((xs * w3).sum(axis=1).max()), s) == _fires(h, s)
