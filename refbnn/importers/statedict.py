"""A PyTorch state dict plus a layout file, read into steps (docs/semantics.md §10.4).

A state dict holds tensors by name but not the order of the forward pass, so a small
JSON layout names the steps in forward order and the key prefix of each:

    {"format": "refbnn-layout", "version": 1,
     "input": {"shape": [1, 28, 28], "Z": 255},
     "steps": [{"op": "conv2d", "prefix": "features.0", "padding": 1},
               {"op": "maxpool2d"},
               {"op": "batchnorm", "prefix": "features.2"},
               {"op": "hardtanh"}, {"op": "sign"},
               {"op": "flatten"},
               {"op": "linear", "prefix": "classifier.0"},
               {"op": "scale", "key": "scale"}]}

`.pt`/`.pth` files (torch's zip format) are read without torch and without unpickling
(`refbnn.importers.torchfile` reads the pickle's opcodes and accepts only tensors and plain
containers); only the legacy pre-1.6 format needs torch (`torch.load(weights_only=True)`).
An `.npz` or a `.safetensors` file of the same names needs no torch at all (safetensors
is read here directly: an 8-byte little-endian header length, a JSON header of name ->
dtype, shape and byte offsets, then the raw little-endian data).
"""
from __future__ import annotations

import os
import zipfile
from typing import Any, Optional

import numpy as np

from ..formats.files import InputError, parse_json_bytes, read_json
from ..formats.npzfile import MAX_FILE_BYTES, npz_arrays, npz_headers, regular_file
from .steps import AffineStep, BatchNormStep, ClipStep, FlattenStep, PoolStep, SignStep, Step, WeightStep
from .torchfile import is_torch_zip, read_torch_file

LAYOUT_FORMAT = "refbnn-layout"
MAX_TENSOR_BYTES = 2**32

# op -> (required keys, optional keys) of a layout step
_STEP_KEYS = {
    "linear": ({"prefix"}, {"weights"}),
    "conv2d": ({"prefix"}, {"weights", "padding"}),
    "batchnorm": ({"prefix"}, {"eps"}),
    "hardtanh": (set(), set()),
    "sign": (set(), {"at_zero"}),
    "maxpool2d": (set(), set()),
    "flatten": (set(), set()),
    "scale": ({"key"}, set()),
    "shift": ({"key"}, set()),
}
# Keys a state dict may hold that no step reads.
_IGNORED_SUFFIXES = (".num_batches_tracked",)


class Layout:
    """A validated layout file: the steps (dicts), and the input shape and Z if given."""

    def __init__(self, path: str):
        self.path = path
        doc = read_json(path, max_bytes=2**24)
        self.fail = lambda field, msg: InputError(f"{path}: {field}: {msg}")
        if not isinstance(doc, dict):
            raise self.fail("(top level)", "expected a JSON object")
        self._keys("(top level)", doc, {"format", "version", "input", "steps"}, {"format", "version", "steps"})
        if doc["format"] != LAYOUT_FORMAT or doc["version"] != 1:
            raise self.fail("format", f"expected {LAYOUT_FORMAT!r} version 1")
        inp = doc.get("input", {})
        self._keys("input", inp, {"shape", "Z"}, set())
        self.input_shape = self._shape(inp["shape"]) if "shape" in inp else None
        self.z = self._int("input.Z", inp["Z"], 1) if "Z" in inp else None
        if not isinstance(doc["steps"], list) or not doc["steps"]:
            raise self.fail("steps", "expected a non-empty list")
        for i, s in enumerate(doc["steps"]):
            field = f"steps[{i}]"
            if not isinstance(s, dict) or s.get("op") not in _STEP_KEYS:
                raise self.fail(f"{field}.op", f"expected one of {sorted(_STEP_KEYS)}")
            required, optional = _STEP_KEYS[s["op"]]
            self._keys(field, s, required | optional | {"op"}, required | {"op"})
            for k in ("prefix", "key"):
                if k in s and not isinstance(s[k], str):
                    raise self.fail(f"{field}.{k}", "expected a string")
            if s.get("weights", "latent") not in ("latent", "binary"):
                raise self.fail(f"{field}.weights", "expected 'latent' (+1 iff w > 0) or 'binary' (+-alpha)")
            if "padding" in s:
                self._int(f"{field}.padding", s["padding"], 0)
            if s.get("at_zero", -1) not in (-1, 0, 1) or isinstance(s.get("at_zero"), bool):
                raise self.fail(f"{field}.at_zero", "expected -1, 0 or 1 (the sign's value at 0)")
            if "eps" in s and (not isinstance(s["eps"], (int, float)) or isinstance(s["eps"], bool)
                               or not s["eps"] >= 0):
                raise self.fail(f"{field}.eps", "expected a non-negative number")
        self.steps = doc["steps"]

    def _keys(self, field: str, obj: Any, allowed: set, required: set) -> None:
        if not isinstance(obj, dict):
            raise self.fail(field, "expected a JSON object")
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.fail(f"{field}.{unknown[0]}", "unknown key")
        missing = sorted(required - set(obj))
        if missing:
            raise self.fail(f"{field}.{missing[0]}", "missing")

    def _int(self, field: str, v: Any, lo: int) -> int:
        if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > 2**20:
            raise self.fail(field, f"expected an integer in [{lo}, 2^20]")
        return v

    def _shape(self, v: Any) -> tuple[int, ...]:
        if not isinstance(v, list) or len(v) not in (1, 3):
            raise self.fail("input.shape", "expected [K] or [C, H, W]")
        return tuple(self._int("input.shape", d, 1) for d in v)


# safetensors dtypes -> NumPy (little-endian); BF16 is widened to float32 exactly
_SAFETENSORS_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
                       "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_SAFETENSORS_HEADER = 2**24


def is_safetensors(path: str) -> bool:
    """Whether the file starts as a safetensors file: a header length that fits, then '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= MAX_SAFETENSORS_HEADER and 8 + n <= os.path.getsize(path)


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """The tensors of a safetensors file (module docstring), every field checked against the
    file before any data is read: floats as float64, integers as they are."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = parse_json_bytes(f.read(n), f"{path}: header")
        if not isinstance(header, dict):
            raise InputError(f"{path}: header: expected a JSON object of tensors")
        data_size = size - 8 - n
        out = {}
        for name, entry in header.items():
            where = f"{path}: {name[:80]}"
            if name == "__metadata__":
                continue
            if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
                raise InputError(f"{where}: expected dtype, shape and data_offsets")
            dtype = _SAFETENSORS_DTYPES.get(entry["dtype"]) if isinstance(entry["dtype"], str) else None
            if dtype is None:
                raise InputError(f"{where}: dtype {str(entry['dtype'])[:20]!r} is not one refbnn reads "
                                 f"({', '.join(_SAFETENSORS_DTYPES)})")
            shape, offsets = entry["shape"], entry["data_offsets"]
            if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 2**31
                                                    for d in shape)):
                raise InputError(f"{where}: shape: expected a list of non-negative integers")
            if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not
                                                                            isinstance(o, bool) for o in offsets)
                    and 0 <= offsets[0] <= offsets[1] <= data_size):
                raise InputError(f"{where}: data_offsets {str(offsets)[:40]} lie outside the {data_size} data bytes")
            nbytes = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
            if offsets[1] - offsets[0] != nbytes or nbytes > MAX_TENSOR_BYTES:
                raise InputError(f"{where}: {offsets[1] - offsets[0]} bytes for a {entry['dtype']} tensor of shape "
                                 f"{shape} ({nbytes} bytes)")
            f.seek(8 + n + offsets[0])
            v = np.frombuffer(f.read(nbytes), dtype=dtype).reshape(shape)
            if entry["dtype"] == "BF16":          # the high half of a float32
                v = (v.astype(np.uint32) << 16).view(np.float32)
            with np.errstate(invalid="ignore"):  # a signalling NaN (damaged bytes) widens to a NaN,
                # raising the invalid flag on the way; the tensor is refused by name below
                out[name] = v.astype(np.float64) if v.dtype.kind == "f" else v
    return out


def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """The tensors of a `.pt`/`.pth` (torch's zip format, read without torch), `.npz` or
    `.safetensors` state dict; floating-point tensors as float64 arrays."""
    regular_file(path, MAX_FILE_BYTES)
    if is_safetensors(path):
        return read_safetensors(path)
    if _is_npz(path):
        headers = npz_headers(path, MAX_TENSOR_BYTES)
        return {k: v.astype(np.float64) for k, v in npz_arrays(path, headers, headers).items()}
    if is_torch_zip(path):
        obj = read_torch_file(path, MAX_TENSOR_BYTES)      # no torch, no pickle: see torchfile
    else:
        obj = _torch_load_legacy(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) and len(obj) <= 8:
        obj = obj["state_dict"]     # a training checkpoint that wraps the state dict
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, np.ndarray):
            raise InputError(f"{path}: {k!r}: expected a tensor, got {type(v).__name__}")
        if v.dtype.kind != "f" and not k.endswith(_IGNORED_SUFFIXES):
            raise InputError(f"{path}: {k}: expected a floating-point tensor, got {v.dtype}")
        out[k] = v
    return out


def _torch_load_legacy(path: str) -> dict:
    """torch's format before 1.6 (not a zip): only torch itself reads it, weights only."""
    try:
        import torch
    except ImportError:
        raise InputError(f"{path}: a PyTorch file in the legacy (pre-1.6) format needs torch: pip install "
                         "'refbnn[torch]', or re-save it with a current torch.save (or as .npz/.safetensors)") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # torch raises many types for a bad file or a forbidden pickle global
        raise InputError(f"{path}: not a weights-only PyTorch file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    if isinstance(obj, dict):
        obj = {k: (v.detach().to(torch.float64).numpy() if v.is_floating_point() else v.numpy())
               if isinstance(v, torch.Tensor) else v for k, v in obj.items()}
    return obj


def _is_npz(path: str) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as e:
        raise InputError(f"{path}: a damaged zip file (neither .npz nor PyTorch): {str(e)[:100]}") from None
    return bool(names) and all(n.endswith(".npy") for n in names)


def layout_steps(tensors: dict[str, np.ndarray], layout: Layout, source: str) -> list[Step]:
    """The steps the layout names, with their tensors taken from the state dict."""
    used: set[str] = set()

    def get(key: str, field: str, optional: bool = False) -> Optional[np.ndarray]:
        if key not in tensors:
            if optional:
                return None
            raise InputError(f"{source}: {key}: missing (named by {layout.path}: {field})")
        used.add(key)
        v = tensors[key]
        if not np.all(np.isfinite(v)):
            raise InputError(f"{source}: {key}: holds NaN or infinity")
        return v

    steps: list[Step] = []
    for i, s in enumerate(layout.steps):
        field, op, where = f"steps[{i}]", s["op"], f"{layout.path}: steps[{i}] ({s['op']})"
        if op in ("linear", "conv2d"):
            w = get(f"{s['prefix']}.weight", field)
            if s.get("weights", "latent") == "latent":
                w = np.where(w > 0, 1.0, -1.0)     # the authors' binarisation: +1 iff w > 0
            if w.ndim != (2 if op == "linear" else 4):
                raise InputError(f"{source}: {s['prefix']}.weight: shape {list(w.shape)} is not a {op} weight")
            steps.append(WeightStep(where, op, w, int(s.get("padding", 0)), get(f"{s['prefix']}.bias", field, True)))
        elif op == "batchnorm":
            p = s["prefix"]
            mean, var = get(f"{p}.running_mean", field), get(f"{p}.running_var", field)
            gamma = get(f"{p}.weight", field, True)
            beta = get(f"{p}.bias", field, True)
            gamma = np.ones_like(mean) if gamma is None else gamma
            beta = np.zeros_like(mean) if beta is None else beta
            if not (gamma.shape == beta.shape == mean.shape == var.shape and mean.ndim == 1):
                raise InputError(f"{source}: {p}.*: batch norm parameters of different shapes")
            if np.any(var < 0):
                raise InputError(f"{source}: {p}.running_var: negative (a variance cannot be)")
            steps.append(BatchNormStep(where, gamma, beta, mean, var, float(s.get("eps", 1e-5))))
        elif op == "hardtanh":
            steps.append(ClipStep(where, -1.0, 1.0))
        elif op == "sign":
            at_zero = s.get("at_zero", -1)
            steps.append(SignStep(where, strict=at_zero != 1, zero=at_zero == 0, tensor=f"steps[{i}]"))
        elif op == "maxpool2d":
            steps.append(PoolStep(where))
        elif op == "flatten":
            steps.append(FlattenStep(where))
        else:   # scale multiplies by the tensor, shift subtracts it (per channel, or one value)
            v = get(s["key"], field)
            v = v.reshape(-1) if v.size > 1 else np.float64(v.reshape(-1)[0])
            steps.append(AffineStep(where, mul=v) if op == "scale" else AffineStep(where, add=-v))
    unused = sorted(k for k in tensors if k not in used and not k.endswith(_IGNORED_SUFFIXES))
    if unused:
        raise InputError(f"{source}: {unused[0]}: not used by any step of {layout.path} "
                         f"({len(unused)} unused key(s)); a layout must account for every tensor")
    return steps


