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
from onnx_graphs import (QONNX, Graph, batchnorm, binarise, bn_params, dynamic_flatten, finn_tfc_graph,  # noqa: E402
                         latent_weight, signs, tf2onnx_larq_graph)

from refbnn.cli import main  # noqa: E402
from refbnn.engines.fast import FastEngine  # noqa: E402
from refbnn.formats.datafile import write_data  # noqa: E402
from refbnn.formats.files import InputError  # noqa: E402
from refbnn.importers import RefusedError, import_model  # noqa: E402
from refbnn.importers.check import check  # noqa: E402
from refbnn.semantics.model import Threshold  # noqa: E402

QONNX_KINDS = {"bipolar", "quant1", "quant1u", "multithreshold"}


def _save(model, tmp_path, name="net.onnx") -> str:
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def _needs_runtime(kind: str) -> None:
    if kind in QONNX_KINDS:
        pytest.importorskip("qonnx")


# -- exact ties: every sign convention folds to the right integer threshold ------------------

def _tie_graph(kind: str, mu: np.ndarray, gamma: np.ndarray):
    """x [4] -> Gemm (+-1, transB) -> BN(gamma = +-1, beta = 0, var = 1, eps = 0) -> sign -> Gemm -> Mul 0.5.
    With the input fed as x, every float is an exact integer, so v = gamma (h - mu) is 0 exactly at h = mu."""
    rng = np.random.default_rng(1)
    g = Graph([4])
    w1, w2 = signs(rng, (6, 4)), signs(rng, (3, 6))
    h = g.op("Gemm", ["x", g.const(w1)], transB=1)
    v = batchnorm(g, h, [gamma, np.zeros(6, np.float32), mu, np.ones(6, np.float32)], eps=0.0)
    a = binarise(g, v, kind, channels=6)
    s = g.op("Gemm", [a, g.const(w2)], transB=1)
    return g.model(g.op("Mul", [s, g.const(0.5)]))


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
    imported = import_model(_save(_tie_graph(kind, mu, gamma), tmp_path), z=3, input_map="x")
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
    imported = import_model(_save(_tie_graph("sign_ste", mu, gamma), tmp_path), z=3, input_map="x")
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
    plain = import_model(_save(_fc_graph(rng, False, params, w1, w2), tmp_path, "a.onnx"), z=16)
    fused = import_model(_save(_fc_graph(rng, True, params, w1, w2), tmp_path, "b.onnx"), z=16)
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
    imported = import_model(_save(_cnn_graph(rng, order, exact), tmp_path), z=15,
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

    inside = import_model(_save(graph(True), tmp_path, "in.onnx"), z=255, input_map="x")
    option = import_model(_save(graph(False), tmp_path, "opt.onnx"), z=255, input_map="(x/Z-0.5)/0.25")
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
    path = _save(model, tmp_path)
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
        import_model(_save(_refusal_graph(case), tmp_path), z=255)
    assert f"({op})" in str(e.value) and reason in str(e.value) and "net.onnx" in str(e.value)


# -- the check finds real disagreements ----------------------------------------------------

def test_check_reports_a_wrong_threshold_as_unexplained(tmp_path):
    """Property: a model that differs from the source (one threshold moved by 3) fails the
    check with the layer, channel and h named; the correct one passes."""
    mu = np.array([0, 1, -1, 2, 0, -2], np.float32)
    gamma = np.array([1, -1, 1, -1, -1, 1], np.float32)
    imported = import_model(_save(_tie_graph("where", mu, gamma), tmp_path), z=3, input_map="x")
    x = np.stack(np.meshgrid(*[np.arange(-3, 4)] * 4), -1).reshape(-1, 4)
    assert check(imported, x).ok
    thr = imported.model.layers[1]
    wrong = Threshold((thr.thresholds[0] + 3,) + thr.thresholds[1:], thr.polarity)
    imported.model = type(imported.model).build(imported.model.input_shape, imported.model.Z,
                                                (imported.model.layers[0], wrong) + imported.model.layers[2:])
    report = check(imported, x)
    assert not report.ok
    assert "layer 1" in report.unexplained[0] and "channel 0" in report.unexplained[0]


# -- the command line ---------------------------------------------------------------------

def test_cli_import_writes_the_model_and_checks(tmp_path):
    """Property: `refbnn import --check` on a faithful graph exits 0, writes a model that
    `refbnn metrics` reads, and its JSON says how many predictions agree."""
    mu = np.array([0, 1, -1, 2, 0, -2], np.float32)
    gamma = np.array([1, -1, 1, -1, -1, 1], np.float32)
    src = _save(_tie_graph("where", mu, gamma), tmp_path)
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
    src = _save(_tie_graph("where", mu, gamma), tmp_path)
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
    src = _save(_tie_graph("where", mu, np.ones(6, np.float32)), tmp_path)
    with pytest.raises(InputError, match="only for state dicts"):
        import_model(src, z=1, layout=str(tmp_path / "l.json"))


# -- state dicts (.npz needs no torch) with a layout file --------------------------------------

FC_LAYOUT = {"format": "refbnn-layout", "version": 1, "input": {"shape": [12], "Z": 16},
             "steps": [{"op": "linear", "prefix": "fc1"}, {"op": "batchnorm", "prefix": "bn1"},
                       {"op": "hardtanh"}, {"op": "sign"}, {"op": "linear", "prefix": "fc2"},
                       {"op": "scale", "key": "scale"}]}


def _fc_state(rng):
    return {"fc1.weight": rng.normal(size=(10, 12)), "bn1.weight": rng.normal(size=10),
            "bn1.bias": rng.normal(size=10), "bn1.running_mean": rng.normal(size=10) * 0.5,
            "bn1.running_var": rng.uniform(0.5, 2, 10), "bn1.num_batches_tracked": np.array(7),
            "fc2.weight": rng.normal(size=(4, 10)), "scale": np.array(0.3)}


def test_npz_state_dict_matches_a_float64_forward(tmp_path):
    """Property: an FC state dict of the authors' style (latent weights binarised as +1 iff
    w > 0, BN, hardtanh, sign with sign(0) = -1, a final scale), imported with its layout,
    predicts what a float64 forward written here predicts on every input."""
    rng = np.random.default_rng(8)
    sd = _fc_state(rng)
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
    """`tests/data/fc_state.pt` is `_fc_state(np.random.default_rng(8))` saved by torch 2.13 as
    float32 tensors (`torch.save({k: torch.tensor(v, dtype=torch.float32), ...})`); read
    without torch (refbnn/importers/torchfile.py), it gives the model its float32-rounded
    values give as an .npz."""
    from pathlib import Path

    pt = Path(__file__).parent / "data" / "fc_state.pt"
    sd = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v)
          for k, v in _fc_state(np.random.default_rng(8)).items()}
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
    layout, sd = json.loads(json.dumps(FC_LAYOUT)), _fc_state(rng)
    edit(layout, sd)
    np.savez(tmp_path / "sd.npz", **sd)
    (tmp_path / "layout.json").write_text(json.dumps(layout))
    with pytest.raises(InputError) as e:
        import_model(tmp_path / "sd.npz", layout=str(tmp_path / "layout.json"))
    assert message in str(e.value)
    r = CliRunner().invoke(main, ["import", str(tmp_path / "sd.npz"), "--layout", str(tmp_path / "layout.json"),
                                  "-o", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and message in r.output and not (tmp_path / "m.json").exists()


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
    imported = import_model(_save(_normalised_output_graph(kind, opset), tmp_path), z=4, input_map="x")
    x = np.random.default_rng(11).integers(-4, 5, (500, 6))
    report = check(imported, x)
    assert report.ok and report.predictions_agree == len(x)


@pytest.mark.parametrize("kind, message", [("reversed", "two activations"),
                                           ("per-class gamma", "can change the prediction")])
def test_output_maps_that_can_reorder_classes_are_refused(kind, message, tmp_path):
    """Property: mean(x) - x (reverses the order) and a per-class scale after the normalisation
    are refused, naming the node."""
    with pytest.raises(RefusedError, match=message):
        import_model(_save(_normalised_output_graph(kind, 13), tmp_path), z=4, input_map="x")


# -- damaged sources: exit 0, 1 or 2 with one line, never an internal error ------------------

@pytest.fixture(scope="module")
def valid_sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("sources")
    onnx.save(_cnn_graph(np.random.default_rng(12), "pool-thr", True), str(d / "net.onnx"))
    np.savez(d / "sd.npz", **_fc_state(np.random.default_rng(13)))
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
    imported = import_model(_save(model, tmp_path), z=3, input_map="x")
    thr = imported.model.layers[1]
    assert thr.thresholds[:2] == (-13, 12) and thr.thresholds[3] == 0
    notes = " ".join(imported.notes)
    assert "2 channel(s) [0, 1] have a constant output" in notes
    assert "of an integer for 1 channel(s) [2]" in notes


def test_missing_extra_is_named(tmp_path, monkeypatch):
    """Property: without onnx installed, importing an ONNX file says which extra to install."""
    import sys

    mu = np.zeros(6, np.float32)
    src = _save(_tie_graph("where", mu, np.ones(6, np.float32)), tmp_path)
    monkeypatch.setitem(sys.modules, "onnx", None)      # `import onnx` now raises ImportError
    r = CliRunner().invoke(main, ["import", src, "--z", "3", "-o", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and "pip install 'refbnn[import]'" in r.output


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
    imported = import_model(_save(_finn_zoo_graph(rng), tmp_path), z=4, input_map="x")
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
    imported = import_model(_save(tf2onnx_larq_graph(rng, channels, input_quantizer), tmp_path), z=255,
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
    imported = import_model(_save(graph, tmp_path), z=255, input_map="x")
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
        import_model(_save(g.model(h), tmp_path), z=4, input_map="x")
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
    reference = import_model(_save(finn_tfc_graph(np.random.default_rng(8), threshold_domain="qonnx.custom_op.general"
                                                  if threshold_domain else ""), tmp_path, "q.onnx"), z=255)
    imported = import_model(_save(finn_tfc_graph(np.random.default_rng(8), domain, threshold_domain), tmp_path),
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
    imported = import_model(_save(finn_tfc_graph(rng), tmp_path), z=255, input_map="x/Z")
    assert imported.model.input_threshold == Threshold((127,) * 16)
    assert not imported.model.neuron_layers[0].first
    x = rng.integers(0, 256, (120, 16))
    report = check(imported, x)
    assert report.ok and report.predictions_agree == len(x), report.unexplained[:3]
    assert report.layers[0].differ == 0 and report.layers[0].entries == 120 * 6
