"""The one guarded reader for every `.npz` refbnn reads: data, masks, checkpoints, data sets.

An `.npz` is a zip of `.npy` arrays. Everything that can go wrong with one becomes an
`InputError` naming the file (and the array): a path that is not a regular file (a
FIFO would block, `/dev/zero` never ends), a file past the size limit, a corrupt or
encrypted zip, an unsupported compression, a bad `.npy` header, object arrays (which
would need pickle), and arrays whose declared size is past the caller's memory limit.
Headers are read and checked first (`npz_headers`); arrays are decoded only after the
caller has checked the shapes (`npz_arrays`), and each decoded array must match its header.
"""
from __future__ import annotations

import os
import stat
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from math import prod
from typing import Iterable

import numpy as np

from .files import InputError

MAX_FILE_BYTES = 2**34          # 16 GiB on disk
# Every failure a corrupt zip or .npy member can raise while being read.
# numpy parses a .npy header with tokenize and ast: a damaged one raises TokenError or SyntaxError.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
               NotImplementedError, RuntimeError, ValueError, OverflowError, KeyError,
               tokenize.TokenError, SyntaxError)


@dataclass(frozen=True)
class Header:
    """What a `.npy` member declares: its shape and dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


def regular_file(path: str | os.PathLike, limit: int) -> int:
    """The size of `path` if it is a regular file of at most `limit` bytes; else InputError."""
    name = os.fspath(path)
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"{name}: cannot read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{name}: not a regular file")
    if st.st_size > limit:
        raise InputError(f"{name}: file of {st.st_size} bytes exceeds the limit {limit}")
    return st.st_size


def _member_header(name: str, zf: zipfile.ZipFile, member: str) -> Header:
    key = member.removesuffix(".npy")
    try:
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
    except _ZIP_ERRORS as e:
        raise InputError(f"{name}: {key}: not a valid .npy array ({_short(e)})") from None
    if dtype.hasobject or dtype.fields is not None:
        raise InputError(f"{name}: {key}: dtype {dtype} is not a plain number type (no pickle)")
    if any(d < 0 for d in shape):
        raise InputError(f"{name}: {key}: negative shape {list(shape)}")
    return Header(tuple(int(d) for d in shape), dtype)


def npz_headers(path: str | os.PathLike, max_array_bytes: int) -> dict[str, Header]:
    """The header of every array in the `.npz` at `path`, without decoding any array data.
    Each array's declared size must be at most `max_array_bytes`."""
    name = os.fspath(path)
    regular_file(path, MAX_FILE_BYTES)
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            bad = [m for m in members if not m.endswith(".npy")]
            if bad:
                raise InputError(f"{name}: {_short(bad[0])}: not a .npy member")
            headers = {m.removesuffix(".npy"): _member_header(name, zf, m) for m in members}
    except InputError:
        raise
    except _ZIP_ERRORS as e:
        raise InputError(f"{name}: not a readable .npz file ({_short(e)})") from None
    for key, h in headers.items():
        if h.nbytes > max_array_bytes:
            raise InputError(f"{name}: {key}: declares {h.nbytes} bytes ({list(h.shape)} of {h.dtype}), "
                             f"past the limit of {max_array_bytes}")
    return headers


def npz_arrays(path: str | os.PathLike, headers: dict[str, Header], keys: Iterable[str]) -> dict[str, np.ndarray]:
    """Decode the arrays `keys` (after their headers were checked); each must match its header."""
    name = os.fspath(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for key in keys:
                with zf.open(f"{key}.npy") as f:
                    arr = np.lib.format.read_array(f, allow_pickle=False)
                if arr.shape != headers[key].shape or arr.dtype != headers[key].dtype:
                    raise ValueError(f"{key} changed while reading")
                out[key] = arr
    except _ZIP_ERRORS as e:
        raise InputError(f"{name}: {key}: cannot decode ({_short(e)})") from None
    return out


def _short(e: object, limit: int = 120) -> str:
    text = str(e).replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."
