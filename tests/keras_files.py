"""Keras / Larq model files written with h5py exactly as tf-keras 2.21 with larq 0.14 writes
them (read off files that `model.save` wrote): `.h5` with the `model_config` attribute and
`model_weights/<layer>/<layer>/<var>:0` listed by `weight_names`; `.keras` as a zip of
`config.json`, `metadata.json` and `model.weights.h5` with `layers/<class>/vars/<i>`, the
class in snake case and numbered per class in layer order (`quant_conv2d_1`), whatever
the layer's own name.
Also an independent float forward pass in Keras' own NHWC layout, to compare with."""
from __future__ import annotations

import io
import json
import re
import zipfile

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

STE = {"module": "larq.quantizers", "class_name": "SteSign",
       "config": {"name": "ste_sign", "trainable": True, "dtype": "float32", "clip_value": 1.0},
       "registered_name": "SteSign"}


def quant_conv(name, filters, k, padding="valid", input_quantizer=STE, kernel_quantizer=STE, **extra):
    cfg = {"name": name, "trainable": True, "dtype": "float32", "filters": filters, "kernel_size": [k, k],
           "strides": [1, 1], "padding": padding, "data_format": "channels_last", "dilation_rate": [1, 1],
           "groups": 1, "activation": "linear", "use_bias": False, "pad_values": 0.0,
           "input_quantizer": input_quantizer, "kernel_quantizer": kernel_quantizer,
           "kernel_constraint": {"module": "larq.constraints", "class_name": "WeightClip",
                                 "config": {"clip_value": 1}, "registered_name": "WeightClip"}}
    cfg.update(extra)
    return {"module": "larq.layers", "class_name": "QuantConv2D", "config": cfg, "registered_name": "QuantConv2D"}


def quant_dense(name, units, input_quantizer=STE, kernel_quantizer=STE):
    return {"module": "larq.layers", "class_name": "QuantDense", "registered_name": "QuantDense",
            "config": {"name": name, "trainable": True, "dtype": "float32", "units": units, "activation": "linear",
                       "use_bias": False, "input_quantizer": input_quantizer, "kernel_quantizer": kernel_quantizer}}


def keras_layer(cls, name, **cfg):
    return {"module": "keras.layers", "class_name": cls, "config": {"name": name, "trainable": True, **cfg},
            "registered_name": None}


def batchnorm(name, axis=3, scale=False):
    return keras_layer("BatchNormalization", name, axis=[axis], momentum=0.99, epsilon=0.001, center=True,
                       scale=scale)


def input_layer(shape):
    return keras_layer("InputLayer", "input_1", batch_input_shape=[None, *shape], dtype="float32")


def larq_cnn(rng, channels: int = 1, input_quantizer=None):
    """A small Larq CNN (the layers of Larq's MNIST example, smaller) and its weights:
    (config, {layer: [(var name, array)]})."""
    layers = [input_layer((6, 6, channels)),
              quant_conv("quant_conv2d", 3, 3, "same", input_quantizer=input_quantizer),
              keras_layer("MaxPooling2D", "max_pooling2d", pool_size=[2, 2], padding="valid", strides=[2, 2],
                          data_format="channels_last"),
              batchnorm("batch_normalization"),
              quant_conv("quant_conv2d_1", 4, 2),
              batchnorm("batch_normalization_1", scale=True),
              keras_layer("Flatten", "flatten", data_format="channels_last"),
              quant_dense("quant_dense", 5),
              batchnorm("batch_normalization_2", axis=1),
              quant_dense("quant_dense_1", 3),
              keras_layer("Activation", "activation", activation="softmax")]
    config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}

    def bn(n, scale_too, magnitude):
        out = []
        if scale_too:
            out.append(("gamma", rng.uniform(0.5, 2, n) * np.where(rng.random(n) < 0.3, -1, 1)))
        return out + [("beta", rng.uniform(-0.5, 0.5, n)), ("moving_mean", rng.uniform(-magnitude, magnitude, n)),
                      ("moving_variance", rng.uniform(1, 9, n))]
    first = 9 * channels * (1 if input_quantizer else 15)
    weights = {"quant_conv2d": [("kernel", rng.normal(size=(3, 3, channels, 3)))],
               "batch_normalization": bn(3, False, first / 3),
               "quant_conv2d_1": [("kernel", rng.normal(size=(2, 2, 3, 4)))],
               "batch_normalization_1": bn(4, True, 4),
               "quant_dense": [("kernel", rng.normal(size=(16, 5)))],
               "batch_normalization_2": bn(5, False, 4),
               "quant_dense_1": [("kernel", rng.normal(size=(5, 3)))]}
    return config, {k: [(n, v.astype(np.float32)) for n, v in vs] for k, vs in weights.items()}


def write_h5(path, config, weights) -> None:
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.21.0"
        f.attrs["model_config"] = json.dumps(config)
        root = f.create_group("model_weights")
        names = [layer["config"]["name"] for layer in config["config"]["layers"] if layer["class_name"] != "InputLayer"]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            g = root.create_group(name)
            vars_ = weights.get(name, [])
            g.attrs["weight_names"] = np.array([f"{name}/{v}:0".encode() for v, _ in vars_])
            for v, arr in vars_:
                g.create_dataset(f"{name}/{v}:0", data=arr)


def write_keras(path, config, weights) -> None:
    buf = io.BytesIO()
    seen = {}
    with h5py.File(buf, "w") as f:
        layers = f.create_group("layers")
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "InputLayer":
                continue
            name = layer["config"]["name"]
            # tf-keras names the group after the class, numbered per class in layer order
            words = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", layer["class_name"])
            stem = re.sub("([a-z])([A-Z])", r"\1_\2", words).lower()
            key = stem if stem not in seen else f"{stem}_{seen[stem]}"
            seen[stem] = seen.get(stem, 0) + 1
            vars_ = layers.create_group(key).create_group("vars")
            for i, (_, arr) in enumerate(weights.get(name, [])):
                vars_.create_dataset(str(i), data=arr)
        f.create_group("vars")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "2.21.0", "date_saved": "2026-11-29@23:06:47"}))
        z.writestr("config.json", json.dumps({"module": "keras", **config}))
        z.writestr("model.weights.h5", buf.getvalue())


def keras_forward(config, weights, x_nhwc: np.ndarray) -> np.ndarray:
    """The class scores of the model by Keras' own definitions, in float64, NHWC: Larq's
    ste_sign is +1 at 0; a 'same' conv pads with zeros; Flatten reads [H, W, C] in order."""
    def sign(v):
        return np.where(v >= 0, 1.0, -1.0)
    a = x_nhwc.astype(np.float64)
    for layer in config["config"]["layers"]:
        cls, cfg = layer["class_name"], layer["config"]
        w = dict(weights.get(cfg["name"], []))
        if cfg.get("input_quantizer"):
            a = sign(a)
        if cls == "QuantConv2D":
            k = sign(w["kernel"].astype(np.float64))                 # [kh, kw, C, N]
            kh = k.shape[0]
            if cfg["padding"] == "same":
                p = (kh - 1) // 2
                a = np.pad(a, ((0, 0), (p, p), (p, p), (0, 0)))
            ho, wo = a.shape[1] - kh + 1, a.shape[2] - kh + 1
            out = np.zeros((len(a), ho, wo, k.shape[3]))
            for i in range(ho):
                for j in range(wo):
                    out[:, i, j] = np.einsum("bhwc,hwcn->bn", a[:, i:i + kh, j:j + kh], k)
            a = out
        elif cls == "QuantDense":
            a = a @ sign(w["kernel"].astype(np.float64))
        elif cls == "BatchNormalization":
            gamma = w.get("gamma", 1.0)
            a = gamma * (a - w["moving_mean"]) / np.sqrt(w["moving_variance"].astype(np.float64) + cfg["epsilon"]) \
                + w["beta"]
        elif cls == "MaxPooling2D":
            b, h, wd, c = a.shape
            a = a[:, :h // 2 * 2, :wd // 2 * 2].reshape(b, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))
        elif cls == "Flatten":
            a = a.reshape(len(a), -1)
    return a
