"""A refbnn model as a state dict (`.npz` or `.safetensors`) plus its layout file
(docs/semantics.md §10.4, §13), which `refbnn import --layout` reads back unchanged.

Per layer, under the prefix `layers.<i>`:
- `linear` / `conv2d`: `weight` holds the +-1 weights (float32, exact), `"weights": "binary"`;
- a threshold is a batch norm with gamma = polarity p, beta = 0, running_var = 1, eps = 0
  and running_mean = m, the float pre-activation at h = s + 1/2, followed by a sign
  (+1 iff v > 0): +1 iff p (pre - m) > 0, which is h > s for p = +1 and h <= s for p = -1.
  For hidden layers m = s + 1/2; for the first layer, reading u = A x + B, m = A (s + 1/2)
  + B * (sum of the row's weights). Float64 tensors, so that m carries s + 1/2 exactly
  for hidden layers and within 2^-52 relative for the first (far from the 1/2 that would
  move the integer threshold);
- an input binarisation (§2.6) is `shift` by A (s_c + 1/2) + B, `scale` by p_c, `sign`;
- `maxpool2d`, `flatten` as they are.
"""
from __future__ import annotations

import json
import os
from math import prod
from pathlib import Path

import numpy as np

from ..formats.files import InputError, atomic_open, write_json
from ..semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, Threshold
from .onnx import signs32

FORMATS = ("npz", "safetensors", "pt")


def layout_path(path: str | os.PathLike) -> Path:
    """Where the layout of a state dict at `path` goes: beside it, `<stem>.layout.json`."""
    p = Path(path)
    return p.with_name(p.stem + ".layout.json")


def state_dict(model: Model, input_a, input_c) -> tuple[dict[str, np.ndarray], dict]:
    """The tensors and the layout document of `model` read through u = input_a x + input_c."""
    channels = model.input_shape[0]
    a = np.broadcast_to(np.asarray(input_a, dtype=np.float64), (channels,))
    b = np.broadcast_to(np.asarray(input_c, dtype=np.float64), (channels,))
    if np.any(a <= 0):
        raise InputError("--input: a state dict export needs a positive input scale (max pooling commutes "
                         "with increasing maps only)")
    tensors: dict[str, np.ndarray] = {}
    steps: list[dict] = []
    if model.input_threshold is not None:
        t = model.input_threshold
        tensors["input.shift"] = a * (np.array(t.thresholds, dtype=np.float64) + 0.5) + b
        tensors["input.polarity"] = np.array(t.polarity, dtype=np.float64)
        steps += [{"op": "shift", "key": "input.shift"}, {"op": "scale", "key": "input.polarity"}, {"op": "sign"}]
    first = model.weight_indices[0]
    reads_input = model.input_threshold is None
    offset = None                 # the first layer's per-channel offset of its float pre-activation
    scale = 1.0
    for i, layer in enumerate(model.layers):
        prefix = f"layers.{i}"
        if isinstance(layer, (Linear, Conv2d)):
            w = signs32(model, i)
            tensors[f"{prefix}.weight"] = w
            step = {"op": layer.type, "prefix": prefix, "weights": "binary"}
            if isinstance(layer, Conv2d):
                step["padding"] = layer.padding
            steps.append(step)
            offset, scale = None, 1.0
            if i == first and reads_input:
                if isinstance(layer, Conv2d) and layer.padding and np.any(b != 0):
                    raise InputError(f"layers[{i}]: padding {layer.padding} with the input offset of --input: "
                                     "the offset's share would depend on the position (use x/Z or x)")
                # the input channel of each weight column: per tap for conv; for linear, the
                # channel of each entry of the (flattened, C order) input
                per_channel = prod(model.input_shape[1:])
                in_channel = np.repeat(np.arange(w.shape[1]), prod(w.shape[2:])) if w.ndim == 4 else \
                    np.arange(w.shape[1]) // per_channel
                offset = w.reshape(len(w), -1).astype(np.float64) @ b[in_channel]
                scale = float(a[0])
                if np.any(a != a[0]):
                    raise InputError("--input: a state dict export needs one input scale for all channels")
        elif isinstance(layer, Threshold):
            s = np.array(layer.thresholds, dtype=np.float64) + 0.5
            mean = scale * s + (0.0 if offset is None else offset)
            tensors[f"{prefix}.running_mean"] = mean
            tensors[f"{prefix}.running_var"] = np.ones(len(s))
            tensors[f"{prefix}.weight"] = np.array(layer.polarity, dtype=np.float64)
            tensors[f"{prefix}.bias"] = np.zeros(len(s))
            steps += [{"op": "batchnorm", "prefix": prefix, "eps": 0}, {"op": "sign"}]
        elif isinstance(layer, MaxPool2d):
            steps.append({"op": "maxpool2d"})
        elif isinstance(layer, Flatten):
            steps.append({"op": "flatten"})
    layout = {"format": "refbnn-layout", "version": 1,
              "input": {"shape": list(model.input_shape), "Z": model.Z}, "steps": steps}
    return tensors, layout


def write_state_dict(path: str | os.PathLike, fmt: str, model: Model, input_a, input_c) -> Path:
    """Write the state dict (npz, safetensors, or pt through torch) and its layout beside it;
    returns the layout's path."""
    tensors, layout = state_dict(model, input_a, input_c)
    if fmt == "pt":
        from .torch import save_pt
        save = save_pt     # torch's own format, written by torch (it needs torch: checked first)
    else:
        save = (lambda f, t: np.savez(f, **t)) if fmt == "npz" else (lambda f, t: f.write(safetensors_bytes(t)))
    with atomic_open(path, "wb") as f:
        save(f, tensors)
    target = layout_path(path)
    write_json(target, layout)
    return target


_DTYPES = {np.dtype("float64"): "F64", np.dtype("float32"): "F32"}


def safetensors_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    """The safetensors layout: an 8-byte little-endian header length, the JSON header of
    dtype, shape and data offsets per tensor, then the little-endian data."""
    header, chunks, offset = {}, [], 0
    for name, v in tensors.items():
        data = np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": _DTYPES[v.dtype], "shape": list(v.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)             # the data starts 8-byte aligned, as safetensors writes it
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)
