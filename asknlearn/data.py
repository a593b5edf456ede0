"""Datasets as whole tensors.

Every dataset is read once through its canonical loader (torchvision's real dataset classes,
scikit-learn for ``digits``), normalized, and kept as float tensors on the chosen device.
Batches are made by indexing those tensors; no per-sample ``DataLoader`` sits on a hot path.

The first load on a data root may have to write files (extract the canonical MNIST ``.gz``
archives, or let torchvision download and unpack CIFAR-10/SVHN). Many cells start at once on a
fresh root, so that step holds an exclusive ``flock`` on a lock file beside the raw folder, and
each extracted file appears by an atomic rename: no process ever reads a half-written file.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import shutil
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asknlearn.errors import DatasetError


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset: its model family and the files it needs on disk."""

    name: str
    family: str  # "mnist" (MNIST, Fashion-MNIST, digits), "cifar" or "svhn"
    shape: tuple[int, int, int]
    num_classes: int
    default_model: str
    expected_files: tuple[str, ...]  # relative to the data root
    mean: tuple[float, ...]
    std: tuple[float, ...]


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", "mnist", (1, 8, 8), 10, "mlp", (), (0.0,), (1.0,)),
    "mnist": DatasetInfo(
        "mnist", "mnist", (1, 28, 28), 10, "mlp",
        tuple(f"MNIST/raw/{f}[.gz]" for f in _MNIST_FILES), (0.1307,), (0.3081,),
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", "mnist", (1, 28, 28), 10, "mlp",
        tuple(f"FashionMNIST/raw/{f}[.gz]" for f in _MNIST_FILES), (0.2860,), (0.3530,),
    ),
    "cifar10": DatasetInfo(
        "cifar10", "cifar", (3, 32, 32), 10, "resnet18",
        tuple(
            f"cifar-10-batches-py/{f}"
            for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                      "data_batch_5", "test_batch", "batches.meta")
        ),
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
    ),
    "svhn": DatasetInfo(
        "svhn", "svhn", (3, 32, 32), 10, "vgg16",
        ("train_32x32.mat", "test_32x32.mat"),
        (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
    ),
}

# digits has no canonical split: hold out a fixed, seed-independent test set so every
# experiment on it evaluates on the same 497 images.
DIGITS_TEST_SIZE = 497
DIGITS_SPLIT_SEED = 20200710


@dataclass
class TensorData:
    """A dataset held as normalized tensors: ``x_*`` float (N, C, H, W), ``y_*`` int64 (N,)."""

    info: DatasetInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def to(self, device: torch.device | str) -> TensorData:
        return TensorData(
            self.info, self.x_train.to(device), self.y_train.to(device),
            self.x_test.to(device), self.y_test.to(device),
        )


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def default_data_root() -> Path:
    """``$ASKNLEARN_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("ASKNLEARN_DATA", "data"))


def _normalize(x_uint8: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    x = x_uint8.float().div_(255.0)
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    return (x - mean) / std


def _missing(info: DatasetInfo, root: Path, detail: str) -> DatasetError:
    files = "\n  ".join(str(root / f) for f in info.expected_files)
    hint = ""
    if info.name == "fashion_mnist":
        hint = (f"\nThe canonical .gz files can be linked in: mkdir -p {root}/FashionMNIST/raw && "
                f"ln -s /path/to/FashionMNIST/raw/*.gz {root}/FashionMNIST/raw/")
    return DatasetError(
        f"dataset {info.name!r} could not be read from data root {str(root)!r}: {detail}\n"
        f"expected files (uncompressed, or the canonical .gz next to them):\n  {files}{hint}"
    )


def _load_digits(info: DatasetInfo) -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # sklearn's digits are 0..16 intensities; scale to 0..255 so _normalize applies uniformly
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8))
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    test, train = perm[:DIGITS_TEST_SIZE], perm[DIGITS_TEST_SIZE:]
    x = images.unsqueeze(1)
    x_uint8_mean = x[train].float().div(255.0)
    # per-dataset normalization computed on the training split only
    m, s = x_uint8_mean.mean().item(), x_uint8_mean.std().item()
    info_n = DatasetInfo(**{**info.__dict__, "mean": (m,), "std": (s,)})
    return _normalize(x[train], info_n), labels[train], _normalize(x[test], info_n), labels[test]


def _mnist_raw(info: DatasetInfo, root: Path) -> Path:
    return root / ("MNIST" if info.name == "mnist" else "FashionMNIST") / "raw"


def _idx_problem(path: Path) -> str | None:
    """Why the uncompressed IDX file ``path`` is truncated or corrupt, or None if it is whole
    (torchvision's own error only says a tensor shape is invalid)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4)
        ndim = head[3] if len(head) == 4 else 0
        dims = np.frombuffer(fh.read(4 * ndim), dtype=">u4") if ndim in (1, 3) else None
    # IDX: 2 zero bytes, type 0x08 (unsigned byte), ndim, ndim big-endian sizes, the data
    if len(head) < 4 or head[:3] != b"\x00\x00\x08" or dims is None or len(dims) != ndim:
        return f"{str(path)!r} is not an IDX file of unsigned bytes (corrupt header)"
    expected = 4 + 4 * ndim + int(np.prod(dims.astype(np.int64)))
    if size != expected:
        return (f"{str(path)!r} is truncated or corrupt: its header promises {expected} bytes "
                f"({' x '.join(map(str, dims))}), the file holds {size}")
    return None


def _bad_idx_file(info: DatasetInfo, root: Path) -> str | None:
    """Name the first truncated or corrupt uncompressed IDX file of an MNIST-family dataset."""
    if info.family != "mnist" or info.name == "digits":
        return None
    raw = _mnist_raw(info, root)
    for name in _MNIST_FILES:
        path = raw / name
        if path.is_file() and (problem := _idx_problem(path)):
            return problem
    return None


def _tmp_name(path: Path) -> Path:
    """A temp name beside ``path``, unique to this process (hidden, so no loader picks it up)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


@contextmanager
def _prepare_lock(folder: Path, name: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder/.asknlearn-<name>.lock`` while files of dataset
    ``name`` are checked and written, so concurrent first loads take turns. The kernel drops
    the lock when its holder dies, even by SIGKILL. A folder that cannot be written needs no
    lock: no process can be writing into it either."""
    path = folder / f".asknlearn-{name}.lock"
    fd: int | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        with suppress(OSError):  # another user's lock file: flock works on a read-only fd too
            fd = os.open(path, os.O_RDONLY)
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _download_gz(cls, raw: Path, gz_name: str, md5: str) -> str | None:
    """Fetch ``gz_name`` from ``cls.mirrors`` into ``raw`` through a temp file renamed only once
    its MD5 matches (a failed download leaves no empty or partial archive behind); the reason
    it failed, or None."""
    from torchvision.datasets.utils import download_url

    dest, tmp = raw / gz_name, _tmp_name(raw / gz_name)
    reasons = []
    for mirror in cls.mirrors:
        try:
            download_url(f"{mirror}{gz_name}", str(raw), filename=tmp.name)
            if (got := _md5(tmp)) != md5:
                raise RuntimeError(f"the download has MD5 {got}, expected {md5}")
            os.replace(tmp, dest)
            return None
        except Exception as exc:  # URLError, HTTPError, OSError, RuntimeError from torchvision
            first = (str(exc).splitlines() or [""])[0][:160]
            reasons.append(f"{mirror}: {type(exc).__name__}: {first}")
        finally:
            tmp.unlink(missing_ok=True)
    return "; ".join(reasons) or "no mirror to download from"


def _gunzip(gz: Path, out: Path) -> None:
    """Extract ``gz`` to ``out`` through a temp file and an atomic rename, so a concurrent
    reader sees either no file or the whole file."""
    tmp = _tmp_name(out)
    try:
        with gzip.open(gz, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, out)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DatasetError(f"{str(gz)!r} passes its MD5 check but is not a whole gzip file "
                           f"({type(exc).__name__}: {exc}); valid: the canonical archive") from exc
    except OSError as exc:  # the folder, not the archive: no space, no permission
        raise DatasetError(f"cannot extract {str(gz)!r} to {str(out)!r}: "
                           f"{exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def _prepare_mnist(info: DatasetInfo, root: Path, download: bool) -> None:
    """Make the four uncompressed IDX files of MNIST/Fashion-MNIST present and whole.

    A missing or damaged file is extracted from its canonical ``.gz`` beside it, without the
    network and whatever ``download`` says, after the archive passes the MD5 check that
    torchvision's resource list gives; with ``download`` a missing or damaged archive is
    fetched first. Runs under :func:`_prepare_lock`, so concurrent first loads are safe."""
    import torchvision.datasets as tvd

    cls = tvd.MNIST if info.name == "mnist" else tvd.FashionMNIST
    raw = _mnist_raw(info, root)

    def todo() -> list[tuple[str, str]]:
        return [(gz, md5) for gz, md5 in cls.resources
                if not ((raw / gz[:-3]).is_file() and _idx_problem(raw / gz[:-3]) is None)]

    if not todo():  # the usual case, lock-free, so a read-only root works once prepared
        return
    with _prepare_lock(raw.parent, info.name):
        for gz_name, md5 in todo():  # again: another process may have done it meanwhile
            gz, out = raw / gz_name, raw / gz_name[:-3]
            if gz.is_file() and (got := _md5(gz)) != md5:
                bad = (f"{str(gz)!r} fails its MD5 check (expected {md5}, got {got}"
                       f"{', the file is empty' if gz.stat().st_size == 0 else ''}): it is truncated "
                       "or corrupt")
                why = _download_gz(cls, raw, gz_name, md5) if download else None
                if not download or why:
                    tried = f"; downloading a fresh copy failed ({why})" if why else ""
                    raise DatasetError(
                        f"dataset {info.name!r}: {bad}{tried}. Replace it with the canonical "
                        f"{gz_name} (MD5 {md5}), or delete it and run once with download: true "
                        "where the network is reachable"
                    )
            elif not gz.is_file():
                if out.is_file():  # a damaged uncompressed file and no archive to restore it from
                    raise _missing(info, root, _idx_problem(out) or f"{str(out)!r} is unreadable")
                if not download:
                    continue  # reported below, with every missing file
                if why := _download_gz(cls, raw, gz_name, md5):
                    raise _missing(info, root, f"{gz_name} is not on disk and could not be "
                                               f"downloaded ({why})")
            _gunzip(gz, out)
        missing = [gz[:-3] for gz, _ in todo()]
    if missing:
        raise _missing(info, root, f"neither the file nor its .gz is in {str(raw)!r} for "
                                   f"{', '.join(missing)} (download is off)")


def _load_torchvision(info: DatasetInfo, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
    import torchvision.datasets as tvd

    def build(train: bool):
        if info.name in ("mnist", "fashion_mnist"):
            cls = tvd.MNIST if info.name == "mnist" else tvd.FashionMNIST
            return cls(str(root), train=train, download=False)  # files made whole by _prepare_mnist
        if info.name == "cifar10":
            return tvd.CIFAR10(str(root), train=train, download=download)
        return tvd.SVHN(str(root), split="train" if train else "test", download=download)

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        if info.name in ("mnist", "fashion_mnist"):
            x, y = ds.data.unsqueeze(1), ds.targets
        elif info.name == "cifar10":
            x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2)
            y = torch.tensor(ds.targets)
        else:
            x, y = torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels)
        return x.contiguous(), y.long()

    try:
        if info.family == "mnist":
            _prepare_mnist(info, root, download)
            lock = nullcontext()
        else:
            # torchvision may download and unpack in place: one process at a time on this root
            lock = _prepare_lock(root, info.name) if download else nullcontext()
        with lock:
            train_ds, test_ds = build(True), build(False)
        xtr, ytr = tensors(train_ds)
        xte, yte = tensors(test_ds)
    except DatasetError:
        raise
    except Exception as exc:  # torchvision raises RuntimeError/URLError/ValueError/EOFError...
        detail = _bad_idx_file(info, root) or f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        raise _missing(info, root, detail) from exc
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if tuple(x.shape[1:]) != info.shape or len(x) != len(y) or len(x) == 0:
            raise _missing(info, root, f"{name} split has images of shape {tuple(x.shape)} and "
                                       f"{len(y)} labels, expected (N, {', '.join(map(str, info.shape))})")
        if int(y.min()) < 0 or int(y.max()) >= info.num_classes:
            raise _missing(info, root, f"{name} labels outside 0..{info.num_classes - 1}")
    return _normalize(xtr, info), ytr, _normalize(xte, info), yte


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    download: bool = True,
) -> TensorData:
    """Load ``name`` once as normalized tensors on ``device``.

    ``root`` is the torchvision data root (``$ASKNLEARN_DATA`` or ``./data`` by default).
    Canonical MNIST/Fashion-MNIST ``.gz`` archives on disk are checked against their MD5 and
    extracted whatever ``download`` says (no network needed); ``download=True`` also lets
    torchvision fetch missing files where the network allows. Anything else raises a
    :class:`DatasetError` that names the file at fault or lists the expected files. Safe to
    call from many processes at once on a fresh root (see :func:`_prepare_lock`).
    """
    info = dataset_info(name)
    root = Path(root) if root is not None else default_data_root()
    parts = _load_digits(info) if name == "digits" else _load_torchvision(info, root, download)
    return TensorData(info, *parts).to(device)
