"""Keras / Larq model files (`.h5`, `.keras`) read with h5py, no TensorFlow: the files are
written the way tf-keras writes them (tests/keras_files.py) and the imported model is
compared with Keras' own forward pass, computed independently in NHWC float64."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("h5py")

from click.testing import CliRunner  # noqa: E402
from keras_files import (  # noqa: E402
    STE,
    batchnorm,
    input_layer,
    keras_forward,
    keras_layer,
    larq_cnn,
    quant_conv,
    quant_dense,
    write_h5,
    write_keras,
)

from refbnn.cli import main  # noqa: E402
from refbnn.engines.fast import FastEngine  # noqa: E402
from refbnn.engines.interpreter import Interpreter  # noqa: E402
from refbnn.formats.files import InputError  # noqa: E402
from refbnn.importers import RefusedError, import_model  # noqa: E402
from refbnn.semantics.model import Threshold  # noqa: E402

WRITERS = {"h5": write_h5, "keras": write_keras}


def _file(tmp_path, fmt, config, weights):
    path = tmp_path / f"model.{fmt}"
    WRITERS[fmt](path, config, weights)
    return str(path)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("channels,input_quantizer", [(1, None), (3, None), (2, STE)])
def test_a_larq_file_imports_and_predicts_as_keras_does(fmt, channels, input_quantizer, tmp_path):
    """Property: a Larq CNN (QuantConv2D 'same' and 'valid', MaxPooling2D, BatchNormalization with
    and without gamma, some gamma < 0, Flatten of [H, W, C], QuantDense, softmax) read from either
    file format predicts, on integer data in refbnn's [C, H, W] layout, exactly what Keras'
    forward pass predicts on the same data in NHWC, in both engines."""
    rng = np.random.default_rng(channels + 10 * bool(input_quantizer))
    config, weights = larq_cnn(rng, channels, input_quantizer)
    imported = import_model(_file(tmp_path, fmt, config, weights), z=15, input_map="x")
    model = imported.model
    assert model.input_shape == (channels, 6, 6)
    assert [layer.type for layer in model.layers] == ["conv2d", "maxpool2d", "threshold", "conv2d", "threshold",
                                                       "flatten", "linear", "threshold", "linear"]
    # Larq's ste_sign on the input: +1 iff x >= 0, i.e. x > -1 (§2.6)
    assert model.input_threshold == (Threshold((-1,) * channels) if input_quantizer else None)
    x = rng.integers(-15, 16, (200, channels, 6, 6))
    scores = keras_forward(config, weights, x.transpose(0, 2, 3, 1))
    want = scores.argmax(axis=1)
    assert list(FastEngine(model).predictions(x)) == list(want)
    assert Interpreter(model).predictions(x[:20]) == list(want[:20])


def test_both_formats_give_the_same_model(tmp_path):
    """The same config and weights in `.h5` (variables by name) and `.keras` (by position)."""
    config, weights = larq_cnn(np.random.default_rng(1), 2)
    a = import_model(_file(tmp_path, "h5", config, weights), z=15, input_map="x").model
    b = import_model(_file(tmp_path, "keras", config, weights), z=15, input_map="x").model
    assert a == b


def _replace(config, index, layer):
    layers = list(config["config"]["layers"])
    layers[index] = layer
    return {"class_name": config["class_name"], "config": {**config["config"], "layers": layers}}


def _functional_with_shortcut():
    conv = quant_conv("c1", 2, 3, "same", input_quantizer=None)
    conv2 = quant_conv("c2", 2, 3, "same")
    conv["inbound_nodes"] = [[["input_1", 0, 0, {}]]]
    conv2["inbound_nodes"] = [[["c1", 0, 0, {}]]]
    add = keras_layer("Add", "add")
    add["inbound_nodes"] = [[["c1", 0, 0, {}], ["c2", 0, 0, {}]]]
    inp = input_layer((4, 4, 1))
    inp["inbound_nodes"] = []
    return {"class_name": "Functional", "config": {"name": "model", "layers": [inp, conv, conv2, add]}}


@pytest.mark.parametrize("case,message", [
    ("stride 2", "layer 'quant_conv2d' (QuantConv2D): strides [2, 2]; refbnn's conv2d has stride 1"),
    ("ternary kernel", "kernel_quantizer ste_tern: it is ternary"),
    ("dorefa input", "input_quantizer dorefa_quantizer: it has more than two levels"),
    ("relu", "activation 'relu' inside the layer"),
    ("average pool", "layer 'avg' (AveragePooling2D): a AveragePooling2D layer is not something refbnn can"),
    ("shortcut", "layer 'add' (Add) reads 2 inputs, not the layer before it: a shortcut"),
    ("missing weight", "layer 'quant_conv2d_1' (QuantConv2D): 0 weight arrays, expected 1 (kernel)"),
])
def test_what_keras_files_refbnn_cannot_represent_are_refused_naming_the_layer(case, message, tmp_path):
    config, weights = larq_cnn(np.random.default_rng(2))
    if case == "stride 2":
        config = _replace(config, 1, quant_conv("quant_conv2d", 3, 3, "same", input_quantizer=None, strides=[2, 2]))
    elif case == "ternary kernel":
        config = _replace(config, 4, quant_conv("quant_conv2d_1", 4, 2, kernel_quantizer="ste_tern"))
    elif case == "dorefa input":
        dorefa = {"class_name": "DoReFaQuantizer", "config": {"name": "dorefa_quantizer", "k_bit": 2}}
        config = _replace(config, 7, quant_dense("quant_dense", 5, input_quantizer=dorefa))
    elif case == "relu":
        layer = quant_conv("quant_conv2d", 3, 3, "same", input_quantizer=None)
        layer["config"]["activation"] = "relu"
        config = _replace(config, 1, layer)
    elif case == "average pool":
        config = _replace(config, 2, keras_layer("AveragePooling2D", "avg", pool_size=[2, 2]))
    elif case == "shortcut":
        config = _functional_with_shortcut()
    elif case == "missing weight":
        del weights["quant_conv2d_1"]
    with pytest.raises(InputError) as e:
        import_model(_file(tmp_path, "h5", config, weights), z=15, input_map="x")
    assert message in str(e.value) and "model.h5" in str(e.value)
    if case != "missing weight":
        assert isinstance(e.value, RefusedError)


def test_cli_imports_a_keras_file_and_names_the_extra_for_check(tmp_path, monkeypatch):
    """`refbnn import model.h5` writes the model; `--check` without TensorFlow exits 2 naming
    what to install (the check runs the file itself in TensorFlow with Larq)."""
    import sys

    config, weights = larq_cnn(np.random.default_rng(3))
    src = _file(tmp_path, "h5", config, weights)
    out = tmp_path / "m.json"
    r = CliRunner().invoke(main, ["import", src, "--z", "15", "--input", "x", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert out.exists() and "keras" in r.output
    data = tmp_path / "d.npz"
    np.savez(data, x=np.random.default_rng(0).integers(0, 16, (4, 1, 6, 6)), y=np.zeros(4, dtype=np.int64))
    monkeypatch.setitem(sys.modules, "larq", None)
    r = CliRunner().invoke(main, ["import", src, "--z", "15", "--input", "x", "-o", str(tmp_path / "n.json"),
                                  "--check", str(data)])
    assert r.exit_code == 2 and "pip install tensorflow-cpu tf-keras larq" in r.output
    assert not (tmp_path / "n.json").exists()


def test_a_keras_file_without_h5py_names_the_extra(tmp_path, monkeypatch):
    import sys

    config, weights = larq_cnn(np.random.default_rng(4))
    src = _file(tmp_path, "h5", config, weights)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(InputError, match=r"needs h5py: pip install 'refbnn\[keras\]'"):
        import_model(src, z=15, input_map="x")


def test_a_dense_only_larq_model_with_a_2d_input(tmp_path):
    """[H, W] input (no channel axis), Flatten, QuantDense: the flatten of a one-channel image
    is refbnn's; scores as Keras computes them."""
    rng = np.random.default_rng(6)
    layers = [input_layer((4, 4)), keras_layer("Flatten", "flatten", data_format="channels_last"),
              quant_dense("d1", 6, input_quantizer=None), batchnorm("bn", axis=1),
              quant_dense("d2", 3), keras_layer("Activation", "act", activation="softmax")]
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    weights = {"d1": [("kernel", rng.normal(size=(16, 6)).astype(np.float32))],
               "bn": [("beta", rng.uniform(-1, 1, 6).astype(np.float32)),
                      ("moving_mean", rng.uniform(-20, 20, 6).astype(np.float32)),
                      ("moving_variance", rng.uniform(1, 9, 6).astype(np.float32))],
               "d2": [("kernel", rng.normal(size=(6, 3)).astype(np.float32))]}
    model = import_model(_file(tmp_path, "keras", config, weights), z=7, input_map="x").model
    assert model.input_shape == (1, 4, 4)
    x = rng.integers(-7, 8, (100, 1, 4, 4))
    want = keras_forward(config, weights, x.reshape(100, 4, 4)[..., None]).argmax(axis=1)
    assert list(FastEngine(model).predictions(x)) == list(want)


def test_conv_pool_batchnorm_flatten_then_the_dense_layers_input_quantizer(tmp_path):
    """Larq's most common block: QuantConv2D -> MaxPooling2D -> BatchNormalization -> Flatten,
    the sign coming from the next QuantDense's input quantizer. refbnn's model is
    conv -> maxpool -> threshold -> flatten (the sign commutes with the flatten)."""
    rng = np.random.default_rng(11)
    layers = [input_layer((4, 4, 1)), quant_conv("c", 3, 3, "same", input_quantizer=None),
              keras_layer("MaxPooling2D", "p", pool_size=[2, 2], padding="valid", strides=[2, 2]),
              batchnorm("bn"), keras_layer("Flatten", "f", data_format="channels_last"),
              quant_dense("d", 3), keras_layer("Activation", "a", activation="softmax")]
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    weights = {"c": [("kernel", rng.normal(size=(3, 3, 1, 3)).astype(np.float32))],
               "bn": [("beta", rng.uniform(-1, 1, 3).astype(np.float32)),
                      ("moving_mean", rng.uniform(-10, 10, 3).astype(np.float32)),
                      ("moving_variance", rng.uniform(1, 9, 3).astype(np.float32))],
               "d": [("kernel", rng.normal(size=(12, 3)).astype(np.float32))]}
    model = import_model(_file(tmp_path, "h5", config, weights), z=5, input_map="x").model
    assert [layer.type for layer in model.layers] == ["conv2d", "maxpool2d", "threshold", "flatten", "linear"]
    x = rng.integers(-5, 6, (200, 1, 4, 4))
    want = keras_forward(config, weights, x.transpose(0, 2, 3, 1)).argmax(axis=1)
    assert list(FastEngine(model).predictions(x)) == list(want)


def test_a_damaged_file_on_which_libhdf5_loops_is_refused_in_time(monkeypatch, tmp_path):
    """tests/data/damaged_loops_libhdf5.h5 is a Keras .h5 written by tests/keras_files.py with
    some bytes damaged (found by the damage fuzz test): reading its model_config attribute
    makes libhdf5 loop forever. The read runs in a child process with a time limit, so the
    import is refused, naming the file, instead of hanging."""
    from pathlib import Path

    from refbnn.importers import kerasfile as keras

    monkeypatch.setattr(keras, "READ_TIMEOUT", 5)
    path = Path(__file__).parent / "data" / "damaged_loops_libhdf5.h5"
    with pytest.raises(InputError, match="did not finish reading the file in 5 s"):
        import_model(path, z=15, input_map="x")
