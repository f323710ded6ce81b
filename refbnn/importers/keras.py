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

import zipfile
from typing import Any, Optional

import numpy as np

from ..formats.files import InputError
from ..formats.npzfile import regular_file
from .fold import RefusedError
from .kerasfile import KerasWeights
from .steps import BatchNormStep, FlattenStep, MonotoneStep, PoolStep, SignStep, Step, WeightStep

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
MAX_KERAS_BYTES = 2**32
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

    def __init__(self, weights: KerasWeights):
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
    weights = KerasWeights(path)
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
