"""The tables of names, without torch: datasets, models, losses and pseudo-labellers.

Config validation, ``asknlearn strategies`` and the Snakefile need to know which names exist and
a few facts about each (a dataset's shape and defaults, whether a loss needs stochastic
inferences), but not the code that builds them. Keeping those facts here lets ``snakemake -n``
and ``asknlearn --help`` run without importing torch. The factories live next to their code
(:data:`asknlearn.models.MODELS`, :data:`asknlearn.losses.LOSSES`,
:data:`asknlearn.pseudolabels.PSEUDO_LABELERS`, the loaders in :mod:`asknlearn.data`);
``tests/test_config.py`` checks that both sides name the same things.

Adding a dataset is one :class:`DatasetInfo` entry here: its loader kind (how
:mod:`asknlearn.data` reads it), files, normalization, augmentation defaults, protocol defaults
and the hint printed when its files are missing. Nothing elsewhere branches on its name.
"""

from __future__ import annotations

from dataclasses import dataclass

from asknlearn.errors import DatasetError

_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Augmentation defaults per dataset family, chosen on a validation split held out of the
# Fashion-MNIST pool for the MNIST family (docs/hyperparameters.md, `python -m asknlearn.tune`);
# the standard label-preserving ones for the others: crop + flip for CIFAR-10, crop without flip
# for SVHN.
FAMILY_AUGMENT = {
    "mnist": {"shift": 1, "flip": False},
    "cifar": {"shift": 4, "flip": True},
    "svhn": {"shift": 4, "flip": False},
}


@dataclass(frozen=True)
class DatasetInfo:
    """Everything the package knows about a dataset before reading it.

    ``loader`` names the reader in :data:`asknlearn.data.LOADERS` (``digits``: scikit-learn;
    ``idx``: torchvision's MNIST-format classes; ``cifar``, ``svhn``) and ``source`` the
    torchvision class it uses. ``aug_shift``/``aug_flip`` are the refinement's augmentation
    defaults; ``seed_size``/``query_size``/``budget`` the protocol defaults that fit the pool
    (the paper's for the paper's datasets).
    """

    name: str
    family: str  # "mnist" (MNIST, Fashion-MNIST, digits), "cifar" or "svhn"
    shape: tuple[int, int, int]
    num_classes: int
    default_model: str
    expected_files: tuple[str, ...]  # relative to the data root
    mean: tuple[float, ...]
    std: tuple[float, ...]
    loader: str
    source: str | None = None  # torchvision dataset class
    raw_dir: str | None = None  # folder of the IDX files under the data root (loader "idx")
    aug_shift: int = 2
    aug_flip: bool = False
    seed_size: int = 100
    query_size: int = 1000
    budget: int = 10000
    hint: str = ""  # appended to the "could not be read" message; {root} is the data root


def _family(name: str) -> dict:
    aug = FAMILY_AUGMENT[name]
    return {"family": name, "aug_shift": aug["shift"], "aug_flip": aug["flip"]}


DATASETS: dict[str, DatasetInfo] = {
    # 8x8 images: a 1-pixel shift is the MNIST family's 2 pixels at this scale; the pool of
    # 1300 fits 20 + 8 rounds of 20 (the quickstart's protocol)
    "digits": DatasetInfo(
        "digits", shape=(1, 8, 8), num_classes=10, default_model="mlp", expected_files=(),
        mean=(0.0,), std=(1.0,), loader="digits", **{**_family("mnist"), "aug_shift": 1},
        seed_size=20, query_size=20, budget=160,
    ),
    "mnist": DatasetInfo(
        "mnist", shape=(1, 28, 28), num_classes=10, default_model="mlp",
        expected_files=tuple(f"MNIST/raw/{f}[.gz]" for f in _MNIST_FILES),
        mean=(0.1307,), std=(0.3081,), loader="idx", source="MNIST", raw_dir="MNIST/raw",
        **_family("mnist"),
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", shape=(1, 28, 28), num_classes=10, default_model="mlp",
        expected_files=tuple(f"FashionMNIST/raw/{f}[.gz]" for f in _MNIST_FILES),
        mean=(0.2860,), std=(0.3530,), loader="idx", source="FashionMNIST",
        raw_dir="FashionMNIST/raw", **_family("mnist"),
        hint="The canonical .gz files can be linked in: mkdir -p {root}/FashionMNIST/raw && "
             "ln -s /path/to/FashionMNIST/raw/*.gz {root}/FashionMNIST/raw/",
    ),
    "cifar10": DatasetInfo(
        "cifar10", shape=(3, 32, 32), num_classes=10, default_model="resnet18",
        expected_files=tuple(
            f"cifar-10-batches-py/{f}"
            for f in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                      "data_batch_5", "test_batch", "batches.meta")
        ),
        mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), loader="cifar",
        source="CIFAR10", **_family("cifar"), query_size=5000, budget=25000,
    ),
    "svhn": DatasetInfo(
        "svhn", shape=(3, 32, 32), num_classes=10, default_model="vgg16",
        expected_files=("train_32x32.mat", "test_32x32.mat"),
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), loader="svhn",
        source="SVHN", **_family("svhn"),
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """The entry of dataset ``name``, or a :class:`DatasetError` listing the valid names."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; valid: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


@dataclass(frozen=True)
class ModelInfo:
    """``input_hw``: the image size the network needs (None: any); ``dropout``: the rate of
    its stochastic layers when ``dropout`` is not set."""

    input_hw: tuple[int, int] | None
    dropout: float


# dropout rates: the MLP's from the validation-split study on Fashion-MNIST
# (docs/hyperparameters.md); ResNet-18: Huang et al.'s stochastic-depth rule (last block dropped
# with probability 0.5), as Seo et al. (2019) use; VGG-16: not tuned here (no CIFAR/SVHN data on
# our machines), a common MC-dropout rate.
MODELS: dict[str, ModelInfo] = {
    "mlp": ModelInfo(None, 0.5),
    "resnet18": ModelInfo((32, 32), 0.5),
    "vgg16": ModelInfo((32, 32), 0.3),
}
DEFAULT_DROPOUT = {name: m.dropout for name, m in MODELS.items()}

# training losses; the value says whether the loss needs a network with stochastic layers
LOSSES: dict[str, bool] = {"ce": False, "lwcc": False, "vwcc": True}
STOCHASTIC_LOSSES = frozenset(k for k, stochastic in LOSSES.items() if stochastic)

PSEUDO_LABELERS = ("argmax", "refine")
