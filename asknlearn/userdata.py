"""Your own datasets: the ``custom_datasets`` definitions of a config, checked and described.

A definition names a ``.npz``/``.pt`` file or an ImageFolder tree; it is checked for form
without reading (:func:`check_custom_datasets`) and described from the file's headers
(:func:`custom_dataset_info`) into the same :class:`~asknlearn.catalogue.DatasetInfo` a built-in
dataset has. :func:`dataset_info` is the one lookup of a dataset by name, built-in or your own.
Imports no torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from asknlearn.catalogue import DATASETS, DatasetInfo, unknown
from asknlearn.errors import ConfigError, DatasetError

# Described definitions of config-defined datasets, by name: resolving a config registers its
# cell's dataset here, so that later lookups by name (the loop's load_dataset) find it.
_CUSTOM: dict[str, DatasetInfo] = {}
CUSTOM_FORMATS = ("npz", "pt", "imagefolder")
CUSTOM_KEYS = ("path", "format", "num_classes")
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
# torchvision.datasets.folder.IMG_EXTENSIONS, without importing torchvision
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_DATASET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_DESCRIBED: dict[tuple, DatasetInfo] = {}


def check_custom_datasets(defs: Any) -> dict[str, dict[str, Any]]:
    """``custom_datasets`` checked for form (names, keys, formats) without reading any file:
    {name: {path, format (default: from the path), num_classes (default: max label + 1)}}."""
    if not isinstance(defs, dict):
        raise ConfigError(f"custom_datasets={defs!r} is not valid; valid: a mapping of new "
                          "dataset names to {path, format, num_classes}")
    for name, spec in defs.items():
        if not isinstance(name, str) or not _DATASET_NAME.match(name):
            raise ConfigError(f"dataset name {name!r} is not valid; valid: lower-case letters, "
                              "digits, '_' and '-', starting with a letter or digit")
        if name in DATASETS:
            raise ConfigError(f"custom dataset {name!r} would replace the built-in dataset of that "
                              f"name; valid: a new name, not one of {', '.join(DATASETS)}")
        if not isinstance(spec, dict) or set(spec) - set(CUSTOM_KEYS) or "path" not in spec:
            raise ConfigError(f"custom dataset {name!r} must be a mapping with key path (and "
                              f"optionally format, num_classes); got {spec!r}")
        if not isinstance(spec["path"], str) or not spec["path"]:
            raise ConfigError(f"custom dataset {name!r}: path={spec['path']!r} is not valid; "
                              "valid: the path of a .npz/.pt file or an ImageFolder tree")
        fmt = spec.get("format")
        if fmt is not None and fmt not in CUSTOM_FORMATS:
            raise ConfigError(f"custom dataset {name!r}: format={fmt!r} is not valid; valid: "
                              f"{', '.join(CUSTOM_FORMATS)}")
        k = spec.get("num_classes")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 2):
            raise ConfigError(f"custom dataset {name!r}: num_classes={k!r} is not valid; valid: "
                              "an integer >= 2")
    return defs


def custom_format(path: str, fmt: str | None = None) -> str:
    """The format of a custom dataset: ``fmt``, else a folder is an ImageFolder tree and a file
    is named by its suffix."""
    if fmt:
        return fmt
    p = Path(path)
    if p.is_dir():
        return "imagefolder"
    suffix = p.suffix.lower().lstrip(".")
    if suffix in ("npz", "pt", "pth"):
        return "pt" if suffix == "pth" else suffix
    raise DatasetError(f"custom dataset path {path!r}: cannot tell its format; valid: a .npz or "
                       ".pt file, an ImageFolder folder (train/, test/), or format: npz|pt|"
                       "imagefolder")


def image_layout(shape: tuple[int, ...]) -> tuple[str, tuple[int, int, int]] | None:
    """How an image array of ``shape`` is laid out and its (C, H, W): (N, H, W) grey,
    (N, C, H, W) or (N, H, W, C) with C = 1 or 3 (channels first when both could be); None
    when it is no image array."""
    if len(shape) == 3 and min(shape[1:]) >= 2:
        return "nhw", (1, shape[1], shape[2])
    if len(shape) == 4:
        _, a, b, c = shape
        if a in (1, 3) and min(b, c) >= 2:
            return "nchw", (a, b, c)
        if c in (1, 3) and min(a, b) >= 2:
            return "nhwc", (c, a, b)
    return None


def vector_layout(shape: tuple[int, ...]) -> tuple[str, tuple[int, int, int]] | None:
    """An (N, D) array of feature vectors (embeddings computed outside asknlearn): layout
    ``"nd"``, held as (N, D, 1, 1) so that every part written for (N, C, H, W) takes it (one
    "channel" per feature); None when it is no such array."""
    if len(shape) == 2 and shape[1] >= 1:
        return "nd", (shape[1], 1, 1)
    return None


def is_vector(info: DatasetInfo) -> bool:
    """Whether dataset ``info`` is feature vectors (layout ``"nd"``), not images."""
    return info.layout == "nd"


def available_memory() -> int:
    """Bytes of memory available to a new allocation: MemAvailable of /proc/meminfo (page cache
    that can be dropped counts), else the free physical pages that os.sysconf reports."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def check_memory(name: str, where: str, n: int, shape: tuple[int, int, int],
                 raw_bytes: int) -> None:
    """Whole-tensor loading keeps all ``n`` images as float32; refuse up front, with the
    numbers, a dataset that cannot fit (with the file's own arrays while it is converted)."""
    c, h, w = shape
    need = n * c * h * w * 4 + raw_bytes
    have = available_memory()
    if need > have:
        gib = 1 << 30
        what = f"vectors of {c}" if (h, w) == (1, 1) else f"images of {c}x{h}x{w}"
        raise DatasetError(
            f"dataset {name!r} ({where}) does not fit in memory: {n} {what} need "
            f"about {need / gib:.2f} GiB as float32 tensors (with the file's arrays while "
            f"loading) but {have / gib:.2f} GiB is available; valid: a dataset that fits "
            "(asknlearn holds whole datasets as tensors): fewer or smaller images, or a machine "
            "with more memory")


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], Any]]:
    """{array name: (shape, dtype)} of a .npz file, read from the array headers only."""
    import zipfile

    import numpy as np

    out = {}
    with zipfile.ZipFile(path) as zf:
        for member in zf.namelist():
            if not member.endswith(".npy"):
                continue
            with zf.open(member) as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(fh)
                # a forged header can promise more data than the member holds
                need = fh.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                have = zf.getinfo(member).file_size
            if have < need and not dtype.hasobject:
                raise ValueError(f"array {member[:-4]} promises {need} bytes (shape "
                                 f"{tuple(shape)}, {dtype}) but holds {have}: it is truncated "
                                 "or forged")
            out[member[:-4]] = (tuple(shape), dtype)
    return out


def _check_labels(name: str, where: str, split: str, y: Any, k: int | None) -> Any:
    """Labels ``y`` of one split as int64, checked: 1-D integers in 0..k-1 (k None: >= 0)."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim != 1:
        raise DatasetError(f"dataset {name!r} ({where}): y_{split} has shape {y.shape}; valid: "
                           "one integer label per image, shape (N,)")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y) & (y == np.round(y))):
        raise DatasetError(f"dataset {name!r} ({where}): y_{split} holds non-integer labels; "
                           "valid: integer class labels 0..K-1")
    if y.dtype.kind not in "iuf" or y.dtype == bool:
        raise DatasetError(f"dataset {name!r} ({where}): y_{split} has dtype {y.dtype}; valid: "
                           "integer class labels 0..K-1")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= k) if k is not None else y < 0
    if len(y) and bad.any():
        hi = f"{k - 1}" if k is not None else "K-1"
        raise DatasetError(
            f"dataset {name!r} ({where}): y_{split} holds labels outside 0..{hi} (e.g. "
            f"{int(y[bad][0])}); valid: integer labels 0..{hi}"
            + ("" if k is None else f" (K = {k}: num_classes, or the largest y_train + 1)"))
    return y


def describe_arrays(name: str, where: str, shapes: dict[str, tuple[tuple[int, ...], Any]],
                    labels: dict[str, Any], num_classes: int | None
                    ) -> tuple[str, tuple[int, int, int], int, tuple[int, int]]:
    """Check the four arrays of a .npz/.pt dataset from their shapes/dtypes (``shapes``) and
    labels; returns (layout, (C, H, W), K, (n_train, n_test)). Each problem is one line."""
    import numpy as np

    missing = [k for k in SPLIT_KEYS if k not in shapes]
    if missing:
        raise DatasetError(f"dataset {name!r} ({where}) has no {', '.join(missing)}; valid: a "
                           f"file holding {', '.join(SPLIT_KEYS)} (it holds "
                           f"{', '.join(sorted(shapes)) or 'nothing'})")
    layouts = {}
    for split in ("train", "test"):
        shape, dtype = shapes[f"x_{split}"]
        lay = image_layout(shape) or vector_layout(shape)
        if lay is None:
            raise DatasetError(f"dataset {name!r} ({where}): x_{split} has shape {shape}, not "
                               "images or vectors; valid: (N, H, W), (N, C, H, W) or (N, H, W, "
                               "C) with C 1 or 3, or (N, D) feature vectors")
        if lay[0] == "nd" and np.dtype(dtype).kind != "f":
            raise DatasetError(f"dataset {name!r} ({where}): x_{split} holds (N, D) vectors of "
                               f"dtype {dtype}; valid: floating-point feature vectors (float16, "
                               "float32, float64)")
        if np.dtype(dtype).kind not in "uif" or np.dtype(dtype) == bool:
            raise DatasetError(f"dataset {name!r} ({where}): x_{split} has dtype {dtype}; "
                               "valid: uint8 or floating-point images")
        if shape[0] == 0:
            raise DatasetError(f"dataset {name!r} ({where}): x_{split} holds no images; valid: "
                               "at least one image per split")
        n_labels = labels[f"y_{split}"].shape[0] if np.ndim(labels[f"y_{split}"]) else 0
        if n_labels != shape[0]:
            raise DatasetError(f"dataset {name!r} ({where}): x_{split} has {shape[0]} images but "
                               f"y_{split} has {n_labels} labels; valid: one label per image")
        layouts[split] = lay
    if "nd" in (layouts["train"][0], layouts["test"][0]) and layouts["train"] != layouts["test"]:
        tr, te = shapes["x_train"][0][1:], shapes["x_test"][0][1:]
        raise DatasetError(f"dataset {name!r} ({where}): x_train is {tr} per item but x_test "
                           f"{te}; valid: (N, D) vectors of one length D in both splits")
    if layouts["train"][1] != layouts["test"][1]:
        raise DatasetError(f"dataset {name!r} ({where}): train images are {layouts['train'][1]} "
                           f"(C, H, W) but test images {layouts['test'][1]}; valid: one image "
                           "shape for both splits")
    ytr = _check_labels(name, where, "train", labels["y_train"], num_classes)
    k = num_classes or int(ytr.max()) + 1
    if k < 2:
        raise DatasetError(f"dataset {name!r} ({where}): y_train has a single class; valid: "
                           "labels of at least 2 classes")
    distinct = len(np.unique(ytr))
    if num_classes is None and k > 2 * distinct and k - distinct >= 10:
        # one stray label would otherwise size the model's head (K = max + 1)
        raise DatasetError(
            f"dataset {name!r} ({where}): y_train's largest label {k - 1} implies K = {k} "
            f"classes but y_train holds only {distinct} distinct labels; valid: labels 0..K-1 "
            "with most classes present, or declare num_classes for the dataset")
    _check_labels(name, where, "test", labels["y_test"], k)
    return (layouts["train"][0], layouts["train"][1], k,
            (shapes["x_train"][0][0], shapes["x_test"][0][0]))


def _describe_npz(name: str, path: Path, num_classes: int | None) -> DatasetInfo:
    import numpy as np

    try:
        shapes = _npz_headers(path)
        with np.load(path, allow_pickle=False) as f:
            labels = {k: f[k] for k in ("y_train", "y_test") if k in shapes}
    except (OSError, ValueError, EOFError) as exc:
        raise DatasetError(f"dataset {name!r}: {str(path)!r} is not a readable .npz file "
                           f"({type(exc).__name__}: {exc}); valid: a file np.savez wrote with "
                           f"{', '.join(SPLIT_KEYS)}") from None
    except Exception as exc:  # zipfile.BadZipFile and friends
        raise DatasetError(f"dataset {name!r}: {str(path)!r} is not a readable .npz file "
                           f"({type(exc).__name__}); valid: a file np.savez wrote with "
                           f"{', '.join(SPLIT_KEYS)}") from None
    labels = {k: labels.get(k, np.zeros(0)) for k in ("y_train", "y_test")}
    lay, shape, k, sizes = describe_arrays(name, str(path), shapes, labels, num_classes)
    raw = sum(int(np.prod(s)) * np.dtype(d).itemsize for key, (s, d) in shapes.items()
              if key in ("x_train", "x_test"))
    check_memory(name, str(path), sum(sizes), shape, raw)
    return _custom_entry(name, "npz", path, lay, shape, k, sizes)


def _describe_pt(name: str, path: Path, num_classes: int | None) -> DatasetInfo:
    # a .pt file can only be read whole: the loader reads it again (torch.load, weights only,
    # so no code runs from the file)
    arrays = read_pt_checked(name, path)
    shapes = {k: (tuple(v.shape), v.dtype) for k, v in arrays.items()}
    labels = {k: arrays[k] for k in ("y_train", "y_test") if k in arrays}
    import numpy as np

    labels = {k: labels.get(k, np.zeros(0)) for k in ("y_train", "y_test")}
    lay, shape, k, sizes = describe_arrays(name, str(path), shapes, labels, num_classes)
    raw = sum(arrays[k].nbytes for k in ("x_train", "x_test"))
    check_memory(name, str(path), sum(sizes), shape, raw)
    return _custom_entry(name, "pt", path, lay, shape, k, sizes)


def read_pt_checked(name: str, path: Path) -> dict[str, Any]:
    """The arrays of a ``.pt`` dataset file (:func:`asknlearn.data.read_pt`: ``torch.load``
    with ``weights_only=True``, no code runs from the file), each split tensor checked first:
    an ``nn.Parameter`` (or any tensor that requires grad) or a dtype numpy cannot hold
    (bfloat16, complex) is one line naming the key."""
    import torch

    from asknlearn.data import read_pt

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return read_pt(name, path)  # its one-line error
    if isinstance(obj, dict):
        for k in SPLIT_KEYS:
            v = obj.get(k)
            if not isinstance(v, torch.Tensor):
                continue
            if isinstance(v, torch.nn.Parameter) or v.requires_grad:
                raise DatasetError(f"dataset {name!r} ({path}): {k} is an nn.Parameter (a tensor "
                                   "that requires grad); valid: plain tensors (torch.save "
                                   f"{k}.detach())")
            if v.dtype in (torch.bfloat16, torch.complex64, torch.complex128) or v.is_quantized:
                raise DatasetError(f"dataset {name!r} ({path}): {k} has dtype {v.dtype}; valid: "
                                   "uint8, integer or float16/float32/float64 tensors (save "
                                   f"{k}.float())")
    return read_pt(name, path)


def image_files(folder: Path) -> list[Path]:
    """The image files under ``folder``, sorted (torchvision's ImageFolder order)."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def imagefolder_classes(name: str, path: Path) -> tuple[list[str], list[str]]:
    """The class folders of ``path/train`` and ``path/test`` (sorted, as ImageFolder's), each
    checked: both splits present, no empty class, every test class a train class."""
    classes = {}
    for split in ("train", "test"):
        d = path / split
        if not d.is_dir():
            raise DatasetError(f"dataset {name!r} ({path}) has no {split}/ folder; valid: an "
                               "ImageFolder tree train/<class>/<image>, test/<class>/<image>")
        found = sorted(e.name for e in os.scandir(d) if e.is_dir() and not e.name.startswith("."))
        empty = [c for c in found if not image_files(d / c)]
        if not found or empty:
            what = f"class folder {split}/{empty[0]} holds" if empty else f"{split}/ holds"
            raise DatasetError(f"dataset {name!r} ({path}): {what} no images; valid: image files "
                               f"({', '.join(IMAGE_EXTENSIONS)}) in train/<class>/ and "
                               "test/<class>/")
        classes[split] = found
    extra = sorted(set(classes["test"]) - set(classes["train"]))
    if extra:
        raise DatasetError(f"dataset {name!r} ({path}): test class {extra[0]!r} is not a train "
                           f"class, so its label would be outside 0..{len(classes['train']) - 1}; "
                           f"valid: test classes among {', '.join(classes['train'])}")
    return classes["train"], classes["test"]


def _describe_imagefolder(name: str, path: Path, num_classes: int | None) -> DatasetInfo:
    from PIL import Image

    train, _ = imagefolder_classes(name, path)
    k = len(train)
    if k < 2:
        raise DatasetError(f"dataset {name!r} ({path}): train/ has a single class folder "
                           f"({train[0]!r}); valid: class folders of at least 2 classes")
    if num_classes is not None and num_classes != k:
        raise DatasetError(f"dataset {name!r} ({path}): num_classes={num_classes} but train/ "
                           f"has {k} class folders; valid: {k}, or leave num_classes out")
    files = {split: image_files(path / split) for split in ("train", "test")}
    n_train, n_test = len(files["train"]), len(files["test"])
    first = files["train"][0]
    # every header now (not the pixels): a file PIL refuses (unreadable, or a decompression
    # bomb whose header claims far more pixels than an image holds) or of another size is one
    # line before anything is written
    for f in (*files["train"], *files["test"]):
        try:
            with Image.open(f) as im:
                size, mode = im.size, im.mode
        except Exception as exc:  # OSError, Image.DecompressionBombError, ...
            raise DatasetError(f"dataset {name!r}: image {str(f)!r} cannot be read "
                               f"({type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}); "
                               "valid: image files PIL can open") from None
        if f == first:
            (w, h), c = size, 1 if mode in ("1", "L", "I", "I;16", "F") else 3
        elif size != (w, h):
            raise DatasetError(f"dataset {name!r}: image {str(f)!r} is {size[0]}x{size[1]} but "
                               f"{w}x{h} (the first train image's size) was expected; valid: "
                               "images of one size (resize them first)")
    shape = (c, h, w)
    check_memory(name, str(path), n_train + n_test, shape, (n_train + n_test) * c * h * w)
    return _custom_entry(name, "imagefolder", path, None, shape, k, (n_train, n_test))


def protocol_defaults(pool: int) -> dict[str, int]:
    """seed_size, query_size and budget sized to a pool of ``pool`` points: b = pool/60
    (at most the paper's 1000), |S| = min(b, 100), B = 10 rounds of b; so |S| + B stays
    under a fifth of the pool (the paper's MNIST protocol at 60,000)."""
    b = max(1, min(1000, pool // 60))
    return {"seed_size": min(b, 100), "query_size": b, "budget": 10 * b}


# a vector dataset's default model: a linear head (a linear probe, the usual head on pretrained
# embeddings: CLIP, DINOv2, SimCLR features of 384..2048 dimensions) from this many features up,
# the MLP below it (too few features for a linear head to separate the classes). A rule of
# thumb, not tuned here; set `model` to choose.
LINEAR_PROBE_MIN_DIM = 128


def default_model(shape: tuple[int, int, int], layout: str | None) -> str:
    """The model a custom dataset gets by default, from its shape: the linear head for vectors
    of at least :data:`LINEAR_PROBE_MIN_DIM` features, the MLP for shorter vectors and for grey
    or small images, ResNet-18 for 32x32 RGB."""
    if layout == "nd":
        return "linear" if shape[0] >= LINEAR_PROBE_MIN_DIM else "mlp"
    return "resnet18" if shape == (3, 32, 32) else "mlp"


def load_vectors(info: DatasetInfo, root: Path, download: bool) -> tuple:
    """A .npz/.pt dataset of (N, D) feature vectors (described by :func:`custom_dataset_info`)
    as (N, D, 1, 1) float32 tensors, each feature standardized with the training split's mean
    and std (as images are per channel); every value checked finite, naming the split and the
    first bad row. Returns the tensors and the entry with its statistics (a loader of
    :data:`asknlearn.data.LOADERS`)."""
    import numpy as np
    import torch

    path = Path(info.path)
    if info.source == "npz":  # the file's format (the loader is "vectors")
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in SPLIT_KEYS}
    else:
        arrays = read_pt_checked(info.name, path)
    xs = {}
    for split in ("train", "test"):
        x = torch.as_tensor(np.ascontiguousarray(arrays[f"x_{split}"])).float()
        bad = ~torch.isfinite(x).all(dim=1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise DatasetError(f"dataset {info.name!r} ({path}): x_{split} row {row} holds a "
                               "non-finite value (NaN or inf); valid: finite feature vectors")
        xs[split] = x
    ytr, yte = (torch.as_tensor(arrays[k]).long() for k in ("y_train", "y_test"))
    del arrays
    mean = xs["train"].mean(dim=0, dtype=torch.float64)
    # a constant feature: no division by 0
    std = xs["train"].std(dim=0).double().clamp_min(1e-8) if len(xs["train"]) > 1 else (
        torch.ones_like(mean))
    m, s = mean.float(), std.float()
    xtr, xte = ((xs[k] - m).div_(s).view(len(xs[k]), -1, 1, 1) for k in ("train", "test"))
    return xtr, ytr, xte, yte, with_stats(info, tuple(mean.tolist()), tuple(std.tolist()))


def _register_vector_loader() -> None:
    # TODO(lead): one line in asknlearn/data.py's LOADERS, "vectors": userdata.load_vectors,
    # makes this registration unnecessary (data.py imports this module, not the other way)
    from asknlearn import data

    data.LOADERS.setdefault("vectors", load_vectors)


def _custom_entry(name: str, loader: str, path: Path, layout: str | None,
                  shape: tuple[int, int, int], k: int, sizes: tuple[int, int]) -> DatasetInfo:
    """The entry of a custom dataset: its default model from its shape (:func:`default_model`);
    for images a shift of about H/10 pixels (no flip: not every dataset is flip-invariant), for
    vectors no view at all (refinement refuses them); normalization computed from the training
    split when it is loaded."""
    if layout == "nd":
        _register_vector_loader()
        return DatasetInfo(
            name, family="vectors", shape=shape, num_classes=k,
            default_model=default_model(shape, layout), expected_files=(), mean=(), std=(),
            loader="vectors", source=loader, aug_shift=0, aug_flip=False, path=str(path),
            layout=layout, sizes=sizes, **protocol_defaults(sizes[0]),
        )
    return DatasetInfo(
        name, family="custom", shape=shape, num_classes=k,
        default_model=default_model(shape, layout), expected_files=(),
        mean=(), std=(), loader=loader, aug_shift=max(1, shape[1] // 10), aug_flip=False,
        path=str(path), layout=layout, sizes=sizes, **protocol_defaults(sizes[0]),
    )


def custom_dataset_info(name: str, spec: dict[str, Any]) -> DatasetInfo:
    """Describe and check the custom dataset ``name`` = ``spec`` ({path, format, num_classes})
    up front: its splits, lengths, labels, image shape and whether it fits in memory, each
    problem one line. Reads array headers and labels only (a .pt file whole). Cached by the
    file's size and modification time."""
    check_custom_datasets({name: spec})
    path = Path(spec["path"]).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset {name!r}: {str(path)!r} does not exist; valid: the path of a "
                           ".npz/.pt file or an ImageFolder tree (train/, test/)")
    fmt = custom_format(str(path), spec.get("format"))
    st = path.stat()
    key = (name, str(path.resolve()), fmt, spec.get("num_classes"), st.st_size, st.st_mtime_ns)
    if key not in _DESCRIBED:
        describe = {"npz": _describe_npz, "pt": _describe_pt,
                    "imagefolder": _describe_imagefolder}[fmt]
        _DESCRIBED[key] = describe(name, path, spec.get("num_classes"))
    return _DESCRIBED[key]


def with_stats(info: DatasetInfo, mean: tuple[float, ...], std: tuple[float, ...]) -> DatasetInfo:
    """``info`` with the normalization computed from its training split."""
    return replace(info, mean=mean, std=std)




def dataset_info(name: str, custom: dict[str, Any] | None = None) -> DatasetInfo:
    """The entry of dataset ``name``: a built-in one, one defined in ``custom`` (a config's
    ``custom_datasets`` mapping, described and checked here, see :func:`custom_dataset_info`),
    or one such definition seen earlier in this process; else a :class:`DatasetError` listing
    the valid names."""
    if name in DATASETS:
        return DATASETS[name]
    if custom and name in custom:
        _CUSTOM[name] = custom_dataset_info(name, custom[name])
    if name not in _CUSTOM:
        valid = [*sorted(DATASETS), *sorted(set(custom or ()) | set(_CUSTOM))]
        raise unknown("dataset", name, valid, DatasetError, " (your own: a custom_datasets entry)")
    return _CUSTOM[name]


