"""Boundaries that a one-line bug in the core would cross: the float limits of the fast
engine, Pi as a *relative* drop, the tie rules of certify, the data loader's ranges,
the strategies' hard cases and flips applied without rebuilding an engine.

Each test is named for the property it pins; each expected value is worked out by hand
in the comments. Engine tests run on both engines (the `engine_cls` fixture).
"""
from fractions import Fraction as F
from itertools import combinations

import numpy as np
import pytest
from bitarray import bitarray
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import model_cases

from refbnn.demo.bars import example_data, example_model
from refbnn.engines.fast import FastEngine, _exact_dtype, exact_float
from refbnn.engines.interpreter import Interpreter
from refbnn.formats.datafile import read_data, write_data
from refbnn.formats.files import InputError
from refbnn.measure.certify import certified_k, certified_ks
from refbnn.semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, ModelError, Threshold, Weight
from refbnn.semantics.theorem1 import odd_margin

# -- the float limits of the fast engine ----------------------------------------------------

BIG_Z = 2**20


def big_sum_net() -> Model:
    """17 inputs with Z = 2^20 -> 1 neuron (all weights +1, s = 2^24) -> 2 classes.
    fan-in * Z = 17 * 2^20 > 2^24, so float32 cannot hold every h: float64 is needed."""
    return Model.build((17,), BIG_Z, [
        Linear(Weight.from_array(np.ones((1, 17)))), Threshold((2**24,)),
        Linear(Weight.from_array([[1], [-1]]))])


# x = sixteen 2^20 and one 1: h = 16 * 2^20 + 1 = 2^24 + 1 > s = 2^24, so the neuron is +1 and
# the scores are (+1, -1): class 0. In float32, 2^24 + 1 rounds to 2^24 = s (h > s fails),
# which would give class 1.
BIG_X = np.array([[BIG_Z] * 16 + [1]])


def test_h_just_past_two_to_the_24_is_exact_in_both_engines(engine_cls):
    assert list(engine_cls(big_sum_net()).predictions(BIG_X)) == [0]


def test_T_counting_is_exact_past_two_to_the_24(engine_cls):
    """m = |2(h - s) - 1| with h = 2^24 + 1 and s = 0 is 2^25 + 1 (float32 would see 2^25 - 1);
    eq. 2: T = m / 2Z, so T >= b exactly for b = (2^25 + 1) / 2^21 and not one 2^-21 above."""
    model = Model.build((17,), BIG_Z, [
        Linear(Weight.from_array(np.ones((1, 17)))), Threshold((0,)),
        Linear(Weight.from_array([[1], [-1]]))])
    at, above = F(2**25 + 1, 2**21), F(2**25 + 2, 2**21)
    tol = engine_cls(model).tolerance(BIG_X, [at, above])
    assert tol.overall == {at: 1, above: 0}


def test_exact_float_switches_type_exactly_at_the_significand_limits():
    # float32 has a 24-bit significand, float64 53 bits: every integer up to 2^p is exact.
    assert exact_float(2**24) is np.float32 and exact_float(2**24 + 1) is np.float64
    assert exact_float(2**53) is np.float64 and exact_float(2**53 + 1) is None


def test_exact_dtype_accounts_for_the_input_magnitude_Z():
    # 16 * 2^20 = 2^24 fits float32; 17 * 2^20 does not; the same fan-in with M = 1 does.
    assert _exact_dtype(16, 2**20) is np.float32
    assert _exact_dtype(17, 2**20) is np.float64
    assert _exact_dtype(17, 1) is np.float32
    with pytest.raises(ValueError, match="exceeds 2\\*\\*53"):
        _exact_dtype(2**34, 2**20)


# -- Pi is the relative drop (A - A*) / A -----------------------------------------------------

def one_neuron_net() -> Model:
    """1 input (Z = 1) -> neuron a = +1 iff x > 0 -> scores (a, -a): class 0 iff x > 0."""
    return Model.build((1,), 1, [Linear(Weight.from_array([[1]])), Threshold((0,)),
                                 Linear(Weight.from_array([[1], [-1]]))])


ONE_X = np.array([[1], [1], [-1], [-1]])   # clean predictions 0, 0, 1, 1; flipped 1, 1, 0, 0


def test_importance_is_relative_when_accuracy_is_below_one(engine_cls):
    # y = (0, 0, 1, 0): clean correct 3 of 4, A = 3/4; flipped correct only the last, A* = 1/4.
    # Pi = (3/4 - 1/4) / (3/4) = 2/3 (the absolute drop would be 1/2).
    assert engine_cls(one_neuron_net()).importance(ONE_X, np.array([0, 0, 1, 0])) == [F(2, 3)]


def test_importance_is_negative_when_the_flip_raises_accuracy(engine_cls):
    # y = (0, 1, 0, 0): clean correct only the first, A = 1/4; flipped correct 2nd-4th, A* = 3/4.
    # Pi = (1/4 - 3/4) / (1/4) = -2 (the absolute drop would be -1/2).
    assert engine_cls(one_neuron_net()).importance(ONE_X, np.array([0, 1, 0, 0])) == [F(-2)]


# -- certify: the class-score tie rule and the output layer's input magnitude ----------------

def _brute_force_k(model: Model, x: np.ndarray) -> int:
    """The largest k such that every choice of <= k flipped weights per output unit keeps the
    prediction (single-layer models only: every unit is an output unit)."""
    w = model.layers[0].weight.shape
    clean = Interpreter(model).run(x).prediction
    for k in range(w[1] + 1):
        for sets in _per_unit_sets(w[0], w[1], k):
            mask = np.zeros(w, dtype=bool)
            for unit, cols in enumerate(sets):
                mask[unit, list(cols)] = True
            if Interpreter(model, [mask]).run(x).prediction != clean:
                return k - 1
    return w[1]


def _per_unit_sets(units: int, fan_in: int, k: int):
    choices = [c for size in range(k + 1) for c in combinations(range(fan_in), size)]
    if units == 1:
        yield from ([c] for c in choices)
        return
    for c in choices:
        for rest in _per_unit_sets(units - 1, fan_in, k):
            yield [c] + rest


def test_certified_k_respects_the_tie_rule_against_a_smaller_class_index():
    """Scores (0, 4): class 1 leads class 0 by 4. One flip per unit moves each score by 2
    toward the other: (2, 2), a tie that goes to class 0, so k = 0 = floor((4 - 1) / 4)."""
    model = Model.build((4,), 1, [Linear(Weight.from_array([[1, 1, -1, -1], [1, 1, 1, 1]]))])
    x = np.array([1, 1, 1, 1])
    run = Interpreter(model).run(x)
    assert run.scores == [0, 4] and run.prediction == 1
    assert certified_k(model, run).k == 0 == _brute_force_k(model, x)
    assert list(certified_ks(FastEngine(model), x[None])[0]) == [0]


def test_certified_k_scales_the_output_margin_by_Z_in_a_first_layer():
    """Z = 3, one linear layer: scores (6, -6) for x = (3, 3). One flip moves a score by up to
    2Z = 6: one flip per unit gives (0, 0), a tie kept by class 0; two give (-6, 6).
    k = floor(12 / 4Z) = 1 (with M = 1 instead of Z it would be 3, capped at the fan-in 2)."""
    model = Model.build((2,), 3, [Linear(Weight.from_array([[1, 1], [-1, -1]]))])
    x = np.array([3, 3])
    run = Interpreter(model).run(x)
    assert run.scores == [6, -6]
    assert certified_k(model, run).k == 1 == _brute_force_k(model, x)
    assert list(certified_ks(FastEngine(model), x[None])[0]) == [1]


# -- the data loader's ranges ---------------------------------------------------------------

def _data(tmp_path, x, y):
    path = tmp_path / "d.npz"
    write_data(path, np.array(x), np.array(y))
    return path


def test_data_loader_accepts_minus_Z_and_rejects_minus_Z_minus_one(tmp_path):
    model = one_neuron_net()   # Z = 1, 2 classes
    assert read_data(_data(tmp_path, [[-1]], [0]), model).x.tolist() == [[-1]]
    with pytest.raises(InputError, match=r"x\[0, 0\]: value -2 outside \|x\| <= Z = 1"):
        read_data(_data(tmp_path, [[-2]], [0]), model)


def test_data_loader_accepts_the_last_class_and_rejects_the_class_count(tmp_path):
    model = one_neuron_net()   # classes 0 and 1
    assert read_data(_data(tmp_path, [[1]], [1]), model).y.tolist() == [1]
    with pytest.raises(InputError, match=r"y\[0\]: label 2 outside 0..1"):
        read_data(_data(tmp_path, [[1]], [2]), model)


# -- the strategies produce the hard cases ---------------------------------------------------

def test_model_cases_produce_ties_and_margins_of_one():
    """Property of the generator, not of refbnn: across generated cases, some neuron sees
    h = s exactly (a tie, output -1 for polarity +1) and some sees odd margin m = 1."""
    seen = {"tie": False, "m1": False}

    @settings(max_examples=200, database=None)
    @given(model_cases())
    def look(case):
        ref = Interpreter(case.model)
        for x in case.x:
            for nl, h in zip(case.model.neuron_layers, ref.run(x).h):
                s = case.model.layers[nl.threshold_index].thresholds
                for j, v in enumerate(h):
                    seen["tie"] |= v == s[j // nl.positions]
                    seen["m1"] |= odd_margin(v, s[j // nl.positions]) == 1

    look()
    assert seen == {"tie": True, "m1": True}


# -- flips without rebuilding the engine ---------------------------------------------------

@given(model_cases(), st.integers(0, 2**32 - 1))
def test_with_flips_equals_an_engine_built_with_the_masks(case, seed):
    """Property: for both engines, `engine.with_flips(masks)` predicts exactly as the
    reference built with those masks (its bits XORed at construction), and leaves the clean
    engine unchanged (flips are transient)."""
    rng = np.random.default_rng(seed)
    masks = [rng.random(case.model.layers[i].weight.shape) < 0.3 if rng.random() < 0.7 else None
             for i in case.model.weight_indices]
    truth = Interpreter(case.model, masks).predictions(case.x)
    for cls in (Interpreter, FastEngine):
        clean = cls(case.model)
        before = list(clean.predictions(case.x))
        assert list(clean.with_flips(masks).predictions(case.x)) == truth
        assert list(clean.predictions(case.x)) == before


def test_weight_refuses_little_endian_bits():
    """The file format and both engines read weight bits big-endian (docs/semantics.md §3.1)."""
    with pytest.raises(ModelError, match="big-endian"):
        Weight((2,), bitarray("10", endian="little"))


def test_a_mask_of_the_wrong_shape_is_refused_by_both_engines(engine_cls):
    with pytest.raises(ValueError, match=r"mask of shape \[2\] for a weight of shape \[1, 1\]"):
        engine_cls(one_neuron_net(), [np.zeros(2, dtype=bool), None])


def test_thresholds_far_outside_the_reachable_range_compare_exactly(engine_cls):
    """The fast engine compares h > s in float32 after clipping s to [-B-1, B], B = fan-in * M.
    Thresholds far outside (2^40), just past float32 (2^24 + 1) and at the clip edges must
    give what the definition gives: with fan-in 3 and Z = 1, h = w.x lies in -3..3."""
    s = (2**40, -2**40, 2**24 + 1, -(2**24) - 3, 3, -4, 2, -3)
    pol = (1, 1, -1, -1, 1, 1, -1, -1)
    model = Model.build((3,), 1, [Linear(Weight.from_array(np.ones((8, 3)))), Threshold(s, pol),
                                  Linear(Weight.from_array(np.eye(8)[:2] * 2 - 1))])
    x = np.array([[1, 1, 1], [-1, -1, -1], [1, -1, 0]])     # h = 3, -3, 0 for every neuron
    runs = [Interpreter(model).run(v) for v in x]
    # by hand, neuron by neuron (+1 iff h > s, or h <= s for polarity -1), for h = 3:
    # 3 > 2^40 no; 3 > -2^40 yes; not(3 > 2^24+1) yes; not(3 > -2^24-3) no; 3 > 3 no; 3 > -4 yes;
    # not(3 > 2) no; not(3 > -3) no
    ones = FastEngine(model).outputs(x)[1]
    assert ones[0].tolist() == [-1, 1, 1, -1, -1, 1, -1, -1]
    assert [r.prediction for r in runs] == list(engine_cls(model).predictions(x))
    assert [[int(v) for v in row] for row in ones] == [
        [1 if (h > t) != (p < 0) else -1 for t, p in zip(s, pol)] for h in (3, -3, 0)]


@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 9), st.integers(2, 9), st.integers(0, 2**32 - 1))
def test_maxpool_equals_its_reshape_definition(b, c, h, w, seed):
    """Property: the strided-quarters maxpool equals the docstring's definition (2x2 windows,
    stride 2, floor), on integers and on +-1 values, odd sizes included."""
    from refbnn.engines.ops import maxpool

    x = np.random.default_rng(seed).integers(-5, 6, (b, c, h, w)).astype(np.float32)
    naive = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    assert np.array_equal(maxpool(x), naive)
    signs = np.where(x > 0, np.int8(1), np.int8(-1))
    assert np.array_equal(maxpool(signs), np.where(naive > 0, 1, -1))


def test_T_counting_adds_up_every_chunk(monkeypatch):
    """The fast T counting walks the inputs in chunks that stay in cache; with one input per
    chunk (a chunk budget smaller than one input's values) the counts must still add up to
    exactly the reference's T, on every layer."""
    import refbnn.engines.fast as fast

    model, x = example_model(), example_data(30, seed=5)[0]
    monkeypatch.setattr(fast, "COUNT_CHUNK", 8)
    bs = [F(1, 2), F(1), F(3, 2), F(2), F(4)]
    assert FastEngine(model).tolerance(x, bs) == Interpreter(model).tolerance(x, bs)


def test_certified_k_of_a_hidden_bottleneck_uses_no_Z():
    """x = (3, 3), Z = 3. First layer: 8 neurons h = 6, s = -20: m = 51, floor(51/12) = 4 >= fan-in
    2, so no limit. Hidden: 8 neurons h = 8, s = 1: m = 13, floor(13/4) = 3 (Z is not used past
    the first layer: 13 // 12 would be 1). Scores (8, -8): floor(16/4) = 4. So k = 3, layer 3."""
    model = Model.build((2,), 3, [Linear(Weight.from_array(np.ones((8, 2)))), Threshold((-20,) * 8),
                                  Linear(Weight.from_array(np.ones((8, 8)))), Threshold((1,) * 8),
                                  Linear(Weight.from_array([[1] * 8, [-1] * 8]))])
    x = np.array([3, 3])
    cert = certified_k(model, Interpreter(model).run(x))
    assert (cert.k, cert.bottleneck) == (3, "layer 3")
    ks, where = certified_ks(FastEngine(model), x[None])
    assert (ks.tolist(), where) == ([3], ["layer 3"])


def test_algorithm_1_reports_progress_once_per_neuron(engine_cls):
    model, (x, y) = example_model(), example_data(20)
    calls = []
    engine_cls(model).importance(x, y, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(n, model.neurons) for n in range(1, model.neurons + 1)]


def test_weights_are_equal_only_with_equal_shape_and_bits():
    bits = bitarray("110100", endian="big")
    assert Weight((2, 3), bits) == Weight((2, 3), bits.copy())
    assert Weight((2, 3), bits) != Weight((3, 2), bits)                     # same bits, other shape
    assert Weight((2, 3), bits) != Weight((2, 3), bitarray("110101", endian="big"))
    assert Weight((2, 3), bits) != bits


@pytest.mark.parametrize("build,message", [
    # a 3x3 kernel on a 2x5 input fits the width but not the height: refused all the same
    (lambda: [Conv2d(Weight.from_array(np.ones((1, 1, 3, 3))))], "kernel 3 too large"),
    # maxpool needs H and W >= 2: [1, 1, 4] has W = 4 but H = 1
    (lambda: [Conv2d(Weight.from_array(np.ones((1, 1, 1, 1)))), MaxPool2d(), Threshold((0,)), Flatten(),
              Linear(Weight.from_array(np.ones((2, 2))))], "maxpool2d needs"),
    # a threshold after a maxpool that does not follow a weight layer
    (lambda: [Conv2d(Weight.from_array(np.ones((1, 1, 1, 1)))), Threshold((0,)), MaxPool2d(), Threshold((0,)),
              Flatten(), Linear(Weight.from_array(np.ones((2, 2))))], "must follow a weight layer"),
])
def test_structure_rules_refuse_a_shape_wrong_in_one_dimension_only(build, message):
    shape = (1, 2, 5) if "kernel" in message else (1, 1, 4) if "maxpool" in message else (1, 4, 4)
    layers = build()
    if "kernel" in message:
        layers += [Threshold((0,)), Flatten(), Linear(Weight.from_array(np.ones((2, 3))))]
    with pytest.raises(ModelError, match=message):
        Model.build(shape, 1, layers)
