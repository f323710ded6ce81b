"""Data sets for training, all offline. No code path downloads anything.

- `digits`: scikit-learn's bundled handwritten digits (8x8, values 0..16, Z = 16);
  needs the optional extra `pip install 'refbnn[data]'`.
- `fashion-mnist`: the paper's data, as Debian packages it
  (`apt-get install dataset-fashion-mnist` puts the four IDX .gz files in
  /usr/share/datasets/fashion-mnist/, the default directory), or any directory
  holding the same four files.
- `mnist-idx:DIR`: any MNIST-style IDX directory (gz or raw files).
- `cifar10:DIR`: the CIFAR-10 *binary* version (data_batch_1..5.bin, test_batch.bin).
  The "python version" is pickled and is never loaded.
- `npz:TRAIN,TEST`: two refbnn data files (`x`, `y`) and a Z given with `--z`.

Every loader validates what it reads (magic numbers, sizes, label ranges) and
raises an InputError naming the file and what is wrong.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..formats.datafile import LIMITS as DATA_LIMITS
from ..formats.files import InputError
from ..formats.npzfile import npz_arrays, npz_headers

FASHION_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


@dataclass(frozen=True)
class DataSplit:
    """Integer inputs x [I, C, H, W], labels y [I], with |x| <= Z."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    Z: int
    classes: int
    name: str


def _open(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise InputError(f"{path}: not a valid gzip file ({e})") from None
    return raw


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An IDX file (MNIST format), gzipped or raw, of unsigned bytes: magic 0x0000 08 D
    (D dimensions), D big-endian sizes, then the data."""
    path = Path(path)
    raw = _open(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise InputError(f"{path}: magic: not an IDX file (first bytes {raw[:4].hex()})")
    if raw[2] != 0x08:
        raise InputError(f"{path}: magic: data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    dims = raw[3]
    if dims < 1 or len(raw) < 4 + 4 * dims:
        raise InputError(f"{path}: header: {dims} dimensions do not fit the file")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    size = int(np.prod(shape))
    if len(raw) != 4 + 4 * dims + size:
        raise InputError(f"{path}: size: header says {list(shape)} = {size} bytes, "
                         f"the file has {len(raw) - 4 - 4 * dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (directory / name).exists():
            return directory / name
    raise InputError(f"{directory}: {stem}[.gz] not found (expected the four MNIST-style IDX files"
                     f"{'; on Debian: apt-get install dataset-fashion-mnist' if str(directory) == FASHION_DIR else ''})")


def load_idx_dir(directory: str | os.PathLike, name: str) -> DataSplit:
    """The four IDX files of an MNIST-style data set (images 0..255, Z = 255)."""
    directory = Path(directory)
    parts = {}
    for split, (images, labels) in IDX_FILES.items():
        ipath, lpath = _find(directory, images), _find(directory, labels)
        x, y = read_idx(ipath), read_idx(lpath)
        if x.ndim != 3:
            raise InputError(f"{ipath}: shape: expected [N, H, W] images, got {list(x.shape)}")
        if y.ndim != 1 or len(y) != len(x):
            raise InputError(f"{lpath}: shape: expected {len(x)} labels, got {list(y.shape)}")
        if y.max(initial=0) > 9:
            raise InputError(f"{lpath}: label {int(y.max())} outside 0..9")
        parts[split] = (x[:, None].astype(np.int64), y.astype(np.int64))
    return DataSplit(*parts["train"], *parts["test"], Z=255, classes=10, name=name)


def load_cifar10(directory: str | os.PathLike) -> DataSplit:
    """CIFAR-10 binary version: records of 1 label byte + 3072 image bytes (3x32x32)."""
    directory = Path(directory)

    def read(names):
        xs, ys = [], []
        for n in names:
            path = directory / n
            raw = _open(path)
            if len(raw) == 0 or len(raw) % 3073:
                raise InputError(f"{path}: size: {len(raw)} bytes is not a whole number of "
                                 f"3073-byte records (is this the binary version?)")
            rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
            if rec[:, 0].max() > 9:
                raise InputError(f"{path}: label {int(rec[:, 0].max())} outside 0..9")
            ys.append(rec[:, 0].astype(np.int64))
            xs.append(rec[:, 1:].reshape(-1, 3, 32, 32).astype(np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    train = read([f"data_batch_{k}.bin" for k in range(1, 6)])
    test = read(["test_batch.bin"])
    return DataSplit(*train, *test, Z=255, classes=10, name="cifar10")


def load_digits(test_share: float = 0.25, seed: int = 0) -> DataSplit:
    """scikit-learn's bundled digits: 1797 images 8x8 with values 0..16 (Z = 16),
    split into train and test by a seeded permutation."""
    try:
        from sklearn.datasets import load_digits as sk_digits
    except ImportError:
        raise InputError("digits: needs scikit-learn, which ships the data set: "
                         "pip install 'refbnn[data]' (or pip install scikit-learn)") from None
    d = sk_digits()
    x = d.images.astype(np.int64)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(len(y) * test_share))
    test, train = order[:n_test], order[n_test:]
    return DataSplit(x[train], y[train], x[test], y[test], Z=16, classes=10, name="digits")


def load_npz_pair(train: str, test: str, z: int) -> DataSplit:
    """Two refbnn data files; inputs must satisfy |x| <= z."""
    parts = []
    for path in (train, test):
        headers = npz_headers(path, 8 * DATA_LIMITS["values"])
        if sorted(headers) != ["x", "y"]:
            raise InputError(f"{path}: expected exactly the arrays x and y")
        xh, yh = headers["x"], headers["y"]
        if xh.dtype.kind not in "iu" or yh.dtype.kind not in "iu":
            raise InputError(f"{path}: x, y: expected integer arrays")
        if len(xh.shape) not in (2, 3, 4) or yh.shape != xh.shape[:1] or xh.shape[0] == 0:
            raise InputError(f"{path}: x: expected a non-empty [I, K], [I, H, W] or [I, C, H, W] array "
                             f"and y of shape [I], got {list(xh.shape)} and {list(yh.shape)}")
        x, y = npz_arrays(path, headers, ["x", "y"]).values()
        if int(np.abs(x).max()) > z:
            raise InputError(f"{path}: x: values exceed --z {z}")
        if int(y.min()) < 0 or int(y.max()) >= 2**16:
            raise InputError(f"{path}: y: labels must lie in 0..65535")
        if x.ndim == 2:
            x = x[:, None, None, :]      # vectors: one channel, one row
        elif x.ndim == 3:
            x = x[:, None]
        parts += [x.astype(np.int64), y.astype(np.int64)]
    classes = int(max(parts[1].max(), parts[3].max())) + 1
    return DataSplit(*parts, Z=z, classes=classes, name="npz")


def load_dataset(spec: str, z: int | None = None) -> DataSplit:
    """`digits`, `fashion-mnist[:DIR]`, `mnist-idx:DIR`, `cifar10:DIR`, `npz:TRAIN,TEST`."""
    kind, _, arg = spec.partition(":")
    if kind == "digits":
        return load_digits()
    if kind == "fashion-mnist":
        return load_idx_dir(arg or FASHION_DIR, "fashion-mnist")
    if kind == "mnist-idx" and arg:
        return load_idx_dir(arg, "mnist-idx")
    if kind == "cifar10" and arg:
        return load_cifar10(arg)
    if kind == "npz" and "," in arg:
        if z is None:
            raise InputError("--z: npz data sets need the input bound Z")
        train, test = arg.split(",", 1)
        return load_npz_pair(train, test, z)
    raise InputError(f"--dataset: unknown {spec!r} (use digits, fashion-mnist[:DIR], mnist-idx:DIR, "
                     f"cifar10:DIR or npz:TRAIN,TEST)")
