"""One experiment cell's configuration: defaults, validation and resolution.

Every key has a default here; YAML files and CLI flags override them. Unknown keys and
values of the wrong type or range are :class:`ConfigError`\\ s that name the bad value and
the valid ones. ``resolve()`` fills the dataset-dependent defaults (model, augmentation,
dropout) so the resolved config is exactly what ran, and is what gets logged.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from asknlearn.accel import COMPILE_MODES, PRECISIONS
from asknlearn.augment import FAMILY_AUGMENT
from asknlearn.data import DATASETS
from asknlearn.errors import ConfigError
from asknlearn.models import MODELS
from asknlearn.strategies import resolve_strategy

# rate of each model's stochastic layers when `dropout` is not set: the MLP's from the
# validation-split study on Fashion-MNIST (docs/hyperparameters.md); ResNet-18: Huang et al.'s
# stochastic-depth rule (last block dropped with probability 0.5), as Seo et al. (2019) use;
# VGG-16: not tuned here (no CIFAR/SVHN data on our machines), a common MC-dropout rate.
DEFAULT_DROPOUT = {"mlp": 0.3, "resnet18": 0.5, "vgg16": 0.3}


@dataclass
class ExperimentConfig:
    # --- the cell
    dataset: str = "digits"  # digits | mnist | fashion_mnist | cifar10 | svhn
    strategy: str = "badge"  # see `asknlearn strategies`
    seed: int = 0  # seeds the seed set S, initial weights, batch order, selection, oracle
    noise: float = 0.0  # oracle noise rate r in [0, 1): round(r*b) wrong labels per query
    study: str = "default"  # groups cells (MLflow experiment, results/<study>/)
    # --- the AL protocol (paper section 4.1)
    seed_size: int = 100  # |S|, drawn at random from the pool
    query_size: int = 1000  # b, labels bought per round
    budget: int = 10000  # B, labels bought in all (a multiple of b); rounds = B / b
    val_size: int = 0  # held out from the pool for model selection studies (never the test set)
    # --- model and training
    model: str | None = None  # mlp | resnet18 | vgg16 (None: the paper's choice per dataset)
    # rate of the stochastic network's layers: dropout after every hidden layer (MLP), after
    # every pooling stage (VGG-16), stochastic depth of the last block (ResNet-18, linear decay).
    # None: the per-model default (docs/hyperparameters.md). Plain-network strategies use 0.
    dropout: float | None = None
    # which strategies run on the stochastic network: auto = those whose parts need stochastic
    # inferences (VWCC, MC-dropout selectors, the badge-dropout control); stochastic = all
    network: str = "auto"
    lr: float = 1e-3  # Adam
    weight_decay: float = 0.0
    train_batch_size: int = 64
    target_train_accuracy: float = 0.99  # stop when an eval-mode pass over L reaches this
    max_epochs: int = 200
    train_augment: bool = False  # train every strategy with the refinement's augmentation
    # --- Ask-n-Learn (unspecified by the paper; chosen on a validation split, see
    # docs/hyperparameters.md)
    tau: float = 0.9  # keep argmax pseudo-label when max p >= tau
    k_aug: int = 10  # augmentations averaged for low-confidence pseudo-labels
    refine_include_original: bool = False  # count the un-augmented view in the average
    aug_shift: int | None = None  # max translation in pixels (None: per dataset family)
    aug_flip: bool | None = None  # random horizontal flip (None: per dataset family)
    lwcc_lambda: float = 1.0  # λ in eq. 3
    vwcc_samples: int = 5  # T stochastic inferences in eq. 2 (and for α diagnostics)
    # --- evaluation and runtime
    ece_bins: int = 15
    eval_batch_size: int = 4096
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # --- GPU use (asknlearn/accel.py; CUDA only, the CPU path is unchanged)
    precision: str = "fp32"  # fp32 | bf16 autocast (optimizer state fp32); bf16 is refused on the CPU
    deterministic: bool = True  # CUDA: cuDNN deterministic + deterministic algorithms; off: cudnn.benchmark
    compile: str = "off"  # off | graph (CUDA-graph the training step) | compile (torch.compile)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    data_root: str | None = None  # torchvision root (None: $ASKNLEARN_DATA or ./data)
    download: bool = True  # let torchvision fetch missing files where the network allows
    # --- tracking
    tracking: bool = True  # log to MLflow when a tracking URI is configured
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI; neither: no MLflow
    experiment: str | None = None  # MLflow experiment (None: the study name)
    # --- extra named strategies: {name: {loss, pseudo_labels, selector}}
    strategies: dict[str, dict[str, str]] = field(default_factory=dict)

    # ------------------------------------------------------------------ resolution
    @property
    def rounds(self) -> int:
        return self.budget // self.query_size

    @property
    def spec(self):
        return resolve_strategy(self.strategy, self.strategies)

    def resolve(self) -> ExperimentConfig:
        """Validate and fill dataset-dependent defaults; returns a new config."""
        validate(self)
        info = DATASETS[self.dataset]
        aug = FAMILY_AUGMENT[info.family]
        model = self.model or info.default_model
        stochastic = self.network == "stochastic" or self.spec.stochastic
        rate = self.dropout if self.dropout is not None else DEFAULT_DROPOUT[model]
        out = dataclasses.replace(
            self,
            model=model,
            dropout=rate if stochastic else 0.0,
            aug_shift=self.aug_shift if self.aug_shift is not None else
            (1 if self.dataset == "digits" else aug["shift"]),
            aug_flip=self.aug_flip if self.aug_flip is not None else aug["flip"],
            experiment=self.experiment or self.study,
        )
        if out.model != "mlp" and info.shape[1:] != (32, 32):
            raise ConfigError(f"model={out.model!r} expects 32x32 images but dataset {self.dataset!r} "
                              f"has {info.shape[1]}x{info.shape[2]}; valid: mlp")
        if stochastic and out.dropout <= 0:
            raise ConfigError(f"dropout={out.dropout!r}: strategy {self.strategy!r} runs on the "
                              "stochastic network, which needs a rate; valid: a rate in (0, 1)")
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cell_id(self) -> str:
        """``study/dataset/strategy/seedN/noiseR`` with the exact noise rate (never rounded)."""
        from asknlearn.naming import noise_token

        return f"{self.study}/{self.dataset}/{self.strategy}/seed{self.seed}/noise{noise_token(self.noise)}"


_FIELDS = {f.name: f for f in fields(ExperimentConfig)}


def _type_name(f: dataclasses.Field) -> str:
    return str(f.type).replace(" | None", " or null")


def _coerce(name: str, value: Any) -> Any:
    """Coerce a YAML/CLI value to the field's type, with an error naming the valid form."""
    f = _FIELDS[name]
    t = str(f.type)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none")):
        if "None" in t:
            return None
        raise ConfigError(f"{name}=None is not allowed; valid: a value of type {_type_name(f)}")
    base = t.split(" | ")[0]
    try:
        if base == "int":
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(str(value), 10)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if math.isnan(v):
                raise ValueError
            return v
        if base == "bool":
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("true", "1", "yes", "on"):
                return True
            if s in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base == "str":
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if base.startswith("dict"):
            if not isinstance(value, dict):
                raise ValueError
            return value
    except ValueError:
        raise ConfigError(
            f"{name}={value!r} is not valid; valid: a value of type {_type_name(f)}"
        ) from None
    return value


def validate(cfg: ExperimentConfig) -> None:
    """Range and consistency checks that need no data on disk."""
    from asknlearn.data import dataset_info

    def need(ok: bool, name: str, valid: str) -> None:
        if not ok:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is not valid; valid: {valid}")

    dataset_info(cfg.dataset)
    resolve_strategy(cfg.strategy, cfg.strategies)
    need(cfg.model is None or cfg.model in MODELS, "model", ", ".join(MODELS))
    need(0.0 <= cfg.noise < 1.0, "noise", "a rate in [0, 1)")
    need(cfg.seed >= 0, "seed", "an integer >= 0")
    need(cfg.seed_size >= 1, "seed_size", "an integer >= 1")
    need(cfg.query_size >= 1, "query_size", "an integer >= 1")
    need(cfg.budget >= 1, "budget", "a positive multiple of query_size")
    need(cfg.budget % cfg.query_size == 0, "budget",
         f"a positive multiple of query_size={cfg.query_size}")
    need(cfg.val_size >= 0, "val_size", "an integer >= 0")
    need(0.0 <= cfg.tau <= 1.0, "tau", "a threshold in [0, 1]")
    need(0 <= cfg.k_aug <= 1000, "k_aug", "an integer in [0, 1000]")
    need(cfg.aug_shift is None or 0 <= cfg.aug_shift <= 64, "aug_shift", "an integer in [0, 64]")
    need(0 <= cfg.lwcc_lambda <= 100, "lwcc_lambda", "a finite weight in [0, 100]")
    need(2 <= cfg.vwcc_samples <= 1000, "vwcc_samples", "an integer in [2, 1000]")
    need(cfg.dropout is None or 0.0 <= cfg.dropout < 1.0, "dropout", "a rate in [0, 1)")
    need(0 < cfg.lr <= 1, "lr", "a finite learning rate in (0, 1]")
    need(0 <= cfg.weight_decay <= 1, "weight_decay", "a finite value in [0, 1]")
    need(cfg.network in ("auto", "stochastic"), "network", "auto, stochastic")
    need(cfg.train_batch_size >= 1, "train_batch_size", "an integer >= 1")
    need(0.0 < cfg.target_train_accuracy <= 1.0, "target_train_accuracy", "a value in (0, 1]")
    need(cfg.max_epochs >= 1, "max_epochs", "an integer >= 1")
    need(1 <= cfg.ece_bins <= 10000, "ece_bins", "an integer in [1, 10000]")
    need(cfg.eval_batch_size >= 1, "eval_batch_size", "an integer >= 1")
    need(cfg.precision in PRECISIONS, "precision", ", ".join(PRECISIONS))
    need(cfg.compile in COMPILE_MODES, "compile", ", ".join(COMPILE_MODES))
    need(cfg.threads is None or 1 <= cfg.threads <= 4096, "threads", "an integer in [1, 4096]")
    dev = cfg.device
    need(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
         "device", "auto, cpu, cuda, cuda:N")
    need(cfg.study != "" and "/" not in cfg.study, "study", "a non-empty name without '/'")


def check_pool_size(cfg: ExperimentConfig, pool_size: int) -> None:
    """The budget must fit in the pool: |S| + B + val ≤ N."""
    need = cfg.seed_size + cfg.budget + cfg.val_size
    if need > pool_size:
        raise ConfigError(
            f"budget={cfg.budget} (+ seed_size={cfg.seed_size} + val_size={cfg.val_size}) "
            f"needs {need} labels but dataset {cfg.dataset!r} has a pool of {pool_size}; "
            f"valid: budget <= {pool_size - cfg.seed_size - cfg.val_size}"
        )


def from_mapping(values: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Override ``base`` (defaults) with ``values``; unknown keys are errors."""
    unknown = sorted(set(values) - set(_FIELDS))
    if unknown:
        import difflib

        hints = [f"{k!r} (did you mean {difflib.get_close_matches(k, _FIELDS, 1)[0]!r}?)"
                 if difflib.get_close_matches(k, _FIELDS, 1) else repr(k) for k in unknown]
        raise ConfigError(f"unknown config key {', '.join(hints)}; valid: {', '.join(_FIELDS)}")
    kw = {k: _coerce(k, v) for k, v in values.items()}
    return dataclasses.replace(base or ExperimentConfig(), **kw)


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; valid: a path to a YAML file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values")
    return data
