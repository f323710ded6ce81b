"""`refbnn profile` and protection (docs/semantics.md §6.1, §9): the profile's numbers are
refbnn's own commands' numbers, protection only removes flips, and the paired comparison
gives the answer computed by hand."""
import json
from fractions import Fraction

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import model_cases

from refbnn.biterrors.masks import ErrorModel, pattern
from refbnn.biterrors.protect import Protection, hidden_units, parse_protect, restrict
from refbnn.biterrors.sweep import accuracy_sweep
from refbnn.demo.bars import example_data, example_model
from refbnn.engines.fast import FastEngine
from refbnn.formats.datafile import write_data
from refbnn.formats.modelfile import write_model
from refbnn.measure.paired import sign_flip_p
from refbnn.measure.profile import ProfileConfig, control_protection, protection_comparison
from refbnn.semantics.model import Linear, Model, Threshold, Weight

BERS = "0,0.02,0.1"


@pytest.fixture(scope="module")
def bars(tmp_path_factory):
    d = tmp_path_factory.mktemp("bars")
    write_model(d / "m.json", example_model())
    x, y = example_data(40, seed=2)
    write_data(d / "d.npz", x, y)
    return d


@pytest.fixture(scope="module")
def profiled(bars):
    out = bars / "prof"
    r = run_cli("profile", bars / "m.json", bars / "d.npz", "--out", out, "--ber", BERS, "--reps", "4",
                "--seed", "3", "--batch-size", "16", "--k", "0,1,2", "--protect", "top-importance:25%",
                "--controls", "3", "--json", bars / "profile-copy.json")
    assert r.exit_code == 0, r.output
    assert (bars / "profile-copy.json").read_text() == (out / "profile.json").read_text()    # --json: the same
    return out, json.loads((out / "profile.json").read_text())


def test_profile_numbers_equal_metrics_eval_and_certify_exactly(bars, profiled):
    out, doc = profiled
    m, e, c = bars / "m.json", bars / "e.json", bars / "c.json"
    assert run_cli("metrics", m, bars / "d.npz", "--importance", "--json", bars / "mt.json").exit_code == 0
    assert run_cli("eval", m, bars / "d.npz", "--ber", BERS, "--reps", "4", "--seed", "3", "--batch-size", "16",
                   "--json", e).exit_code == 0
    assert run_cli("certify", m, bars / "d.npz", "--k", "0,1,2", "--json", c).exit_code == 0
    mt, ev, ce = (json.loads(p.read_text()) for p in (bars / "mt.json", e, c))
    for key in ("accuracy", "T", "T_bar", "layers", "importance", "var_importance", "neurons", "inputs"):
        assert doc[key] == mt[key], key
    assert doc["bit_errors"]["results"] == ev["results"]
    assert doc["profile"]["certified"]["certified_accuracy"] == ce["certified_accuracy"]
    assert doc["profile"]["certified"]["bottleneck"] == ce["bottleneck"]


@settings(max_examples=25, deadline=None)
@given(model_cases(), st.integers(1, 7))
def test_the_clean_pass_equals_the_separate_passes_with_one_forward_per_slice(case, memory_inputs):
    """Property: clean_pass reads every clean quantity of the profile (T, predictions,
    certified k, margins, flip probabilities) off one forward pass per memory slice, with
    the same numbers as the functions that make their own passes."""
    from refbnn.biterrors.flipprob import flip_probabilities_of_counts, neuron_flip_probabilities
    from refbnn.measure.certify import certified_ks
    from refbnn.measure.profile import clean_pass, margin_histogram

    model, x = case.model, case.x
    if model.neurons == 0:
        return
    engine = FastEngine(model)
    engine.memory_slices = lambda n: (slice(i, min(n, i + memory_inputs)) for i in range(0, n, memory_inputs))
    bs = [Fraction(0), Fraction(1, 2), Fraction(3)]
    calls = []
    outputs = engine.outputs
    engine.outputs = lambda xs, *a, **k: calls.append(len(xs)) or outputs(xs, *a, **k)
    got = clean_pass(engine, x, bs)
    assert calls == [len(range(len(x))[s]) for s in engine.memory_slices(len(x))]
    engine.outputs = outputs
    assert got.tolerance == engine.tolerance(x, bs)
    assert got.predictions.tolist() == engine.predictions(x).tolist()
    assert got.predictions.dtype == got.certified_k.dtype == np.int64       # class indices and counts
    ks, where = certified_ks(engine, x)
    assert got.certified_k.tolist() == ks.tolist() and got.bottleneck == where
    assert got.margins == margin_histogram(engine, x)
    separate = neuron_flip_probabilities(engine, x, [0.01, 0.1])
    together = flip_probabilities_of_counts(model, got.flip_counts, [0.01, 0.1])
    assert separate.keys() == together.keys()
    assert all(np.array_equal(separate[t], together[t]) for t in separate)


def test_verify_passes_on_the_profile(bars, profiled):
    out, _ = profiled
    r = run_cli("verify", bars / "m.json", bars / "d.npz", "--claims", out / "profile.json")
    assert r.exit_code == 0 and "verify: OK" in r.output


def test_the_page_reads_the_numbers_and_names_how_it_was_made(profiled):
    out, doc = profiled
    page = (out / "profile.md").read_text()
    clean = float(doc["accuracy"]["value"])
    assert f"Clean accuracy: {100 * clean:.1f}% on 40 inputs." in page
    share = doc["profile"]["importance_share"]["1"]
    assert f"Layer 1: {share['carry_half']} of {share['neurons']} neurons carry half" in page
    counts = doc["profile"]["margins"]["1"]["tolerated_flips"]
    assert f"Layer 1: {100 * sum(counts[2:]) / sum(counts):.1f}% of its margins tolerate 2 or more" in page
    # through CliRunner sys.argv is pytest's, so the page says how it was called instead
    assert "Command: `refbnn profile (called from Python)`" in page
    assert "# Bit error tolerance profile: ../m.json" in page and str(out) not in page     # paths relative


def test_figures_are_written_and_show_something(profiled):
    """Each figure is a PNG of a plausible size with more than a blank background."""
    plt = pytest.importorskip("matplotlib.pyplot")
    out, doc = profiled
    assert sorted(doc["profile"]["figures"]) == sorted(
        f"{n}.{e}" for n in ("accuracy", "tolerance", "importance", "margins", "certified") for e in ("png", "svg"))
    for name in ("accuracy", "tolerance", "importance", "margins", "certified"):
        img = plt.imread(out / f"{name}.png")
        assert img.shape[0] > 300 and img.shape[1] > 400, name
        colours = np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
        assert len(colours) > 20, name                       # lines, bars, text: not a blank canvas
        assert (out / f"{name}.svg").read_text().lstrip().startswith("<?xml")


def test_protecting_nothing_equals_eval_and_protecting_everything_is_clean():
    model = example_model()
    x, y = example_data(30, seed=4)
    engine = FastEngine(model)
    em = ErrorModel(0.0, seed=9, batch_size=8)
    bers = [("0.05", 0.05), ("0.3", 0.3), ("1", 1.0)]
    plain = accuracy_sweep(engine, x, y, bers, 3, em)
    nothing = accuracy_sweep(engine, x, y, bers, 3, em, protect=Protection({}))
    assert [s.accuracies for s in nothing] == [s.accuracies for s in plain]
    clean = Fraction(int((np.asarray(engine.predictions(x)) == y).sum()), len(y))
    everything = accuracy_sweep(engine, x, y, bers, 3, em, protect=parse_protect("all", model))
    assert all(a == clean for s in everything for a in s.accuracies)


@settings(max_examples=30, deadline=None)
@given(model_cases(), st.integers(0, 2**16), st.floats(0.05, 0.9), st.booleans(), st.data())
def test_protection_only_removes_flips(case, seed, p, activations, data):
    """Property: the restricted pattern is the keyed pattern with exactly the protected bits
    cleared: a subset of it, equal to it everywhere else."""
    model = case.model
    rows = {i: data.draw(st.lists(st.integers(0, model.layers[i].weight.shape[0] - 1), max_size=3, unique=True))
            for i in model.weight_indices}
    protection = Protection({i: tuple(sorted(r)) for i, r in rows.items() if r})
    em = ErrorModel(p, seed, 3, activations=activations)
    weights, acts = pattern(model, em, 1, 2, 3)
    kept_w, kept_a = restrict(model, protection, weights, acts)
    for i, w, k in zip(model.weight_indices, weights, kept_w):
        guard = protection.weight_mask(model, i)
        guard = np.zeros(w.shape, bool) if guard is None else guard
        assert not (k & ~w).any() and np.array_equal(k, w & ~guard)
    for i, a in acts.items():
        guard = protection.input_mask(model, i)
        guard = np.zeros(a.shape[1:], bool) if guard is None else guard
        assert not (kept_a[i] & ~a).any() and np.array_equal(kept_a[i], a & ~guard[None])


def hand_model() -> Model:
    """x = (1) -> W1 = [[+1], [+1]], s = (0, 0) -> a = (+1, +1) -> W2 = [[+1, -1], [-1, -1]]:
    scores (0, -2), class 0, correct for label 0."""
    return Model.build((1,), 1, [Linear(Weight.from_array(np.array([[1], [1]], bool))), Threshold((0, 0)),
                                 Linear(Weight.from_array(np.array([[1, 0], [0, 0]], bool)))])


def test_the_paired_comparison_on_a_hand_sized_model():
    # At BER 1 with only layer 0 targeted, every bit of W1 flips:
    #   unprotected: a = (-1, -1), scores (-1 + 1, 1 + 1) = (0, 2) -> class 1: accuracy 0
    #   neuron 0 protected: a = (+1, -1), scores (2, 0) -> class 0: accuracy 1
    #   neuron 1 protected: a = (-1, +1), scores (-2, 0) -> class 1: accuracy 0
    # Pi: flipping neuron 0 gives a = (-1, +1) -> wrong (Pi = 1); neuron 1 gives (+1, -1) -> right (Pi = 0),
    # so top-importance:1 protects neuron 0. The control protects one random neuron of layer 0: its
    # accuracy per repetition is the share of the controls that chose neuron 0.
    model = hand_model()
    x, y = np.array([[1]]), np.array([0])
    engine = FastEngine(model)
    assert [float(p) for p in engine.importance(x, y)] == [1.0, 0.0]
    reps, controls = 5, 5
    cfg = ProfileConfig([("0", 0.0), ("1", 1.0)], reps, ErrorModel(0.0, seed=7, batch_size=1, layers=(0,)), "batch",
                        [("2", Fraction(2))], [0], protect="top-importance:1", controls=controls)
    unprotected = accuracy_sweep(engine, x, y, cfg.bers, reps, cfg.em)
    assert [a for s in unprotected for a in s.accuracies] == [1] * reps + [0] * reps
    calls = []
    result = protection_comparison(engine, x, y, cfg, engine.importance(x, y), unprotected,
                                   lambda label, done, total: calls.append((label, done, total)))
    assert result["channels"] == {"0": [0]} and result["weight_bits"] == 1
    assert result["alpha"] == 0.05 and result["controls"] == controls and result["test"] == (
        "exact one-sided sign-flip test of the paired differences (same flips per repetition)")
    labels = list(dict.fromkeys(label for label, _, _ in calls))
    assert labels == ["protected"] + [f"control {c}/{controls}" for c in range(1, controls + 1)]
    assert all(isinstance(d, int) and isinstance(t, int) and 0 <= d <= t for _, d, t in calls)
    assert all(max(d for lab, d, _ in calls if lab == label) == calls[-1][2] for label in labels)
    picked = [control_protection(model, Protection({0: (0,)}), 7 + 1 + c).channels[0] for c in range(controls)]
    share = Fraction(sum(1 for ch in picked if ch == (0,)), controls)
    at0, at1 = result["results"]
    assert [Fraction(a["exact"]) for a in at1["protected"]] == [1] * reps
    assert [Fraction(a["exact"]) for a in at1["control"]] == [share] * reps
    # every repetition has the same difference d > 0: only the all-plus sign vector reaches it
    assert Fraction(at1["p_beats_unprotected"]["exact"]) == Fraction(1, 2**reps)
    assert Fraction(at1["p_beats_random"]["exact"]) == (Fraction(1, 2**reps) if share < 1 else 1)
    assert at1["beats_random"] == (share < 1)          # 1/32 <= 0.05
    # the means of the repetitions: protected 1, unprotected 0 (at BER 1), the control's share
    assert [Fraction(at1[k]["exact"]) for k in ("protected_mean", "unprotected_mean", "control_mean")] == [1, 0, share]
    assert Fraction(at0["unprotected_mean"]["exact"]) == 1 and Fraction(at0["control_mean"]["exact"]) == 1
    # the smallest p the design can give: 2^-reps
    assert Fraction(at0["min_p"]["exact"]) == Fraction(at1["min_p"]["exact"]) == Fraction(1, 32)
    # at BER 0 nothing flips: every difference is 0, and p = 1
    assert Fraction(at0["p_beats_random"]["exact"]) == 1 and not at0["beats_random"]


@pytest.mark.parametrize("diffs,p", [
    ([1, 2, 3], Fraction(1, 8)),            # only (+, +, +) reaches 6
    ([Fraction(1, 4), Fraction(-1, 4), Fraction(1, 2)], Fraction(3, 8)),   # sums 1, 1/2, 1/2 of 8 reach 1/2
    ([0, 0], Fraction(1)),                  # no difference: every sign vector reaches 0
    ([-1, -1], Fraction(1)),                # a worse arm: every sign vector reaches -2
])
def test_sign_flip_p_by_hand(diffs, p):
    assert sign_flip_p(diffs) == p


@pytest.mark.parametrize("spec,message", [
    ("9:1", "layer 9 is not a weight layer (weight layers: 0, 4, 6"),
    ("4:7", "layer 4 has channels 0..3, not 7"),
    ("top-importance:0", "0 neurons, but the model has 8"),
    ("top-importance:101%", "a share above 100%"),
    ("random:x", "expected a count K or a share P%"),
    ("sideways", "expected L:n,n,..., layer:L, all, top-importance:K"),
])
def test_bad_protect_specs_are_one_line_errors(bars, spec, message):
    r = run_cli("eval", bars / "m.json", bars / "d.npz", "--reps", "2", "--protect", spec)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.output


def test_a_protect_file_names_its_field(bars, tmp_path):
    spec = tmp_path / "p.json"
    spec.write_text(json.dumps({"protect": [{"layer": 4, "channel": [1]}]}))
    r = run_cli("eval", bars / "m.json", bars / "d.npz", "--reps", "2", "--protect", spec)
    assert r.exit_code == 2 and f"{spec}: protect[0]: expected" in r.output
    spec.write_text(json.dumps({"protect": [{"layer": 4, "channels": [1, 3]}]}))
    r = run_cli("eval", bars / "m.json", bars / "d.npz", "--reps", "2", "--protect", spec, "--json", tmp_path / "e.json")
    assert r.exit_code == 0 and json.loads((tmp_path / "e.json").read_text())["protect"]["channels"] == {"4": [1, 3]}


def test_how_few_neurons_carry_half_of_a_layers_importance_by_hand():
    """importance_share: layer 1's Pi (0.2, 0.5, -0.1, 0.3): the positive total is 1.0 (the
    negative Pi does not count); largest first, 0.5 alone is exactly half: 1 neuron (half
    is enough). Layer 3's Pi (0.15, 0.1, 0.1, 0.05, -0.2): total 0.4, half 0.2; 0.15 < 0.2,
    0.15 + 0.1 = 0.25 >= 0.2: 2 neurons. A layer of only negative or zero Pi: 0 neurons, total 0."""
    from refbnn.measure.profile import importance_share

    model = Model.build((3,), 1, [Linear(Weight.from_array(np.ones((4, 3), int))), Threshold((0,) * 4),
                                  Linear(Weight.from_array(np.ones((5, 4), int))), Threshold((0,) * 5),
                                  Linear(Weight.from_array(np.ones((2, 5), int))), Threshold((0, 0)),
                                  Linear(Weight.from_array(np.ones((2, 2), int)))])
    pi = [Fraction(v) for v in ("0.2", "0.5", "-0.1", "0.3", "0.15", "0.1", "0.1", "0.05", "-0.2", "0", "-0.5")]
    share = importance_share(model, pi)
    assert share[1]["neurons"] == 4 and share[1]["carry_half"] == 1 and share[1]["total"]["exact"] == "1/1"
    assert share[3]["carry_half"] == 2 and share[3]["total"]["exact"] == "2/5"
    assert share[5]["carry_half"] == 0 and share[5]["total"]["exact"] == "0/1"


def test_the_random_control_protects_as_many_units_of_the_same_layers():
    """control_protection: per layer as many units as the chosen protection, drawn among that
    layer's units (its rows: 3 here, of 10 inputs each), without repeats, sorted; the same
    seed the same choice, another seed in general another."""
    model = Model.build((10,), 1, [Linear(Weight.from_array(np.ones((3, 10), int))), Threshold((0, 0, 0)),
                                   Linear(Weight.from_array(np.ones((6, 3), int))), Threshold((0,) * 6),
                                   Linear(Weight.from_array(np.ones((2, 6), int)))])
    chosen = Protection({0: (1, 2), 2: (0, 3, 5)})
    picks = [control_protection(model, chosen, seed).channels for seed in range(30)]
    for ch in picks:
        assert sorted(ch) == [0, 2] and len(ch[0]) == 2 and len(ch[2]) == 3
        assert all(0 <= u < 3 for u in ch[0]) and all(0 <= u < 6 for u in ch[2])
        assert all(list(c) == sorted(set(c)) for c in ch.values())
    assert control_protection(model, chosen, 4).channels == picks[4]
    assert len({tuple(sorted(ch.items())) for ch in picks}) > 1


def test_a_protection_of_no_units_is_refused(monkeypatch):
    """protection_comparison's own check (parse_protect refuses such SPECs before it)."""
    from refbnn.measure import profile

    monkeypatch.setattr(profile, "parse_protect", lambda *a: Protection({}))
    model = hand_model()
    cfg = ProfileConfig([("0", 0.0)], 1, ErrorModel(0.0), "batch", [("2", Fraction(2))], [0], protect="x")
    with pytest.raises(ValueError, match="^--protect: the SPEC protects nothing$"):
        protection_comparison(FastEngine(model), np.array([[1]]), np.array([0]), cfg, [1, 0], [])


def test_the_margin_histogram_is_theorem_1_counted_by_hand(monkeypatch):
    """Property: per threshold layer, the count of (input, neuron) pairs tolerating k flips,
    k = floor(|2(h - s) - 1| / 4Z) in the first layer (Z = 3 here) and floor(|2(h - s) - 1|
    / 4) after it, h computed here with a matrix product; the same when the inputs come in
    slices of 7 (the counts add up over the slices)."""
    from refbnn.measure.profile import MAX_MARGIN_BIN, margin_histogram

    rng = np.random.default_rng(8)
    w1, w2 = rng.choice([-1, 1], (6, 40)), rng.choice([-1, 1], (5, 6))
    s1, s2 = rng.integers(-20, 20, 6), rng.integers(-3, 3, 5)
    s1[0] = -300                  # a margin near 2 x 300 = 600 in the first layer: 600 // 12 = 50 >= 16, the last bin
    model = Model.build((40,), 3, [Linear(Weight.from_array(w1 > 0)), Threshold(tuple(int(v) for v in s1)),
                                   Linear(Weight.from_array(w2 > 0)), Threshold(tuple(int(v) for v in s2)),
                                   Linear(Weight.from_array(rng.integers(0, 2, (2, 5))))])
    x = rng.integers(0, 4, (30, 40))
    h1 = x @ w1.T
    a1 = np.where(h1 > s1, 1, -1)
    h2 = a1 @ w2.T
    want = {}
    for t, h, s, z in ((1, h1, s1, 3), (3, h2, s2, 1)):
        k = np.minimum(np.abs(2 * (h - s) - 1) // (4 * z), MAX_MARGIN_BIN)
        want[t] = np.bincount(k.ravel(), minlength=MAX_MARGIN_BIN + 1).tolist()
    engine = FastEngine(model)
    got = margin_histogram(engine, x)
    assert got == want and all(type(v) is int for counts in got.values() for v in counts)   # counts, as JSON ints
    monkeypatch.setattr(engine, "memory_slices", lambda n: [slice(i, min(i + 7, n)) for i in range(0, n, 7)])
    assert margin_histogram(engine, x) == want
    assert want[1][MAX_MARGIN_BIN] >= 30 and sum(want[1][1:]) > 0 and want[1] != np.bincount(np.minimum(np.abs(2 * (h1 - s1) - 1) // 4, 16).ravel(),
                                                          minlength=17).tolist()          # Z matters here


def test_a_model_without_neurons_has_no_profile():
    """clean_pass refuses a model without threshold layers, naming T (eq. 4 averages over
    neurons), as engine.tolerance does."""
    from refbnn.measure.profile import clean_pass

    model = Model.build((3,), 1, [Linear(Weight.from_array(np.ones((2, 3), int)))])
    with pytest.raises(ValueError, match="^the model has no threshold layer, so it has no neurons and T is undefined$"):
        clean_pass(FastEngine(model), np.ones((2, 3), int), [Fraction(1)])


def test_the_profile_document_holds_each_part_under_its_name():
    """profile() called directly: the error model as `eval --json` writes it (the sweep's
    summaries, recomputed here); per threshold layer the margin histogram (its last bin
    meaning ">= 16"), the flip probabilities per neuron with their mean over neurons
    (recomputed here), the importance shares; the hidden units; the protection; the engine.
    Without Algorithm 1: no Pi and no shares."""
    from refbnn.measure.profile import profile

    model = example_model()
    x, y = example_data(24, seed=5)
    em = ErrorModel(0.0, seed=3, batch_size=8, layers=model.weight_indices[:1])
    bers = [("0", 0.0), ("0.02", 0.02), ("0.1", 0.1)]
    cfg = ProfileConfig(bers, 3, em, "batch", [("1", Fraction(1))], [0, 1], protect="top-importance:1", controls=2)
    engine = FastEngine(model)
    doc = profile(engine, x, y, cfg)
    sweep = [s.as_dict() for s in accuracy_sweep(engine, x, y, bers, 3, em)]
    assert doc["bit_errors"] == {"seed": 3, "batch_size": 8, "granularity": "batch", "layers": [model.weight_indices[0]],
                                 "activations": False, "inputs": 24, "results": sweep}
    prof = doc["profile"]
    layers = [str(nl.threshold_index) for nl in model.neuron_layers]
    assert sorted(prof["margins"]) == sorted(prof["importance_share"]) == layers
    assert prof["flip_probability"] and set(prof["flip_probability"]) <= set(layers)   # layers with +-1 inputs
    assert all(m["last_bin_means_at_least"] == 16 for m in prof["margins"].values())
    for entry in prof["flip_probability"].values():
        assert entry["bers"] == ["0", "0.02", "0.1"]
        per = np.array(entry["neurons"])
        assert per.shape[1] == 3 and np.allclose(entry["mean"], per.mean(axis=0))
    assert prof["hidden_units"] == [list(u) for u in hidden_units(model)]
    assert prof["protection"]["spec"] == "top-importance:1" and doc["engine"] == "fast"
    bare = profile(engine, x, y, ProfileConfig(bers, 3, em, "batch", [("1", Fraction(1))], [0], importance=False))
    assert "importance" not in bare and "importance_share" not in bare["profile"] and "protection" not in bare["profile"]


def test_the_profile_reports_its_progress_by_part():
    """profile(progress=...) labels each long part: Algorithm 1, the bit errors, then the
    protected sweep and each control."""
    from refbnn.measure.profile import profile

    model = example_model()
    x, y = example_data(12, seed=1)
    cfg = ProfileConfig([("0", 0.0), ("0.1", 0.1)], 2, ErrorModel(0.0, seed=1, batch_size=4), "batch",
                        [("1", Fraction(1))], [0, 1], protect="top-importance:1", controls=2)
    seen = []
    profile(FastEngine(model), x, y, cfg, lambda label, done, total: seen.append(label))
    assert list(dict.fromkeys(seen)) == ["Algorithm 1", "bit errors", "protected", "control 1/2", "control 2/2"]


def test_the_profile_time_estimate_by_its_arithmetic(monkeypatch):
    """profile_seconds: one untimed call on 1 input (loading compiled kernels), then 256
    inputs timed (a fake clock: 2.56 s, 0.01 s an input); the forward passes: per BER above
    0, per repetition, one sweep plus one protected and one per control, plus 15 for
    Algorithm 1. 4 reps x 2 BERs x (1 + 1 + 3) + 15 = 55 passes x 0.01 s x 1,000 inputs."""
    from refbnn.measure import profile

    class Engine:
        calls = []

        def predictions(self, x):
            self.calls.append(len(x))
    clock = iter([100.0, 102.56])
    monkeypatch.setattr(profile.time, "perf_counter", lambda: next(clock))
    x = np.zeros((1000, 3), int)
    bers = [("0", 0.0), ("0.01", 0.01), ("0.1", 0.1)]
    cfg = ProfileConfig(bers, 4, ErrorModel(0.0), "batch", [], [], protect="top-importance:1", controls=3)
    assert profile.profile_seconds(Engine(), x, cfg) == pytest.approx(550.0)
    assert Engine.calls == [1, 256]
    clock = iter([0.0, 2.56])
    bare = ProfileConfig(bers, 4, ErrorModel(0.0), "batch", [], [], importance=False)
    assert profile.profile_seconds(Engine(), x, bare) == pytest.approx(4 * 2 * 1 * 0.01 * 1000)


def test_the_controls_and_the_tests_use_the_runs_seed(monkeypatch):
    """Past 16 repetitions (17 here, the sampled sign-flip test, at BER 0.5 so that the
    paired differences vary) the p-values are those of sign_flip_p with the error model's seed; control c is drawn with seed + 1 + c; a random
    protection is drawn with the seed too; the smallest attainable p stays 2^-16; and with
    no progress callback nothing is reported."""
    from refbnn.measure import profile as profile_module

    model = hand_model()
    x, y = np.array([[1]]), np.array([0])
    engine = FastEngine(model)
    pi = engine.importance(x, y)
    seeds = []
    control = profile_module.control_protection
    reps = 17
    cfg = ProfileConfig([("0", 0.0), ("0.5", 0.5)], reps, ErrorModel(0.0, seed=9, batch_size=1, layers=(0,)),
                        "batch", [("2", Fraction(2))], [0], protect="random:1", controls=3)
    unprotected = accuracy_sweep(engine, x, y, cfg.bers, reps, cfg.em)
    monkeypatch.setattr(profile_module, "control_protection",
                        lambda m, ch, seed: seeds.append(seed) or control(m, ch, seed))
    result = protection_comparison(engine, x, y, cfg, pi, unprotected)
    assert seeds == [10, 11, 12]
    assert result["channels"] == {str(i): list(c) for i, c in parse_protect("random:1", model, pi, 9).channels.items()}
    assert result["channels"] != {"0": list(parse_protect("random:1", model, pi, 0).channels[0])}   # the seed matters here
    at0, at1 = result["results"]
    prot = [Fraction(a["exact"]) for a in at1["protected"]]
    ctrl = [Fraction(a["exact"]) for a in at1["control"]]
    none = unprotected[1].accuracies
    for key, other in (("p_beats_random", ctrl), ("p_beats_unprotected", none)):
        d = [a - c for a, c in zip(prot, other)]
        assert Fraction(at1[key]["exact"]) == sign_flip_p(d, 9) != sign_flip_p(d, 0), key   # sampled: the seed shows
    assert Fraction(at0["p_beats_unprotected"]["exact"]) == 1          # no flips at BER 0: nothing to beat
    assert Fraction(at1["min_p"]["exact"]) == Fraction(1, 2**16)
