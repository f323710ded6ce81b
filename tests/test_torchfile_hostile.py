"""The pickle-free `.pt` reader is a security boundary (refbnn/importers/torchfile.py): a
hostile file for each refusal it makes, each a test that fails if that check is removed or
loosened by one. The pickles are assembled opcode by opcode, as an attacker would."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import torch_zip

from refbnn.formats.files import InputError
from refbnn.importers import torchfile
from refbnn.importers.torchfile import read_torch_file

MAX = 2**20


def _int(v: int) -> bytes:
    if -2**31 <= v < 2**31:
        return b"J" + struct.pack("<i", v)                      # BININT
    n = (v.bit_length() + 8) // 8
    return b"\x8a" + bytes([n]) + v.to_bytes(n, "little", signed=True)      # LONG1


def _str(t: str) -> bytes:
    b = t.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _tuple(values) -> bytes:
    return b"(" + b"".join(_int(v) for v in values) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _storage(key: str = "0", numel: int = 2, cls: str = "FloatStorage", module: str = "torch") -> bytes:
    return b"(" + _str("storage") + _global(module, cls) + _str(key) + _str("cpu") + _int(numel) + b"tQ"


def _tensor(offset: int, size, stride, storage: bytes = None, rebuild=("torch._utils", "_rebuild_tensor_v2")) -> bytes:
    return (_global(*rebuild) + b"(" + (storage or _storage()) + _int(offset) + _tuple(size) + _tuple(stride)
            + b"\x89}tR")


def _state(value: bytes) -> bytes:
    """{"w": value} as a protocol-2 pickle."""
    return b"\x80\x02}(" + _str("w") + value + b"u."


def _file(tmp_path, pkl: bytes, storages=None) -> str:
    storages = {"0": np.array([1.0, 2.0], "<f4").tobytes()} if storages is None else storages
    return torch_zip(tmp_path / "hostile.pt", pkl, storages)


def _refused(tmp_path, pkl: bytes, message: str, storages=None) -> None:
    with pytest.raises(InputError) as e:
        read_torch_file(_file(tmp_path, pkl, storages), MAX)
    assert message in str(e.value) and "hostile.pt" in str(e.value), str(e.value)


# -- views and storages: the bounds, exactly at the edge -------------------------------------

@pytest.mark.parametrize("offset, size, stride, values", [
    (0, (2,), (1,), [1.0, 2.0]),          # the whole storage
    (1, (1,), (1,), [2.0]),               # the last value
    (0, (2, 1), (1, 5), [[1.0], [2.0]]),  # a stride that is never taken (size 1)
    (1, (3,), (0,), [2.0, 2.0, 2.0]),     # stride 0: one value repeated, as expand() saves it
])
def test_views_that_end_on_the_last_value_are_read(tmp_path, offset, size, stride, values):
    """The accepted side of each bound: a view whose last element is the storage's last."""
    got = read_torch_file(_file(tmp_path, _state(_tensor(offset, size, stride))), MAX)["w"]
    assert got.tolist() == values


@pytest.mark.parametrize("offset, size, stride", [
    (0, (3,), (1,)),                      # one element past the end
    (2, (1,), (1,)),                      # an offset at the end
    (1, (2,), (1,)),                      # offset + size one past
    (0, (2, 2), (1, 1)),                  # last = 0 + 1 + 1 = 2: one past
    (0, (2**40,), (1,)),                  # far past
    (0, (2**62, 2**62), (2**62, 1)),      # sizes and strides past 64 bits: Python ints, no overflow
])
def test_a_view_one_element_past_its_storage_is_refused(tmp_path, offset, size, stride):
    _refused(tmp_path, _state(_tensor(offset, size, stride)), "a tensor view reaching past its 2 values")


@pytest.mark.parametrize("offset, size, stride", [
    (-1, (1,), (1,)),                     # a negative storage offset
    (0, (-1,), (1,)),                     # a negative size
    (0, (1,), (-1,)),                     # a negative stride
    (0, (1, 1), (1,)),                    # sizes and strides of different lengths
])
def test_a_view_with_a_negative_or_mismatched_shape_is_refused(tmp_path, offset, size, stride):
    _refused(tmp_path, _state(_tensor(offset, size, stride)), "a tensor view with size")


def test_a_repeating_view_is_bounded_like_a_storage(tmp_path):
    """Stride 0 passes the bound on the storage (it reads one value) but would materialise
    2^30 values: refused by its size, before any memory is taken. At the limit (MAX bytes
    of float64, MAX / 8 values) it is read; one value more is refused."""
    _refused(tmp_path, _state(_tensor(0, (2**30,), (0,))), "a tensor view of 1073741824 values is too large")
    at_limit = read_torch_file(_file(tmp_path, _state(_tensor(1, (MAX // 8,), (0,)))), MAX)["w"]
    assert at_limit.shape == (MAX // 8,) and set(at_limit.tolist()) == {2.0}
    _refused(tmp_path, _state(_tensor(1, (MAX // 8 + 1,), (0,))), f"a tensor view of {MAX // 8 + 1} values is too large")


def test_a_zero_sized_view_with_huge_dimensions_is_bad_input(tmp_path):
    """Size (0, 2^62): no element, but no array either; one line, not a crash."""
    _refused(tmp_path, _state(_tensor(0, (0, 2**62), (1, 1))), "a damaged PyTorch file")


@pytest.mark.parametrize("numel", [3, 1])
def test_a_storage_whose_bytes_do_not_match_its_count_is_refused(tmp_path, numel):
    """8 bytes of float32 hold 2 values: a count of 3 (too few bytes) or 1 (too many)."""
    _refused(tmp_path, _state(_tensor(0, (1,), (1,), _storage(numel=numel))), f"8 bytes for {numel} values")


def test_a_storage_larger_than_the_limit_is_refused(tmp_path):
    big = {"0": bytes(MAX + 4)}
    _refused(tmp_path, _state(_tensor(0, (1,), (1,), _storage(numel=(MAX + 4) // 4))),
             f"storage 0: {MAX + 4} bytes is too large", big)


# -- names: only the state dict's own, and only under their own modules -------------------

@pytest.mark.parametrize("module, name", [
    ("evil", "OrderedDict"),              # an allowed class name under a foreign module
    ("torch", "_rebuild_tensor_v2"),      # an allowed function under the wrong torch module
    ("collections", "FloatStorage"),
    ("torch._utils", "OrderedDict"),
    ("torch.nn", "FloatStorage"),
    ("builtins", "getattr"),
])
def test_an_allowed_name_under_another_module_is_refused(tmp_path, module, name):
    _refused(tmp_path, b"\x80\x02" + _global(module, name) + b")R.", f"refused global {module}.{name}")


def test_a_stack_global_is_checked_like_a_global(tmp_path):
    """STACK_GLOBAL (protocol 4) takes module and name from the stack: the same allow list."""
    pkl = b"\x80\x04" + _str("os") + _str("system") + b"\x93" + b")R."
    _refused(tmp_path, pkl, "refused global os.system")


def test_a_storage_class_under_another_module_is_not_a_storage(tmp_path):
    """The persistent id names its storage class; under any module but torch it is refused."""
    _refused(tmp_path, _state(_tensor(0, (1,), (1,), _storage(module="torch._utils", cls="_rebuild_tensor_v2"))),
             "a persistent id that is not a tensor storage")


# -- opcodes: outside the allowed set, refused by name ----------------------------------------

@pytest.mark.parametrize("opcode", [
    b"i",       # INST: import and call by name
    b"o",       # OBJ: call the class on the stack
    b"\x81",    # NEWOBJ
    b"\x92",    # NEWOBJ_EX
    b"\x82",    # EXT1: the extension registry
    b"P",       # PERSID (text): only the binary persistent id of a storage
    b"V",       # UNICODE (raw-unicode-escape)
    b"d",       # DICT from a mark
    b"l",       # LIST from a mark
    b"0",       # POP
])
def test_an_opcode_outside_the_allowed_set_is_refused(tmp_path, opcode):
    _refused(tmp_path, b"\x80\x02(" + opcode + b".", f"refused opcode {opcode!r}")


def test_a_later_protocol_than_5_is_refused(tmp_path):
    _refused(tmp_path, b"\x80\x06}.", "an unknown pickle protocol")


def test_a_memo_read_before_it_is_written_is_refused(tmp_path):
    _refused(tmp_path, b"\x80\x02h\x05.", "memo 5 read before it is written")


def test_calls_of_anything_but_the_allowed_names_are_refused(tmp_path):
    """REDUCE on a non-name, OrderedDict with arguments, a parameter without a tensor, a
    tensor rebuilt from something other than a storage: each refused by name."""
    _refused(tmp_path, b"\x80\x02)" + b")R.", "a call of something other than an allowed name")
    _refused(tmp_path, b"\x80\x02" + _global("collections", "OrderedDict") + _tuple([1]) + b"R.",
             "OrderedDict with arguments")
    _refused(tmp_path, b"\x80\x02" + _global("torch._utils", "_rebuild_parameter") + _tuple([1]) + b"R.",
             "a parameter without its tensor")
    _refused(tmp_path, b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2") + _tuple([1, 2, 3, 4]) + b"R.",
             "a tensor rebuilt from something other than a storage")
    not_a_storage = b"(" + _int(1) + _int(0) + _tuple([1]) + _tuple([1]) + b"t"    # an int where the storage goes
    _refused(tmp_path, b"\x80\x02" + _global("torch._utils", "_rebuild_tensor_v2") + not_a_storage + b"R.",
             "a tensor rebuilt from something other than a storage")


def test_a_storage_outside_a_tensor_is_refused(tmp_path):
    _refused(tmp_path, _state(_storage()), "a bare StorageRef outside a tensor")


def test_an_endless_pickle_is_cut_at_the_opcode_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(torchfile, "MAX_OPS", 50)
    _refused(tmp_path, b"\x80\x02" + b"N" * 60 + b".", "too many opcodes")


def test_a_big_endian_file_is_refused(tmp_path):
    path = torch_zip(tmp_path / "hostile.pt", _state(_tensor(0, (1,), (1,))), byteorder="big")
    with pytest.raises(InputError, match="byteorder 'big': only little-endian storages are read"):
        read_torch_file(path, MAX)


# -- what the allowed opcodes decode to, each value known before reading ---------------------

def _short(t: str) -> bytes:
    b = t.encode()
    return b"\x8c" + bytes([len(b)]) + b                      # SHORT_BINUNICODE


EVERY_OPCODE = (
    b"\x80\x04\x95" + struct.pack("<Q", 0)                    # PROTO 4, FRAME (its length is skipped)
    + b"}\x94("                                               # EMPTY_DICT, MEMOIZE (memo 0), MARK
    + _short("i2") + b"M" + struct.pack("<H", 0xBEEF)         # BININT2: 48879
    + _short("f") + b"G" + struct.pack(">d", -1.25)           # BINFLOAT, big-endian
    + _short("neg") + b"\x8a\x06" + (-2**40).to_bytes(6, "little", signed=True)   # LONG1, signed
    + _short("yes") + b"\x88" + _short("no") + b"\x89"        # NEWTRUE, NEWFALSE
    + _short("list") + b"]K\x01a(K\x02K\x03e"                 # EMPTY_LIST, APPEND, MARK .. APPENDS: [1, 2, 3]
    + _short("é") + _str("naïve")                             # 2-byte UTF-8 in both string opcodes
    + _short("tuples") + b"K\x01\x85K\x01K\x02\x86K\x01K\x02K\x03\x87\x87"   # TUPLE1..3
    + _short("empty") + b"(tN\x86"                           # MARK TUPLE with nothing after the mark, NONE
    + _short("memo") + _short("kept") + b"r" + struct.pack("<I", 300) + b"q\x07"   # LONG_BINPUT 300, BINPUT 7
    + _short("got") + b"j" + struct.pack("<I", 300) + b"h\x07\x86"                  # LONG_BINGET, BINGET
    + b"u" + _short("last") + b"K\x05s."                      # SETITEMS, then SETITEM, STOP
)


def test_every_allowed_opcode_decodes_to_its_value(tmp_path):
    """A pickle using each opcode the reader allows once, assembled by hand: each value is
    what the pickle format (PEP 307, PEP 3154) says, written down before reading it."""
    got = read_torch_file(_file(tmp_path, EVERY_OPCODE), MAX)
    assert list(got) == ["i2", "f", "neg", "yes", "no", "list", "é", "tuples", "empty", "memo", "got", "last"]
    assert got["i2"] == 48879 and got["f"] == -1.25 and got["neg"] == -2**40
    assert got["yes"] is True and got["no"] is False
    assert got["list"] == [1, 2, 3] and got["é"] == "naïve"
    assert got["tuples"] == ((1,), (1, 2), (1, 2, 3)) and got["empty"] == ((), None)
    assert got["memo"] == "kept" and got["got"] == ("kept", "kept")
    assert got["last"] == 5


def test_protocol_5_is_read():
    """Protocols up to 5 are read; 6 (not yet defined) is refused above."""
    assert torchfile._Unpickler(b"\x80\x05}.", "p5").run() == {}


def test_tensors_inside_lists_and_tuples_are_read(tmp_path):
    """A tensor placeholder anywhere in the containers becomes its array."""
    pkl = b"\x80\x02}(" + _str("w") + b"]" + _tensor(0, (2,), (1,)) + b"a" + _str("t") + _tensor(1, (1,), (1,)) \
        + b"\x85u."
    got = read_torch_file(_file(tmp_path, pkl), MAX)
    assert [a.tolist() for a in got["w"]] == [[1.0, 2.0]] and got["t"][0].tolist() == [2.0]


def test_a_parameter_and_a_tensor_need_only_what_the_reader_uses(tmp_path):
    """_rebuild_parameter needs only its tensor (torch writes requires_grad and hooks after
    it), _rebuild_tensor_v2 only storage, offset, size and stride."""
    four = _global("torch._utils", "_rebuild_tensor_v2") + b"(" + _storage() + _int(0) + _tuple((2,)) \
        + _tuple((1,)) + b"tR"
    param = _global("torch._utils", "_rebuild_parameter") + b"(" + four + b"tR"
    assert read_torch_file(_file(tmp_path, _state(param)), MAX)["w"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize("size, stride", [((1.5,), (1,)), (("2",), (1,)), ((2,), (1.0,)), ((2,), ("1",)), (2, (1,))])
def test_a_size_or_stride_that_is_not_a_tuple_of_ints_is_refused(tmp_path, size, stride):
    """Both the size and the stride must be tuples of ints (a float or a string in either,
    or a bare int, is refused by name before any array is made)."""
    def tup(t):
        return _int(t) if isinstance(t, int) else b"(" + b"".join(
            _int(v) if isinstance(v, int) else (b"G" + struct.pack(">d", v) if isinstance(v, float) else _str(v))
            for v in t) + b"t"
    pkl = _state(_global("torch._utils", "_rebuild_tensor_v2") + b"(" + _storage() + _int(0) + tup(size)
                 + tup(stride) + b"\x89}tR")
    _refused(tmp_path, pkl, "a tensor rebuilt from something other than a storage, an offset, a size and a stride")


def test_items_are_set_only_on_dicts_and_only_under_string_or_int_keys(tmp_path):
    """SETITEM on a list (with a string key) and on a dict with a tuple key: each refused."""
    message = "an item set on something other than a dict, or a key that is not a string"
    _refused(tmp_path, b"\x80\x02]" + _str("k") + _int(1) + b"s.", message)
    _refused(tmp_path, b"\x80\x02}" + b")" + _int(1) + b"s.", message)


def test_a_string_longer_than_the_file_is_damage_not_a_step_back(tmp_path):
    """BINUNICODE's length is unsigned: 0xFFFFFFFF asks for 4 GiB, and the file ends first
    (read as signed it would be -1, a step backwards through the pickle)."""
    _refused(tmp_path, b"\x80\x02" + b"X" + struct.pack("<I", 0xFFFFFFFF) + b"abc.", "data.pkl ends early")


def test_a_storage_exactly_at_the_limit_is_read(tmp_path):
    """The size limits are inclusive: a storage of exactly max_bytes bytes (100 float32 =
    400) and a view of exactly max_bytes / 8 = 50 values are read; one byte less refuses
    the storage."""
    path = _file(tmp_path, _state(_tensor(0, (50,), (1,), _storage(numel=100))), {"0": np.ones(100, "<f4").tobytes()})
    assert read_torch_file(path, 400)["w"].tolist() == [1.0] * 50
    with pytest.raises(InputError, match="storage 0: 400 bytes is too large"):
        read_torch_file(path, 399)


def test_a_damaged_or_foreign_file_is_not_a_torch_zip(tmp_path):
    """is_torch_zip: a file that is no zip, a zip without <name>/data.pkl, a zip with
    data.pkl two folders deep, and a zip cut short are not torch files; the real layout is."""
    import zipfile
    (tmp_path / "plain.pt").write_bytes(b"not a zip at all")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("archive/weights.bin", b"")
    with zipfile.ZipFile(tmp_path / "deep.zip", "w") as z:
        z.writestr("a/b/data.pkl", b"")
    good = _file(tmp_path, _state(_int(1)))
    (tmp_path / "cut.pt").write_bytes(Path(good).read_bytes()[:-30])
    for name in ("plain.pt", "other.zip", "deep.zip", "cut.pt"):
        assert not torchfile.is_torch_zip(str(tmp_path / name)), name
    assert torchfile.is_torch_zip(good)


def _dicts(n: int) -> bytes:
    """n dicts, each the value of "k" in the one before."""
    return b"\x80\x02}" + (_str("k") + b"}") * (n - 1) + b"s" * (n - 1) + b"."


@pytest.mark.parametrize("pkl", [
    b"\x80\x02}q\x00" + _str("self") + b"h\x00s.",          # a dict holding itself through the memo
    b"\x80\x02" + b"]" * 101 + b"a" * 100 + b".",             # lists 101 deep
    _dicts(101),
])
def test_a_container_inside_itself_or_nested_too_deep_is_refused(tmp_path, pkl):
    """The memo lets a pickle put a dict inside itself; nesting is bounded at MAX_DEPTH (100)
    levels, so neither ends in Python's recursion limit."""
    _refused(tmp_path, pkl, "containers nested more than 100 deep (or inside themselves)")


def test_containers_nested_100_deep_are_read(tmp_path):
    """The bound is inclusive: 100 lists or 100 dicts, one inside the other, are read."""
    got = read_torch_file(_file(tmp_path, b"\x80\x02" + b"]" * 100 + b"a" * 99 + b"."), MAX)
    for _ in range(99):
        got = got[0]
    assert got == []
    got = read_torch_file(_file(tmp_path, _dicts(100)), MAX)
    for _ in range(99):
        got = got["k"]
    assert got == {}


@pytest.mark.parametrize("pkl, at, message", [
    (b"\x80\x02t.", 3, "no MARK"),                       # TUPLE at byte 2; the reader stands after it
    (b"\x80\x02NN.", 5, "a stack of more than one value at STOP"),
    (b"\x80\x02}}b.", 5, "BUILD of something other than an OrderedDict"),
])
def test_each_malformed_pickle_is_refused_in_words(tmp_path, pkl, at, message):
    """The refusal names the problem and the byte after the opcode that failed, and says
    what refbnn reads instead."""
    with pytest.raises(InputError) as e:
        read_torch_file(_file(tmp_path, pkl), MAX)
    assert str(e.value) == (f"{tmp_path / 'hostile.pt'}: data.pkl at byte {at}: {message}; refbnn reads only "
                            "tensors and plain containers (as torch.load(weights_only=True) would)")


def test_the_zip_level_refusals_in_words(tmp_path):
    """No data.pkl, a data.pkl past the limit (and one exactly at it, read), a damaged zip
    (the exception's name and its first 120 characters), and no byteorder record (torch
    before 1.10 wrote none: little-endian)."""
    import zipfile
    with zipfile.ZipFile(tmp_path / "none.pt", "w") as z:
        z.writestr("archive/weights.bin", b"")
    with pytest.raises(InputError) as e:
        read_torch_file(str(tmp_path / "none.pt"), MAX)
    assert str(e.value) == f"{tmp_path / 'none.pt'}: not a PyTorch zip file (no single <name>/data.pkl)"
    pkl = _state(_int(7))
    path = _file(tmp_path, pkl)
    assert read_torch_file(path, len(pkl)) == {"w": 7}
    with pytest.raises(InputError) as e:
        read_torch_file(path, len(pkl) - 1)
    assert str(e.value) == f"{path}: data.pkl of {len(pkl)} bytes is too large"
    key = "k" * 300
    long_key = _state(_tensor(0, (1,), (1,), _storage(key=key)))
    with pytest.raises(InputError) as e:
        read_torch_file(_file(tmp_path, long_key, {"0": b"\0" * 8}), MAX)
    want = str(KeyError(f"There is no item named 'archive/data/{key}' in the archive"))[:120]
    assert str(e.value) == f"{tmp_path / 'hostile.pt'}: a damaged PyTorch file (KeyError: {want})"
    with zipfile.ZipFile(tmp_path / "old.pt", "w") as z:
        z.writestr("archive/data.pkl", _state(_int(3)))
    assert read_torch_file(str(tmp_path / "old.pt"), MAX) == {"w": 3}


def test_a_zip_with_a_damaged_directory_is_not_a_torch_zip(tmp_path):
    """A zip whose end record is intact (is_zipfile says yes) but whose central directory
    is damaged: not a torch file, and no exception escapes."""
    import zipfile
    good = _file(tmp_path, _state(_int(1)))
    raw = bytearray(Path(good).read_bytes())
    at = raw.rindex(b"PK\x01\x02")                      # the last central directory entry
    raw[at:at + 4] = b"PK\x09\x09"
    (tmp_path / "bad.pt").write_bytes(bytes(raw))
    assert zipfile.is_zipfile(tmp_path / "bad.pt")
    assert not torchfile.is_torch_zip(str(tmp_path / "bad.pt"))
