"""`refbnn import` on the command line and from Python: the model written and checked, exit codes
1 and 2, errors that name the problem (docs/semantics.md §10)."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from onnx_graphs import save_graph, tie_graph  # noqa: E402

from refbnn.cli import main  # noqa: E402
from refbnn.formats.datafile import write_data  # noqa: E402
from refbnn.formats.files import InputError  # noqa: E402
from refbnn.importers import import_model  # noqa: E402
from refbnn.semantics.model import Threshold  # noqa: E402


def test_cli_import_writes_the_model_and_checks(tmp_path):
    """Property: `refbnn import --check` on a faithful graph exits 0, writes a model that
    `refbnn metrics` reads, and its JSON says how many predictions agree."""
    mu = np.array([0, 1, -1, 2, 0, -2], np.float32)
    gamma = np.array([1, -1, 1, -1, -1, 1], np.float32)
    src = save_graph(tie_graph("where", mu, gamma), tmp_path)
    rng = np.random.default_rng(0)
    write_data(tmp_path / "d.npz", rng.integers(-3, 4, (50, 4)), rng.integers(0, 3, 50))
    out, js = str(tmp_path / "m.json"), str(tmp_path / "r.json")
    r = CliRunner().invoke(main, ["import", src, "--z", "3", "--input", "x", "-o", out,
                                  "--check", str(tmp_path / "d.npz"), "--json", js])
    assert r.exit_code == 0, r.output
    assert "check: OK" in r.output
    report = json.loads(open(js).read())
    assert report["check"]["predictions_agree"] == 50 and report["check"]["ok"] is True
    m = CliRunner().invoke(main, ["metrics", out, str(tmp_path / "d.npz")])
    assert m.exit_code == 0 and "6 neurons" in m.output


def test_cli_check_failure_exits_1(tmp_path, monkeypatch):
    """Property: an unexplained disagreement makes `refbnn import --check` exit 1."""
    import refbnn.cli.importing as cli_import

    mu = np.array([0, 1, -1, 2, 0, -2], np.float32)
    gamma = np.array([1, -1, 1, -1, -1, 1], np.float32)
    src = save_graph(tie_graph("where", mu, gamma), tmp_path)
    write_data(tmp_path / "d.npz", np.stack(np.meshgrid(*[np.arange(-3, 4)] * 4), -1).reshape(-1, 4),
               np.zeros(7 ** 4, int))

    def tampered(*args, **kw):
        imported = import_model(*args, **kw)
        m = imported.model
        thr = m.layers[1]
        wrong = Threshold(tuple(s + 2 for s in thr.thresholds), thr.polarity)
        imported.model = type(m).build(m.input_shape, m.Z, (m.layers[0], wrong) + m.layers[2:])
        return imported

    monkeypatch.setattr(cli_import, "import_model", tampered)
    r = CliRunner().invoke(main, ["import", src, "--z", "3", "--input", "x", "-o", str(tmp_path / "m.json"),
                                  "--check", str(tmp_path / "d.npz")])
    assert r.exit_code == 1 and "UNEXPLAINED" in r.output


@pytest.mark.parametrize("args, message", [
    (["--z", "255"], "not an ONNX file"),
    ([], "--z"),
])
def test_cli_bad_onnx_file_exits_2(tmp_path, args, message):
    """Property: a file that is not ONNX, or a missing --z, exits 2 with one line naming the
    file, and writes nothing."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10 if "--z" in args else onnx.ModelProto(
        graph=onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                     [onnx.helper.make_tensor_value_info("x", 1, [1, 4])],
                                     [onnx.helper.make_tensor_value_info("y", 1, [1, 4])])).SerializeToString())
    out = tmp_path / "m.json"
    r = CliRunner().invoke(main, ["import", str(bad), "-o", str(out)] + args)
    assert r.exit_code == 2 and message in r.output and "bad.onnx" in r.output
    assert not out.exists()


def test_api_errors_name_the_problem(tmp_path):
    """Property: a state dict without --layout, and --layout with an ONNX file, are errors
    that say what to do."""
    np.savez(tmp_path / "sd.npz", **{"fc.weight": np.ones((2, 3))})
    with pytest.raises(InputError, match="give --layout"):
        import_model(tmp_path / "sd.npz", z=1)
    mu = np.zeros(6, np.float32)
    src = save_graph(tie_graph("where", mu, np.ones(6, np.float32)), tmp_path)
    with pytest.raises(InputError, match="only for state dicts"):
        import_model(src, z=1, layout=str(tmp_path / "l.json"))
