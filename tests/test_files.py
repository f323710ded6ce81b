"""Model and data files (docs/semantics.md §3): round trips and every malformed case.

Each bad file must give an InputError whose message names the file and the field."""
import base64
import json

import numpy as np
import pytest

from refbnn.demo.bars import example_data, example_model
from refbnn.formats.datafile import read_data, write_data
from refbnn.formats.files import InputError
from refbnn.formats.modelfile import LIMITS, model_to_dict, read_model, write_model


@pytest.fixture
def doc():
    return model_to_dict(example_model())


def write(tmp_path, doc, name="m.json"):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def test_model_round_trip_gives_an_equal_model(tmp_path):
    model = example_model()
    write_model(tmp_path / "m.json", model)
    assert read_model(tmp_path / "m.json") == model


def test_bits_are_packbits_big_endian_of_the_row_major_tensor(doc):
    # docs/semantics.md §3.1: bits = base64(numpy.packbits(bits, bitorder="big")), bit 1 = +1.
    model = example_model()
    conv = model.layers[0].weight
    signs = np.array(conv.bits.tolist()).reshape(conv.shape)
    packed = np.packbits(signs.ravel().astype(np.uint8), bitorder="big")
    assert doc["layers"][0]["weight"]["bits"] == base64.b64encode(packed.tobytes()).decode()
    # Filter 0 is the horizontal detector: middle row +1, outer rows -1.
    assert signs[0, 0].tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 0]]


def test_polarity_may_be_omitted(tmp_path, doc):
    del doc["layers"][5]["polarity"]
    assert read_model(write(tmp_path, doc)).layers[5].polarity == (1, 1, 1, 1)


def _set(doc, path, value):
    *head, last = path
    target = doc
    for key in head:
        target = target[key]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value


BAD = [
    # (where to change, new value or KeyError to delete, field that must be named)
    (["format"], "other", "format"),
    (["version"], 2, "version"),
    (["version"], True, "version"),
    (["extra"], 1, "unknown key 'extra'"),
    (["input", "Z"], 0, "input.Z"),
    (["input", "Z"], 2.5, "input.Z"),
    (["input", "Z"], 2**40, "input.Z"),
    (["input", "shape"], [1, 8], "input.shape"),
    (["input", "shape"], [1, 6, 8], "layers[4].weight.shape: K = 64 but the input has 48 values"),
    (["input", "shape"], [2**20, 2**20, 1], "input.shape[0]"),
    (["layers"], [], "layers"),
    (["layers", 0, "type"], "conv3d", "layers[0].type"),
    (["layers", 0, "stride"], 2, "unknown key 'stride'"),
    (["layers", 0, "weight"], KeyError, "layers[0].weight"),
    (["layers", 0, "padding"], -1, "layers[0].padding"),
    (["layers", 0, "weight", "bits"], "AAAA", "layers[0].weight.bits"),
    (["layers", 0, "weight", "bits"], "!!!!!!!!", "layers[0].weight.bits"),
    (["layers", 0, "weight", "bits"], "////////", "padding bits"),
    (["layers", 0, "weight", "shape"], [4, 1, 3, 2], "kernel must be square"),
    (["layers", 0, "weight", "shape"], [4, 2, 3, 3], "layers[0].weight.shape"),
    (["layers", 1], {"type": "threshold", "thresholds": [4, 4, 4]}, "layers[1].thresholds: 3 values for 4 channels"),
    (["layers", 1, "thresholds", 0], 4.5, "layers[1].thresholds[0]"),
    (["layers", 1, "thresholds", 0], "4", "layers[1].thresholds[0]"),
    (["layers", 1, "thresholds", 0], 2**60, "layers[1].thresholds[0]"),
    (["layers", 1, "polarity", 2], 0, "layers[1].polarity[2]"),
    (["layers", 1, "polarity"], [1, 1], "layers[1].polarity"),
    (["layers", 4, "weight", "shape"], [4, 63], "layers[4].weight.shape"),
    (["layers", 5], {"type": "maxpool2d"}, "layers[4] (linear): must be followed by a threshold"),
    (["layers", 6], {"type": "flatten"}, "must end with a linear or conv2d"),
]


@pytest.mark.parametrize("where,value,field", BAD, ids=[".".join(map(str, b[0])) + f"={b[1]!r}"[:30] for b in BAD])
def test_malformed_model_names_file_and_field(tmp_path, doc, where, value, field):
    if where == ["layers", 0, "weight", "shape"] and value == [4, 2, 3, 3]:
        # right number of bits for 72 weights, but C = 2 while the input has 1 channel
        doc["layers"][0]["weight"]["bits"] = base64.b64encode(bytes(9)).decode()
    if where == ["layers", 0, "weight", "shape"] and value == [4, 1, 3, 2]:
        doc["layers"][0]["weight"]["bits"] = base64.b64encode(bytes(3)).decode()
    if where == ["layers", 0, "weight", "bits"] and value == "////////":
        doc["layers"][0]["weight"]["shape"] = [2, 1, 3, 3]   # 18 bits in 3 bytes: 6 pad bits set
        value = base64.b64encode(b"\xff\xff\xff").decode()
    _set(doc, where, value)
    path = write(tmp_path, doc)
    with pytest.raises(InputError) as e:
        read_model(path)
    assert str(e.value).startswith(f"{path}: ")
    assert field in str(e.value)


def test_thresholds_need_a_preceding_weight_layer(tmp_path, doc):
    doc["layers"].insert(0, {"type": "threshold", "thresholds": [0]})
    with pytest.raises(InputError, match=r"layers\[0\] \(threshold\): must follow a weight layer"):
        read_model(write(tmp_path, doc))


def test_not_json_and_missing_file(tmp_path):
    with pytest.raises(InputError, match="not valid JSON"):
        read_model(write(tmp_path, "{"))
    with pytest.raises(InputError, match="cannot read"):
        read_model(tmp_path / "absent.json")


def test_weight_bits_are_limited_before_decoding(tmp_path, doc):
    doc["layers"][4]["weight"]["shape"] = [2**15, 2**16]
    with pytest.raises(InputError, match=rf"layers\[4\].weight.shape: {2**31} bits exceed the limit {LIMITS['weight_bits']}"):
        read_model(write(tmp_path, doc))


# -- data files --------------------------------------------------------------------------

def test_data_round_trip(tmp_path):
    x, y = example_data(10)
    write_data(tmp_path / "d.npz", x, y)
    data = read_data(tmp_path / "d.npz", example_model())
    assert (data.x == x).all() and (data.y == y).all()


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("change,message", [
    (lambda x, y: dict(x=x), "expected exactly the arrays x and y"),
    (lambda x, y: dict(x=x, y=y, z=y), "expected exactly the arrays x and y"),
    (lambda x, y: dict(x=x.astype(float), y=y), "x: expected an integer array"),
    (lambda x, y: dict(x=x[:, :, :4], y=y), "x: shape [10, 1, 4, 8] does not match"),
    (lambda x, y: dict(x=x, y=y[:3]), "y: shape [3], expected [10]"),
    (lambda x, y: dict(x=x + 5, y=y), "outside |x| <= Z = 4"),
    (lambda x, y: dict(x=x, y=y + 2), "outside 0..1"),
    (lambda x, y: dict(x=x[:0], y=y[:0]), "x: the data set is empty"),
    (lambda x, y: dict(x=np.array([None] * 10, dtype=object), y=y), "x: dtype object is not a plain number type"),
])
def test_malformed_data_names_file_and_field(tmp_path, change, message):
    x, y = example_data(10)
    path = _npz(tmp_path, **change(x, y))
    with pytest.raises(InputError) as e:
        read_data(path, example_model())
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)


def test_data_that_is_not_a_zip(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"hello")
    with pytest.raises(InputError, match="not a readable .npz file"):
        read_data(tmp_path / "d.npz", example_model())


@pytest.mark.parametrize("header", [
    b"{'descr': '<i8', 'fortran_order': False, 'shape': (3,",     # numpy's tokenizer: EOF in a statement
    b"{'descr': '<i8', 'fortran_order': False, 'shape': (3,)}}",  # ast: unmatched brace
])
def test_npy_header_that_does_not_parse_is_bad_input(tmp_path, header):
    """Property: a .npy member whose header text is damaged (numpy raises TokenError or
    SyntaxError while parsing it) is bad input naming the array, not an internal error."""
    import zipfile

    text = header + b" " * (63 - len(header) % 64) + b"\n"
    npy = b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(24)
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as zf:
        zf.writestr("x.npy", npy)
        zf.writestr("y.npy", npy)
    with pytest.raises(InputError, match=r"d.npz: x: not a valid .npy array"):
        read_data(tmp_path / "d.npz", example_model())
