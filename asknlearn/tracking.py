"""MLflow logging of one cell: a run per cell, metrics per round with step = number of labels.

Tracking never owns results: the per-round table on disk is the source of truth. Two kinds of
failure are told apart:

- *transient* (SQLite "database is locked", a busy or deadlocked database, HTTP 429/503):
  retried a bounded number of times with jittered exponential back-off, so many jobs sharing one
  store each end up with exactly one run holding every round;
- *down* (connection refused, unreachable host, time-out) or anything else: the tracker warns once,
  stops trying for this run, and the AL loop goes on; ``asknlearn backfill`` later copies the
  tables (and the artifacts) into MLflow without duplicating runs or metric points.

Every write is idempotent, so a retry never duplicates: a cell's run is found by its
``asknlearn.cell`` tag before one is created, metric points carry the round's fixed
timestamp, so only the (key, step) points missing from a run are ever logged, and an artifact
is a file of the cell folder logged under its own name (a re-log replaces it).

What a cell's run holds:

- params: the cell's config, less its runtime keys (``config.RUNTIME_KEYS``: device,
  threads, paths, ...), which go to tags (``asknlearn.runtime.threads``; the paths as
  ``asknlearn.data_root``/``tracking_uri``) and are updated by a resume on another machine, so
  two machines' runs of one cell compare cleanly;
- metrics: every column of ``METRIC_COLUMNS`` under a grouped name (``metric_name``:
  ``test/accuracy``, ``val/ece``, ``time/train_seconds``, ``train/epochs``,
  ``diag/pseudo_label_accuracy``), at step = labels;
- tags: the cell (``asknlearn.cell``, dataset, strategy, seed, noise, study), provenance (git
  commit and dirty flag, package, torch and CUDA versions, the device actually used and its
  name, the host) and ``mlflow.parentRunId``: the study's parent run (``study_run``), so the
  UI groups a study;
- artifacts: ``config.yaml``, ``rounds.csv``, ``queries.csv``, ``reliability.csv``, logged
  when the cell finishes, when it is resumed, and when it fails;
- status: FINISHED when the cell is done, KILLED on SIGINT/SIGTERM, FAILED on a crash; a
  resumed cell reopens the same run (RUNNING) and ends it FINISHED.

``ASKNLEARN_SYSTEM_METRICS=1`` also logs MLflow's system metrics (CPU, memory, disk, network,
GPU: ``system/...``) every ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` seconds (default 10)
while a cell runs.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from asknlearn.catalogue import METRICS
from asknlearn.config import RUNTIME_KEYS
from asknlearn.errors import AskNLearnError
from asknlearn.naming import noise_token
from asknlearn.records import METRIC_COLUMNS

# the row columns logged as metrics come from the records schema (``round`` is not one: the
# step already is labels)
CELL_TAG = "asknlearn.cell"
STUDY_TAG = "asknlearn.study_run"  # on a study's parent run: the study's name
PARENT_TAG = "mlflow.parentRunId"  # what the MLflow UI nests runs by
PARENT_ENV = "ASKNLEARN_PARENT_RUN_ID"  # overrides the parent found by its tag
SYSTEM_METRICS_ENV = "ASKNLEARN_SYSTEM_METRICS"
# the files of a cell folder a cell's run carries as artifacts
CELL_ARTIFACTS = ("config.yaml", "rounds.csv", "queries.csv", "reliability.csv")
# keys of the resolved config.yaml that are not params: not config fields, or the runtime keys
# (device, threads, paths, ...), which change nothing a cell computes and may change on a
# resume on another machine: they are tags, updated by every start
_NON_PARAM_KEYS = {"version"} | RUNTIME_KEYS
RUNTIME_TAG = "asknlearn.runtime."  # + key

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


def metric_name(column: str) -> str:
    """The MLflow name of a per-round column, grouped the way the MLflow UI sections names by
    their prefix: the catalogue's group for its metrics (``test/``), ``val/`` for ``val_*``, ``time/`` for
    ``*_seconds``, ``train/`` for ``train_*`` and ``diag/`` for every other diagnostic. A
    function of the name, so a new column gets its group without a table to update."""
    if column in METRICS:
        return f"{METRICS[column].group}/{column}"
    if column.startswith("val_"):
        return f"val/{column[4:]}"
    if column.endswith("_seconds"):
        return f"time/{column}"
    if column.startswith("train_"):
        return f"train/{column[6:]}"
    return f"diag/{column}"


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
    import tenacity

    rng = random.Random()  # seeded from os.urandom: differs between processes

    def wait(state: tenacity.RetryCallState) -> float:
        return min(cap_s, base_s * 2 ** (state.attempt_number - 1)) * rng.uniform(0.5, 1.5)

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts), wait=wait,
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, Exception) and is_transient(e)),
        sleep=sleep or (lambda s: time.sleep(s)), reraise=True)(fn)


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


def _artifact_location(uri: str | None) -> str | None:
    """Where a new experiment of a SQLite store keeps artifacts: ``mlartifacts/`` next to the
    database (MLflow's default, ``./mlruns`` of whichever folder a job ran in, would scatter
    them). For a server, None: the server decides."""
    db = _sqlite_path(uri or "")
    return (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None


def experiment_id(client, name: str, create: bool = True) -> str | None:
    """The id of experiment ``name``, created if missing (tolerating a racing creator)."""

    def once() -> str | None:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        if not create:
            return None
        try:
            return client.create_experiment(
                name, artifact_location=_artifact_location(getattr(client, "tracking_uri", None)))
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


def runtime_tags(cfg: dict[str, Any]) -> dict[str, str]:
    """The runtime keys this process runs with (``asknlearn.runtime.threads``, ...), as tags:
    a resume on another machine replaces them; the paths are :func:`path_tags`."""
    return {f"{RUNTIME_TAG}{k}": str(cfg[k]) for k in sorted(RUNTIME_KEYS - {"tracking_uri", "data_root"})
            if k in cfg}


def path_tags(cfg: dict[str, Any], resolve: bool = False) -> dict[str, str]:
    """The machine-specific config values as tags (never params): the tracking URI and the
    data root (with ``resolve``, the absolute root this process reads, the default included)."""
    tags = {}
    if cfg.get("tracking_uri"):
        tags["asknlearn.tracking_uri"] = str(cfg["tracking_uri"])
    root = cfg.get("data_root")
    if resolve:
        from asknlearn.data import default_data_root

        root = Path(str(root)).expanduser() if root else default_data_root()
        root = root.resolve()
    if root:
        tags["asknlearn.data_root"] = str(root)
    return tags


@cache
def _git_state() -> tuple[str, bool] | None:
    """(commit, dirty) of the git checkout the package runs from, or None outside one."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        # tracked files only: results/ and data/ under the checkout do not make it dirty
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                 "--untracked-files=no"], capture_output=True, text=True,
                                timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, bool(status.strip())


def _cpu_name() -> str:
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    import platform

    return platform.processor() or platform.machine() or "cpu"


def provenance_tags(device: Any = None) -> dict[str, str]:
    """Where and with what a run ran: git commit and dirty flag, package, torch and CUDA
    versions, the device actually used (``cuda:0``, never ``auto``) and its name, the host."""
    import torch

    from asknlearn import __version__

    dev = torch.device(str(device)) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        dev = torch.device("cuda", index)
        name = torch.cuda.get_device_name(index)
    else:
        name = _cpu_name()
    tags = {
        "asknlearn.version": __version__, "asknlearn.torch_version": torch.__version__,
        "asknlearn.cuda_version": torch.version.cuda or "none", "asknlearn.device": str(dev),
        "asknlearn.device_name": name, "asknlearn.host": socket.gethostname(),
    }
    git = _git_state()
    if git is not None:
        tags["mlflow.source.git.commit"], dirty = git
        tags["asknlearn.git_dirty"] = str(dirty).lower()
    return tags


def _search_tag(client, exp_id: str, key: str, value: str):
    """The oldest run of ``exp_id`` whose tag ``key`` is exactly ``value``, or None.

    MLflow's filter strings cannot quote a value holding both quote characters: such a value
    is searched with LIKE, its quotes as ``_`` wildcards, and matched exactly here."""
    if "'" in value and '"' in value:
        pattern = value.replace("'", "_").replace('"', "_")
        flt, limit = f"tags.`{key}` LIKE '{pattern}'", 1000
    else:
        flt, limit = f"tags.`{key}` = " + (f'"{value}"' if "'" in value else f"'{value}'"), 1
    found = retry(lambda: client.search_runs(
        [exp_id], filter_string=flt, order_by=["attributes.start_time ASC"], max_results=limit))
    return next((r for r in found if r.data.tags.get(key) == value), None)


def find_run(client, exp_id: str, cell: str):
    """The run of ``cell`` in ``exp_id`` (the oldest, should duplicates exist), or None."""
    return _search_tag(client, exp_id, CELL_TAG, cell)


def study_run(client, exp_id: str, study: str, create: bool = False):
    """The parent run of ``study`` (tagged ``asknlearn.study_run``): found, or created when
    ``create``. Only single-process commands create it (``init-store``, ``log-study``,
    ``backfill``), so parallel cells never race to make two."""
    found = _search_tag(client, exp_id, STUDY_TAG, study)
    if found is not None:
        return found
    if not create:
        return None
    tags = {STUDY_TAG: study, "study": study, "mlflow.runName": f"{study} (study)"}
    run = retry(lambda: client.create_run(exp_id, tags=tags))
    return retry(lambda: client.get_run(run.info.run_id))


def _get_live_run(client, run_id: str):
    """``run_id``'s run if it exists and is not deleted, else None."""
    try:
        run = retry(lambda: client.get_run(run_id))
    except Exception as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
            return None
        raise
    return None if run.info.lifecycle_stage == "deleted" else run


def parent_run_id(client, exp_id: str, study: str) -> str | None:
    """The run id a cell of ``study`` nests under: ``$ASKNLEARN_PARENT_RUN_ID`` when set,
    else the study's parent run if one exists."""
    env = os.environ.get(PARENT_ENV)
    if env:
        return env
    run = study_run(client, exp_id, study)
    return run.info.run_id if run is not None else None


def ensure_run(client, exp_id: str, cfg: dict[str, Any], run_id: str | None = None,
               tags: dict[str, str] | None = None, parent: str | None = None):
    """The cell's run (``run_id`` if it still exists, else the one tagged with the cell, else a
    new one) with its tags, ``tags``, every config param and, when ``parent`` is given (else
    the study's, see ``parent_run_id``), its parent. Returns ``(run, created)``.

    Safe to retry: a run is only created after a search for the cell's tag finds none, and
    the tags go in with ``create_run`` itself, so a retried call finds what a failed one made.
    """
    from mlflow.entities import Param, RunTag

    run = _get_live_run(client, run_id) if run_id else None
    if run is not None and run.data.tags.get(CELL_TAG) != cell_id(cfg):
        run = None  # a stale id from a different store or cell
    run = run or find_run(client, exp_id, cell_id(cfg))
    created = run is None
    # machine paths as the config has them only where the run has none (a backfill must not
    # replace the absolute ones the cell's own process logged)
    want = {**{k: v for k, v in path_tags(cfg).items() if created or k not in run.data.tags},
            **runtime_tags(cfg), **cell_tags(cfg), **(tags or {})}
    parent = parent or parent_run_id(client, exp_id, str(cfg["study"]))
    if parent:
        want[PARENT_TAG] = parent
    if created:
        run = retry(lambda: client.create_run(exp_id, tags=want))
        run = retry(lambda: client.get_run(run.info.run_id))
    else:
        todo = [RunTag(k, v) for k, v in want.items() if run.data.tags.get(k) != v]
        if todo:
            retry(lambda: client.log_batch(run.info.run_id, tags=todo))
    # params are write-once in MLflow: log only the missing ones, so a retry never conflicts
    # (the runtime keys, which may differ on a resume, are tags)
    have = run.data.params
    params = [Param(k, str(v)[:6000]) for k, v in sorted(cfg.items())
              if k not in _NON_PARAM_KEYS and k not in have]
    for s in range(0, len(params), 100):
        retry(lambda s=s: client.log_batch(run.info.run_id, params=params[s : s + 100]))
    return run, created


def row_metrics(rows: Iterable[dict[str, Any]]) -> list:
    """The metric points of ``rows``: one per column of ``METRIC_COLUMNS`` and round, named by
    ``metric_name``, at step = labels, with the round's own timestamp (so logging a row twice
    is a no-op for the store)."""
    from mlflow.entities import Metric

    metrics = []
    for row in rows:
        step = int(row["labels"])
        ts = row.get("timestamp_ms")
        ts = 0 if ts is None or (isinstance(ts, float) and math.isnan(ts)) else int(ts)
        for key in METRIC_COLUMNS:
            v = row.get(key)
            if v is None:
                continue
            try:
                v = float(v)
            except (TypeError, ValueError):
                continue
            if math.isnan(v):
                continue
            metrics.append(Metric(metric_name(key), v, ts, step))
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


def _artifact_sizes(client, run_id: str, path: str | None = None) -> dict[str, int | None]:
    """Every artifact file under ``path`` of the run, by path, with its size."""
    out: dict[str, int | None] = {}
    for info in retry(lambda: client.list_artifacts(run_id, path)):
        if info.is_dir:
            out.update(_artifact_sizes(client, run_id, info.path))
        else:
            out[info.path] = info.file_size
    return out


def log_files(client, run_id: str, files: Sequence[tuple[Path, str | None]],
              only_changed: bool = False) -> int:
    """Log each (local file, artifact folder or None) as an artifact of the run, under its
    own name, so a re-log replaces it. With ``only_changed``, only the files the run lacks or
    holds with another size. Returns how many were logged."""
    files = [(f, d) for f, d in files if f.is_file()]
    if only_changed and files:
        have = _artifact_sizes(client, run_id)
        files = [(f, d) for f, d in files
                 if have.get(f"{d}/{f.name}" if d else f.name) != f.stat().st_size]
    for f, d in files:
        retry(lambda f=f, d=d: client.log_artifact(run_id, str(f), d))
    return len(files)


def cell_artifacts(cell_dir: Path) -> list[tuple[Path, str | None]]:
    """The artifacts of a cell's run: its config and tables, at the run's artifact root."""
    return [(Path(cell_dir) / name, None) for name in CELL_ARTIFACTS]


def start_run(uri: str, experiment: str, cfg: dict[str, Any], run_id: str | None = None) -> str:
    """Create (or reopen ``run_id``, or the existing run of this cell) and log params/tags."""
    client = client_for(uri)
    run, _ = ensure_run(client, experiment_id(client, experiment), cfg, run_id)
    retry(lambda: client.update_run(run.info.run_id, "RUNNING"))
    return run.info.run_id


def status_for(exc: BaseException | None) -> str:
    """The MLflow status of a run that ended with ``exc``: KILLED for an interrupt
    (SIGINT's KeyboardInterrupt, a SystemExit), FAILED for anything else."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt | SystemExit) else "FAILED"


# ---------------------------------------------------------------------------- the loop's tracker
class NullTracker:
    run_id: str | None = None

    def start(self, cfg: dict[str, Any], run_id: str | None = None,
              rows: Sequence[dict[str, Any]] = (), out_dir: str | os.PathLike | None = None,
              device: Any = None) -> str | None:
        return None

    def log_round(self, row: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass

    def fail(self, exc: BaseException | str | None = None) -> None:
        pass


# runs opened by a tracker of this process and not ended yet, by run id (the newest tracker
# of a run wins): ended FAILED (or KILLED after SIGINT) when the process exits with them open
_OPEN: dict[str, MlflowTracker] = {}
_OPEN_LOCK = threading.Lock()


@atexit.register
def _end_open_runs() -> None:
    """A process that exits with a run still open crashed (an error the CLI reported, or a
    caller that never called finish/fail): end those runs instead of leaving them RUNNING."""
    if not _OPEN:
        return
    # at exit, a server that went away must not hold the process up with MLflow's retries
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "5"
    for tracker in list(_OPEN.values()):
        try:  # another process may have resumed and finished the run since: leave it be
            if tracker.client.get_run(tracker.run_id).info.status != "RUNNING":
                continue
        except Exception:
            continue
        tracker.fail("KILLED" if tracker.interrupted else "FAILED")


class MlflowTracker:
    """Logs through an explicit ``MlflowClient`` (no global active-run state).

    The loop calls ``start``, ``log_round`` per round and ``finish``; ``fail(exc)`` ends the
    run KILLED or FAILED (``status_for``). While a run is open, SIGTERM ends it KILLED before
    the process dies as it would have, SIGINT marks it so, and a process that exits with the
    run still open ends it FAILED (KILLED after SIGINT): so no run stays RUNNING forever.
    """

    def __init__(self, uri: str, experiment: str):
        _quiet_mlflow_env()
        self.uri, self.experiment = uri, experiment
        self.client = None
        self.run_id: str | None = None
        self.failed = False
        self.interrupted = False
        self.ended = False
        self.out_dir: Path | None = None
        self._monitor = None
        self._handlers: dict[int, Any] = {}

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
              rows: Sequence[dict[str, Any]] = (), out_dir: str | os.PathLike | None = None,
              device: Any = None) -> str | None:
        """Open the cell's run (writing into ``out_dir``, on ``device``: the one actually
        used); on a resume, ``rows`` (the finished rounds) are logged where the run lacks them
        (e.g. the job died between saving a round and logging it), and so are the artifacts."""
        self.out_dir = Path(out_dir) if out_dir is not None else None
        try:
            self.client = client_for(self.uri)
            if device is None and cfg.get("device") not in (None, "auto"):
                device = cfg["device"]
            run, _ = ensure_run(self.client, experiment_id(self.client, self.experiment), cfg,
                                run_id, tags={**provenance_tags(device), **path_tags(cfg, resolve=True)})
            self.run_id, self.ended = run.info.run_id, False
            retry(lambda: self.client.update_run(self.run_id, "RUNNING"))
            if rows:
                log_metrics(self.client, self.run_id,
                            missing_metrics(self.client, self.run_id, row_metrics(rows)))
                self._log_artifacts()
        except Exception as exc:
            self._fail(exc)
            return self.run_id
        with _OPEN_LOCK:
            _OPEN[self.run_id] = self
        self._catch_signals()
        self._start_system_metrics(resume=bool(rows))
        return self.run_id

    def log_round(self, row: dict[str, Any]) -> None:
        if self.failed or self.run_id is None:
            return
        try:
            log_rows(self.client, self.run_id, [row])
        except Exception as exc:
            self._fail(exc)

    def finish(self) -> None:
        """The cell is done: log its artifacts, end the run FINISHED."""
        self._end("FINISHED")

    def fail(self, exc: BaseException | str | None = None) -> None:
        """The cell stopped early with ``exc`` (or the status itself, KILLED or FAILED): log
        the artifacts so far, end the run so (a no-op once the run has ended)."""
        self._end(exc if isinstance(exc, str) else status_for(exc))

    def _log_artifacts(self) -> None:
        if self.out_dir is not None:
            log_files(self.client, self.run_id, cell_artifacts(self.out_dir))

    def _end(self, status: str, artifacts: bool = True) -> None:
        with _OPEN_LOCK:
            if _OPEN.get(self.run_id) is self:
                del _OPEN[self.run_id]
        self._restore_signals()
        self._stop_system_metrics()
        if self.failed or self.run_id is None or self.ended:
            return
        self.ended = True
        try:
            if artifacts:
                self._log_artifacts()
            retry(lambda: self.client.set_terminated(self.run_id, status))
        except Exception as exc:
            self._fail(exc)

    # ---------------------------------------------------------------- signals
    def _catch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            prev = signal.getsignal(sig)
            if prev in (signal.SIG_IGN, None):
                continue  # ignored, or set from C: not ours to change
            self._handlers[sig] = prev
            signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        # forget a handler only once it is restored: a signal that still reaches _on_signal
        # (restoring failed off the main thread) must find its predecessor, or a SIGINT is lost
        for sig, prev in list(self._handlers.items()):
            with suppress(ValueError):  # not the main thread (an at-exit call)
                if signal.getsignal(sig) == self._on_signal:
                    signal.signal(sig, prev)
                del self._handlers[sig]

    def _on_signal(self, signum: int, frame) -> None:
        prev = self._handlers.get(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            # KeyboardInterrupt unwinds the loop (atomic writes clean up); the run ends
            # KILLED through fail() or at exit
            self.interrupted = True
            if callable(prev):
                prev(signum, frame)
            elif prev != signal.SIG_IGN:
                # SIG_DFL or a handler not set from Python (None): Python's own behaviour
                signal.default_int_handler(signum, frame)
            return
        # SIGTERM: end the run now (status only: quick), then die as the process would have
        self._end("KILLED", artifacts=False)
        if callable(prev):
            prev(signum, frame)
            return
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    # ---------------------------------------------------------------- system metrics
    def _start_system_metrics(self, resume: bool) -> None:
        if os.environ.get(SYSTEM_METRICS_ENV, "").strip().lower() not in ("1", "true", "yes"):
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(self.run_id, resume_logging=resume,
                                                 tracking_uri=self.uri)
            self._monitor.start()
        except Exception as exc:  # e.g. psutil missing: metrics are optional
            self._monitor = None
            print(f"asknlearn: warning: {SYSTEM_METRICS_ENV} is set but system metrics cannot "
                  f"be logged ({type(exc).__name__}: {exc})", file=sys.stderr, flush=True)

    def _stop_system_metrics(self) -> None:
        if self._monitor is not None:
            monitor, self._monitor = self._monitor, None
            with suppress(Exception):
                monitor.finish()


def make_tracker(cfg) -> NullTracker | MlflowTracker:
    uri = tracking_uri(cfg.tracking_uri)
    if not cfg.tracking or uri is None:
        return NullTracker()
    return MlflowTracker(uri, cfg.experiment or cfg.study)


def init_store(uri: str, experiment: str, study: str | None = None) -> tuple[str, str]:
    """Create the tracking store (schema migrations for a database URI), the experiment and
    the study's parent run once, before parallel jobs start: many first writers racing on a
    fresh SQLite store fail, and parallel cells must not race to create two parents.
    Returns (experiment id, parent run id); raises TrackingError when the store fails."""
    try:
        client = client_for(uri)
        exp_id = experiment_id(client, experiment)
        parent = study_run(client, exp_id, study or experiment, create=True)
    except AskNLearnError:
        raise
    except Exception as exc:
        raise store_error(uri, exc) from exc
    return exp_id, parent.info.run_id


def store_error(uri: str, exc: BaseException) -> TrackingError:
    """The one-line error of a tracking store that failed with ``exc``: what went wrong in a
    few words (``connection refused``) for a store that is down, else the error's first line."""
    text = " ".join(f"{type(e).__name__} {e}" for e in _chain(exc)).lower()
    down = next((m for m in _DOWN_MARKERS if m in text), None)
    if down is not None:
        what = f"cannot be reached ({down})"
    else:
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        what = f"failed ({type(exc).__name__}: {first})"
    return TrackingError(f"tracking store {uri!r} {what}; nothing is lost: rerun the same "
                         "command when it is back")
