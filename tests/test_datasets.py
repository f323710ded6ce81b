"""Offline data set loaders, tested on small files written in each format."""
import gzip
import os

import numpy as np
import pytest

from refbnn.formats.files import InputError
from refbnn.training.datasets import FASHION_DIR, load_cifar10, load_dataset, load_idx_dir, read_idx


def idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_mnist_dir(d, n_train=5, n_test=3, gz=True, labels=None):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        imgs = rng.integers(0, 256, (n, 4, 4))
        labs = labels if labels is not None else rng.integers(0, 10, n)
        for stem, arr in ((f"{split}-images-idx3-ubyte", imgs), (f"{split}-labels-idx1-ubyte", labs)):
            data = idx_bytes(np.asarray(arr))
            (d / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_round_trip(tmp_path, gz):
    write_mnist_dir(tmp_path, gz=gz)
    split = load_idx_dir(tmp_path, "mnist-idx")
    assert split.x_train.shape == (5, 1, 4, 4) and split.x_test.shape == (3, 1, 4, 4)
    assert split.Z == 255 and split.x_train.max() <= 255


def test_idx_rejects_bad_magic_size_and_labels(tmp_path):
    (tmp_path / "a").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(InputError, match="magic: not an IDX file"):
        read_idx(tmp_path / "a")
    (tmp_path / "b").write_bytes(idx_bytes(np.zeros((2, 2), np.uint8))[:-1])
    with pytest.raises(InputError, match=r"size: header says \[2, 2\] = 4 bytes, the file has 3"):
        read_idx(tmp_path / "b")
    (tmp_path / "c").write_bytes(bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, "big") + bytes(4))
    with pytest.raises(InputError, match="data type 0x0d is not unsigned byte"):
        read_idx(tmp_path / "c")
    d = tmp_path / "d"
    d.mkdir()
    write_mnist_dir(d, n_train=2, n_test=2, labels=[3, 12])
    with pytest.raises(InputError, match="label 12 outside 0..9"):
        load_idx_dir(d, "x")


def test_cifar10_binary(tmp_path):
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]:
        rec = np.concatenate([rng.integers(0, 10, (2, 1)), rng.integers(0, 256, (2, 3072))], axis=1)
        (tmp_path / name).write_bytes(rec.astype(np.uint8).tobytes())
    split = load_cifar10(tmp_path)
    assert split.x_train.shape == (10, 3, 32, 32) and split.y_test.shape == (2,)
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="not a whole number of 3073-byte records"):
        load_cifar10(tmp_path)


def test_unknown_dataset_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="--dataset: unknown 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(InputError, match="train-images-idx3-ubyte"):
        load_dataset(f"mnist-idx:{tmp_path}")


def test_digits_are_8x8_with_Z_16():
    pytest.importorskip("sklearn")
    split = load_dataset("digits")
    assert split.x_train.shape[1:] == (1, 8, 8) and split.Z == 16
    assert len(split.y_train) + len(split.y_test) == 1797 and split.x_train.max() <= 16


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist():
    split = load_dataset("fashion-mnist")
    assert split.x_train.shape == (60000, 1, 28, 28) and split.x_test.shape == (10000, 1, 28, 28)
    assert set(np.unique(split.y_test)) == set(range(10))
