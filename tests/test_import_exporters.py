"""refbnn import of what particular exporters write: state dicts with a layout file (.npz,
.pt without torch), the FINN model zoo's QONNX graphs, tf2onnx's Larq graphs (NHWC), each
against the source's own runtime (docs/semantics.md §10)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from onnx_graphs import (  # noqa: E402
    FC_LAYOUT,
    QONNX,
    Graph,
    batchnorm,
    bn_params,
    fc_state,
    finn_tfc_graph,
    save_graph,
    signs,
    tf2onnx_larq_graph,
)

from refbnn.cli import main  # noqa: E402
from refbnn.engines.fast import FastEngine  # noqa: E402
from refbnn.formats.files import InputError  # noqa: E402
from refbnn.importers import RefusedError, import_model  # noqa: E402
from refbnn.importers.check import check  # noqa: E402
from refbnn.semantics.model import Threshold  # noqa: E402


def test_npz_state_dict_matches_a_float64_forward(tmp_path):
    """Property: an FC state dict of the authors' style (latent weights binarised as +1 iff
    w > 0, BN, hardtanh, sign with sign(0) = -1, a final scale), imported with its layout,
    predicts what a float64 forward written here predicts on every input."""
    rng = np.random.default_rng(8)
    sd = fc_state(rng)
    np.savez(tmp_path / "sd.npz", **sd)
    (tmp_path / "layout.json").write_text(json.dumps(FC_LAYOUT))
    imported = import_model(tmp_path / "sd.npz", layout=str(tmp_path / "layout.json"))
    assert imported.model.Z == 16 and imported.model.input_shape == (12,)
    x = rng.integers(-16, 17, (2000, 12))
    b = lambda w: np.where(w > 0, 1.0, -1.0)   # noqa: E731
    h = (x / 16) @ b(sd["fc1.weight"]).T
    v = sd["bn1.weight"] * (h - sd["bn1.running_mean"]) / np.sqrt(sd["bn1.running_var"] + 1e-5) + sd["bn1.bias"]
    scores = np.where(np.clip(v, -1, 1) > 0, 1.0, -1.0) @ b(sd["fc2.weight"]).T * sd["scale"]
    assert np.array_equal(FastEngine(imported.model).predictions(x), scores.argmax(1))


def test_a_pt_state_dict_imports_without_torch(tmp_path):
    """`tests/data/fc_state.pt` is `fc_state(np.random.default_rng(8))` saved by torch 2.13 as
    float32 tensors (`torch.save({k: torch.tensor(v, dtype=torch.float32), ...})`); read
    without torch (refbnn/importers/torchfile.py), it gives the model its float32-rounded
    values give as an .npz."""

    pt = Path(__file__).parent / "data" / "fc_state.pt"
    sd = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
          for k, v in fc_state(np.random.default_rng(8)).items()}
    np.savez(tmp_path / "sd.npz", **sd)
    (tmp_path / "layout.json").write_text(json.dumps(FC_LAYOUT))
    from_pt = import_model(pt, layout=str(tmp_path / "layout.json"))
    from_npz = import_model(tmp_path / "sd.npz", layout=str(tmp_path / "layout.json"))
    assert from_pt.model == from_npz.model and from_pt.source.kind == "state-dict"


@pytest.mark.parametrize("edit, message", [
    (lambda lay, sd: lay["steps"][1].update(prefx="bn1"), "layout.json: steps[1].prefx: unknown key"),
    (lambda lay, sd: lay["steps"].pop(5), "sd.npz: scale: not used by any step"),
    (lambda lay, sd: lay["steps"][0].update(prefix="fc0"), "sd.npz: fc0.weight: missing"),
    (lambda lay, sd: lay["steps"][3].update(at_zero=2), "steps[3].at_zero: expected -1, 0 or 1"),
    (lambda lay, sd: lay.update(format="other"), "layout.json: format"),
    (lambda lay, sd: sd.update({"bn1.running_var": np.full(10, np.nan)}), "bn1.running_var: holds NaN"),
    (lambda lay, sd: sd.update({"fc1.weight": np.ones((10, 12, 1))}), "fc1.weight: shape [10, 12, 1]"),
])
def test_bad_layout_or_state_dict_is_named(tmp_path, edit, message):
    """Property: a layout or state dict that does not fit is an error naming the file and the
    key or field, through the command line too (exit 2, nothing written)."""
    rng = np.random.default_rng(9)
    layout, sd = json.loads(json.dumps(FC_LAYOUT)), fc_state(rng)
    edit(layout, sd)
    np.savez(tmp_path / "sd.npz", **sd)
    (tmp_path / "layout.json").write_text(json.dumps(layout))
    with pytest.raises(InputError) as e:
        import_model(tmp_path / "sd.npz", layout=str(tmp_path / "layout.json"))
    assert message in str(e.value)
    r = CliRunner().invoke(main, ["import", str(tmp_path / "sd.npz"), "--layout", str(tmp_path / "layout.json"),
                                  "-o", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and message in r.output and not (tmp_path / "m.json").exists()


def _finn_zoo_graph(rng):
    """An older FINN / Brevitas bnn_pynq export: opset 9, a fixed batch of 1, initializers also
    listed as graph inputs, weights binarised by BipolarQuant on constants, BipolarQuant
    activations, the flatten built from Shape/Gather/Unsqueeze(axes attribute)/Concat/Reshape,
    MatMul with [K, N] weights, and TensorNorm at the output (Sub, Div by Sqrt(var + eps),
    Mul, Add with per-tensor constants)."""
    g = Graph([1, 4, 4], batch=1, opset=9)
    w1 = g.op("BipolarQuant", [g.const(rng.normal(size=(3, 1, 3, 3))), g.const(1.0)], domain=QONNX)
    h = g.op("Conv", ["x", w1], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    gamma, beta, mean, var = bn_params(rng, 3, 4.0)
    v = batchnorm(g, h, [gamma, beta, mean, var])
    a = g.op("BipolarQuant", [v, g.const(1.0)], domain=QONNX)
    p = g.op("MaxPool", [a], kernel_shape=[2, 2], strides=[2, 2])
    shape = g.op("Shape", [p])
    first = g.op("Gather", [shape, g.const(0, np.int64)], axis=0)
    n = g.op("Unsqueeze", [first], axes=[0])
    flat = g.op("Reshape", [p, g.op("Concat", [n, g.const([-1], np.int64)], axis=0)])
    w2 = g.op("BipolarQuant", [g.const(rng.normal(size=(12, 4))), g.const(1.0)], domain=QONNX)
    s = g.op("MatMul", [flat, w2])
    std = g.op("Sqrt", [g.op("Add", [g.const(2.5), g.const(1e-4)])])
    y = g.op("Add", [g.op("Mul", [g.op("Div", [g.op("Sub", [s, g.const(0.3)]), std]), g.const(0.7)]), g.const(-0.2)])
    m = g.model(y)
    m.graph.input.extend(onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                         for i in m.graph.initializer)
    return m


@pytest.mark.filterwarnings("ignore:Output shapes disagree")   # qonnx: the hand-built graph declares no shapes
def test_an_older_finn_zoo_export_imports_and_agrees_with_the_qonnx_executor(tmp_path):
    """Property: the old FINN conventions (opset 9, fixed batch, initializers as inputs, the
    Shape-built flatten, TensorNorm with positive per-tensor scale) import exactly: the QONNX
    executor agrees on every sign and prediction."""
    pytest.importorskip("qonnx")
    rng = np.random.default_rng(12)
    imported = import_model(save_graph(_finn_zoo_graph(rng), tmp_path), z=4, input_map="x")
    assert [type(layer).__name__ for layer in imported.model.layers] == \
        ["Conv2d", "Threshold", "MaxPool2d", "Flatten", "Linear"]
    x = rng.integers(-4, 5, (60, 1, 4, 4))
    report = check(imported, x)
    assert report.ok and report.predictions_agree == len(x), report.unexplained[:3]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("input_quantizer", [False, True])
def test_a_tf2onnx_larq_graph_imports_and_agrees_with_onnxruntime(channels, input_quantizer, tmp_path):
    """Property: an NHWC graph as tf2onnx writes a Larq model (layout Transposes, the one-channel
    Reshape, Sign(Sign(x) + 0.1), a fused batch norm with negative scales, a flatten in H, W, C
    order, Softmax) imports with the data in refbnn's [C, H, W] layout, and every sign of every
    threshold layer (compared in the graph's own layout) and every prediction equal onnxruntime's."""
    rng = np.random.default_rng(40 + channels + 2 * input_quantizer)
    imported = import_model(save_graph(tf2onnx_larq_graph(rng, channels, input_quantizer), tmp_path), z=255,
                            input_map="x")
    model = imported.model
    assert model.input_shape == (channels, 8, 8)
    assert [layer.type for layer in model.layers] == ["conv2d", "maxpool2d", "threshold", "conv2d", "threshold",
                                                       "flatten", "linear", "threshold", "linear"]
    # ste_sign(x) = +1 iff x >= 0, i.e. x > -1: the input binarisation of §2.6
    assert model.input_threshold == (Threshold((-1,) * channels) if input_quantizer else None)
    x = rng.integers(-255, 256, (300, channels, 8, 8))
    report = check(imported, x)
    assert report.ok and report.predictions_agree == len(x), report.unexplained[:3]
    assert [a.entries for a in report.layers] == [300 * 4 * 16, 300 * 6 * 4, 300 * 8]
    assert all(a.differ == 0 for a in report.layers)


def test_the_hwc_flatten_is_a_column_permutation_of_the_dense_weights(tmp_path):
    """The dense layer after an [H, W, C] flatten reads refbnn's C-order vector through
    permuted columns: column (h, w, c) of the graph's [K, N] matrix is refbnn's column
    c * H * W + h * W + w (here H = W = 2, C = 6)."""
    rng = np.random.default_rng(5)
    graph = tf2onnx_larq_graph(rng, 3, False)
    imported = import_model(save_graph(graph, tmp_path), z=255, input_map="x")
    matmul = next(n for n in graph.graph.node if n.op_type == "MatMul")
    theirs = next(onnx.numpy_helper.to_array(t) for t in graph.graph.initializer if t.name == matmul.input[1])
    ours = np.array(imported.model.layers[6].weight.bits.tolist()).reshape(8, 24) * 2 - 1
    for h in range(2):
        for w in range(2):
            for c in range(6):
                assert list(ours[:, c * 4 + h * 2 + w]) == list(theirs[(h * 2 + w) * 6 + c])


def test_a_layout_transpose_never_causes_a_refusal(tmp_path):
    """A graph refused for a real reason names that node, not the layout Transposes around it:
    here the AveragePool between two Transposes."""
    g = Graph([4, 4, 1])
    x = g.op("Transpose", ["x"], perm=[0, 3, 1, 2])
    h = g.op("Conv", [x, g.const(signs(np.random.default_rng(0), (2, 1, 3, 3)))], kernel_shape=[3, 3])
    h = g.op("Transpose", [h], perm=[0, 2, 3, 1])
    h = g.op("Transpose", [h], perm=[0, 3, 1, 2])
    h = g.op("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2])
    with pytest.raises(RefusedError) as e:
        import_model(save_graph(g.model(h), tmp_path), z=4, input_map="x")
    assert "AveragePool" in str(e.value) and "Transpose" not in str(e.value)


@pytest.mark.filterwarnings("ignore:Output shapes disagree")
@pytest.mark.filterwarnings("ignore:Some old-style domain attributes")
@pytest.mark.parametrize("domain, threshold_domain", [("onnx.brevitas", "finn.custom_op.general"),
                                                      ("onnx.brevitas", ""), ("finn.custom_op.general", "")])
def test_the_finn_zoo_domains_import_as_published(tmp_path, domain, threshold_domain):
    """The FINN model zoo's bnn_pynq files name BipolarQuant's domain `onnx.brevitas` and
    MultiThreshold's `finn.custom_op.general`: the same ops, the same model as qonnx's domain
    gives, and the QONNX executor agrees on every sign and prediction."""
    pytest.importorskip("qonnx")
    reference = import_model(save_graph(finn_tfc_graph(np.random.default_rng(8), threshold_domain="qonnx.custom_op.general"
                                                  if threshold_domain else ""), tmp_path, "q.onnx"), z=255)
    imported = import_model(save_graph(finn_tfc_graph(np.random.default_rng(8), domain, threshold_domain), tmp_path),
                            z=255, input_map="x/Z")
    assert imported.model == reference.model
    assert imported.model.input_threshold == Threshold((127,) * 16)
    x = np.random.default_rng(9).integers(0, 256, (60, 16))
    report = check(imported, x)
    assert report.ok and report.predictions_agree == len(x) and report.layers[0].differ == 0


@pytest.mark.filterwarnings("ignore:Output shapes disagree")
def test_a_finn_network_that_binarises_its_input_imports_with_an_input_threshold(tmp_path):
    """FINN's TFC input: 2u - 1 >= 0 for u = x / 255 is x >= 127.5, i.e. x > 127 (§2.6); the
    first layer then reads +-1 and is measured by eq. 1, and the QONNX executor agrees on every
    sign and prediction with the data file holding the raw pixels 0..255."""
    pytest.importorskip("qonnx")
    rng = np.random.default_rng(8)
    imported = import_model(save_graph(finn_tfc_graph(rng), tmp_path), z=255, input_map="x/Z")
    assert imported.model.input_threshold == Threshold((127,) * 16)
    assert not imported.model.neuron_layers[0].first
    x = rng.integers(0, 256, (120, 16))
    report = check(imported, x)
    assert report.ok and report.predictions_agree == len(x), report.unexplained[:3]
    assert report.layers[0].differ == 0 and report.layers[0].entries == 120 * 6
