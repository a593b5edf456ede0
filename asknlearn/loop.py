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

from asknlearn import __version__, records
from asknlearn.accel import check_precision
from asknlearn.accel import configure as configure_device
from asknlearn.augment import Augment
from asknlearn.config import RUNTIME_KEYS, ExperimentConfig, check_pool_size
from asknlearn.data import TensorData, load_dataset
from asknlearn.errors import ConfigError
from asknlearn.inference import predict
from asknlearn.losses import build_loss, vwcc_alpha
from asknlearn.metrics import all_metrics, reliability_bins
from asknlearn.models import build_model
from asknlearn.oracle import noisy_labels
from asknlearn.pseudolabels import PSEUDO_LABELERS

# kept importable from here for one release (benchmarks and tune import it): use asknlearn.records
from asknlearn.records import (  # noqa: F401
    CONFIG_FILE,
    DIAGNOSTIC_COLUMNS,
    QUERIES_FILE,
    RELIABILITY_FILE,
    ROUNDS_FILE,
    STATE_FILE,
    atomic_write,
)
from asknlearn.strategies import SELECTORS, Pool
from asknlearn.tracking import make_tracker
from asknlearn.train import TrainingDiverged, train_model

# keys that change nothing a cell computes (device, threads, tracking, ...) may differ on resume.
# eval_batch_size only chunks inference: every draw (augmentations, pseudo-label refinement) is
# made for the whole set at once, so the chunking changes no selection (tests/test_loop.py)
_RUNTIME_KEYS = RUNTIME_KEYS


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
    return json.loads(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in _RUNTIME_KEYS}))


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
        if meta["identity"] != identity:
            old = meta["identity"]
            diff = {k: (old.get(k), identity.get(k)) for k in set(old) | set(identity)
                    if old.get(k) != identity.get(k)}
            raise ConfigError(
                f"{str(self.folder)!r} holds a run with a different configuration {diff} "
                "(old, new); valid: the same configuration to resume, or a new output folder")
        return CellState(meta["identity"], LabeledSet.from_tensors(tensors["labeled"]),
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
    """One dataset × strategy × seed × noise experiment writing into ``out_dir``."""

    def __init__(self, cfg: ExperimentConfig, out_dir: str | os.PathLike,
                 log: Callable[[str], None] | None = None, tracker=None,
                 data: TensorData | None = None):
        self.cfg = cfg.resolve()
        self.log = log or (lambda s: print(s, flush=True))
        self.device = resolve_device(self.cfg.device)
        # GPU settings before any CUDA work (the cuBLAS workspace precedes the first matmul)
        check_precision(self.cfg.precision, self.device)
        configure_device(self.device, self.cfg.deterministic)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self.out = records.cell_folder(out_dir)
        self.data = data.to(self.device) if data is not None else load_dataset(
            self.cfg.dataset, self.cfg.data_root, self.device, self.cfg.download)
        check_pool_size(self.cfg, len(self.data.y_train))
        spec = self.cfg.spec
        self.loss_fn = build_loss(spec.loss, self.cfg.lwcc_lambda, self.cfg.vwcc_samples)
        self.selector = SELECTORS[spec.selector]()
        self.augment = Augment(self.cfg.aug_shift, self.cfg.aug_flip)
        self.labeler = PSEUDO_LABELERS[spec.pseudo_labels](
            self.cfg.tau, self.cfg.k_aug, self.augment, self.cfg.refine_include_original)
        self.tracker = tracker if tracker is not None else make_tracker(self.cfg)
        self.y_cpu = self.data.y_train.cpu()
        self.store = CellStore(self.out, self.y_cpu)

    # ------------------------------------------------------------------ model
    def new_model(self, round_: int):
        """Fresh initialization for ``round_``, identical across strategies for one seed."""
        torch.manual_seed(derive_seed(self.cfg.seed, "init", round_))
        info = self.data.info
        return build_model(self.cfg.model, info.shape, info.num_classes, self.cfg.dropout).to(
            self.device)

    def fit(self, labeled: torch.Tensor, labels: torch.Tensor, round_: int):
        model = self.new_model(round_)
        # dropout in training draws from torch's global RNG: seed it per round too
        torch.manual_seed(derive_seed(self.cfg.seed, "dropout", round_))
        if self.device.type == "cuda":
            torch.cuda.manual_seed_all(derive_seed(self.cfg.seed, "dropout", round_))
        c = self.cfg
        last = [time.monotonic()]

        def progress(epoch: int, acc: float) -> None:
            # long rounds say they are alive, at most once every 10 s
            if time.monotonic() - last[0] >= 10.0:
                last[0] = time.monotonic()
                self.log(f"[{c.cell_id()}] round {round_:>3} training: epoch {epoch} "
                         f"train accuracy {acc:.4f} (target {c.target_train_accuracy})")

        try:
            res = train_model(
                model, self.loss_fn, self.data.x_train[labeled.to(self.device)],
                labels.to(self.device), lr=c.lr, batch_size=c.train_batch_size,
                target_accuracy=c.target_train_accuracy, max_epochs=c.max_epochs,
                weight_decay=c.weight_decay, generator=generator(c.seed, "batches", round_),
                eval_batch_size=c.eval_batch_size,
                augment=self.augment if c.train_augment else None, progress=progress,
                precision=c.precision, compile=c.compile)
        except TrainingDiverged as exc:
            raise TrainingDiverged(f"{c.cell_id()} round {round_}: {exc}; the round is not "
                                   "recorded; valid: a smaller lr / weight_decay") from None
        return model, res

    @torch.no_grad()
    def stochastic_probs(self, model, x: torch.Tensor) -> torch.Tensor:
        """(T, N, K) softmax of T stochastic inferences (eval-mode batch norm, dropout on),
        in chunks of one T·chunk batch each."""
        model.eval()
        t = self.cfg.vwcc_samples
        per = max(1, self.cfg.eval_batch_size // t)
        return torch.cat([torch.softmax(model.stochastic_logits(x[s : s + per], t), dim=-1)
                          for s in range(0, len(x), per)], dim=1)

    def alpha_diagnostics(self, model, labeled: torch.Tensor) -> dict[str, float]:
        """α of eq. 2 on the labeled set after training: shows whether VWCC's weights are
        doing anything (α ≈ 0 everywhere means VWCC is plain cross-entropy)."""
        if not model.stochastic:
            return {}
        a = vwcc_alpha(self.stochastic_probs(model, self.data.x_train[labeled.to(self.device)]))
        q = torch.quantile(a.double().cpu(), torch.tensor([0.5, 0.9], dtype=torch.float64))
        return {"alpha_mean": a.double().mean().item(), "alpha_median": q[0].item(),
                "alpha_p90": q[1].item()}

    def refine_diagnostics(self, model, x: torch.Tensor, y: torch.Tensor, probs: torch.Tensor,
                           labels: torch.Tensor, refined: torch.Tensor, prefix: str) -> dict[str, float]:
        """Accuracy of argmax and of the refined pseudo-labels on the refined subset, and of
        all pseudo-labels: whether refinement helps where it acts."""
        argmax = probs.argmax(dim=1)
        out = {f"{prefix}pseudo_label_accuracy": (labels == y).double().mean().item(),
               f"{prefix}refined_fraction": refined.double().mean().item()}
        if refined.any():
            out[f"{prefix}refined_argmax_accuracy"] = (argmax[refined] == y[refined]).double().mean().item()
            out[f"{prefix}refined_accuracy"] = (labels[refined] == y[refined]).double().mean().item()
        return out

    def evaluate(self, model, x: torch.Tensor, y: torch.Tensor) -> tuple[dict[str, float], dict]:
        """Metrics and reliability-diagram bins of ``model`` on (x, y)."""
        probs, _ = predict(model, x, self.cfg.eval_batch_size)
        return all_metrics(probs, y, self.cfg.ece_bins), reliability_bins(probs, y, self.cfg.ece_bins)

    # ------------------------------------------------------------------ selection
    def select(self, model, unlabeled: torch.Tensor, round_: int, *,
               labeled: torch.Tensor | None = None, val: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict]:
        """Pick b pool points (train-set indices) with this round's strategy.

        Computes exactly what the selector ``needs``, then the diagnostics: refinement on the
        validation split (``val_refined_*``, label-free for the pool, usable for choices) and
        the pool's true labels (``oracle_*``, for reading only: never used to select)."""
        c, dev = self.cfg, self.device
        needs = self.selector.needs
        x = self.data.x_train[unlabeled.to(dev)] if needs else None
        pool = Pool(size=len(unlabeled))
        t0 = time.perf_counter()
        extra: dict[str, float] = {}
        if needs & {"probs", "features", "pseudo_labels"}:
            pool.probs, pool.features = predict(model, x, c.eval_batch_size,
                                                features="features" in needs)
        if "stochastic_probs" in needs:
            pool.stochastic_probs = self.stochastic_probs(model, x)
        labeled = torch.zeros(0, dtype=torch.long) if labeled is None else labeled
        val = torch.zeros(0, dtype=torch.long) if val is None else val
        if "labeled_features" in needs:
            pool.labeled_features = (
                predict(model, self.data.x_train[labeled.to(dev)], c.eval_batch_size,
                        features=True)[1]
                if len(labeled) else torch.zeros(0, model.feat_dim, device=dev))
        refined = None
        if "pseudo_labels" in needs:
            pool.pseudo_labels, refined = self.labeler(
                model, x, pool.probs, generator(c.seed, "augment", round_), c.eval_batch_size)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t1 = time.perf_counter()
        rows = self.selector.select(pool, c.query_size, generator(c.seed, "select", round_))
        t2 = time.perf_counter()
        rows = rows.cpu()
        if len(rows) != c.query_size or len(torch.unique(rows)) != len(rows):
            raise RuntimeError(f"selector {c.spec.selector!r} returned {len(rows)} "
                               f"indices ({len(torch.unique(rows))} distinct), "
                               f"expected {c.query_size} distinct")
        extra["inference_seconds"] = t1 - t0
        extra["selection_seconds"] = t2 - t1
        if refined is not None:
            extra.update(self.refine_diagnostics(
                model, x, self.data.y_train[unlabeled.to(dev)], pool.probs, pool.pseudo_labels,
                refined, "oracle_"))
            if len(val):
                xv, yv = self.data.x_train[val.to(dev)], self.data.y_train[val.to(dev)]
                pv, _ = predict(model, xv, c.eval_batch_size)
                lv, rv = self.labeler(model, xv, pv, generator(c.seed, "augment-val", round_),
                                      c.eval_batch_size)
                extra.update(self.refine_diagnostics(model, xv, yv, pv, lv, rv, "val_"))
        return unlabeled[rows], extra

    def noise_diagnostics(self, model, labeled: LabeledSet) -> dict[str, float]:
        """What the trained model does with the oracle's wrong labels in L: the fraction it
        predicts as given (memorised) and as the true class (corrected). The oracle corrupts
        exactly round(r·b) labels of every batch whatever the strategy picks, so robustness to
        label noise (the paper's Fig. 6) shows here, not in how many wrong labels are bought."""
        if not bool(labeled.wrong.any()):
            return {}
        idx = labeled.index[labeled.wrong]
        probs, _ = predict(model, self.data.x_train[idx.to(self.device)], self.cfg.eval_batch_size)
        pred = probs.argmax(dim=1).cpu()
        given = labeled.label[labeled.wrong].cpu()
        return {"oracle_wrong_memorised": (pred == given).double().mean().item(),
                "oracle_wrong_corrected": (pred == self.y_cpu[idx]).double().mean().item()}

    # ------------------------------------------------------------------ one round's record
    def measure(self, model, round_: int, fit, extra: dict[str, float], labeled: LabeledSet,
                val: torch.Tensor, t0: float) -> tuple[dict[str, Any], dict[str, list]]:
        """The round's row (test and validation metrics, diagnostics, timings) and its
        reliability bins."""
        c = self.cfg
        extra = {**extra, **self.alpha_diagnostics(model, labeled.index),
                 **self.noise_diagnostics(model, labeled)}
        metrics, rel = self.evaluate(model, self.data.x_test, self.data.y_test)
        if c.val_size:
            vi = val.to(self.device)
            vm, _ = self.evaluate(model, self.data.x_train[vi], self.data.y_train[vi])
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

    def _eta_text(self, rows: list[dict[str, Any]]) -> str:
        """Elapsed time and an ETA for the cell: seconds per label so far (training cost
        grows with |L|) times the labels of the rounds still to come."""
        c = self.cfg
        done = sum(r["round_seconds"] for r in rows)
        per_label = done / max(sum(r["labels"] for r in rows), 1)
        last = rows[-1]["labels"]
        todo = sum(last + c.query_size * i for i in range(1, c.rounds - rows[-1]["round"] + 1))
        eta = per_label * todo
        return f" elapsed {_hms(done)}" + (f" eta {_hms(eta)}" if todo else " done")

    def _cap_text(self, row: dict[str, Any]) -> str:
        """Say so when training stopped at max_epochs short of its target: every round is meant
        to train to the same training accuracy (Ash et al. 2019), and a network that no longer
        gets there (e.g. cross-entropy on the dropout network past ~4,000 Fashion-MNIST labels)
        is under-fitted, which changes its accuracy and calibration."""
        c = self.cfg
        if row["train_epochs"] >= c.max_epochs and row["train_accuracy"] < c.target_train_accuracy:
            return (f" (max_epochs reached: train acc {row['train_accuracy']:.3f}"
                    f" < {c.target_train_accuracy:g})")
        return ""

    @staticmethod
    def _diag_text(row: dict[str, Any]) -> str:
        out = ""
        if row["alpha_mean"] == row["alpha_mean"]:
            out += f" alpha {_fmt(row['alpha_mean'])}"
        if row["oracle_refined_fraction"] == row["oracle_refined_fraction"]:
            out += (f" refined {_fmt(row['oracle_refined_fraction'])}"
                    f" val-refined acc {_fmt(row['val_refined_accuracy'])}"
                    f" vs argmax {_fmt(row['val_refined_argmax_accuracy'])}")
        if row["oracle_wrong_memorised"] == row["oracle_wrong_memorised"]:
            out += (f" wrong labels memorised {_fmt(row['oracle_wrong_memorised'])}"
                    f" corrected {_fmt(row['oracle_wrong_corrected'])}")
        return out

    def _round_text(self, row: dict[str, Any], rows: list[dict[str, Any]]) -> str:
        c = self.cfg
        sel_s = row["inference_seconds"] + row["selection_seconds"]
        return (f"[{c.cell_id()}] round {row['round']:>3}/{c.rounds} labels {row['labels']:>6} "
                f"acc {row['accuracy']:.4f} ece {row['ece']:.4f} nll {row['nll']:.3f} "
                f"brier {row['brier']:.4f} epochs {row['train_epochs']:>3}{self._cap_text(row)}"
                f"{self._diag_text(row)} "
                f"train {row['train_seconds']:6.1f}s select {sel_s:5.1f}s "
                f"total {row['round_seconds']:6.1f}s{self._eta_text(rows)}")

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

    # ------------------------------------------------------------------ the loop
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
            seed_set, pool, val = split_pool(c, len(self.y_cpu))
            state, model = self._start(state, seed_set)
            for r in range(len(state.rows), c.rounds + 1):
                t0, extra = time.perf_counter(), {}
                if r > 0:
                    query, extra = self.select(model, state.labeled.unlabeled(pool), r,
                                               labeled=state.labeled.index, val=val)
                    given, wrong = noisy_labels(self.y_cpu[query], self.data.num_classes, c.noise,
                                                generator(c.seed, "oracle", r))
                    state.labeled.add(query, given, wrong, r)
                model, fit = self.fit(state.labeled.index, state.labeled.label, r)
                row, bins = self.measure(model, r, fit, extra, state.labeled, val, t0)
                state.record(row, bins, model, finished=r == c.rounds)
                self.store.save(state)
                self.tracker.log_round(row)
                self.log(self._round_text(row, state.rows))
            self.tracker.finish()
        return state.table()


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.3f}"


def run_cell(cfg: ExperimentConfig, out_dir: str | os.PathLike, **kw) -> pd.DataFrame:
    """Run (or resume, or skip if finished) one cell; returns its per-round table."""
    cell = Cell(cfg, out_dir, **kw)
    try:
        return cell.run()
    except BaseException as exc:  # the MLflow run ends KILLED (interrupt) or FAILED
        cell.tracker.fail(exc)
        raise


