"""ONNX and QONNX graphs built with onnx.helper the way the exporters build them, for the
importer tests: torch.onnx.export's patterns (Greater/Where and Sign/Sub/Add binarisation,
Clip for hardtanh, BatchNormalization or batch norm fused into Gemm/Conv, Flatten or a
Reshape fed by Shape/Gather/Concat, MatMul with [K, N] weights or Gemm with transB, a
final scale Mul), and Brevitas' QONNX ops (BipolarQuant, 1-bit Quant, MultiThreshold)."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

QONNX = "qonnx.custom_op.general"


class Graph:
    """A graph under construction: nodes in order, float32 initializers, one input `x`."""

    def __init__(self, input_shape, batch=None, opset: int = 17):
        self.nodes, self.inits, self.k = [], [], 0
        self.input_shape = tuple(input_shape)
        self.batch = batch
        self.opset = opset
        self.domains: list[str] = []      # custom domains used (QONNX; the FINN zoo's older names)

    def name(self, stem: str) -> str:
        self.k += 1
        return f"{stem}_{self.k}"

    def const(self, value, dtype=np.float32) -> str:
        n = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def op(self, op_type: str, inputs, domain: str = "", outputs: int = 1, **attrs) -> str:
        outs = [self.name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"/{outs[0]}", domain=domain, **attrs))
        if domain and domain not in self.domains:
            self.domains.append(domain)
        return outs[0]

    def model(self, output: str):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [self.batch or "batch", *self.input_shape])
        y = helper.make_tensor_value_info(output, TensorProto.FLOAT, None)
        g = helper.make_graph(self.nodes, "bnn", [x], [y], self.inits)
        opsets = [helper.make_opsetid("", self.opset)] + [helper.make_opsetid(d, 1) for d in self.domains]
        m = helper.make_model(g, opset_imports=opsets)
        m.ir_version = 8
        return m


def signs(rng, shape) -> np.ndarray:
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def bn_params(rng, n: int, scale: float, negative: int = 1):
    """gamma, beta, mean, var of a batch norm over h of magnitude ~scale; `negative`
    channels get gamma < 0 (polarity -1)."""
    gamma = rng.uniform(0.5, 2.0, n)
    gamma[:negative] *= -1
    beta = rng.uniform(-0.5, 0.5, n)
    mean = rng.uniform(-scale, scale, n)
    var = rng.uniform(0.5, 2.0, n) * scale
    return [v.astype(np.float32) for v in (gamma, beta, mean, var)]


def batchnorm(g: Graph, x: str, params, eps: float = 1e-5) -> str:
    return g.op("BatchNormalization", [x] + [g.const(p) for p in params], epsilon=eps)


def binarise(g: Graph, x: str, kind: str, channels: int = 1) -> str:
    """An activation's sign, as an exporter writes it."""
    if kind == "where":              # torch.where(x > 0, 1, -1): -1 at 0
        return g.op("Where", [g.op("Greater", [x, g.const(0.0)]), g.const(1.0), g.const(-1.0)])
    if kind == "clip_where":         # SPICE-Torch's activation: hardtanh, then torch.where(x > 0, 1, -1)
        c = g.op("Clip", [x, g.const(-1.0), g.const(1.0)])
        return g.op("Where", [g.op("Greater", [c, g.const(0.0)]), g.const(1.0), g.const(-1.0)])
    if kind == "clip_where_ge":      # hardtanh, then torch.where(x >= 0, 1, -1)
        c = g.op("Clip", [x, g.const(-1.0), g.const(1.0)])
        return g.op("Where", [g.op("GreaterOrEqual", [c, g.const(0.0)]), g.const(1.0), g.const(-1.0)])
    if kind == "larq_ste":           # Larq's ste_sign through tf2onnx: Sign(Sign(x) + 0.1): +1 at 0
        return g.op("Sign", [g.op("Add", [g.op("Sign", [x]), g.const(0.1)])])
    if kind == "where_ge":           # torch.where(x >= 0, 1, -1): +1 at 0
        return g.op("Where", [g.op("GreaterOrEqual", [x, g.const(0.0)]), g.const(1.0), g.const(-1.0)])
    if kind == "less_not":           # torch.where(~(x < 0), 1, -1): +1 at 0
        return g.op("Where", [g.op("Not", [g.op("Less", [x, g.const(0.0)])]), g.const(1.0), g.const(-1.0)])
    if kind == "cast":               # 2 * (x > 0).float() - 1: -1 at 0
        b = g.op("Cast", [g.op("Greater", [x, g.const(0.0)])], to=TensorProto.FLOAT)
        return g.op("Sub", [g.op("Mul", [b, g.const(2.0)]), g.const(1.0)])
    if kind == "sign_ste":           # hardtanh, then x + (sign(x) - x).detach(): 0 at 0
        c = g.op("Clip", [x, g.const(-1.0), g.const(1.0)])
        s = g.op("Sign", [c])
        return g.op("Add", [c, g.op("Sub", [s, c])])
    if kind == "bipolar":            # Brevitas binary activation: +1 at 0
        return g.op("BipolarQuant", [x, g.const(1.0)], domain=QONNX)
    if kind == "quant1":             # 1-bit signed Quant: qonnx makes it bipolar, +1 at 0
        return g.op("Quant", [x, g.const(1.0), g.const(0.0), g.const(1.0)], domain=QONNX,
                    signed=1, narrow=0, rounding_mode="ROUND")
    if kind == "quant1u":            # 1-bit unsigned Quant, zero point 1/2: levels -1/2, +1/2; high iff
        # x + 1/2 rounds (half to even) to 1, i.e. x > 0: -1 at 0
        return g.op("Quant", [x, g.const(1.0), g.const(0.5), g.const(1.0)], domain=QONNX,
                    signed=0, narrow=0, rounding_mode="ROUND")
    if kind == "multithreshold":     # FINN: 2 * [x >= 0] - 1, +1 at 0
        return g.op("MultiThreshold", [x, g.const(np.zeros((channels, 1)))], domain=QONNX,
                    out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0)
    raise ValueError(kind)


def latent_weight(g: Graph, w_float: np.ndarray, transpose: bool = False) -> str:
    """Binarised weights left as a subgraph of the latent floats: Where(Greater(w, 0), 1, -1),
    optionally Transposed (MatMul's [K, N] layout)."""
    w = g.const(w_float)
    b = g.op("Where", [g.op("Greater", [w, g.const(0.0)]), g.const(1.0), g.const(-1.0)])
    return g.op("Transpose", [b], perm=[1, 0]) if transpose else b


def dynamic_flatten(g: Graph, x: str) -> str:
    """x.view(x.size(0), -1) as the TorchScript exporter writes it: Shape, Gather, Unsqueeze, Concat, Reshape."""
    shape = g.op("Shape", [x])
    first = g.op("Gather", [shape, g.const(0, np.int64)], axis=0)
    n = g.op("Unsqueeze", [first, g.const([0], np.int64)])
    target = g.op("Concat", [n, g.const([-1], np.int64)], axis=0)
    return g.op("Reshape", [x, target])


def tf2onnx_larq_graph(rng, channels: int, input_quantizer: bool):
    """A Larq model as tf2onnx (opset 13) writes it, node for node as observed from
    tf2onnx 1.17 on tf-keras 2.21 / larq 0.14: an NHWC input [8, 8, C]; Larq's ste_sign as
    Sign(Sign(x) + 0.1), on the input too when the first layer has an input quantizer;
    NHWC -> NCHW as Transpose [0, 3, 1, 2], or for one channel as Reshape [-1, 1, 8, 8];
    Conv (pad 1) -> MaxPool -> BatchNormalization in NCHW, Transpose [0, 2, 3, 1] around
    each sign; a conv whose batch norm tf2onnx fused (+-alpha weights with a bias); the
    flatten of [H, W, C] as Transpose [0, 2, 3, 1] then Reshape [-1, K]; MatMul [K, N];
    the dense batch norm as Mul and Add of per-entry constants; Softmax."""
    g = Graph([8, 8, channels])
    x = binarise(g, "x", "larq_ste") if input_quantizer else "x"
    if channels == 1:
        x = g.op("Reshape", [x, g.const([-1, 1, 8, 8], np.int64)])
    else:
        x = g.op("Transpose", [x], perm=[0, 3, 1, 2])
    h = g.op("Conv", [x, g.const(signs(rng, (4, channels, 3, 3)))], pads=[1, 1, 1, 1], kernel_shape=[3, 3],
             strides=[1, 1])
    h = g.op("MaxPool", [h], kernel_shape=[2, 2], strides=[2, 2])
    scale = 9.0 if input_quantizer else 9.0 * 255
    gamma, beta, mean, var = bn_params(rng, 4, scale, 1)
    h = g.op("Transpose", [batchnorm(g, h, [gamma, beta, mean, var], 1e-3)], perm=[0, 2, 3, 1])
    a = g.op("Transpose", [binarise(g, h, "larq_ste")], perm=[0, 3, 1, 2])
    alpha = rng.uniform(0.5, 2.0, 6).astype(np.float32) * np.where(np.arange(6) < 2, -1, 1).astype(np.float32)
    w = signs(rng, (6, 4, 3, 3)) * alpha[:, None, None, None]          # the fused batch norm's scale
    h = g.op("Conv", [a, g.const(w), g.const(rng.uniform(-3, 3, 6))], kernel_shape=[3, 3], strides=[1, 1])
    h = g.op("Transpose", [h], perm=[0, 2, 3, 1])                       # [2, 2, 6]
    f = g.op("Reshape", [h, g.const([-1, 24], np.int64)])
    h = g.op("MatMul", [binarise(g, f, "larq_ste"), g.const(signs(rng, (24, 8)))])
    gamma, beta, mean, var = bn_params(rng, 8, 4.0, 2)
    mul = gamma / np.sqrt(var + 1e-3)
    h = g.op("Add", [g.op("Mul", [h, g.const(mul)]), g.const(beta - mean * mul)])
    s = g.op("MatMul", [binarise(g, h, "larq_ste"), g.const(signs(rng, (8, 5)))])
    return g.model(g.op("Softmax", [s]))


def finn_tfc_graph(rng, domain: str = QONNX, threshold_domain: str = ""):
    """A FINN bnn_pynq TFC-w1a1-style QONNX graph that binarises its own input: the input in
    [0, 1] (pixels / 255), then 2x - 1 (Mul, Add) and BipolarQuant, so the first MatMul
    reads +-1; BipolarQuant weights and activations; TensorNorm-like Mul/Add at the end.
    `domain`: of the quantizers (the zoo's files say `onnx.brevitas`); with a
    `threshold_domain`, the hidden batch norm and sign are one MultiThreshold per channel
    of that domain (the zoo: `finn.custom_op.general`), as FINN streamlines them."""
    g = Graph([16])
    u = g.op("Add", [g.op("Mul", ["x", g.const(2.0)]), g.const(-1.0)])
    a = g.op("BipolarQuant", [u, g.const(1.0)], domain=domain)
    w1 = g.op("BipolarQuant", [g.const(rng.normal(size=(16, 6))), g.const(1.0)], domain=domain)
    h = g.op("MatMul", [a, w1])
    if threshold_domain:
        # +1 iff h >= t: MultiThreshold gives 0/1; 2y - 1 makes it +-1
        t = g.op("MultiThreshold", [h, g.const(rng.integers(-4, 5, (6, 1)).astype(np.float64) + 0.5)],
                 domain=threshold_domain, out_dtype="BINARY", data_layout="NC")
        b = g.op("Add", [g.op("Mul", [t, g.const(2.0)]), g.const(-1.0)])
    else:
        v = batchnorm(g, h, bn_params(rng, 6, 4.0, 2))
        b = g.op("BipolarQuant", [v, g.const(1.0)], domain=domain)
    w2 = g.op("BipolarQuant", [g.const(rng.normal(size=(6, 4))), g.const(1.0)], domain=domain)
    s = g.op("MatMul", [b, w2])
    return g.model(g.op("Add", [g.op("Mul", [s, g.const(0.5)]), g.const(0.25)]))


# -- sources shared by the import tests ------------------------------------------------------

def save_graph(model, tmp_path, name="net.onnx") -> str:
    """Write an ONNX model into tmp_path; its path."""
    import onnx
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def tie_graph(kind: str, mu: np.ndarray, gamma: np.ndarray):
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


# a state dict with its layout file (docs/semantics.md §10.4): FC 12 -> 10 -> 4
FC_LAYOUT = {"format": "refbnn-layout", "version": 1, "input": {"shape": [12], "Z": 16},
             "steps": [{"op": "linear", "prefix": "fc1"}, {"op": "batchnorm", "prefix": "bn1"},
                       {"op": "hardtanh"}, {"op": "sign"}, {"op": "linear", "prefix": "fc2"},
                       {"op": "scale", "key": "scale"}]}


def fc_state(rng):
    return {"fc1.weight": rng.normal(size=(10, 12)), "bn1.weight": rng.normal(size=10),
            "bn1.bias": rng.normal(size=10), "bn1.running_mean": rng.normal(size=10) * 0.5,
            "bn1.running_var": rng.uniform(0.5, 2, 10), "bn1.num_batches_tracked": np.array(7),
            "fc2.weight": rng.normal(size=(4, 10)), "scale": np.array(0.3)}
