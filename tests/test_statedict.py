"""State dicts without torch (docs/semantics.md §10.4): `.safetensors` read directly, and the
same model as from an `.npz` of the same tensors. None of this needs onnx or torch."""
import json
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import damaged
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refbnn.formats.files import InputError
from refbnn.formats.modelfile import model_to_dict
from refbnn.importers import import_model
from refbnn.importers.statedict import read_safetensors

LAYOUT = {"format": "refbnn-layout", "version": 1, "input": {"shape": [6], "Z": 4},
          "steps": [{"op": "linear", "prefix": "fc1"}, {"op": "batchnorm", "prefix": "bn1"},
                    {"op": "hardtanh"}, {"op": "sign"}, {"op": "linear", "prefix": "fc2"}]}
CODES = {"<f8": "F64", "<f4": "F32", "<f2": "F16", "<i8": "I64"}


def write_safetensors(path, tensors: dict, header_extra: dict | None = None) -> None:
    """The safetensors layout written by hand: u64 little-endian header length, the JSON
    header (name -> dtype, shape, [begin, end) in the data), padded with spaces to 8 bytes,
    then the tensors' little-endian bytes in order."""
    header, blobs, offset = dict(header_extra or {}), [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": CODES[arr.dtype.str], "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"".join(blobs))


def state(rng) -> dict:
    return {"fc1.weight": rng.normal(size=(5, 6)).astype(np.float32), "bn1.weight": rng.normal(size=5),
            "bn1.bias": rng.normal(size=5).astype(np.float32), "bn1.running_mean": rng.normal(size=5) * 0.5,
            "bn1.running_var": rng.uniform(0.5, 2, 5).astype(np.float16), "bn1.num_batches_tracked": np.array(7),
            "fc2.weight": rng.normal(size=(3, 5))}


def test_safetensors_and_npz_of_the_same_tensors_import_to_the_same_model(tmp_path):
    sd = state(np.random.default_rng(3))
    write_safetensors(tmp_path / "sd.safetensors", sd, {"__metadata__": {"format": "pt"}})
    np.savez(tmp_path / "sd.npz", **sd)
    (tmp_path / "layout.json").write_text(json.dumps(LAYOUT))
    read = read_safetensors(str(tmp_path / "sd.safetensors"))
    for k, v in sd.items():                       # exact: every float widened to float64, ints kept
        assert np.array_equal(read[k], v.astype(np.float64) if v.dtype.kind == "f" else v), k
    a = import_model(tmp_path / "sd.safetensors", layout=str(tmp_path / "layout.json"))
    b = import_model(tmp_path / "sd.npz", layout=str(tmp_path / "layout.json"))
    assert model_to_dict(a.model) == model_to_dict(b.model)


def test_files_written_by_the_safetensors_package_read_the_same():
    st = pytest.importorskip("safetensors.numpy")
    sd = state(np.random.default_rng(4))
    with tempfile.TemporaryDirectory() as d:
        st.save_file(sd, str(Path(d) / "t.safetensors"))
        read = read_safetensors(str(Path(d) / "t.safetensors"))
    assert sorted(read) == sorted(sd)
    for k, v in sd.items():
        assert np.array_equal(read[k], v.astype(np.float64) if v.dtype.kind == "f" else v), k


@pytest.mark.parametrize("damage, message", [
    (lambda h, raw: (h.update({"fc2.weight": {**h["fc2.weight"], "dtype": "F8_E4M3"}}), raw),
     "fc2.weight: dtype 'F8_E4M3' is not one refbnn reads"),
    (lambda h, raw: (h.update({"fc2.weight": {**h["fc2.weight"], "data_offsets": [0, 10**9]}}), raw),
     "fc2.weight: data_offsets [0, 1000000000] lie outside"),
    (lambda h, raw: (h.update({"fc2.weight": {**h["fc2.weight"], "shape": [3, 4]}}), raw),
     "fc2.weight: 120 bytes for a F64 tensor of shape [3, 4] (96 bytes)"),
    (lambda h, raw: (h.update({"fc2.weight": [1, 2]}), raw), "fc2.weight: expected dtype, shape and data_offsets"),
])
def test_a_damaged_safetensors_header_is_refused_naming_the_tensor(tmp_path, damage, message):
    sd = state(np.random.default_rng(5))
    write_safetensors(tmp_path / "ok.safetensors", sd)
    raw = (tmp_path / "ok.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    damage(header, raw)
    text = json.dumps(header).encode()
    (tmp_path / "bad.safetensors").write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n:])
    (tmp_path / "layout.json").write_text(json.dumps(LAYOUT))
    with pytest.raises(InputError, match=re.escape(message)):
        import_model(tmp_path / "bad.safetensors", layout=str(tmp_path / "layout.json"))


def test_a_signalling_nan_is_refused_by_name_without_a_warning(tmp_path):
    """Float32 bits 0x7f800001 (a signalling NaN, as damaged bytes may hold) raise the
    invalid flag when widened to float64, which NumPy would report as a RuntimeWarning;
    the reader widens quietly and the tensor is refused by name."""
    sd = state(np.random.default_rng(3))
    sd["fc1.weight"].view(np.uint32)[1, 2] = 0x7F800001
    write_safetensors(tmp_path / "sd.safetensors", sd)
    (tmp_path / "layout.json").write_text(json.dumps(LAYOUT))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=re.escape("sd.safetensors: fc1.weight: holds NaN or infinity")):
            import_model(tmp_path / "sd.safetensors", layout=str(tmp_path / "layout.json"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_damage_to_a_safetensors_file_is_bad_input_not_a_crash(tmp_path, data):
    """Property: flipped, inserted, deleted or truncated bytes give a model or an InputError
    naming the file, never another exception."""
    write_safetensors(tmp_path / "ok.safetensors", state(np.random.default_rng(6)))
    (tmp_path / "bad.safetensors").write_bytes(damaged((tmp_path / "ok.safetensors").read_bytes(), data))
    (tmp_path / "layout.json").write_text(json.dumps(LAYOUT))
    try:
        import_model(tmp_path / "bad.safetensors", layout=str(tmp_path / "layout.json"))
    except InputError as e:
        assert str(tmp_path) in str(e) or "--" in str(e)
