"""`refbnn export --to onnx` (docs/semantics.md §13): onnxruntime decides exactly like the
integer model, every threshold layer and every prediction, and `refbnn import` of the
file gives back the model byte for byte, on generated models with every feature of §2."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from refbnn.export.onnx import input_map_of, write_onnx  # noqa: E402
from refbnn.formats.files import InputError  # noqa: E402
from refbnn.formats.modelfile import write_model  # noqa: E402
from refbnn.importers import import_model  # noqa: E402
from refbnn.importers.check import check  # noqa: E402
from refbnn.semantics.model import Linear, Model, Threshold, Weight  # noqa: E402
from refbnn.testing import cases  # noqa: E402

MAPS = ["x/Z", "x", "2x/Z-1", "(x/Z-0.5)/0.25"]


def _round_trip(tmp: Path, model: Model, x: np.ndarray, input_map: str = "x/Z", qonnx: bool = False):
    a, b = input_map_of(input_map, model)
    write_onnx(str(tmp / "m.onnx"), model, a, b, qonnx=qonnx)
    imported = import_model(tmp / "m.onnx", z=model.Z, input_map=input_map)
    write_model(tmp / "original.json", model)
    write_model(tmp / "back.json", imported.model)
    return imported, check(imported, x)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(importance=False, bit_errors=False), input_map=st.sampled_from(MAPS))
def test_import_of_the_export_is_the_model_and_onnxruntime_decides_alike(tmp_path_factory, case, input_map):
    """Property: for every generated model (every feature of §2) and input map, the imported
    file is byte for byte the model, and onnxruntime's predictions and every threshold
    layer's signs equal refbnn's on the generated inputs."""
    tmp = tmp_path_factory.mktemp("export")
    _, report = _round_trip(tmp, case.model, case.x, input_map)
    assert (tmp / "back.json").read_bytes() == (tmp / "original.json").read_bytes()
    assert report.predictions_agree == report.inputs == len(case.x)
    assert len(report.layers) == len(case.model.neuron_layers)
    assert all(layer.entries > 0 and layer.differ == 0 for layer in report.layers)


def test_a_model_at_the_float32_limit_is_exported_exactly(tmp_path):
    """Z = 2^20 and fan-in 15: |h| reaches 15 * 2^20 < 2^24, every sum exact in float32; a
    threshold at 2^51 (a constant neuron) is placed exactly in double. Data at +-Z."""
    rng = np.random.default_rng(1)
    z, k = 2**20, 15
    w1 = rng.integers(0, 2, (3, k))
    model = Model.build((k,), z, [Linear(Weight.from_array(w1)), Threshold((0, 2**51, -5), (1, -1, 1)),
                                  Linear(Weight.from_array(rng.integers(0, 2, (2, 3))))])
    x = rng.choice([-z, -1, 0, 1, z], (40, k))
    _, report = _round_trip(tmp_path, model, x, "x")
    assert (tmp_path / "back.json").read_bytes() == (tmp_path / "original.json").read_bytes()
    assert report.predictions_agree == 40 and all(layer.differ == 0 for layer in report.layers)


def test_what_float32_or_double_cannot_hold_is_refused_with_the_reason(tmp_path):
    big_fan = Model.build((16,), 2**20, [Linear(Weight.from_array(np.ones((1, 16)))), Threshold((0,)),
                                         Linear(Weight.from_array(np.ones((1, 1))))])
    with pytest.raises(InputError, match=r"fan-in x input bound = 16777216 >= 2\^24"):
        write_onnx(str(tmp_path / "m.onnx"), big_fan, *input_map_of("x", big_fan))
    far = Model.build((2,), 1, [Linear(Weight.from_array(np.ones((1, 2)))), Threshold((2**52,)),
                                Linear(Weight.from_array(np.ones((1, 1))))])
    with pytest.raises(InputError, match=r"\|s\| >= 2\^52"):
        write_onnx(str(tmp_path / "m.onnx"), far, *input_map_of("x", far))
    assert not (tmp_path / "m.onnx").exists()          # nothing half written


@pytest.fixture
def example(tmp_path):
    r = run_cli("example-model", tmp_path, "--inputs", "40")
    assert r.exit_code == 0
    return tmp_path / "example.json", tmp_path / "example.npz"


def test_export_check_passes_and_import_gives_back_the_file(example, tmp_path):
    model, data = example
    out = tmp_path / "m.onnx"
    r = run_cli("export", model, "-o", out, "--check", data, "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["check"]["same_model"] and doc["check"]["predictions_agree"] == 40
    z = json.loads(model.read_text())["input"]["Z"]
    assert run_cli("import", out, "--z", z, "-o", tmp_path / "back.json").exit_code == 0
    assert (tmp_path / "back.json").read_bytes() == model.read_bytes()


def test_export_check_fails_on_a_graph_that_decides_otherwise(example, tmp_path, monkeypatch):
    """--check can fail: with thresholds placed at s - 1/2 (a tie then gives +1), the
    import is another model and the signs differ; exit 1."""
    import refbnn.export.onnx as exporter

    monkeypatch.setattr(exporter, "_threshold", _tie_ge_threshold(exporter._threshold))
    model, data = example
    r = run_cli("export", model, "-o", tmp_path / "m.onnx", "--check", data)
    assert r.exit_code == 1, r.output
    assert "ANOTHER MODEL" in r.output


def _tie_ge_threshold(original):
    def threshold(g, v, t, rank):
        return original(g, v, Threshold(tuple(s - 1 for s in t.thresholds), t.polarity), rank)
    return threshold


@pytest.mark.parametrize("args, message", [
    (["--input", "x*3"], "--input"),
    (["--to", "tflite"], "tflite"),
])
def test_bad_options_exit_2(example, tmp_path, args, message):
    model, _ = example
    r = run_cli("export", model, "-o", tmp_path / "m.onnx", *args)
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "m.onnx").exists()


def test_a_model_onnx_cannot_hold_is_bad_input_naming_the_field(tmp_path):
    far = Model.build((2,), 1, [Linear(Weight.from_array(np.ones((1, 2)))), Threshold((2**52,)),
                                Linear(Weight.from_array(np.ones((1, 1))))])
    write_model(tmp_path / "far.json", far)
    r = run_cli("export", tmp_path / "far.json", "-o", tmp_path / "m.onnx")
    assert r.exit_code == 2 and "layers[1].thresholds: |s| >= 2^52" in r.output
    assert not (tmp_path / "m.onnx").exists()


def _onnx_impl() -> str:
    return f"{sys.executable} {Path(__file__).resolve().parent}/onnx_metrics.py {{model}} {{data}} {{request}} {{claims}}"


def test_fuzz_and_the_suite_hand_an_implementation_the_model_as_onnx(tmp_path):
    """--format onnx: {model} is model.onnx as export writes it, and the request says the
    input map and Z; an implementation that reads the graph passes fuzz and every case."""
    r = run_cli("fuzz", "--impl", _onnx_impl(), "--format", "onnx", "--max-examples", "15", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    r = run_cli("conformance", "run", "--impl", _onnx_impl(), "--format", "onnx")
    assert r.exit_code == 0, r.output
    assert " 0 fail, 0 skipped" in r.output.strip().splitlines()[-1]


def test_a_disagreement_found_with_onnx_leaves_model_onnx_in_the_output(tmp_path):
    out = tmp_path / "o"
    cmd = _onnx_impl() + " && printf '{{\"accuracy\": 0.123}}' > {claims}"     # {{ }}: literal braces
    r = run_cli("fuzz", "--impl", cmd, "--format", "onnx", "--out", out, "--shrink-time", "5")
    assert r.exit_code == 1
    assert (out / "model.onnx").exists() and "model.onnx" in (out / "repro.sh").read_text()
    assert json.loads((out / "request.json").read_text())["onnx"]["input"] == "x/Z"


# -- state dicts with their layout files -------------------------------------------------------

def _torch_installed() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


STATE_DICTS = ["npz", "safetensors"] + (["pt"] if _torch_installed() else [])     # pt is written by torch


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(importance=False, bit_errors=False), fmt=st.sampled_from(STATE_DICTS),
       input_map=st.sampled_from(["x/Z", "x", "(x/Z-0.5)/0.25"]))
def test_a_state_dict_with_its_layout_imports_back_to_the_model(tmp_path_factory, case, fmt, input_map):
    """Property: for every generated model, every state dict format (pt where torch is
    installed) and input maps without an offset where padding would need one, `refbnn import --layout` gives back the model byte
    for byte (thresholds as batch norms, polarity as gamma, the input binarisation as shift,
    scale and sign)."""
    from refbnn.export.statedict import write_state_dict
    tmp = tmp_path_factory.mktemp("sd")
    a, b = input_map_of(input_map, case.model)
    try:
        layout = write_state_dict(tmp / f"m.{fmt}", fmt, case.model, a, b)
    except InputError as e:                     # refused, with the reason: padding and an offset
        assert "padding" in str(e) and input_map == "(x/Z-0.5)/0.25"
        return
    imported = import_model(tmp / f"m.{fmt}", z=case.model.Z, input_map=input_map, layout=str(layout))
    write_model(tmp / "original.json", case.model)
    write_model(tmp / "back.json", imported.model)
    assert (tmp / "back.json").read_bytes() == (tmp / "original.json").read_bytes()


def test_the_safetensors_file_is_what_the_safetensors_library_reads(tmp_path, example):
    """The hand-written safetensors bytes load in the safetensors library, tensor for tensor."""
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    from refbnn.export.statedict import state_dict, write_state_dict
    from refbnn.formats.modelfile import read_model
    model = read_model(example[0])
    a, b = input_map_of("x/Z", model)
    write_state_dict(str(tmp_path / "m.safetensors"), "safetensors", model, a, b)
    theirs = safetensors_numpy.load_file(str(tmp_path / "m.safetensors"))
    ours, _ = state_dict(model, a, b)
    assert sorted(theirs) == sorted(ours)
    assert all(np.array_equal(theirs[k], ours[k]) and theirs[k].dtype == ours[k].dtype for k in ours)


def test_export_to_npz_writes_the_layout_beside_and_checks_the_round_trip(example, tmp_path):
    model, data = example
    r = run_cli("export", model, "--to", "npz", "-o", tmp_path / "m.npz", "--check", data)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.layout.json").exists()
    assert "check: import gives back the same model" in r.output
    z = json.loads(model.read_text())["input"]["Z"]
    assert run_cli("import", tmp_path / "m.npz", "--layout", tmp_path / "m.layout.json", "--z", z,
                   "-o", tmp_path / "back.json").exit_code == 0
    assert (tmp_path / "back.json").read_bytes() == model.read_bytes()


# -- QONNX (FINN's dialect) --------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(importance=False, bit_errors=False))
def test_the_qonnx_export_runs_in_the_qonnx_executor_and_imports_back(tmp_path_factory, case):
    """Property: the QONNX graph (BipolarQuant weights, one MultiThreshold per channel on
    p h at p (s + 1/2)) passes qonnx's cleanup and shape inference, the QONNX executor's
    predictions and threshold signs equal refbnn's, and the import is the model byte for byte."""
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_shapes import InferShapes
    from qonnx.util.cleanup import cleanup_model
    tmp = tmp_path_factory.mktemp("qonnx")
    a, b = input_map_of("x/Z", case.model)
    write_onnx(str(tmp / "m.onnx"), case.model, a, b, qonnx=True)
    cleaned = cleanup_model(ModelWrapper(str(tmp / "m.onnx"))).transform(InferShapes())
    assert {n.op_type for n in cleaned.graph.node} >= {"MultiThreshold"}
    imported = import_model(tmp / "m.onnx", z=case.model.Z, input_map="x/Z")
    assert imported.source.kind == "qonnx"
    write_model(tmp / "original.json", case.model)
    write_model(tmp / "back.json", imported.model)
    assert (tmp / "back.json").read_bytes() == (tmp / "original.json").read_bytes()
    report = check(imported, case.x)
    assert report.predictions_agree == len(case.x)
    assert all(layer.entries > 0 and layer.differ == 0 for layer in report.layers)


def test_qonnx_refuses_thresholds_float32_cannot_halve(tmp_path):
    far = Model.build((2,), 1, [Linear(Weight.from_array(np.ones((1, 2)))), Threshold((2**23,)),
                                Linear(Weight.from_array(np.ones((1, 1))))])
    with pytest.raises(InputError, match=r"\|s\| >= 2\^23"):
        write_onnx(str(tmp_path / "m.onnx"), far, *input_map_of("x", far), qonnx=True)
    write_onnx(str(tmp_path / "m.onnx"), far, *input_map_of("x", far))      # plain ONNX holds it in double


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("fmt", ["onnx", "qonnx", "npz", "safetensors"])
def test_a_model_trained_with_bit_flips_leaves_in_every_format(tmp_path, fmt):
    """The issue's 'done when' on a small CNN (conv, padding, pooling) trained with
    --train-ber 0.05 on the digits: each format imports back to the identical model, and the
    graphs run in onnxruntime / the QONNX executor with refbnn's predictions and signs on
    every test input (state dicts: in torch where installed)."""
    pytest.importorskip("sklearn")
    if fmt == "qonnx":
        pytest.importorskip("qonnx")
    r = run_cli("train", "--arch", "cnn:4,mp;8", "--padding", "1", "--train-ber", "0.05", "--epochs", "1",
                "-o", tmp_path / "m.json", "--test-data", tmp_path / "test.npz")
    assert r.exit_code == 0, r.output
    r = run_cli("export", tmp_path / "m.json", "--to", fmt, "-o", tmp_path / f"m.{fmt}", "--check",
                tmp_path / "test.npz", "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "r.json").read_text())["check"]
    assert doc["same_model"]
    if fmt in ("onnx", "qonnx"):
        assert doc["predictions_agree"] == doc["inputs"] > 0
        assert len(doc["layers"]) == 2 and all(layer["differ"] == 0 for layer in doc["layers"])


# -- torch (skipped where it is not installed: pip install -e '.[test,torch]') ------------------

@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(importance=False, bit_errors=False), input_map=st.sampled_from(MAPS))
def test_to_torch_gives_refbnns_scores_and_signs(case, input_map):
    """Property: to_torch(model)'s forward on u = A x + B gives refbnn's class scores exactly,
    and its threshold outputs equal refbnn's, on generated models with every feature."""
    torch = pytest.importorskip("torch")
    from refbnn.engines.fast import FastEngine
    from refbnn.export import to_torch
    a, b = input_map_of(input_map, case.model)
    shape = (1, -1) + (1,) * (case.x.ndim - 2)
    u = torch.tensor(np.asarray(a).reshape(shape) * case.x + np.asarray(b).reshape(shape), dtype=torch.float32)
    scores, signs = to_torch(case.model, a, b).signs(u)
    engine = FastEngine(case.model)
    ours = engine.outputs(case.x)
    assert np.array_equal(scores.numpy(), np.asarray(ours[-1], dtype=np.float32).reshape(scores.shape))
    for nl in case.model.neuron_layers:
        assert np.array_equal(signs[nl.threshold_index].numpy(), np.asarray(ours[nl.threshold_index]))


def test_a_pt_state_dict_imports_back_and_runs_in_torch(example, tmp_path):
    pytest.importorskip("torch")
    model, data = example
    r = run_cli("export", model, "--to", "pt", "-o", tmp_path / "m.pt", "--check", data)
    assert r.exit_code == 0, r.output
    assert "predictions 40 of 40 agree; threshold signs: 0 differ" in r.output
    z = json.loads(model.read_text())["input"]["Z"]
    assert run_cli("import", tmp_path / "m.pt", "--layout", tmp_path / "m.layout.json", "--z", z,
                   "-o", tmp_path / "back.json").exit_code == 0
    assert (tmp_path / "back.json").read_bytes() == model.read_bytes()


# -- models that came in from other toolchains leave again ----------------------------------------

def _imported_models(tmp_path):
    """A model of each source family, imported: a tf2onnx NHWC Larq graph, a FINN QONNX graph
    that binarises its input, and a Keras/Larq .h5 file."""
    import onnx
    from keras_files import larq_cnn, write_h5
    from onnx_graphs import finn_tfc_graph, tf2onnx_larq_graph
    rng = np.random.default_rng(5)
    onnx.save(tf2onnx_larq_graph(rng, 3, True), str(tmp_path / "larq.onnx"))
    onnx.save(finn_tfc_graph(rng, "onnx.brevitas"), str(tmp_path / "tfc.onnx"))
    config, weights = larq_cnn(rng, 2)
    write_h5(tmp_path / "larq.h5", config, weights)
    return {"tf2onnx": import_model(tmp_path / "larq.onnx", z=255, input_map="x").model,
            "finn": import_model(tmp_path / "tfc.onnx", z=255).model,
            "keras": import_model(tmp_path / "larq.h5", z=255, input_map="x").model}


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_models_imported_from_each_family_export_to_every_format(tmp_path):
    """Each imported model exported to ONNX, QONNX and a state dict imports back to itself, and
    the graphs decide like refbnn on inputs over the whole range (every sign, every prediction)."""
    pytest.importorskip("qonnx")
    pytest.importorskip("h5py")
    from refbnn.export.statedict import write_state_dict
    for family, model in _imported_models(tmp_path).items():
        x = np.random.default_rng(6).integers(-model.Z if family != "finn" else 0, model.Z + 1,
                                              (50,) + model.input_shape)
        for qonnx in (False, True):
            _, report = _round_trip(tmp_path, model, x, qonnx=qonnx)
            assert (tmp_path / "back.json").read_bytes() == (tmp_path / "original.json").read_bytes(), family
            assert report.predictions_agree == 50 and all(layer.differ == 0 for layer in report.layers), family
        a, b = input_map_of("x/Z", model)
        layout = write_state_dict(str(tmp_path / "m.npz"), "npz", model, a, b)
        back = import_model(tmp_path / "m.npz", z=model.Z, layout=str(layout)).model
        assert back == model, family



def test_to_torch_docstring_example_runs():
    pytest.importorskip("torch")
    import doctest

    import refbnn.export.torch
    result = doctest.testmod(refbnn.export.torch)
    assert result.failed == 0 and result.attempted > 0


def test_without_torch_pt_names_the_extra_and_writes_nothing(example, tmp_path):
    """--to pt needs torch: without it, exit 2 naming the extra, and neither file is written."""
    import subprocess
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name == 'torch' or name.startswith('torch.'):\n"
               "            raise ImportError('no torch here')\n"
               "sys.meta_path.insert(0, Block())\n"
               "from refbnn.cli import main\n"
               "main(sys.argv[1:])\n")
    r = subprocess.run([sys.executable, "-c", blocker, "export", str(example[0]), "--to", "pt", "-o",
                        str(tmp_path / "m.pt")], capture_output=True, text=True)
    assert r.returncode == 2 and "pip install 'refbnn[torch]'" in r.stderr, r.stderr
    assert not (tmp_path / "m.pt").exists() and not (tmp_path / "m.layout.json").exists()


def test_bad_check_data_is_refused_before_anything_is_written(example, tmp_path):
    model, _ = example
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    r = run_cli("export", model, "-o", tmp_path / "m.onnx", "--check", tmp_path / "bad.npz")
    assert r.exit_code == 2 and "bad.npz" in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_the_importer_rounds_only_the_input_back_to_its_integers(tmp_path):
    """Round is read only on the network input and only where the input map, scaled back,
    gives the integers: Round(x/Z) (not scaled back) and a Round of a pre-activation are
    refused, each saying why."""
    import onnx
    from onnx_graphs import Graph, binarise
    from refbnn.importers.fold import RefusedError

    def graph(round_first: bool, scale_back: bool):
        g = Graph([4])
        u = g.op("Mul", ["x", g.const(255.0)]) if scale_back else "x"
        u = g.op("Round", [u]) if round_first else u
        h = g.op("MatMul", [u, g.const(np.ones((4, 2)))])
        h = h if round_first else g.op("Round", [h])
        a = binarise(g, g.op("Sub", [h, g.const(0.5)]), "where")
        return g.model(g.op("MatMul", [a, g.const(np.ones((2, 2)))]))

    onnx.save(graph(True, True), str(tmp_path / "ok.onnx"))
    # round(255 u) = x, h = sum of x, and h - 1/2 > 0 <=> h > 0 for integer h: s = 0 per neuron
    assert import_model(tmp_path / "ok.onnx", z=255).model.layers[1].thresholds == (0, 0)
    for name, g, message in (("unscaled", graph(True, False), "not integers"),
                             ("hidden", graph(False, True), "rounds only the network input")):
        onnx.save(g, str(tmp_path / f"{name}.onnx"))
        with pytest.raises(RefusedError, match=message):
            import_model(tmp_path / f"{name}.onnx", z=255)
