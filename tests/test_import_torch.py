"""refbnn import on models made by the real frameworks: a PyTorch BNN exported with both
ONNX exporters, a Brevitas w1a1 network exported to QONNX, and a state dict of the paper
authors' style with a layout file. Each must agree with the framework's own predictions
on every input that is not a float tie. Skipped where torch (or brevitas) is missing:
`pip install -e '.[test,torch]'` (and `pip install brevitas onnxoptimizer`) runs them."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from refbnn.cli import main  # noqa: E402
from refbnn.engines.fast import FastEngine  # noqa: E402
from refbnn.formats.datafile import write_data  # noqa: E402
from refbnn.formats.files import InputError  # noqa: E402
from refbnn.importers import RefusedError, import_model  # noqa: E402
from refbnn.importers.check import check  # noqa: E402
from refbnn.semantics.model import Threshold  # noqa: E402


class SignSTE(torch.autograd.Function):
    """sign with a straight-through estimator, as BNN code writes it: +1 iff x > 0."""

    @staticmethod
    def forward(ctx, x):
        return torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))

    @staticmethod
    def backward(ctx, g):
        return g


class BinaryConv2d(nn.Conv2d):
    def forward(self, x):
        return F.conv2d(x, SignSTE.apply(self.weight), None, 1, self.padding)


class BinaryLinear(nn.Linear):
    def forward(self, x):
        return F.linear(x, SignSTE.apply(self.weight))


def _act(x):
    """hardtanh, then x + (sign(x) - x).detach(): torch.sign, 0 at 0."""
    x = F.hardtanh(x)
    return x + (torch.sign(x) - x).detach()


class PlainBNN(nn.Module):
    """The ordinary PyTorch way: conv(pad 1) -> BN -> act -> pool, conv -> pool -> BN -> act,
    linear -> BN -> act, linear * scale; one channel of the first BN has gamma < 0."""

    def __init__(self):
        super().__init__()
        self.c1, self.bn1 = BinaryConv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.bn2 = BinaryConv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8)
        self.fc, self.bn3 = BinaryLinear(8 * 2 * 2, 16, bias=False), nn.BatchNorm1d(16)
        self.out = BinaryLinear(16, 10, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        x = F.max_pool2d(_act(self.bn1(self.c1(x))), 2)
        x = _act(self.bn2(F.max_pool2d(self.c2(x), 2)))
        x = _act(self.bn3(self.fc(torch.flatten(x, 1))))
        return self.out(x) * self.scale


def _randomise(net, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 4 + 0.5)
        net.bn1.weight[0] = -abs(float(net.bn1.weight[0]))        # a channel with gamma < 0
        if hasattr(net, "scale"):
            net.scale.fill_(0.5)
    return net.eval()


def _export(net, u, path: str, dynamo: bool, opset: int) -> str:
    """torch.onnx.export with a dynamic batch, by the dynamo or the TorchScript exporter."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            pytest.importorskip("onnxscript")
            torch.onnx.export(net, (u[:2],), path, dynamo=True, opset_version=opset,
                              dynamic_shapes=({0: torch.export.Dim("batch")},))
        else:
            torch.onnx.export(net, (u[:2],), path, dynamo=False, opset_version=opset, input_names=["x"],
                              dynamic_axes={"x": {0: "b"}})
    return path


def _agree_with_framework(imported, x: np.ndarray, theirs: np.ndarray) -> None:
    """Every input where refbnn and the framework predict differently is a float tie that
    the check explains; every other input agrees."""
    ours = FastEngine(imported.model).predictions(x)
    report = check(imported, x)
    assert report.ok, report.unexplained[:3]
    explained = {int(line.split(":")[0].split()[1]) for line in report.explained}
    differ = set(np.flatnonzero(ours != theirs).tolist())
    assert differ <= explained
    assert len(differ) <= len(x) // 50


@pytest.mark.parametrize("dynamo, opset", [(False, 17), (False, 20), (True, 18), (True, 20)],
                         ids=["torchscript-17", "torchscript-20", "dynamo-18", "dynamo-20"])
def test_pytorch_bnn_exported_to_onnx_imports_and_agrees(dynamo, opset, tmp_path):
    """Property: a BNN written the ordinary PyTorch way and exported with torch.onnx.export
    (either exporter) imports, with gamma < 0 as polarity -1, and predicts what torch
    predicts on every input that is not a float tie."""
    net = _randomise(PlainBNN())
    x = np.random.default_rng(0).integers(0, 256, (400, 1, 12, 12))
    u = torch.tensor(x / 255.0, dtype=torch.float32)
    path = _export(net, u, str(tmp_path / "net.onnx"), dynamo, opset)
    imported = import_model(path, z=255)
    assert [layer.type for layer in imported.model.layers] == [
        "conv2d", "threshold", "maxpool2d", "conv2d", "maxpool2d", "threshold", "flatten", "linear", "threshold",
        "linear"]
    # gamma < 0 is polarity -1, unless the exporter fused batch norm into the conv (the dynamo
    # exporter's optimiser does): then the channel's weights are negated instead.
    conv = imported.model.layers[0].weight
    bits = np.array(conv.bits.tolist()).reshape(conv.shape)
    torch_bits = (net.c1.weight.detach().numpy() > 0)
    assert (imported.model.layers[1].polarity[0] == -1 and np.array_equal(bits[0], torch_bits[0])) or \
        (imported.model.layers[1].polarity[0] == 1 and np.array_equal(bits[0], ~torch_bits[0]))
    with torch.no_grad():
        theirs = net(u).argmax(1).numpy()
    _agree_with_framework(imported, x, theirs)


def test_brevitas_w1a1_qonnx_imports_and_agrees(tmp_path):
    """Property: a Brevitas w1a1 network (binary weights and activations, BN, max pool)
    exported with export_qonnx imports and predicts what Brevitas predicts."""
    pytest.importorskip("brevitas")
    pytest.importorskip("onnxoptimizer")
    pytest.importorskip("qonnx")
    import brevitas.nn as qnn
    from brevitas.export import export_qonnx
    from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst

    class W1A1(nn.Module):
        def __init__(self):
            super().__init__()
            wq = SignedBinaryWeightPerTensorConst
            self.c1 = qnn.QuantConv2d(1, 6, 3, padding=1, bias=False, weight_quant=wq)
            self.bn1 = nn.BatchNorm2d(6)
            self.a1 = qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
            self.fc = qnn.QuantLinear(6 * 4 * 4, 12, bias=False, weight_quant=wq)
            self.bn2 = nn.BatchNorm1d(12)
            self.a2 = qnn.QuantIdentity(act_quant=SignedBinaryActPerTensorConst)
            self.out = qnn.QuantLinear(12, 10, bias=False, weight_quant=wq)

        def forward(self, x):
            x = F.max_pool2d(self.a1(self.bn1(self.c1(x))), 2)
            return self.out(self.a2(self.bn2(self.fc(torch.flatten(x, 1)))))

    net = _randomise(W1A1(), seed=1)
    x = np.random.default_rng(1).integers(0, 256, (120, 1, 8, 8))
    u = torch.tensor(x / 255.0, dtype=torch.float32)
    path = str(tmp_path / "w1a1.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(net, u[:1], path)
    imported = import_model(path, z=255)
    assert imported.source.kind == "qonnx"
    assert imported.model.layers[1].polarity[0] == -1
    with torch.no_grad():
        theirs = net(u).argmax(1).numpy()
    _agree_with_framework(imported, x, theirs)


def _bnn_pynq(name: str, seed: int):
    """FINN's reference BNNs as brevitas_examples defines them, untrained (the zoo's
    pretrained weights would need a download), with random batch-norm statistics."""
    bnn_pynq = pytest.importorskip("brevitas_examples.bnn_pynq.models")
    torch.manual_seed(seed)
    net, _ = bnn_pynq.model_with_cfg(name, pretrained=False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-20, 20)
                m.running_var.uniform_(1, 50)
                m.weight.uniform_(-2, 2)
                m.bias.uniform_(-1, 1)
    return net.eval()


@pytest.mark.filterwarnings("ignore")
def test_finn_tfc_w1a1_binarises_its_input_and_agrees_with_brevitas_and_qonnx(tmp_path):
    """Property: FINN's TFC-w1a1 (brevitas_examples.bnn_pynq: reshape, 2x - 1, BipolarQuant on
    the input, four BipolarQuant Gemm layers with batch norm, TensorNorm at the output),
    exported with export_qonnx, imports with the input binarisation x > 127 (§2.6), and the
    QONNX executor and Brevitas agree on every sign and prediction of pixels 0..255."""
    pytest.importorskip("qonnx")
    pytest.importorskip("brevitas")      # torch alone is not enough: skip, do not fail, without it
    from brevitas.export import export_qonnx

    net = _bnn_pynq("tfc_1w1a", seed=0)
    x = np.random.default_rng(2).integers(0, 256, (64, 1, 28, 28))
    u = torch.tensor(x / 255.0, dtype=torch.float32)
    path = str(tmp_path / "tfc.onnx")
    export_qonnx(net, u[:1], path)
    imported = import_model(path, z=255, input_map="x/Z")
    assert imported.model.input_threshold == Threshold((127,))          # 2 x / 255 - 1 >= 0
    assert [layer.type for layer in imported.model.layers] == ["flatten"] + ["linear", "threshold"] * 3 + ["linear"]
    with torch.no_grad():
        theirs = net(u).argmax(1).numpy()
    _agree_with_framework(imported, x, theirs)


@pytest.mark.filterwarnings("ignore")
def test_finn_cnv_w1a1_is_refused_for_its_8_bit_input_quantizer(tmp_path):
    """CNV quantizes its input to 8 bits (a rounding of the pixels, not an affine map):
    refused at that Quant node, with the reason."""
    pytest.importorskip("brevitas")
    from brevitas.export import export_qonnx

    net = _bnn_pynq("cnv_1w1a", seed=0)
    path = str(tmp_path / "cnv.onnx")
    export_qonnx(net, torch.rand(1, 3, 32, 32), path)
    with pytest.raises(RefusedError, match=r"\(Quant\): a quantizer of 8 bits gives activations with more"):
        import_model(path, z=255, input_map="x/Z")


class AuthorsVGG(nn.Module):
    """The paper authors' style: BinaryNet-style layers that binarise their latent weights in
    forward (+1 iff w > 0), conv -> pool -> BN -> hardtanh -> sign, a final positive scale."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.fc1, self.bn2 = nn.Linear(8 * 5 * 5, 16, bias=False), nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 10, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.25))

    def forward(self, x):
        b = lambda w: torch.where(w > 0, 1.0, -1.0)   # noqa: E731
        s = lambda v: torch.where(F.hardtanh(v) > 0, 1.0, -1.0)   # noqa: E731
        x = s(self.bn1(F.max_pool2d(F.conv2d(x, b(self.conv1.weight), padding=1), 2)))
        x = s(self.bn2(F.linear(torch.flatten(x, 1), b(self.fc1.weight))))
        return F.linear(x, b(self.fc2.weight)) * self.scale


LAYOUT = {"format": "refbnn-layout", "version": 1, "input": {"shape": [1, 10, 10], "Z": 255},
          "steps": [{"op": "conv2d", "prefix": "conv1", "padding": 1}, {"op": "maxpool2d"},
                    {"op": "batchnorm", "prefix": "bn1"}, {"op": "hardtanh"}, {"op": "sign"},
                    {"op": "flatten"}, {"op": "linear", "prefix": "fc1"}, {"op": "batchnorm", "prefix": "bn2"},
                    {"op": "hardtanh"}, {"op": "sign"}, {"op": "linear", "prefix": "fc2"},
                    {"op": "scale", "key": "scale"}]}


def test_authors_state_dict_with_layout_imports_and_agrees(tmp_path):
    """Property: a state dict of the authors' style of model, saved with torch.save and read
    weights-only with a layout file, imports (conv -> pool -> BN order) and predicts what
    torch predicts; `refbnn import --check` runs it in torch and passes."""
    net = _randomise(AuthorsVGG(), seed=2)
    sd = tmp_path / "net.pt"
    torch.save(net.state_dict(), sd)
    (tmp_path / "layout.json").write_text(json.dumps(LAYOUT))
    imported = import_model(sd, layout=str(tmp_path / "layout.json"))
    assert [layer.type for layer in imported.model.layers][:3] == ["conv2d", "maxpool2d", "threshold"]
    x = np.random.default_rng(2).integers(0, 256, (300, 1, 10, 10))
    with torch.no_grad():
        theirs = net(torch.tensor(x / 255.0, dtype=torch.float32)).argmax(1).numpy()
    _agree_with_framework(imported, x, theirs)
    write_data(tmp_path / "d.npz", x, theirs)
    r = CliRunner().invoke(main, ["import", str(sd), "--layout", str(tmp_path / "layout.json"),
                                  "-o", str(tmp_path / "m.json"), "--check", str(tmp_path / "d.npz")])
    assert r.exit_code == 0 and "check: OK" in r.output, r.output


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/refbnn-pickle-ran",))


def test_a_pickle_with_code_is_refused_and_not_run(tmp_path):
    """Property: a .pt file whose pickle would run code is refused (weights_only) with exit 2
    naming the file, and the code never runs."""
    import os

    marker = "/tmp/refbnn-pickle-ran"
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({"fc.weight": torch.ones(2, 2), "x": _Evil()}, tmp_path / "evil.pt")
    (tmp_path / "layout.json").write_text(json.dumps(LAYOUT))
    with pytest.raises(InputError, match=r"evil.pt: data.pkl at byte \d+: refused global"):
        import_model(tmp_path / "evil.pt", layout=str(tmp_path / "layout.json"))
    r = CliRunner().invoke(main, ["import", str(tmp_path / "evil.pt"), "--layout", str(tmp_path / "layout.json"),
                                  "-o", str(tmp_path / "m.json")])
    assert r.exit_code == 2 and "evil.pt" in r.output
    assert not os.path.exists(marker) and not (tmp_path / "m.json").exists()


def test_readme_measure_your_own_bnn_workflow(tmp_path, monkeypatch):
    """Property: the "Bring your model in" snippet and commands of the measuring guide work as written:
    a 28x28 PyTorch BNN exported the README's way imports, checks OK, and `inspect`,
    `metrics` and `eval` run on it (exit 0)."""
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parent.parent / "docs" / "guides" / "measure.md").read_text()
    section = guide.split("## Bring your model in", 1)[1].split("\n## ", 1)[0]
    snippet = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    commands = [line.split("#")[0].split() for line in re.findall(r"```bash\n(.*?)```", section, re.S)[0]
                .splitlines() if line.startswith("refbnn ")]

    class FC(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn = BinaryLinear(784, 32, bias=False), nn.BatchNorm1d(32)
            self.out = BinaryLinear(32, 10, bias=False)

        def forward(self, x):
            return self.out(_act(self.bn(self.fc(torch.flatten(x, 1)))))

    g = torch.Generator().manual_seed(4)
    model = FC()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        model.bn.running_mean.copy_(torch.randn(32, generator=g) * 20)
        model.bn.running_var.fill_(100.0)
    model.eval()
    rng = np.random.default_rng(4)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(snippet, {"model": model, "test_images": rng.integers(0, 256, (60, 1, 28, 28)),
                       "test_labels": rng.integers(0, 10, 60)})
    assert [c[1] for c in commands] == ["import", "inspect", "metrics", "eval"]
    for argv in commands:
        r = CliRunner().invoke(main, argv[1:])
        assert r.exit_code == 0, (argv, r.output)
    assert "check: OK" in CliRunner().invoke(main, commands[0][1:]).output


class SpiceStyleFC(nn.Module):
    """The paper authors' activation (SPICE-Torch's FC and VGG3): batch norm, Hardtanh, then
    torch.where(x > 0, 1, -1): exported as Clip -> Greater -> Where, refused before refbnn
    carried clip bounds through the comparison."""

    def __init__(self):
        super().__init__()
        self.fc1, self.bn1 = BinaryLinear(64, 32, bias=False), nn.BatchNorm1d(32)
        self.fc2, self.bn2 = BinaryLinear(32, 32, bias=False), nn.BatchNorm1d(32)
        self.out = BinaryLinear(32, 10, bias=False)
        self.htanh = nn.Hardtanh()

    def act(self, x):
        x = self.htanh(x)
        return torch.where(x > 0, torch.ones_like(x), -torch.ones_like(x))

    def forward(self, x):
        x = self.act(self.bn1(self.fc1(torch.flatten(x, 1))))
        return self.out(self.act(self.bn2(self.fc2(x))))


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
def test_the_authors_clip_then_compare_activation_imports_and_agrees(dynamo, tmp_path):
    """Property: BN -> Hardtanh -> where(x > 0) exported by either exporter imports (the clip's
    bounds enclose the comparison's 0) and predicts what torch predicts."""
    net = SpiceStyleFC()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for m in (net.bn1, net.bn2):
            m.running_mean.copy_(torch.randn(32, generator=g) * 3)
            m.running_var.copy_(torch.rand(32, generator=g) * 4 + 0.5)
    net.eval()
    x = np.random.default_rng(2).integers(0, 256, (300, 1, 8, 8))
    u = torch.tensor(x / 255.0, dtype=torch.float32)
    path = _export(net, u, str(tmp_path / "spice.onnx"), dynamo, 18 if dynamo else 17)
    imported = import_model(path, z=255)
    assert [layer.type for layer in imported.model.layers] == [
        "flatten", "linear", "threshold", "linear", "threshold", "linear"]
    with torch.no_grad():
        theirs = net(u).argmax(1).numpy()
    _agree_with_framework(imported, x, theirs)
