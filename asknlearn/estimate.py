"""What a study will cost before it runs: ``asknlearn estimate --configfile CONFIG [--gpus N]``.

The estimate has three parts.

1. **Measured rates** on this machine's device (``--device``, default: CUDA when there is
   one): a few timed training steps of each (model, loss) the studies use, at the protocol's
   batch size, on synthetic tensors of the dataset's shape (no data is downloaded); a timed
   batched forward pass (pool inference and test evaluation); and one timed k-means++
   selection (BADGE, Ask-n-Learn), extrapolated linearly in pool size × b where it was
   measured on a smaller problem (an upper bound: the pruned seeding scales better).
2. **The label schedule** of each cell (paper section 4.1): round r trains from scratch on
   |L_r| = seed_size + r·b labels, so training cost grows with r; rounds r ≥ 1 first run
   inference over the remaining pool (and, for Ask-n-Learn's refined pseudo-labels, k_aug
   augmented passes, counted over the whole pool: an upper bound) and the selector.
3. **One stated assumption**: every round trains for E epochs, E = ``resources.al.
   estimate_epochs`` in the config (default 30, capped at ``max_epochs``), overridable with
   ``--epochs-per-round``. The package trains until 99 % running training accuracy, which
   cannot be known before the run; compare a finished cell's ``train_epochs`` column with E
   and rerun the estimate with the measured mean to correct it.

A cell's time is the sum over its rounds (:func:`cell_seconds`); a study's device-hours are
the sum over its cells (dataset × strategy × seed × noise), and its wall time on N devices is
the makespan of its cells scheduled longest first on N slots (:func:`makespan`). Packing
several cells onto one GPU (``cells_per_gpu``) is *not* credited: the wall time printed is
that of one cell per GPU; ``benchmarks/bench_gpu.py`` measures what packing gains.

The config is read as the workflow reads it: ``config/config.yaml`` with each ``--configfile``
merged over it, validated against ``workflow/schemas/config.schema.yaml`` (defaults filled).
"""

from __future__ import annotations

import argparse
import copy
import heapq
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from asknlearn.errors import ConfigError

EPOCHS_PER_ROUND_DEFAULT = 30
REPO = Path(__file__).resolve().parents[1]
BASE_CONFIG = REPO / "config" / "config.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


# ---------------------------------------------------------------------------- the config
def load_workflow_config(configfiles: Sequence[str | Path], base: str | Path | None = None) -> dict:
    """The workflow's config: ``base`` (config/config.yaml) with ``configfiles`` merged over
    it in order, as Snakemake merges ``--configfile``, then schema-validated with defaults."""
    from snakemake.utils import update_config

    from asknlearn.config import load_yaml

    base = Path(base) if base is not None else BASE_CONFIG
    if not base.is_file() or not SCHEMA.is_file():
        raise ConfigError(f"base config {str(base)!r} or schema {str(SCHEMA)!r} not found; valid: "
                          "run from a clone of the repository (the estimate reads the workflow's config)")
    cfg = load_yaml(base)
    for path in configfiles:
        update_config(cfg, load_yaml(path))
    validate_workflow_config(cfg)
    return cfg


def validate_workflow_config(cfg: dict) -> None:
    """Schema validation with defaults filled in, as ``workflow/rules/common.smk`` does."""
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    try:
        validate(cfg, str(SCHEMA))
    except WorkflowError as exc:
        first = str(exc).strip().splitlines()
        raise ConfigError(f"config does not match {SCHEMA.name}: "
                          f"{first[1] if len(first) > 1 else first[0]}") from None


def split_sizes(cell) -> tuple[int, int]:
    """(train pool, test set) sizes of the resolved cell's dataset, from its entry (your own
    data: read from its file when the cell was resolved), so nothing is loaded."""
    from asknlearn.userdata import dataset_info

    n_pool, n_test = dataset_info(cell.dataset, cell.custom_datasets).sizes
    if n_pool < 1 or n_test < 1:
        raise ConfigError(f"dataset {cell.dataset!r} declares no split sizes, so its cost cannot "
                          "be estimated; valid: a DatasetInfo entry with sizes=(train pool, test "
                          "set) in asknlearn/catalogue.py")
    return n_pool, n_test


def study_cells(cfg: dict) -> list[tuple[Any, int]]:
    """(resolved ExperimentConfig of one dataset × strategy, number of cells like it) per
    pair: seeds and noise levels cost the same, so they only multiply."""
    from asknlearn.config import from_mapping

    out = []
    for ds in cfg["datasets"]:
        values = {**cfg["experiment"], **cfg["overrides"].get(ds, {})}
        for strat in cfg["strategies"]:
            cell = from_mapping({**values, "dataset": ds, "strategy": strat, "study": cfg["study"],
                                 "tracking": False}).resolve()
            out.append((cell, len(cfg["seeds"]) * len(cfg["noise"])))
    return out


# ---------------------------------------------------------------------------- the formula
@dataclass(frozen=True)
class Rates:
    """Measured speeds of one (dataset, model, loss) on one device."""

    train_samples_per_s: float  # training samples per second at the protocol's batch size
    infer_samples_per_s: float  # forward-only samples per second (eval mode)
    select_seconds: float  # one selection at the first round's pool size (0: none)
    select_pool: int  # the pool size select_seconds is for


def schedule(seed_size: int, query_size: int, budget: int) -> list[int]:
    """|L_r| for r = 0..R, R = budget / query_size: seed set, then b labels a round."""
    return [seed_size + r * query_size for r in range(budget // query_size + 1)]


def cell_seconds(cfg, n_pool: int, n_test: int, rates: Rates, epochs_per_round: float) -> dict[str, float]:
    """Expected seconds of one cell, by part, from the label schedule and measured rates.

    train     Σ_r E·|L_r| / train rate, E = min(epochs_per_round, max_epochs)
    evaluate  (R+1)·(n_test + val_size) / inference rate
    inference Σ_{r≥1} |U_r|·(1 + k_aug if refined pseudo-labels) / inference rate, over the
              pool still unlabelled, |U_r| = n_pool − val_size − |L_{r−1}|, for selectors that
              read model outputs
    select    Σ_{r≥1} selection time scaled linearly in |U_r| from the measured one
    """
    spec = cfg.spec
    from asknlearn.catalogue import SELECTORS

    needs = SELECTORS[spec.selector].needs
    sizes = schedule(cfg.seed_size, cfg.query_size, cfg.budget)
    e = min(float(epochs_per_round), float(cfg.max_epochs))
    train = sum(e * n for n in sizes) / rates.train_samples_per_s
    evaluate = len(sizes) * (n_test + cfg.val_size) / rates.infer_samples_per_s
    passes = (1 + cfg.k_aug) if ("pseudo_labels" in needs and spec.pseudo_labels == "refine") else 1
    pools = [n_pool - cfg.val_size - n for n in sizes[:-1]]
    inference = sum(passes * u for u in pools) / rates.infer_samples_per_s if needs else 0.0
    select = (sum(rates.select_seconds * u / rates.select_pool for u in pools)
              if rates.select_seconds else 0.0)
    parts = {"train": train, "evaluate": evaluate, "inference": inference, "select": select}
    parts["total"] = sum(parts.values())
    return parts


def makespan(durations: Sequence[float], slots: int) -> float:
    """Wall time of independent jobs on ``slots`` parallel slots, longest job first to the
    least loaded slot (what a scheduler with enough queue achieves, within 4/3 of optimal)."""
    if slots < 1:
        raise ConfigError(f"slots={slots} is not valid; valid: an integer >= 1")
    loads = [0.0] * slots
    for d in sorted(durations, reverse=True):
        heapq.heapreplace(loads, loads[0] + d)
    return max(loads)


# ---------------------------------------------------------------------------- measurement
def _timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Seconds per call: the mean of ``repeats`` calls after the device is drained."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t0) / repeats


class RateMeter:
    """Measures and caches :class:`Rates` per (dataset shape, model, loss) on one device."""

    def __init__(self, device: torch.device, steps: int = 5, warmup: int = 2):
        self.device, self.steps, self.warmup = device, steps, warmup
        self._cache: dict[tuple, Any] = {}
        self._feat: dict[tuple, int] = {}

    def _model(self, cfg):
        from asknlearn.data import dataset_info
        from asknlearn.models import build_model

        info = dataset_info(cfg.dataset, cfg.custom_datasets)
        torch.manual_seed(0)
        return build_model(cfg.model, info.shape, info.num_classes, cfg.dropout).to(self.device), info

    def _feat_dim(self, cfg) -> int:
        """The size of the features z of the cell's network (what k-means++ reads)."""
        key = (cfg.dataset, cfg.model)
        if key not in self._feat:
            self._feat[key] = self._model(cfg)[0].feat_dim
        return self._feat[key]

    def train_rate(self, cfg) -> float:
        from asknlearn.accel import TrainStep, configure, to_channels_last
        from asknlearn.losses import build_loss

        prec = getattr(cfg, "precision", "fp32")
        mode = getattr(cfg, "compile", "off")
        key = ("train", cfg.dataset, cfg.model, cfg.spec.loss, cfg.train_batch_size, prec, mode)
        if key not in self._cache:
            configure(self.device, getattr(cfg, "deterministic", True))
            model, info = self._model(cfg)
            cl = to_channels_last(model, self.device)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            step = TrainStep(model, opt, build_loss(cfg.spec.loss, cfg.lwcc_lambda, cfg.vwcc_samples),
                             batch_size=cfg.train_batch_size, device=self.device, precision=prec,
                             mode=mode)
            g = torch.Generator().manual_seed(0)
            x = torch.randn(cfg.train_batch_size, *info.shape, generator=g).to(self.device)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, info.num_classes, (cfg.train_batch_size,), generator=g).to(self.device)
            _timed(lambda: step(x, y), self.device, self.warmup)
            self._cache[key] = cfg.train_batch_size / _timed(lambda: step(x, y), self.device, self.steps)
        return self._cache[key]

    def infer_rate(self, cfg) -> float:
        from asknlearn.inference import predict

        # a few thousand rows are enough for a rate; the eval batch size is the cell's
        rows = min(cfg.eval_batch_size, 1024 if self.device.type == "cpu" else 8192)
        key = ("infer", cfg.dataset, cfg.model, rows)
        if key not in self._cache:
            model, info = self._model(cfg)
            x = torch.randn(rows, *info.shape, generator=torch.Generator().manual_seed(0)).to(self.device)
            _timed(lambda: predict(model, x, cfg.eval_batch_size, features=True), self.device, 1)
            self._cache[key] = rows / _timed(lambda: predict(model, x, cfg.eval_batch_size, features=True),
                                             self.device, max(1, self.steps // 2))
        return self._cache[key]

    def select_time(self, cfg, pool: int) -> tuple[float, int]:
        """(seconds, pool size) of one selection; k-means++ on a capped problem, scaled to
        ``pool`` and b linearly. Top-k selectors and random cost ~0 and are not timed."""
        from asknlearn.catalogue import SELECTORS
        from asknlearn.kmeanspp import embedding_factors, kmeanspp_factored

        if "features" not in SELECTORS[cfg.spec.selector].needs:
            return 0.0, pool
        feat = self._feat_dim(cfg)
        cap_n, cap_b = (pool, cfg.query_size) if self.device.type == "cuda" else (5000, 100)
        n, b = min(pool, cap_n), min(cfg.query_size, cap_b, pool)
        key = ("select", feat, n, b)
        if key not in self._cache:
            g = torch.Generator().manual_seed(0)
            probs = torch.softmax(3 * torch.randn(n, 10, generator=g), 1).to(self.device)
            z = torch.relu(torch.randn(n, feat, generator=g)).to(self.device)
            u = embedding_factors(probs, probs.argmax(1))
            self._cache[key] = _timed(
                lambda: kmeanspp_factored(u, z, b, torch.Generator().manual_seed(1)), self.device, 1)
        return self._cache[key] * (pool * cfg.query_size) / (n * b), pool

    def rates(self, cfg, n_pool: int) -> Rates:
        pool1 = n_pool - cfg.val_size - cfg.seed_size
        sel, at = self.select_time(cfg, pool1)
        return Rates(self.train_rate(cfg), self.infer_rate(cfg), sel, at)


# ---------------------------------------------------------------------------- the studies
@dataclass
class StudyEstimate:
    study: str
    cells: int
    rounds: int
    seconds: dict[str, float]  # summed over cells, by part
    device_hours: float
    wall_hours: float  # on `slots` devices, one cell per device


def estimate_study(cfg: dict, meter: RateMeter, slots: int, epochs_per_round: float | None = None,
                   log: Callable[[str], None] = lambda s: None) -> StudyEstimate:
    """Expected cost of one study config (see the module docstring for the formula)."""
    e = epochs_per_round if epochs_per_round is not None else cfg["resources"]["al"].get(
        "estimate_epochs", EPOCHS_PER_ROUND_DEFAULT)
    totals = {"train": 0.0, "evaluate": 0.0, "inference": 0.0, "select": 0.0, "total": 0.0}
    durations: list[float] = []
    rounds = 0
    for cell, count in study_cells(cfg):
        n_pool, n_test = split_sizes(cell)
        from asknlearn.config import check_pool_size

        check_pool_size(cell, n_pool)
        log(f"  measuring {cell.dataset} {cell.model} loss={cell.spec.loss} "
            f"selector={cell.spec.selector} on {meter.device}")
        part = cell_seconds(cell, n_pool, n_test, meter.rates(cell, n_pool), e)
        for k, v in part.items():
            totals[k] += count * v
        durations += [part["total"]] * count
        rounds = max(rounds, cell.rounds)
    return StudyEstimate(cfg["study"], len(durations), rounds, totals, totals["total"] / 3600,
                         makespan(durations, slots) / 3600)


def _hours(h: float) -> str:
    return f"{h:.3g}" if h < 100 else f"{h:.0f}"


def format_table(rows: list[StudyEstimate], unit: str, slots: int) -> str:
    head = (f"{'study':<22} {'cells':>5} {'rounds':>6} {'train h':>8} {'infer h':>8} "
            f"{'select h':>8} {unit + '-h':>8} {f'wall h ({slots})':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        s = {k: v / 3600 for k, v in r.seconds.items()}
        lines.append(f"{r.study:<22} {r.cells:>5} {r.rounds:>6} {_hours(s['train']):>8} "
                     f"{_hours(s['evaluate'] + s['inference']):>8} {_hours(s['select']):>8} "
                     f"{_hours(r.device_hours):>8} {_hours(r.wall_hours):>12}")
    if len(rows) > 1:
        lines.append(f"{'total':<22} {sum(r.cells for r in rows):>5} {'':>6} {'':>8} {'':>8} {'':>8} "
                     f"{_hours(sum(r.device_hours for r in rows)):>8} "
                     f"{_hours(sum(r.wall_hours for r in rows)):>12}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the command
def _positive(name: str, value: str, kind: type) -> Any:
    try:
        v = kind(value)
        ok = math.isfinite(v) and v > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        what = "an integer >= 1" if kind is int else "a number > 0"
        raise ConfigError(f"{name}={value!r} is not valid; valid: {what}")
    return v


def main(args: argparse.Namespace) -> int:
    """``asknlearn estimate`` (flags in asknlearn/cli.py)."""
    from asknlearn.loop import resolve_device
    from asknlearn.records import atomic_write

    gpus = _positive("--gpus", args.gpus, int)
    steps = _positive("--steps", args.steps, int)
    epochs = None if args.epochs_per_round is None else _positive(
        "--epochs-per-round", args.epochs_per_round, float)
    device = resolve_device(args.device)
    configs = [load_workflow_config([path]) for path in args.configfile]
    if device.type == "cpu":
        threads = max(c["resources"]["al"]["threads"] for c in configs)
        torch.set_num_threads(threads)
        unit = "CPU"
        print(f"asknlearn estimate: no GPU used (device cpu, {threads} torch thread(s) per cell): "
              f"these are CPU hours; wall time assumes {gpus} cell(s) at once", flush=True)
    else:
        unit = "GPU"
        print(f"asknlearn estimate: device {device} ({torch.cuda.get_device_name(device)}); "
              f"wall time on {gpus} GPU(s), one cell per GPU", flush=True)
    meter = RateMeter(device, steps=steps)
    rows = [estimate_study(copy.deepcopy(c), meter, gpus, epochs, log=print) for c in configs]
    e_used = {r.study: (epochs if epochs is not None else c["resources"]["al"].get(
        "estimate_epochs", EPOCHS_PER_ROUND_DEFAULT)) for r, c in zip(rows, configs, strict=True)}
    print(format_table(rows, unit, gpus))
    print(f"assumption: every round trains for E epochs (capped at max_epochs), E = "
          f"{', '.join(f'{s}: {e:g}' for s, e in e_used.items())} (resources.al.estimate_epochs or "
          "--epochs-per-round); training time is linear in E. Inference for refined pseudo-labels "
          "and k-means++ extrapolated from a smaller problem are upper bounds.")
    if args.json:
        doc = {"device": str(device), "unit": unit, "gpus": gpus, "epochs_per_round": e_used,
               "rates": {"|".join(map(str, k)): v for k, v in meter._cache.items()},
               "studies": [asdict(r) for r in rows]}
        atomic_write(Path(args.json), lambda p: Path(p).write_text(json.dumps(doc, indent=2) + "\n"))
    return 0
