"""A cell's folder on disk: its file names, the round-row schema, and how each file is written
and read. The bottom of the package's layering: no torch at import (only :func:`write_state`
and :func:`read_state` import it, when called), so the workflow, reports and benchmarks can
read and write cells cheaply.

A cell folder holds

- ``rounds.csv``: one row per finished round, columns :data:`ROUND_COLUMNS` (the ``val_*``
  metrics only when the cell has a validation split);
- ``queries.csv``: every labeled point, with the round it was labeled in and the label given;
- ``reliability.csv``: the test set's reliability-diagram bins for every round;
- ``config.yaml``: the resolved configuration and the package version;
- ``state.pt`` and ``state.pt.sha256``: what a resume needs (:func:`write_state`);
- ``.asknlearn.lock``: held by the one run writing the folder (:class:`CellLock`).

Guarantees: every file is replaced atomically (:func:`atomic_write`); one run at a time writes
a folder; loading a state can run no code (tensors through ``torch.load(weights_only=True)``,
the rest as JSON) and a state failing its SHA-256 checksum is never used; a full disk gives one
line naming the folder, and the last complete round stays on disk.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import math
import os
import re
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asknlearn.catalogue import METRICS
from asknlearn.errors import AskNLearnError, ConfigError

if TYPE_CHECKING:
    import pandas as pd

# ---------------------------------------------------------------------------- file names
ROUNDS_FILE = "rounds.csv"
QUERIES_FILE = "queries.csv"
RELIABILITY_FILE = "reliability.csv"
CONFIG_FILE = "config.yaml"
STATE_FILE = "state.pt"
CHECKSUM_FILE = STATE_FILE + ".sha256"
LOCK_FILE = ".asknlearn.lock"
# the files the package writes into a cell folder with atomic_write: their temp files, and only
# theirs, are removed as stale by the run holding the lock
CELL_FILES = (ROUNDS_FILE, QUERIES_FILE, RELIABILITY_FILE, CONFIG_FILE, STATE_FILE, CHECKSUM_FILE)
STATE_FORMAT = "asknlearn-cell-state/1"

# ---------------------------------------------------------------------------- the round row
CELL_KEYS = ("study", "dataset", "strategy", "seed", "noise")
TEXT_COLUMNS = ("study", "dataset", "strategy")  # every other column of a table is a number
META_COLUMNS = (*CELL_KEYS, "round", "labels")
TEST_METRICS = tuple(METRICS)  # the catalogue's metrics (section 4.1's four), on the test set
VAL_METRICS = tuple(f"val_{m}" for m in TEST_METRICS)  # the same on the validation split
TRAIN_COLUMNS = ("train_epochs", "train_accuracy")
TIMING_COLUMNS = ("train_seconds", "inference_seconds", "selection_seconds", "round_seconds")
LABEL_COLUMNS = ("n_wrong_labels", "wrong_label_fraction")
# per-round mechanism diagnostics: α of eq. 2 on L (stochastic networks); pseudo-label
# refinement on the validation split (val_*) and, for reading only, on the pool (oracle_*)
DIAGNOSTIC_COLUMNS = (
    "alpha_mean", "alpha_median", "alpha_p90",
    "val_pseudo_label_accuracy", "val_refined_fraction", "val_refined_argmax_accuracy",
    "val_refined_accuracy",
    "oracle_pseudo_label_accuracy", "oracle_refined_fraction", "oracle_refined_argmax_accuracy",
    "oracle_refined_accuracy",
    # noisy oracle: of the wrong labels in L, the fraction the trained model predicts as given
    # (memorised) and as the true class (corrected); reading only, like every oracle_* column
    "oracle_wrong_memorised", "oracle_wrong_corrected",
)
# rounds.csv's columns in order (the val_* metrics only in cells with a validation split)
ROUND_COLUMNS = (*META_COLUMNS, *TEST_METRICS, *VAL_METRICS, *TRAIN_COLUMNS, *TIMING_COLUMNS,
                 *LABEL_COLUMNS, *DIAGNOSTIC_COLUMNS, "timestamp_ms")
# every row has these, so every reader may rely on them
REQUIRED_COLUMNS = (*META_COLUMNS, *TEST_METRICS)
# the row's columns logged to MLflow as metrics (step = labels)
METRIC_COLUMNS = (*TEST_METRICS, *TRAIN_COLUMNS, *TIMING_COLUMNS, "wrong_label_fraction",
                  *VAL_METRICS, *DIAGNOSTIC_COLUMNS)
QUERY_COLUMNS = ("round", "index", "true_label", "given_label", "wrong")
RELIABILITY_COLUMNS = ("round", "bin", "lower", "upper", "count", "confidence", "accuracy")
# config.yaml keys a cell's readers (backfill, tracking) rely on
CONFIG_REQUIRED = ("study", "dataset", "strategy", "seed", "noise", "budget", "query_size")


class CellFolderError(AskNLearnError):
    """A cell folder that cannot be used as it is: a malformed table, a damaged or old-format
    state, a folder another run holds, a full disk. The message names the file and the fix."""


class DiskFullError(CellFolderError):
    """No space (or quota) left while writing a cell's file."""


def round_row(values: Mapping[str, Any], *, validation: bool) -> dict[str, Any]:
    """``values`` in :data:`ROUND_COLUMNS` order: missing diagnostics are NaN, the ``val_*``
    metrics present exactly when ``validation``; a key outside the schema is a bug."""
    unknown = set(values) - set(ROUND_COLUMNS)
    if unknown:
        raise KeyError(f"round row keys {sorted(unknown)} are not in records.ROUND_COLUMNS")
    cols = ROUND_COLUMNS if validation else tuple(c for c in ROUND_COLUMNS if c not in VAL_METRICS)
    return {c: values.get(c, math.nan) if c in DIAGNOSTIC_COLUMNS else values[c] for c in cols}


# ---------------------------------------------------------------------------- the folder
def cell_folder(out: str | os.PathLike) -> Path:
    """The cell folder ``out`` as a path, refused when it is empty (which would silently write
    into the current folder) or not writable: a ConfigError before anything is written."""
    if not str(out).strip():
        raise ConfigError(f"--out {str(out)!r} is empty; valid: a folder for the cell's files, "
                          "e.g. --out results/cell")
    path = Path(out)
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if not p.is_dir() or not os.access(p, os.W_OK | os.X_OK):
        raise ConfigError(f"output directory {str(path)!r} is not writable "
                          f"({str(p)!r} is not a writable folder); valid: a writable path")
    return path


def _space_error(path: Path, exc: OSError) -> DiskFullError | None:
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    what = "no space" if exc.errno == errno.ENOSPC else "no disk quota"
    return DiskFullError(
        f"{what} left on {str(path.parent)!r} while writing {path.name}; the files of the last "
        "complete round are intact: free some space and rerun the same command to resume")


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Write via a temp file in the same folder + os.replace: readers never see half a file.
    A full disk leaves the old file in place and raises :class:`DiskFullError` (one line)."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        # mkstemp makes 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        full = _space_error(path, exc) if isinstance(exc, OSError) else None
        if full is not None:
            raise full from exc
        raise


def _write_bytes(tmp: str, data: bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# atomic_write's temp names: "." + the file's name + "." + mkstemp's 8 random characters + ".tmp"
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def stale_temp_files(folder: Path, names: Iterable[str] = CELL_FILES) -> list[Path]:
    """Temp files that :func:`atomic_write` leaves behind when a job is killed mid-write, for
    the package's own ``names`` only: a user's ``.notes.md.tmp`` or another tool's temp file
    never matches. Remove them only while holding the folder's :class:`CellLock`."""
    names = set(names)
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _TEMP_NAME.match(p.name)
        if m and m["name"] in names and p.is_file():
            out.append(p)
    return sorted(out)


class CellLock:
    """An exclusive ``flock`` on the folder's ``.asknlearn.lock`` for the whole run: one
    writer per cell folder. The kernel releases it when the holder exits, however it exits
    (SIGKILL included), so a lock is never left stale; the file itself stays and only says who
    held it last (pid, host, start time), which a refused run names."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _space_error(self.path, exc) or CellFolderError(
                f"cannot open the cell lock {str(self.path)!r} ({exc.strerror}); "
                "valid: a cell folder this user can write") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise CellFolderError(
                f"cell folder {str(self.folder)!r} is in use by another run ({holder}); "
                "valid: wait for that run to finish, or another --out") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                               "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise _space_error(self.path, exc) or exc from None
        self._fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0).decode())
            return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            # the holder has the lock but has not yet written its name
            return "pid and host not yet written"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def __enter__(self) -> CellLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def locked_cell(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold the folder's lock, then remove the stale temp files of the package's own files
    (only the lock holder may: any other writer of them is gone)."""
    with CellLock(folder) as lock:
        for p in stale_temp_files(lock.folder):
            p.unlink(missing_ok=True)
        yield lock.folder


# ---------------------------------------------------------------------------- the state
def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _recover_hint(path: Path) -> str:
    return (f"the tables are intact: move {path.name} aside (e.g. mv {str(path)!r} "
            f"{str(path) + '.bad'!r}) and rerun the same command, which restarts the cell "
            "(or restore the state of a last good round if you keep one)")


def write_state(folder: Path, meta: Mapping[str, Any], tensors: Mapping[str, Any],
                previous_sha256: str | None = None) -> str:
    """Save a resume state: ``tensors`` (a nested dict of tensors) with ``torch.save``,
    ``meta`` (plain values: numbers, strings, lists, dicts) as JSON text inside the same file,
    so one atomic replace commits both. Returns the state's SHA-256.

    The checksum file is written first and names the new and the ``previous_sha256`` state:
    a job killed between the two writes leaves the previous state, which still verifies."""
    import torch

    buf = io.BytesIO()
    torch.save({"format": STATE_FORMAT, "meta": json.dumps(meta, allow_nan=True),
                "tensors": dict(tensors)}, buf)
    data = buf.getvalue()
    sha = _sha256(data)
    sums = {"file": STATE_FILE, "sha256": sha, "previous_sha256": previous_sha256}
    atomic_write(folder / CHECKSUM_FILE,
                 lambda p: _write_bytes(p, (json.dumps(sums) + "\n").encode()))
    atomic_write(folder / STATE_FILE, lambda p: _write_bytes(p, data))
    return sha


def read_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """``(meta, tensors, sha256)`` of the folder's resume state, None when it has none.

    Never runs code from the folder: the bytes are checked against the checksum file before
    anything is parsed, and tensors are read with ``torch.load(weights_only=True)``. A state
    without a checksum (the old pickle format), failing it, or not in this format is refused
    with one line saying how to recover."""
    path, sums_path = folder / STATE_FILE, folder / CHECKSUM_FILE
    if not path.exists():
        return None
    if not sums_path.exists():
        raise CellFolderError(
            f"{str(path)!r} has no checksum file {CHECKSUM_FILE}: it is an old-format state "
            "(a pickle, written before asknlearn checksummed its states) or its checksum was "
            "removed, and it is not loaded since loading it could run code; to start the cell "
            f"afresh, move {STATE_FILE} aside (e.g. mv {str(path)!r} {str(path) + '.old'!r}) "
            "and rerun the same command")
    try:
        data = path.read_bytes()
        sums = json.loads(sums_path.read_text())
        expected = {sums["sha256"], sums.get("previous_sha256")} - {None}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a checksum file"
        raise CellFolderError(f"cannot verify {str(path)!r}: {str(sums_path)!r} is unreadable "
                              f"({reason}); {_recover_hint(path)}") from None
    sha = _sha256(data)
    if sha not in expected:
        raise CellFolderError(
            f"{str(path)!r} fails its SHA-256 check ({len(data)} bytes; truncated, empty or "
            f"damaged) and is not used; {_recover_hint(path)}")
    import pickle

    import torch

    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT:
            raise ValueError("no state format tag")
        meta = json.loads(obj["meta"])
        tensors = obj["tensors"]
        if not isinstance(meta, dict) or not isinstance(tensors, dict):
            raise ValueError("malformed state")
    except (pickle.UnpicklingError, RuntimeError, ValueError, KeyError, TypeError, EOFError):
        raise CellFolderError(
            f"{str(path)!r} is not a cell state in format {STATE_FORMAT} (it holds other "
            f"objects, which are never loaded); {_recover_hint(path)}") from None
    return meta, tensors, sha


# ---------------------------------------------------------------------------- the tables
def write_table(path: Path, frame: pd.DataFrame) -> None:
    """One CSV table, atomically."""
    atomic_write(path, lambda p: frame.to_csv(p, index=False))


def write_config(folder: Path, config: Mapping[str, Any], version: str) -> None:
    """The resolved configuration the cell ran with, plus the package version."""
    import yaml

    text = yaml.safe_dump({**config, "version": version}, sort_keys=False)
    atomic_write(folder / CONFIG_FILE, lambda p: Path(p).write_text(text))


def read_table(path: str | os.PathLike, what: str, columns: Sequence[str], *,
               allow_empty: bool = False, origin: str | None = None) -> pd.DataFrame:
    """A CSV table checked for ``columns`` and for numbers where numbers belong; one
    CellFolderError line naming the file and what is wrong otherwise. ``origin`` says where a
    valid table comes from (default: the cell file of that name that `asknlearn run` writes)."""
    import pandas as pd

    path = Path(path)
    origin = origin or f"the {path.name} that `asknlearn run` writes"

    if not path.is_file():
        raise CellFolderError(f"{what} {str(path)!r} does not exist; valid: {origin}")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        df = pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CellFolderError(f"{what} {str(path)!r} is not a readable CSV table ({first}); "
                              f"valid: {origin}") from None
    if df.empty and not len(df.columns):
        if allow_empty:
            return pd.DataFrame(columns=list(columns))
        raise CellFolderError(f"{what} {str(path)!r} is empty; valid: a table of finished rounds")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CellFolderError(f"{what} {str(path)!r} lacks columns {missing}; "
                              f"valid: a table with columns {list(columns)}")
    bad = [c for c in columns if c not in TEXT_COLUMNS and len(df)
           and not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise CellFolderError(f"{what} {str(path)!r} has non-numeric values in {bad}; "
                              f"valid: {origin}")
    if df.empty and not allow_empty:
        raise CellFolderError(f"{what} {str(path)!r} has no rows; valid: a table of finished rounds")
    return df


def read_rounds(path: str | os.PathLike, *, allow_empty: bool = False) -> pd.DataFrame:
    """A cell's (or a study's aggregated) ``rounds.csv``, checked for the columns every reader
    relies on (:data:`REQUIRED_COLUMNS`) and for numbers where numbers belong."""
    return read_table(path, "rounds table", REQUIRED_COLUMNS, allow_empty=allow_empty)


def read_queries(path: str | os.PathLike) -> pd.DataFrame:
    """A cell's ``queries.csv``: the labeled points and when they were labeled."""
    return read_table(path, "queries table", QUERY_COLUMNS)


def read_reliability(path: str | os.PathLike) -> pd.DataFrame:
    """A cell's ``reliability.csv`` (the per-round reliability-diagram bins)."""
    return read_table(path, "reliability table", RELIABILITY_COLUMNS, allow_empty=True)


def final_round(config: Mapping[str, Any]) -> int:
    """The round that finishes a cell: ``budget // query_size`` of its config (round 0 trains
    on the seed set, each later round adds one batch)."""
    return int(config["budget"]) // int(config["query_size"])


def is_finished(config: Mapping[str, Any], rounds: Iterable[int]) -> bool:
    """Whether a cell whose table holds ``rounds`` has finished (the package's one rule)."""
    last = final_round(config)
    return any(int(r) == last for r in rounds)


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """A cell's resolved ``config.yaml``, checked for the keys its readers need."""
    import yaml

    path = Path(folder) / CONFIG_FILE
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CellFolderError(f"{str(path)!r} does not exist; valid: the config.yaml that "
                              "`asknlearn run` writes") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise CellFolderError(f"{str(path)!r} is not valid YAML ({first}); valid: the "
                              "config.yaml that `asknlearn run` writes") from None
    missing = [k for k in CONFIG_REQUIRED if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise CellFolderError(f"{str(path)!r} lacks {', '.join(missing)}; "
                              "valid: the config.yaml that `asknlearn run` writes")
    return cfg


def read_cell(folder: str | os.PathLike) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The resolved config and the per-round rows (possibly none yet) of one cell folder."""
    folder = Path(folder)
    cfg = read_config(folder)
    table = read_table(folder / ROUNDS_FILE, "rounds table", ("round", "labels"), allow_empty=True)
    return cfg, table.to_dict("records")


def find_cells(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Cell folders (holding rounds.csv and config.yaml) at or below each of ``paths``, each
    once, in order. A folder holding both is a cell; any other folder is searched below it (a
    study folder holds a tidy rounds.csv but no config.yaml: its cells are below it)."""
    cells: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CellFolderError(f"run folder {str(raw)!r} does not exist; valid: a cell folder "
                                  f"holding {ROUNDS_FILE} and {CONFIG_FILE}, or a folder above "
                                  "such cells")
        found = [p] if (p / ROUNDS_FILE).is_file() and (p / CONFIG_FILE).is_file() else sorted(
            f.parent for f in p.rglob(ROUNDS_FILE) if (f.parent / CONFIG_FILE).is_file())
        if not found:
            raise CellFolderError(
                f"run folder {str(raw)!r} holds no cell ({ROUNDS_FILE} next to {CONFIG_FILE}); "
                "valid: a cell folder written by `asknlearn run`, or a folder above such cells")
        cells += [c for c in found if c not in cells]
    return cells
