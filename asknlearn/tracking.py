"""MLflow logging of one cell: a run per cell, metrics per round with step = number of labels.

Tracking never owns results: the per-round table on disk is the source of truth. Two kinds of
failure are told apart:

- *transient* (SQLite "database is locked", a busy or deadlocked database, HTTP 429/503):
  retried a bounded number of times with jittered exponential back-off, so many jobs sharing one
  store each end up with exactly one run holding every round;
- *down* (connection refused, unreachable host, time-out) or anything else: the tracker warns once,
  stops trying for this run, and the AL loop goes on; ``asknlearn backfill`` later copies the
  tables into MLflow without duplicating runs or metric points.

Every write is idempotent, so a retry never duplicates: a cell's run is found by its
``asknlearn.cell`` tag before one is created, and metric points carry the round's fixed
timestamp, so only the (key, step) points missing from a run are ever logged.
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from asknlearn.errors import AskNLearnError
from asknlearn.naming import noise_token

METRIC_COLUMNS = (
    "accuracy", "ece", "nll", "brier", "train_epochs", "train_accuracy", "train_seconds",
    "inference_seconds", "selection_seconds", "round_seconds", "wrong_label_fraction",
    "val_accuracy", "val_ece", "val_nll", "val_brier",
    "alpha_mean", "alpha_median", "alpha_p90",
    "val_pseudo_label_accuracy", "val_refined_fraction", "val_refined_argmax_accuracy",
    "val_refined_accuracy",
    "oracle_pseudo_label_accuracy", "oracle_refined_fraction", "oracle_refined_argmax_accuracy",
    "oracle_refined_accuracy",
)
LOGGED_KEYS = METRIC_COLUMNS + ("round",)
CELL_TAG = "asknlearn.cell"
# keys of the resolved config.yaml that are not config fields
_NON_PARAM_KEYS = {"version"}

T = TypeVar("T")


class TrackingError(AskNLearnError):
    """The tracking store could not be reached or written by a command whose job that is."""

    exit_code = 1


def tracking_uri(cfg_uri: str | None) -> str | None:
    return cfg_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def _quiet_mlflow_env() -> None:
    # fail fast instead of MLflow's minutes of HTTP retries when the server is down; our own
    # retry loop handles the transient cases
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # MLflow logs a full traceback for every SQLite "database is locked" before raising it;
    # those are retried here, so the user must not see them (a final failure is still reported)
    logging.getLogger("mlflow.store.db.utils").addFilter(_drop_retried_db_errors)


def _drop_retried_db_errors(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("SQLAlchemy database error")


# ---------------------------------------------------------------------------- retries
# substrings (lower case) of the exception chain's messages
_DOWN_MARKERS = (
    "connection refused", "failed to establish", "name or service not known",
    "nodename nor servname", "no route to host", "timed out", "read timeout",
    "connection aborted", "remotedisconnected", "unable to open database file",
)
_TRANSIENT_MARKERS = (
    "database is locked", "database table is locked", "sqlite_busy", "deadlock",
    "could not serialize", "lock timeout", "too many connections",
    "temporarily_unavailable", "request_limit_exceeded", "resource_exhausted",
    "error code 429", "error code 503", "error code 502", "error code 504",
    # a store whose schema another process is creating right now
    "no such table", "already exists",
)
_TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "RESOURCE_EXHAUSTED"}


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying (a busy store) rather than a store that is down."""
    chain = _chain(exc)
    text = " ".join(f"{type(e).__name__} {e}" for e in chain).lower()
    if any(m in text for m in _DOWN_MARKERS):
        return False
    if any(m in text for m in _TRANSIENT_MARKERS):
        return True
    return any(getattr(e, "error_code", None) in _TRANSIENT_CODES for e in chain)


def retry(fn: Callable[[], T], attempts: int = 8, base_s: float = 0.1, cap_s: float = 3.0,
          sleep: Callable[[float], None] | None = None) -> T:
    """Call ``fn`` until it succeeds, retrying transient store errors with jittered back-off.

    At most ``attempts`` calls (about 10 s of waiting in all); a non-transient error, or the
    last transient one, propagates. The jitter keeps parallel jobs from retrying in lockstep.
    """
    rng = random.Random()  # seeded from os.urandom: differs between processes
    for k in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if k == attempts - 1 or not is_transient(exc):
                raise
            (sleep or time.sleep)(min(cap_s, base_s * 2**k) * rng.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------- store operations
def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (absolute, or relative to the working dir)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


@contextmanager
def _store_init_lock(uri: str) -> Iterator[None]:
    """Serialize store creation between processes for a SQLite URI.

    Building a client creates the schema of a fresh store (or checks it, and adds MLflow's
    default experiment): parallel first writers race on that (measured: 16 jobs on a fresh
    file, 15 failed with migration errors). An ``flock`` on ``<db>.lock`` makes them take turns;
    it is held only while the client is built. Other URIs (servers) serialize on their own.
    """
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    import fcntl

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def client_for(uri: str):
    """An ``MlflowClient`` for ``uri``; building it creates or checks a SQLite store's schema."""
    _quiet_mlflow_env()
    from mlflow.tracking import MlflowClient

    with _store_init_lock(uri):
        return retry(lambda: MlflowClient(uri))


def experiment_id(client, name: str, create: bool = True) -> str | None:
    """The id of experiment ``name``, created if missing (tolerating a racing creator)."""

    def once() -> str | None:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        try:
            return client.create_experiment(name)
        except Exception as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                raise
            exp = client.get_experiment_by_name(name)  # another job created it first
            if exp is None:
                raise
            return exp.experiment_id

    return retry(once)


def cell_id(cfg: dict[str, Any]) -> str:
    noise = noise_token(cfg["noise"])
    return f"{cfg['study']}/{cfg['dataset']}/{cfg['strategy']}/seed{cfg['seed']}/noise{noise}"


def cell_tags(cfg: dict[str, Any]) -> dict[str, str]:
    noise = noise_token(cfg["noise"])
    return {
        CELL_TAG: cell_id(cfg), "dataset": str(cfg["dataset"]), "strategy": str(cfg["strategy"]),
        "seed": str(cfg["seed"]), "noise": noise, "study": str(cfg["study"]),
        "mlflow.runName": f"{cfg['dataset']}-{cfg['strategy']}-s{cfg['seed']}-n{noise}",
    }


def find_run(client, exp_id: str, cell: str):
    """The run of ``cell`` in ``exp_id`` (the oldest, should duplicates exist), or None."""
    quote = '"' if "'" in cell else "'"
    found = retry(lambda: client.search_runs(
        [exp_id], filter_string=f"tags.`{CELL_TAG}` = {quote}{cell}{quote}",
        order_by=["attributes.start_time ASC"], max_results=1))
    return found[0] if found else None


def _get_live_run(client, run_id: str):
    """``run_id``'s run if it exists and is not deleted, else None."""
    try:
        run = retry(lambda: client.get_run(run_id))
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            return None
        raise
    return None if run.info.lifecycle_stage == "deleted" else run


def ensure_run(client, exp_id: str, cfg: dict[str, Any], run_id: str | None = None):
    """The cell's run (``run_id`` if it still exists, else the one tagged with the cell, else a
    new one) with its tags and every config param. Returns ``(run, created)``.

    Safe to retry: a run is only created after a search for the cell's tag finds none, and
    the tags go in with ``create_run`` itself, so a retried call finds what a failed one made.
    """
    from mlflow.entities import Param

    run = _get_live_run(client, run_id) if run_id else None
    if run is not None and run.data.tags.get(CELL_TAG) != cell_id(cfg):
        run = None  # a stale id from a different store or cell
    run = run or find_run(client, exp_id, cell_id(cfg))
    created = run is None
    if created:
        tags = cell_tags(cfg)
        run = retry(lambda: client.create_run(exp_id, tags=tags))
        run = retry(lambda: client.get_run(run.info.run_id))
    # params are write-once in MLflow: log only the missing ones, so a resume whose runtime
    # keys (threads, device, ...) differ, or a retry, never conflicts
    have = run.data.params
    params = [Param(k, str(v)[:6000]) for k, v in sorted(cfg.items())
              if k not in _NON_PARAM_KEYS and k not in have]
    for s in range(0, len(params), 100):
        retry(lambda s=s: client.log_batch(run.info.run_id, params=params[s : s + 100]))
    return run, created


def row_metrics(rows: Iterable[dict[str, Any]]) -> list:
    """The metric points of ``rows``: one per logged key and round, at step = labels, with the
    round's own timestamp (so logging a row twice is a no-op for the store)."""
    from mlflow.entities import Metric

    metrics = []
    for row in rows:
        step = int(row["labels"])
        ts = row.get("timestamp_ms")
        ts = 0 if ts is None or (isinstance(ts, float) and math.isnan(ts)) else int(ts)
        for key in LOGGED_KEYS:
            v = row.get(key)
            if v is None:
                continue
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if math.isnan(v):
                continue
            metrics.append(Metric(key, v, ts, step))
    return metrics


def missing_metrics(client, run_id: str, metrics: Sequence) -> list:
    """The points of ``metrics`` whose (key, step) the run does not hold yet."""
    have: dict[str, set[int]] = {}
    for key in sorted({m.key for m in metrics}):
        hist = retry(lambda key=key: client.get_metric_history(run_id, key))
        have[key] = {m.step for m in hist}
    return [m for m in metrics if m.step not in have[m.key]]


def log_metrics(client, run_id: str, metrics: Sequence) -> None:
    for s in range(0, len(metrics), 1000):
        retry(lambda s=s: client.log_batch(run_id, metrics=list(metrics[s : s + 1000])))


def log_rows(client, run_id: str, rows: list[dict[str, Any]]) -> None:
    """Log each row's metrics at step = labels (timestamps fixed by round, so idempotent)."""
    log_metrics(client, run_id, row_metrics(rows))


def start_run(uri: str, experiment: str, cfg: dict[str, Any], run_id: str | None = None) -> str:
    """Create (or reopen ``run_id``, or the existing run of this cell) and log params/tags."""
    client = client_for(uri)
    run, _ = ensure_run(client, experiment_id(client, experiment), cfg, run_id)
    retry(lambda: client.update_run(run.info.run_id, "RUNNING"))
    return run.info.run_id


# ---------------------------------------------------------------------------- the loop's tracker
class NullTracker:
    run_id: str | None = None

    def start(self, cfg: dict[str, Any], run_id: str | None = None,
              rows: Sequence[dict[str, Any]] = ()) -> str | None:
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
            first = str(exc).splitlines()[0][:200] if str(exc) else ""
            print(f"asknlearn: warning: MLflow tracking at {self.uri!r} failed "
                  f"({type(exc).__name__}: {first}); the run goes on and its tables stay the "
                  "source of truth. Backfill later with: "
                  f"asknlearn backfill RUN_DIR... --tracking-uri {self.uri}",
                  file=sys.stderr, flush=True)
        self.failed = True

    def start(self, cfg: dict[str, Any], run_id: str | None = None,
              rows: Sequence[dict[str, Any]] = ()) -> str | None:
        """Open the cell's run; on a resume, ``rows`` (the finished rounds) are logged where
        the run lacks them (e.g. the job died between saving a round and logging it)."""
        try:
            self.client = client_for(self.uri)
            run, _ = ensure_run(self.client, experiment_id(self.client, self.experiment), cfg, run_id)
            self.run_id = run.info.run_id
            retry(lambda: self.client.update_run(self.run_id, "RUNNING"))
            if rows:
                log_metrics(self.client, self.run_id,
                            missing_metrics(self.client, self.run_id, row_metrics(rows)))
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
            retry(lambda: self.client.set_terminated(self.run_id, "FINISHED"))
        except Exception as exc:
            self._fail(exc)


def make_tracker(cfg) -> NullTracker | MlflowTracker:
    uri = tracking_uri(cfg.tracking_uri)
    if not cfg.tracking or uri is None:
        return NullTracker()
    return MlflowTracker(uri, cfg.experiment or cfg.study)


def init_store(uri: str, experiment: str) -> str:
    """Create the tracking store (schema migrations for a database URI) and the experiment
    once, before parallel jobs start: many first writers racing on a fresh SQLite store fail."""
    return experiment_id(client_for(uri), experiment)
