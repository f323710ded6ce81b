"""The words of verify's diagnosis (refbnn/oracle/diagnose.py) on arrays and checks written
by hand: each pattern line (an offset with its sign, negations, a factor, threshold ties,
polarity -1 channels, the border where padding enters, tied top scores), the first
divergence's coordinates, the patterns among failing claims, and the diagnosis sentences.
Every number is chosen here, so each line is known before it is made."""
from __future__ import annotations

import numpy as np
import pytest

from refbnn.oracle.conventions import REGISTRY
from refbnn.oracle.diagnose import (Diagnosis, Match, _border, _first, _patterns, _tie_pattern, _words, claim_key,
                                    failure_patterns)
from refbnn.semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold, Weight

# 3 inputs -> 3 units (thresholds 0, 1, -1; the last of polarity -1) -> 2 classes
FC = Model.build((3,), 1, [Linear(Weight.from_array(np.ones((3, 3), int))), Threshold((0, 1, -1), (1, 1, -1)),
                           Linear(Weight.from_array(np.ones((2, 3), int)))])


def _h_case(delta_at):
    """ours: h of 2 inputs x 3 units; theirs: ours changed at the given entries."""
    ours = np.array([[3, -1, 2], [1, 5, -4]])
    theirs = ours.copy()
    for (i, n), f in delta_at.items():
        theirs[i, n] = f(ours[i, n])
    return ours, theirs, ours != theirs


@pytest.mark.parametrize("changes, line", [
    ({(0, 0): lambda v: v + 3, (1, 2): lambda v: v + 3}, "all 2 differences are the same offset: got = expected + 3"),
    ({(0, 1): lambda v: v - 2, (1, 1): lambda v: v - 2}, "all 2 differences are the same offset: got = expected - 2"),
    ({(0, 0): lambda v: -v, (1, 2): lambda v: -v}, "all 2 differences are negations: got = -expected"),
    ({(0, 0): lambda v: 2 * v, (1, 1): lambda v: 2 * v}, "all 2 differences are a factor: got = 2 x expected"),
])
def test_each_difference_pattern_of_pre_activations(changes, line):
    """By hand: (3 -> 6, 5 -> 10) is a factor of 2 (the offsets 3 and 5 differ), (3 -> -3,
    -4 -> 4) negations (offsets -6 and 8), equal offsets an offset with its sign."""
    ours, theirs, differ = _h_case(changes)
    assert _patterns(FC, "h1", ours, theirs, differ, None)[:1] == [line]


def test_a_single_difference_is_an_offset():
    ours, theirs, differ = _h_case({(1, 1): lambda v: v - 7})
    assert _patterns(FC, "h1", ours, theirs, differ, None)[:1] == [
        "all 1 differences are the same offset: got = expected - 7"]


def test_unrelated_differences_have_no_pattern():
    ours, theirs, differ = _h_case({(0, 0): lambda v: v + 1, (1, 1): lambda v: v + 4})      # 3 -> 4, 5 -> 9
    assert _patterns(FC, "h1", ours, theirs, differ, None) == []


def test_ties_and_polarity_in_threshold_outputs():
    """a1 differs where h = s (unit 0 at h = 0, unit 1 at h = 1): a threshold tie; where it
    differs only in unit 2 (polarity -1): the polarity line; both at once: neither."""
    h = np.array([[0, 1, 3], [2, 1, -1]])
    ours = np.where(h > np.array([0, 1, -1]), 1, -1)       # the pattern reads h, s and polarity only
    ties = np.array([[True, True, False], [False, False, False]])
    got = _patterns(FC, "a1", ours, np.where(ties, -ours, ours), ties, h)
    assert got == ["all 2 differences are at h = s (a threshold tie; refbnn gives -1 there for polarity +1)"]
    unit2 = np.array([[False, False, True], [False, False, True]])
    assert _patterns(FC, "a1", ours, np.where(unit2, -ours, ours), unit2, h) == [
        "all 2 differences are in channels with polarity -1"]
    both = ties | unit2
    assert _patterns(FC, "a1", ours, np.where(both, -ours, ours), both, h) == []


def test_the_border_where_padding_enters():
    """A 3x3 conv with padding 1 on 6x6 maps: the border is rows and columns 0 and 5; after
    2x2 max pooling (3x3 maps) a pooled cell is at the border when one of its four is:
    rows and columns 0 and 2, all but the centre. Differences only there give the border
    line; one more inside gives none."""
    conv = Model.build((1, 6, 6), 1, [Conv2d(Weight.from_array(np.ones((2, 1, 3, 3), int)), padding=1),
                                      Threshold((0, 0)), Flatten(), Linear(Weight.from_array(np.ones((2, 72), int)))])
    border = _border(conv, 1, (1, 2, 6, 6))
    want = np.ones((6, 6), bool)
    want[1:5, 1:5] = False
    assert np.array_equal(border, want)
    pooled = Model.build((1, 6, 6), 1, [Conv2d(Weight.from_array(np.ones((2, 1, 3, 3), int)), padding=1),
                                        MaxPool2d(), Threshold((0, 0)), Flatten(),
                                        Linear(Weight.from_array(np.ones((2, 18), int)))])
    want = np.ones((3, 3), bool)
    want[1, 1] = False
    assert np.array_equal(_border(pooled, 2, (1, 2, 3, 3)), want)
    ours = np.ones((1, 2, 6, 6), int)
    at = np.zeros_like(ours, bool)
    at[0, 1, 0, 3] = at[0, 0, 5, 5] = True
    assert _patterns(conv, "a1", ours, np.where(at, -1, 1), at, None) == [
        "all 2 differences are at border positions (where the padding enters)"]
    at[0, 0, 2, 2] = True
    assert _patterns(conv, "a1", ours, np.where(at, -1, 1), at, None) == []


def test_the_first_divergence_names_its_coordinates():
    """The first differing entry in C order: input 1, channel 0, position (2, 1) of a conv
    map; for scores the class; expected is refbnn's value, got theirs."""
    ours = np.zeros((2, 2, 3, 3), int)
    theirs = ours.copy()
    theirs[1, 0, 2, 1], theirs[1, 1, 0, 0] = 7, 9
    assert _first("h1", ours != theirs, ours, theirs) == {"input": 1, "channel": 0, "position": [2, 1],
                                                          "expected": 0, "got": 7}
    s_ours, s_theirs = np.array([[1, 2], [3, 4]]), np.array([[1, 2], [3, 5]])
    assert _first("scores", s_ours != s_theirs, s_ours, s_theirs) == {"input": 1, "class": 1, "expected": 4, "got": 5}


def test_predictions_that_differ_only_at_tied_scores():
    scores = np.array([[2, 2, 0], [3, 1, 0], [1, 4, 4]])
    assert _tie_pattern(scores, np.array([True, False, True])) == [
        "all 2 differing predictions have tied top scores (the argmax tie rule)"]
    assert _tie_pattern(scores, np.array([True, True, False])) == []


def _checks(**passing):
    return [{"quantity": q, "pass": ok} for q, ok in passing.items()]


def test_the_patterns_among_failing_claims():
    """Each line of failure_patterns on checks chosen for it, and none where it does not apply."""
    whole_fails = [{"quantity": "T[1/2]", "pass": False}, {"quantity": "T[1]", "pass": False},
                   {"quantity": "layers[0].T[1/2]", "pass": True}, {"quantity": "layers[1].T[1]", "pass": True}]
    assert failure_patterns(whole_fails) == [("per-layer T passes, whole-model T fails: the layers are averaged "
                                              "differently")]
    half = [{"quantity": "T[1/2]", "pass": False}, {"quantity": "T[3/2]", "pass": False},
            {"quantity": "T[1]", "pass": True}]
    assert failure_patterns(half) == [("only non-integer b fail: T >= b against T > b? (a hidden margin is a "
                                      "half-integer, so the two differ only there)")]
    integer = [{"quantity": "T[1]", "pass": False}, {"quantity": "T[1/2]", "pass": True}]
    assert failure_patterns(integer) == []
    first = [{"quantity": "layers[0].T[1]", "pass": False}, {"quantity": "layers[1].T[1]", "pass": True},
             {"quantity": "T[1]", "pass": True}]
    assert "only the first layer's T fails: the 1/Z of eq. 2?" in failure_patterns(first)
    assert failure_patterns([{"quantity": "layers[1].positions", "pass": False}]) == [
        "a layer's positions (U*V) differ: pooling and threshold in another order?"]
    pi = [{"quantity": "importance[0]", "pass": False}, {"quantity": "var_importance", "pass": False},
          {"quantity": "accuracy", "pass": True}]
    assert failure_patterns(pi) == ["only Pi fails, T and accuracy pass: the definition of Pi or of its variance"]
    assert failure_patterns(pi[:1] + pi[2:]) == []          # one failing Pi entry alone says little


def test_the_diagnosis_sentences():
    """A match names the other side's convention and the contract's rule; no match says how
    many were tried, and the closest alternative what it fixes and what it does not."""
    tie = REGISTRY["tie-ge"]
    d = Diagnosis([Match(("tie-ge",))], "accuracy and predictions")
    assert d.lines() == [(f"diagnosis: your accuracy and predictions match refbnn exactly if {tie.theirs}; "
                         f"{tie.contract}")]
    no_z = REGISTRY["first-layer-without-z"]
    none = Diagnosis([], "T and T-bar", tried=12, closest=(("first-layer-without-z",), ["T"], ["T_bar"]))
    assert none.lines() == [
        ("diagnosis: no alternative convention reproduces your T and T-bar (12 tried; docs/semantics.md §11 "
        "lists them)"),
        f"diagnosis: closest: if {no_z.theirs}, your T match refbnn exactly; your T-bar still differ"]
    assert _words({"var_importance", "T", "accuracy"}) == "accuracy, T and VAR(Pi)"
    assert claim_key("layers[0].T[2]") == "layers" and claim_key("bit_errors.results[0].mean") == "bit_errors"


def test_the_closest_alternative_is_the_first_of_those_fixing_most(monkeypatch):
    """_closest keeps, among the single alternatives, the one under which most failing
    claims pass; of several fixing as many, the first in the order tried. Which claims each
    alternative fixes is set here (a stand-in for the recomputation)."""
    from refbnn.oracle import diagnose

    names = ["first-layer-without-z", "margin-without-half", "t-strict"]
    ordered = [((n,), REGISTRY[n].variant, REGISTRY[n].affects) for n in names]
    claims = {"T": [1], "T_bar": 1, "layers": [1]}

    def run(fixes):
        def reproduces(engine, fast, v, model, data, sub, path, atol):
            name = next(n for n in names if REGISTRY[n].variant is v)
            assert set(sub) in ({"T_bar", "T"}, {"T"}, {"layers"})     # one claim; T-bar with the T it averages
            return ("T_bar" if "T_bar" in sub else next(iter(sub))) in fixes[name]
        monkeypatch.setattr(diagnose, "_reproduces", reproduces)
        return diagnose._closest(FC, None, claims, "c.json", 0.0, {"T", "T_bar", "layers"}, ordered, {}, None, 0)
    one_each = {"first-layer-without-z": {"T"}, "margin-without-half": {"layers"}, "t-strict": {"T_bar"}}
    assert run(one_each) == (("first-layer-without-z",), ["T"], ["T_bar", "layers"])
    second_best = {"first-layer-without-z": {"T"}, "margin-without-half": {"layers", "T_bar"}, "t-strict": {"T_bar"}}
    assert run(second_best) == (("margin-without-half",), ["T_bar", "layers"], ["T"])
    assert run({n: set() for n in names}) is None


def test_pattern_edges():
    """An offset of +1 is "+ 1"; a factor where refbnn's value is 1 (1 -> 3, 2 -> 6) is
    still a factor; polarity -1 is the only negative polarity."""
    ours, theirs, differ = _h_case({(0, 2): lambda v: v + 1, (1, 0): lambda v: v + 1})
    assert _patterns(FC, "h1", ours, theirs, differ, None)[:1] == [
        "all 2 differences are the same offset: got = expected + 1"]
    ours = np.array([[1, 2, 0]])
    theirs = np.array([[3, 6, 0]])
    assert _patterns(FC, "h1", ours, theirs, ours != theirs, None) == [
        "all 2 differences are a factor: got = 3 x expected"]


def test_the_first_divergence_of_predictions_and_ties_with_few_classes():
    """Predictions are one number per input: the first divergence names the input only.
    With two classes a tie is still a tie; with one class there is none to tie with."""
    ours, theirs = np.array([0, 1, 1]), np.array([0, 0, 1])
    assert _first("predictions", ours != theirs, ours, theirs) == {"input": 1, "expected": 1, "got": 0}
    assert _tie_pattern(np.array([[2, 2], [3, 1]]), np.array([True, False])) == [
        "all 1 differing predictions have tied top scores (the argmax tie rule)"]
    assert _tie_pattern(np.array([[2], [3]]), np.array([True, False])) == []


def test_failure_patterns_need_failures_and_more_than_one_layer():
    """Every T check passing (something else failing) says nothing about b; one layer alone
    failing is not "only the first layer"."""
    passing = [{"quantity": "T[1/2]", "pass": True}, {"quantity": "T[1]", "pass": True},
               {"quantity": "accuracy", "pass": False}]
    assert failure_patterns(passing) == []
    one_layer = [{"quantity": "layers[0].T[1]", "pass": False}, {"quantity": "T[1]", "pass": False}]
    assert "only the first layer's T fails: the 1/Z of eq. 2?" not in failure_patterns(one_layer)


def test_the_border_only_counts_pooling_between_the_conv_and_its_threshold():
    """A pooling before the conv (on the input) does not shrink the conv's border; without
    padding there is no border at all."""
    model = Model.build((1, 8, 8), 1, [MaxPool2d(), Conv2d(Weight.from_array(np.ones((2, 1, 3, 3), int)), padding=1),
                                       Threshold((0, 0)), Flatten(), Linear(Weight.from_array(np.ones((2, 32), int)))])
    want = np.ones((4, 4), bool)
    want[1:3, 1:3] = False
    assert np.array_equal(_border(model, 2, (1, 2, 4, 4)), want)
    valid = Model.build((1, 6, 6), 1, [Conv2d(Weight.from_array(np.ones((2, 1, 3, 3), int))), Threshold((0, 0)),
                                       Flatten(), Linear(Weight.from_array(np.ones((2, 32), int)))])
    assert _border(valid, 1, (1, 2, 4, 4)) is None


def test_an_unexplained_difference_counts_every_alternative_tried():
    """A claimed accuracy no convention reproduces (1/7 on inputs where refbnn's is a
    multiple of 1/12): no match, every forward alternative that applies to the model is
    tried once (counted here from the registry), and the sentence says how many."""
    from fractions import Fraction

    from refbnn.engines.fast import FastEngine
    from refbnn.formats.datafile import Dataset
    from refbnn.oracle import diagnose
    from refbnn.oracle.checker import check_claims

    model = Model.build((4, 6, 6), 1, [Conv2d(Weight.from_array(np.random.default_rng(0).integers(0, 2, (3, 4, 3, 3))),
                                              padding=1), MaxPool2d(), Threshold((0, 1, -1), (1, 1, -1)), Flatten(),
                                       Linear(Weight.from_array(np.random.default_rng(1).integers(0, 2, (2, 27))))])
    x = np.random.default_rng(2).choice([-1, 1], (12, 4, 6, 6))
    data = Dataset(x, np.asarray(FastEngine(model).predictions(x)))
    claims = {"accuracy": {"value": float(Fraction(1, 7)), "exact": "1/7"}}
    checks = check_claims(FastEngine(model), model, data, claims, "c.json", 0.0)
    assert not checks[0]["pass"]
    d = diagnose.diagnose_claims(model, data, claims, "c.json", 0.0, checks)
    n = len(diagnose.candidates(model, {"forward"}))
    assert d.matches == [] and d.tried == n > 3
    assert d.lines() == [f"diagnosis: no alternative convention reproduces your accuracy ({n} tried; "
                         "docs/semantics.md §11 lists them)"]


def test_more_pattern_edges():
    """An odd map (7x7, pooled to 3x3): the pooling drops row and column 6, so of the border
    only row and column 0 reach a pooled cell;
    a dense layer's h names input and channel; differing scores get the offset line only."""
    odd = Model.build((1, 7, 7), 1, [Conv2d(Weight.from_array(np.ones((2, 1, 3, 3), int)), padding=1), MaxPool2d(),
                                     Threshold((0, 0)), Flatten(), Linear(Weight.from_array(np.ones((2, 18), int)))])
    want = np.zeros((3, 3), bool)
    want[0, :] = want[:, 0] = True
    assert np.array_equal(_border(odd, 2, (1, 2, 3, 3)), want)
    ours = np.array([[0, 0, 0], [0, 0, 5]])
    assert _first("h1", ours != 0, np.zeros_like(ours), ours) == {"input": 1, "channel": 2, "expected": 0, "got": 5}
    s_ours, s_theirs = np.array([[1, 2], [3, 4]]), np.array([[1, 4], [3, 6]])
    assert _patterns(FC, "scores", s_ours, s_theirs, s_ours != s_theirs, None) == [
        "all 2 differences are the same offset: got = expected + 2"]


def test_a_pair_is_tried_only_when_both_members_touch_a_failing_quantity():
    """For failing forward quantities, a pair whose other member changes only T (say) is
    that member alone again: it is not a candidate."""
    from refbnn.oracle.diagnose import candidates

    needed = {"forward"}
    for names, _, _ in candidates(FC, needed):
        assert all(REGISTRY[n].affects & needed for n in names), names


def _trace(**arrays):
    from refbnn.formats.tracefile import Trace
    return Trace("t.npz", **arrays)


def test_compare_trace_stops_at_the_first_divergence_unless_independent():
    """Their a1 differs from refbnn's in one entry and their scores follow from their own a1:
    by default (mode "first") h1 agrees, a1 differs once (named by input and channel), and
    the arrays after it are not compared; independently, scores computed from their a1 agree."""
    from refbnn.oracle.diagnose import compare_trace, reference_arrays

    x = np.array([[1, -1, 1], [-1, -1, 1], [1, 1, 1]])
    ref = reference_arrays(FC, x)
    a1 = ref["a1"].astype(np.int8)
    a1[2, 1] = -a1[2, 1]
    w2 = np.ones((2, 3), int)
    scores = a1.astype(int) @ w2.T
    trace = _trace(h={1: ref["h1"].astype(np.int64)}, a={1: a1}, scores=scores, predictions=np.argmax(scores, axis=1))
    first = {r.name: r for r in compare_trace(FC, x, trace)}
    assert [first[n].compared for n in ("h1", "a1", "scores", "predictions")] == [True, True, False, False]
    assert first["h1"].differ == 0 and first["a1"].differ == 1 and first["a1"].entries == 9
    assert first["a1"].first == {"input": 2, "channel": 1, "expected": int(ref["a1"][2, 1]), "got": int(a1[2, 1])}
    independent = {r.name: r for r in compare_trace(FC, x, trace, mode="independent")}
    assert independent["scores"].compared and independent["scores"].differ == 0
    off = _trace(scores=ref["scores"].astype(np.int64) + np.array([[0, 0], [0, 2], [0, 0]]))
    (scores,) = compare_trace(FC, x, off)
    assert scores.first == {"input": 1, "class": 1, "expected": int(ref["scores"][1, 1]),
                            "got": int(ref["scores"][1, 1]) + 2}


def test_predictions_differing_at_tied_scores_are_named():
    """Two identical output rows tie every input's scores; refbnn takes the lower class,
    they take the other at input 0: the only difference, at a tie."""
    from refbnn.oracle.diagnose import compare_trace, reference_arrays

    x = np.array([[1, -1, 1], [-1, -1, 1]])
    ref = reference_arrays(FC, x)
    predictions = ref["predictions"].astype(np.int64).copy()
    predictions[0] = 1 - predictions[0]
    trace = _trace(scores=ref["scores"].astype(np.int64), predictions=predictions)
    result = {r.name: r for r in compare_trace(FC, x, trace)}
    assert result["scores"].differ == 0 and result["predictions"].differ == 1
    assert result["predictions"].patterns == ["all 1 differing predictions have tied top scores (the argmax tie rule)"]


def test_the_closest_skips_alternatives_whose_pi_would_cost_too_much(monkeypatch):
    """With Pi failing and a budget of 0 multiply-adds, an alternative that would have to
    recompute Pi is skipped (not tried), and the search goes on to the next one."""
    from types import SimpleNamespace

    from refbnn.oracle import diagnose

    names = ["pi-flip-h", "first-layer-without-z"]          # the first needs Algorithm 1 run in full
    ordered = [((n,), REGISTRY[n].variant, REGISTRY[n].affects) for n in names]
    tried = []

    def reproduces(engine, fast, v, model, data, sub, path, atol):
        tried.append(next(n for n in names if REGISTRY[n].variant is v))
        return True
    monkeypatch.setattr(diagnose, "_reproduces", reproduces)
    data = SimpleNamespace(y=np.zeros(5, int))
    got = diagnose._closest(FC, data, {"T": [1], "importance": [1]}, "c.json", 0.0, {"T", "importance"}, ordered,
                            {}, None, 0)
    assert tried == ["first-layer-without-z"] and got == (("first-layer-without-z",), ["T"], ["importance"])
    tried.clear()                                   # VAR(Pi) needs Pi as much
    diagnose._closest(FC, data, {"T": [1], "var_importance": 1}, "c.json", 0.0, {"T", "var_importance"}, ordered,
                      {}, None, 0)
    assert tried == ["first-layer-without-z"]
    tried.clear()                                   # a budget of exactly the cost is enough
    from refbnn.oracle.variants import VariantEngine
    cost = VariantEngine(FC, REGISTRY["pi-flip-h"].variant).importance_cost(5)
    diagnose._closest(FC, data, {"T": [1], "importance": [1]}, "c.json", 0.0, {"T", "importance"}, ordered,
                      {}, None, cost)
    assert tried[0] == "pi-flip-h" and cost > 0


def test_independent_mode_reads_their_activations_batch_by_batch():
    """600 inputs, three batches of the variant engine's 256: fed their own a1 (equal to
    refbnn's but at input 300, in the second batch), independent mode finds the scores
    computed from it, batch by batch, equal to theirs."""
    from refbnn.oracle.diagnose import compare_trace, reference_arrays

    x = np.random.default_rng(4).choice([-1, 1], (600, 3))
    ref = reference_arrays(FC, x)
    a1 = ref["a1"].astype(np.int8)
    a1[300, 0] = -a1[300, 0]
    scores = a1.astype(int) @ np.ones((2, 3), int).T
    trace = _trace(a={1: a1}, scores=scores)
    got = {r.name: r for r in compare_trace(FC, x, trace, mode="independent")}
    assert got["a1"].differ == 1 and got["scores"].differ == 0


def test_the_alternatives_of_the_forward_pass_single_then_in_pairs():
    """forward_alternatives: each registry convention that changes the forward pass and
    applies to the model, then every pair of them that combines, each pair once."""
    import itertools

    from refbnn.oracle.conventions import combine
    from refbnn.oracle.diagnose import _applicable, forward_alternatives

    single = [((c.name,), c.variant) for c in REGISTRY.values()
              if (c.variant.forward or c.variant.argmax_last) and _applicable(FC, c.variant)]
    pairs = [(a[0] + b[0], combine(a[1], b[1])) for a, b in itertools.combinations(single, 2)
             if combine(a[1], b[1]) is not None]
    assert len(single) >= 2 and pairs
    assert forward_alternatives(FC) == single + pairs and forward_alternatives(FC, pairs=False) == single


def test_the_json_of_a_diagnosis():
    """The keys a program reads, and a pair's sentence joining both conventions with "and"."""
    from refbnn.oracle.diagnose import ArrayResult

    a, b = REGISTRY["tie-ge"], REGISTRY["polarity-ignored"]
    m = Match(("tie-ge", "polarity-ignored"), untested="u")
    assert m.as_json() == {"conventions": ["tie-ge", "polarity-ignored"], "theirs": [a.theirs, b.theirs],
                           "contract": [a.contract, b.contract], "untested": "u"}
    assert "untested" not in Match(("tie-ge",)).as_json()
    assert m.sentence("accuracy").startswith(f"your accuracy match refbnn exactly if {a.theirs} and {b.theirs}; ")
    d = Diagnosis([], "T", tried=3, skipped=["s"], closest=(("tie-ge", "polarity-ignored"), ["T"], ["T_bar"]))
    assert d.as_json() == {"matches": [], "tried": 3, "skipped": ["s"],
                           "closest": {"conventions": ["tie-ge", "polarity-ignored"], "passing": ["T"],
                                       "failing": ["T_bar"]}}
    assert f"if {a.theirs} and {b.theirs}, your T match" in d.lines()[1]
    r = ArrayResult("h1", 6, differ=2, first={"input": 0}, patterns=["p"])
    assert r.as_json() == {"array": "h1", "compared": True, "entries": 6, "differ": 2, "first": {"input": 0},
                           "patterns": ["p"]}


def test_an_alternative_is_tried_only_where_it_can_change_something():
    """_applicable by hand: on the dense FC (no conv, no pooling, vectors only, one position
    per neuron, a polarity -1 unit) only ignoring polarity can change anything; on a padded
    conv with pooling and 3x3 maps every one can; on 1x1 maps the channel order of a flatten
    cannot, and without a polarity -1 ignoring polarity cannot; on 2x1 maps (two positions)
    the flatten order and Pi at one position can."""
    from refbnn.oracle.diagnose import _applicable

    names = ["polarity-ignored", "pad-minus-one", "pad-plus-one", "pool-threshold-swapped", "flatten-channels-last",
             "conv-pi-one-position"]

    def applicable(model):
        return [n for n in names if _applicable(model, REGISTRY[n].variant)]
    assert applicable(FC) == ["polarity-ignored"]
    conv = Model.build((1, 6, 6), 1, [Conv2d(Weight.from_array(np.ones((2, 1, 3, 3), int)), padding=1), MaxPool2d(),
                                      Threshold((0, 0), (1, -1)), Flatten(),
                                      Linear(Weight.from_array(np.ones((2, 18), int)))])
    assert applicable(conv) == names
    tiny = Model.build((1, 2, 2), 1, [Conv2d(Weight.from_array(np.ones((2, 1, 2, 2), int))), Threshold((0, 0)),
                                      Flatten(), Linear(Weight.from_array(np.ones((2, 2), int)))])
    assert applicable(tiny) == []
    two = Model.build((1, 3, 2), 1, [Conv2d(Weight.from_array(np.ones((2, 1, 2, 2), int))), Threshold((0, 0)),
                                     Flatten(), Linear(Weight.from_array(np.ones((2, 4), int)))])
    assert applicable(two) == ["flatten-channels-last", "conv-pi-one-position"]     # 2 x 1 maps: 2 positions


def _pi_claims():
    """refbnn's own Pi claims on the FC model, with one Pi changed: only Pi fails."""
    from fractions import Fraction

    from refbnn.engines.fast import FastEngine
    from refbnn.formats.datafile import Dataset
    from refbnn.measure.metrics import metrics
    from refbnn.oracle.checker import check_claims

    x = np.array([[1, -1, 1], [-1, -1, 1], [1, 1, 1], [-1, 1, -1]])
    data = Dataset(x, np.array([0, 1, 1, 0]))
    doc = metrics(FastEngine(FC), x, data.y, [("1", Fraction(1))], with_importance=True)
    claims = {"importance": [dict(p) for p in doc["importance"]]}
    claims["importance"][0] = {"value": 0.123, "exact": "123/1000"}
    checks = check_claims(FastEngine(FC), FC, data, claims, "c.json", 0.0)
    return data, claims, checks


def test_what_a_diagnosis_skips_and_why():
    """Counts are not conventions: a failing count is named and nothing is tried. With a
    budget of 0 multiply-adds every alternative whose Pi needs Algorithm 1 run in full is
    skipped, each named with the cost it would have had."""
    from refbnn.oracle import diagnose
    from refbnn.oracle.variants import VariantEngine

    data, claims, checks = _pi_claims()
    assert {c["quantity"] for c in checks if not c["pass"]} == {"importance[0]"}
    counts = diagnose.diagnose_claims(FC, data, {}, "c.json", 0.0, [{"quantity": "neurons", "pass": False}])
    assert (counts.matches, counts.what, counts.skipped, counts.tried) == (
        [], "neurons", ["neurons: counts, not conventions"], 0)
    d = diagnose.diagnose_claims(FC, data, claims, "c.json", 0.0, checks, budget=0)
    full = [names for names, v, _ in diagnose.candidates(FC, {"importance"}) if v.full_pi]
    assert full and d.matches == [] and d.tried == len(diagnose.candidates(FC, {"importance"})) - len(full)
    for names in full:
        cost = VariantEngine(FC, diagnose.combine(*[REGISTRY[n].variant for n in names]) if len(names) > 1
                             else REGISTRY[names[0]].variant).importance_cost(len(data.y))
        assert (f"{' + '.join(names)}: Algorithm 1 without the incremental engine would take {cost:.2g} "
                "multiply-adds") in d.skipped
    assert len(d.skipped) == len(full)


@pytest.mark.parametrize("pi_keys, words", [(("importance", "var_importance"), "Pi and VAR(Pi)"),
                                             (("var_importance",), "VAR(Pi)")])
def test_a_match_whose_pi_was_not_recomputed_says_what_it_covers(monkeypatch, pi_keys, words):
    """With a budget of 0, an alternative that would need Algorithm 1 in full is still tried
    on the other failing claims (here the accuracy, without Pi and VAR(Pi), or without
    VAR(Pi) alone), and its match says that only those were recomputed. (Which alternative
    reproduces what is set here.)"""
    from types import SimpleNamespace

    from refbnn.oracle import diagnose

    cand = [(("pi-flip-h",), REGISTRY["pi-flip-h"].variant, frozenset({"forward", "importance"}))]
    monkeypatch.setattr(diagnose, "candidates", lambda model, needed: cand)
    seen = []
    monkeypatch.setattr(diagnose, "_reproduces",
                        lambda engine, fast, v, model, data, sub, path, atol: seen.append(sorted(sub)) or True)
    data = SimpleNamespace(x=np.ones((5, 3), int), y=np.zeros(5, int))
    claims = {"accuracy": 0.5, **{k: {"importance": [0.1], "var_importance": 0.2}[k] for k in pi_keys}}
    checks = [{"quantity": q, "pass": False}
              for q in ["accuracy"] + [{"importance": "importance[0]"}.get(k, k) for k in pi_keys]]
    d = diagnose.diagnose_claims(FC, data, claims, "c.json", 0.0, checks, budget=0)
    assert seen == [["accuracy"]] and d.tried == 1 and len(d.matches) == 1
    m = d.matches[0]
    assert m.tested == "accuracy" and m.untested.startswith(
        f"your {words} were not recomputed under it: Algorithm 1 without the incremental engine would take ")
    assert d.lines()[0].startswith("diagnosis: your accuracy match refbnn exactly if ")


def test_the_closest_is_looked_for_only_among_several_failing_claims(monkeypatch):
    """No match: with two failing claims the closest alternative is the one fixing some of
    them; with one failing claim there is nothing closer than "no match". Every family
    failing at once is still diagnosed (not taken for counts)."""
    from types import SimpleNamespace

    from refbnn.oracle import diagnose

    cand = [(("tie-ge",), REGISTRY["tie-ge"].variant, REGISTRY["tie-ge"].affects)]
    monkeypatch.setattr(diagnose, "candidates", lambda model, needed: cand)
    calls = []

    def reproduces(engine, fast, v, model, data, sub, path, atol):
        calls.append(sorted(sub))
        return len(calls) > 1 and set(sub) == {"accuracy"}      # the first call (the full claims) fails
    monkeypatch.setattr(diagnose, "_reproduces", reproduces)
    data = SimpleNamespace(x=np.ones((5, 3), int), y=np.zeros(5, int))
    failing = [{"quantity": "accuracy", "pass": False}, {"quantity": "predictions[0]", "pass": False}]
    two = diagnose.diagnose_claims(FC, data, {"accuracy": 1, "predictions": [0]}, "c.json", 0.0, failing)
    assert two.matches == [] and two.closest == (("tie-ge",), ["accuracy"], ["predictions"])
    calls.clear()
    one = diagnose.diagnose_claims(FC, data, {"accuracy": 1}, "c.json", 0.0, [{"quantity": "accuracy", "pass": False}])
    assert one.matches == [] and one.closest is None and calls == [["accuracy"]]
    monkeypatch.setattr(diagnose, "candidates", lambda model, needed: [])
    every = diagnose.diagnose_claims(FC, data, {}, "c.json", 0.0, [{"quantity": k, "pass": False}
                                                                 for k in diagnose.FAMILY])
    assert every.skipped == [] and every.tried == 0


def test_a_map_of_another_shape_has_no_border():
    """_border answers only for the threshold's own maps: asked about 3x3 maps of a 6x6 conv
    output it gives None, not a 6x6 mask that the differences could not be read through."""
    conv = Model.build((1, 6, 6), 1, [Conv2d(Weight.from_array(np.ones((2, 1, 3, 3), int)), padding=1),
                                      Threshold((0, 0)), Flatten(), Linear(Weight.from_array(np.ones((2, 72), int)))])
    assert _border(conv, 1, (1, 2, 6, 6)) is not None
    assert _border(conv, 1, (1, 2, 3, 3)) is None


def test_a_quantity_undefined_under_an_alternative_is_no_match():
    """Property: where refbnn's accuracy A is 0 (every label the other class), Pi = (A - A*) / A
    is undefined; under var-ddof1, which keeps that definition, claimed Pi values of 0 are
    not reproduced (no match), whatever they are."""
    from refbnn.engines.fast import FastEngine
    from refbnn.formats.datafile import Dataset
    from refbnn.oracle import diagnose
    from refbnn.oracle.variants import VariantEngine

    x = np.array([[1, -1, 1], [-1, -1, 1], [1, 1, 1], [-1, 1, -1]])
    wrong = 1 - np.asarray(FastEngine(FC).predictions(x))
    v = REGISTRY["var-ddof1"].variant
    claims = {"importance": [{"value": 0.0, "exact": "0"}] * 3}
    assert not diagnose._reproduces(VariantEngine(FC, v), FastEngine(FC), v, FC, Dataset(x, wrong), claims, "c.json",
                                    0.0)


def _scripted(monkeypatch, cand, reproduced):
    """diagnose_claims over the candidates `cand`, those named in `reproduced` reproducing
    every claim (a stand-in for the recomputation); returns the names tried."""
    from refbnn.oracle import diagnose

    tried = []
    monkeypatch.setattr(diagnose, "candidates", lambda model, needed: cand)

    def reproduces(engine, fast, v, model, data, sub, path, atol):
        names = next(n for n, w, _ in cand if w is v)
        tried.append(names)
        return names in reproduced
    monkeypatch.setattr(diagnose, "_reproduces", reproduces)
    return tried


def test_a_pair_adding_to_a_match_is_skipped_and_the_search_goes_on(monkeypatch):
    """A match (polarity-ignored) makes its pairs redundant, but not the pairs after them:
    (polarity-ignored, bits-little-endian) is skipped, (tie-ge, bits-little-endian), tried
    after it (the candidates are ordered by their forward switches, tie-ge's first and
    True after False), still is and matches."""
    from types import SimpleNamespace

    from refbnn.oracle import diagnose

    def entry(*names):
        return names, diagnose.combine(*[REGISTRY[n].variant for n in names]) if len(names) > 1 else \
            REGISTRY[names[0]].variant, REGISTRY[names[0]].affects
    cand = [entry("polarity-ignored"), entry("tie-ge", "bits-little-endian"),
            entry("polarity-ignored", "bits-little-endian")]
    tried = _scripted(monkeypatch, cand, {("polarity-ignored",), ("tie-ge", "bits-little-endian")})
    data = SimpleNamespace(x=np.ones((5, 3), int), y=np.zeros(5, int))
    d = diagnose.diagnose_claims(FC, data, {"accuracy": 0.5}, "c.json", 0.0, [{"quantity": "accuracy", "pass": False}])
    assert tried == [("polarity-ignored",), ("tie-ge", "bits-little-endian")]
    assert [m.names for m in d.matches] == [("polarity-ignored",), ("tie-ge", "bits-little-endian")] and d.tried == 2


def test_a_traced_pair_adding_to_a_match_is_skipped_and_the_search_goes_on(monkeypatch):
    """The same for traces: after the match tie-ge, its pair is not recomputed, and a later
    pair without it still is (and matches)."""
    from refbnn.oracle import diagnose

    def pair(a, b):
        return (a, b), diagnose.combine(REGISTRY[a].variant, REGISTRY[b].variant)
    alts = [(("tie-ge",), REGISTRY["tie-ge"].variant), pair("tie-ge", "bits-little-endian"),
            pair("polarity-ignored", "bits-little-endian")]
    monkeypatch.setattr(diagnose, "forward_alternatives", lambda model: alts)
    theirs = np.array([1, 0])
    computed = []

    def reference_arrays(model, x, v):
        computed.append(v)
        match = v in (alts[0][1], alts[2][1])
        return {"predictions": theirs if match else 1 - theirs}
    monkeypatch.setattr(diagnose, "reference_arrays", reference_arrays)
    got = diagnose.diagnose_trace(FC, np.ones((2, 3), int), _trace(predictions=theirs))
    assert [m.names for m in got] == [("tie-ge",), ("polarity-ignored", "bits-little-endian")]
    assert computed == [alts[0][1], alts[2][1]]


def test_only_failing_claims_make_a_match_when_pi_is_not_recomputed(monkeypatch):
    """With a budget of 0 and only Pi failing, an alternative whose Pi would need Algorithm 1
    in full is skipped even though the claims hold a passing accuracy it could recompute: a
    match on claims that did not fail would explain nothing. Only VAR(Pi) failing is the
    same (VAR(Pi) needs Pi)."""
    from types import SimpleNamespace

    from refbnn.oracle import diagnose

    cand = [(("pi-flip-h",), REGISTRY["pi-flip-h"].variant, frozenset({"forward", "importance"}))]
    data = SimpleNamespace(x=np.ones((5, 3), int), y=np.zeros(5, int))
    for key, quantity, value in (("importance", "importance[0]", [0.1]), ("var_importance", "var_importance", 0.2)):
        tried = _scripted(monkeypatch, cand, {("pi-flip-h",)})
        d = diagnose.diagnose_claims(FC, data, {"accuracy": 0.5, key: value}, "c.json", 0.0,
                                     [{"quantity": "accuracy", "pass": True}, {"quantity": quantity, "pass": False}],
                                     budget=0)
        assert tried == [] and d.matches == [] and d.tried == 0 and len(d.skipped) == 1


def test_each_forward_pass_is_computed_once_per_size_of_alternative(monkeypatch):
    """Property: the alternatives are tried grouped by the forward pass they run, and one pass
    is kept while its group is tried: each distinct forward pass (a signature) is computed
    once among the single alternatives and once among the pairs that run it, no more.
    (On this model the registry's order alone would return to tie-ge's pass after
    tie-ge + bits-little.)"""
    from collections import Counter

    from refbnn.formats.datafile import Dataset
    from refbnn.oracle import diagnose
    from refbnn.oracle.variants import VariantEngine

    x = np.array([[1, -1, 1], [-1, -1, 1], [1, 1, 1], [-1, 1, -1]])
    claims = {"accuracy": 1 / 7, "T": {"1": 0.3}}    # A is a multiple of 1/4, T of 1/12
    checks = [{"quantity": "accuracy", "pass": False}, {"quantity": "T[1]", "pass": False}]
    runs = Counter()
    plain = VariantEngine._plain_run

    def counted(self, xb):
        runs[self.v.signature] += 1
        return plain(self, xb)
    monkeypatch.setattr(VariantEngine, "_plain_run", counted)
    monkeypatch.setattr(diagnose, "_closest", lambda *args: None)
    d = diagnose.diagnose_claims(FC, Dataset(x, np.array([0, 1, 1, 0])), claims, "c.json", 0.0, checks)
    cand = diagnose.candidates(FC, {"forward", "T"})
    assert d.matches == [] and d.tried == len(cand)
    assert runs == Counter(sig for _, sig in {(len(names), v.signature) for names, v, _ in cand})
