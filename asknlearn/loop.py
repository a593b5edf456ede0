"""The active-learning loop of Algorithm 1 for one cell, with atomic per-round state and resume.

Round 0 trains on the seed set S; each later round selects b points with the previous round's
model, asks the oracle, retrains from a fresh initialization and evaluates on the test set.

Reproducibility and pairing: every random draw comes from a generator seeded by a hash of
(seed, purpose, round), never from the strategy. So for one seed all strategies share S, the
initial weights of every round and the training batch order; and a resumed run draws exactly
what an uninterrupted one would, without saving RNG states.

The cell folder (its files, the row's columns, the lock, the checksummed state) is declared in
:mod:`asknlearn.records`; :class:`CellStore` is the loop's view of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from asknlearn import __version__, diagnostics, records
from asknlearn.accel import check_precision
from asknlearn.accel import configure as configure_device
from asknlearn.config import RUNTIME_KEYS, ExperimentConfig, check_pool_size
from asknlearn.data import TensorData, load_dataset
from asknlearn.errors import ConfigError
from asknlearn.inference import predict
from asknlearn.metrics import all_metrics, reliability_bins
from asknlearn.models import build_model
from asknlearn.oracle import noisy_labels
from asknlearn.query import Query, build_pool, check_rows
from asknlearn.records import DIAGNOSTIC_COLUMNS
from asknlearn.selectors import Pool
from asknlearn.strategies import build_parts
from asknlearn.tracking import make_tracker
from asknlearn.train import TrainingDiverged, train_model


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from (seed, keys): independent streams per purpose and round."""
    h = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *keys: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but CUDA is not available; valid: auto, cpu")
    return torch.device(name)


def split_pool(cfg: ExperimentConfig, n_train: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(seed set S, unlabeled pool U, validation) as train-set indices; depends on the seed
    only, so every strategy starts from the same S."""
    perm = torch.randperm(n_train, generator=generator(cfg.seed, "split"))
    val = perm[: cfg.val_size]
    rest = perm[cfg.val_size :]
    return rest[: cfg.seed_size].sort().values, rest[cfg.seed_size :].sort().values, val.sort().values


def _identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """The configuration keys a resume must match, as plain JSON values (what the state holds)."""
    return json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in RUNTIME_KEYS}))


_DEFAULT_IDENTITY = _identity(ExperimentConfig())


@dataclass
class LabeledSet:
    """L of Algorithm 1: the labeled train-set indices with the label the oracle gave, whether
    that label is wrong (noisy oracle) and the round each point was labeled in (0: seed set)."""

    index: torch.Tensor
    label: torch.Tensor
    wrong: torch.Tensor
    round: torch.Tensor

    @classmethod
    def seed(cls, index: torch.Tensor, labels: torch.Tensor) -> LabeledSet:
        """The seed set S: true labels, labeled in round 0."""
        n = len(index)
        return cls(index, labels.clone(), torch.zeros(n, dtype=torch.bool),
                   torch.zeros(n, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.index)

    def unlabeled(self, pool: torch.Tensor) -> torch.Tensor:
        """U: the points of ``pool`` not yet labeled, in pool order."""
        return pool[~torch.isin(pool, self.index)]

    def add(self, index: torch.Tensor, label: torch.Tensor, wrong: torch.Tensor, round_: int) -> None:
        """Append a queried batch with the oracle's answers."""
        self.index = torch.cat([self.index, index])
        self.label = torch.cat([self.label, label])
        self.wrong = torch.cat([self.wrong, wrong])
        self.round = torch.cat([self.round, torch.full((len(index),), round_, dtype=torch.long)])

    def to_frame(self, true_labels: torch.Tensor) -> pd.DataFrame:
        """The ``queries.csv`` table: one row per labeled point, in labeling order."""
        return pd.DataFrame({
            "round": self.round.numpy(), "index": self.index.numpy(),
            "true_label": true_labels[self.index].numpy(), "given_label": self.label.numpy(),
            "wrong": self.wrong.numpy(),
        })

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"index": self.index, "label": self.label, "wrong": self.wrong, "round": self.round}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> LabeledSet:
        return cls(t["index"], t["label"], t["wrong"], t["round"])


@dataclass
class CellState:
    """What a resume needs after a finished round: L, the last model, the tables so far."""

    identity: dict[str, Any]
    labeled: LabeledSet
    run_id: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    reliability: list[dict[str, list]] = field(default_factory=list)  # per round, by column
    model: dict[str, torch.Tensor] | None = None
    finished: bool = False
    version: str = __version__

    def record(self, row: dict[str, Any], reliability: dict[str, list], model, finished: bool) -> None:
        """Add a finished round: its row, its reliability bins and its model."""
        self.rows.append(row)
        self.reliability.append(reliability)
        self.model = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        self.finished = finished

    def table(self) -> pd.DataFrame:
        """The ``rounds.csv`` table."""
        return pd.DataFrame(self.rows)

    def reliability_table(self) -> pd.DataFrame:
        return pd.concat([pd.DataFrame(r) for r in self.reliability], ignore_index=True)


class CellStore:
    """The cell folder as the loop uses it: the lock, the resume state (checked against the
    configuration) and the tables, each written atomically through :mod:`asknlearn.records`."""

    def __init__(self, folder: Path, true_labels: torch.Tensor):
        self.folder = folder
        self.true_labels = true_labels
        self._sha: str | None = None  # the state on disk, kept valid by the checksum file

    def locked(self):
        """Hold the folder for the whole run; stale temp files of a killed job go first."""
        return records.locked_cell(self.folder)

    def load(self, identity: dict[str, Any]) -> CellState | None:
        """The saved state, or None for a new cell; refused if it was made by another
        configuration (only runtime keys such as the device may change on a resume)."""
        got = records.read_state(self.folder)
        if got is None:
            return None
        meta, tensors, self._sha = got
        # a key added after the state was written matches when it has its default value
        old = {**{k: v for k, v in _DEFAULT_IDENTITY.items() if k not in meta["identity"]},
               **meta["identity"]}
        if old != identity:
            diff = {k: (old.get(k), identity.get(k)) for k in set(old) | set(identity)
                    if old.get(k) != identity.get(k)}
            raise ConfigError(
                f"{str(self.folder)!r} holds a run with a different configuration {diff} "
                "(old, new); valid: the same configuration to resume, or a new output folder")
        return CellState(identity, LabeledSet.from_tensors(tensors["labeled"]),
                         meta["run_id"], meta["rows"], meta["reliability"], tensors["model"],
                         meta["finished"], meta["version"])

    def save(self, state: CellState) -> None:
        """The state first, then the tables: a job killed in between resumes from the state
        and rewrites the tables."""
        meta = {"identity": state.identity, "version": state.version, "finished": state.finished,
                "run_id": state.run_id, "rows": state.rows, "reliability": state.reliability}
        self._sha = records.write_state(
            self.folder, meta, {"labeled": state.labeled.tensors(), "model": state.model}, self._sha)
        self.save_tables(state)

    def save_tables(self, state: CellState) -> None:
        records.write_table(self.folder / records.ROUNDS_FILE, state.table())
        records.write_table(self.folder / records.QUERIES_FILE,
                            state.labeled.to_frame(self.true_labels))
        records.write_table(self.folder / records.RELIABILITY_FILE, state.reliability_table())

    def write_config(self, config: dict[str, Any]) -> None:
        records.write_config(self.folder, config, __version__)


class Cell:
    """One dataset × strategy × seed × noise experiment writing into ``out_dir``: Algorithm 1
    (:meth:`run`) over the parts its strategy's catalogue entries build."""

    def __init__(self, cfg: ExperimentConfig, out_dir: str | os.PathLike,
                 log: Callable[[str], None] | None = None, tracker=None,
                 data: TensorData | None = None):
        self.cfg = c = cfg.resolve()
        self.log = log or (lambda s: print(s, flush=True))
        self.device = resolve_device(c.device)
        # GPU settings before any CUDA work (the cuBLAS workspace precedes the first matmul)
        check_precision(c.precision, self.device)
        configure_device(self.device, c.deterministic)
        if c.threads:
            torch.set_num_threads(c.threads)
        self.out = records.cell_folder(out_dir)
        self.data = data.to(self.device) if data is not None else load_dataset(
            c.dataset, c.data_root, self.device, c.download)
        check_pool_size(c, len(self.data.y_train))
        self.parts = build_parts(c.spec, c)
        self.tracker = tracker if tracker is not None else make_tracker(c)
        self.y_cpu = self.data.y_train.cpu()
        self.store = CellStore(self.out, self.y_cpu)

    def x(self, index: torch.Tensor) -> torch.Tensor:
        """Training images at train-set ``index``, on the device."""
        return self.data.x_train[index.to(self.device)]

    def new_model(self, round_: int):
        """Fresh initialization for ``round_``, identical across strategies for one seed."""
        torch.manual_seed(derive_seed(self.cfg.seed, "init", round_))
        info = self.data.info
        return build_model(self.cfg.model, info.shape, info.num_classes, self.cfg.dropout).to(
            self.device)

    def train(self, labeled: LabeledSet, round_: int):
        """A fresh network, identical across strategies for one seed, trained on L with the
        strategy's loss (cross-entropy, LWCC of eq. 3 or VWCC of eq. 2) to the target
        training accuracy."""
        c = self.cfg
        model = self.new_model(round_)
        # dropout in training draws from torch's global RNG: seed it per round too
        torch.manual_seed(derive_seed(c.seed, "dropout", round_))
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(derive_seed(c.seed, "dropout", round_))
        last = [time.monotonic()]

        def progress(epoch: int, acc: float) -> None:
            # long rounds say they are alive, at most once every 10 s
            if time.monotonic() - last[0] >= 10.0:
                last[0] = time.monotonic()
                self.log(f"[{c.cell_id()}] round {round_:>3} training: epoch {epoch} "
                         f"train accuracy {acc:.4f} (target {c.target_train_accuracy})")

        try:
            fit = train_model(
                model, self.parts.loss, self.x(labeled.index), labeled.label.to(self.device),
                lr=c.lr, batch_size=c.train_batch_size, target_accuracy=c.target_train_accuracy,
                max_epochs=c.max_epochs, weight_decay=c.weight_decay,
                generator=generator(c.seed, "batches", round_), eval_batch_size=c.eval_batch_size,
                augment=self.parts.augment if c.train_augment else None, progress=progress,
                precision=c.precision, compile=c.compile)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{c.cell_id()} round {round_}: {exc}; the round is not "
                                   "recorded; valid: a smaller lr / weight_decay") from None
        return model, fit

    def query(self, model, labeled: LabeledSet, unlabeled: torch.Tensor, val: torch.Tensor,
              round_: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Pick b pool points (train-set indices): p, z, the pseudo-labels (argmax or refined)
        and whatever else the selector needs (:mod:`asknlearn.query`), then its choice (BADGE:
        k-means++ on the gradient embeddings of eq. 4). Also times both and records the
        refinement's diagnostics (``val_*``: label-free for the pool; ``oracle_*``: reading
        only, never used to select)."""
        c, spec, batch = self.cfg, self.cfg.spec, self.cfg.eval_batch_size
        x = self.x(unlabeled) if spec.needs else None
        t0 = time.perf_counter()
        q = build_pool(model, x, spec.needs, labeled_x=self.x(labeled.index),
                       labeler=self.parts.labeler, generator=generator(c.seed, "augment", round_),
                       batch_size=batch, samples=c.vwcc_samples) if spec.needs \
            else Query(Pool(size=len(unlabeled)))
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        rows = self.parts.selector.select(q.pool, c.query_size, generator(c.seed, "select", round_))
        t2 = time.perf_counter()
        rows = check_rows(rows, c.query_size, spec.selector)
        extra = {"inference_seconds": t1 - t0, "selection_seconds": t2 - t1}
        if q.refined is not None:
            extra.update(diagnostics.refinement(self.data.y_train[unlabeled.to(self.device)],
                                                q.pool.probs, q.pool.pseudo_labels, q.refined,
                                                "oracle_"))
            if len(val):
                xv, yv = self.x(val), self.data.y_train[val.to(self.device)]
                pv, _ = predict(model, xv, batch)
                lv, rv = self.parts.labeler(model, xv, pv, generator(c.seed, "augment-val", round_),
                                            batch)
                extra.update(diagnostics.refinement(yv, pv, lv, rv, "val_"))
        return unlabeled[rows], extra

    def evaluate(self, model, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, float], dict]:
        """Metrics and reliability-diagram bins of ``model`` on (x, y)."""
        probs, _ = predict(model, x, self.cfg.eval_batch_size)
        return all_metrics(probs, y, self.cfg.ece_bins), reliability_bins(probs, y, self.cfg.ece_bins)

    def measure(self, model, round_: int, fit, extra: dict[str, float], labeled: LabeledSet,
                val: torch.Tensor, t0: float) -> tuple[dict[str, Any], dict[str, list]]:
        """The round's row (test and validation metrics, diagnostics, timings) and its
        reliability bins."""
        c, batch = self.cfg, self.cfg.eval_batch_size
        wrong = labeled.index[labeled.wrong]
        extra = {**extra, **diagnostics.alpha(model, self.x(labeled.index), c.vwcc_samples, batch),
                 **diagnostics.wrong_labels(model, self.x(wrong), labeled.label[labeled.wrong],
                                            self.y_cpu[wrong], batch)}
        metrics, rel = self.evaluate(model, self.data.x_test, self.data.y_test)
        if c.val_size:
            vm, _ = self.evaluate(model, self.x(val), self.data.y_train[val.to(self.device)])
            metrics.update({f"val_{k}": v for k, v in vm.items()})
        row = records.round_row({
            "study": c.study, "dataset": c.dataset, "strategy": c.strategy, "seed": c.seed,
            "noise": c.noise, "round": round_, "labels": len(labeled), **metrics,
            "train_epochs": fit.epochs, "train_accuracy": fit.train_accuracy,
            "train_seconds": fit.seconds,
            "inference_seconds": extra.get("inference_seconds", 0.0),
            "selection_seconds": extra.get("selection_seconds", 0.0),
            "round_seconds": time.perf_counter() - t0,
            "n_wrong_labels": int(labeled.wrong.sum()),
            "wrong_label_fraction": labeled.wrong.double().mean().item(),
            **{k: v for k, v in extra.items() if k in DIAGNOSTIC_COLUMNS},
            "timestamp_ms": int(time.time() * 1000),
        }, validation=bool(c.val_size))
        bins = {"round": [round_] * len(rel["bin"]), **{k: v.tolist() for k, v in rel.items()}}
        return row, bins

    def _start(self, state: CellState | None, seed_set: torch.Tensor):
        """Open the tracking run and the state: a new one on S, or the saved one with its
        last model. On a resume the tracker also logs finished rounds its run lacks (a job
        killed between saving a round and logging it, or a tracking outage)."""
        c = self.cfg
        run_id = self.tracker.start(c.to_dict(), state.run_id if state else None,
                                    state.rows if state else (), out_dir=self.out,
                                    device=self.device)
        if state is None:
            state = CellState(_identity(c), LabeledSet.seed(seed_set, self.y_cpu[seed_set]), run_id)
            self.log(f"[{c.cell_id()}] {c.dataset} ({len(self.data.y_train)} train / "
                     f"{len(self.data.y_test)} test) model={c.model} loss={c.spec.loss} "
                     f"pseudo_labels={c.spec.pseudo_labels} selector={c.spec.selector} "
                     f"device={self.device} rounds={c.rounds}")
            return state, None
        start = len(state.rows)
        model = self.new_model(start - 1)
        model.load_state_dict(state.model)
        state.run_id = run_id or state.run_id
        self.log(f"[{c.cell_id()}] resuming after round {start - 1} "
                 f"({len(state.labeled)} labels); finished rounds are not retrained")
        return state, model

    # ------------------------------------------------------------------ Algorithm 1
    def run(self) -> pd.DataFrame:
        """Algorithm 1 for this cell, resuming after its last saved round: each round selects
        b points with the previous round's model, asks the oracle, adds them to L, retrains
        from a fresh initialization, evaluates, saves the round and logs it."""
        c = self.cfg
        with self.store.locked():
            state = self.store.load(_identity(c))
            if state is not None:
                # a workflow deletes a job's declared outputs before rerunning it: put the
                # finished rounds' tables back now, not after the next round (hours on a CPU)
                self.store.save_tables(state)
            if state is not None and state.finished:
                self.log(f"[{c.cell_id()}] already finished ({len(state.rows)} rounds); nothing to do")
                return state.table()
            self.store.write_config(c.to_dict())
            seed_set, pool, val = split_pool(c, len(self.y_cpu))  # S, U and the validation split
            state, model = self._start(state, seed_set)
            for r in range(len(state.rows), c.rounds + 1):
                t0, extra = time.perf_counter(), {}
                if r > 0:
                    # pseudo-labels (refined where max p < τ), gradient embeddings, k-means++
                    query, extra = self.query(model, state.labeled,
                                              state.labeled.unlabeled(pool), val, r)
                    # the oracle labels the batch (round(r·b) of them wrong when noisy)
                    given, wrong = noisy_labels(self.y_cpu[query], self.data.num_classes, c.noise,
                                                generator(c.seed, "oracle", r))
                    state.labeled.add(query, given, wrong, r)
                # calibrated training on L from a fresh initialization
                model, fit = self.train(state.labeled, r)
                row, bins = self.measure(model, r, fit, extra, state.labeled, val, t0)
                state.record(row, bins, model, finished=r == c.rounds)
                self.store.save(state)
                self.tracker.log_round(row)
                self.log(diagnostics.round_text(row, state.rows, c, model.stochastic))
            self.tracker.finish()
        return state.table()


def run_cell(cfg: ExperimentConfig, out_dir: str | os.PathLike, **kw) -> pd.DataFrame:
    """Run (or resume, or skip if finished) one cell; returns its per-round table."""
    cell = Cell(cfg, out_dir, **kw)
    try:
        return cell.run()
    except BaseException as exc:  # the MLflow run ends KILLED (interrupt) or FAILED
        cell.tracker.fail(exc)
        raise


