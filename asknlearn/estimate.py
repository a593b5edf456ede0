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
3. **Epochs per round**, learned where it can be: the package trains until 99 % running
   training accuracy, which cannot be known before a run, so the estimate reads the finished
   rounds (``rounds.csv`` rows) of cells already in a results folder (``--results``, default
   ``results/``: every ``<study>/runs/**/rounds.csv`` with its ``config.yaml``) and, for each
   cell to estimate, uses the rounds of the same dataset, model, stochastic-layer rate and loss
   (:func:`learn_from_results`): E(|L|) is the mean ``train_epochs`` at each label count seen,
   interpolated between them and extended beyond the largest by the least-squares slope
   (:meth:`Learned.epochs_at`). Where those cells ran with the same batch size, precision,
   compile mode and threads, and the estimate is on the CPU, their seconds per sample-epoch
   (Σ train_seconds / Σ E·|L|) replace the timed training steps. Where no such cell exists,
   the stated assumption is used: every round trains for E epochs, E =
   ``resources.al.estimate_epochs`` (default 30), capped at ``max_epochs``. ``--epochs-per-round``
   overrides both. The command prints which source each (dataset, model, loss) used.

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
import dataclasses
import heapq
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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


def cell_seconds(cfg, n_pool: int, n_test: int, rates: Rates,
                 epochs_per_round: float | Sequence[float]) -> dict[str, float]:
    """Expected seconds of one cell, by part, from the label schedule and measured rates.

    train     Σ_r E_r·|L_r| / train rate, E_r = min(epochs_per_round[r], max_epochs) (one
              number: the same E every round)
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
    per_round = ([float(epochs_per_round)] * len(sizes) if isinstance(epochs_per_round, int | float)
                 else [float(e) for e in epochs_per_round])
    if len(per_round) != len(sizes):
        raise ConfigError(f"epochs_per_round has {len(per_round)} values; valid: one, or one per "
                          f"round ({len(sizes)})")
    train = sum(min(e, float(cfg.max_epochs)) * n for e, n in zip(per_round, sizes, strict=True)
                ) / rates.train_samples_per_s
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


# ---------------------------------------------------------------------------- learned rounds
# the settings a cell's seconds per sample-epoch depend on besides its network and loss
RATE_KEYS = ("train_batch_size", "precision", "compile", "threads")


@dataclass(frozen=True)
class Learned:
    """What the finished rounds of one (dataset, model, dropout, loss) say about training.

    ``labels``/``epochs``: each label count |L| seen and the mean ``train_epochs`` of the rounds
    that trained on it; ``seconds_per_sample_epoch``: Σ train_seconds / Σ E·|L| over those
    rounds, or None where the cells disagree on :data:`RATE_KEYS` or recorded no seconds."""

    labels: tuple[int, ...]
    epochs: tuple[float, ...]
    rounds: int
    cells: int
    seconds_per_sample_epoch: float | None
    rate_settings: tuple | None  # the RATE_KEYS values the seconds were measured with
    noise: tuple[float, ...]

    def epochs_at(self, n: int) -> float:
        """E(|L| = n): linear between the label counts seen, the first value below them, and
        beyond the largest the last value extended by the least-squares slope of E on log |L|
        (epochs grow with the labels but slower than linearly: on Fashion-MNIST 14, 30, 41, 45
        at 100, 1100, 3100, 4100 labels; never a negative slope)."""
        xs, ys = self.labels, self.epochs
        if n <= xs[0]:
            return ys[0]
        for i in range(1, len(xs)):
            (x0, y0), (x1, y1) = (xs[i - 1], ys[i - 1]), (xs[i], ys[i])
            if n <= x1:
                return y0 + (y1 - y0) * (n - x0) / (x1 - x0)
        lx = [math.log(x) for x in xs]
        mx, my = sum(lx) / len(lx), sum(ys) / len(ys)
        var = sum((x - mx) ** 2 for x in lx)
        slope = max(0.0, sum((x - mx) * (y - my) for x, y in zip(lx, ys, strict=True)) / var) if var else 0.0
        return ys[-1] + slope * (math.log(n) - lx[-1])

    def describe(self) -> str:
        return (f"learned from {self.rounds} finished rounds of {self.cells} cell(s) "
                f"(|L| {self.labels[0]}-{self.labels[-1]}, noise {', '.join(f'{v:g}' for v in self.noise)})")


def cell_key(dataset: str, model: str, dropout: float | None, loss: str) -> tuple:
    """What epochs per round are learned by: the data, the network (model and its
    stochastic-layer rate: the dropout network needs ~3x the epochs) and the loss."""
    return (dataset, model, None if dropout is None else round(float(dropout), 6), loss)


def _cell_loss(doc: dict) -> str | None:
    """The loss a finished cell trained with, read as data from its ``config.yaml`` (its own
    strategies mapping, else the catalogue): nothing in a results folder is imported or run."""
    from asknlearn.catalogue import STRATEGIES

    own = doc.get("strategies") if isinstance(doc.get("strategies"), dict) else {}
    name = doc.get("strategy")
    if isinstance(own.get(name), dict) and isinstance(own[name].get("loss"), str):
        return own[name]["loss"]
    spec = STRATEGIES.get(name) if isinstance(name, str) else None
    return spec.loss if spec else None


def _rows(path: Path) -> list[tuple[int, float, float]]:
    """(|L|, train_epochs, train_seconds) of each finished round in one ``rounds.csv``; rows
    that lack or garble these columns are skipped (an older layout, a torn write)."""
    import csv

    out = []
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                n, e = int(row["labels"]), float(row["train_epochs"])
                sec = float(row.get("train_seconds") or "nan")
            except (KeyError, TypeError, ValueError):
                continue
            if n > 0 and math.isfinite(e) and e > 0:
                out.append((n, e, sec))
    return out


def learn_from_results(root: str | Path) -> dict[tuple, Learned]:
    """:class:`Learned` per :func:`cell_key` from every cell under ``root``: a results folder
    (``root/<study>/runs/...``) or one study's folder (``root/runs/...``). Only CSV and YAML
    are read (``yaml.safe_load``); a cell whose files cannot be read is skipped."""
    import yaml

    root = Path(root)
    runs = [root / "runs"] if (root / "runs").is_dir() else sorted(root.glob("*/runs"))
    found: dict[tuple, list] = {}
    for run_dir in runs:
        for csv_path in sorted(run_dir.rglob("rounds.csv")):
            conf = csv_path.with_name("config.yaml")
            try:
                doc = yaml.safe_load(conf.read_text(encoding="utf-8"))
                rows = _rows(csv_path)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if not isinstance(doc, dict) or not rows:
                continue
            loss = _cell_loss(doc)
            if loss is None or not all(isinstance(doc.get(k), str) for k in ("dataset", "model")):
                continue
            try:
                key = cell_key(doc["dataset"], doc["model"], doc.get("dropout"), loss)
            except (TypeError, ValueError):
                continue
            rate = tuple(doc.get(k) for k in RATE_KEYS)
            found.setdefault(key, []).append((rows, rate, doc.get("noise", 0.0)))
    return {key: summarise(cells) for key, cells in found.items()}


def summarise(cells: Sequence[tuple[list[tuple[int, float, float]], tuple, Any]]) -> Learned:
    """One :class:`Learned` from finished cells, each (its (|L|, train_epochs, train_seconds)
    rows, its :data:`RATE_KEYS` values, its noise level)."""
    by_n: dict[int, list[float]] = {}
    for rows, _, _ in cells:
        for n, e, _ in rows:
            by_n.setdefault(n, []).append(e)
    labels = tuple(sorted(by_n))
    rates = {rate for _, rate, _ in cells}
    timed = [(n, e, s) for rows, _, _ in cells for n, e, s in rows if math.isfinite(s) and s > 0]
    spse = (sum(s for _, _, s in timed) / sum(n * e for n, e, _ in timed)
            if len(rates) == 1 and timed else None)
    noise = tuple(sorted({float(v) for *_, v in cells if isinstance(v, int | float)}))
    return Learned(labels, tuple(sum(by_n[n]) / len(by_n[n]) for n in labels),
                   sum(len(rows) for rows, _, _ in cells), len(cells), spse,
                   next(iter(rates)) if len(rates) == 1 else None, noise)


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
    """Measures and caches :class:`Rates` per (input shape, model, dropout, loss) on one device.

    Cheap by construction: no dataset is built (synthetic tensors of the entry's shape), each
    network is built once, and on the CPU a network whose step at a small batch already takes
    long (the convolutional ones) is timed at that small batch only, its rate taken per sample
    (a CPU's cost is linear in the batch there; a slight overestimate of the time, as small
    batches use the cores less well). Small networks and GPUs are timed at the protocol's
    batch size, where a GPU's cost is not linear."""

    PROBE = 8  # samples in a CPU probe step
    SLOW = 0.05  # seconds: a probe step slower than this is not repeated at full size

    def __init__(self, device: torch.device, steps: int = 5, warmup: int = 2):
        self.device, self.steps, self.warmup = device, steps, warmup
        self._cache: dict[tuple, Any] = {}
        self._models: dict[tuple, Any] = {}

    def _model(self, cfg):
        from asknlearn.data import dataset_info
        from asknlearn.models import build_model

        info = dataset_info(cfg.dataset, cfg.custom_datasets)
        key = (tuple(info.shape), info.num_classes, cfg.model, cfg.dropout)
        if key not in self._models:
            torch.manual_seed(0)
            self._models[key] = build_model(cfg.model, info.shape, info.num_classes,
                                            cfg.dropout).to(self.device)
        return self._models[key], info

    def _feat_dim(self, cfg) -> int:
        """The size of the features z of the cell's network (what k-means++ reads)."""
        return self._model(cfg)[0].feat_dim

    def _per_sample(self, run: Callable[[int], Callable[[], object]], full: int, repeats: int) -> float:
        """Samples per second of ``run(rows)`` (a closure doing one step on ``rows`` samples):
        a CPU probe at :attr:`PROBE` rows first, at ``full`` rows only where the probe is fast."""
        if self.device.type == "cpu" and full > self.PROBE:
            probe = run(self.PROBE)
            t = _timed(probe, self.device, 1)  # the first call also warms up
            t = min(t, _timed(probe, self.device, 1))
            if t > self.SLOW:
                return self.PROBE / t
        step = run(full)
        _timed(step, self.device, self.warmup)
        return full / _timed(step, self.device, repeats)

    def train_rate(self, cfg) -> float:
        from asknlearn.accel import TrainStep, configure, to_channels_last
        from asknlearn.losses import build_loss

        prec = getattr(cfg, "precision", "fp32")
        mode = getattr(cfg, "compile", "off")
        model, info = self._model(cfg)
        key = ("train", tuple(info.shape), cfg.model, cfg.dropout, cfg.spec.loss,
               cfg.train_batch_size, prec, mode)
        if key not in self._cache:
            configure(self.device, getattr(cfg, "deterministic", True))
            cl = to_channels_last(model, self.device)
            model.train()
            opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
            loss = build_loss(cfg.spec.loss, cfg.lwcc_lambda, cfg.vwcc_samples)

            def run(rows: int) -> Callable[[], object]:
                step = TrainStep(model, opt, loss, batch_size=rows, device=self.device,
                                 precision=prec, mode=mode)
                g = torch.Generator().manual_seed(0)
                x = torch.randn(rows, *info.shape, generator=g).to(self.device)
                if cl:
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.randint(0, info.num_classes, (rows,), generator=g).to(self.device)
                return lambda: step(x, y)

            self._cache[key] = self._per_sample(run, cfg.train_batch_size, self.steps)
        return self._cache[key]

    def infer_rate(self, cfg) -> float:
        from asknlearn.inference import predict

        # a few thousand rows are enough for a rate; the eval batch size is the cell's
        rows = min(cfg.eval_batch_size, 1024 if self.device.type == "cpu" else 8192)
        model, info = self._model(cfg)
        key = ("infer", tuple(info.shape), cfg.model, cfg.dropout, rows)
        if key not in self._cache:
            model.eval()

            def run(n: int) -> Callable[[], object]:
                x = torch.randn(n, *info.shape, generator=torch.Generator().manual_seed(0)).to(self.device)
                return lambda: predict(model, x, cfg.eval_batch_size, features=True)

            self._cache[key] = self._per_sample(run, rows, max(1, self.steps // 2))
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

    def rates(self, cfg, n_pool: int, train: bool = True) -> Rates:
        """The cell's rates; ``train=False`` skips timing training (its rate is then NaN: the
        caller has it from finished cells)."""
        pool1 = n_pool - cfg.val_size - cfg.seed_size
        sel, at = self.select_time(cfg, pool1)
        return Rates(self.train_rate(cfg) if train else math.nan, self.infer_rate(cfg), sel, at)


# ---------------------------------------------------------------------------- the studies
@dataclass
class StudyEstimate:
    study: str
    cells: int
    rounds: int
    seconds: dict[str, float]  # summed over cells, by part
    device_hours: float
    wall_hours: float  # on `slots` devices, one cell per device
    sources: dict[str, str] = field(default_factory=dict)  # per network and loss: what E came from


def estimate_study(cfg: dict, meter: RateMeter, slots: int, epochs_per_round: float | None = None,
                   log: Callable[[str], None] = lambda s: None,
                   learned: dict[tuple, Learned] | None = None) -> StudyEstimate:
    """Expected cost of one study config (see the module docstring for the formula).

    ``epochs_per_round`` given: that E for every round. Else each cell's E_r comes from
    ``learned`` (:func:`learn_from_results`) when it holds the cell's :func:`cell_key`, else
    from the stated assumption; ``sources`` says which, per (dataset, model, dropout, loss)."""
    from asknlearn.config import check_pool_size

    assumed = cfg["resources"]["al"].get("estimate_epochs", EPOCHS_PER_ROUND_DEFAULT)
    totals = {"train": 0.0, "evaluate": 0.0, "inference": 0.0, "select": 0.0, "total": 0.0}
    durations: list[float] = []
    sources: dict[str, str] = {}
    rounds = 0
    for cell, count in study_cells(cfg):
        n_pool, n_test = split_sizes(cell)
        check_pool_size(cell, n_pool)
        key = cell_key(cell.dataset, cell.model, cell.dropout, cell.spec.loss)
        label = f"{cell.dataset} {cell.model} dropout={cell.dropout:g} loss={cell.spec.loss}" \
            if cell.dropout is not None else f"{cell.dataset} {cell.model} loss={cell.spec.loss}"
        hit = None if epochs_per_round is not None else (learned or {}).get(key)
        if epochs_per_round is not None:
            e: float | list[float] = epochs_per_round
            sources[label] = f"E = {epochs_per_round:g} every round (--epochs-per-round)"
        elif hit is not None:
            e = [hit.epochs_at(n) for n in schedule(cell.seed_size, cell.query_size, cell.budget)]
            sources[label] = hit.describe()
        else:
            e = assumed
            sources[label] = (f"assumed E = {assumed:g} every round (no finished cell of this "
                              "dataset, model and loss; resources.al.estimate_epochs)")
        # a cell's threads come from the workflow's resources unless the experiment sets them
        own = tuple(cfg["resources"]["al"].get("threads") if k == "threads" and cell.threads is None
                    else getattr(cell, k, None) for k in RATE_KEYS)
        learned_rate = (hit is not None and hit.seconds_per_sample_epoch is not None
                        and hit.rate_settings == own and meter.device.type == "cpu")
        if learned_rate:
            sources[label] += "; seconds per epoch from those cells"
        log(f"  {'timing' if not learned_rate else 'rates for'} {label} "
            f"selector={cell.spec.selector} on {meter.device}")
        # a meter of the old signature (rates(cell, n_pool)) still works where nothing is learned
        rates = meter.rates(cell, n_pool, train=False) if learned_rate else meter.rates(cell, n_pool)
        if learned_rate:
            rates = dataclasses.replace(rates, train_samples_per_s=1 / hit.seconds_per_sample_epoch)
        part = cell_seconds(cell, n_pool, n_test, rates, e)
        for k, v in part.items():
            totals[k] += count * v
        durations += [part["total"]] * count
        rounds = max(rounds, cell.rounds)
    return StudyEstimate(cfg["study"], len(durations), rounds, totals, totals["total"] / 3600,
                         makespan(durations, slots) / 3600, sources)


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
    # --results (asknlearn/cli.py) names a folder that must exist; the default may not (a clone)
    given = getattr(args, "results", None)
    if given is not None and not Path(given).is_dir():
        raise ConfigError(f"--results={given!r} is not a folder; valid: a results folder (results/) "
                          "or one study's folder (results/<study>/) holding runs/")
    results = Path(given if given is not None else "results")
    device = resolve_device(args.device)
    configs = [load_workflow_config([path]) for path in args.configfile]
    if device.type == "cpu":
        threads = max(c["resources"]["al"]["threads"] for c in configs)
        torch.set_num_threads(threads)
        unit = "CPU"
        why = "no GPU on this machine" if not torch.cuda.is_available() else "--device cpu"
        print(f"asknlearn estimate: no GPU used ({why}; device cpu, {threads} torch thread(s) per "
              f"cell): these are CPU hours, not GPU-hours; wall time assumes {gpus} cell(s) at once",
              flush=True)
    else:
        unit = "GPU"
        print(f"asknlearn estimate: device {device} ({torch.cuda.get_device_name(device)}); "
              f"wall time on {gpus} GPU(s), one cell per GPU", flush=True)
    learned = learn_from_results(results) if epochs is None else {}
    meter = RateMeter(device, steps=steps)
    rows = [estimate_study(copy.deepcopy(c), meter, gpus, epochs, log=print, learned=learned)
            for c in configs]
    print(format_table(rows, unit, gpus))
    if epochs is not None:
        print("epochs per round (--epochs-per-round, nothing learned):")
        for r in rows:
            print(f"  E = {r.study}: {epochs:g} every round, capped at max_epochs")
    else:
        print(f"epochs per round E, per study and network (finished cells read from {str(results)!r}):")
        for r in rows:
            for label, source in r.sources.items():
                print(f"  E = {r.study}: {label}: {source}")
    print("training time is linear in E; inference for refined pseudo-labels and k-means++ "
          "extrapolated from a smaller problem are upper bounds.")
    e_used = {r.study: r.sources for r in rows}
    if args.json:
        doc = {"device": str(device), "unit": unit, "gpus": gpus, "epochs_per_round": e_used,
               "rates": {"|".join(map(str, k)): v for k, v in meter._cache.items()},
               "studies": [asdict(r) for r in rows]}
        atomic_write(Path(args.json), lambda p: Path(p).write_text(json.dumps(doc, indent=2) + "\n"))
    return 0
