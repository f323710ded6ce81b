"""Why an op on an activation cannot be represented, and what would make it so: the
message of a refusal names the node, says what the op is and why (§10.1). Layout changes
and identities are never a reason: the reader follows them (`layers`)."""
from __future__ import annotations

_REAL_ACTIVATION = ("a real-valued activation; refbnn's neurons output +-1 through a sign or threshold "
                    "(binarise with Sign, a comparison, or a 1-bit quantizer instead)")
_BRANCH = "it joins or splits tensors (a branch or a shortcut); a refbnn model is one chain of layers"

REASONS = {
    **{op: _REAL_ACTIVATION for op in ("Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid",
                                       "HardSwish", "Elu", "Selu", "Celu", "Gelu", "Softplus", "Softsign",
                                       "Mish", "ThresholdedRelu", "Erf")},
    **{op: _BRANCH for op in ("Concat", "Split", "Sum", "Max", "Min", "Mean")},
    "AveragePool": "average pooling; refbnn pools with 2x2 max pooling (MaxPool, stride 2) only",
    "GlobalAveragePool": "global average pooling; refbnn pools with 2x2 max pooling only",
    "GlobalMaxPool": "global max pooling; refbnn pools 2x2 windows with stride 2 only",
    "LpPool": "Lp pooling; refbnn pools with 2x2 max pooling only",
    "ConvTranspose": "a transposed convolution; refbnn's conv2d has stride 1 and no upsampling",
    "Resize": "resampling; refbnn's layers are conv2d, linear, max pooling and flatten",
    "Upsample": "upsampling; refbnn's layers are conv2d, linear, max pooling and flatten",
    "Pad": "explicit padding; refbnn pads inside conv2d only, with absent (zero) taps (write it as Conv pads)",
    "Slice": "it takes part of a tensor; refbnn's layers read whole tensors",
    "Gather": "it selects entries of a tensor; refbnn's layers read whole tensors",
    "Floor": "rounding gives more than two levels; refbnn's activations are +-1",
    "Ceil": "rounding gives more than two levels; refbnn's activations are +-1",
    "QuantizeLinear": "integer quantisation with more than two levels; refbnn's activations are +-1 "
                      "(a 1-bit quantizer is representable)",
    "DequantizeLinear": "integer quantisation with more than two levels; refbnn's activations are +-1",
    "Abs": "|x| is not a sign; refbnn's activations are +-1 with a threshold",
    "LRN": "local response normalisation; refbnn normalises with batch norm only",
    "InstanceNormalization": "instance normalisation depends on each input; refbnn's thresholds are fixed",
    "GroupNormalization": "group normalisation depends on each input; refbnn's thresholds are fixed",
    "Dropout": "dropout in training mode",
}


def reason(op_type: str, domain: str) -> str:
    """Why `op_type` (of `domain`) on an activation is refused."""
    if op_type in REASONS and domain in ("", "ai.onnx"):
        return REASONS[op_type]
    where = f" of domain {domain!r}" if domain not in ("", "ai.onnx") else ""
    return (f"{op_type}{where} is not an op refbnn knows on an activation; refbnn represents Conv/Gemm/MatMul with "
            "binary weights, affine maps, batch norm, Clip, signs and 1-bit quantizers, 2x2 MaxPool, flatten "
            "and layout changes (docs/semantics.md §10.1)")
