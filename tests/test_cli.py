"""The command line through click's CliRunner: exit codes 0/1/2, JSON layout, messages."""
import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import run_cli

from refbnn.cli import main
from refbnn.formats.datafile import write_data
from refbnn.formats.modelfile import write_model
from refbnn.semantics.model import Linear, Model, Weight


@pytest.fixture
def example(tmp_path):
    result = CliRunner().invoke(main, ["example-model", str(tmp_path), "--inputs", "40"])
    assert result.exit_code == 0, result.output
    return tmp_path / "example.json", tmp_path / "example.npz"


run = run_cli


def test_inspect_lists_layers_and_neurons(example):
    result = run("inspect", example[0])
    assert result.exit_code == 0
    assert "Z = 4; 8 neurons, 2 classes, 300 weight bits" in result.output   # 36 + 256 + 8 bits
    assert "eq. 2 (/Z); 1 with polarity -1" in result.output


def test_metrics_json_layout(example, tmp_path):
    out = tmp_path / "m.json"
    result = run("metrics", *example, "--b", "2,0.5,1/2", "--importance", "--json", out)
    assert result.exit_code == 0, result.output
    r = json.loads(out.read_text())
    assert {"accuracy", "T", "T_bar", "layers", "importance", "var_importance"} <= set(r)
    assert list(r["T"]) == ["2", "0.5", "1/2"]            # keys written as given
    assert r["T"]["0.5"] == r["T"]["1/2"]                 # the same b, read exactly
    for q in [r["accuracy"], r["T_bar"], r["var_importance"], *r["T"].values(), *r["importance"]]:
        p, _, d = q["exact"].partition("/")
        assert d and q["value"] == float(Fraction(int(p), int(d)))
    assert len(r["importance"]) == r["neurons"] == 8
    assert [layer["neurons"] for layer in r["layers"]] == [4, 4]
    # T-bar is the mean of the tuple's entries
    assert Fraction(r["T_bar"]["exact"]) == sum(Fraction(v["exact"]) for v in r["T"].values()) / 3


def test_both_engines_write_the_same_numbers(example, tmp_path):
    outs = []
    for engine in ("fast", "reference"):
        out = tmp_path / f"{engine}.json"
        assert run("metrics", *example, "--importance", "--engine", engine, "--json", out).exit_code == 0
        r = json.loads(out.read_text())
        assert r.pop("engine") == engine
        outs.append(r)
    assert outs[0] == outs[1]


def test_bad_model_exits_2_names_the_field_and_writes_nothing(example, tmp_path):
    doc = json.loads(example[0].read_text())
    doc["layers"][1]["polarity"][0] = 2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    out = tmp_path / "never.json"
    result = run("metrics", bad, example[1], "--json", out)
    assert result.exit_code == 2
    assert result.output.strip() == f"refbnn: error: {bad}: layers[1].polarity[0]: must be 1 or -1, got 2"
    assert not out.exists()


@pytest.mark.parametrize("b,message", [("2,x", "'x' is not a rational"), ("-1", "negative"), ("1/0", "not a rational")])
def test_bad_b_exits_2(example, b, message):
    result = run("metrics", *example, "--b", b)
    assert result.exit_code == 2 and "--b: " in result.output and message in result.output


def test_zero_accuracy_with_importance_exits_2_naming_the_data(example, tmp_path):
    # Give every input the label the model does not predict: A = 0, Pi undefined.
    preds_file = tmp_path / "p.json"
    assert run("metrics", *example, "--json", preds_file).exit_code == 0
    from refbnn.engines.fast import FastEngine
    from refbnn.formats.datafile import read_data
    from refbnn.formats.modelfile import read_model
    model = read_model(example[0])
    data = read_data(example[1], model)
    wrong = tmp_path / "wrong.npz"
    write_data(wrong, data.x, 1 - FastEngine(model).predictions(data.x))
    result = run("metrics", example[0], wrong, "--importance")
    assert result.exit_code == 2 and f"{wrong}: accuracy A is 0" in result.output
    assert run("metrics", example[0], wrong).exit_code == 0   # T alone is still defined


def test_verify_passes_its_own_metrics(example, tmp_path):
    claims = tmp_path / "claims.json"
    assert run("metrics", *example, "--importance", "--json", claims).exit_code == 0
    result = run("verify", *example, "--claims", claims)
    assert result.exit_code == 0, result.output
    assert "0 fail" in result.output


def test_verify_fails_a_wrong_claim_with_exit_1(example, tmp_path):
    claims = tmp_path / "claims.json"
    assert run("metrics", *example, "--json", claims).exit_code == 0
    doc = json.loads(claims.read_text())
    true_t2 = Fraction(doc["T"]["2"]["exact"])
    doc["T"]["2"] = {"exact": str(true_t2 + Fraction(1, 10**9))}     # off by 1e-9: exact claims must match
    doc["T_bar"] = doc["T_bar"]["value"]                            # a float claim within atol passes
    claims.write_text(json.dumps(doc))
    report = tmp_path / "report.json"
    result = run("verify", *example, "--claims", claims, "--json", report)
    assert result.exit_code == 1
    checks = {c["quantity"]: c["pass"] for c in json.loads(report.read_text())["checks"]}
    assert checks["T[2]"] is False and checks["T_bar"] is True and checks["T[4]"] is True


def test_verify_checks_predictions(example, tmp_path):
    from refbnn.engines.interpreter import Interpreter
    from refbnn.formats.datafile import read_data
    from refbnn.formats.modelfile import read_model
    model = read_model(example[0])
    preds = Interpreter(model).predictions(read_data(example[1], model).x)
    claims = tmp_path / "c.json"
    claims.write_text(json.dumps({"predictions": preds}))
    assert run("verify", *example, "--claims", claims).exit_code == 0
    preds[3] = 1 - preds[3]
    claims.write_text(json.dumps({"predictions": preds}))
    result = run("verify", *example, "--claims", claims)
    assert result.exit_code == 1 and "predictions[3]" in result.output


def test_verify_rejects_unknown_claims_with_exit_2(example, tmp_path):
    claims = tmp_path / "c.json"
    claims.write_text(json.dumps({"acuracy": {"exact": "1/1"}}))
    result = run("verify", *example, "--claims", claims)
    assert result.exit_code == 2 and "acuracy: unknown claim" in result.output


def test_missing_data_file_exits_2(example, tmp_path):
    result = run("metrics", example[0], tmp_path / "nope.npz")
    assert result.exit_code == 2 and "nope.npz: cannot read" in result.output


def test_verify_refuses_an_unknown_key_inside_a_layer_entry(example, tmp_path):
    claims = tmp_path / "c.json"
    assert run("metrics", *example, "--json", claims).exit_code == 0
    doc = json.loads(claims.read_text())
    doc["layers"][0]["T_bra"] = doc["layers"][0].pop("T_bar")
    claims.write_text(json.dumps(doc))
    result = run("verify", *example, "--claims", claims)
    assert result.exit_code == 2 and "layers[0].T_bra: unknown key" in result.output


def test_verify_checks_the_descriptive_fields_of_each_layer(example, tmp_path):
    # The bars model's first threshold layer sits after conv -> threshold: 4 channels of
    # 8x8 positions (padding 1 keeps 8x8); a pooling-order bug would claim 16 positions.
    claims = tmp_path / "c.json"
    assert run("metrics", *example, "--json", claims).exit_code == 0
    doc = json.loads(claims.read_text())
    assert doc["layers"][0]["positions"] == 64
    doc["layers"][0]["positions"] = 16
    claims.write_text(json.dumps(doc))
    result = run("verify", *example, "--claims", claims)
    assert result.exit_code == 1 and "layers[0].positions" in result.output


@pytest.mark.parametrize("args,message", [
    (["--b", "1e999999999"], "--b: '1e999999999' is not a rational number"),
    (["--b", "²"], "--b: '²' is not a rational number"),
    (["--b", "2" * 5000], "is not a rational number"),
    (["--json", "/nonexistent-dir/m.json"], "--json: the directory /nonexistent-dir does not exist"),
])
def test_bad_options_give_one_bounded_line_and_exit_2(example, args, message):
    result = run("metrics", *example, *args)
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1 and len(result.output) <= 420


def test_a_click_usage_error_is_one_line_with_exit_2(example):
    result = run("certify", *example, "--seed", "-1")
    assert result.exit_code == 2 and result.output.startswith("refbnn: error: ")
    assert "'--seed'" in result.output and len(result.output.strip().splitlines()) == 1


def test_an_unexpected_error_exits_3_in_one_line(example, monkeypatch):
    import refbnn.cli.measure as measure

    def broken(*args, **kwargs):
        raise TypeError("something refbnn did not expect")

    monkeypatch.setattr(measure, "metrics", broken)
    result = run("metrics", *example)
    assert result.exit_code == 3
    assert result.output.startswith("refbnn: internal error: TypeError: something refbnn did not expect")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    debug = CliRunner().invoke(main, ["--debug", "metrics", *map(str, example)])
    assert debug.exit_code == 3 and "Traceback" in debug.output


def test_a_model_without_neurons_is_refused_by_metrics_and_verify_naming_the_file(tmp_path):
    model = Model.build((3,), 1, [Linear(Weight.from_array(np.array([[1, 0, 1], [0, 1, 1]], dtype=bool)))])
    write_model(tmp_path / "m.json", model)
    write_data(tmp_path / "d.npz", np.array([[1, 0, -1], [0, 1, 1]]), np.array([0, 1]))
    (tmp_path / "c.json").write_text(json.dumps({"T": {"2": 0.5}}))
    metrics = run("metrics", tmp_path / "m.json", tmp_path / "d.npz")
    assert metrics.exit_code == 2
    assert f"{tmp_path / 'm.json'}: layers: the model has no threshold layer, so it has no neurons and T is " \
           "undefined" in metrics.output
    verify = run("verify", tmp_path / "m.json", tmp_path / "d.npz", "--claims", tmp_path / "c.json")
    assert verify.exit_code == 2 and f"{tmp_path / 'c.json'}: T: the model has no threshold layer" in verify.output


def test_the_file_writing_commands_write_a_json_summary_too(tmp_path):
    """The contract: every command takes --json. example-model names its files, masks the
    arrays it wrote (w0..w2 of the bars model's three weight layers, a3, a4 with
    --activations), train its history, whose last test accuracy is refbnn metrics' accuracy
    on the exported model (the trainer evaluates through the export)."""
    r = run("example-model", tmp_path, "--inputs", "12", "--json", tmp_path / "ex.json")
    ex = json.loads((tmp_path / "ex.json").read_text())
    assert r.exit_code == 0 and ex["inputs"] == 12 and ex["model"] == str(tmp_path / "example.json")
    r = run("masks", ex["model"], "--ber", "0.1", "--inputs", "12", "--batch-size", "5", "--activations",
            "-o", tmp_path / "k.npz", "--json", tmp_path / "k.json")
    k = json.loads((tmp_path / "k.json").read_text())
    assert r.exit_code == 0 and k["arrays"] == ["w0", "w1", "w2", "a3", "a4"] and k["batches"] == 3   # ceil(12/5)
    with np.load(tmp_path / "k.npz") as f:
        assert sorted(f.files) == sorted(k["arrays"] + ["batch_size"])
    r = run("train", "--arch", "fc:8", "--epochs", "2", "-o", tmp_path / "t.json", "--test-data", tmp_path / "t.npz",
            "--json", tmp_path / "train.json")
    assert r.exit_code == 0, r.output
    history = json.loads((tmp_path / "train.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert run("metrics", tmp_path / "t.json", tmp_path / "t.npz", "--json", tmp_path / "m.json").exit_code == 0
    assert history[-1]["test_accuracy"] == json.loads((tmp_path / "m.json").read_text())["accuracy"]["value"]
