"""Bit errors (docs/semantics.md §6): keyed masks, accuracy over BER, exact flip probabilities."""
import itertools
import json
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
from conftest import enumerated_expected_accuracy, run_cli
from hypothesis import given
from hypothesis import strategies as st
from strategies import model_cases

from refbnn.biterrors.flipprob import flip_probability_float, layer_flip_probabilities, neuron_flip_probability
from refbnn.biterrors.masks import ErrorModel, below, keyed_mask, pattern
from refbnn.biterrors.sweep import Summary, accuracy_sweep, correct_under_errors
from refbnn.demo.bars import example_data, example_model
from refbnn.engines.fast import FastEngine
from refbnn.engines.interpreter import Interpreter
from refbnn.formats.datafile import write_data
from refbnn.formats.modelfile import write_model
from refbnn.semantics.fliptargets import activation_targets, flip_targets
from refbnn.semantics.model import Conv2d, Flatten, Linear, Model, Threshold, Weight


def tiny_net() -> Model:
    """3 inputs (Z = 1) -> 2 neurons -> 2 classes: 6 + 4 = 10 weight bits."""
    return Model.build((3,), 1, [Linear(Weight.from_array([[1, 1, -1], [-1, 1, 1]])), Threshold((0, 0)),
                                 Linear(Weight.from_array([[1, -1], [-1, 1]]))])


TINY_X = np.array([[1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
TINY_Y = np.array([0, 1, 0, 1])


def test_keyed_masks_are_the_spec_formula_with_weights_numbered_first():
    model = tiny_net()
    em = ErrorModel(0.3, seed=7, batch_size=4, activations=True)
    weights, acts = pattern(model, em, r=2, j=5, batch=4)
    # weight tensor t = 0, 1; the activation input of layer 2 is tensor 2 (after the weights)
    assert (weights[1] == (np.random.default_rng([7, 2, 5, 1]).random((2, 2)) < 0.3)).all()
    assert (acts[2] == (np.random.default_rng([7, 2, 5, 2]).random((4, 2)) < 0.3)).all()
    # targeting only layer 2 leaves its mask unchanged and the other tensor clean
    only = pattern(model, ErrorModel(0.3, seed=7, batch_size=4, layers=(2,)), 2, 5, 4)[0]
    assert only[0] is None and (only[1] == weights[1]).all()


def test_flip_targets_number_the_weights_first_then_the_hidden_layers_inputs():
    # the bars model: conv (layer 0) -> threshold -> pool -> flatten (64) -> linear (layer 4)
    # -> threshold (4) -> linear (layer 6). Weights w0, w1, w2 for layers 0, 4, 6; the inputs
    # of the hidden weight layers 4 and 6 are a3 (64 values) and a4 (4 values).
    model = example_model()
    got = [(ft.name, ft.layer, ft.shape) for ft in flip_targets(model)]
    assert got == [("w0", 0, (4, 1, 3, 3)), ("w1", 4, (4, 64)), ("w2", 6, (2, 4)),
                   ("a3", 4, (64,)), ("a4", 6, (4,))]
    # the other convention, recognised by verify: activations numbered 0, 1
    assert [ft.name for ft in activation_targets(model, first=True)] == ["a0", "a1"]


@given(st.lists(st.integers(0, 2**32), min_size=4, max_size=4), st.integers(1, 3000),
       st.one_of(st.floats(0, 1), st.sampled_from([0.0, 1.0, 2.0**-53, 1 - 2.0**-53, 0.5])), st.booleans())
def test_raw_draws_give_the_very_bits_of_random_below_p(key, size, p, at_a_draw):
    """Property: below(random_raw, p) == (random() < p) for the same key, bit for bit,
    including p equal to one of the drawn values (the boundary of the strict comparison)."""
    uniforms = np.random.default_rng(key).random(size)
    if at_a_draw:
        p = float(uniforms[size // 2])
    raw = np.random.default_rng(key).bit_generator.random_raw(size)
    assert np.array_equal(below(raw, p), uniforms < p)
    assert np.array_equal(below(raw, p), keyed_mask(*key, (size,), p))


@given(model_cases(max_inputs=5), st.integers(0, 1000), st.sampled_from([0.05, 0.3]))
def test_engines_agree_under_the_same_keyed_errors(case, seed, p):
    """Property: weight and activation flips drawn from the same key give the same
    predictions in the reference interpreter and the fast engine."""
    em = ErrorModel(p, seed=seed, batch_size=2, activations=True)
    for r in range(2):
        assert correct_under_errors(Interpreter(case.model), case.x, case.y, em, r) == \
            correct_under_errors(FastEngine(case.model), case.x, case.y, em, r)


@given(model_cases(max_inputs=6), st.integers(0, 1000), st.booleans(), st.integers(1, 4))
def test_a_sweep_equals_each_ber_and_repetition_run_on_its_own(case, seed, activations, batch_size):
    """Property: drawing the keyed bits once per batch and using them at every BER (nested,
    in unsorted order) gives exactly the accuracies of running each (BER, repetition) on its
    own masks, in both engines."""
    bers = [("0.3", 0.3), ("0", 0.0), ("0.05", 0.05), ("0.1", 0.1)]
    em = ErrorModel(0.0, seed, batch_size, activations=activations)
    truth = [[Fraction(correct_under_errors(FastEngine(case.model), case.x, case.y, replace(em, p=p), r),
                       len(case.y)) for r in range(2)] for _, p in bers]
    for engine in (FastEngine(case.model), Interpreter(case.model)):
        assert [s.accuracies for s in accuracy_sweep(engine, case.x, case.y, bers, 2, em)] == truth


def test_sweep_accuracies_match_the_values_before_the_shared_draws():
    """A regression pin: these accuracies (bars model, 100 inputs of seed 3, seed 11, batch 16,
    3 repetitions) were computed by the earlier sweep, which drew its own masks for every BER;
    the shared draws must reproduce them exactly."""
    model, (x, y) = example_model(), example_data(100, seed=3)
    bers = [("0.2", 0.2), ("0", 0.0), ("0.05", 0.05)]
    before = {False: [["16/25", "3/5", "12/25"], ["1", "1", "1"], ["19/20", "19/20", "83/100"]],
              True: [["13/25", "29/50", "53/100"], ["1", "1", "1"], ["43/50", "91/100", "81/100"]]}
    for activations, want in before.items():
        em = ErrorModel(0.0, seed=11, batch_size=16, activations=activations)
        got = accuracy_sweep(FastEngine(model), x, y, bers, 3, em)
        assert [[str(a) for a in s.accuracies] for s in got] == want


def test_monte_carlo_estimate_lies_in_its_confidence_interval():
    model = tiny_net()
    p = Fraction(1, 10)
    truth = enumerated_expected_accuracy(model, TINY_X, TINY_Y, p)
    assert enumerated_expected_accuracy(model, TINY_X, TINY_Y, Fraction(0)) == Fraction(
        int((FastEngine(model).predictions(TINY_X) == TINY_Y).sum()), 4)
    em = ErrorModel(float(p), seed=2024, batch_size=1)
    summary = Summary("0.1")
    for r in range(40):
        summary.accuracies.append(Fraction(correct_under_errors(FastEngine(model), TINY_X, TINY_Y, em, r), 4))
    low, high = summary.as_dict()["ci95"]
    assert low <= float(truth) <= high, (low, float(truth), high)
    assert high - low < 0.25      # and the interval is informative


@pytest.mark.parametrize("a,d", [(0, 0), (1, 0), (0, 3), (3, 2), (4, 4)])
@pytest.mark.parametrize("m", [1, 3, 5, 9])
def test_neuron_flip_probability_equals_enumeration(a, d, m):
    # Build a neuron with a agreeing and d disagreeing summands and margin m: x = 1,
    # weights +1 (agree) / -1 (disagree), so h = a - d and s chosen so |2(h - s) - 1| = m.
    p = Fraction(1, 7)
    w = np.array([1] * a + [-1] * d)
    h = a - d
    s = h - (m + 1) // 2            # g = 2(h - s) - 1 = m > 0: output +1
    fires = h > s
    total = Fraction(0)
    for flips in itertools.product([False, True], repeat=a + d):
        w2 = np.where(flips, -w, w)
        k = sum(flips)
        if (int(w2.sum()) > s) != fires:
            total += p**k * (1 - p)**(a + d - k)
    assert neuron_flip_probability(a, d, m, p) == total
    assert abs(flip_probability_float(a, d, m, float(p)) - float(total)) < 1e-12


def test_layer_flip_probabilities_average_the_closed_form_over_real_taps():
    # conv 1 -> 2 channels (first layer, excluded), then a hidden conv with padding 1:
    # at each position the real taps K (4, 6 or 9 per channel) give agree = (K + h)/2.
    rng = np.random.default_rng(3)
    model = Model.build((1, 3, 3), 2, [
        Conv2d(Weight.from_array(rng.integers(0, 2, (2, 1, 3, 3))), 1), Threshold((0, 1)),
        Conv2d(Weight.from_array(rng.integers(0, 2, (2, 2, 3, 3))), 1), Threshold((0, -1), (1, -1)),
        Flatten(), Linear(Weight.from_array(rng.integers(0, 2, (2, 18))))])
    x = rng.integers(0, 3, (5, 1, 3, 3))
    got = layer_flip_probabilities(FastEngine(model), x, [0.1])
    ref = Interpreter(model)
    real = [4, 6, 4, 6, 9, 6, 4, 6, 4]                     # taps per channel at each position
    values = []
    for xi in x:
        run = ref.run(xi)
        for idx, h in enumerate(run.h[1]):
            n, pos = divmod(idx, 9)
            k = 2 * real[pos]
            g = 2 * (h - model.layers[3].thresholds[n]) - 1
            plus = (k + h) // 2
            agree = plus if g > 0 else k - plus
            values.append(float(neuron_flip_probability(agree, k - agree, abs(g), Fraction(1, 10))))
    assert list(got) == [3] and abs(got[3][0] - sum(values) / len(values)) < 1e-12


# -- the command -------------------------------------------------------------------------

@pytest.fixture
def files(tmp_path):
    write_model(tmp_path / "m.json", tiny_net())
    write_data(tmp_path / "d.npz", TINY_X, TINY_Y)
    return str(tmp_path / "m.json"), str(tmp_path / "d.npz")


run = run_cli


def test_eval_is_reproducible_and_ber_zero_is_the_clean_accuracy(files, tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"e{k}.json"
        assert run("eval", *files, "--ber", "0,0.1", "--reps", 3, "--seed", 5, "--json", out).exit_code == 0
        outs.append(out.read_text())
    assert outs[0] == outs[1]
    r = json.loads(outs[0])["results"]
    clean = Fraction(int((FastEngine(tiny_net()).predictions(TINY_X) == TINY_Y).sum()), 4)
    assert Fraction(r[0]["mean"]["exact"]) == clean and r[0]["std"] == 0


def test_eval_under_replayed_masks_equals_the_keyed_run(files, tmp_path):
    masks = tmp_path / "masks.npz"
    assert run("masks", files[0], "--ber", "0.2", "--reps", 4, "--inputs", 4, "--batch-size", 2,
               "--activations", "-o", masks).exit_code == 0
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert run("eval", *files, "--ber", "0.2", "--reps", 4, "--batch-size", 2, "--activations",
               "--json", a).exit_code == 0
    assert run("eval", *files, "--masks", masks, "--json", b).exit_code == 0
    ra, rb = json.loads(a.read_text())["results"][0], json.loads(b.read_text())["results"][0]
    assert ra["accuracies"] == rb["accuracies"]


@pytest.mark.parametrize("args,message", [
    (["--ber", "1.5"], "--ber: '1.5' is outside [0, 1]"),
    (["--ber", "x"], "--ber: 'x' is not a number"),
    (["--reps", "0"], "Invalid value for '--reps': 0 is not in the range x>=1"),
    (["--layers", "1"], "--layers: '1' is not a weight layer"),
])
def test_eval_bad_options_exit_2(files, tmp_path, args, message):
    out = tmp_path / "never.json"
    result = run("eval", *files, *args, "--json", out)
    assert result.exit_code == 2 and message in result.output and not out.exists()


@pytest.mark.parametrize("arrays,message", [
    ({"batch_size": np.array(2), "w0": np.zeros((1, 2, 2, 2), bool)}, "w0: shape [1, 2, 2, 2], expected [R, J, 2, 3]"),
    ({"batch_size": np.array(2), "w0": np.zeros((1, 2, 2, 3), np.int8)}, "w0: expected dtype bool"),
    ({"batch_size": np.array(2), "w7": np.zeros((1, 2, 2, 3), bool)}, "w7: unknown array"),
    ({"w0": np.zeros((1, 2, 2, 3), bool)}, "batch_size: missing"),
])
def test_bad_mask_files_exit_2(files, tmp_path, arrays, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    result = run("eval", *files, "--masks", path)
    assert result.exit_code == 2 and f"{path}: {message}" in result.output


def test_verify_recomputes_accuracy_under_keyed_bit_errors(files, tmp_path):
    ev = tmp_path / "eval.json"
    assert run("eval", *files, "--ber", "0.1,0.3", "--reps", 3, "--batch-size", 2, "--layers", "0",
               "--activations", "--seed", 9, "--json", ev).exit_code == 0
    claims = tmp_path / "claims.json"
    doc = json.loads(ev.read_text())
    assert (doc["batch_size"], doc["layers"], doc["activations"]) == (2, [0], True)
    claims.write_text(json.dumps({"bit_errors": doc}))
    result = run("verify", *files, "--claims", claims)
    # inputs, and per BER: 3 accuracies, reps, mean, min, max, std and the two interval ends
    assert result.exit_code == 0 and "claims: 21 checked, 21 pass, 0 fail" in result.output
    first = Fraction(doc["results"][0]["accuracies"][0]["exact"])
    doc["results"][0]["accuracies"][0] = {"exact": str(first + Fraction(1, 4))}   # one more input right
    claims.write_text(json.dumps({"bit_errors": doc}))
    result = run("verify", *files, "--claims", claims)
    assert result.exit_code == 1 and "bit_errors.results[0].accuracies[0]" in result.output


def test_verify_checks_every_summary_field_of_a_bit_error_result(files, tmp_path):
    ev, claims = tmp_path / "eval.json", tmp_path / "claims.json"
    assert run("eval", *files, "--ber", "0.2", "--reps", 3, "--seed", 4, "--json", ev).exit_code == 0
    doc = json.loads(ev.read_text())
    for key, wrong in (("std", 0.5), ("min", {"exact": "0/1"}), ("ci95", [0.25, 0.375]), ("reps", 4)):
        bad = json.loads(json.dumps(doc))
        bad["results"][0][key] = wrong
        claims.write_text(json.dumps({"bit_errors": bad}))
        result = run("verify", *files, "--claims", claims)
        assert result.exit_code == 1 and f"bit_errors.results[0].{key}" in result.output, key
    doc["results"][0]["stdev"] = 0.1
    claims.write_text(json.dumps({"bit_errors": doc}))
    result = run("verify", *files, "--claims", claims)
    assert result.exit_code == 2 and "bit_errors.results[0].stdev: unknown key" in result.output
