"""The catalogue: every kind of part the package composes, each declared once, without torch.

The kinds are datasets, models, losses, pseudo-labellers, selectors, strategies and metrics.
Each entry carries the facts the rest of the package needs before anything is built (a
dataset's shape and defaults, whether a loss needs stochastic inferences, what a selector reads,
a metric's unit and direction), a lazy ``"module:attr"`` factory imported only when the part is
built, and the config keys the part takes (``{argument: config key}``). Every other table is
derived from here: the CLI's choices, the workflow schema, ``asknlearn strategies``, the plots'
units, the summary's digits, the MLflow metric groups, the row schema of :mod:`asknlearn.records`.

Adding a part is one entry here plus its implementation (``tests/test_contract.py`` checks
that nothing else needs editing). Every name is looked up through :func:`lookup`, so a bad name
is one line naming it, the nearest valid ones and all valid ones. Keeping this module free of
torch lets ``snakemake -n`` and ``asknlearn --help`` stay light.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asknlearn.errors import ConfigError

T = TypeVar("T")


def did_you_mean(name: object, valid: Any) -> str:
    """``" (did you mean 'x'?)"`` for the valid names nearest ``name``, or ``""``."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def unknown(kind: str, name: object, valid: Any, error: type[Exception] = ConfigError,
            extra: str = "") -> Exception:
    """The one-line error of a name lookup: the bad value, a "did you mean", the valid names."""
    valid = list(valid)
    return error(f"unknown {kind} {name!r}{did_you_mean(name, valid)}; valid: "
                 f"{', '.join(map(str, valid))}{extra}")


def lookup(table: Mapping[str, T], name: str, kind: str,
           error: type[Exception] = ConfigError) -> T:
    """``table[name]``, or :func:`unknown`'s one-line error naming the valid names."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise unknown(kind, name, table, error) from None


def load(factory: str) -> Any:
    """The object a ``"package.module:attr"`` factory names (imported now, not before)."""
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Option:
    """A config key a part declares itself (a selector's β, ...): it becomes an
    :class:`~asknlearn.config.ExperimentConfig` key like any other (a ``run`` flag, a YAML and
    workflow-schema key, checked and documented), given to the part's factory as ``arg``.
    ``type``: the key's type hint as text (``"float"``, ``"int | None"``); ``lo``/``hi``: its
    closed range; ``valid``: the error message's "valid: ..."."""

    arg: str
    type: str
    default: Any
    help: str
    lo: float | None = None
    hi: float | None = None
    valid: str = ""


@dataclass(frozen=True)
class Part:
    """An entry that builds an object: its ``factory``, the existing config keys its
    arguments take (``keys``: ``{argument: config key}``) and the config keys it declares itself
    (``options``: ``{config key: Option}``), read from a resolved
    :class:`~asknlearn.config.ExperimentConfig` when it is built."""

    factory: str
    keys: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Option] = field(default_factory=dict)

    def build(self, cfg: Any, **extra: Any) -> Any:
        """The part, with its arguments from ``cfg`` (and ``extra``, objects not in a config)."""
        args = {a: getattr(cfg, k) for a, k in self.keys.items()}
        args.update({o.arg: getattr(cfg, k) for k, o in self.options.items()})
        return load(self.factory)(**args, **extra)


def part_options() -> dict[str, Option]:
    """Every config key a catalogue part declares, by key (ExperimentConfig adds them)."""
    out: dict[str, Option] = {}
    for table in (LOSSES, PSEUDO_LABELERS, SELECTORS):
        for entry in table.values():
            out.update(entry.options)
    return out


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Augmentation defaults per dataset family, chosen on a validation split held out of the
# Fashion-MNIST pool for the MNIST family (docs/hyperparameters.md, `asknlearn tune`);
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
    ``idx``: torchvision's MNIST-format classes; ``cifar``, ``svhn``; your own data: ``npz``,
    ``pt``, ``imagefolder``, and ``vectors`` for (N, D) feature vectors) and ``source`` the
    torchvision class it uses (for ``vectors``: the file's format, ``npz`` or ``pt``).
    ``aug_shift``/``aug_flip`` are the refinement's augmentation
    defaults; ``seed_size``/``query_size``/``budget`` the protocol defaults that fit the pool
    (the paper's for the paper's datasets).
    """

    name: str
    family: str  # "mnist" (MNIST, Fashion-MNIST, digits), "cifar", "svhn"; yours: "custom", "vectors"
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
    # (train pool, test set) sizes, known without reading the data (`asknlearn estimate`);
    # your own data's are read from its file when its definition is checked
    sizes: tuple[int, int] = (0, 0)
    # your own data (loader "npz", "pt", "imagefolder" or "vectors"): the file or folder and how
    # its images are laid out ("nhw", "nchw", "nhwc"; None: an ImageFolder tree), or "nd":
    # (N, D) feature vectors, held as (N, D, 1, 1) tensors, shape (D, 1, 1)
    path: str | None = None
    layout: str | None = None


def _family(name: str) -> dict:
    aug = FAMILY_AUGMENT[name]
    return {"family": name, "aug_shift": aug["shift"], "aug_flip": aug["flip"]}


DATASETS: dict[str, DatasetInfo] = {
    # 8x8 images: a 1-pixel shift is the MNIST family's 2 pixels at this scale; the pool of
    # 1300 (1,797 images, 497 held out as the test set) fits 20 + 8 rounds of 20 (the
    # quickstart's protocol)
    "digits": DatasetInfo(
        "digits", shape=(1, 8, 8), num_classes=10, default_model="mlp", expected_files=(),
        mean=(0.0,), std=(1.0,), loader="digits", **_family("mnist"),
        seed_size=20, query_size=20, budget=160, sizes=(1300, 497),
    ),
    "mnist": DatasetInfo(
        "mnist", shape=(1, 28, 28), num_classes=10, default_model="mlp",
        expected_files=tuple(f"MNIST/raw/{f}[.gz]" for f in _MNIST_FILES),
        mean=(0.1307,), std=(0.3081,), loader="idx", source="MNIST", raw_dir="MNIST/raw",
        **_family("mnist"), sizes=(60000, 10000),
    ),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", shape=(1, 28, 28), num_classes=10, default_model="mlp",
        expected_files=tuple(f"FashionMNIST/raw/{f}[.gz]" for f in _MNIST_FILES),
        mean=(0.2860,), std=(0.3530,), loader="idx", source="FashionMNIST",
        raw_dir="FashionMNIST/raw", **_family("mnist"), sizes=(60000, 10000),
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
        sizes=(50000, 10000),
    ),
    "svhn": DatasetInfo(
        "svhn", shape=(3, 32, 32), num_classes=10, default_model="vgg16",
        expected_files=("train_32x32.mat", "test_32x32.mat"),
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), loader="svhn",
        source="SVHN", **_family("svhn"), sizes=(73257, 26032),
    ),
}


@dataclass(frozen=True)
class ModelInfo:
    """A built-in model, declared by this one entry.

    ``factory``: its code, ``"package.module:function"``, imported only when a network is built
    (so this table stays torch-free). It is called as a factory of your own is (docs/api.md):
    with the keyword arguments it takes among ``shape`` (C, H, W), ``num_classes`` and
    ``dropout``, returning (trunk, feature size) or a module with ``features``/``head``.
    ``input_hw``: the image size the network needs (None: any; checked when a config is
    resolved, before anything is built); ``dropout``: the rate of its stochastic layers when
    ``dropout`` is not set (its factory must take ``dropout``).
    """

    factory: str
    input_hw: tuple[int, int] | None
    dropout: float


# dropout rates: the MLP's from the validation-split study on Fashion-MNIST
# (docs/hyperparameters.md); ResNet-18: Huang et al.'s stochastic-depth rule (last block dropped
# with probability 0.5), as Seo et al. (2019) use; VGG-16: not tuned here (no CIFAR/SVHN data on
# our machines), a common MC-dropout rate. The linear head: feature vectors only (input 1x1: an
# (N, D) dataset is held as (N, D, 1, 1)); its stochastic network is MC dropout on the input
# features, at 0.2 (not tuned here; the usual input-dropout rate of Srivastava et al. 2014).
MODELS: dict[str, ModelInfo] = {
    "mlp": ModelInfo("asknlearn.models:mlp", None, 0.5),
    "resnet18": ModelInfo("asknlearn.models:resnet18", (32, 32), 0.5),
    "vgg16": ModelInfo("asknlearn.models:vgg16", (32, 32), 0.3),
    "linear": ModelInfo("asknlearn.models:linear", (1, 1), 0.2),
}
DEFAULT_DROPOUT = {name: m.dropout for name, m in MODELS.items()}



# ---------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class LossInfo(Part):
    """A training objective, called as ``loss(model, x, y) -> (scalar, logits)``.
    ``stochastic``: it needs a network with stochastic layers (its T inferences)."""

    stochastic: bool = False


LOSSES: dict[str, LossInfo] = {
    "ce": LossInfo("asknlearn.losses:CrossEntropy"),
    # λ of eq. 3
    "lwcc": LossInfo("asknlearn.losses:LWCC", {"lam": "lwcc_lambda"}),
    # T of eq. 2, on the stochastic network
    "vwcc": LossInfo("asknlearn.losses:VWCC", {"samples": "vwcc_samples"}, stochastic=True),
}
STOCHASTIC_LOSSES = frozenset(k for k, loss in LOSSES.items() if loss.stochastic)


# ---------------------------------------------------------------------------- pseudo-labellers
@dataclass(frozen=True)
class LabelerInfo(Part):
    """A pseudo-labeller, called as ``labeler(model, x, probs, generator, batch_size) ->
    (labels, refined mask)``. ``augment``: it takes the cell's augmentation (``augment=``)."""

    augment: bool = False


PSEUDO_LABELERS: dict[str, LabelerInfo] = {
    "argmax": LabelerInfo("asknlearn.pseudolabels:ArgmaxPseudoLabels"),
    # Algorithm 1's refinement: τ, k and the views averaged
    "refine": LabelerInfo("asknlearn.pseudolabels:RefinedPseudoLabels",
                          {"tau": "tau", "k": "k_aug", "include_original": "refine_include_original"},
                          augment=True),
}


# ---------------------------------------------------------------------------- selectors
# what a selector may read about the pool (asknlearn.selectors.Pool, built by asknlearn.query)
POOL_FIELDS = ("probs", "features", "pseudo_labels", "stochastic_probs", "labeled_features")


@dataclass(frozen=True)
class SelectorInfo(Part):
    """A selector, ``select(pool, b, generator) -> b distinct row indices``; ``needs``: the pool
    fields it reads (:data:`POOL_FIELDS`), exactly what :mod:`asknlearn.query` computes for it."""

    needs: frozenset[str] = frozenset()


SELECTORS: dict[str, SelectorInfo] = {
    "random": SelectorInfo("asknlearn.selectors.simple:RandomSelector"),
    "confidence": SelectorInfo("asknlearn.selectors.simple:ConfidenceSelector",
                               needs=frozenset({"probs"})),
    "entropy": SelectorInfo("asknlearn.selectors.simple:EntropySelector",
                            needs=frozenset({"probs"})),
    # BADGE's k-means++ on gradient embeddings (eq. 4) of the pseudo-labels
    "badge": SelectorInfo("asknlearn.selectors.simple:GradientKMeansPP",
                          needs=frozenset({"probs", "features", "pseudo_labels"})),
    # the field's standard batch-AL baselines (asknlearn/selectors/baselines.py)
    "margin": SelectorInfo("asknlearn.selectors.baselines:MarginSelector",
                           needs=frozenset({"probs"})),
    "coreset": SelectorInfo("asknlearn.selectors.baselines:CoresetSelector", options={
        "coreset_prune": Option("prune", "bool | None", None, "CoreSet's k-center pruning (same "
                                "picks, less work). None: on the CPU only")},
        needs=frozenset({"features", "labeled_features"})),
    "bald": SelectorInfo("asknlearn.selectors.baselines:BALDSelector",
                         needs=frozenset({"stochastic_probs"})),
    "powerbald": SelectorInfo("asknlearn.selectors.baselines:PowerBALDSelector", options={
        "powerbald_beta": Option("beta", "float", 1.0, "PowerBALD's β: points are drawn with "
                                 "probability ∝ BALD^β (Kirsch et al. 2023)", lo=0.0, hi=1000.0,
                                 valid="a value in [0, 1000] (0: uniform)")},
        needs=frozenset({"stochastic_probs"})),
    "typiclust": SelectorInfo("asknlearn.selectors.baselines:TypiclustSelector", options={
        "typiclust_clusters": Option("n_clusters", "int | None", None, "TypiClust's cluster "
                                     "count. None: |L| + b, at most 500 (Hacohen et al. 2022)",
                                     lo=1, valid="an integer >= 1")},
        needs=frozenset({"features", "labeled_features"})),
}
BASELINE_SELECTORS = ("margin", "coreset", "bald", "powerbald", "typiclust")


# ---------------------------------------------------------------------------- strategies
NETWORKS = ("auto", "plain", "stochastic")


@dataclass(frozen=True)
class StrategySpec:
    """A named strategy = training loss + pseudo-labeller + selector, on a network.

    ``network``: ``stochastic`` trains and selects with the network that has dropout /
    stochastic depth in its hidden layers (VWCC's network); ``plain`` with the BADGE protocol's
    plain one; ``auto`` with the stochastic one exactly when a part needs stochastic
    inferences (the VWCC loss, a selector that needs ``stochastic_probs``).
    """

    loss: str
    pseudo_labels: str
    selector: str
    network: str = "auto"

    @property
    def needs(self) -> frozenset[str]:
        """The pool fields this strategy's selector reads."""
        return lookup(SELECTORS, self.selector, "selector").needs

    @property
    def needs_stochastic(self) -> bool:
        return self.loss in STOCHASTIC_LOSSES or "stochastic_probs" in self.needs

    @property
    def stochastic(self) -> bool:
        """Whether this strategy runs on the stochastic network."""
        return self.network == "stochastic" or (self.network == "auto" and self.needs_stochastic)

    @property
    def refines(self) -> bool:
        """Whether its pseudo-labeller is a refinement (its diagnostics are recorded)."""
        return self.pseudo_labels != "argmax" and "pseudo_labels" in self.needs


STRATEGIES: dict[str, StrategySpec] = {
    "random": StrategySpec("ce", "argmax", "random"),
    "confidence": StrategySpec("ce", "argmax", "confidence"),
    "entropy": StrategySpec("ce", "argmax", "entropy"),
    "badge": StrategySpec("ce", "argmax", "badge"),
    "ask-n-learn-lwcc": StrategySpec("lwcc", "refine", "badge"),
    "ask-n-learn-vwcc": StrategySpec("vwcc", "refine", "badge"),
    # the paper's ablations: calibration without refinement, refinement without calibration
    "badge-lwcc": StrategySpec("lwcc", "argmax", "badge"),
    "badge-vwcc": StrategySpec("vwcc", "argmax", "badge"),
    "badge-refine": StrategySpec("ce", "refine", "badge"),
    # the control that separates VWCC's loss from its network: BADGE trained with cross-entropy
    # on the same stochastic (dropout) network as the VWCC strategies
    "badge-dropout": StrategySpec("ce", "argmax", "badge", network="stochastic"),
    # baselines beyond the paper, each trained with cross-entropy; bald and powerbald run on the
    # stochastic network (their selectors need MC-dropout inferences)
    **{name: StrategySpec("ce", "argmax", name) for name in BASELINE_SELECTORS},
}
PAPER_STRATEGIES = (
    "random", "confidence", "entropy", "badge", "ask-n-learn-lwcc", "ask-n-learn-vwcc",
)


# ---------------------------------------------------------------------------- metrics
@dataclass(frozen=True)
class MetricInfo:
    """A test-set metric of section 4.1: ``factory(probs, y[, bins])`` -> float (``bins``: it
    takes the ``ece_bins`` key). Its table name, unit, digits and direction are the one place
    every table, figure and log takes them from. ``scale`` multiplies the stored value (a
    fraction) into ``unit``; ``digits`` are for that scaled value; ``group``: the MLflow
    metric prefix (``test/accuracy``)."""

    factory: str
    display: str
    unit: str
    scale: float = 1.0
    digits: int = 3
    higher_is_better: bool = True
    group: str = "test"
    bins: bool = False

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"

    def label(self) -> str:
        """The axis or column label, with the unit: ``ECE (%)``."""
        return f"{self.display} ({self.unit})"

    def format(self, value: float) -> str:
        """``value`` (as stored) in this metric's unit and digits."""
        return "—" if value != value else f"{value * self.scale:.{self.digits}f}"


# rates (accuracy, ECE) are percentages everywhere: curves, summaries, reliability titles
METRICS: dict[str, MetricInfo] = {
    "accuracy": MetricInfo("asknlearn.metrics:accuracy", "test accuracy", "%", 100.0, 2),
    "ece": MetricInfo("asknlearn.metrics:ece", "ECE", "%", 100.0, 2, higher_is_better=False,
                      bins=True),
    "nll": MetricInfo("asknlearn.metrics:nll", "NLL", "nats", 1.0, 3, higher_is_better=False),
    "brier": MetricInfo("asknlearn.metrics:brier", "Brier score", "0–2", 1.0, 4,
                        higher_is_better=False),
}


# ---------------------------------------------------------------------------- your own model
FACTORY_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*"
_FACTORY = re.compile(f"^{FACTORY_PATTERN}$")
# what the `model` key accepts (the pre-flight check of every cell)
MODEL_PATTERN = f"^({'|'.join(MODELS)}|{FACTORY_PATTERN})$"
# any entry name or factory: what the workflow schema checks, so a new MODELS entry needs no
# schema regeneration (the pre-flight check still names the valid models)
MODEL_NAME_PATTERN = f"^([A-Za-z_][A-Za-z0-9_-]*|{FACTORY_PATTERN})$"


def is_model_factory(name: str) -> bool:
    """Whether model name ``name`` names a factory, ``"package.module:function"``."""
    return bool(_FACTORY.match(name))
