"""The public Python API (`import refbnn`): every function shows an example that runs, and
each gives the numbers of the command it is named after."""
import doctest
import inspect
import json

import numpy as np
import pytest
from conftest import run_cli

import refbnn
from refbnn import api
from refbnn.formats.datafile import write_data
from refbnn.formats.modelfile import write_model


def _torch_missing() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return True
    return False


def test_every_public_function_has_an_example():
    """Property: each function of refbnn.__all__ has a `>>>` example in its docstring."""
    functions = [n for n in refbnn.__all__ if inspect.isfunction(getattr(refbnn, n, None))]
    assert len(functions) >= 15
    assert [n for n in functions if ">>>" not in (getattr(refbnn, n).__doc__ or "")] == []


def test_every_name_of_all_is_there():
    """Property: __all__ names only what `import refbnn` gives (testing on first use)."""
    assert [n for n in refbnn.__all__ if not hasattr(refbnn, n)] == []


@pytest.mark.parametrize("module", [refbnn, api])
def test_the_examples_run(module):
    """The docstring examples give what they show (to_torch's only where torch is installed)."""
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tried = 0
    for test in finder.find(module, module.__name__, globs={}):
        if test.name.endswith("to_torch") and _torch_missing():
            continue
        result = runner.run(test)
        assert result.failed == 0, test.name
        tried += result.attempted
    assert tried > 0


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    model = refbnn.example_model()
    x, y = refbnn.example_data(48, seed=5)
    write_model(d / "m.json", model)
    write_data(d / "d.npz", x, y)
    return d, model, x, y


def _cli_json(*args) -> dict:
    *cmd, out = args
    r = run_cli(*cmd, "--json", out)
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def test_metrics_are_the_metrics_command(files):
    d, model, x, y = files
    cli = _cli_json("metrics", d / "m.json", d / "d.npz", "--b", "0,1/2,2", "--importance", d / "m.out.json")
    mine = refbnn.metrics(model, x, y, b=["0", "1/2", "2"], importance=True)
    claims = mine.to_claims()
    for key in ("accuracy", "T", "T_bar", "layers", "importance", "var_importance"):
        assert claims[key] == cli[key], key
    assert str(mine.T_bar.numerator) + "/" + str(mine.T_bar.denominator) == cli["T_bar"]["exact"]
    assert [str(p) for p in mine.importance] == [v["exact"].removesuffix("/1") for v in cli["importance"]]


def test_bit_errors_are_the_eval_command(files):
    d, model, x, y = files
    cli = _cli_json("eval", d / "m.json", d / "d.npz", "--ber", "0,0.05,0.3", "--reps", "4", "--seed", "9",
                    "--batch-size", "16", d / "e.json")
    mine = refbnn.accuracy_under_bit_errors(model, x, y, ber=[0, 0.05, 0.3], reps=4, seed=9, batch_size=16)
    assert [[f"{a.numerator}/{a.denominator}" for a in r.accuracies] for r in mine] == \
        [[a["exact"] for a in row["accuracies"]] for row in cli["results"]]
    assert [r.std for r in mine] == [row["std"] for row in cli["results"]]


def test_protection_is_the_eval_commands(files):
    d, model, x, y = files
    cli = _cli_json("eval", d / "m.json", d / "d.npz", "--ber", "0.2", "--reps", "3", "--protect", "0:1,2",
                    d / "p.json")
    by_spec = refbnn.accuracy_under_bit_errors(model, x, y, ber=[0.2], reps=3, protect="0:1,2")
    by_dict = refbnn.accuracy_under_bit_errors(model, x, y, ber=[0.2], reps=3, protect={0: [2, 1]})
    want = [a["exact"] for a in cli["results"][0]["accuracies"]]
    assert [f"{a.numerator}/{a.denominator}" for a in by_spec[0].accuracies] == want
    assert by_dict == by_spec


def test_certify_is_the_certify_command(files):
    d, model, x, y = files
    cli = _cli_json("certify", d / "m.json", d / "d.npz", "--k", "0,1,3", d / "c.json")
    mine = refbnn.certify(model, x, y, k=[0, 1, 3])
    assert {str(k): f"{v.numerator}/{v.denominator}" for k, v in mine.items()} == \
        {k: v["exact"] for k, v in cli["certified_accuracy"].items()}


def test_verify_finds_what_the_verify_command_finds(files, tmp_path):
    d, model, x, y = files
    truth = refbnn.metrics(model, x, y, b=[1], importance=True)
    wrong = {"accuracy": float(truth.accuracy), "T": {"1": float(truth.T[1]) + 0.01},
             "importance": [float(p) for p in truth.importance]}
    (tmp_path / "claims.json").write_text(json.dumps(wrong))
    r = run_cli("verify", d / "m.json", d / "d.npz", "--claims", tmp_path / "claims.json")
    report = refbnn.verify(model, x, y, wrong)
    assert r.exit_code == 1
    assert [c["quantity"] for c in report.failed] == ["T[1]"]
    assert report.lines[0] in r.output
    assert refbnn.verify(model, x, y, truth.to_claims()).failed == []


def test_train_gives_the_train_commands_model(tmp_path):
    """The same data and seed give the same model from refbnn.train and `refbnn train`."""
    x, y = refbnn.example_data(120, seed=3)
    write_data(tmp_path / "train.npz", x[:90], y[:90])
    write_data(tmp_path / "test.npz", x[90:], y[90:])
    r = run_cli("train", "--arch", "fc:6", "--dataset", f"npz:{tmp_path / 'train.npz'},{tmp_path / 'test.npz'}",
                "--z", "4", "--epochs", "2", "--seed", "4", "-o", tmp_path / "t.json")
    assert r.exit_code == 0, r.output
    mine = refbnn.train("fc:6", x[:90], y[:90], x[90:], y[90:], z=4, epochs=2, seed=4)
    assert mine == refbnn.load_model(tmp_path / "t.json")


def test_import_and_export_go_round(tmp_path):
    pytest.importorskip("onnx")
    model = refbnn.example_model()
    assert refbnn.export_model(model, tmp_path / "m.onnx") is None
    assert refbnn.import_model(tmp_path / "m.onnx", z=model.Z) == model


def test_the_metrics_result_shows_itself_as_a_table():
    m = refbnn.metrics(refbnn.example_model(), *refbnn.example_data(8), b=[1], importance=True)
    html = m._repr_html_()
    assert html.count("<tr>") == len(str(m).splitlines()) + 1         # a header and one row per line
    assert f"<td>T at b = 1</td><td>{float(m.T[1]):.4f}</td>" in html
    assert "VAR(Pi)" in str(m) and np.isclose(float(str(m).split()[-1]), float(m.var_importance), rtol=1e-3)
