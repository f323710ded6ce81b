"""Constant folding: every node whose inputs are all constant is evaluated before the
activations are matched, with `onnx.reference` and NumPy versions of the QONNX ops
(as `qonnx.custom_op.general` defines them)."""
from __future__ import annotations

import numpy as np

from ..fold import RefusedError
from .symbols import QONNX_DOMAINS, attrs, node_name

# -- the three QONNX ops ---------------------------------------------------------------------

def _bipolar_quant(x, scale):
    return np.where(x >= 0, 1.0, -1.0).astype(x.dtype) * scale


def _quant(x, scale, zeropt, bitwidth, signed=1, narrow=0, rounding_mode="ROUND"):
    y = x / scale + zeropt
    if bitwidth == 1 and signed:
        q = np.where(y >= 0, 1.0, -1.0)
    else:
        lo = (-(2 ** (bitwidth - 1)) + int(narrow)) if signed else 0
        hi = (2 ** (bitwidth - 1) - 1) if signed else (2 ** bitwidth - 1 - int(narrow))
        y = np.clip(y, lo, hi)
        mode = rounding_mode.upper() if isinstance(rounding_mode, str) else rounding_mode.decode().upper()
        rounders = {"ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor,
                    "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)), "DOWN": np.fix,
                    "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
                    "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5)}
        q = rounders[mode](y)
    return ((q - zeropt) * scale).astype(x.dtype)


def _multithreshold(x, thresholds, out_scale=1.0, out_bias=0.0, data_layout="NCHW", **_):
    v = np.moveaxis(x, 1, -1)[..., None]
    y = np.count_nonzero(v >= thresholds, axis=-1).astype(x.dtype)
    return np.moveaxis(y, -1, 1) * out_scale + out_bias


_QONNX_EVAL = {"BipolarQuant": _bipolar_quant, "Quant": _quant, "IntQuant": _quant,
               "MultiThreshold": _multithreshold}


def evaluate_constant(node, const: dict[str, np.ndarray], opset_import) -> None:
    """Evaluate a node whose inputs are all constant, adding its outputs to `const`."""
    from onnx import NodeProto, helper
    from onnx.reference import ReferenceEvaluator

    args = [const[i] if i else None for i in node.input]
    if node.domain in QONNX_DOMAINS:
        fn = _QONNX_EVAL.get(node.op_type)
        if fn is None:
            raise RefusedError(f"{node_name(node)}: unknown QONNX op")
        try:
            out = [fn(*[a for a in args if a is not None], **attrs(node))]
        except Exception as e:   # wrong inputs or attributes for the op
            raise RefusedError(f"{node_name(node)}: cannot evaluate on its constant inputs "
                               f"({type(e).__name__}: {str(e)[:120]})") from None
    else:
        names = [f"in{k}" if i else "" for k, i in enumerate(node.input)]
        try:
            inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                      for n, a in zip(names, args) if n]
            outs = [helper.make_tensor_value_info(f"out{k}", 0, None) for k in range(len(node.output))]
            one = NodeProto()
            one.CopyFrom(node)         # the node as it is, attributes included, with renamed tensors
            del one.input[:], one.output[:]
            one.input.extend(names)
            one.output.extend(o.name for o in outs)
            g = helper.make_graph([one], "fold", inputs, outs)
            m = helper.make_model(g, opset_imports=opset_import)
            out = ReferenceEvaluator(m).run(None, {n: a for n, a in zip(names, args) if n})
        except Exception as e:   # an op the evaluator does not know, or bad attributes
            raise RefusedError(f"{node_name(node)}: cannot evaluate on its constant inputs "
                               f"({type(e).__name__}: {str(e)[:120]})") from None
    for name, value in zip(node.output, out):
        if name:
            const[name] = np.asarray(value)
