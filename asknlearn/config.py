"""One experiment cell's configuration, declared once: defaults, meaning, validity, coercion.

Every key of :class:`ExperimentConfig` is declared with :func:`key`: its default, a help text,
the values it accepts and whether it is runtime-only (does not change what a cell computes).
From that one declaration come the ``asknlearn run`` flags and their ``--help``
(:func:`add_config_arguments`), the type coercion of YAML and CLI values (from the type hints),
the range checks (:func:`validate`), :data:`RUNTIME_KEYS`, :data:`WORKFLOW_KEYS` and the
workflow schema's ``experiment`` properties (:func:`experiment_schema`). Unknown keys and values
of the wrong type or range are :class:`ConfigError`\\ s that name the bad value and the valid
ones. ``resolve()`` fills the dataset-dependent defaults (protocol sizes, model, augmentation,
dropout) so the resolved config is exactly what ran, and is what gets logged.

Imports no torch, so ``snakemake -n`` stays light.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from asknlearn import __version__
from asknlearn.catalogue import (
    DATASETS,
    DEFAULT_DROPOUT,
    MODEL_NAME_PATTERN,
    MODEL_PATTERN,
    MODELS,
    did_you_mean,
    is_model_factory,
    part_options,
)
from asknlearn.errors import ConfigError
from asknlearn.strategies import resolve_strategy
from asknlearn.userdata import check_custom_datasets, dataset_info

__all__ = [
    "DEFAULT_DROPOUT", "RUNTIME_KEYS", "WORKFLOW_KEYS", "ExperimentConfig", "add_config_arguments",
    "check_pool_size", "coerce", "experiment_schema", "flag_value", "from_mapping", "load_yaml",
    "validate",
]

_MISSING = dataclasses.MISSING


def key(default: Any = _MISSING, help: str = "", *, valid: str = "",  # noqa: A002
        choices: tuple | None = None, lo: float | None = None, hi: float | None = None,
        lo_open: bool = False, hi_open: bool = False, runtime: bool = False,
        workflow: bool = False, default_factory: Any = _MISSING, pattern: str | None = None,
        schema_pattern: str | None = None) -> Any:
    """Declare a config key: its default and ``help``; ``valid`` (the message's "valid: ...")
    with the range [lo, hi] (``lo_open``/``hi_open`` make an end open) or the ``choices`` it
    accepts; ``runtime``: it does not change what the cell computes, so a resume may change it;
    ``workflow``: the workflow sets it per cell or per machine (not in ``experiment:``);
    ``pattern``: the regular expression a string value matches; ``schema_pattern``: a looser
    one for the workflow schema, when the exact one would tie the schema file to a table that
    grows (the pre-flight check still applies ``pattern`` to every cell before any job runs)."""
    meta = {"help": help, "valid": valid, "choices": choices, "lo": lo, "hi": hi,
            "lo_open": lo_open, "hi_open": hi_open, "runtime": runtime, "workflow": workflow,
            "pattern": pattern, "schema_pattern": schema_pattern or pattern}
    if default_factory is not _MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


_RATE = {"lo": 0.0, "hi": 1.0, "hi_open": True, "valid": "a rate in [0, 1)"}
_SIZE = "None: the dataset's default (`asknlearn run --help` lists them)"


def _with_part_keys(cls: type) -> type:
    """Add the config keys the catalogue's parts declare themselves (a selector's β, ...) as
    keys of ``cls``, declared like the others: adding a part with a key edits the catalogue
    only."""
    for name, o in part_options().items():
        cls.__annotations__[name] = o.type
        setattr(cls, name, key(o.default, o.help, lo=o.lo, hi=o.hi, valid=o.valid))
    return cls


@dataclass
@_with_part_keys
class ExperimentConfig:
    # --- the cell
    dataset: str = key("digits", "dataset of the cell", workflow=True,
                       valid=f"{', '.join(DATASETS)}, or a custom_datasets name")
    strategy: str = key("badge", "query strategy (`asknlearn strategies` lists them)",
                        workflow=True)
    seed: int = key(0, "seeds the seed set S, initial weights, batch order, selection and oracle",
                    lo=0, valid="an integer >= 0", workflow=True)
    noise: float = key(0.0, "oracle noise rate r: round(r*b) wrong labels per query",
                       workflow=True, **_RATE)
    study: str = key("default", "groups cells (MLflow experiment, results/<study>/)",
                     valid="a non-empty name without '/', control characters or both quote "
                           "characters", workflow=True)
    # --- the AL protocol (paper section 4.1)
    seed_size: int | None = key(None, f"|S|, drawn at random from the pool; {_SIZE}",
                                lo=1, valid="an integer >= 1")
    query_size: int | None = key(None, f"b, labels bought per round; {_SIZE}",
                                 lo=1, valid="an integer >= 1")
    budget: int | None = key(None, f"B, labels bought in all (a multiple of b; rounds = B / b); "
                                   f"{_SIZE}", lo=1, valid="a positive multiple of query_size")
    val_size: int = key(0, "held out from the pool for model selection studies (never the test "
                           "set)", lo=0, valid="an integer >= 0")
    # --- model and training
    model: str | None = key(None, "network: a built-in one, or your own factory "
                                  "'package.module:function' (docs/api.md). None: the paper's "
                                  "choice per dataset",
                            valid=f"{', '.join(MODELS)}, 'package.module:function' or null",
                            pattern=MODEL_PATTERN, schema_pattern=MODEL_NAME_PATTERN)
    dropout: float | None = key(
        None, "rate of the stochastic network's layers: dropout after every hidden layer (MLP), "
              "after every pooling stage (VGG-16), stochastic depth of the last block "
              "(ResNet-18, linear decay). None: the per-model default (docs/hyperparameters.md). "
              "Plain-network strategies use 0", **_RATE)
    network: str = key("auto", "which strategies run on the stochastic network: auto = those "
                               "whose parts need stochastic inferences (VWCC, MC-dropout "
                               "selectors, the badge-dropout control); stochastic = all",
                       choices=("auto", "stochastic"))
    lr: float = key(1e-3, "Adam learning rate", lo=0.0, hi=1.0, lo_open=True,
                    valid="a finite learning rate in (0, 1]")
    weight_decay: float = key(0.0, "Adam weight decay", lo=0.0, hi=1.0,
                              valid="a finite value in [0, 1]")
    train_batch_size: int = key(64, "training batch size", lo=1, valid="an integer >= 1")
    target_train_accuracy: float = key(0.99, "stop when an eval-mode pass over L reaches this",
                                       lo=0.0, hi=1.0, lo_open=True, valid="a value in (0, 1]")
    max_epochs: int = key(200, "epochs per round at most", lo=1, valid="an integer >= 1")
    train_augment: bool = key(False, "train every strategy with the refinement's augmentation")
    # --- Ask-n-Learn (unspecified by the paper). tau, k_aug, the views and the MLP's dropout were
    # chosen on a validation split held out of the Fashion-MNIST pool (asknlearn tune;
    # docs/hyperparameters.md): the best-scoring choice, which still does not beat argmax there.
    # The paper's rule as the issue tracker first had it: tau=0.9, k_aug=10, aug_shift=2.
    tau: float = key(0.5, "keep the argmax pseudo-label when max p >= tau", lo=0.0, hi=1.0,
                     valid="a threshold in [0, 1]")
    k_aug: int = key(5, "augmentations averaged for low-confidence pseudo-labels", lo=0,
                     hi=1000, valid="an integer in [0, 1000]")
    refine_include_original: bool = key(False, "count the un-augmented view in the average")
    aug_shift: int | None = key(None, "max translation in pixels (None: per dataset)", lo=0,
                                hi=64, valid="an integer in [0, 64]")
    aug_flip: bool | None = key(None, "random horizontal flip (None: per dataset)")
    lwcc_lambda: float = key(1.0, "λ in eq. 3", lo=0.0, hi=100.0,
                             valid="a finite weight in [0, 100]")
    vwcc_samples: int = key(5, "T stochastic inferences in eq. 2 (and for α diagnostics)", lo=2,
                            hi=1000, valid="an integer in [2, 1000]")
    # --- evaluation and runtime
    ece_bins: int = key(15, "bins of the expected calibration error", lo=1, hi=10000,
                        valid="an integer in [1, 10000]")
    eval_batch_size: int = key(4096, "inference batch size (results do not depend on it)", lo=1,
                               valid="an integer >= 1", runtime=True)
    device: str = key("auto", "torch device", valid="auto, cpu, cuda, cuda:N", runtime=True,
                      workflow=True)
    # --- GPU use (asknlearn/accel.py; CUDA only, the CPU path is unchanged)
    precision: str = key("fp32", "fp32, or bf16 autocast with fp32 optimizer state (CUDA only; "
                         "refused on the CPU)", choices=("fp32", "bf16"))
    deterministic: bool = key(True, "CUDA: cuDNN deterministic + deterministic algorithms; off: "
                              "cudnn.benchmark (faster, not reproducible)")
    compile: str = key("off", "off | graph (CUDA-graph the training step) | compile "
                       "(torch.compile reduce-overhead)", choices=("off", "graph", "compile"))
    threads: int | None = key(None, "torch CPU threads (None: torch's default)", lo=1, hi=4096,
                              valid="an integer in [1, 4096]", runtime=True, workflow=True)
    data_root: str | None = key(None, "torchvision root (None: $ASKNLEARN_DATA or ./data)",
                                runtime=True, workflow=True)
    download: bool = key(True, "let torchvision fetch missing files where the network allows",
                         runtime=True)
    # --- tracking
    tracking: bool = key(True, "log to MLflow when a tracking URI is configured", runtime=True,
                         workflow=True)
    tracking_uri: str | None = key(None, "MLflow tracking URI (None: $MLFLOW_TRACKING_URI; "
                                         "neither: no MLflow)", runtime=True, workflow=True)
    experiment: str | None = key(None, "MLflow experiment (None: the study name)",
                                 valid="a non-empty name without control characters or both "
                                       "quote characters", runtime=True, workflow=True)
    # --- your own datasets
    custom_datasets: dict[str, dict[str, Any]] = key(
        help="your own datasets, {name: {path, format, num_classes}}: path = a .npz/.pt file "
             "with x_train, y_train, x_test, y_test or an ImageFolder tree (train/, test/); "
             "format (npz, pt, imagefolder) and num_classes (K) default to the path's and the "
             "largest label + 1; `dataset` may then name them (docs/api.md)",
        default_factory=dict)
    # --- extra named strategies
    strategies: dict[str, dict[str, str]] = key(
        help="extra named strategies, {name: {loss, pseudo_labels, selector, network}} (a YAML "
             "mapping, or JSON on the command line)", default_factory=dict)

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
        info = dataset_info(self.dataset, self.custom_datasets)
        model = self.model or info.default_model
        stochastic = self.network == "stochastic" or self.spec.stochastic
        factory = is_model_factory(model)
        # your own factory: the package sets its dropout rate only when it takes a `dropout`
        # argument; otherwise the network's own layers are used as they are (dropout None)
        takes_rate = not factory or _factory_takes_dropout(model)
        if factory and not takes_rate and self.dropout is not None:
            raise ConfigError(f"dropout={self.dropout!r} is not valid for model={model!r}, whose "
                              "factory takes no dropout argument; valid: null (the network's "
                              "own dropout layers), or a factory taking dropout")
        default_rate = DEFAULT_DROPOUT.get(model, CUSTOM_MODEL_DROPOUT)
        rate = self.dropout if self.dropout is not None else default_rate

        def given(name: str, fallback: Any) -> Any:
            v = getattr(self, name)
            return fallback if v is None else v

        out = dataclasses.replace(
            self,
            seed_size=given("seed_size", info.seed_size),
            query_size=given("query_size", info.query_size),
            budget=given("budget", info.budget),
            model=model,
            dropout=(rate if stochastic else 0.0) if takes_rate else None,
            aug_shift=given("aug_shift", info.aug_shift),
            aug_flip=given("aug_flip", info.aug_flip),
            experiment=self.experiment or self.study,
            # only the cell's own definition: adding a strategy to a study changes no cell
            strategies={k: v for k, v in self.strategies.items() if k == self.strategy},
            # the cell's own dataset only, its path absolute: config.yaml says what was read
            custom_datasets={k: {**v, "path": os.path.abspath(os.path.expanduser(v["path"]))}
                             for k, v in self.custom_datasets.items() if k == self.dataset},
        )
        validate(out)  # the per-dataset sizes against each other (budget a multiple of b)
        if factory:
            from asknlearn.models import check_factory_model

            check_factory_model(model, info.shape, info.num_classes, out.dropout, stochastic,
                                self.strategy)
            return out
        hw = MODELS[out.model].input_hw
        if hw is not None and info.shape[1:] != hw:
            valid = ", ".join(m for m, i in MODELS.items() if i.input_hw in (None, info.shape[1:]))
            raise ConfigError(f"model={out.model!r} expects {hw[0]}x{hw[1]} images but dataset "
                              f"{self.dataset!r} has {info.shape[1]}x{info.shape[2]}; valid: {valid}")
        if stochastic and out.dropout is not None and out.dropout <= 0:
            raise ConfigError(f"dropout={out.dropout!r}: strategy {self.strategy!r} runs on the "
                              "stochastic network, which needs a rate; valid: a rate in (0, 1)")
        return out

    def chosen_defaults(self) -> dict[str, Any]:
        """The per-dataset defaults :meth:`resolve` fills in for keys left unset (None)."""
        resolved = self.resolve()
        return {k: getattr(resolved, k) for k in ("seed_size", "query_size", "budget", "model",
                                                   "aug_shift", "aug_flip")
                if getattr(self, k) is None}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cell_id(self) -> str:
        """``study/dataset/strategy/seedN/noiseR`` with the exact noise rate (never rounded)."""
        from asknlearn.naming import noise_token

        return f"{self.study}/{self.dataset}/{self.strategy}/seed{self.seed}/noise{noise_token(self.noise)}"


# the stochastic-layer rate given to a user's factory that takes `dropout` (as the MLP's)
CUSTOM_MODEL_DROPOUT = 0.5


def _factory_takes_dropout(name: str) -> bool:
    """Whether model factory ``name`` takes a ``dropout`` argument (imports it: the user's own
    config names it, so this is the user's code)."""
    from asknlearn.models import factory_takes_dropout

    return factory_takes_dropout(name)


_FIELDS = {f.name: f for f in fields(ExperimentConfig)}
_HINTS = typing.get_type_hints(ExperimentConfig)
# keys that do not change what a cell computes: a resume may change them (not in its identity)
RUNTIME_KEYS = frozenset(k for k, f in _FIELDS.items() if f.metadata["runtime"])
# keys the workflow sets per cell or per machine: its `experiment:` mapping may not set them
WORKFLOW_KEYS = frozenset(k for k, f in _FIELDS.items() if f.metadata["workflow"])


# ---------------------------------------------------------------------------- types
def _base_type(name: str) -> tuple[type, bool]:
    """(the non-None type of key ``name``, whether None is allowed), from its type hint."""
    hint = _HINTS[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    base = next(a for a in args if a is not type(None))
    return typing.get_origin(base) or base, type(None) in args


def _type_name(name: str) -> str:
    base, optional = _base_type(name)
    return base.__name__ + (" or null" if optional else "")


def _fits(value: Any) -> Any:
    """An int/float small enough for the C code it reaches (torch, numpy), else ValueError."""
    if isinstance(value, int) and abs(value) >= 2**63:
        raise ValueError
    return value


def coerce(name: str, value: Any) -> Any:
    """The value of key ``name`` given as ``value`` (from YAML, a CLI flag, a Snakemake
    ``--config`` string), converted to the key's declared type, or a ConfigError naming the
    valid form. The one conversion every entry point uses, so the values checked before a
    workflow runs are exactly the values its jobs get."""
    f = _FIELDS[name]
    base, optional = _base_type(name)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("null", "none")):
        if optional:
            return None
        raise ConfigError(f"{name}=None is not allowed; valid: a value of type {_type_name(name)}")
    try:
        if isinstance(value, (list, tuple, set)) or (isinstance(value, dict) and base is not dict):
            raise ValueError
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return _fits(int(value))
            return _fits(int(str(value), 10))
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            v = float(value)
            if math.isnan(v):
                raise ValueError
            return v
        if base is bool:
            if isinstance(value, bool):
                return value
            s = str(value).lower()
            if s in ("true", "1", "yes", "on"):
                return True
            if s in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is str:
            return str(value)
        if base is dict:
            if isinstance(value, str):  # JSON (or YAML flow style) from a command line
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError
            mapping = value
    except (ValueError, TypeError, OverflowError, yaml.YAMLError):
        raise ConfigError(
            f"{name}={value!r} is not valid; valid: a value of type {_type_name(name)}"
            + (f" ({f.metadata['valid']})" if f.metadata["valid"] and base is not dict else "")
        ) from None
    if base is dict:  # outside the try: its own message names the bad key
        return string_keys(mapping, name)
    raise AssertionError(f"no coercion for {name}: {base}")  # a new field type needs one here


def string_keys(value: Any, where: str) -> Any:
    """``value`` with every mapping key checked to be a string (YAML allows any)."""
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{where}: key {bad[0]!r} is not valid; valid: string keys")
        return {k: string_keys(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [string_keys(v, where) for v in value]
    return value


def flag_value(value: Any) -> str:
    """The command-line spelling of a coerced value that :func:`coerce` reads back unchanged:
    ``40`` (never ``40.0``), the shortest exact float, ``true``/``false``, ``null``, JSON."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


# ---------------------------------------------------------------------------- checks
def _name_problem(name: str) -> bool:
    """Whether a study/experiment name would break a path, a log line or an MLflow filter
    (which can quote a name with ' or ", not one holding both)."""
    return (name == "" or any(ord(c) < 32 or ord(c) == 127 for c in name)
            or ("'" in name and '"' in name))


def validate(cfg: ExperimentConfig) -> None:
    """Range and consistency checks that need no data on disk, from each key's declaration."""

    def need(ok: bool, name: str, valid: str, names: Any = ()) -> None:
        if not ok:
            v = getattr(cfg, name)
            raise ConfigError(f"{name}={v!r} is not valid{did_you_mean(v, names)}; valid: {valid}")

    check_custom_datasets(cfg.custom_datasets)
    dataset_info(cfg.dataset, cfg.custom_datasets)
    resolve_strategy(cfg.strategy, cfg.strategies)
    for name, f in _FIELDS.items():  # string keys declared by a pattern
        v = getattr(cfg, name)
        need(f.metadata["pattern"] is None or v is None or bool(re.match(f.metadata["pattern"], v)),
             name, f.metadata["valid"], MODELS if name == "model" else ())
    for name, f in _FIELDS.items():
        v, m = getattr(cfg, name), f.metadata
        if v is None:
            continue
        if m["choices"] is not None:
            need(v in m["choices"], name, ", ".join(m["choices"]), m["choices"])
        lo, hi = m["lo"], m["hi"]
        if lo is not None or hi is not None:
            ok = math.isfinite(v)
            if lo is not None:
                ok = ok and (v > lo if m["lo_open"] else v >= lo)
            if hi is not None:
                ok = ok and (v < hi if m["hi_open"] else v <= hi)
            need(ok, name, m["valid"])
    if cfg.budget is not None and cfg.query_size is not None:
        need(cfg.budget % cfg.query_size == 0, "budget",
             f"a positive multiple of query_size={cfg.query_size}")
    dev = cfg.device
    need(dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit()),
         "device", _FIELDS["device"].metadata["valid"])
    need(not _name_problem(cfg.study) and "/" not in cfg.study, "study",
         _FIELDS["study"].metadata["valid"])
    need(cfg.experiment is None or not _name_problem(cfg.experiment), "experiment",
         _FIELDS["experiment"].metadata["valid"])


def check_pool_size(cfg: ExperimentConfig, pool_size: int) -> None:
    """The budget must fit in the pool: |S| + B + val ≤ N."""
    need = cfg.seed_size + cfg.budget + cfg.val_size
    if need > pool_size:
        raise ConfigError(
            f"budget={cfg.budget} (+ seed_size={cfg.seed_size} + val_size={cfg.val_size}) "
            f"needs {need} labels but dataset {cfg.dataset!r} has a pool of {pool_size}; "
            f"valid: budget <= {pool_size - cfg.seed_size - cfg.val_size}"
        )


# ---------------------------------------------------------------------------- mappings
def coerce_mapping(values: Any, where: str = "config") -> dict[str, Any]:
    """Check the keys of ``values`` and coerce each value (:func:`coerce`). A ``version`` key,
    as in a cell's own ``config.yaml``, is checked against this package and dropped."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must hold a mapping of keys to values; got {values!r}")
    bad = [k for k in values if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"{where}: key {bad[0]!r} is not valid; valid: string keys "
                          f"({', '.join(_FIELDS)})")
    values = dict(values)
    if "version" in values:
        version = values.pop("version")
        if str(version) != __version__:
            raise ConfigError(
                f"version={version!r} is not valid; valid: {__version__!r}, the version of this "
                "asknlearn (the config was written by another one: remove the key to run it "
                "with this version)")
    check_keys(values, _FIELDS, "config key")
    return {k: coerce(k, v) for k, v in values.items()}


def check_keys(values: dict[str, Any], valid: Any, kind: str) -> None:
    """Every key of ``values`` is one of ``valid``; else one line naming the first unknown one,
    the nearest valid ones and all valid ones (never a dump of the schema)."""
    bad = sorted(set(values) - set(valid))
    if bad:
        raise ConfigError(f"unknown {kind} {bad[0]!r}{did_you_mean(bad[0], valid)}; valid: "
                          f"{', '.join(valid)}")


def check_workflow_keys(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """The workflow config's top-level keys are the schema's: a misspelled one (``sedes:``) is
    one line with a "did you mean", before the schema validation would print the schema."""
    check_keys(config, schema["properties"], "top-level config key")


def from_mapping(values: dict[str, Any], base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Override ``base`` (defaults) with ``values``; unknown keys are errors."""
    return dataclasses.replace(base or ExperimentConfig(), **coerce_mapping(values))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file ``path``, or a ConfigError saying why it is not one."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist; valid: a path to a YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(p)!r} is not UTF-8 text (byte {exc.start}); "
                          "valid: a UTF-8 YAML file") from None
    except yaml.YAMLError as exc:
        first = " ".join(str(exc).split())
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of keys to values")
    return data


# ---------------------------------------------------------------------------- generated views
def _default_text(name: str) -> str:
    f = _FIELDS[name]
    if f.default_factory is not _MISSING:
        return flag_value(f.default_factory())
    return flag_value(f.default)


def dataset_defaults_text() -> str:
    """The per-dataset defaults, one clause per dataset (for help texts)."""
    return "; ".join(f"{n}: seed_size={d.seed_size} query_size={d.query_size} budget={d.budget} "
                     f"model={d.default_model} aug_shift={d.aug_shift} aug_flip="
                     f"{flag_value(d.aug_flip)}" for n, d in DATASETS.items())


def add_config_arguments(parser: Any) -> None:
    """One ``--flag`` per config key on ``parser`` (``--query-size`` sets ``query_size``), with
    its meaning, valid values and default as help. Values stay strings: :func:`coerce` gives
    the one clear message for a bad one."""
    groups = {
        False: parser.add_argument_group(
            "experiment keys", "what the cell computes (also keys of a --config YAML). Keys "
            f"left unset take per-dataset defaults: {dataset_defaults_text()}"),
        True: parser.add_argument_group(
            "runtime keys", "how and where it runs; a resume may change them"),
    }
    for name, f in _FIELDS.items():
        m = f.metadata
        valid = m["valid"] or (", ".join(m["choices"]) if m["choices"] else _type_name(name))
        groups[m["runtime"]].add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=None, metavar=name.upper(),
            help=f"{m['help']}. Valid: {valid}. Default: {_default_text(name)}".replace("%", "%%"))


def experiment_schema() -> dict[str, Any]:
    """The JSON-schema ``properties`` of the workflow's ``experiment`` mapping: every key the
    workflow lets a study set, with its type, range, choices and meaning. Written into
    workflow/schemas/config.schema.yaml by :func:`write_schema`; tests/test_config.py checks
    the file agrees. No ``default``: Snakemake would fill defaults in, and the package does."""
    json_types = {int: "integer", float: "number", bool: "boolean", str: "string", dict: "object"}
    props: dict[str, Any] = {}
    for name, f in _FIELDS.items():
        m = f.metadata
        if m["workflow"]:
            continue
        base, optional = _base_type(name)
        prop: dict[str, Any] = {"type": [json_types[base], "null"] if optional else json_types[base]}
        if m["schema_pattern"] is not None:
            prop["pattern"] = m["schema_pattern"]
        if m["choices"] is not None:
            prop["enum"] = [*m["choices"], *([None] if optional else [])]
        for bound, open_, word in (("lo", "lo_open", "minimum"), ("hi", "hi_open", "maximum")):
            if m[bound] is not None:
                prop[f"exclusive{word.capitalize()}" if m[open_] else word] = m[bound]
        prop["description"] = f"{m['help']}. Default: {_default_text(name)}"
        props[name] = prop
    return props


def write_schema(path: str | Path | None = None) -> None:
    """Rewrite the ``experiment`` properties of the workflow schema from the declarations."""
    p = Path(path) if path else Path(__file__).resolve().parents[1] / "workflow" / "schemas" / \
        "config.schema.yaml"
    text = p.read_text()
    begin, end = "# BEGIN generated", "# END generated"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    indent = head.rsplit("\n", 1)[1]
    body = yaml.safe_dump(experiment_schema(), sort_keys=False, allow_unicode=True, width=96)
    block = "".join(f"{indent}  {line}\n" for line in body.splitlines())
    p.write_text(f"{head}{begin} by asknlearn.config.write_schema(): edit config.py, not this\n"
                 f"{indent}properties:\n{block}{indent}{end}{tail}")


def custom_strategies(path: str | Path) -> dict[str, dict]:
    """The strategy definitions of a config file: a run config's ``strategies:`` mapping, or a
    workflow config's ``experiment.strategies`` and ``overrides.<dataset>.strategies``."""
    from asknlearn.strategies import strategy_table

    data = load_yaml(path)
    if isinstance(data.get("strategies"), dict) or "experiment" not in data:
        found = coerce_mapping(data, f"config file {str(path)!r}").get("strategies", {})
    else:
        found = {}
        blocks = [("experiment", data["experiment"]),
                  *((f"overrides.{d}", m) for d, m in (data.get("overrides") or {}).items())]
        for where, block in blocks:
            if isinstance(block, dict) and "strategies" in block:
                found.update(coerce("strategies", string_keys(block["strategies"], where)))
    strategy_table(found)  # each definition checked
    return found


def tracking_warning(cfg: ExperimentConfig, explicit: bool) -> str | None:
    """The warning to print once when tracking was asked for (``explicit``: the user set
    ``tracking``) but no URI says where to log."""
    if explicit and cfg.tracking and not (cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
        return ("warning: tracking=true but no tracking URI is configured (--tracking-uri or "
                "$MLFLOW_TRACKING_URI): nothing will be logged to MLflow")
    return None


if __name__ == "__main__":  # python -m asknlearn.config, kept for one release: asknlearn config --schema
    write_schema()
