"""Issue 22 (reliability, round three): one test per item, each failing on the code before the
fix (marked ``xfail(strict=True)`` until its fix lands; ``pytest --runxfail`` shows them fail).

The tests go through surfaces that do not depend on the package's module layout: the CLI
(``python -m asknlearn ...``, in this process through :func:`cli` or in a subprocess where a
hang or the process's own output is what is tested), the public ``asknlearn.select``, the files
of a cell folder, MLflow's SQLite store read with ``sqlite3``, and the workflow's
``snakemake -n``. Servers are real sockets on 127.0.0.1.

Proposed knobs the fixes read (so these tests take seconds):
``ASKNLEARN_TRACKING_DEADLINE_S`` (total deadline of one tracking call, default 60 s;
``asknlearn/deadline.py``) and ``ASKNLEARN_HEARTBEAT_S`` (heartbeat interval, default 60 s).
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import runpy
import shutil
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import traceback
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def issue(item: int, what: str):
    return pytest.mark.xfail(strict=True, reason=f"issue 22 item {item}: {what}")


# a digits cell of two rounds (0 and 1), a few seconds of CPU
TINY = ["--dataset", "digits", "--seed-size", "20", "--query-size", "20", "--budget", "20",
        "--max-epochs", "30", "--threads", "1", "--tracking", "false", "--quiet"]
# a custom .npz/.pt/ImageFolder cell: 10 seed labels, one round of 10
SMALL = ["--seed-size", "10", "--query-size", "10", "--budget", "10", "--max-epochs", "5",
         "--threads", "1", "--tracking", "false", "--quiet", "--strategy", "random"]


# ---------------------------------------------------------------------------- running the CLI
def cli(*args: str) -> tuple[int, str, str]:
    """``python -m asknlearn ARGS`` in this process: (exit status, stdout, stderr). An exception
    escaping the CLI is a traceback on stderr with status 1, as the interpreter would give."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["asknlearn", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            runpy.run_module("asknlearn", run_name="__main__", alter_sys=False)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        err.write(traceback.format_exc())
        code = 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def cli_fork(*args: str, timeout: float, until: tuple[str, float] | None = None,
             **env: str) -> tuple[int, str, str]:
    """``python -m asknlearn ARGS`` in a forked child of this process, with ``env`` added:
    (exit status, stdout, stderr). For what must not hang this process (a stalled server, a
    FIFO) or what prints while it runs (a heartbeat). A fork inherits the imports made here,
    so it starts in milliseconds where a fresh interpreter takes seconds. A child still
    running after ``timeout`` s is killed and fails the test: it hung. ``until=(text, s)``:
    it also hung if ``text`` is not on its stderr within ``s`` seconds (a short first
    deadline, so a hang costs little while a loaded machine still has ``timeout`` to finish)."""
    import tempfile
    import time

    import mlflow.tracking  # noqa: F401  (imported once here, inherited by every child)
    import sklearn.datasets  # noqa: F401
    import torch._dynamo  # noqa: F401

    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")]
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 70
            try:
                for fd, path in zip((1, 2), paths, strict=True):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                os.environ.pop("MLFLOW_TRACKING_URI", None)
                os.environ.update(env)
                sys.argv = ["asknlearn", *map(str, args)]
                try:
                    runpy.run_module("asknlearn", run_name="__main__", alter_sys=False)
                    code = 0
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                except BaseException:
                    traceback.print_exc()
                    code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        start = time.monotonic()
        end = start + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            first = until is not None and time.monotonic() > start + until[1] and until[0] \
                not in Path(paths[1]).read_text(errors="replace")
            if first or time.monotonic() > end:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                err = Path(paths[1]).read_text(errors="replace")
                raise AssertionError(f"asknlearn {' '.join(map(str, args))} hung: still running "
                                     f"after {timeout:g} s, or without {until} on stderr; its "
                                     f"stderr so far:\n{err[-3000:]}")
            time.sleep(0.05)
        out, err = (Path(p).read_text(errors="replace") for p in paths)
    return os.waitstatus_to_exitcode(status), out, err


def sub_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def error_line(code: int, err: str, expected_code: int = 2) -> str:
    """The CLI's one error line: status ``expected_code``, no traceback, and the last line of
    stderr ``asknlearn: error: ...`` (library warnings before it are tolerated)."""
    assert "Traceback" not in err, err[-3000:]
    assert code == expected_code, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("asknlearn: error: "), err[-3000:]
    assert sum(ln.startswith("asknlearn: error: ") for ln in lines) == 1, err[-3000:]
    return lines[-1]


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------------------- data builders
def npz_dataset(path: Path, n_train: int = 60, n_test: int = 20, classes: int = 3,
                **override: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.random((n_train, 8, 8), dtype=np.float32),
              "y_train": np.arange(n_train) % classes,
              "x_test": rng.random((n_test, 8, 8), dtype=np.float32),
              "y_test": np.arange(n_test) % classes}
    arrays.update(override)
    np.savez(path, **arrays)
    return path


def custom_config(tmp_path: Path, name: str, path: Path, **extra) -> Path:
    """A run config naming the custom dataset ``name`` at ``path``."""
    return write_yaml(tmp_path / f"{name}.yaml",
                      {"dataset": name, "custom_datasets": {name: {"path": str(path), **extra}}})


def png(path: Path, size: tuple[int, int] = (8, 8), value: int = 0) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 256, size[::-1], dtype=np.uint8), mode="L").save(path)


def image_folder(root: Path, classes: tuple[str, ...] = ("a", "b", "c"), per_class: int = 20,
                 test_per_class: int = 5) -> Path:
    for split, n in (("train", per_class), ("test", test_per_class)):
        for c in classes:
            for i in range(n):
                png(root / split / c / f"{i:03d}.png", value=hash((split, c, i)) % 1000)
    return root


def bomb_png(path: Path, width: int = 30_000, height: int = 30_000) -> None:
    """A small PNG whose header claims ``width`` x ``height`` pixels (PIL refuses it as a
    decompression bomb on open)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def write_idx(path: Path, arr: np.ndarray) -> None:
    """``arr`` (uint8) in the MNIST IDX format, gzipped to ``path.gz``."""
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(f"{path}.gz", "wb") as fh:
        fh.write(head + arr.tobytes())


def tiny_mnist_gz(root: Path, monkeypatch, n_train: int = 40, n_test: int = 10,
                  folder: str = "MNIST") -> Path:
    """Only the four canonical ``.gz`` files of a tiny MNIST under ``root/<folder>/raw``, with
    torchvision's resource list patched to their MD5s and an unreachable mirror (this process
    only). Returns the raw folder."""
    import hashlib

    import torchvision.datasets as tvd

    raw = root / folder / "raw"
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    md5s = {}
    for name, arr in arrays.items():
        write_idx(raw / name, arr)
        md5s[f"{name}.gz"] = hashlib.md5((raw / f"{name}.gz").read_bytes()).hexdigest()
    for cls in (tvd.MNIST, tvd.FashionMNIST):
        monkeypatch.setattr(cls, "resources", [(n, md5s[n]) for n, _ in cls.resources])
        monkeypatch.setattr(cls, "mirrors", ["http://127.0.0.1:9/"])
    return raw


# ---------------------------------------------------------------------------- a finished cell
@pytest.fixture(scope="module")
def finished_cell(tmp_path_factory) -> Path:
    """A finished digits cell (rounds 0 and 1), made once per test process; copy it before
    changing it (:func:`cell_copy`)."""
    out = tmp_path_factory.mktemp("finished") / "cell"
    code, _, err = cli("run", *TINY, "--strategy", "entropy", "--study", "r3", "--out", out)
    assert code == 0, err
    return out


def cell_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def folder_bytes(folder: Path) -> dict[str, bytes]:
    """Every regular file of the folder (the lock file aside, which names its last holder)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and not p.is_symlink() and p.name != ".asknlearn.lock"}


def store_runs(db: Path) -> list[tuple[str, str, dict[str, str], dict[str, str]]]:
    """(run id, status, tags, params) of every run in an MLflow SQLite store."""
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        if not con.execute("select 1 from sqlite_master where name='runs'").fetchone():
            return []
        out = []
        for run_id, status in con.execute("select run_uuid, status from runs"):
            tags = dict(con.execute("select key, value from tags where run_uuid=?", (run_id,)))
            params = dict(con.execute("select key, value from params where run_uuid=?", (run_id,)))
            out.append((run_id, status, tags, params))
        return out
    finally:
        con.close()


# ---------------------------------------------------------------------------- 127.0.0.1 servers
class Server:
    """A raw TCP server on 127.0.0.1 answering every connection with ``answer(conn)`` on its own
    daemon thread; counts the requests it received."""

    def __init__(self, answer):
        self.answer = answer
        self.stop = threading.Event()
        self.requests = 0
        self._lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            with conn:
                while not self.stop.is_set():
                    request = self._read_request(conn)
                    if request is None:
                        return
                    with self._lock:
                        self.requests += 1
                    if not self.answer(self, conn):
                        return
        except OSError:
            return

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"content-length:\s*(\d+)", head, re.I)
        need = int(m.group(1)) if m else 0
        while len(body) < need:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def trickle(server: Server, conn: socket.socket) -> bool:
    """``HTTP/1.1 200 OK``, then one byte a second, for ever: no read ever times out."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    while not server.stop.wait(1.0):
        conn.sendall(b"X")
    return False


def busy(status: int):
    def answer(server: Server, conn: socket.socket) -> bool:
        body = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE",
                           "message": "try again later"}).encode()
        reason = {503: "Service Unavailable", 429: "Too Many Requests"}[status]
        conn.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\nRetry-After: 0\r\n\r\n".encode() + body)
        return True
    return answer


@pytest.fixture
def trickling_server() -> Iterator[Server]:
    s = Server(trickle)
    yield s
    s.close()


def closed_port_uri() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ============================================================================ item 1
DEADLINE = {"ASKNLEARN_TRACKING_DEADLINE_S": "2"}


@issue(1, "a trickling tracking server hangs a cell forever (no total deadline)")
def test_cell_against_a_trickling_server_goes_on_untracked(trickling_server, tmp_path):
    out = tmp_path / "cell"
    code, _, err = cli_fork("run", *TINY, "--tracking", "true", "--tracking-uri",
                            trickling_server.url, "--strategy", "random", "--out", out,
                            timeout=180, until=("warning: MLflow tracking", 20), **DEADLINE)
    assert code == 0, err[-3000:]
    warnings = [ln for ln in err.splitlines() if "warning: MLflow tracking" in ln]
    assert len(warnings) == 1, err[-3000:]
    assert "backfill" in warnings[0]
    assert list(pd.read_csv(out / "rounds.csv")["round"]) == [0, 1]


@issue(1, "init-store hangs on a trickling tracking server")
def test_init_store_against_a_trickling_server_warns_and_goes_on(trickling_server, tmp_path):
    flag = tmp_path / "store.flag"
    code, _, err = cli_fork("init-store", "--tracking-uri", trickling_server.url, "--experiment",
                            "r3", "--if-down", "warn", "--out", flag, timeout=25, **DEADLINE)
    assert code == 0, err[-3000:]
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1, err
    assert flag.read_text() == "untracked\n"


@issue(1, "backfill hangs on a trickling tracking server")
def test_backfill_against_a_trickling_server_fails_in_one_line(trickling_server, finished_cell,
                                                                tmp_path):
    cell = cell_copy(finished_cell, tmp_path / "cell")
    code, _, err = cli_fork("backfill", cell, "--tracking-uri", trickling_server.url, timeout=25,
                            **DEADLINE)
    line = error_line(code, err, expected_code=1)
    assert "rerun" in line


# ============================================================================ item 9
@issue(9, "HTTP 503/429 are not retried: MLflow's 'too many 503 error responses' is misread")
@pytest.mark.parametrize("status", [503, 429])
def test_busy_server_is_retried(status, tmp_path):
    server = Server(busy(status))
    try:
        code, _, err = cli_fork("init-store", "--tracking-uri", server.url, "--experiment", "r3",
                                timeout=90)
    finally:
        server.close()
    error_line(code, err, expected_code=1)
    assert server.requests >= 3, f"{server.requests} request(s): not retried"


# ============================================================================ item 2
@issue(2, "the cell lock follows a planted symlink")
@pytest.mark.parametrize("dangling", [False, True], ids=["to-a-file", "dangling"])
@pytest.mark.parametrize("resume", [False, True], ids=["fresh", "resume"])
def test_planted_lock_symlink_is_refused(resume, dangling, finished_cell, tmp_path):
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    if not dangling:
        victim.write_text("precious\n")
    cell = cell_copy(finished_cell, tmp_path / "cell") if resume else tmp_path / "cell"
    cell.mkdir(exist_ok=True)
    (cell / ".asknlearn.lock").unlink(missing_ok=True)
    os.symlink(victim, cell / ".asknlearn.lock")
    before = folder_bytes(cell)
    code, _, err = cli("run", *TINY, "--strategy", "entropy", "--study", "r3", "--out", cell)
    line = error_line(code, err)
    assert ".asknlearn.lock" in line and "symlink" in line.lower()
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_text() == "precious\n"
    assert folder_bytes(cell) == before


# ============================================================================ item 3
@issue(3, "dataset extraction follows a symlink planted at its predictable temp name")
def test_extraction_never_writes_through_a_planted_temp_link(tmp_path, monkeypatch):
    root = tmp_path / "data"
    raw = tiny_mnist_gz(root, monkeypatch)
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("precious\n")
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    for name in names:  # the temp name this very process would use
        os.symlink(victim, raw / f".{name}.{os.getpid()}.tmp")
    code, _, err = cli("run", "--dataset", "mnist", "--data-root", root, "--download", "false",
                       *SMALL, "--out", tmp_path / "cell")
    assert victim.read_text() == "precious\n"
    if code != 0:  # refusing the link is fine too, in one line
        error_line(code, err)
    for name in names:
        assert not (raw / name).is_symlink()


# ============================================================================ item 4
def _craft_state(cell: Path, change) -> None:
    """Rewrite the cell's state through ``change(labeled, model, meta)`` and recompute its
    checksum, as a writer (not damage) would."""
    import hashlib

    obj = torch.load(cell / "state.pt", map_location="cpu", weights_only=True)
    meta = json.loads(obj["meta"])
    change(obj["tensors"]["labeled"], obj["tensors"]["model"], meta)
    obj["meta"] = json.dumps(meta)
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    (cell / "state.pt").write_bytes(data)
    (cell / "state.pt.sha256").write_text(json.dumps(
        {"file": "state.pt", "sha256": hashlib.sha256(data).hexdigest(),
         "previous_sha256": None}) + "\n")


def _negative(lab, model, meta):
    lab["index"][:5] = -torch.arange(1, 6)


def _duplicated(lab, model, meta):
    lab["index"][1] = lab["index"][0]


def _out_of_range(lab, model, meta):
    lab["index"][0] = 10**12


def _bad_label(lab, model, meta):
    lab["label"][0] = 99


def _wrong_shape(lab, model, meta):
    key = next(iter(model))
    model[key] = torch.zeros(*(s + 1 for s in model[key].shape))


@issue(4, "a crafted state with a recomputed checksum is trusted")
@pytest.mark.parametrize("change", [_negative, _duplicated, _out_of_range, _bad_label,
                                    _wrong_shape], ids=lambda f: f.__name__.strip("_"))
def test_crafted_state_with_recomputed_checksum_is_refused(change, finished_cell, tmp_path):
    cell = cell_copy(finished_cell, tmp_path / "cell")
    _craft_state(cell, change)
    before = folder_bytes(cell)
    code, _, err = cli("run", *TINY, "--strategy", "entropy", "--study", "r3", "--out", cell)
    line = error_line(code, err)
    assert "state.pt" in line
    assert folder_bytes(cell) == before


# ============================================================================ item 5
def _plant_config(cell: Path) -> dict:
    cfg = yaml.safe_load((cell / "config.yaml").read_text())
    planted = {**cfg, "model": "evilnet:make"}
    write_yaml(cell / "config.yaml", planted)
    return cfg


@issue(5, "a planted config.yaml in a finished cell survives a resume")
def test_planted_config_does_not_survive_a_resume(finished_cell, tmp_path):
    cell = cell_copy(finished_cell, tmp_path / "cell")
    original = _plant_config(cell)
    code, _, err = cli("run", *TINY, "--strategy", "entropy", "--study", "r3", "--out", cell)
    if code != 0:
        assert "config.yaml" in error_line(code, err)
    else:
        assert yaml.safe_load((cell / "config.yaml").read_text())["model"] == original["model"]


@issue(5, "backfill logs a planted config.yaml's model as the run's param")
def test_backfill_does_not_trust_a_planted_config(finished_cell, tmp_path):
    cell = cell_copy(finished_cell, tmp_path / "cell")
    original = _plant_config(cell)
    db = tmp_path / "mlflow.db"
    code, _, err = cli("backfill", cell, "--tracking-uri", f"sqlite:///{db}")
    if code != 0:
        assert "config.yaml" in error_line(code, err)
        assert [r for r in store_runs(db) if "asknlearn.cell" in r[2]] == []
    else:
        params = [r[3] for r in store_runs(db) if "asknlearn.cell" in r[2]]
        assert params and all(p.get("model") == str(original["model"]) for p in params)


# ============================================================================ item 6
FORMULAS = ["=cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0",
            "-1+cmd|' /C calc'!A0"]


@issue(6, "study names beginning with = + - @ pass validation")
@pytest.mark.parametrize("name", ["=2+5", "@SUM(1+1)", "+2+5", "=HYPERLINK(A1)"])
def test_formula_study_name_is_refused(name, tmp_path):
    out = tmp_path / "cell"
    code, _, err = cli("run", *TINY, "--strategy", "random", f"--study={name}", "--out", out)
    line = error_line(code, err)
    assert "study" in line
    assert not out.exists()


def _formula_cells(text: str) -> list[str]:
    """Cells of a CSV text a spreadsheet would run as a formula: text (not a number) that
    begins with = + - @ (or a tab or carriage return before one)."""
    bad = []
    for value in pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False).to_numpy().ravel():
        try:
            float(value)
            continue
        except ValueError:
            pass
        if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
            bad.append(value)
    return bad


@issue(6, "formula-like names flow unescaped into the tidy CSV, summary.csv and summary.md")
def test_csvs_neutralise_formula_cells(finished_cell, tmp_path):
    rounds = pd.read_csv(finished_cell / "rounds.csv")
    cells = []
    for i, name in enumerate(FORMULAS):  # rows a hand-edited or foreign cell could carry
        df = rounds.copy()
        df["study"] = name
        df["strategy"] = FORMULAS[(i + 1) % len(FORMULAS)]
        path = tmp_path / f"cell{i}" / "rounds.csv"
        path.parent.mkdir()
        df.to_csv(path, index=False)
        cells.append(path)
    tidy = tmp_path / "tidy.csv"
    code, _, err = cli("aggregate", *cells, "--out", tidy)
    assert code == 0, err
    assert _formula_cells(tidy.read_text()) == []
    code, _, err = cli("summarize", "--rounds", tidy, "--target-accuracy", "0.3", "--references",
                       "", "--out", tmp_path / "summary.csv", "--markdown", tmp_path / "summary.md")
    assert code == 0, err
    assert _formula_cells((tmp_path / "summary.csv").read_text()) == []
    md_cells = [c.strip() for ln in (tmp_path / "summary.md").read_text().splitlines()
                if ln.startswith("|") and not re.fullmatch(r"[|:\- ]+", ln)
                for c in ln.strip("|").split("|")]
    assert not [c for c in md_cells if c[:1] in ("=", "+", "@")
                or (c[:1] == "-" and not re.fullmatch(r"-[\d.]+.*", c))]


# ============================================================================ item 7
@issue(7, "one NaN pixel in one test image gives exit 0 with NaN metrics")
@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_non_finite_test_pixel_is_named_up_front(bad, tmp_path):
    x = np.random.default_rng(1).random((20, 8, 8), dtype=np.float32)
    x[3, 4, 5] = bad
    data = npz_dataset(tmp_path / "d.npz", x_test=x)
    cfg = custom_config(tmp_path, "nanpix", data)
    out = tmp_path / "cell"
    code, _, err = cli("run", "--config", cfg, *SMALL, "--out", out)
    line = error_line(code, err)
    assert re.search(r"\btest\b", line) and re.search(r"\b3\b", line), line
    assert not (out / "rounds.csv").exists()


@issue(7, "NaN pixels in the training split are blamed on the learning rate")
def test_non_finite_train_pixel_is_named_not_blamed_on_lr(tmp_path):
    x = np.random.default_rng(1).random((60, 8, 8), dtype=np.float32)
    x[5, 0, 0] = math.nan
    data = npz_dataset(tmp_path / "d.npz", x_train=x)
    cfg = custom_config(tmp_path, "nantrain", data)
    out = tmp_path / "cell"
    code, _, err = cli("run", "--config", cfg, *SMALL, "--out", out)
    line = error_line(code, err)
    assert re.search(r"\btrain", line) and re.search(r"\b5\b", line), line
    assert "lr" not in line.split("valid:")[-1]
    assert not (out / "rounds.csv").exists()


@issue(7, "a model that outputs NaN in eval mode gives exit 0 with NaN metrics")
def test_nan_eval_outputs_stop_the_cell_naming_round_and_quantity(tmp_path):
    out = tmp_path / "cell"
    code, _, err = cli("run", *TINY, "--strategy", "entropy", "--model",
                       "reliability3_nets:eval_nan", "--out", out)
    assert code != 0
    line = error_line(code, err, expected_code=code)
    assert "round 0" in line and re.search(r"accuracy|ece|nll|brier|score|prob|output", line)
    if (out / "rounds.csv").exists():
        table = pd.read_csv(out / "rounds.csv")
        assert np.isfinite(table.select_dtypes("number").drop(
            columns=[c for c in table if c.startswith(("alpha", "val_", "oracle_"))]).to_numpy()).all()


# ============================================================================ item 8
def test_one_class_imagefolder_is_refused(tmp_path):
    root = image_folder(tmp_path / "imgs", classes=("only",), per_class=30)
    cfg = custom_config(tmp_path, "oneclass", root)
    out = tmp_path / "cell"
    code, _, err = cli("run", "--config", cfg, *SMALL, "--out", out)
    assert "class" in error_line(code, err)
    assert not out.exists() or not (out / "rounds.csv").exists()


def test_stray_label_far_above_the_distinct_labels_is_refused(tmp_path):
    y = np.arange(60) % 3
    y[7] = 10_000  # the issue's 10**6 builds a 1,000,001-class head: slow on the unfixed code
    data = npz_dataset(tmp_path / "d.npz", y_train=y)
    cfg = custom_config(tmp_path, "stray", data)
    out = tmp_path / "cell"
    code, _, err = cli("run", "--config", cfg, *SMALL, "--out", out)
    line = error_line(code, err)
    assert "10000" in line and "num_classes" in line
    assert not (out / "rounds.csv").exists()


def test_feature_size_zero_is_refused_up_front(tmp_path):
    out = tmp_path / "cell"
    code, _, err = cli("run", *TINY, "--strategy", "badge", "--model",
                       "reliability3_nets:zero_features", "--out", out)
    assert "feature" in error_line(code, err)
    assert not (out / "rounds.csv").exists()


# ============================================================================ item 10
def _nan_labels(cell: Path) -> None:
    df = pd.read_csv(cell / "rounds.csv")
    df["labels"] = df["labels"].astype(float)
    df.loc[1, "labels"] = math.nan
    df.to_csv(cell / "rounds.csv", index=False)


def _huge_labels(cell: Path) -> None:
    text = (cell / "rounds.csv").read_text().splitlines()
    head = text[0].split(",")
    row = text[2].split(",")
    row[head.index("labels")] = str(2**63 + 5)
    (cell / "rounds.csv").write_text("\n".join([text[0], text[1], ",".join(row)]) + "\n")


def _config_value(key: str, value):
    def change(cell: Path) -> None:
        cfg = yaml.safe_load((cell / "config.yaml").read_text())
        cfg[key] = value
        write_yaml(cell / "config.yaml", cfg)
    change.__name__ = f"{key}={value}"
    return change


def _cut_last_row(cell: Path) -> None:
    text = (cell / "rounds.csv").read_text()
    (cell / "rounds.csv").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])


BAD_CELLS = [(_nan_labels, "rounds.csv"), (_huge_labels, "rounds.csv"),
             (_config_value("query_size", 0), "config.yaml"),
             (_config_value("budget", "abc"), "config.yaml"),
             (_config_value("noise", "abc"), "config.yaml"),
             (_cut_last_row, "rounds.csv")]


@issue(10, "backfill blames the store for bad cell data")
@pytest.mark.parametrize("change,file", BAD_CELLS,
                         ids=[getattr(c, "__name__", "").strip("_") for c, _ in BAD_CELLS])
def test_backfill_names_bad_cell_data_before_the_store(change, file, finished_cell, tmp_path):
    cell = cell_copy(finished_cell, tmp_path / "cell")
    change(cell)
    # a store that is down: the unfixed code gets that far and blames it (exit 1)
    code, _, err = cli("backfill", cell, "--tracking-uri", closed_port_uri())
    line = error_line(code, err)
    assert file in line and "rerun" not in line


@issue(10, "backfill of bad cell data leaves an empty RUNNING run in the store")
def test_backfill_of_bad_cell_data_leaves_the_store_as_it_was(finished_cell, tmp_path):
    cell = cell_copy(finished_cell, tmp_path / "cell")
    _nan_labels(cell)
    db = tmp_path / "mlflow.db"
    code, _, err = cli("backfill", cell, "--tracking-uri", f"sqlite:///{db}")
    assert "rounds.csv" in error_line(code, err)
    assert store_runs(db) == []


@issue(10, "backfilling cell folders leaves the study's parent run RUNNING")
def test_backfill_ends_the_study_parent_run(finished_cell, tmp_path):
    cell = cell_copy(finished_cell, tmp_path / "cell")
    db = tmp_path / "mlflow.db"
    code, _, err = cli("backfill", cell, "--tracking-uri", f"sqlite:///{db}")
    assert code == 0, err
    runs = store_runs(db)
    assert [s for _, s, t, _ in runs if "asknlearn.cell" in t] == ["FINISHED"]
    assert [s for _, s, t, _ in runs if "asknlearn.cell" not in t] in ([], ["FINISHED"])
    assert not [r for r in runs if r[1] == "RUNNING"]


# ============================================================================ item 11
def test_raising_factory_is_one_line(tmp_path):
    code, _, err = cli("run", *TINY, "--model", "reliability3_nets:raising",
                       "--out", tmp_path / "cell")
    line = error_line(code, err)
    assert "reliability3_nets:raising" in line and "factory exploded" in line


@pytest.mark.parametrize("source,expected", [
    ("raise ImportError('libcudart.so.13: cannot open shared object file')\n", "libcudart"),
    ("import os\nraise RuntimeError('no licence server')\n", "licence"),
    ("def make(shape:\n    return None\n", "SyntaxError"),
], ids=["import-error", "runtime-error", "syntax-error"])
def test_factory_module_that_fails_to_import_is_one_line(source, expected, tmp_path, monkeypatch):
    name = f"r3mod_{abs(hash((source, str(tmp_path)))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = cli("run", *TINY, "--model", f"{name}:make", "--out", tmp_path / "cell")
    line = error_line(code, err)
    assert f"{name}:make" in line and expected in line
    assert not (tmp_path / "cell").exists()


def test_features_returning_a_tuple_is_one_line(tmp_path):
    code, _, err = cli("run", *TINY, "--model", "reliability3_nets:tuple_features",
                       "--out", tmp_path / "cell")
    assert "features" in error_line(code, err)


def test_decompression_bomb_png_is_one_line(tmp_path):
    root = image_folder(tmp_path / "imgs", per_class=10)
    bomb_png(root / "train" / "c" / "zzz.png")
    cfg = custom_config(tmp_path, "bomb", root)
    code, _, err = cli("run", "--config", cfg, *SMALL, "--out", tmp_path / "cell")
    assert "zzz.png" in error_line(code, err)
    assert not (tmp_path / "cell").exists()


@pytest.mark.parametrize("kind", ["parameter", "bfloat16"])
def test_pt_with_parameter_or_bfloat16_is_one_line(kind, tmp_path):
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((60, 8, 8), dtype=np.float32))
    x = torch.nn.Parameter(x) if kind == "parameter" else x.to(torch.bfloat16)
    torch.save({"x_train": x, "y_train": torch.arange(60) % 3,
                "x_test": torch.zeros(20, 8, 8), "y_test": torch.arange(20) % 3},
               tmp_path / "d.pt")
    cfg = custom_config(tmp_path, f"pt{kind}", tmp_path / "d.pt")
    code, _, err = cli("run", "--config", cfg, *SMALL, "--out", tmp_path / "cell")
    assert "x_train" in error_line(code, err)
    assert not (tmp_path / "cell").exists()


def test_forged_short_npz_is_one_line(tmp_path):
    path = npz_dataset(tmp_path / "d.npz")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    arr = np.zeros((10, 8, 8), dtype=np.float32)
    header = {"descr": "<f4", "fortran_order": False, "shape": (60, 8, 8)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members["x_train.npy"] = buf.getvalue() + arr.tobytes()  # promises 60 images, holds 10
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    cfg = custom_config(tmp_path, "short", path)
    code, _, err = cli("run", "--config", cfg, *SMALL, "--out", tmp_path / "cell")
    assert "x_train" in error_line(code, err)
    assert not (tmp_path / "cell").exists()


class _SelectNet(torch.nn.Module):
    """A user's model for ``asknlearn.select``: features -> z, a linear head, dropout."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16),
                                        torch.nn.ReLU(), torch.nn.Dropout(0.5))
        self.head = torch.nn.Linear(16, 3)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


def _select(**kw):
    import asknlearn

    torch.manual_seed(0)
    args = {"strategy": "ask-n-learn-vwcc", "model": _SelectNet(),
            "x_pool": torch.randn(30, 1, 8, 8), "b": 5, **kw}
    return asknlearn.select(args.pop("strategy"), args.pop("model"), args.pop("x_pool"),
                            args.pop("b"), **args)


def _is_package_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "asknlearn"


# what select() must refuse with the package's own one-line error naming the option
SELECT_REFUSED = {
    "strategy=None": ({"strategy": None}, "strategy"),
    "k_aug=-1": ({"k_aug": -1}, "k_aug"),
    "batch_size=0": ({"batch_size": 0}, "batch_size"),
    "vwcc_samples=0": ({"vwcc_samples": 0}, "vwcc_samples"),
    "vwcc_samples=1": ({"vwcc_samples": 1}, "vwcc_samples"),
    "tau=5": ({"tau": 5}, "tau"),
    "numpy-generator": ({"generator": np.random.default_rng(0)}, "generator"),
    "wrong-image-size": ({"x_pool": torch.randn(30, 1, 9, 9)}, "x_pool"),
}
# what select() must either accept (the same picks as the float32 tensor) or refuse in one line
SELECT_CONVERTIBLE = {
    "numpy-pool": lambda x: x.numpy(),
    "list-pool": lambda x: x.tolist(),
    "uint8-pool": lambda x: x.clamp(0, 1).mul(255).to(torch.uint8),
    "float64-pool": lambda x: x.double(),
}


@pytest.mark.parametrize("case", list(SELECT_REFUSED))
def test_select_refuses_bad_options_in_one_line(case):
    kw, name = SELECT_REFUSED[case]
    with pytest.raises(Exception) as info:
        _select(**kw)
    assert _is_package_error(info.value), f"{type(info.value).__name__}: {info.value}"
    msg = str(info.value)
    assert "\n" not in msg and name in msg and "valid" in msg


@pytest.mark.parametrize("case", list(SELECT_CONVERTIBLE))
def test_select_pool_types_are_used_or_refused_in_one_line(case):
    x = torch.randn(30, 1, 8, 8)
    try:
        picked = _select(x_pool=SELECT_CONVERTIBLE[case](x))
    except Exception as exc:
        assert _is_package_error(exc), f"{type(exc).__name__}: {exc}"
        assert "x_pool" in str(exc) and "\n" not in str(exc)
    else:
        assert picked.dtype == torch.int64 and len(torch.unique(picked)) == 5


def test_select_takes_a_numpy_integer_b():
    picked = _select(b=np.int64(5))
    assert len(torch.unique(picked)) == 5


# ============================================================================ item 12
@pytest.fixture(scope="module")
def workflow_dir(tmp_path_factory) -> Path:
    """A copy of the workflow to dry-run in."""
    dst = tmp_path_factory.mktemp("workflow")
    for name in ("Snakefile", "workflow", "config", "profiles"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dst / name)
    return dst


def dry_run(workdir: Path, config_text: str) -> subprocess.CompletedProcess:
    cfg = workdir / f"c{abs(hash(config_text)) % 10**8}.yaml"
    cfg.write_text(config_text)
    env = sub_env()
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                           "--workflow-profile", "none", "--configfile", str(cfg)],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not (REPO / "Snakefile").exists(), reason="no workflow in this checkout")
@issue(12, "snakemake -n passes what every job would fail on")
@pytest.mark.parametrize("config_text,expected", [
    ("datasets: [digits]\nexperiment: {seed_size: 20, query_size: 100, budget: 2000}\n",
     r"budget.*2000"),
    ("datasets: [mnist]\ndata_root: DATA_ROOT\nexperiment: {download: false}\n",
     r"mnist.*DATA_ROOT|DATA_ROOT.*mnist"),
    ("experiment:\n  budget: 40\n  budget: 60\n", r"duplicate.*budget|budget.*duplicate"),
], ids=["budget-above-pool", "data-root-without-dataset", "duplicate-experiment-key"])
def test_dry_run_catches_what_every_job_would_fail_on(config_text, expected, workflow_dir,
                                                      tmp_path):
    empty = tmp_path / "empty-data-root"
    empty.mkdir()
    proc = dry_run(workflow_dir, config_text.replace("DATA_ROOT", str(empty)))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert re.search(expected.replace("DATA_ROOT", re.escape(str(empty))), out, re.I | re.S), \
        out[-3000:]
    assert not (workflow_dir / "results").exists()


@issue(12, "a run config with duplicate keys is accepted silently (last value wins)")
def test_run_config_with_duplicate_keys_is_refused(tmp_path):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("budget: 20\nquery_size: 20\nbudget: 40\n")
    out = tmp_path / "cell"
    code, _, err = cli("run", *TINY, "--config", cfg, "--out", out)
    line = error_line(code, err)
    assert "budget" in line and "duplicate" in line.lower()
    assert not out.exists()


@issue(12, "--config <a folder> says 'does not exist'")
def test_config_that_is_a_folder_is_named_as_one(tmp_path):
    code, _, err = cli("run", *TINY, "--config", tmp_path, "--out", tmp_path / "cell")
    line = error_line(code, err)
    assert "does not exist" not in line and re.search(r"folder|directory", line)


@issue(12, "--seed 1e30 says 'an integer >= 0' without the 2**63 bound")
def test_seed_message_names_the_upper_bound(tmp_path):
    code, _, err = cli("run", *TINY, "--seed", "1e30", "--out", tmp_path / "cell")
    line = error_line(code, err)
    assert re.search(r"2\*\*63|2\^63|2⁶³|9223372036854775807|9223372036854775808", line), line


@issue(12, "a symlink loop in an ImageFolder is reported as 'images outside class folders'")
def test_imagefolder_symlink_loop_is_named(tmp_path):
    root = image_folder(tmp_path / "imgs", per_class=10)
    os.symlink("loop.png", root / "train" / "a" / "loop.png")  # points at itself
    cfg = custom_config(tmp_path, "loop", root)
    code, _, err = cli("run", "--config", cfg, *SMALL, "--out", tmp_path / "cell")
    line = error_line(code, err)
    assert "outside class folders" not in line and "loop.png" in line


@issue(12, "a FIFO in an ImageFolder is reported as 'images outside class folders'")
def test_imagefolder_fifo_is_named(tmp_path):
    root = image_folder(tmp_path / "imgs", per_class=10)
    os.mkfifo(root / "train" / "a" / "pipe.png")
    cfg = custom_config(tmp_path, "fifo", root)
    # a fresh process: a fix that opened the FIFO would block on it, not hang the suite
    code, _, err = cli_fork("run", "--config", cfg, *SMALL, "--out", tmp_path / "cell",
                            timeout=60)
    line = error_line(code, err)
    assert "outside class folders" not in line and "pipe.png" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
@issue(12, "a read-only data root holding the .gz files suggests linking them in")
def test_read_only_data_root_is_named(tmp_path, monkeypatch):
    root = tmp_path / "data"
    raw = tiny_mnist_gz(root, monkeypatch, folder="FashionMNIST")
    for p in (raw, raw.parent, root):
        p.chmod(0o555)
    try:
        code, _, err = cli("run", "--dataset", "fashion_mnist", "--data-root", root,
                           "--download", "false", *SMALL, "--out", tmp_path / "cell")
    finally:
        for p in (root, raw.parent, raw):
            p.chmod(0o755)
    line = error_line(code, err)
    assert re.search(r"read-only|not writable", line) and "link" not in line


# ============================================================================ item 13
@issue(13, "a hung or slow user model is silent: no heartbeat")
def test_slow_model_build_prints_a_heartbeat(tmp_path):
    code, out, err = cli_fork("run", "--dataset", "digits", "--seed-size", "20", "--query-size",
                              "20", "--budget", "20", "--max-epochs", "5", "--threads", "1",
                              "--tracking", "false", "--strategy", "random", "--model",
                              "reliability3_nets:sleepy", "--out", tmp_path / "cell", timeout=120,
                              ASKNLEARN_HEARTBEAT_S="1", RELIABILITY3_SLEEP_S="5")
    assert code == 0, err[-3000:]
    beats = [ln for ln in (out + err).splitlines() if "building the model" in ln]
    assert beats, out[-3000:] + err[-3000:]
