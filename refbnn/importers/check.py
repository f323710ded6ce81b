"""`refbnn import --check`: run the source in its own runtime and compare it with refbnn
(docs/semantics.md §10.5).

The source runs on the float input u = A x + B: onnxruntime for ONNX, the QONNX
executor for QONNX, torch for a state dict. For every input it is compared with
refbnn's exact run, threshold layer by threshold layer (where the source holds the
signs as a tensor) and by the prediction. A disagreement is *explained* when it is a
float tie, the framework's rounding and not an import error:
- at the first threshold layer that differs, every differing entry has its integer h
  within the layer's tie tolerance of tau (docs/semantics.md §10.3), or is a Sign that
  output 0 there;
- a prediction that differs with all signs equal has tied scores (refbnn's tie rule
  takes the smallest index) or source scores within float rounding of each other.
Anything else is unexplained, and `refbnn import --check` exits 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..engines.fast import FastEngine
from ..engines.ops import input_slices
from ..formats.files import InputError
from .fold import Imported

SCORE_TIE_RELATIVE = 2.0 ** -16


@dataclass
class LayerAgreement:
    """Sign agreement of one threshold layer over all inputs."""

    layer: int
    tensor: str
    entries: int = 0
    differ: int = 0
    explained: int = 0


@dataclass
class CheckReport:
    inputs: int
    predictions_agree: int = 0
    layers: list[LayerAgreement] = field(default_factory=list)
    explained: list[str] = field(default_factory=list)     # one line per explained input
    unexplained: list[str] = field(default_factory=list)   # one line per unexplained input

    @property
    def ok(self) -> bool:
        return not self.unexplained


def _runner(imported: Imported, names: list[str], batch: int) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function u [B, ...] -> {tensor name: value} that runs the source."""
    src = imported.source
    if src.kind == "onnx":
        return _onnxruntime(src, names)
    if src.kind == "qonnx":
        return _qonnx(src, names, batch)
    if src.kind == "keras":
        return _keras(src)
    return _torch(src, names)


def _keras(src):
    """TensorFlow with Larq runs the Keras file itself (NHWC input, as the file says)."""
    import os
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")        # Larq needs Keras 2 (tf-keras)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import larq  # noqa: F401  (registers Larq's layers and quantizers with Keras)
        import tensorflow as tf
    except ImportError:
        raise InputError(f"{src.path}: --check of a Keras file needs tensorflow, tf-keras and larq: "
                         "pip install tensorflow-cpu tf-keras larq") from None
    model = tf.keras.models.load_model(src.path, compile=False)

    def run(u):
        return {"output": np.asarray(model(u.astype(np.float32), training=False))}
    return run


def _onnxruntime(src, names):
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise InputError(f"{src.path}: --check needs onnxruntime: pip install 'refbnn[import]'") from None
    model = onnx.ModelProto()
    model.CopyFrom(src.graph)
    present = {o.name for o in model.graph.output}
    model.graph.output.extend([onnx.ValueInfoProto(name=n) for n in names if n not in present])
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    dtype = {1: np.float32, 10: np.float16, 11: np.float64}.get(
        src.graph.graph.input[[i.name for i in src.graph.graph.input].index(src.input_name)]
        .type.tensor_type.elem_type, np.float32)

    def run(u):
        outs = session.run(names, {src.input_name: u.astype(dtype)})
        return dict(zip(names, outs))
    return run


def _qonnx(src, names, batch: int):
    try:
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.core.onnx_exec import execute_onnx
        from qonnx.transformation.infer_shapes import InferShapes
    except ImportError:
        raise InputError(f"{src.path}: --check of a QONNX graph needs qonnx: pip install 'refbnn[import]'") from None
    import onnx

    # The executor needs every shape, the batch size included: fix it, then infer the rest.
    model = onnx.ModelProto()
    model.CopyFrom(src.graph)
    model.graph.input[[i.name for i in model.graph.input].index(src.input_name)] \
        .type.tensor_type.shape.dim[0].dim_value = batch
    del model.graph.value_info[:]
    for o in model.graph.output:
        o.type.tensor_type.ClearField("shape")
    wrapper = ModelWrapper(model).transform(InferShapes())

    def run(u):
        ctx = execute_onnx(wrapper, {src.input_name: u.astype(np.float32)}, return_full_exec_context=True)
        return {n: ctx[n] for n in names}
    return run


def _torch(src, names):
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise InputError(f"{src.path}: --check of a state dict needs torch: pip install 'refbnn[torch]'") from None
    from .steps import AffineStep, BatchNormStep, ClipStep, FlattenStep, PoolStep, SignStep, WeightStep

    def t(v):
        return torch.as_tensor(np.asarray(v), dtype=torch.float32)

    def per_channel(v, x):
        v = t(v)
        return v if v.ndim == 0 else v.reshape((1, -1) + (1,) * (x.ndim - 2))

    def run(u):
        x, out = t(u), {}
        with torch.no_grad():
            for s in src.graph:
                if isinstance(s, WeightStep):
                    b = None if s.bias is None else t(s.bias)
                    x = F.linear(x, t(s.w), b) if s.kind == "linear" else F.conv2d(x, t(s.w), b, padding=s.padding)
                elif isinstance(s, BatchNormStep):
                    x = F.batch_norm(x, t(s.mean), t(s.var), t(s.gamma), t(s.beta), False, 0.0, s.eps)
                elif isinstance(s, AffineStep):
                    x = x * per_channel(s.mul, x) + per_channel(s.add, x)
                elif isinstance(s, ClipStep):
                    x = torch.clamp(x, s.lo, s.hi)
                elif isinstance(s, PoolStep):
                    x = F.max_pool2d(x, 2)
                elif isinstance(s, FlattenStep):
                    x = torch.flatten(x, 1)
                elif isinstance(s, SignStep):
                    x = torch.sign(x) if s.zero else torch.where(x > 0 if s.strict else x >= 0, 1.0, -1.0)
                    out[s.tensor] = x.numpy()
        out["output"] = x.numpy()
        return {n: out[n] for n in names}
    return run


def check(imported: Imported, x: np.ndarray, batch_size: int = 256,
          progress: Optional[Callable[[int, int], None]] = None) -> CheckReport:
    """Compare the source's run with refbnn's on the integer inputs x (docs/semantics.md §10.5)."""
    src = imported.source
    folds = [f for f in imported.folds if f.tensor is not None]
    out_name = imported.output_tensor or "output"
    names = [f.tensor for f in folds] + [out_name]
    # A graph with a fixed batch size (and the QONNX executor) runs on full batches only.
    fixed = bool(src.batch) or src.kind == "qonnx"
    size = src.batch or batch_size
    run = _runner(imported, names, size)
    engine = FastEngine(imported.model)
    report = CheckReport(len(x), layers=[LayerAgreement(f.layer, f.tensor) for f in folds])
    for sl in input_slices(len(x), size):
        start, stop = sl.start, sl.stop
        xb = x[sl]
        padded = np.concatenate([xb] + [xb[-1:]] * (size - len(xb))) if fixed else xb
        u = _input(src, padded)
        theirs = {k: v[:len(xb)] for k, v in run(u).items()}
        ours = engine.outputs(xb.astype(np.int64))
        _compare(imported, folds, report, start, xb, ours, theirs, out_name)
        if progress:
            progress(stop, len(x))
    return report


def _input(src, x: np.ndarray) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = np.asarray(src.input_a).reshape(shape) if np.ndim(src.input_a) else src.input_a
    c = np.asarray(src.input_c).reshape(shape) if np.ndim(src.input_c) else src.input_c
    u = x.astype(np.float64) * a + c
    # an NHWC graph reads the [C, H, W] data with its axes permuted
    return np.transpose(u, (0,) + tuple(1 + k for k in src.input_layout)) if src.input_layout else u


def canonical(value: np.ndarray, layout: tuple[int, ...], order: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """A batch of source tensors held with permuted axes (`layout`) or entries (`order`), as
    SignStep says, in refbnn's order."""
    if order is not None:
        out = np.empty((len(value), len(order)), dtype=value.dtype)
        out[:, list(order)] = value.reshape(len(value), -1)
        return out
    if not layout:
        return value
    return np.transpose(value, (0,) + tuple(1 + k for k in np.argsort(layout)))


def _compare(imported, folds, report, start, xb, ours, theirs, out_name) -> None:
    first_diff: dict[int, str] = {}     # input -> explanation or "" (unexplained)
    for f, agg in zip(folds, report.layers):
        mine = ours[f.layer].reshape(len(xb), -1) > 0
        value = canonical(np.asarray(theirs[f.tensor], dtype=np.float64), f.layout, f.order).reshape(len(xb), -1)
        low, high = f.levels
        mid = (low + high) / 2
        got = value > mid if high > low else value < mid
        zero = value == mid
        differ = (mine != got) | zero
        agg.entries += differ.size
        agg.differ += int(differ.sum())
        h = ours[f.layer - 1].reshape(len(xb), -1)       # the integer h entering the threshold
        positions = h.shape[1] // len(f.tau)
        for i in np.flatnonzero(differ.any(axis=1)):
            if i in first_diff:
                continue            # a consequence of an earlier layer's difference
            cols = np.flatnonzero(differ[i])
            channels = cols // positions
            hv = h[i, cols]
            near = np.abs(hv - f.tau[channels]) <= f.tolerance
            third = zero[i, cols] & f.zero
            ok = near | third
            agg.explained += int(ok.sum())
            if ok.all():
                what = "Sign output 0" if third.all() else "float tie"
                first_diff[i] = (f"input {start + i}: layer {f.layer}: {len(cols)} sign(s) differ, all at h "
                                 f"within {f.tolerance:.3g} of tau ({what})")
            else:
                k = int(np.flatnonzero(~ok)[0])
                first_diff[i] = ""
                report.unexplained.append(
                    f"input {start + i}: layer {f.layer} ({f.tensor}): channel {int(channels[k])} entry "
                    f"{int(cols[k])}: refbnn {'+1' if mine[i, cols[k]] else '-1'}, source value "
                    f"{value[i, cols[k]]:.6g}; h = {int(hv[k])}, tau = {f.tau[channels[k]]:.6g}: not a float tie")
    scores = ours[-1].reshape(len(xb), -1)
    out = np.asarray(theirs[out_name], dtype=np.float64).reshape(len(xb), -1)
    mine, got = FastEngine.predicted(scores), np.argmax(out, axis=1)
    report.predictions_agree += int((mine == got).sum())
    for i in range(len(xb)):
        if i in first_diff:
            if first_diff[i]:
                report.explained.append(first_diff[i])
            continue
        if mine[i] == got[i]:
            continue
        a, b = out[i, mine[i]], out[i, got[i]]
        if scores[i, mine[i]] == scores[i, got[i]] or abs(a - b) <= SCORE_TIE_RELATIVE * max(1.0, abs(a), abs(b)):
            report.explained.append(f"input {start + i}: predictions {mine[i]} (refbnn) and {got[i]} (source): "
                                    "the scores tie within float rounding")
        else:
            report.unexplained.append(f"input {start + i}: prediction {mine[i]} (refbnn) but {got[i]} (source), "
                                      "with every compared sign equal")
