"""`refbnn verify` part 3 (docs/semantics.md §11): statistical bit error claims, the
injector audit, `--self`, and the claims writer."""
from __future__ import annotations

import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from conftest import enumerated_expected_accuracy

from refbnn.biterrors.masks import ErrorModel, write_masks
from refbnn.claims import write_claims, write_trace
from refbnn.engines.fast import FastEngine
from refbnn.formats.datafile import Dataset
from refbnn.formats.files import InputError
from refbnn.formats.maskfile import MaskSet, read_masks
from refbnn.oracle.checker import check_claims
from refbnn.oracle.statistics import audit_masks, chi2_two_sided, judge_accuracies, t_two_sided
from refbnn.semantics.model import Linear, Model, Threshold, Weight

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
from verify_setup import make_setup, run_verify  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory)


# -- statistics --------------------------------------------------------------------------------

def test_distribution_functions_at_table_values():
    """Property: the t and chi-square tails agree with printed tables: t = 2.228 at 10 df is
    the two-sided 5% point; chi-square 3.841 at 1 df the upper 5% point (two-sided 10%)."""
    assert abs(t_two_sided(2.228, 10) - 0.05) < 1e-4
    assert abs(t_two_sided(0.0, 7) - 1.0) < 1e-12
    assert abs(chi2_two_sided(3.841, 1) - 0.10) < 1e-3


def _accuracies(engine, x, y, em, reps, draw):
    """Accuracy per repetition with masks drawn by `draw(rng, shape)`, a fresh pattern per batch."""
    out = []
    for r in range(reps):
        correct = 0
        for start in range(0, len(x), em.batch_size):
            masks = [draw(r, start, engine.model.layers[i].weight.shape) for i in engine.model.weight_indices]
            correct += int((np.asarray(engine.with_flips(masks).predictions(x[start:start + em.batch_size]))
                            == y[start:start + em.batch_size]).sum())
        out.append(correct / len(x))
    return out


def test_honest_injector_passes_and_per_byte_injector_fails(setup):
    """Property: accuracies from another generator drawing the same bit error model pass
    Welch's test at alpha 0.01 in at least 95% of 40 seeded trials; an injector that flips
    per byte of 8 packed weights instead of per bit (an effective BER of p/8) fails in
    at least 95% of them."""
    _, model, x, y, _ = setup
    engine = FastEngine(model)
    em = ErrorModel(0.1, 0, 60)
    honest_pass = bytes_fail = 0
    for seed in range(40):
        rng = np.random.RandomState(seed)      # another generator than refbnn's PCG64
        honest = _accuracies(engine, x, y, em, 10, lambda r, j, shape: rng.random_sample(shape) < em.p)

        def per_byte(r, j, shape):
            flat = np.zeros(int(np.prod(shape)), dtype=bool)
            for b in np.flatnonzero(rng.random_sample(-(-flat.size // 8)) < em.p):
                flat[min(flat.size - 1, 8 * b + rng.randint(8))] = True
            return flat.reshape(shape)
        wrong = _accuracies(engine, x, y, em, 10, per_byte)
        honest_pass += judge_accuracies(engine, x, y, em, honest, 0.01)["pass"]
        bytes_fail += not judge_accuracies(engine, x, y, em, wrong, 0.01)["pass"]
    assert honest_pass >= 38 and bytes_fail >= 38, (honest_pass, bytes_fail)


def test_statistical_claims_through_verify(setup):
    """Property: bit_errors claims with "rng": "other" are judged statistically: honest ones
    pass with their p-value shown, ones at a quarter of the BER fail."""
    d, model, x, y, doc = setup
    engine = FastEngine(model)
    rng = np.random.RandomState(5)
    em = ErrorModel(0.1, 0, 60)
    for p, ok in ((0.1, True), (0.025, False)):
        accs = _accuracies(engine, x, y, em, 12, lambda r, j, shape: rng.random_sample(shape) < p)
        write_claims(d / "st.json", bit_errors={"rng": "other", "batch_size": 60,
                                                "results": [{"ber": "0.1", "accuracies": accs}]})
        r, out = run_verify(d, "--claims", d / "st.json", "--no-diagnose")
        assert (r.exit_code == 0) == ok, r.output
        assert "Welch t-test" in r.output and "p = " in r.output


def test_exact_expected_accuracy_on_a_tiny_model():
    """Property: for a model with 8 targeted bits the statistical test uses the exact expected
    accuracy (every flip pattern enumerated) and says so."""
    model = Model.build((2,), 1, [Linear(Weight.from_array([[1, 0], [0, 1]])), Threshold((0, 0)),
                                  Linear(Weight.from_array([[1, 1], [0, 0]]))])
    x = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]] * 5)
    y = np.asarray(FastEngine(model).predictions(x))
    v = judge_accuracies(FastEngine(model), x, y, ErrorModel(0.1, 0, 4), [0.9, 0.85, 0.95, 0.9], 0.01)
    assert v["test"].startswith("one-sample t-test against the exact expected accuracy")
    assert v["exact_mean"] == float(enumerated_expected_accuracy(model, x, y, Fraction(0.1)))


def _mask_set(model, arrays, batch):
    return MaskSet({"batch_size": np.array(batch), **arrays}, model, "masks")


def test_audit_passes_honest_masks_and_catches_broken_injectors(setup, tmp_path):
    """Property: refbnn's own masks pass every audit check; masks drawn per byte fail the flip
    count, one mask reused for every batch fails the spread, and flips in an untargeted
    tensor fail."""
    _, model, x, y, _ = setup
    em = ErrorModel(0.05, 3, 24, layers=(0, 4))
    write_masks(tmp_path / "k.npz", model, em, 4, len(x))
    honest = read_masks(tmp_path / "k.npz", model)
    checks = audit_masks(honest, model, em, 0.01)
    assert checks and all(c["pass"] for c in checks), [c for c in checks if not c["pass"]]
    rng = np.random.default_rng(0)
    shape0, shape4 = model.layers[0].weight.shape, model.layers[4].weight.shape
    r, j = honest.reps, honest.n_batches
    per_byte = {"w0": rng.random((r, j) + shape0) < em.p / 8, "w1": rng.random((r, j) + shape4) < em.p / 8}
    bad = audit_masks(_mask_set(model, per_byte, 24), model, em, 0.01)
    assert not next(c for c in bad if c["check"] == "w1: flip count")["pass"]
    one = rng.random((1, 1) + shape4) < em.p
    reused = {"w0": honest.weights[0], "w1": np.broadcast_to(one, (r, j) + shape4).copy()}
    bad = audit_masks(_mask_set(model, reused, 24), model, em, 0.01)
    assert not next(c for c in bad if c["check"] == "w1: spread")["pass"]
    leak = {"w0": honest.weights[0], "w1": honest.weights[1],
            "w2": rng.random((r, j) + model.layers[6].weight.shape) < 0.2}
    bad = audit_masks(_mask_set(model, leak, 24), model, em, 0.01)
    assert not next(c for c in bad if c["check"] == "w2: untargeted")["pass"]


def test_audit_through_verify(setup, tmp_path):
    """Property: `verify --audit` on refbnn's own masks exits 0 and shows p-values; --audit
    without --ber is a usage error (exit 2)."""
    d, model, x, y, _ = setup
    em = ErrorModel(0.05, 3, 24)
    write_masks(d / "k.npz", model, em, 3, len(x))
    r, out = run_verify(d, "--audit", d / "k.npz", "--ber", "0.05")
    assert r.exit_code == 0 and "p-value" in r.output and out["audit"]["checks"]
    r, _ = run_verify(d, "--audit", d / "k.npz")
    assert r.exit_code == 2 and "--ber" in r.output


# -- --self --------------------------------------------------------------------------------------

def test_self_checks_pass_and_a_broken_engine_fails(setup, monkeypatch):
    """Property: `verify --self` passes every metamorphic check on a valid model (exit 0, a
    table of checks); with an interpreter that disagrees with the fast engine it exits 1."""
    d, *_ = setup
    r, out = run_verify(d, "--self")
    assert r.exit_code == 0, r.output
    names = [c["check"] for c in out["self"]]
    assert any("BER 0" in n for n in names) and any("permuting the neurons" in n for n in names)
    assert any("negates its h" in n for n in names) and any("replay" in n for n in names)
    import refbnn.oracle.selfcheck as sc

    class Broken(sc.Interpreter):
        def predictions(self, xs, flip=None, act_masks=None):
            return [0 for _ in xs]
    monkeypatch.setattr(sc, "Interpreter", Broken)
    r, out = run_verify(d, "--self")
    assert r.exit_code == 1
    assert not next(c for c in out["self"] if "interpreter" in c["check"])["pass"]


# -- the claims writer ----------------------------------------------------------------------------

def test_claims_writer_round_trip_and_refusals(setup):
    """Property: refbnn.claims writes what verify reads (Fractions exactly, NumPy numbers as
    JSON numbers), and refuses NaN, booleans, unknown layer keys and empty claims before
    writing anything."""
    d, model, x, y, doc = setup
    engine = FastEngine(model)
    tol = engine.tolerance(x, [Fraction(2)])
    path = d / "w.json"
    write_claims(path, T={2: tol.overall[Fraction(2)]}, predictions=np.asarray(engine.predictions(x)),
                 accuracy=np.float64(np.mean(np.asarray(engine.predictions(x)) == y)))
    r, out = run_verify(d, "--claims", path, "--atol", "1e-12")
    assert r.exit_code == 0 and out["passed"] == len(x) + 2
    for bad, message in ((dict(accuracy=float("nan")), "NaN"), (dict(accuracy=True), "boolean"),
                         (dict(layers=[{"Tee": {}}]), "layers[0].Tee: unknown key"), ({}, "nothing to write")):
        (d / "x.json").unlink(missing_ok=True)
        with pytest.raises(InputError, match=re.escape(message)):
            write_claims(d / "x.json", **bad)
        assert not (d / "x.json").exists()
    with pytest.raises(InputError, match="a1: expected"):
        write_trace(d / "t.npz", a={1: np.full((3, 2), 2)})
    # the reader's rules, applied by the writer: sign(0) = 0 gets the reader's hint
    with pytest.raises(InputError, match=re.escape("a1: holds -1, 0 and +1")):
        write_trace(d / "t.npz", a={1: np.array([[-1, 0], [1, 1]])})
    assert not (d / "t.npz").exists()


def test_claims_built_in_python_meet_the_same_layout_as_claims_files(setup):
    """check_claims applies the claims layout itself (not only read_claims): an unknown key,
    a T-bar without the tuple T it averages, or a BER given as a number are refused."""
    d, model, x, y, doc = setup
    engine = FastEngine(model)
    data = Dataset(x, y)
    for bad, message in (({"T_bar": 0.5, "layers": [{"T": {"2": 0.5}}]}, "T_bar: needs the claimed T"),
                         ({"acuracy": 0.5}, "acuracy: unknown claim"),
                         ({"bit_errors": {"results": [{"ber": 0.1, "accuracies": [0.5]}]}},
                          "bit_errors.results[0].ber: expected the BER as a string")):
        with pytest.raises(InputError, match=re.escape(message)):
            check_claims(engine, model, data, bad, "c.json", 1e-9)


def test_readme_claims_snippet_writes_what_verify_accepts(setup, monkeypatch):
    """Property: the refbnn.claims snippet of the guide to checking an implementation, run
    with refbnn's own numbers standing in for "your arrays", writes a claims file and a
    trace that verify passes."""
    import textwrap

    d, model, x, y, _ = setup
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guides" / "check.md").read_text()
    section = guide.split("## Claims, traces and the diagnosis", 1)[1]
    snippet = textwrap.dedent(re.search(r"```python\n(.*?)```", section, re.S).group(1))
    engine = FastEngine(model)
    outs = engine.outputs(x)
    tol = engine.tolerance(x, [Fraction(2), Fraction(4)])
    pi = engine.importance(x, y)
    preds = np.asarray(engine.predictions(x))
    stand_ins = {"acc": np.mean(preds == y), "t2": tol.overall[Fraction(2)], "t4": tol.overall[Fraction(4)],
                 "pi": pi, "var_pi": float(np.var([float(p) for p in pi])), "preds": preds,
                 "h1": outs[0], "a1": outs[1], "h5": outs[4], "a5": outs[5], "scores": outs[-1]}
    monkeypatch.chdir(d)
    exec(compile(snippet, "check.md", "exec"), stand_ins)
    r, out = run_verify(d, "--claims", d / "claims.json", "--trace", d / "trace.npz", "--atol", "1e-9")
    assert r.exit_code == 0, r.output
