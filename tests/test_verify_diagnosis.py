"""`refbnn verify` part 2 (docs/semantics.md §11): traces and their first divergence, the
registry of alternative conventions and the diagnosis (statistics, the audit, `--self` and
the claims writer: tests/test_verify_statistics.py).

Claims and traces "from another implementation" come from examples/independent_metrics.py,
a float NumPy implementation written apart from refbnn, with one convention switched."""
from __future__ import annotations

import json
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import assert_clean_exit, damaged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import model_cases

from refbnn.claims import write_claims
from refbnn.cli import main
from refbnn.engines.fast import FastEngine
from refbnn.formats.datafile import Dataset, write_data
from refbnn.oracle.checker import Replayed, check_claims
from refbnn.oracle.conventions import REGISTRY, Variant
from refbnn.oracle.diagnose import diagnose_claims
from refbnn.oracle.variants import VariantEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from independent_metrics import Conventions, FloatBNN  # noqa: E402
from verify_setup import claims_of, make_setup, run_verify, trace_of  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory)


# -- the variant engine with the contract is refbnn ---------------------------------------------

@settings(max_examples=60, deadline=None)
@given(model_cases())
def test_variant_engine_with_the_contract_equals_the_fast_engine(case):
    """Property: with every switch at its default, the variant engine's predictions, T and Pi
    (by its full, non-incremental Algorithm 1) equal the fast engine's exactly."""
    bs = [Fraction(1, 2), Fraction(1), Fraction(3, 2), Fraction(4)]
    fast, var = FastEngine(case.model), VariantEngine(case.model, Variant())
    assert var.predictions(case.x) == [int(p) for p in fast.predictions(case.x)]
    assert var.tolerance(case.x, bs) == fast.tolerance(case.x, bs)
    if np.any(np.asarray(fast.predictions(case.x)) == case.y):       # Pi needs A > 0
        assert var.full_importance(case.x, case.y) == fast.importance(case.x, case.y)


# -- no false alarm --------------------------------------------------------------------------

def test_correct_claims_and_trace_from_a_float_implementation_pass(setup):
    """Property: the independent float implementation, with refbnn's conventions, passes every
    claim (within --atol 1e-12) and every trace array, and no diagnosis is made."""
    d, model, x, y, doc = setup
    be = FloatBNN(doc).bit_errors(x, y, 0.05, 3, 7, 32)
    claims = claims_of(d, doc, x, y, Conventions(), be)
    trace = trace_of(d, doc, x, Conventions())
    r, out = run_verify(d, "--claims", claims, "--atol", "1e-12", "--trace", trace)
    assert r.exit_code == 0, r.output
    assert out["failed"] == 0 and "diagnosis" not in out and "diagnosis" not in out["trace"]
    assert all(a["differ"] == 0 for a in out["trace"]["arrays"])
    assert "diagnosis" not in r.output


# -- every convention of the registry is diagnosed ---------------------------------------------

TRACED = {"tie-ge": Conventions(tie_ge=True), "polarity-ignored": Conventions(no_polarity=True),
          "pad-minus-one": Conventions(pad=-1.0), "pad-plus-one": Conventions(pad=1.0),
          "flatten-channels-last": Conventions(flatten_hwc=True), "bits-little-endian": Conventions(bits_little=True)}
CLAIMED = {"pool-threshold-swapped": Conventions(swap_pool=True), "argmax-last": Conventions(argmax_last=True),
           "first-layer-without-z": Conventions(no_z=True), "t-strict": Conventions(t_strict=True),
           "margin-without-half": Conventions(no_half=True), "pooled-mean": Conventions(pooled_mean=True),
           "layers-unweighted": Conventions(layers_unweighted=True), "var-ddof1": Conventions(ddof1=True),
           "pi-absolute": Conventions(pi_absolute=True), "pi-flip-h": Conventions(pi_flip_h=True),
           "first-layer-without-s": Conventions(first_no_s=True), "pi-over-flipped": Conventions(pi_over_flipped=True),
           "conv-pi-one-position": Conventions(pi_one_position=True)}
MASKS = {"keys-batch-first": Conventions(keys_swapped=True), "activations-numbered-first": Conventions(acts_first=True),
         "masks-per-input": Conventions(granularity="input"), "masks-per-pass": Conventions(granularity="pass"),
         "output-layer-clean": Conventions(output_clean=True), "persistent-errors": Conventions(persistent=True)}
SPREAD = {"std-ddof0"}     # the spread over repetitions: tested below with claims that state it


def test_the_registry_is_covered_here():
    """Property: every registry entry has a diagnosis test below (a new entry needs one)."""
    assert set(TRACED) | set(CLAIMED) | set(MASKS) | SPREAD == set(REGISTRY)


def _matched(out_diagnosis) -> list[str]:
    return [" + ".join(m["conventions"]) for m in out_diagnosis["matches"]] if isinstance(out_diagnosis, dict) \
        else [" + ".join(m["conventions"]) for m in out_diagnosis]


@pytest.mark.parametrize("name", sorted(TRACED))
def test_forward_conventions_are_diagnosed_from_a_trace(name, setup):
    """Property: a trace made under a forward convention fails, and the diagnosis names exactly
    that convention (no other single one reproduces it)."""
    d, model, x, y, doc = setup
    trace = trace_of(d, doc, x, TRACED[name])
    r, out = run_verify(d, "--trace", trace)
    assert r.exit_code == 1
    assert _matched(out["trace"]["diagnosis"]) == [name], r.output
    assert REGISTRY[name].theirs in r.output


@pytest.mark.parametrize("name", sorted(CLAIMED))
def test_conventions_are_diagnosed_from_claims(name, setup):
    """Property: claims made under a convention, as a user writes them (with accuracies under
    bit errors, activations flipped too), fail, and the diagnosis names that convention; any
    other match is one that gives the very same numbers on this model (at most one)."""
    d, model, x, y, doc = setup
    be = FloatBNN(doc, CLAIMED[name]).bit_errors(x, y, 0.08, 3, 11, 32, activations=True)
    claims = claims_of(d, doc, x, y, CLAIMED[name], be)
    r, out = run_verify(d, "--claims", claims, "--atol", "1e-12")
    assert r.exit_code == 1 and out["failed"] > 0
    matched = _matched(out["diagnosis"])
    assert name in matched, r.output
    assert len(matched) <= 2, matched
    # a pair is never reported beside one of its members: the member alone explains it
    names = [set(m.split(" + ")) for m in matched]
    assert not any(a < b for a in names for b in names), matched


@pytest.mark.parametrize("name", sorted(MASKS))
def test_mask_conventions_are_diagnosed_from_bit_error_claims(name, setup):
    """Property: accuracies under bit errors drawn with masks keyed another way fail the exact
    replay, and the diagnosis names that keying."""
    d, model, x, y, doc = setup
    be = FloatBNN(doc, MASKS[name]).bit_errors(x, y, 0.08, 3, 11, 32, activations=True)
    write_claims(d / "be.json", bit_errors=be)
    r, out = run_verify(d, "--claims", d / "be.json", "--atol", "1e-12")
    assert r.exit_code == 1
    assert _matched(out["diagnosis"]) == [name], r.output


FORWARD = {name: conv for name, conv in {**TRACED, **CLAIMED}.items() if REGISTRY[name].variant.forward
           or REGISTRY[name].variant.argmax_last}


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward_conventions_are_diagnosed_from_claims_with_bit_errors(name, setup):
    """Property: an implementation with one forward mistake, writing the usual claims file
    (accuracy, predictions, T, Pi, VAR(Pi) and accuracies under refbnn's keyed masks, with
    activations flipped too), is told that mistake: the variant engine replays the masks
    under each forward convention."""
    d, model, x, y, doc = setup
    be = FloatBNN(doc, FORWARD[name]).bit_errors(x, y, 0.08, 3, 11, 32, activations=True)
    claims = claims_of(d, doc, x, y, FORWARD[name], be, name="fwd.json")
    r, out = run_verify(d, "--claims", claims, "--atol", "1e-12")
    assert r.exit_code == 1 and any(c["quantity"].startswith("bit_errors") for c in out["checks"])
    matched = _matched(out["diagnosis"])
    assert name in matched, r.output
    assert len(matched) <= 2, matched


def test_where_nothing_reproduces_everything_the_closest_alternative_is_named(setup):
    """Property: claims made under the tie rule h >= s, with a VAR(Pi) that no convention
    gives, are reproduced by nothing; the diagnosis names the tie rule as the closest
    explanation, with the claims it reproduces and VAR(Pi) as still differing."""
    d, model, x, y, doc = setup
    claims = claims_of(d, doc, x, y, TRACED["tie-ge"], name="two.json")
    doc_claims = json.loads(claims.read_text())
    doc_claims["var_importance"] = 0.123456
    claims.write_text(json.dumps(doc_claims))
    r, out = run_verify(d, "--claims", claims, "--atol", "1e-12")
    assert r.exit_code == 1 and out["diagnosis"]["matches"] == []
    closest = out["diagnosis"]["closest"]
    assert closest["conventions"] == ["tie-ge"] and closest["failing"] == ["var_importance"]
    assert "accuracy" in closest["passing"] or "predictions" in closest["passing"]
    assert "diagnosis: closest: if a threshold tie (h = s) gives +1, your" in r.output
    assert "your VAR(Pi) still differ" in r.output


def test_the_spread_with_the_other_ddof_is_diagnosed(setup):
    """Property: accuracies under refbnn's keyed masks with their std and 95% interval
    computed with ddof = 0 fail only those two numbers, and the diagnosis names the ddof."""
    d, model, x, y, doc = setup
    be = FloatBNN(doc).bit_errors(x, y, 0.08, 4, 11, 32)
    accs = be["results"][0]["accuracies"]
    std = float(np.std(accs, ddof=0))
    half = 3.182 * std / np.sqrt(4)           # t_{0.975, 3} = 3.182
    be["results"][0].update(std=std, ci95=[float(np.mean(accs) - half), float(np.mean(accs) + half)])
    write_claims(d / "sd.json", bit_errors=be)
    r, out = run_verify(d, "--claims", d / "sd.json", "--atol", "1e-12")
    assert r.exit_code == 1
    assert {c["quantity"] for c in out["checks"] if not c["pass"]} == {
        "bit_errors.results[0].std", "bit_errors.results[0].ci95[0]", "bit_errors.results[0].ci95[1]"}
    assert _matched(out["diagnosis"]) == ["std-ddof0"], r.output


def test_failure_patterns_and_readable_output(setup):
    """Property: a failing run prints the failures (a few per quantity, with a count of the
    rest) and one-line patterns, not every passing row; --verbose lists everything."""
    d, model, x, y, doc = setup
    claims = claims_of(d, doc, x, y, Conventions(layers_unweighted=True))
    r, out = run_verify(d, "--claims", claims, "--atol", "1e-12", "--no-diagnose")
    assert "per-layer T passes, whole-model T fails: the layers are averaged differently" in r.output
    assert len(r.output.splitlines()) < 15 and "importance[0]" not in r.output
    claims = claims_of(d, doc, x, y, Conventions(pi_absolute=True))
    r, _ = run_verify(d, "--claims", claims, "--atol", "1e-12", "--no-diagnose")
    assert "more failures" in r.output and "only Pi fails" in r.output
    r, _ = run_verify(d, "--claims", claims, "--atol", "1e-12", "--no-diagnose", "--verbose")
    assert "accuracy" in r.output and len(r.output.splitlines()) > 15


# -- traces ------------------------------------------------------------------------------------

def test_first_divergence_names_layer_input_channel_position(setup):
    """Property: the first divergence is the earliest array in layer order with the input,
    channel and position of its first differing entry, and later arrays are not compared
    unless --trace-mode independent; independent mode, fed the other side's own a1, finds
    the later layers equal (the tie bug lives in layer 1 only)."""
    d, model, x, y, doc = setup
    trace = trace_of(d, doc, x, Conventions(tie_ge=True))
    r, out = run_verify(d, "--trace", trace, "--no-diagnose")
    arrays = {a["array"]: a for a in out["trace"]["arrays"]}
    assert arrays["h1"]["differ"] == 0 and arrays["a1"]["differ"] > 0
    first = arrays["a1"]["first"]
    assert set(first) == {"input", "channel", "position", "expected", "got"}
    assert (first["expected"], first["got"]) == (-1, 1)
    assert not arrays["h5"]["compared"]
    assert "all" in arrays["a1"]["patterns"][0] and "h = s" in arrays["a1"]["patterns"][0]
    r, out = run_verify(d, "--trace", trace, "--trace-mode", "independent", "--no-diagnose")
    arrays = {a["array"]: a for a in out["trace"]["arrays"]}
    assert arrays["h5"]["compared"] and arrays["h5"]["differ"] == 0


@pytest.mark.parametrize("arrays, message", [
    ({"h9": np.zeros((240, 3))}, "h9: unknown array"),
    ({"h1": np.zeros((240, 3, 6, 5))}, "h1: shape [240, 3, 6, 5], expected [240, 3, 6, 6]"),
    ({"h1": np.full((240, 3, 6, 6), 0.5)}, "h1: expected integers"),
    ({"scores": np.full((240, 3), np.nan)}, "scores: holds NaN"),
    ({"a1": np.zeros((240, 3, 6, 6)) - (np.arange(3)[None, :, None, None] - 1)}, "a1: holds -1, 0 and +1"),
    ({}, "it must cover at least one layer"),
    ({"predictions": np.full(240, 7)}, "predictions: values outside 0..2"),
])
def test_malformed_traces_exit_2_naming_the_array(setup, arrays, message):
    """Property: a malformed trace exits 2 with one line naming the file and the array."""
    d, *_ = setup
    np.savez(d / "bad.npz", **arrays)
    r, _ = run_verify(d, "--trace", d / "bad.npz")
    assert r.exit_code == 2 and message in r.output and "bad.npz" in r.output


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_traces_are_bad_input_not_crashes(setup, tmp_path, data):
    """Property: any damage to a valid trace file gives exit 0, 1 or 2 with one line, never a
    traceback."""
    d, model, x, y, doc = setup
    raw_path = trace_of(d, doc, x, Conventions(), name="fuzz.npz")
    (tmp_path / "t.npz").write_bytes(damaged(raw_path.read_bytes(), data))
    r = CliRunner().invoke(main, ["verify", str(d / "m.json"), str(d / "d.npz"), "--trace", str(tmp_path / "t.npz"),
                                  "--no-diagnose"])
    assert_clean_exit(r)


def test_importance_claims_on_zero_accuracy_data_exit_2(setup, tmp_path):
    """Property: Pi is undefined at accuracy 0 (docs/semantics.md §5), so importance claims on
    such data exit 2 naming the data file."""
    d, model, x, y, _ = setup
    wrong = (np.asarray(FastEngine(model).predictions(x)) + 1) % 3          # every label wrong
    write_data(tmp_path / "zero.npz", x, wrong)
    write_claims(tmp_path / "c.json", var_importance=0.0)
    r = CliRunner().invoke(main, ["verify", str(d / "m.json"), str(tmp_path / "zero.npz"),
                                  "--claims", str(tmp_path / "c.json")])
    assert r.exit_code == 2 and "zero.npz" in r.output and "accuracy A is 0" in r.output


def test_a_check_that_stops_at_its_first_failure_replays_no_repetition_past_it(setup):
    """The diagnosis asks only whether every claim passes: with first_failure, a wrong
    repetition 0 ends the check, and the 49 repetitions after it are never replayed."""
    d, model, x, y, doc = setup
    calls = []

    def replay(em, reps):
        return Replayed(reps, lambda r: calls.append(r) or Fraction(-1))   # an impossible accuracy

    claims = {"bit_errors": {"results": [{"ber": "0.1", "accuracies": [0.5] * 50}]}}
    checks = check_claims(FastEngine(model), model, Dataset(x, y), claims, "c.json", 1e-9,
                          bit_error_accuracies=replay, first_failure=True)
    assert calls == [0] and [c["pass"] for c in checks] == [False]
    calls.clear()
    full = check_claims(FastEngine(model), model, Dataset(x, y), claims, "c.json", 1e-9, bit_error_accuracies=replay)
    assert calls == list(range(50)) and len(full) == 50 and not any(c["pass"] for c in full)


def test_a_convention_whose_pi_cannot_be_recomputed_is_named_for_the_rest(setup):
    """Property: when Algorithm 1 under an alternative would exceed the budget, the diagnosis
    still names the alternative that reproduces every other failing claim, and says that
    Pi and VAR(Pi) were not recomputed under it, and why."""
    d, model, x, y, doc = setup
    claims = json.loads(claims_of(d, doc, x, y, TRACED["tie-ge"], name="budget.json").read_text())
    data = Dataset(x, y)
    checks = check_claims(FastEngine(model), model, data, claims, "c.json", 1e-12)
    diagnosis = diagnose_claims(model, data, claims, "c.json", 1e-12, checks, budget=0)
    tie = [m for m in diagnosis.matches if m.names == ("tie-ge",)]
    assert tie and "Pi and VAR(Pi) were not recomputed under it: Algorithm 1 without the incremental engine" \
        in tie[0].sentence(diagnosis.what)
    assert tie[0].sentence(diagnosis.what).startswith("your accuracy, predictions, T")


@pytest.mark.parametrize("first,second", [("tie-ge", "var-ddof1"), ("first-layer-without-s", "pi-over-flipped"),
                                          ("bits-little-endian", "output-layer-clean")])
def test_two_mistakes_together_are_diagnosed_as_the_pair(first, second, setup):
    """Property: claims (with bit errors) made under two conventions at once are reproduced by
    that pair, and by neither member alone."""
    d, model, x, y, doc = setup
    both = Conventions(**{**vars(ALL_CONVENTIONS[first]), **{k: v for k, v in vars(ALL_CONVENTIONS[second]).items()
                                                            if v != getattr(Conventions(), k)}})
    be = FloatBNN(doc, both).bit_errors(x, y, 0.08, 3, 11, 32, activations=True)
    claims = claims_of(d, doc, x, y, both, be, name="pair.json")
    r, out = run_verify(d, "--claims", claims, "--atol", "1e-12")
    matched = _matched(out["diagnosis"])
    assert r.exit_code == 1 and f"{first} + {second}" in matched, r.output
    assert first not in matched and second not in matched


ALL_CONVENTIONS = {**TRACED, **CLAIMED, **MASKS}
