"""The active-learning loop of Algorithm 1 for one cell, with atomic per-round state and resume.

Round 0 trains on the seed set S; each later round selects b points with the previous round's
model, asks the oracle, retrains from a fresh initialization and evaluates on the test set.

Reproducibility and pairing: every random draw comes from a generator seeded by a hash of
(seed, purpose, round), never from the strategy. So for one seed all strategies share S, the
initial weights of every round and the training batch order; and a resumed run draws exactly
what an uninterrupted one would, without saving RNG states.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml

from asknlearn import __version__
from asknlearn.accel import check_precision
from asknlearn.accel import configure as configure_device
from asknlearn.augment import Augment
from asknlearn.config import ExperimentConfig, check_pool_size
from asknlearn.data import TensorData, load_dataset
from asknlearn.errors import ConfigError
from asknlearn.inference import predict
from asknlearn.losses import build_loss, vwcc_alpha
from asknlearn.metrics import all_metrics, reliability_bins
from asknlearn.models import build_model
from asknlearn.oracle import noisy_labels
from asknlearn.pseudolabels import PSEUDO_LABELERS
from asknlearn.strategies import SELECTORS, Pool
from asknlearn.tracking import make_tracker
from asknlearn.train import TrainingDiverged, train_model

STATE_FILE = "state.pt"
ROUNDS_FILE = "rounds.csv"
QUERIES_FILE = "queries.csv"
RELIABILITY_FILE = "reliability.csv"
CONFIG_FILE = "config.yaml"
# keys that change what a cell computes; others (device, threads, tracking) may differ on resume
_RUNTIME_KEYS = {"device", "threads", "data_root", "download", "tracking", "tracking_uri",
                 "experiment", "eval_batch_size"}


# per-round mechanism diagnostics: α of eq. 2 on L (stochastic networks); pseudo-label
# refinement on the validation split (val_*) and, for reading only, on the pool (oracle_*)
DIAGNOSTIC_COLUMNS = (
    "alpha_mean", "alpha_median", "alpha_p90",
    "val_pseudo_label_accuracy", "val_refined_fraction", "val_refined_argmax_accuracy",
    "val_refined_accuracy",
    "oracle_pseudo_label_accuracy", "oracle_refined_fraction", "oracle_refined_argmax_accuracy",
    "oracle_refined_accuracy",
)


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


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temp file in the same folder + os.replace: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _identity(cfg: ExperimentConfig) -> dict[str, Any]:
    return {k: v for k, v in cfg.to_dict().items() if k not in _RUNTIME_KEYS}


class Cell:
    """One dataset × strategy × seed × noise experiment writing into ``out_dir``."""

    def __init__(self, cfg: ExperimentConfig, out_dir: str | os.PathLike,
                 log: Callable[[str], None] | None = None, tracker=None,
                 data: TensorData | None = None):
        self.cfg = cfg.resolve()
        self.out = Path(out_dir)
        self.log = log or (lambda s: print(s, flush=True))
        self.device = resolve_device(self.cfg.device)
        # GPU settings before any CUDA work (the cuBLAS workspace precedes the first matmul)
        check_precision(self.cfg.precision, self.device)
        configure_device(self.device, self.cfg.deterministic)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        self._check_writable()
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

    def _check_writable(self) -> None:
        p = self.out
        while not p.exists():
            p = p.parent
        if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
            raise ConfigError(f"output directory {str(self.out)!r} is not writable "
                              f"({str(p)!r} is not a writable folder); valid: a writable path")

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
            _, pool.labeled_features = predict(model, self.data.x_train[labeled.to(dev)],
                                               c.eval_batch_size, features=True)
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

    # ------------------------------------------------------------------ state
    def _save(self, state: dict[str, Any]) -> None:
        atomic_write(self.out / STATE_FILE, lambda p: torch.save(state, p))
        rows = pd.DataFrame(state["rows"])
        atomic_write(self.out / ROUNDS_FILE, lambda p: rows.to_csv(p, index=False))
        q = pd.DataFrame({
            "round": state["label_round"].numpy(),
            "index": state["labeled"].numpy(),
            "true_label": self.data.y_train.cpu()[state["labeled"]].numpy(),
            "given_label": state["labels"].numpy(),
            "wrong": state["wrong"].numpy(),
        })
        atomic_write(self.out / QUERIES_FILE, lambda p: q.to_csv(p, index=False))
        rel = pd.concat(state["reliability"], ignore_index=True)
        atomic_write(self.out / RELIABILITY_FILE, lambda p: rel.to_csv(p, index=False))

    def _load(self) -> dict[str, Any] | None:
        path = self.out / STATE_FILE
        if not path.exists():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["identity"] != _identity(self.cfg):
            old, new = state["identity"], _identity(self.cfg)
            diff = {k: (old.get(k), new.get(k)) for k in set(old) | set(new)
                    if old.get(k) != new.get(k)}
            raise ConfigError(
                f"{str(self.out)!r} holds a run with a different configuration {diff} "
                "(old, new); valid: the same configuration to resume, or a new output folder")
        return state

    def _row(self, round_: int, n_labels: int, metrics: dict, fit, extra: dict,
             wrong: torch.Tensor, seconds: float) -> dict[str, Any]:
        c = self.cfg
        return {
            "study": c.study, "dataset": c.dataset, "strategy": c.strategy, "seed": c.seed,
            "noise": c.noise, "round": round_, "labels": n_labels, **metrics,
            "train_epochs": fit.epochs, "train_accuracy": fit.train_accuracy,
            "train_seconds": fit.seconds,
            "inference_seconds": extra.get("inference_seconds", 0.0),
            "selection_seconds": extra.get("selection_seconds", 0.0),
            "round_seconds": seconds,
            "n_wrong_labels": int(wrong.sum()),
            "wrong_label_fraction": wrong.double().mean().item(),
            **{k: extra.get(k, float("nan")) for k in DIAGNOSTIC_COLUMNS},
            "timestamp_ms": int(time.time() * 1000),
        }

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

    @staticmethod
    def _diag_text(row: dict[str, Any]) -> str:
        out = ""
        if row["alpha_mean"] == row["alpha_mean"]:
            out += f" alpha {_fmt(row['alpha_mean'])}"
        if row["oracle_refined_fraction"] == row["oracle_refined_fraction"]:
            out += (f" refined {_fmt(row['oracle_refined_fraction'])}"
                    f" val-refined acc {_fmt(row['val_refined_accuracy'])}"
                    f" vs argmax {_fmt(row['val_refined_argmax_accuracy'])}")
        return out

    # ------------------------------------------------------------------ the loop
    def run(self) -> pd.DataFrame:
        c = self.cfg
        # a job killed inside atomic_write leaves its temp file behind; one job owns a cell folder
        if self.out.is_dir():
            for stale in self.out.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        state = self._load()
        if state is not None and state["finished"]:
            # a workflow may have deleted the tables before rerunning a finished cell:
            # rewrite them from the state, never retrain
            self._save(state)
            self.log(f"[{c.cell_id()}] already finished ({len(state['rows'])} rounds); nothing to do")
            return pd.DataFrame(state["rows"])
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write(self.out / CONFIG_FILE, lambda p: Path(p).write_text(
            yaml.safe_dump({**c.to_dict(), "version": __version__},
                                         sort_keys=False)))
        seed_set, pool, val = split_pool(c, len(self.data.y_train))
        # on a resume the tracker also logs finished rounds the run lacks (a job killed
        # between saving a round and logging it, or a tracking outage)
        run_id = self.tracker.start(c.to_dict(), state["run_id"] if state else None,
                                    state["rows"] if state else ())
        y_cpu = self.data.y_train.cpu()
        if state is None:
            labeled = seed_set
            state = {
                "identity": _identity(c), "version": __version__, "finished": False,
                "rows": [], "labeled": labeled, "labels": y_cpu[labeled].clone(),
                "wrong": torch.zeros(len(labeled), dtype=torch.bool),
                "label_round": torch.zeros(len(labeled), dtype=torch.long),
                "model": None, "run_id": run_id,
            }
            model, start = None, 0
        else:
            start = len(state["rows"])
            model = self.new_model(start - 1)
            model.load_state_dict(state["model"])
            state["run_id"] = run_id or state.get("run_id")
            self.log(f"[{c.cell_id()}] resuming after round {start - 1} "
                     f"({len(state['labeled'])} labels); finished rounds are not retrained")
        if start == 0:
            self.log(f"[{c.cell_id()}] {c.dataset} ({len(self.data.y_train)} train / "
                     f"{len(self.data.y_test)} test) model={c.model} loss={c.spec.loss} "
                     f"pseudo_labels={c.spec.pseudo_labels} selector={c.spec.selector} "
                     f"device={self.device} rounds={c.rounds}")
        for r in range(start, c.rounds + 1):
            t0 = time.perf_counter()
            extra: dict[str, float] = {}
            if r > 0:
                in_l = torch.zeros(len(y_cpu), dtype=torch.bool)
                in_l[state["labeled"]] = True
                unlabeled = pool[~in_l[pool]]
                query, extra = self.select(model, unlabeled, r, labeled=state["labeled"], val=val)
                given, wrong = noisy_labels(y_cpu[query], self.data.num_classes, c.noise,
                                            generator(c.seed, "oracle", r))
                state["labeled"] = torch.cat([state["labeled"], query])
                state["labels"] = torch.cat([state["labels"], given])
                state["wrong"] = torch.cat([state["wrong"], wrong])
                state["label_round"] = torch.cat(
                    [state["label_round"], torch.full((len(query),), r, dtype=torch.long)])
            model, fit = self.fit(state["labeled"], state["labels"], r)
            extra.update(self.alpha_diagnostics(model, state["labeled"]))
            metrics, rel = self.evaluate(model, self.data.x_test, self.data.y_test)
            state.setdefault("reliability", []).append(
                pd.DataFrame({"round": r, **{k: v.numpy() for k, v in rel.items()}}))
            if c.val_size:
                vi = val.to(self.device)
                vm, _ = self.evaluate(model, self.data.x_train[vi], self.data.y_train[vi])
                metrics.update({f"val_{k}": v for k, v in vm.items()})
            row = self._row(r, len(state["labeled"]), metrics, fit, extra, state["wrong"],
                            time.perf_counter() - t0)
            state["rows"].append(row)
            state["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            state["finished"] = r == c.rounds
            self._save(state)
            self.tracker.log_round(row)
            sel_s = extra.get("inference_seconds", 0.0) + extra.get("selection_seconds", 0.0)
            self.log(
                f"[{c.cell_id()}] round {r:>3}/{c.rounds} labels {row['labels']:>6} "
                f"acc {row['accuracy']:.4f} ece {row['ece']:.4f} nll {row['nll']:.3f} "
                f"brier {row['brier']:.4f} epochs {fit.epochs:>3}{self._diag_text(row)} "
                f"train {fit.seconds:6.1f}s select {sel_s:5.1f}s "
                f"total {row['round_seconds']:6.1f}s{self._eta_text(state['rows'])}"
            )
        self.tracker.finish()
        return pd.DataFrame(state["rows"])


def _hms(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _fmt(v: float) -> str:
    return "-" if v != v else f"{v:.3f}"


def run_cell(cfg: ExperimentConfig, out_dir: str | os.PathLike, **kw) -> pd.DataFrame:
    """Run (or resume, or skip if finished) one cell; returns its per-round table."""
    return Cell(cfg, out_dir, **kw).run()


