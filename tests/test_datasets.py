"""Offline data set loaders, tested pixel for pixel and label for label on small files
written in each format (IDX, CIFAR-10 binary batches, npz). The images are not square
and every value differs, so a transposed, reordered or relabelled load fails."""
import gzip
import os

import numpy as np
import pytest

from refbnn.formats.datafile import write_data
from refbnn.formats.files import InputError
from refbnn.training.datasets import FASHION_DIR, load_cifar10, load_dataset, load_idx_dir, read_idx


def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX format written by hand: magic 00 00 08 D, D big-endian sizes, the bytes."""
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def write_mnist_dir(d, n_train=5, n_test=3, gz=True, labels=None, hw=(3, 5)):
    """Images whose pixel (i, r, c) is distinct: (7 i + 5 r + c + offset) mod 256. Returns the arrays."""
    out = {}
    for split, n, offset in (("train", n_train, 0), ("t10k", n_test, 100)):
        i, r, c = np.meshgrid(np.arange(n), np.arange(hw[0]), np.arange(hw[1]), indexing="ij")
        imgs = (7 * i + 5 * r + c + offset) % 256
        labs = np.asarray(labels) if labels is not None else (np.arange(n) * 3 + offset) % 10
        for stem, arr in ((f"{split}-images-idx3-ubyte", imgs), (f"{split}-labels-idx1-ubyte", labs)):
            data = idx_bytes(np.asarray(arr))
            (d / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
        out[split] = (imgs, labs)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_idx_directory_loads_every_pixel_and_label_in_place(tmp_path, gz):
    written = write_mnist_dir(tmp_path, gz=gz)
    split = load_idx_dir(tmp_path, "mnist-idx")
    assert split.x_train.shape == (5, 1, 3, 5) and split.x_test.shape == (3, 1, 3, 5)
    # pixel (i, 0, r, c) of the split is pixel (i, r, c) of the file: no transpose, no shuffle
    assert np.array_equal(split.x_train[:, 0], written["train"][0])
    assert np.array_equal(split.x_test[:, 0], written["t10k"][0])
    assert split.y_train.tolist() == [0, 3, 6, 9, 2] and split.y_test.tolist() == [0, 3, 6]   # (3 i + off) % 10
    assert split.x_train[1, 0, 2, 4] == 7 + 10 + 4 and split.Z == 255 and split.classes == 10


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


def cifar_record(label: int, k: int) -> np.ndarray:
    """One CIFAR-10 binary record: the label byte, then the red, green and blue planes, each
    32x32 row-major. Byte (plane c, row r, column w) holds (k + 3 r + 5 w + 11 c) mod 256."""
    c, r, w = np.meshgrid(np.arange(3), np.arange(32), np.arange(32), indexing="ij")
    return np.concatenate([[label], ((k + 3 * r + 5 * w + 11 * c) % 256).ravel()]).astype(np.uint8)


def test_cifar10_binary_reads_planes_as_channels_and_batches_in_order(tmp_path):
    names = [f"data_batch_{b}.bin" for b in range(1, 6)] + ["test_batch.bin"]
    for b, name in enumerate(names):
        recs = [cifar_record((2 * b + i) % 10, 10 * b + i) for i in range(2)]
        (tmp_path / name).write_bytes(np.concatenate(recs).tobytes())
    split = load_cifar10(tmp_path)
    assert split.x_train.shape == (10, 3, 32, 32) and split.x_test.shape == (2, 3, 32, 32)
    # train input 2 b + i is record i of data_batch_{b+1}; its label (2 b + i) % 10
    assert split.y_train.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] and split.y_test.tolist() == [0, 1]
    # train input 3 = batch 2, record 1: k = 11; pixel (c=2, r=4, w=7) = 11 + 12 + 35 + 22 = 80
    assert split.x_train[3, 2, 4, 7] == 80
    for i, (b, j) in enumerate((b, j) for b in range(5) for j in range(2)):
        assert np.array_equal(split.x_train[i].ravel(), cifar_record(0, 10 * b + j)[1:])
    assert np.array_equal(split.x_test[1].ravel(), cifar_record(0, 51)[1:])
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="not a whole number of 3073-byte records"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize("shape,want", [((4, 6), (4, 1, 1, 6)), ((4, 2, 3), (4, 1, 2, 3)),
                                        ((4, 2, 2, 3), (4, 2, 2, 3))])
def test_npz_pair_keeps_every_value_and_adds_only_unit_axes(tmp_path, shape, want):
    x = (np.arange(np.prod(shape)).reshape(shape) % 15) - 7          # |x| <= 7, distinct runs
    write_data(tmp_path / "tr.npz", x, np.array([3, 1, 4, 1]))
    write_data(tmp_path / "te.npz", -x, np.array([5, 9, 2, 6]))
    split = load_dataset(f"npz:{tmp_path / 'tr.npz'},{tmp_path / 'te.npz'}", z=7)
    assert split.x_train.shape == want and np.array_equal(split.x_train.reshape(shape), x)
    assert np.array_equal(split.x_test.reshape(shape), -x)
    assert split.y_train.tolist() == [3, 1, 4, 1] and split.y_test.tolist() == [5, 9, 2, 6]
    assert split.Z == 7 and split.classes == 10         # the largest label, 9, plus one


def test_npz_pair_refuses_extra_arrays_and_values_past_z(tmp_path):
    np.savez(tmp_path / "extra.npz", x=np.zeros((2, 3), np.int64), y=np.zeros(2, np.int64), w=np.ones(1))
    write_data(tmp_path / "ok.npz", np.zeros((2, 3), np.int64), np.zeros(2, np.int64))
    with pytest.raises(InputError, match="expected exactly the arrays x and y"):
        load_dataset(f"npz:{tmp_path / 'extra.npz'},{tmp_path / 'ok.npz'}", z=1)
    write_data(tmp_path / "big.npz", np.full((2, 3), 9), np.zeros(2, np.int64))
    with pytest.raises(InputError, match="x: values exceed --z 8"):
        load_dataset(f"npz:{tmp_path / 'big.npz'},{tmp_path / 'ok.npz'}", z=8)


def test_unknown_dataset_and_missing_files(tmp_path):
    with pytest.raises(InputError, match="--dataset: unknown 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(InputError, match="train-images-idx3-ubyte"):
        load_dataset(f"mnist-idx:{tmp_path}")


def test_digits_are_scikit_learns_images_and_labels_split_by_the_seeded_permutation():
    sk = pytest.importorskip("sklearn.datasets")
    d = sk.load_digits()
    split = load_dataset("digits")
    order = np.random.default_rng(0).permutation(1797)          # the loader's split, seed 0
    test, train = order[:449], order[449:]                       # round(1797 / 4) = 449 test inputs
    assert np.array_equal(split.x_train[:, 0], d.images[train]) and np.array_equal(split.y_train, d.target[train])
    assert np.array_equal(split.x_test[:, 0], d.images[test]) and np.array_equal(split.y_test, d.target[test])
    assert split.Z == 16 and split.x_train.max() == 16


@pytest.mark.skipif(not os.path.isdir(FASHION_DIR), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_against_a_direct_read_of_its_files():
    """The Debian files read by hand (16-byte image header, 8-byte label header) equal the
    loader's arrays, and the first labels are Fashion-MNIST's documented ones (ankle boot = 9,
    pullover = 2, trouser = 1, ...; t-shirt = 0, ...)."""
    split = load_dataset("fashion-mnist")
    assert split.x_train.shape == (60000, 1, 28, 28) and split.x_test.shape == (10000, 1, 28, 28)
    raw = gzip.decompress(open(os.path.join(FASHION_DIR, "t10k-images-idx3-ubyte.gz"), "rb").read())
    assert np.array_equal(split.x_test[:, 0], np.frombuffer(raw, np.uint8, offset=16).reshape(10000, 28, 28))
    assert split.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert split.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
    assert np.bincount(split.y_test).tolist() == [1000] * 10
