"""The Larq / TensorFlow family with the real tools: models built with larq, saved by Keras
(`.h5`, `.keras`) and exported by tf2onnx, each imported and checked against its own runtime
(TensorFlow for the Keras files, onnxruntime for the ONNX graph).

Needs tensorflow-cpu, tf-keras, larq and tf2onnx, which CI does not install; every test skips
cleanly without them. To run them (README, "Tests with the real tools"):

    pip install tensorflow-cpu tf-keras larq tf2onnx && TF_USE_LEGACY_KERAS=1 pytest tests/test_import_tf.py
"""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")       # Larq needs Keras 2 (tf-keras)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("h5py")
pytest.importorskip("onnxruntime")
tf = pytest.importorskip("tensorflow")
try:
    import larq as lq
except (ImportError, AttributeError) as e:       # larq on Keras 3 fails with AttributeError
    pytest.skip(f"larq does not import here ({type(e).__name__}); install tf-keras", allow_module_level=True)

from refbnn.importers import import_model  # noqa: E402
from refbnn.importers.check import check  # noqa: E402


def _larq_model(input_quantizer: bool, channels: int, seed: int, pooled_last: bool = False):
    """Larq's MNIST-example layers (smaller), with batch norms given random statistics;
    `pooled_last`: the last conv block pools before its batch norm and the Flatten."""
    tf.keras.utils.set_random_seed(seed)
    kw = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    first = dict(kw) if input_quantizer else {k: v for k, v in kw.items() if k != "input_quantizer"}
    model = tf.keras.models.Sequential([
        lq.layers.QuantConv2D(4, (3, 3), input_shape=(8, 8, channels), padding="same", **first),
        tf.keras.layers.MaxPooling2D((2, 2)),
        tf.keras.layers.BatchNormalization(scale=False),
        lq.layers.QuantConv2D(6, (3, 3), padding="same" if pooled_last else "valid", **kw),
        *([tf.keras.layers.MaxPooling2D((2, 2))] if pooled_last else []),
        tf.keras.layers.BatchNormalization(scale=False),
        tf.keras.layers.Flatten(),
        lq.layers.QuantDense(8, **kw),
        tf.keras.layers.BatchNormalization(),
        lq.layers.QuantDense(5, **kw),
        tf.keras.layers.Activation("softmax")])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            new = []
            for v in layer.weights:
                n = v.shape
                new.append(rng.uniform(0.5, 2, n) * rng.choice([-1, 1], n) if "gamma" in v.name else
                           rng.uniform(-0.5, 0.5, n) if "beta" in v.name else
                           rng.uniform(-6, 6, n) if "mean" in v.name else rng.uniform(1, 9, n))
            layer.set_weights(new)
    return model


@pytest.mark.parametrize("input_quantizer,channels,pooled_last", [(False, 1, False), (True, 3, False),
                                                                   (False, 2, True)])
def test_larq_files_and_their_tf2onnx_export_import_and_agree_with_their_runtimes(input_quantizer, channels,
                                                                                   pooled_last, tmp_path):
    """Property: the `.h5`, the `.keras` and the tf2onnx graph of one Larq model import to the
    same refbnn model, whose predictions equal TensorFlow's on every input (and onnxruntime's,
    sign for sign, on the graph)."""
    tf2onnx = pytest.importorskip("tf2onnx")
    keras_model = _larq_model(input_quantizer, channels, seed=3 + channels, pooled_last=pooled_last)
    keras_model.save(tmp_path / "m.h5")
    keras_model.save(tmp_path / "m.keras")
    spec = (tf.TensorSpec((None, 8, 8, channels), tf.float32, name="input"),)
    proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=13)
    (tmp_path / "m.onnx").write_bytes(proto.SerializeToString())
    rng = np.random.default_rng(channels)
    x = rng.integers(-255, 256, (300, channels, 8, 8))
    models = []
    for name in ("m.h5", "m.keras", "m.onnx"):
        imported = import_model(tmp_path / name, z=255, input_map="x")
        report = check(imported, x)
        assert report.ok and report.predictions_agree == len(x), (name, report.unexplained[:3])
        if name.endswith(".onnx"):
            assert [a.differ for a in report.layers] == [0, 0, 0] and len(report.layers) == 3
        models.append(imported.model)
    assert models[0] == models[1] == models[2]
    assert (models[0].input_threshold is not None) == input_quantizer
