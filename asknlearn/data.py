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

from asknlearn.catalogue import _MNIST_FILES, DATASETS, DatasetInfo
from asknlearn.errors import DatasetError
from asknlearn.userdata import (
    SPLIT_KEYS,
    dataset_info,
    image_files,
    imagefolder_classes,
    with_stats,
)

__all__ = ["DATASETS", "LOADERS", "DatasetInfo", "TensorData", "dataset_info", "load_dataset"]


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
    hint = "\n" + info.hint.format(root=root) if info.hint else ""
    return DatasetError(
        f"dataset {info.name!r} could not be read from data root {str(root)!r}: {detail}\n"
        f"expected files (uncompressed, or the canonical .gz next to them):\n  {files}{hint}"
    )


def _load_digits(info: DatasetInfo, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
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
    return root / info.raw_dir


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
    if info.loader != "idx":
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

    cls = getattr(tvd, info.source)
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


def _idx_splits(info: DatasetInfo, root: Path, download: bool) -> tuple:
    """MNIST-format datasets: files made whole by :func:`_prepare_mnist` (under its own lock),
    then read by torchvision without downloading."""
    import torchvision.datasets as tvd

    _prepare_mnist(info, root, download)
    cls = getattr(tvd, info.source)
    return tuple((ds.data.unsqueeze(1), ds.targets)
                 for ds in (cls(str(root), train=t, download=False) for t in (True, False)))


def _cifar_splits(info: DatasetInfo, root: Path, download: bool) -> tuple:
    import torchvision.datasets as tvd

    cls = getattr(tvd, info.source)
    # torchvision may download and unpack in place: one process at a time on this root
    with _prepare_lock(root, info.name) if download else nullcontext():
        sets = [cls(str(root), train=t, download=download) for t in (True, False)]
    return tuple((torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2),
                  torch.tensor(ds.targets)) for ds in sets)


def _svhn_splits(info: DatasetInfo, root: Path, download: bool) -> tuple:
    import torchvision.datasets as tvd

    cls = getattr(tvd, info.source)
    with _prepare_lock(root, info.name) if download else nullcontext():
        sets = [cls(str(root), split=s, download=download) for s in ("train", "test")]
    return tuple((torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels))
                 for ds in sets)


def _load_torchvision(splits):
    """A loader from ``splits(info, root, download) -> ((x_train, y_train), (x_test, y_test))``
    of uint8 images: torchvision's errors become a :class:`DatasetError` naming the expected
    files, and the tensors' shapes and labels are checked against the dataset's entry."""

    def load(info: DatasetInfo, root: Path, download: bool) -> tuple[torch.Tensor, ...]:
        try:
            (xtr, ytr), (xte, yte) = ((x.contiguous(), y.long())
                                      for x, y in splits(info, root, download))
        except DatasetError:
            raise
        except Exception as exc:  # torchvision raises RuntimeError/URLError/ValueError/EOFError...
            detail = (_bad_idx_file(info, root)
                      or f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            raise _missing(info, root, detail) from exc
        for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            if tuple(x.shape[1:]) != info.shape or len(x) != len(y) or len(x) == 0:
                want = ", ".join(map(str, info.shape))
                raise _missing(info, root, f"{name} split has images of shape {tuple(x.shape)} "
                                           f"and {len(y)} labels, expected (N, {want})")
            if int(y.min()) < 0 or int(y.max()) >= info.num_classes:
                raise _missing(info, root, f"{name} labels outside 0..{info.num_classes - 1}")
        return _normalize(xtr, info), ytr, _normalize(xte, info), yte

    return load


# ---------------------------------------------------------------------------- your own data
def read_pt(name: str, path: Path) -> dict[str, np.ndarray]:
    """The arrays of a ``.pt`` dataset file as numpy arrays. ``torch.load`` with
    ``weights_only=True``: tensors and plain containers only, no code runs from the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip/unsupported-type errors of many kinds
        first = (str(exc).splitlines() or [""])[0][:160]
        raise DatasetError(f"dataset {name!r}: {str(path)!r} is not a readable .pt file "
                           f"({type(exc).__name__}: {first}); valid: torch.save of a dict of "
                           f"tensors {', '.join(SPLIT_KEYS)}") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"dataset {name!r}: {str(path)!r} holds a {type(obj).__name__}; "
                           f"valid: torch.save of a dict of tensors {', '.join(SPLIT_KEYS)}")
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[str(k)] = v.numpy()
        elif isinstance(v, np.ndarray):
            out[str(k)] = v
    return out


def _nchw(x: np.ndarray | torch.Tensor, layout: str) -> torch.Tensor:
    """Images of ``layout`` (nhw, nchw, nhwc) as an (N, C, H, W) tensor."""
    t = torch.as_tensor(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if layout == "nhw":
        return t.unsqueeze(1)
    return t.permute(0, 3, 1, 2) if layout == "nhwc" else t


def _normalize_custom(info: DatasetInfo, xtr: torch.Tensor, xte: torch.Tensor) -> tuple:
    """Scale uint8 images to [0, 1] (floats are taken as they are), then standardize each
    channel with the mean and std of the training split only."""
    def scaled(x: torch.Tensor) -> torch.Tensor:
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    xtr, xte = scaled(xtr), scaled(xte)
    mean = xtr.mean(dim=(0, 2, 3), dtype=torch.float64)
    std = xtr.std(dim=(0, 2, 3)).double().clamp_min(1e-8)  # a constant channel: no division by 0
    m, s = mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)
    xtr.sub_(m).div_(s)
    xte.sub_(m).div_(s)
    return xtr, xte, with_stats(info, tuple(mean.tolist()), tuple(std.tolist()))


def _load_arrays(info: DatasetInfo, root: Path, download: bool) -> tuple:
    """A .npz or .pt dataset (already checked by :func:`asknlearn.userdata.custom_dataset_info`)
    as normalized tensors, plus its entry with the training split's normalization."""
    path = Path(info.path)
    if info.loader == "npz":
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in SPLIT_KEYS}
    else:
        arrays = read_pt(info.name, path)
    xtr, xte = (_nchw(arrays[k], info.layout) for k in ("x_train", "x_test"))
    ytr, yte = (torch.as_tensor(arrays[k]).long() for k in ("y_train", "y_test"))
    del arrays
    xtr, xte, info = _normalize_custom(info, xtr, xte)
    return xtr, ytr, xte, yte, info


def _load_imagefolder(info: DatasetInfo, root: Path, download: bool) -> tuple:
    """An ImageFolder tree (``train/<class>/...``, ``test/<class>/...``) read once by
    torchvision's ImageFolder into whole uint8 tensors; test labels follow the train classes'
    indices (a test split may lack some classes)."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    path = Path(info.path)
    train_classes, _ = imagefolder_classes(info.name, path)
    index = {c: i for i, c in enumerate(train_classes)}
    mode = "L" if info.shape[0] == 1 else "RGB"

    def read(p: str) -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im.convert(mode))

    xs, ys = [], []
    for split in ("train", "test"):
        ds = ImageFolder(str(path / split), loader=read)
        if len(ds.samples) != len(image_files(path / split)):
            raise DatasetError(f"dataset {info.name!r} ({path}): {split}/ holds images outside "
                               "class folders; valid: images only in <split>/<class>/")
        images = []
        for file, _ in ds.samples:  # loading once, not a hot path
            try:
                a = read(file)
            except OSError as exc:
                raise DatasetError(f"dataset {info.name!r}: image {file!r} cannot be read "
                                   f"({exc}); valid: image files PIL can open") from None
            if a.shape[:2] != info.shape[1:]:
                raise DatasetError(
                    f"dataset {info.name!r}: image {file!r} is {a.shape[1]}x{a.shape[0]} but "
                    f"{info.shape[2]}x{info.shape[1]} (the first train image's size) was "
                    "expected; valid: images of one size (resize them first)")
            images.append(a)
        xs.append(_nchw(np.stack(images), "nhw" if mode == "L" else "nhwc"))
        ys.append(torch.tensor([index[ds.classes[t]] for _, t in ds.samples], dtype=torch.long))
    xtr, xte, info = _normalize_custom(info, xs[0], xs[1])
    return xtr, ys[0], xte, ys[1], info


# loader kind (DatasetInfo.loader) -> load(info, root, download) -> x_train, y_train, x_test,
# y_test; the custom loaders also return the entry with the normalization they computed
LOADERS = {
    "digits": _load_digits,
    "idx": _load_torchvision(_idx_splits),
    "cifar": _load_torchvision(_cifar_splits),
    "svhn": _load_torchvision(_svhn_splits),
    "npz": _load_arrays,
    "pt": _load_arrays,
    "imagefolder": _load_imagefolder,
}


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    download: bool = True,
) -> TensorData:
    """Load ``name`` once as normalized tensors on ``device``.

    ``name`` is a built-in dataset or a custom one described earlier in this process
    (:func:`asknlearn.userdata.dataset_info` with the config's ``custom_datasets``, which
    :meth:`ExperimentConfig.resolve` calls): a .npz/.pt file or an ImageFolder tree, normalized
    with its training split's per-channel statistics.

    ``root`` is the torchvision data root (``$ASKNLEARN_DATA`` or ``./data`` by default).
    Canonical MNIST/Fashion-MNIST ``.gz`` archives on disk are checked against their MD5 and
    extracted whatever ``download`` says (no network needed); ``download=True`` also lets
    torchvision fetch missing files where the network allows. Anything else raises a
    :class:`DatasetError` that names the file at fault or lists the expected files. Safe to
    call from many processes at once on a fresh root (see :func:`_prepare_lock`).
    """
    info = dataset_info(name)
    root = Path(root) if root is not None else default_data_root()
    parts = LOADERS[info.loader](info, root, download)
    if len(parts) == 5:  # a custom dataset: its entry now holds the training split's statistics
        *parts, info = parts
    return TensorData(info, *parts).to(device)
