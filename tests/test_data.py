"""torchvision's real loaders on tiny files written in the real on-disk formats."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from asknlearn.data import DATASETS, load_dataset
from asknlearn.errors import DatasetError

SHARED_FMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "FashionMNIST" / "raw"


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> None:
    """IDX format: magic (0, 0, dtype=0x08 ubyte, ndim), big-endian dims, raw bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_mnist(root: Path, folder: str, n_train=12, n_test=5, rng=None) -> dict[str, np.ndarray]:
    rng = rng or np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, arr in arrays.items():
        write_idx(root / folder / "raw" / name, arr)
    return arrays


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_from_idx_files(name, folder, tmp_path):
    arrays = make_mnist(tmp_path, folder)
    d = load_dataset(name, tmp_path, download=False)
    info = DATASETS[name]
    assert d.x_train.shape == (12, 1, 28, 28) and d.x_test.shape == (5, 1, 28, 28)
    assert d.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    expect = (arrays["train-images-idx3-ubyte"][3] / 255.0 - info.mean[0]) / info.std[0]
    np.testing.assert_allclose(d.x_train[3, 0].numpy(), expect, rtol=1e-5, atol=1e-5)


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    make_mnist(tmp_path, "MNIST")
    f = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DatasetError, match=r"(?s)'mnist'.*train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path, download=False)


def test_missing_dataset_lists_expected_files(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion_mnist", tmp_path / "empty", download=False)
    msg = str(err.value)
    assert "FashionMNIST/raw/train-images-idx3-ubyte" in msg and str(tmp_path / "empty") in msg


def test_unknown_dataset_names_valid_ones():
    with pytest.raises(DatasetError, match="'imagenet'.*valid: cifar10, digits, fashion_mnist, mnist, svhn"):
        load_dataset("imagenet")


@pytest.fixture
def no_md5(monkeypatch):
    """The tiny files can't match the real archives' md5 sums; check existence only."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.svhn as svhn

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    monkeypatch.setattr(cifar, "check_integrity", exists)
    monkeypatch.setattr(svhn, "check_integrity", exists)


def test_cifar10_from_python_pickles(tmp_path, no_md5):
    rng = np.random.default_rng(1)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    batches = {}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch"):
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)  # rows of R, G, B planes
        labels = rng.integers(0, 10, 3).tolist()
        batches[name] = (data, labels)
        with open(base / name, "wb") as f:
            pickle.dump({"batch_label": name, "data": data, "labels": labels}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    d = load_dataset("cifar10", tmp_path, download=False)
    assert d.x_train.shape == (15, 3, 32, 32) and d.x_test.shape == (3, 3, 32, 32)
    assert d.y_test.tolist() == batches["test_batch"][1]
    info = DATASETS["cifar10"]
    raw = batches["data_batch_1"][0][0].reshape(3, 32, 32)
    expect = (raw / 255.0 - np.array(info.mean)[:, None, None]) / np.array(info.std)[:, None, None]
    np.testing.assert_allclose(d.x_train[0].numpy(), expect, rtol=1e-5, atol=1e-5)


def test_svhn_from_mat_files(tmp_path, no_md5):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    for split, n in (("train", 6), ("test", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # SVHN stores HWCN
        y = rng.integers(1, 11, (n, 1))  # labels 1..10, where 10 means digit 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        if split == "train":
            train_x, train_y = x, y
    d = load_dataset("svhn", tmp_path, download=False)
    assert d.x_train.shape == (6, 3, 32, 32)
    assert d.y_train.tolist() == [0 if v == 10 else int(v) for v in train_y[:, 0]]
    info = DATASETS["svhn"]
    raw = train_x[:, :, :, 2].transpose(2, 0, 1)  # image 2 as CHW
    expect = (raw / 255.0 - np.array(info.mean)[:, None, None]) / np.array(info.std)[:, None, None]
    np.testing.assert_allclose(d.x_train[2].numpy(), expect, rtol=1e-5, atol=1e-5)


def test_corrupt_cifar_archive_fails_md5_clearly(tmp_path):
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    for name in DATASETS["cifar10"].expected_files:
        (tmp_path / name).write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="(?s)cifar10.*data_batch_1"):
        load_dataset("cifar10", tmp_path, download=False)


def test_digits_split_is_deterministic_and_disjoint():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.x_test, b.x_test) and len(a.y_test) == 497 and len(a.y_train) == 1300
    assert abs(float(a.x_train.mean())) < 1e-4  # normalized on the training split


@pytest.mark.skipif(not SHARED_FMNIST.is_dir(), reason="real Fashion-MNIST not beside the repo")
@pytest.mark.slow
def test_real_fashion_mnist_from_canonical_gz(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in SHARED_FMNIST.glob("*.gz"):
        shutil.copy(f, raw / f.name)
    d = load_dataset("fashion_mnist", tmp_path, download=True)  # extracts, no network needed
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(d.y_train).tolist() == [6000] * 10
    assert abs(float(d.x_train.mean())) < 0.01
