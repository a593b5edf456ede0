"""MLflow logging of one cell: a run per cell, metrics per round with step = number of labels.

Tracking never owns results: the per-round table on disk is the source of truth. If the
tracking server fails, the tracker warns once, stops trying for this run, and the AL loop
goes on; ``asknlearn backfill`` later copies the tables into MLflow without duplicating runs.
"""

from __future__ import annotations

import math
import os
import sys
import warnings
from typing import Any

METRIC_COLUMNS = (
    "accuracy", "ece", "nll", "brier", "train_epochs", "train_accuracy", "train_seconds",
    "inference_seconds", "selection_seconds", "round_seconds", "wrong_label_fraction",
    "pseudo_label_accuracy", "refined_fraction",
    "val_accuracy", "val_ece", "val_nll", "val_brier",
)
CELL_TAG = "asknlearn.cell"


def tracking_uri(cfg_uri: str | None) -> str | None:
    return cfg_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def _quiet_mlflow_env() -> None:
    # fail fast instead of MLflow's minutes of retries when the server is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


class NullTracker:
    run_id: str | None = None

    def start(self, cfg: dict[str, Any], run_id: str | None = None) -> str | None:
        return None

    def log_round(self, row: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


class MlflowTracker:
    """Logs through an explicit ``MlflowClient`` (no global active-run state)."""

    def __init__(self, uri: str, experiment: str):
        _quiet_mlflow_env()
        self.uri, self.experiment = uri, experiment
        self.client = None
        self.run_id: str | None = None
        self.failed = False

    def _fail(self, exc: Exception) -> None:
        if not self.failed:
            msg = (f"MLflow tracking at {self.uri!r} failed ({type(exc).__name__}: "
                   f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); the run goes on and "
                   "its tables stay the source of truth. Backfill later with: "
                   "asknlearn backfill RUN_DIR... --tracking-uri URI")
            warnings.warn(msg, RuntimeWarning, stacklevel=3)
            print(f"WARNING: {msg}", file=sys.stderr, flush=True)
        self.failed = True

    def start(self, cfg: dict[str, Any], run_id: str | None = None) -> str | None:
        try:
            self.run_id = start_run(self.uri, self.experiment, cfg, run_id)
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(self.uri)
        except Exception as exc:
            self._fail(exc)
        return self.run_id

    def log_round(self, row: dict[str, Any]) -> None:
        if self.failed or self.run_id is None:
            return
        try:
            log_rows(self.client, self.run_id, [row])
        except Exception as exc:
            self._fail(exc)

    def finish(self) -> None:
        if self.failed or self.run_id is None:
            return
        try:
            self.client.set_terminated(self.run_id, "FINISHED")
        except Exception as exc:
            self._fail(exc)


def start_run(uri: str, experiment: str, cfg: dict[str, Any], run_id: str | None = None) -> str:
    """Create (or reopen ``run_id``, or the existing run of this cell) and log params/tags."""
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        try:
            exp_id = client.create_experiment(experiment)
        except Exception:  # another job created it first
            exp_id = client.get_experiment_by_name(experiment).experiment_id
    else:
        exp_id = exp.experiment_id
    cell = cell_id(cfg)
    if run_id is None:
        found = client.search_runs([exp_id], filter_string=f"tags.`{CELL_TAG}` = '{cell}'",
                                   max_results=1)
        run_id = found[0].info.run_id if found else None
    if run_id is not None:
        client.update_run(run_id, "RUNNING")
        return run_id
    tags = {
        CELL_TAG: cell, "dataset": cfg["dataset"], "strategy": cfg["strategy"],
        "seed": str(cfg["seed"]), "noise": f"{cfg['noise']:g}", "study": cfg["study"],
        "mlflow.runName": f"{cfg['dataset']}-{cfg['strategy']}-s{cfg['seed']}-n{cfg['noise']:g}",
    }
    run = client.create_run(exp_id, tags=tags)
    params = [Param(k, str(v)[:6000]) for k, v in sorted(cfg.items())]
    client.log_batch(run.info.run_id, params=params,
                     tags=[RunTag(k, v) for k, v in tags.items()])
    return run.info.run_id


def cell_id(cfg: dict[str, Any]) -> str:
    return f"{cfg['study']}/{cfg['dataset']}/{cfg['strategy']}/seed{cfg['seed']}/noise{cfg['noise']:g}"


def log_rows(client, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Log each row's metrics at step = labels (timestamps fixed by round, so idempotent)."""
    from mlflow.entities import Metric

    metrics = []
    for row in rows:
        step = int(row["labels"])
        for key in METRIC_COLUMNS + ("round",):
            v = row.get(key)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            metrics.append(Metric(key, float(v), int(row.get("timestamp_ms", 0)), step))
    for s in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[s : s + 1000])


def make_tracker(cfg) -> NullTracker | MlflowTracker:
    uri = tracking_uri(cfg.tracking_uri)
    if not cfg.tracking or uri is None:
        return NullTracker()
    return MlflowTracker(uri, cfg.experiment or cfg.study)


def init_store(uri: str, experiment: str) -> str:
    """Create the tracking store (schema migrations for a database URI) and the experiment
    once, before parallel jobs start: many first writers racing on a fresh SQLite store fail."""
    _quiet_mlflow_env()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return exp.experiment_id if exp else client.create_experiment(experiment)
