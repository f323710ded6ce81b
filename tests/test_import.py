"""refbnn import (docs/semantics.md §10): graphs built the way the exporters build them,
imported, and compared with the source's own runtime (onnxruntime, the QONNX executor)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from conftest import assert_clean_exit, damaged  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from onnx_graphs import (  # noqa: E402
    FC_LAYOUT,
    QONNX,
    Graph,
    batchnorm,
    binarise,
    bn_params,
    dynamic_flatten,
    fc_state,
    latent_weight,
    save_graph,
    signs,
    tie_graph,
)

from refbnn.cli import main  # noqa: E402
from refbnn.engines.fast import FastEngine  # noqa: E402
from refbnn.importers import RefusedError, import_model  # noqa: E402
from refbnn.importers.check import check  # noqa: E402
from refbnn.semantics.model import Threshold  # noqa: E402

QONNX_KINDS = {"bipolar", "quant1", "quant1u", "multithreshold"}


def _needs_runtime(kind: str) -> None:
    if kind in QONNX_KINDS:
        pytest.importorskip("qonnx")


# -- exact ties: every sign convention folds to the right integer threshold ------------------

# +1 exactly at the tie h = tau, per convention (the three sign conventions of §10.3)
TIE_UP = {"where": False, "cast": False, "where_ge": True, "less_not": True, "clip_where": False, "clip_where_ge": True, "larq_ste": True,
          "bipolar": True, "quant1": True, "quant1u": False, "multithreshold": True}


@pytest.mark.parametrize("kind", sorted(TIE_UP))
def test_sign_conventions_fold_to_the_right_threshold(kind, tmp_path):
    """Property: at an exact tie (h = tau) the folded threshold gives what the source op gives:
    -1 for x > 0 patterns, +1 for x >= 0 and QONNX; with gamma < 0 the polarity is -1.
    Hand table (docs/semantics.md §10.3), tau = mu integer: gamma > 0: s = mu (v > 0) or mu - 1
    (v >= 0), polarity +1; gamma < 0: s = mu - 1 (v > 0) or mu (v >= 0), polarity -1."""
    _needs_runtime(kind)
    mu = np.array([0, 1, -1, 2, 0, -2], np.float32)
    gamma = np.array([1, -1, 1, -1, -1, 1], np.float32)
    imported = import_model(save_graph(tie_graph(kind, mu, gamma), tmp_path), z=3, input_map="x")
    thr = imported.model.layers[1]
    assert isinstance(thr, Threshold)
    up = TIE_UP[kind]
    expected_s = [int(m) - 1 if (g > 0) == up else int(m) for m, g in zip(mu, gamma)]
    assert list(thr.thresholds) == expected_s
    assert list(thr.polarity) == [1 if g > 0 else -1 for g in gamma]
    x = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 4), -1).reshape(-1, 4)      # all 7^4 inputs
    h = FastEngine(imported.model).outputs(x)[0]
    assert np.sum(h == mu) > 100            # the ties really occur
    report = check(imported, x)
    assert report.ok and [a.differ for a in report.layers] == [0]
    assert report.predictions_agree == len(x)


def test_torch_sign_zero_is_reported_and_explained(tmp_path):
    """Property: ONNX Sign outputs a third value 0 at an exact tie; the import lists the
    affected channels and --check explains every difference as "Sign output 0", none other."""
    mu = np.array([0, 1, -1, 2, 0, -2], np.float32)
    gamma = np.array([1, -1, 1, -1, -1, 1], np.float32)
    imported = import_model(save_graph(tie_graph("sign_ste", mu, gamma), tmp_path), z=3, input_map="x")
    assert any("Sign outputs 0" in n and "6 channel(s)" in n for n in imported.notes)
    x = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 4), -1).reshape(-1, 4)
    report = check(imported, x)
    assert report.ok
    assert report.layers[0].differ == report.layers[0].explained > 0
    assert all("Sign output 0" in line for line in report.explained if "layer" in line)


# -- batch norm fused or not, both block orders, padding, exporter subgraphs -------------------

def _fc_graph(rng, fused: bool, params, w1, w2):
    g = Graph([8])
    if fused:   # W' = W gamma/sigma per output channel, bias beta - mu gamma/sigma, as an exporter fuses
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        k = gamma / np.sqrt(var + 1e-5)
        h = g.op("Gemm", ["x", g.const(w1 * k[:, None]), g.const(beta - mean * k)], transB=1)
    else:
        h = batchnorm(g, g.op("Gemm", ["x", g.const(w1)], transB=1), params)
    a = binarise(g, h, "where")
    return g.model(g.op("Mul", [g.op("Gemm", [a, g.const(w2)], transB=1), g.const(3.0)]))


def test_fused_batch_norm_gives_the_same_metrics(tmp_path):
    """Property: batch norm fused into the Gemm (scaled weights + bias, gamma < 0 flips the
    weights' signs) imports to a model with the same predictions and the same T tuple as
    the unfused graph (the margin |h - s - 1/2| is symmetric under h -> -h)."""
    rng = np.random.default_rng(2)
    w1, w2 = signs(rng, (12, 8)), signs(rng, (4, 12))
    params = bn_params(rng, 12, 4.0, negative=5)
    # keep tau = mu - beta sigma / gamma away from integers, so float rounding cannot matter
    gamma, beta, _, var = params
    tau = np.floor(rng.uniform(-6, 6, 12)) + rng.uniform(0.2, 0.8, 12)
    params[2] = (tau + beta * np.sqrt(var + 1e-5) / gamma).astype(np.float32)
    plain = import_model(save_graph(_fc_graph(rng, False, params, w1, w2), tmp_path, "a.onnx"), z=16)
    fused = import_model(save_graph(_fc_graph(rng, True, params, w1, w2), tmp_path, "b.onnx"), z=16)
    assert plain.model.layers[1].polarity.count(-1) == 5          # gamma < 0: polarity -1
    assert fused.model.layers[1].polarity.count(-1) == 0          # fused: the weights flipped instead
    x = rng.integers(-16, 17, (500, 8))
    a, b = FastEngine(plain.model), FastEngine(fused.model)
    assert np.array_equal(a.predictions(x), b.predictions(x))
    assert a.tolerance(x).overall == b.tolerance(x).overall
    for imported in (plain, fused):
        report = check(imported, x)
        assert report.ok and report.predictions_agree == len(x)


def _cnn_graph(rng, order: str, exact: bool):
    """conv(pad 1) -> [BN -> sign -> pool | pool -> BN -> sign] -> conv(pad 0) -> pool -> BN -> sign
    -> flatten (dynamic Reshape) -> MatMul [K, N] -> BN -> sign -> Gemm -> Mul: the patterns of
    torch.onnx.export, with the conv weights as latent floats binarised by a subgraph."""
    g = Graph([2, 10, 10])
    x = "x" if exact else g.op("Div", ["x", g.const(15.0)])
    h = g.op("Conv", [x, latent_weight(g, rng.normal(size=(4, 2, 3, 3)).astype(np.float32))],
             pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    scale = 18.0 if exact else 18.0 / 15
    if order == "thr-pool":
        a = g.op("MaxPool", [binarise(g, batchnorm(g, h, bn_params(rng, 4, scale, 2)), "where")],
                 kernel_shape=[2, 2], strides=[2, 2])
    else:
        a = binarise(g, batchnorm(g, g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2]),
                                  bn_params(rng, 4, scale, 2)), "sign_ste")
    h = g.op("Conv", [a, g.const(signs(rng, (6, 4, 3, 3)))], kernel_shape=[3, 3])            # 5x5 -> 3x3
    h = g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])                           # -> 1x1
    a = binarise(g, batchnorm(g, h, bn_params(rng, 6, 6.0, 3)), "where")
    f = dynamic_flatten(g, a)
    h = g.op("MatMul", [f, latent_weight(g, rng.normal(size=(8, 6)).astype(np.float32), transpose=True)])
    a = binarise(g, batchnorm(g, h, bn_params(rng, 8, 2.0, 2)), "cast")
    s = g.op("Gemm", [a, g.const(signs(rng, (5, 8)))], transB=1)
    return g.model(g.op("Mul", [s, g.const(0.25)]))


@pytest.mark.parametrize("order", ["thr-pool", "pool-thr"])
@pytest.mark.parametrize("exact", [True, False])
def test_cnn_imports_and_agrees_with_onnxruntime(order, exact, tmp_path):
    """Property: a CNN with padding 1, either block order, latent-weight subgraphs, a dynamic
    flatten and MatMul/Gemm imports, and every threshold layer's signs and every prediction
    equal onnxruntime's (exactly with integer inputs fed as x; up to reported float ties
    with x / Z fed through a Div node)."""
    rng = np.random.default_rng(3 + exact)
    imported = import_model(save_graph(_cnn_graph(rng, order, exact), tmp_path), z=15,
                            input_map="x" if exact else "x")
    types = [layer.type for layer in imported.model.layers]
    block = ["threshold", "maxpool2d"] if order == "thr-pool" else ["maxpool2d", "threshold"]
    assert types[:3] == ["conv2d"] + block
    assert imported.model.layers[0].padding == 1
    x = rng.integers(0, 16, (400, 2, 10, 10))
    report = check(imported, x)
    assert report.ok, report.unexplained[:3]
    if exact:
        assert all(a.differ == 0 for a in report.layers) and report.predictions_agree == len(x)
    positions = 10 * 10 if order == "thr-pool" else 5 * 5         # the first threshold sees these
    assert len(report.layers) == 3 and report.layers[0].entries == 400 * 4 * positions


def test_input_normalisation_in_graph_or_by_option(tmp_path):
    """Property: a graph that normalises its input itself ((x/Z - m) / s as Sub and Div nodes)
    and the same graph without them, imported with --input '(x/Z-m)/s', are the same model;
    both agree with onnxruntime."""
    rng = np.random.default_rng(5)
    w1, w2 = signs(rng, (6, 9)), signs(rng, (3, 6))
    params = bn_params(rng, 6, 3.0, 2)

    def graph(normalise: bool):
        g = Graph([9])
        x = g.op("Div", [g.op("Sub", [g.op("Div", ["x", g.const(255.0)]), g.const(0.5)]), g.const(0.25)]) \
            if normalise else "x"
        a = binarise(g, batchnorm(g, g.op("Gemm", [x, g.const(w1)], transB=1), params), "where")
        return g.model(g.op("Gemm", [a, g.const(w2)], transB=1))

    inside = import_model(save_graph(graph(True), tmp_path, "in.onnx"), z=255, input_map="x")
    option = import_model(save_graph(graph(False), tmp_path, "opt.onnx"), z=255, input_map="(x/Z-0.5)/0.25")
    x = rng.integers(0, 256, (300, 9))
    assert np.array_equal(FastEngine(inside.model).predictions(x), FastEngine(option.model).predictions(x))
    for imported in (inside, option):
        assert check(imported, x).ok


def test_input_offset_with_padding_is_refused(tmp_path):
    """Property: with padding, an input offset's share of h depends on the position, so the
    fold refuses and says why (and how to avoid it)."""
    rng = np.random.default_rng(6)
    g = Graph([1, 6, 6])
    h = g.op("Conv", ["x", g.const(signs(rng, (2, 1, 3, 3)))], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    a = binarise(g, batchnorm(g, h, bn_params(rng, 2, 3.0)), "where")
    model = g.model(g.op("Gemm", [dynamic_flatten(g, a), g.const(signs(rng, (2, 72)))], transB=1))
    path = save_graph(model, tmp_path)
    assert import_model(path, z=255).model.layers[0].padding == 1          # x/Z: no offset, fine
    with pytest.raises(RefusedError, match=r"Conv.*padding 1 with an input offset"):
        import_model(path, z=255, input_map="2x/Z-1")


# -- what refbnn cannot represent is refused, naming the node ---------------------------------

def _refusal_graph(case: str):
    rng = np.random.default_rng(7)
    g = Graph([1, 6, 6])
    w = signs(rng, (2, 1, 3, 3))
    if case == "non-binary weights":
        w = w * np.array([1, 1, 1, 1, 1, 1, 1, 1, 0.5], np.float32).reshape(1, 1, 3, 3)
    attrs = {"strides": [2, 2]} if case == "stride 2" else {}
    h = g.op("Conv", ["x", g.const(w)], kernel_shape=[3, 3], **attrs)
    if case == "relu":
        h = g.op("Relu", [h])
    a = binarise(g, batchnorm(g, h, bn_params(rng, 2, 3.0)), "where")
    if case == "pool 3x3":
        a = g.op("MaxPool", [a], kernel_shape=[3, 3], strides=[3, 3])
    if case == "average pool":
        a = g.op("AveragePool", [a], kernel_shape=[2, 2], strides=[2, 2])
    if case == "residual add":
        a = g.op("Add", [a, g.op("Mul", [a, g.const(0.5)])])
    if case == "2-bit quant":
        a = g.op("Quant", [h, g.const(1.0), g.const(0.0), g.const(2.0)], domain=QONNX, signed=1, narrow=0,
                 rounding_mode="ROUND")
    if case == "multithreshold 3 levels":
        a = g.op("MultiThreshold", [h, g.const(np.zeros((2, 2)))], domain=QONNX, out_dtype="UINT2")
    f = dynamic_flatten(g, a)
    k = 2 * (2 if case in ("stride 2", "pool 3x3") else 4) ** 2 // (1 if case != "average pool" else 4)
    if case == "average pool":
        k = 2 * 2 * 2
    bias = [0.0, 0.5] if case == "output bias" else None
    scale = [1.0, 2.0] if case == "per-class scale" else 1.0
    s = g.op("Gemm", [f, g.const(signs(rng, (2, k)))] + ([g.const(bias)] if bias else []), transB=1)
    return g.model(g.op("Mul", [s, g.const(scale)]))


REFUSALS = {   # case -> (op named in the message, what the message says)
    "non-binary weights": ("Conv", "binary weights expected"),
    "stride 2": ("Conv", "stride"),
    "relu": ("Relu", "a real-valued activation"),
    "pool 3x3": ("MaxPool", "pooling other than 2x2"),
    "average pool": ("AveragePool", "average pooling; refbnn pools with 2x2 max pooling"),
    "residual add": ("Add", "two activations"),
    "2-bit quant": ("Quant", "a quantizer of 2 bits gives activations with more than two levels"),
    "multithreshold 3 levels": ("MultiThreshold", "more than two levels"),
    "output bias": ("Gemm", "bias on the output layer"),
    "per-class scale": ("Gemm", "scale differs between classes"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_unrepresentable_graphs_are_refused_naming_the_node(case, tmp_path):
    """Property: each graph that refbnn cannot represent exactly is refused with the op (and
    node) that makes it so; nothing is approximated."""
    op, reason = REFUSALS[case]
    with pytest.raises(RefusedError) as e:
        import_model(save_graph(_refusal_graph(case), tmp_path), z=255)
    assert f"({op})" in str(e.value) and reason in str(e.value) and "net.onnx" in str(e.value)


# -- the check finds real disagreements ----------------------------------------------------

def test_check_reports_a_wrong_threshold_as_unexplained(tmp_path):
    """Property: a model that differs from the source (one threshold moved by 3) fails the
    check with the layer, channel and h named; the correct one passes."""
    mu = np.array([0, 1, -1, 2, 0, -2], np.float32)
    gamma = np.array([1, -1, 1, -1, -1, 1], np.float32)
    imported = import_model(save_graph(tie_graph("where", mu, gamma), tmp_path), z=3, input_map="x")
    x = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 4), -1).reshape(-1, 4)
    assert check(imported, x).ok
    thr = imported.model.layers[1]
    wrong = Threshold((thr.thresholds[0] + 3,) + thr.thresholds[1:], thr.polarity)
    imported.model = type(imported.model).build(imported.model.input_shape, imported.model.Z,
                                                (imported.model.layers[0], wrong) + imported.model.layers[2:])
    report = check(imported, x)
    assert not report.ok
    assert "layer 1" in report.unexplained[0] and "channel 0" in report.unexplained[0]


# -- an output normalisation keeps the prediction -------------------------------------------

def _normalised_output_graph(kind: str, opset: int = 17):
    """An FC whose class scores are normalised per input, as exporters write it: a layer norm
    decomposed into ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div (opset 13 style) or the
    LayerNormalization op, then a scale and bias; or an L2 normalisation x / ReduceL2(x)."""
    rng = np.random.default_rng(10)
    g = Graph([6], opset=opset)
    a = binarise(g, batchnorm(g, g.op("Gemm", ["x", g.const(signs(rng, (8, 6)))], transB=1),
                              bn_params(rng, 8, 2.0)), "where")
    s = g.op("Gemm", [a, g.const(signs(rng, (5, 8)))], transB=1)
    if kind in ("decomposed", "reversed", "per-class gamma"):
        d = g.op("Sub", [s, g.op("ReduceMean", [s], axes=[-1])])
        var = g.op("ReduceMean", [g.op("Pow", [d, g.const(2.0)])], axes=[-1])
        n = g.op("Div", [d, g.op("Sqrt", [g.op("Add", [var, g.const(1e-5)])])])
        if kind == "reversed":
            n = g.op("Sub", [g.op("ReduceMean", [s], axes=[-1]), s])
        gamma = np.array([1, 1, 2, 1, 1], np.float32) if kind == "per-class gamma" else np.full(5, 1.5, np.float32)
        return g.model(g.op("Add", [g.op("Mul", [n, g.const(gamma)]), g.const(np.full(5, 0.1, np.float32))]))
    if kind == "layernorm":
        return g.model(g.op("LayerNormalization", [s, g.const(np.full(5, 2.0)), g.const(np.zeros(5))], axis=-1))
    n = g.op("Div", [s, g.op("Add", [g.op("ReduceL2", [s], axes=[1]), g.const(1e-6)])])
    return g.model(g.op("LogSoftmax", [n], axis=1))


@pytest.mark.parametrize("kind, opset", [("decomposed", 13), ("layernorm", 17), ("l2", 13)])
def test_output_normalisation_keeps_the_prediction(kind, opset, tmp_path):
    """Property: a per-input normalisation of the class scores (subtract the mean, divide by a
    positive per-input value, one positive scale for all classes) imports, and the
    predictions equal onnxruntime's on every input."""
    imported = import_model(save_graph(_normalised_output_graph(kind, opset), tmp_path), z=4, input_map="x")
    x = np.random.default_rng(11).integers(-4, 5, (500, 6))
    report = check(imported, x)
    assert report.ok and report.predictions_agree == len(x)


@pytest.mark.parametrize("kind, message", [("reversed", "two activations"),
                                           ("per-class gamma", "can change the prediction")])
def test_output_maps_that_can_reorder_classes_are_refused(kind, message, tmp_path):
    """Property: mean(x) - x (reverses the order) and a per-class scale after the normalisation
    are refused, naming the node."""
    with pytest.raises(RefusedError, match=message):
        import_model(save_graph(_normalised_output_graph(kind, 13), tmp_path), z=4, input_map="x")


# -- damaged sources: exit 0, 1 or 2 with one line, never an internal error ------------------

@pytest.fixture(scope="module")
def valid_sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    onnx.save(_cnn_graph(np.random.default_rng(12), "pool-thr", True), str(d / "net.onnx"))
    np.savez(d / "sd.npz", **fc_state(np.random.default_rng(13)))
    (d / "layout.json").write_text(json.dumps(FC_LAYOUT))
    (d / "sd.pt").write_bytes((Path(__file__).parent / "data" / "fc_state.pt").read_bytes())
    if importlib.util.find_spec("h5py"):
        from keras_files import larq_cnn, write_h5, write_keras
        config, weights = larq_cnn(np.random.default_rng(14))
        write_h5(d / "model.h5", config, weights)
        write_keras(d / "model.keras", config, weights)
    return d


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_sources_are_bad_input_not_crashes(valid_sources, tmp_path, data):
    """Property: any damage to an ONNX file, a state dict (.npz, .pt), a layout file or a
    Keras file (.h5, .keras) (bytes flipped, inserted, deleted, truncated) gives exit 0 or 2
    with one line, never a traceback, and never hangs (libhdf5 may loop on a damaged file:
    its read is refused after READ_TIMEOUT, here 10 s)."""
    from refbnn.importers import kerasfile as keras

    names = sorted(p.name for p in valid_sources.iterdir())
    which = data.draw(st.sampled_from(names))
    for name in names:
        raw = (valid_sources / name).read_bytes()
        (tmp_path / name).write_bytes(damaged(raw, data) if name == which else raw)
    if which in ("net.onnx", "model.h5", "model.keras"):
        args = [which, "--z", "15", "--input", "x"]
    else:
        args = ["sd.pt" if which == "sd.pt" else "sd.npz", "--layout", str(tmp_path / "layout.json")]
    saved, keras.READ_TIMEOUT = keras.READ_TIMEOUT, 10
    try:
        r = CliRunner().invoke(main, ["import", str(tmp_path / args[0])] + args[1:] + ["-o", str(tmp_path / "m.json")])
    finally:
        keras.READ_TIMEOUT = saved
    assert_clean_exit(r)


# -- what the import reports ------------------------------------------------------------------

def test_gamma_zero_and_float_ties_are_reported(tmp_path):
    """Property: gamma = 0 makes a channel constant (its threshold outside the reachable h,
    |h| <= 4 * 3 = 12 here: +1 for beta > 0, so s = -13; -1 for beta < 0, so s = 12), and a
    tau within float rounding of an integer (2 + 1e-7 here) is listed with its channel."""
    rng = np.random.default_rng(14)
    g = Graph([4])
    gamma = np.array([0.0, 0.0, 1.0, 1.0], np.float32)
    beta = np.array([0.5, -0.5, 0.0, 0.0], np.float32)
    mean = np.array([0.0, 0.0, 2.0 + 1e-7, 0.5], np.float32)      # tau = mean (beta = 0)
    h = batchnorm(g, g.op("Gemm", ["x", g.const(signs(rng, (4, 4)))], transB=1),
                  [gamma, beta, mean, np.ones(4, np.float32)], eps=0.0)
    model = g.model(g.op("Gemm", [binarise(g, h, "where"), g.const(signs(rng, (2, 4)))], transB=1))
    imported = import_model(save_graph(model, tmp_path), z=3, input_map="x")
    thr = imported.model.layers[1]
    assert thr.thresholds[:2] == (-13, 12) and thr.thresholds[3] == 0
    notes = " ".join(imported.notes)
    assert "2 channel(s) [0, 1] have a constant output" in notes
    assert "of an integer for 1 channel(s) [2]" in notes


def test_missing_extra_is_named(tmp_path, monkeypatch):
    """Property: without onnx installed, importing an ONNX file says which extra to install."""
    import sys

    mu = np.zeros(6, np.float32)
    src = save_graph(tie_graph("where", mu, np.ones(6, np.float32)), tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)      # `import onnx` now raises ImportError
    r = CliRunner().invoke(main, ["import", src, "--z", "3", "-o", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and "pip install 'refbnn[import]'" in r.output
