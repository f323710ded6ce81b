"""PyTorch `.pt`/`.pth` state dicts read without torch and without `pickle`
(docs/semantics.md §10.4).

`torch.save` writes a zip: `<name>/data.pkl`, a pickle of the state dict whose tensors
point at raw little-endian storages `<name>/data/<key>`. refbnn never unpickles: this
module *reads* the pickle's opcodes with a small stack machine that knows only what a
state dict is made of (dicts, tuples, lists, strings, numbers, booleans, None) and
exactly these names:

- `collections.OrderedDict` (the state dict; `_metadata` set by BUILD is ignored),
- `torch._utils._rebuild_tensor_v2` and `torch._utils._rebuild_parameter` (a tensor as a
  view of a storage: offset, size, stride),
- `torch.<Dtype>Storage` (the storage's element type).

Every other name is refused, as is every opcode outside this set: nothing in the file is
ever imported, called or executed, which is what `torch.load(weights_only=True)` promises
and this reader guarantees by construction. Storages are read from the zip with bounds
checks; a tensor view that reaches outside its storage is refused.
"""
from __future__ import annotations

import struct
import zipfile
from math import prod
from typing import Any

import numpy as np

from ..formats.files import InputError

STORAGE_DTYPES = {
    "DoubleStorage": "<f8", "FloatStorage": "<f4", "HalfStorage": "<f2", "BFloat16Storage": "bf16",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
           ("torch._utils", "_rebuild_parameter")} | {("torch", name) for name in STORAGE_DTYPES}
MAX_OPS = 10_000_000
MAX_DEPTH = 100          # containers within containers; a state dict nests 2 or 3 deep


class _Global:
    """A name the pickle refers to (never resolved to a Python object)."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name


class _Mark:
    pass


class _OrderedDict(dict):
    pass


class _StorageRef:
    """A persistent id ('storage', dtype, key, location, numel): the raw data of a tensor."""

    def __init__(self, dtype: str, key: str, numel: int):
        self.dtype, self.key, self.numel = dtype, key, numel


def is_torch_zip(path: str) -> bool:
    """A torch zip file: one top-level folder holding `data.pkl`."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") and n.count("/") == 1 for n in z.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        return False                 # a damaged zip: the caller's reader names the damage


def read_torch_file(path: str, max_bytes: int) -> Any:
    """The object a torch zip file holds, with every tensor as a NumPy array (float64 for
    floating point). Raises InputError for anything that is not plain data and tensors."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise InputError(f"{path}: not a PyTorch zip file (no single <name>/data.pkl)")
            root = pkl[0][:-len("data.pkl")]
            info = z.getinfo(pkl[0])
            if info.file_size > max_bytes:
                raise InputError(f"{path}: data.pkl of {info.file_size} bytes is too large")
            order = z.read(root + "byteorder").decode().strip() if root + "byteorder" in names else "little"
            if order != "little":
                raise InputError(f"{path}: byteorder {order!r}: only little-endian storages are read")
            machine = _Unpickler(z.read(pkl[0]), path)
            obj = machine.run()
            return _materialise(obj, z, root, path, max_bytes)
    except InputError:
        raise
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError, struct.error, UnicodeDecodeError) as e:
        raise InputError(f"{path}: a damaged PyTorch file ({type(e).__name__}: {str(e)[:120]})") from None


class _Unpickler:
    """The opcodes of pickle protocols 2-4 that a state dict uses, on a stack machine."""

    def __init__(self, data: bytes, path: str):
        self.data, self.pos, self.path = data, 0, path
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}

    def fail(self, what: str) -> InputError:
        return InputError(f"{self.path}: data.pkl at byte {self.pos}: {what}; refbnn reads only tensors and plain "
                          "containers (as torch.load(weights_only=True) would)")

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise EOFError("data.pkl ends early")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def line(self) -> str:
        end = self.data.index(b"\n", self.pos)
        s = self.data[self.pos:end].decode("utf-8")
        self.pos = end + 1
        return s

    def until_mark(self) -> list:
        for k in range(len(self.stack) - 1, -1, -1):
            if isinstance(self.stack[k], _Mark):
                items = self.stack[k + 1:]
                del self.stack[k:]
                return items
        raise self.fail("no MARK")

    def run(self) -> Any:
        for _ in range(MAX_OPS):
            op = self.take(1)
            if op == b".":                                     # STOP
                if len(self.stack) != 1:
                    raise self.fail("a stack of more than one value at STOP")
                return self.stack.pop()
            self.step(op)
        raise self.fail("too many opcodes")

    def step(self, op: bytes) -> None:  # noqa: C901 (one branch per opcode is the clearest form)
        s, u = self.stack, struct.unpack
        if op == b"\x80":                                     # PROTO
            if self.take(1)[0] > 5:
                raise self.fail("an unknown pickle protocol")
        elif op == b"\x95":                                   # FRAME (protocol 4): a length to skip
            self.take(8)
        elif op in (b"q", b"r", b"\x94"):                     # BINPUT, LONG_BINPUT, MEMOIZE
            key = self.take(1)[0] if op == b"q" else (u("<I", self.take(4))[0] if op == b"r" else len(self.memo))
            self.memo[key] = s[-1]
        elif op in (b"h", b"j"):                              # BINGET, LONG_BINGET
            key = self.take(1)[0] if op == b"h" else u("<I", self.take(4))[0]
            if key not in self.memo:
                raise self.fail(f"memo {key} read before it is written")
            s.append(self.memo[key])
        elif op == b"(":
            s.append(_Mark())
        elif op == b"}":
            s.append({})
        elif op == b"]":
            s.append([])
        elif op == b")":
            s.append(())
        elif op == b"N":
            s.append(None)
        elif op in (b"\x88", b"\x89"):                        # NEWTRUE, NEWFALSE
            s.append(op == b"\x88")
        elif op == b"K":
            s.append(self.take(1)[0])
        elif op == b"M":
            s.append(u("<H", self.take(2))[0])
        elif op == b"J":
            s.append(u("<i", self.take(4))[0])
        elif op == b"\x8a":                                   # LONG1
            n = self.take(1)[0]
            s.append(int.from_bytes(self.take(n), "little", signed=True))
        elif op == b"G":
            s.append(u(">d", self.take(8))[0])
        elif op == b"X":
            s.append(self.take(u("<I", self.take(4))[0]).decode("utf-8"))
        elif op == b"\x8c":                                   # SHORT_BINUNICODE
            s.append(self.take(self.take(1)[0]).decode("utf-8"))
        elif op in (b"t", b"\x85", b"\x86", b"\x87"):         # TUPLE, TUPLE1..3
            n = {b"\x85": 1, b"\x86": 2, b"\x87": 3}.get(op)
            items = self.until_mark() if n is None else [s.pop() for _ in range(n)][::-1]
            s.append(tuple(items))
        elif op == b"a":
            v = s.pop()
            s[-1].append(v)
        elif op == b"e":
            items = self.until_mark()
            s[-1].extend(items)
        elif op == b"s":
            v, k = s.pop(), s.pop()
            self.setitem(s[-1], k, v)
        elif op == b"u":
            items = self.until_mark()
            for k, v in zip(items[::2], items[1::2]):
                self.setitem(s[-1], k, v)
        elif op in (b"c", b"\x93"):                           # GLOBAL, STACK_GLOBAL
            if op == b"c":
                module, name = self.line(), self.line()
            else:
                name, module = s.pop(), s.pop()
            if (module, name) not in ALLOWED:
                raise self.fail(f"refused global {module}.{name}")
            s.append(_Global(module, name))
        elif op == b"Q":                                      # BINPERSID
            s.append(self.persistent(s.pop()))
        elif op == b"R":                                      # REDUCE
            args, f = s.pop(), s.pop()
            s.append(self.call(f, args))
        elif op == b"b":                                      # BUILD: the state dict's _metadata
            s.pop()
            if not isinstance(s[-1], _OrderedDict):
                raise self.fail("BUILD of something other than an OrderedDict")
        else:
            raise self.fail(f"refused opcode {op!r}")

    def setitem(self, d: Any, k: Any, v: Any) -> None:
        if not isinstance(d, dict) or not isinstance(k, (str, int)):
            raise self.fail("an item set on something other than a dict, or a key that is not a string")
        d[k] = v

    def persistent(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _Global)
                and pid[1].module == "torch" and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise self.fail("a persistent id that is not a tensor storage")
        return _StorageRef(STORAGE_DTYPES[pid[1].name], pid[2], pid[4])

    def call(self, f: Any, args: Any) -> Any:
        if not isinstance(f, _Global) or not isinstance(args, tuple):
            raise self.fail("a call of something other than an allowed name")
        if f.name == "OrderedDict":
            if args:
                raise self.fail("OrderedDict with arguments")
            return _OrderedDict()
        if f.name == "_rebuild_parameter":
            if len(args) < 1 or not isinstance(args[0], tuple):
                raise self.fail("a parameter without its tensor")
            return args[0]
        # _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
        if len(args) < 4 or not isinstance(args[0], _StorageRef) or not isinstance(args[1], int) or \
                not all(isinstance(t, tuple) and all(isinstance(v, int) for v in t) for t in args[2:4]):
            raise self.fail("a tensor rebuilt from something other than a storage, an offset, a size and a stride")
        return ("tensor", args[0], args[1], args[2], args[3])


def _materialise(obj: Any, z: zipfile.ZipFile, root: str, path: str, max_bytes: int) -> Any:
    """Replace every tensor placeholder by its NumPy array, read from its storage."""
    storages: dict[str, np.ndarray] = {}

    def tensor(ref: _StorageRef, offset: int, size: tuple, stride: tuple) -> np.ndarray:
        if ref.key not in storages:
            info = z.getinfo(f"{root}data/{ref.key}")
            if info.file_size > max_bytes:
                raise InputError(f"{path}: storage {ref.key}: {info.file_size} bytes is too large")
            raw = z.read(info)
            dtype = np.dtype("<u2") if ref.dtype == "bf16" else np.dtype(ref.dtype)
            if len(raw) != ref.numel * dtype.itemsize:
                raise InputError(f"{path}: storage {ref.key}: {len(raw)} bytes for {ref.numel} values")
            a = np.frombuffer(raw, dtype=dtype)
            storages[ref.key] = (a.astype(np.uint32) << 16).view(np.float32) if ref.dtype == "bf16" else a
        data = storages[ref.key]
        if len(size) != len(stride) or offset < 0 or any(d < 0 for d in size) or any(t < 0 for t in stride):
            raise InputError(f"{path}: storage {ref.key}: a tensor view with size {size}, stride {stride}")
        if all(d > 0 for d in size):
            last = offset + sum((d - 1) * t for d, t in zip(size, stride))
            if last >= len(data):
                raise InputError(f"{path}: storage {ref.key}: a tensor view reaching past its {len(data)} values")
        # a view may repeat its storage's values (stride 0, as torch's expand() saves them):
        # bound what it materialises, as the storages themselves are bounded
        if prod(size) * 8 > max_bytes:
            raise InputError(f"{path}: storage {ref.key}: a tensor view of {prod(size)} values is too large")
        view = np.lib.stride_tricks.as_strided(data[offset:] if len(data) else data, shape=size,
                                               strides=[t * data.itemsize for t in stride], writeable=False)
        out = np.array(view)
        return out.astype(np.float64) if out.dtype.kind == "f" else out

    def walk(v: Any, depth: int = 0) -> Any:
        if isinstance(v, tuple) and len(v) == 5 and v[0] == "tensor" and isinstance(v[1], _StorageRef):
            return tensor(*v[1:])
        # `depth` containers hold v; the memo lets a pickle put one inside itself, which this ends too
        if isinstance(v, (dict, list, tuple)) and depth >= MAX_DEPTH:
            raise InputError(f"{path}: containers nested more than {MAX_DEPTH} deep (or inside themselves)")
        if isinstance(v, dict):
            return {k: walk(x, depth + 1) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return type(v)(walk(x, depth + 1) for x in v)
        if isinstance(v, (_Global, _StorageRef)):
            raise InputError(f"{path}: a bare {type(v).__name__.strip('_')} outside a tensor")
        return v
    return walk(obj)
