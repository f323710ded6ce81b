"""The JSON model file (docs/semantics.md §3.1): read, validate, write.

A reader rejects anything docs/semantics.md §3 does not allow with an `InputError` whose
message names the file and the field, e.g.
`net.json: layers[2].weight.bits: expected 12 base64 characters, got 8`.
Sizes are checked against `LIMITS` before anything is decoded or allocated.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
from math import prod
from typing import Any

from bitarray import bitarray

from ..semantics.batchnorm import THRESHOLD_LIMIT
from ..semantics.model import Conv2d, Flatten, Linear, MaxPool2d, Model, ModelError, Threshold, Weight
from .files import InputError, read_json, write_json

FORMAT = "refbnn-model"
VERSION = 1

# Limits, documented in docs/semantics.md §3.3. They keep every integer of inference exact
# in float64 (|h| <= fan-in * Z < 2**53) and memory per input bounded.
LIMITS = {
    "file_bytes": 2**31,         # model file size
    "layers": 256,               # number of layers
    "dim": 2**16,                # any one entry of any shape
    "weight_bits": 2**30,        # bits of one weight tensor
    "tensor": 2**24,             # values of any one intermediate tensor, per input
    "Z": 2**20,                  # input magnitude bound
    "threshold": THRESHOLD_LIMIT,  # |s_n| (refbnn.semantics.batchnorm)
}

_LAYER_KEYS = {
    "linear": {"type", "weight"},
    "conv2d": {"type", "weight", "padding"},
    "threshold": {"type", "thresholds", "polarity"},
    "maxpool2d": {"type"},
    "flatten": {"type"},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class _Reader:
    """Validates one parsed JSON document; `fail` prefixes the file name."""

    def __init__(self, name: str):
        self.name = name

    def fail(self, field: str, message: str) -> InputError:
        return InputError(f"{self.name}: {field}: {message}")

    def keys(self, field: str, obj: Any, allowed: set[str], required: set[str]) -> dict:
        if not isinstance(obj, dict):
            raise self.fail(field, f"expected an object, got {type(obj).__name__}")
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.fail(field, f"unknown key {unknown[0]!r} (allowed: {', '.join(sorted(allowed))})")
        missing = sorted(required - set(obj))
        if missing:
            raise self.fail(f"{field}.{missing[0]}" if field else missing[0], "missing")
        return obj

    def int_(self, field: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
        if not _is_int(v):
            raise self.fail(field, f"expected an integer, got {json.dumps(v)[:40]}")
        if lo is not None and v < lo:
            raise self.fail(field, f"must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise self.fail(field, f"must be <= {hi} (limit), got {v}")
        return v

    def shape(self, field: str, v: Any, ranks: tuple[int, ...]) -> tuple[int, ...]:
        if not isinstance(v, list) or len(v) not in ranks:
            want = " or ".join(str(r) for r in ranks)
            raise self.fail(field, f"expected a list of {want} positive integers, got {json.dumps(v)[:40]}")
        return tuple(self.int_(f"{field}[{i}]", d, 1, LIMITS["dim"]) for i, d in enumerate(v))

    def weight(self, field: str, obj: Any, rank: int) -> Weight:
        self.keys(field, obj, {"shape", "bits"}, {"shape", "bits"})
        shape = self.shape(f"{field}.shape", obj["shape"], (rank,))
        nbits = prod(shape)
        if nbits > LIMITS["weight_bits"]:
            raise self.fail(f"{field}.shape", f"{nbits} bits exceed the limit {LIMITS['weight_bits']}")
        text = obj["bits"]
        if not isinstance(text, str):
            raise self.fail(f"{field}.bits", "expected a base64 string")
        nbytes = (nbits + 7) // 8
        want = 4 * ((nbytes + 2) // 3)
        if len(text) != want:
            raise self.fail(f"{field}.bits", f"expected {want} base64 characters for {nbits} bits, got {len(text)}")
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise self.fail(f"{field}.bits", f"not valid base64 ({e})") from None
        if len(raw) != nbytes:
            raise self.fail(f"{field}.bits", f"decodes to {len(raw)} bytes, expected {nbytes}")
        bits = bitarray(endian="big")
        bits.frombytes(raw)
        if bits[nbits:].any():
            raise self.fail(f"{field}.bits", "padding bits after the last weight must be 0")
        del bits[nbits:]
        return Weight(shape, bits)

    def layer(self, i: int, obj: Any):
        field = f"layers[{i}]"
        if not isinstance(obj, dict) or "type" not in obj:
            raise self.fail(field, "expected an object with a 'type'")
        kind = obj["type"]
        if not isinstance(kind, str) or kind not in _LAYER_KEYS:
            raise self.fail(f"{field}.type", f"unknown layer type {json.dumps(kind)[:40]} "
                                             f"(known: {', '.join(_LAYER_KEYS)})")
        allowed = _LAYER_KEYS[kind]
        required = allowed - {"padding", "polarity"}
        self.keys(field, obj, allowed, required)
        if kind == "linear":
            return Linear(self.weight(f"{field}.weight", obj["weight"], 2))
        if kind == "conv2d":
            padding = self.int_(f"{field}.padding", obj.get("padding", 0), 0, LIMITS["dim"])
            return Conv2d(self.weight(f"{field}.weight", obj["weight"], 4), padding)
        if kind == "threshold":
            return self.threshold(field, obj)
        return MaxPool2d() if kind == "maxpool2d" else Flatten()

    def threshold(self, field: str, obj: dict) -> Threshold:
        values = obj["thresholds"]
        if not isinstance(values, list) or not values:
            raise self.fail(f"{field}.thresholds", "expected a non-empty list of integers")
        lim = LIMITS["threshold"]
        s = tuple(self.int_(f"{field}.thresholds[{j}]", v, -lim, lim) for j, v in enumerate(values))
        pol = obj.get("polarity")
        if pol is None:
            return Threshold(s)
        if not isinstance(pol, list) or len(pol) != len(s):
            raise self.fail(f"{field}.polarity", f"expected a list of {len(s)} entries, each 1 or -1")
        for j, p in enumerate(pol):
            if not _is_int(p) or p not in (1, -1):
                raise self.fail(f"{field}.polarity[{j}]", f"must be 1 or -1, got {json.dumps(p)[:40]}")
        return Threshold(s, tuple(pol))

    def model(self, doc: Any) -> Model:
        top = {"format", "version", "input", "layers"}
        self.keys("", doc, top, top) if isinstance(doc, dict) else self.keys("(top level)", doc, top, top)
        if doc["format"] != FORMAT:
            raise self.fail("format", f"expected {FORMAT!r}, got {json.dumps(doc['format'])[:40]}")
        if not _is_int(doc["version"]) or doc["version"] != VERSION:
            raise self.fail("version", f"unsupported version {json.dumps(doc['version'])[:40]} (this reader knows {VERSION})")
        inp = self.keys("input", doc["input"], {"shape", "Z", "binarize"}, {"shape", "Z"})
        shape = self.shape("input.shape", inp["shape"], (1, 3))
        z = self.int_("input.Z", inp["Z"], 1, LIMITS["Z"])
        binarize = None
        if "binarize" in inp:     # the network thresholds its own input (§2.6)
            self.keys("input.binarize", inp["binarize"], {"thresholds", "polarity"}, {"thresholds"})
            binarize = self.threshold("input.binarize", inp["binarize"])
        if prod(shape) > LIMITS["tensor"]:
            raise self.fail("input.shape", f"{prod(shape)} values exceed the limit {LIMITS['tensor']}")
        layers = doc["layers"]
        if not isinstance(layers, list) or not layers:
            raise self.fail("layers", "expected a non-empty list")
        if len(layers) > LIMITS["layers"]:
            raise self.fail("layers", f"{len(layers)} layers exceed the limit {LIMITS['layers']}")
        parsed = [self.layer(i, obj) for i, obj in enumerate(layers)]
        try:
            model = Model.build(shape, z, parsed, binarize)
        except ModelError as e:
            raise InputError(f"{self.name}: {e}") from None
        for i, s in enumerate(model.shapes):
            if prod(s) > LIMITS["tensor"]:
                raise self.fail(f"layers[{i}]", f"output of {prod(s)} values exceeds the limit {LIMITS['tensor']}")
        return model


def model_from_dict(doc: Any, name: str = "<model>") -> Model:
    """Validate a parsed model document and build the model."""
    return _Reader(name).model(doc)


def read_model(path: str | os.PathLike) -> Model:
    """Read and validate a model file; every problem is an `InputError` naming the field."""
    return model_from_dict(read_json(path, LIMITS["file_bytes"]), os.fspath(path))


def _weight_dict(w: Weight) -> dict:
    return {"shape": list(w.shape), "bits": base64.b64encode(w.bits.tobytes()).decode("ascii")}


def model_to_dict(model: Model) -> dict:
    """The JSON document (docs/semantics.md §3.1) of `model`."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, Linear):
            layers.append({"type": "linear", "weight": _weight_dict(layer.weight)})
        elif isinstance(layer, Conv2d):
            layers.append({"type": "conv2d", "padding": layer.padding, "weight": _weight_dict(layer.weight)})
        elif isinstance(layer, Threshold):
            layers.append({"type": "threshold", "thresholds": list(layer.thresholds),
                           "polarity": list(layer.polarity)})
        else:
            layers.append({"type": layer.type})
    inp = {"shape": list(model.input_shape), "Z": model.Z}
    if model.input_threshold is not None:
        inp["binarize"] = {"thresholds": list(model.input_threshold.thresholds),
                           "polarity": list(model.input_threshold.polarity)}
    return {"format": FORMAT, "version": VERSION, "input": inp, "layers": layers}


def write_model(path: str | os.PathLike, model: Model) -> None:
    """Write `model` atomically in the model file format (docs/semantics.md §3.1)."""
    write_json(path, model_to_dict(model))
