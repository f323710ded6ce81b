"""A Keras / Larq model file (`.h5`, `.keras`) read into steps with h5py alone, no
TensorFlow (docs/semantics.md §10.6).

Both files hold the model's own config (JSON) and its weights in HDF5:
- `.h5` (legacy): the root attribute `model_config`, and `model_weights/<layer>/` whose
  attribute `weight_names` lists the layer's variables (`<layer>/kernel:0`, ...);
- `.keras`: a zip of `config.json` and `model.weights.h5`, whose `layers/<layer>/vars/`
  holds the variables as `0`, `1`, ... in the layer's own order.

Keras computes channels last (NHWC). refbnn keeps [C, H, W]: kernels are transposed,
and a Flatten of [H, W, C] permutes the next dense layer's columns (and any per-entry
constant after it) back to refbnn's C-order vector, exactly. Larq's sign quantizers
(`ste_sign`, `approx_sign`, `swish_sign`: +1 at 0 in the forward pass) become signs with
x >= 0; a layer without `input_quantizer` reads its input as it is, which for the first
layer is the integer input through the input map (§10.2).
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from typing import Any, Optional

import numpy as np

from ..formats.files import InputError
from ..formats.npzfile import npz_arrays, npz_headers, regular_file
from .fold import RefusedError
from .steps import BatchNormStep, FlattenStep, MonotoneStep, PoolStep, SignStep, Step, WeightStep

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_KERAS_BYTES = 2**32
MAX_WEIGHT_VALUES = 2**30          # refbnn's limit on one weight tensor (docs/semantics.md §3.3)
READ_TIMEOUT = 120                 # seconds for the child process that reads the HDF5 file
# Larq quantizers whose forward pass is sign(x) with +1 at 0 (they differ only in gradient)
SIGN_QUANTIZERS = {"ste_sign", "approx_sign", "swish_sign", "stesign", "approxsign", "swishsign"}
# Larq quantizers refbnn cannot represent, and why
OTHER_QUANTIZERS = {
    "ste_heaviside": "its levels are 0 and 1, not -1 and +1",
    "ste_tern": "it is ternary (-1, 0, +1)",
    "dorefa_quantizer": "it has more than two levels",
    "magnitude_aware_sign": "it scales activations by their mean magnitude",
}


def is_keras(path: str) -> bool:
    """A Keras file by its first bytes: HDF5, or a zip holding `config.json` and weights."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == HDF5_SIGNATURE:
        return True
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
            return False             # a damaged zip: the state-dict reader names the damage
        return "config.json" in names and "model.weights.h5" in names
    return False


def _h5py(path: str):
    try:
        import h5py
    except ImportError:
        raise InputError(f"{path}: reading a Keras file needs h5py: pip install 'refbnn[keras]'") from None
    return h5py


class _Weights:
    """The variables of each layer by name (`.h5`) or by position (`.keras`).

    libhdf5 can loop forever on a damaged file (seen on a vlen string attribute whose heap
    a flipped byte broke), and a C loop cannot be interrupted: so the file is read in a
    child process (`python -m refbnn.importers.keras FILE OUT.npz`) under a time limit,
    which hands over the config and the arrays as an `.npz`, read back with refbnn's own
    checked reader. No pickle crosses."""

    def __init__(self, path: str, isolated: bool = True):
        _h5py(path)                                   # name the extra before anything else
        self.path = path
        self.by_layer: dict[str, list[tuple[str, np.ndarray]]] = {}
        if isolated:
            self._read_in_child()
        else:
            self._read()

    def _read_in_child(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "weights.npz")
            try:
                root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
                proc = subprocess.run([sys.executable, "-m", "refbnn.importers.keras", self.path, out],
                                      capture_output=True, text=True, timeout=READ_TIMEOUT, env=env)
            except subprocess.TimeoutExpired:
                raise InputError(f"{self.path}: the HDF5 library did not finish reading the file in "
                                 f"{READ_TIMEOUT} s (a damaged file?)") from None
            if proc.returncode != 0:
                lines = [line for line in proc.stderr.splitlines() if line.strip()]
                raise InputError(lines[-1].removeprefix("refbnn-error: ") if lines and
                                 lines[-1].startswith("refbnn-error: ") else
                                 f"{self.path}: reading failed ({(lines or ['no message'])[-1][:160]})")
            headers = npz_headers(out, MAX_WEIGHT_VALUES * 8)
            arrays = npz_arrays(out, headers, headers)
        self.config = json.loads(arrays.pop("config").tobytes())
        index = json.loads(arrays.pop("index").tobytes())
        self.by_layer = {layer: [(name, arrays[key]) for name, key in vars_] for layer, vars_ in index.items()}

    def write(self, out: str) -> None:
        """Hand the config and the arrays to the parent process (see the class docstring)."""
        arrays, index = {}, {}
        for layer, vars_ in self.by_layer.items():
            index[layer] = []
            for name, a in vars_:
                key = f"a{len(arrays)}"
                arrays[key] = a
                index[layer].append([name, key])
        meta = {k: np.frombuffer(json.dumps(v).encode(), dtype=np.uint8) for k, v in
                (("config", self.config), ("index", index))}
        np.savez(out, **arrays, **meta)

    def _read(self) -> None:
        h5py, path = _h5py(self.path), self.path
        try:
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as z:
                    self.config = json.loads(z.read("config.json"))
                    data = z.read("model.weights.h5")
                self._read_keras_v3(h5py.File(io.BytesIO(data), "r"), self.config)
            else:
                with h5py.File(path, "r") as f:
                    raw = f.attrs.get("model_config")
                    if raw is None:
                        raise InputError(f"{path}: an HDF5 file without a Keras model_config (weights only? save "
                                         "the whole model with model.save)")
                    self.config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
                    self._read_h5(f)
        except InputError:
            raise
        except (OSError, KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError,
                zipfile.BadZipFile) as e:   # h5py reports a damaged file as any of these
            raise InputError(f"{path}: not a readable Keras file ({type(e).__name__}: {str(e)[:120]})") from None

    def _read_h5(self, f) -> None:
        root = f["model_weights"] if "model_weights" in f else f
        for layer in root:
            names = root[layer].attrs.get("weight_names", [])
            self.by_layer[layer] = [(_var_name(n), self._array(root[layer][_decode(n)], layer)) for n in names]

    def _array(self, ds, layer: str) -> np.ndarray:
        """A weight array, its size checked from its header before it is read (a damaged or
        hostile file may declare any shape)."""
        shape = getattr(ds, "shape", None)
        if shape is None or getattr(ds, "dtype", None) is None or ds.dtype.kind not in "fiu":
            raise InputError(f"{self.path}: layer {layer!r}: a weight that is not a numeric array")
        if int(np.prod(shape, dtype=np.float64)) > MAX_WEIGHT_VALUES:
            raise InputError(f"{self.path}: layer {layer!r}: a weight of shape {list(shape)} exceeds "
                             f"{MAX_WEIGHT_VALUES} values")
        return np.asarray(ds)

    def _read_keras_v3(self, f, config: dict) -> None:
        # The weights file names each layer after its class, numbered per class in layer
        # order ('quant_conv2d', 'quant_conv2d_1', ...), not by the layer's own name.
        layers = f["layers"] if "layers" in f else f
        seen: dict[str, int] = {}
        for layer in config.get("config", {}).get("layers", []):
            if not isinstance(layer, dict) or layer.get("class_name") == "InputLayer":
                continue
            stem = _snake_case(str(layer.get("class_name", "")))
            key = stem if stem not in seen else f"{stem}_{seen[stem]}"
            seen[stem] = seen.get(stem, 0) + 1
            if key in layers:
                vars_ = layers[key]["vars"] if "vars" in layers[key] else {}
                name = str(layer.get("config", {}).get("name"))
                self.by_layer[name] = [(str(k), self._array(vars_[str(k)], name)) for k in sorted(map(int, vars_))]

    def of(self, layer: str, names: list[str], where: str) -> list[np.ndarray]:
        """The variables `names` of `layer` in that order (by name in `.h5`, else by position)."""
        have = self.by_layer.get(layer, [])
        if len(have) != len(names):
            raise InputError(f"{self.path}: {where}: {len(have)} weight arrays, expected {len(names)} "
                             f"({', '.join(names)})")
        if all(n.isdigit() for n, _ in have):
            return [a for _, a in have]
        found = dict(have)
        missing = [n for n in names if n not in found]
        if missing:
            raise InputError(f"{self.path}: {where}: no weight {missing[0]!r} (has {', '.join(found)})")
        return [found[n] for n in names]


def _snake_case(name: str) -> str:
    """Keras' name for a class in the weights file: 'QuantConv2D' -> 'quant_conv2d'."""
    s = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    s = re.sub("([a-z])([A-Z])", r"\1_\2", s).lower()
    return s if not s.startswith("_") else "private" + s


def _decode(n) -> str:
    return n.decode() if isinstance(n, bytes) else str(n)


def _var_name(n) -> str:
    """'quant_conv2d/kernel:0' -> 'kernel'."""
    return _decode(n).rsplit("/", 1)[-1].split(":")[0]


def _quantizer(q: Any) -> Optional[str]:
    """A quantizer's name ('ste_sign') from its config: a string, a dict, or None."""
    if q is None:
        return None
    if isinstance(q, str):
        return q.lower()
    if isinstance(q, dict):
        cfg = q.get("config", {})
        name = cfg.get("name") if isinstance(cfg, dict) else None
        cls = str(q.get("class_name", "")).lower()
        return cls if cls in SIGN_QUANTIZERS or name is None else _base_name(name, cls)
    return str(q)


def _base_name(name: str, cls: str) -> str:
    """Larq numbers repeated quantizers ('ste_sign_3'): the class decides when known."""
    for known in list(SIGN_QUANTIZERS) + list(OTHER_QUANTIZERS):
        if cls.replace("_", "") == known.replace("_", ""):
            return known
    return name.lower()


class _Reader:
    """Walks the layer configs in order, keeping the Keras shape (channels last)."""

    def __init__(self, weights: _Weights):
        self.w = weights
        self.steps: list[Step] = []
        self.shape: tuple[int, ...] = ()      # Keras shape without batch: (H, W, C) or (K,)
        self.channels_last = True
        self.order: Optional[np.ndarray] = None   # after a channels-last Flatten: entry j is refbnn's order[j]
        self.ended = False

    def where(self, cfg: dict, cls: str) -> str:
        return f"layer {cfg.get('name', '?')!r} ({cls})"

    def canonical_shape(self) -> tuple[int, ...]:
        if len(self.shape) == 3 and self.channels_last:
            h, w, c = self.shape
            return (c, h, w)
        return self.shape

    def input_layer(self, cfg: dict) -> None:
        shape = cfg.get("batch_input_shape") or cfg.get("batch_shape")
        if not shape or any(d is None for d in shape[1:]):
            raise RefusedError(f"{self.where(cfg, 'InputLayer')}: the input shape {shape} is not static")
        shape = tuple(int(d) for d in shape[1:])
        if len(shape) == 2:
            shape = shape + (1,)         # [H, W] images: one channel
        if len(shape) not in (1, 3):
            raise RefusedError(f"{self.where(cfg, 'InputLayer')}: an input of rank {len(shape)}")
        self.shape = shape

    def layer(self, cls: str, cfg: dict) -> None:
        where = self.where(cfg, cls)
        if self.ended and cls not in ("Activation", "Softmax", "Dropout"):
            raise RefusedError(f"{where}: a layer after the class scores' softmax")
        if not self.shape and cfg.get("batch_input_shape"):
            self.input_layer(cfg)
        handler = getattr(self, f"on_{cls}", None)
        if handler is None:
            raise RefusedError(f"{where}: a {cls} layer is not something refbnn can represent: refbnn reads "
                               "QuantConv2D/QuantDense (or Conv2D/Dense) with binary weights, BatchNormalization, "
                               "MaxPooling2D 2x2, Flatten, sign quantizers and a final softmax")
        handler(cfg, where)

    # -- weight layers -----------------------------------------------------------------

    def _input_quantizer(self, cfg: dict, where: str) -> None:
        q = _quantizer(cfg.get("input_quantizer"))
        if q is None:
            return
        self._sign(q, where, "input_quantizer")

    def _sign(self, q: str, where: str, what: str) -> None:
        if q in OTHER_QUANTIZERS:
            raise RefusedError(f"{where}: {what} {q}: {OTHER_QUANTIZERS[q]}; refbnn's activations are +-1")
        if q not in SIGN_QUANTIZERS:
            raise RefusedError(f"{where}: {what} {q!r} is not a sign quantizer refbnn knows "
                               f"({', '.join(sorted(s for s in SIGN_QUANTIZERS if '_' in s))})")
        self.steps.append(SignStep(where, strict=False))     # Larq's sign: +1 at 0

    def _kernel(self, cfg: dict, where: str, kernel: np.ndarray) -> np.ndarray:
        q = _quantizer(cfg.get("kernel_quantizer"))
        if q is None:
            return kernel            # a real-valued kernel: the fold accepts it only if already +-alpha
        if q in OTHER_QUANTIZERS or q not in SIGN_QUANTIZERS:
            why = OTHER_QUANTIZERS.get(q, "not a sign quantizer refbnn knows")
            raise RefusedError(f"{where}: kernel_quantizer {q}: {why}; refbnn's weights are +-1")
        return np.where(kernel >= 0, 1.0, -1.0)          # Larq's ste_sign: +1 at 0

    def _activation(self, cfg: dict, where: str) -> None:
        act = cfg.get("activation", "linear")
        if act not in (None, "linear"):
            raise RefusedError(f"{where}: activation {act!r} inside the layer; refbnn's neurons binarise with a "
                               "sign (use an input_quantizer on the next layer)")

    def on_QuantConv2D(self, cfg: dict, where: str) -> None:
        self._input_quantizer(cfg, where)
        if len(self.shape) != 3:
            raise RefusedError(f"{where}: a convolution of a vector")
        if list(cfg.get("strides", [1, 1])) != [1, 1]:
            raise RefusedError(f"{where}: strides {cfg['strides']}; refbnn's conv2d has stride 1")
        if list(cfg.get("dilation_rate", [1, 1])) != [1, 1] or cfg.get("groups", 1) != 1:
            raise RefusedError(f"{where}: dilation or groups; refbnn's conv2d has neither")
        if float(cfg.get("pad_values", 0.0)) != 0.0 and cfg.get("padding") == "same":
            raise RefusedError(f"{where}: padding with {cfg['pad_values']}; refbnn's padded taps are absent (0)")
        self.channels_last = cfg.get("data_format", "channels_last") != "channels_first"
        names = ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
        arrays = self.w.of(cfg["name"], names, where)
        kernel = self._kernel(cfg, where, np.asarray(arrays[0], dtype=np.float64))   # [kh, kw, C, N]
        kh, kw, c, n = kernel.shape
        if kh != kw or (cfg.get("padding") == "same" and kh % 2 == 0):
            raise RefusedError(f"{where}: kernel {kh}x{kw} with padding {cfg.get('padding')!r}: refbnn needs a "
                               "square kernel and equal padding on all sides")
        pad = (kh - 1) // 2 if cfg.get("padding") == "same" else 0
        bias = np.asarray(arrays[1], dtype=np.float64) if len(arrays) > 1 else None
        self.steps.append(WeightStep(where, "conv2d", kernel.transpose(3, 2, 0, 1), pad, bias))
        h, w = (self.shape[0], self.shape[1]) if self.channels_last else (self.shape[1], self.shape[2])
        h, w = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
        self.shape = (h, w, n) if self.channels_last else (n, h, w)
        self._activation(cfg, where)

    on_Conv2D = on_QuantConv2D

    def on_QuantDense(self, cfg: dict, where: str) -> None:
        self._input_quantizer(cfg, where)
        if len(self.shape) != 1:
            raise RefusedError(f"{where}: a dense layer on a tensor of shape {list(self.shape)}; refbnn's linear "
                               "layer reads a vector (Flatten first)")
        names = ["kernel"] + (["bias"] if cfg.get("use_bias", True) else [])
        arrays = self.w.of(cfg["name"], names, where)
        w = self._kernel(cfg, where, np.asarray(arrays[0], dtype=np.float64)).T     # [N, K]
        if self.order is not None:
            canonical = np.empty_like(w)
            canonical[:, self.order] = w                 # column j reads refbnn's entry order[j]
            w, self.order = canonical, None
        bias = np.asarray(arrays[1], dtype=np.float64) if len(arrays) > 1 else None
        self.steps.append(WeightStep(where, "linear", w, 0, bias))
        self.shape = (w.shape[0],)
        self._activation(cfg, where)

    on_Dense = on_QuantDense

    # -- the rest ----------------------------------------------------------------------

    def _per_entry(self, v: np.ndarray) -> np.ndarray:
        """A per-entry constant of a vector in Keras order, in refbnn's order."""
        if self.order is None or v.ndim == 0:
            return v
        out = np.empty_like(v)
        out[self.order] = v
        return out

    def on_BatchNormalization(self, cfg: dict, where: str) -> None:
        axis = cfg.get("axis", -1)
        axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
        rank = len(self.shape) + 1
        channel_axis = rank - 1 if self.channels_last or rank == 2 else 1
        if not isinstance(axis, int) or axis % rank != channel_axis:
            raise RefusedError(f"{where}: batch norm over axis {axis}; refbnn normalises per channel")
        names = (["gamma"] if cfg.get("scale", True) else []) + (["beta"] if cfg.get("center", True) else []) \
            + ["moving_mean", "moving_variance"]
        arrays = dict(zip(names, (np.asarray(a, dtype=np.float64) for a in self.w.of(cfg["name"], names, where))))
        n = arrays["moving_mean"].shape[0]
        gamma = self._per_entry(arrays.get("gamma", np.ones(n)))
        beta = self._per_entry(arrays.get("beta", np.zeros(n)))
        self.steps.append(BatchNormStep(where, gamma, beta, self._per_entry(arrays["moving_mean"]),
                                        self._per_entry(arrays["moving_variance"]), float(cfg.get("epsilon", 1e-3))))

    def on_MaxPooling2D(self, cfg: dict, where: str) -> None:
        pool = list(cfg.get("pool_size", [2, 2]))
        strides = list(cfg.get("strides") or pool)
        if pool != [2, 2] or strides != [2, 2] or cfg.get("padding", "valid") != "valid":
            raise RefusedError(f"{where}: pooling {pool} stride {strides} padding {cfg.get('padding')!r}; "
                               "refbnn pools 2x2 windows, stride 2, no padding")
        self.steps.append(PoolStep(where))
        h, w, c = self.shape if self.channels_last else (self.shape[1], self.shape[2], self.shape[0])
        self.shape = (h // 2, w // 2, c) if self.channels_last else (c, h // 2, w // 2)

    on_MaxPool2D = on_MaxPooling2D

    def on_Flatten(self, cfg: dict, where: str) -> None:
        if len(self.shape) == 1:
            return
        c, h, w = self.canonical_shape()
        if self.channels_last and cfg.get("data_format", "channels_last") != "channels_first":
            # Keras flattens [H, W, C]: its entry j is refbnn's (C-order) entry order[j]
            self.order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
        self.steps.append(FlattenStep(where))
        self.shape = (c * h * w,)

    def on_QuantizedActivation(self, cfg: dict, where: str) -> None:   # a bare quantizer layer
        self._sign(_quantizer(cfg.get("quantizer")) or "linear", where, "quantizer")

    def on_Activation(self, cfg: dict, where: str) -> None:
        act = cfg.get("activation")
        if act in ("softmax", "log_softmax"):
            self.steps.append(MonotoneStep(where))
            self.ended = True
        elif act not in (None, "linear"):
            self._sign(_quantizer(act) or "", where, "activation")

    def on_Softmax(self, cfg: dict, where: str) -> None:
        self.steps.append(MonotoneStep(where))
        self.ended = True

    def on_Dropout(self, cfg: dict, where: str) -> None:
        return             # the identity at inference

    def on_InputLayer(self, cfg: dict, where: str) -> None:
        self.input_layer(cfg)


def _chain(config: dict, path: str) -> list[dict]:
    """The layers of a Sequential model, or of a functional model that is a chain; a layer
    with other inputs than its predecessor (a shortcut, a merge) is refused."""
    cls = config.get("class_name")
    inner = config.get("config", {})
    layers = inner.get("layers") if isinstance(inner, dict) else None
    if not isinstance(layers, list):
        raise InputError(f"{path}: model_config: no list of layers (class {cls!r})")
    if cls == "Sequential":
        return layers
    previous = None
    for layer in layers:
        sources = sorted(set(_inbound(layer.get("inbound_nodes", []))))
        name = layer.get("config", {}).get("name", "?")
        if previous is not None and sources != [previous]:
            what = f"{len(sources)} inputs" if len(sources) != 1 else f"the input {sources[0]!r}"
            raise RefusedError(f"{path}: layer {name!r} ({layer.get('class_name')}) reads {what}, not the layer "
                               "before it: a shortcut or a branch, which refbnn's chain of layers cannot represent")
        previous = name
    return layers


def _inbound(nodes: Any) -> list[str]:
    """The names of the layers a functional layer reads (tf.keras and Keras 3 configs)."""
    out: list[str] = []
    if isinstance(nodes, dict):
        if "keras_history" in nodes:
            out.append(str(nodes["keras_history"][0]))
        for v in nodes.values():
            out += _inbound(v)
    elif isinstance(nodes, list):
        if len(nodes) >= 3 and isinstance(nodes[0], str) and isinstance(nodes[1], int):
            out.append(nodes[0])
        else:
            for v in nodes:
                out += _inbound(v)
    return out


def read_keras(path: str) -> tuple[list[Step], tuple[int, ...], bool]:
    """The steps of a Keras/Larq model file, its input shape in refbnn's [C, H, W] order,
    and whether Keras reads that input channels last."""
    regular_file(path, MAX_KERAS_BYTES)
    weights = _Weights(path)
    reader = _Reader(weights)
    layers = _chain(weights.config, path)
    for layer in layers:
        cls = str(layer.get("class_name", "?"))
        cfg = layer.get("config", {})
        if not isinstance(cfg, dict):
            raise InputError(f"{path}: layer {cls}: its config is not an object")
        try:
            reader.layer(cls, cfg)
        except RefusedError as e:
            raise RefusedError(f"{path}: {e}") from None
        except InputError:
            raise                    # already names the file and the layer
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise InputError(f"{path}: {reader.where(cfg, cls)}: malformed ({type(e).__name__}: "
                             f"{str(e)[:100]})") from None
    if not reader.shape:
        raise InputError(f"{path}: no input shape in the model config")
    first_shape = _first_shape(layers)
    return reader.steps, first_shape, len(first_shape) == 3


def _first_shape(layers: list[dict]) -> tuple[int, ...]:
    for layer in layers:
        shape = layer.get("config", {}).get("batch_input_shape") or layer.get("config", {}).get("batch_shape")
        if shape:
            shape = tuple(int(d) for d in shape[1:])
            if len(shape) == 2:
                return (1,) + shape
            return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape
    return ()



def _child(path: str, out: str) -> int:
    """The child process's work: read the file, write the `.npz`; a refusal goes to stderr."""
    try:
        _Weights(path, isolated=False).write(out)
    except InputError as e:
        print(f"refbnn-error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2]))
