"""Reliability of the tracking path: retries, parallel jobs on one store, a real MLflow server
read over its REST API, outages (down from the start, or mid-run) and the backfill after them.

The tables on disk are the source of truth; these tests check MLflow ends up holding exactly
them: one run per cell, one point per (metric, round), never a duplicate.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pandas as pd
import pytest
import reliability_helpers as wf
from reliability_helpers import cell_runs, free_port, mlflow_server, rest_history, rest_runs, tags

from asknlearn import tracking
from asknlearn.cli import main as cli_main
from asknlearn.loop import run_cell

TINY = ["--dataset", "digits", "--seed-size", "20", "--query-size", "20", "--threads", "1",
        "--max-epochs", "60", "--quiet"]


# ---------------------------------------------------------------------------- helpers
def forked(jobs: list[Callable[[], int]], workdir: Path, timeout: float = 600) -> list[tuple[int, str]]:
    """Run every job (e.g. ``asknlearn.cli.main([...])``) in its own forked process, all at
    once; returns (exit status, stderr) of each.

    Forked children are real parallel processes with their own MLflow clients and database
    connections (what concurrency needs), without paying each a fresh interpreter's imports of
    torch, scikit-learn and MLflow (seconds of CPU each on a 2-core CI). The parent must not
    have opened the store under test before forking, so children share no connection.
    """
    # what every job imports lazily, imported once here so children inherit it
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
    import sklearn.datasets  # noqa: F401
    import torch._dynamo  # noqa: F401  (torch.optim imports it on first use)

    pids = []
    for i, job in enumerate(jobs):
        err_path = workdir / f"child{i}.stderr"
        pid = os.fork()
        if pid == 0:  # child: never return into pytest
            code = 70
            try:
                for fd, name in ((1, f"child{i}.stdout"), (2, f"child{i}.stderr")):
                    f = os.open(workdir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                    os.dup2(f, fd)
                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                code = job()
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids.append((pid, err_path))
    deadline = time.monotonic() + timeout
    results = []
    for pid, err_path in pids:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = 1 << 8
                break
            time.sleep(0.1)
        results.append((os.waitstatus_to_exitcode(status), err_path.read_text()))
    return results


def store_snapshot(base: str, experiment: str) -> dict[str, object]:
    """Runs by cell with their status and every metric's full history: equal snapshots mean
    the store did not change."""
    snap: dict[str, object] = {}
    for run in rest_runs(base, experiment):
        rid = run["info"]["run_id"]
        keys = sorted({m["key"] for m in run["data"].get("metrics", [])})
        key = tags(run).get(tracking.CELL_TAG) or "study:" + tags(run)[tracking.STUDY_TAG]
        snap[key + "#" + rid] = (
            run["info"]["status"], {k: rest_history(base, rid, k) for k in keys})
    return snap


def assert_run_matches_table(base: str, run: dict, out: Path) -> None:
    """The run holds every round of the cell's rounds.csv, once, at step = labels."""
    table = pd.read_csv(out / "rounds.csv")
    rid = run["info"]["run_id"]
    for key in ("accuracy", "nll", "train_seconds"):
        assert rest_history(base, rid, tracking.metric_name(key)) == list(
            zip(table["labels"], table[key].astype(float), strict=True)), key


class CuttableProxy:
    """A localhost TCP forwarder to a real server; ``cut()`` takes it down like a crashed
    server (listener closed, open connections reset) while the server itself stays up, so a
    test can later backfill into the very store the outage interrupted."""

    def __init__(self, target_port: int):
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            for s in self.conns:
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(autouse=True)
def _fast_failing_mlflow(monkeypatch):
    # what MlflowTracker sets on its own, set here so it is undone after each test
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """A real MLflow server backed by a SQLite file (the default store of the workflow)."""
    work = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(f"sqlite:///{work}/mlflow.db", work) as url:
        yield url


# ---------------------------------------------------------------------------- retry policy
class _Locked(Exception):
    """Stands in for sqlite3.OperationalError as MLflow wraps it."""


@pytest.mark.parametrize("make_exc, transient", [
    (lambda: sqlite3.OperationalError("database is locked"), True),
    (lambda: _Locked("(sqlite3.OperationalError) database is locked"), True),
    (lambda: RuntimeError("API request failed with error code 503 != 200"), True),
    (lambda: RuntimeError("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded "
                          "(Caused by NewConnectionError: [Errno 111] Connection refused)"), False),
    (lambda: RuntimeError("Read timed out. (read timeout=10)"), False),
    (lambda: ValueError("Changing param values is not allowed"), False),
])
def test_retry_retries_transient_errors_only(make_exc, transient):
    calls, sleeps = [], []

    def fn() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise make_exc()
        return "ok"

    if transient:
        assert tracking.retry(fn, sleep=sleeps.append) == "ok"
        assert len(calls) == 3 and len(sleeps) == 2
        # jittered doubling: attempt k waits base·2^(k-1) × U(0.5, 1.5) (the bands overlap, so
        # the second wait is not always the longer one)
        assert 0.05 <= sleeps[0] <= 0.15 and 0.1 <= sleeps[1] <= 0.3
    else:  # a server that is down fails at once: no waiting, one call
        with pytest.raises(Exception, match=".") as err:
            tracking.retry(fn, sleep=sleeps.append)
        assert type(err.value).__name__ == type(make_exc()).__name__
        assert len(calls) == 1 and sleeps == []


def test_retry_is_bounded():
    sleeps: list[float] = []

    def always_locked():
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError):
        tracking.retry(always_locked, attempts=8, sleep=sleeps.append)
    assert len(sleeps) == 7 and max(sleeps) <= 3.0 * 1.5


# ---------------------------------------------------------------------------- concurrency
@pytest.mark.slow
def test_eight_parallel_jobs_on_one_fresh_sqlite_store(tmp_path):
    """8 AL processes at once on a fresh default store (initialized once, as the workflow does):
    every cell is one FINISHED run with every round; no lock or migration error is printed."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # in a child too: the parent must hold no connection to the store it forks jobs onto
    ((code, err),) = forked([lambda: cli_main(["init-store", "--tracking-uri", uri,
                                               "--experiment", "par"])], tmp_path)
    assert code == 0, err
    cells = [(s, seed) for s in ("random", "entropy") for seed in range(4)]
    jobs = [lambda s=s, seed=seed: cli_main(
        ["run", *TINY, "--budget", "40", "--study", "par", "--strategy", s, "--seed", str(seed),
         "--out", str(tmp_path / f"{s}-{seed}"), "--tracking-uri", uri]) for s, seed in cells]
    for code, stderr in forked(jobs, tmp_path):
        assert code == 0, stderr
        for bad in ("locked", "migration", "alembic", "traceback", "warning", "error"):
            assert bad not in stderr.lower(), stderr
    client = tracking.client_for(uri)
    exp_id = tracking.experiment_id(client, "par", create=False)
    runs = [r for r in client.search_runs([exp_id], max_results=100)
            if tracking.CELL_TAG in r.data.tags]  # init-store's study run aside
    assert sorted(r.data.tags[tracking.CELL_TAG] for r in runs) == sorted(
        f"par/digits/{s}/seed{k}/noise0" for s, k in cells)  # one run per cell, no duplicate
    for run in runs:
        strategy, seed = run.data.tags["strategy"], run.data.tags["seed"]
        table = pd.read_csv(tmp_path / f"{strategy}-{seed}" / "rounds.csv")
        assert len(table) == 3
        assert run.info.status == "FINISHED"
        for key in ("accuracy", "train_epochs"):
            hist = client.get_metric_history(run.info.run_id, tracking.metric_name(key))
            assert sorted((m.step, m.value) for m in hist) == list(
                zip(table["labels"], table[key].astype(float), strict=True))


@pytest.mark.slow
def test_store_creation_is_serialized_without_init_store(tmp_path):
    """Even with no init-store, parallel first writers of a SQLite store all succeed (the
    flock in tracking.client_for); without it 15 of 16 such writers failed here."""
    uri = f"sqlite:///{tmp_path}/fresh.db"

    def job(seed: int) -> int:
        t = tracking.MlflowTracker(uri, "fresh")
        t.start(dict(study="fresh", dataset="digits", strategy="random", seed=seed, noise=0.0))
        t.log_round(dict(labels=20, round=0, accuracy=0.5, timestamp_ms=1))
        t.finish()
        return 1 if t.failed else 0

    results = forked([lambda i=i: job(i) for i in range(8)], tmp_path)
    assert [code for code, _ in results] == [0] * 8, results
    client = tracking.client_for(uri)
    runs = client.search_runs([tracking.experiment_id(client, "fresh", create=False)])
    assert sorted(int(r.data.tags["seed"]) for r in runs) == list(range(8))
    assert all(r.info.status == "FINISHED" for r in runs)


# ---------------------------------------------------------------------------- a real server
@pytest.mark.slow
def test_cell_against_real_server_read_back_over_rest(server, tmp_path, capfd):
    out = tmp_path / "cell"
    assert cli_main(["run", *TINY, "--budget", "40", "--study", "srv", "--strategy", "badge",
                     "--seed", "1", "--noise", "0.1", "--out", str(out), "--tracking-uri", server]) == 0
    assert "warning" not in capfd.readouterr().err
    runs = rest_runs(server, "srv")
    assert len(runs) == 1  # no init-store, no backfill: no study run
    run = runs[0]
    assert run["info"]["status"] == "FINISHED"
    assert tags(run)[tracking.CELL_TAG] == "srv/digits/badge/seed1/noise0.1"
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["strategy"] == "badge" and params["query_size"] == "20" and params["model"] == "mlp"
    assert_run_matches_table(server, run, out)


# ---------------------------------------------------------------------------- outages
def _cfg(tiny_cfg, **kw):
    return dataclasses.replace(tiny_cfg, tracking=True, **kw)


@pytest.mark.slow
def test_outage_mid_run_then_backfill_is_idempotent(server, tiny_cfg, digits, tmp_path, capfd):
    """The server goes down after round 0 was logged: the cell still finishes and writes its
    table, warns once; backfill completes the partial run, and a second backfill changes nothing."""
    proxy = CuttableProxy(int(server.rsplit(":", 1)[1]))
    cfg = _cfg(tiny_cfg, study="mid", strategy="entropy", tracking_uri=proxy.url)

    def log(line: str) -> None:
        if "round   0/" in line:
            proxy.cut()

    table = run_cell(cfg, tmp_path / "cell", data=digits, log=log)
    assert len(table) == cfg.rounds + 1 == len(pd.read_csv(tmp_path / "cell" / "rounds.csv"))
    err = capfd.readouterr().err
    assert err.count("asknlearn: warning: MLflow tracking") == 1, err
    (run,) = rest_runs(server, "mid")
    assert run["info"]["status"] == "RUNNING"
    assert rest_history(server, run["info"]["run_id"], "test/accuracy") == [
        (20, pytest.approx(table["accuracy"][0]))]  # only round 0 got through

    assert cli_main(["backfill", str(tmp_path), "--tracking-uri", server]) == 0
    out = capfd.readouterr().out
    assert "0 runs created" in out and "1 runs marked FINISHED" in out
    (run,) = cell_runs(server, "mid")
    assert run["info"]["status"] == "FINISHED"
    assert_run_matches_table(server, run, tmp_path / "cell")
    before = store_snapshot(server, "mid")
    assert cli_main(["backfill", str(tmp_path / "cell"), "--tracking-uri", server]) == 0
    assert "0 runs created, 0 metric points logged, 0 runs marked FINISHED" in capfd.readouterr().out
    assert store_snapshot(server, "mid") == before


@pytest.mark.slow
def test_server_down_from_start_then_backfill_creates_runs(server, tiny_cfg, digits, tmp_path,
                                                           capfd, monkeypatch):
    """A tracking URI nobody listens on: no retry waits (a down server is not transient), the
    cells finish, and backfill creates exactly one run per cell next to an existing one."""
    sleeps: list[float] = []
    down = f"http://127.0.0.1:{free_port()}"
    with monkeypatch.context() as m:
        m.setattr(tracking.time, "sleep", sleeps.append)
        for strategy in ("random", "confidence"):
            run_cell(_cfg(tiny_cfg, study="down", strategy=strategy, budget=40, tracking_uri=down),
                     tmp_path / strategy, data=digits, log=lambda s: None)
    assert sleeps == []
    err = capfd.readouterr().err
    assert err.count("asknlearn: warning: MLflow tracking") == 2, err  # once per cell
    # a third cell that did reach the server: backfill must leave its run alone
    run_cell(_cfg(tiny_cfg, study="down", strategy="entropy", budget=40, tracking_uri=server),
             tmp_path / "entropy", data=digits, log=lambda s: None)
    before = {tags(r)[tracking.CELL_TAG]: r["info"]["run_id"] for r in cell_runs(server, "down")}
    assert list(before) == ["down/digits/entropy/seed0/noise0"]

    assert cli_main(["backfill", str(tmp_path), "--tracking-uri", server]) == 0
    assert "3 cells" in capfd.readouterr().out
    runs = cell_runs(server, "down")
    by_cell = {tags(r)[tracking.CELL_TAG]: r for r in runs}
    assert len(runs) == len(by_cell) == 3
    assert by_cell["down/digits/entropy/seed0/noise0"]["info"]["run_id"] == before[
        "down/digits/entropy/seed0/noise0"]
    for strategy in ("random", "confidence", "entropy"):
        run = by_cell[f"down/digits/{strategy}/seed0/noise0"]
        assert run["info"]["status"] == "FINISHED"
        assert_run_matches_table(server, run, tmp_path / strategy)
    snap = store_snapshot(server, "down")
    assert cli_main(["backfill", str(tmp_path), "--tracking-uri", server]) == 0
    assert store_snapshot(server, "down") == snap


def test_resume_logs_rounds_the_killed_job_saved_but_never_logged(tiny_cfg, digits, tmp_path):
    """A job killed between saving round 1 and logging it: the resumed job logs round 1 too."""

    class Killed(Exception):
        pass

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = _cfg(tiny_cfg, study="kill", budget=60, tracking_uri=uri)

    class DiesBeforeLoggingRound1(tracking.MlflowTracker):
        def log_round(self, row):
            if row["round"] == 1:
                raise Killed
            super().log_round(row)

    with pytest.raises(Killed):
        run_cell(cfg, tmp_path / "cell", data=digits, log=lambda s: None,
                 tracker=DiesBeforeLoggingRound1(uri, "kill"))
    assert len(pd.read_csv(tmp_path / "cell" / "rounds.csv")) == 2  # round 1 was saved
    lines: list[str] = []
    run_cell(cfg, tmp_path / "cell", data=digits, log=lines.append)
    assert "resuming after round 1" in lines[0]
    client = tracking.client_for(uri)
    (run,) = client.search_runs([tracking.experiment_id(client, "kill", create=False)])
    table = pd.read_csv(tmp_path / "cell" / "rounds.csv")
    for key in ("accuracy", "train_epochs"):
        hist = client.get_metric_history(run.info.run_id, tracking.metric_name(key))
        assert sorted((m.step, m.value) for m in hist) == list(zip(table["labels"], table[key],
                                                                   strict=True))
    assert run.info.status == "FINISHED"


# ---------------------------------------------------------------------------- PostgreSQL
@pytest.fixture(scope="module")
def postgres_uri(tmp_path_factory) -> Iterator[str]:
    """A throwaway PostgreSQL cluster on localhost (tests/services/postgres.sh)."""
    state = tmp_path_factory.mktemp("postgres")
    script = str(wf.REPO / "tests" / "services" / "postgres.sh")
    r = subprocess.run(["bash", script, "start", str(state), str(free_port())], capture_output=True,
                       text=True, timeout=900, env={**os.environ, "PYTHON": sys.executable})
    if r.returncode == 3:
        pytest.skip(f"PostgreSQL cannot be installed on this machine: {r.stderr.strip()[-500:]}")
    assert r.returncode == 0, r.stderr
    try:
        yield r.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run(["bash", script, "stop", str(state)], timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(not wf.has_workflow(), reason="the workflow is not in this checkout")
def test_workflow_logs_every_cell_to_a_postgres_backed_mlflow_server(postgres_uri, tmp_path):
    """As on a cluster: ``mlflow server`` on PostgreSQL, the workflow's tracking_uri pointing at
    it; every cell is one FINISHED run holding every round of its table."""
    import psycopg2

    with mlflow_server(postgres_uri, tmp_path / "server") as url:
        work = wf.copy_workflow(tmp_path / "wf")
        wf.run_snakemake(work, "--cores", "2", "--workflow-profile", "none",
                         "--config", f"tracking_uri={url}", "--", wf.TABLE)
        table = pd.read_csv(work / wf.TABLE)
        runs = cell_runs(url, wf.STUDY)
        assert sorted(tags(r)["strategy"] for r in runs) == sorted(wf.STRATEGIES)
        for run in runs:
            strategy = tags(run)["strategy"]
            assert run["info"]["status"] == "FINISHED"
            cell = work / f"results/{wf.STUDY}/runs/digits/{strategy}/seed0/noise0"
            assert_run_matches_table(url, run, cell)
            assert len(rest_history(url, run["info"]["run_id"], "test/accuracy")) == wf.ROUNDS + 1
    # the runs really are in PostgreSQL, not in some fallback store
    with psycopg2.connect(postgres_uri) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
                    "WHERE e.name = %s", (wf.STUDY,))
        assert cur.fetchone()[0] == len(wf.STRATEGIES) + 1  # and the study's parent run
    assert not (work / f"results/{wf.STUDY}/mlflow.db").exists()
    wf.remember_reference(table)  # an uninterrupted local run: the kill/resume test's reference


# ---------------------------------------------------------------------------- kill and resume
def _rows(path: Path) -> int:
    """Finished rounds in a cell's rounds.csv (0 when absent)."""
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def _processes_under(path: Path) -> list[int]:
    """Live processes whose command line mentions ``path`` (this test's jobs)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not wf.has_workflow(), reason="the workflow is not in this checkout")
def test_kill_workflow_mid_cell_then_rerun_resumes(tmp_path, tmp_path_factory):
    """SIGKILL the whole snakemake process group while an AL job is between rounds; rerunning
    the same command resumes that cell after its last finished round (finished rounds are not
    retrained) and the tidy table equals an uninterrupted run's, row for row, timings aside."""
    reference = wf.local_reference(tmp_path_factory)
    work = wf.copy_workflow(tmp_path / "wf")
    args = ["--cores", "2", "--workflow-profile", "none", "--", wf.TABLE]
    cells = {s: work / f"results/{wf.STUDY}/runs/digits/{s}/seed0/noise0" for s in wf.STRATEGIES}
    proc = subprocess.Popen(wf.snakemake_cmd(*args), cwd=work, env=wf.env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim, seen = None, 0
    deadline = time.monotonic() + 600
    while victim is None and proc.poll() is None and time.monotonic() < deadline:
        for strategy, cell in cells.items():
            seen = _rows(cell / "rounds.csv")
            if 2 <= seen <= wf.ROUNDS - 1:  # rounds 0 and 1 done, the cell is not finished
                os.killpg(proc.pid, signal.SIGKILL)
                victim = strategy
                break
        time.sleep(0.02)
    proc.wait(60)
    assert victim is not None, "the workflow finished before a cell could be caught between rounds"
    deadline = time.monotonic() + 30
    while _processes_under(work) and time.monotonic() < deadline:  # the AL jobs die with the group
        time.sleep(0.2)
    assert not _processes_under(work)
    assert (cells[victim] / "state.pt").exists()

    # the documented recovery: remove the killed run's lock, rerun the same command
    wf.run_snakemake(work, "--unlock", *args)
    wf.run_snakemake(work, "--rerun-incomplete", *args)

    log = (work / f"results/{wf.STUDY}/logs/al/digits/{victim}/seed0/noise0.log").read_text()
    resumed = [line for line in log.splitlines() if "resuming after round" in line]
    assert len(resumed) == 1, log
    last = int(resumed[0].split("resuming after round ")[1].split()[0])
    assert seen - 1 <= last < wf.ROUNDS, (seen, resumed)
    trained = [int(m) for m in re.findall(r"\] round +(\d+)/", log)]
    assert trained == list(range(last + 1, wf.ROUNDS + 1)), log  # finished rounds not retrained

    table = pd.read_csv(work / wf.TABLE)
    pd.testing.assert_frame_equal(wf.without_timings(table), wf.without_timings(reference),
                                  check_exact=True)
    assert not [p for p in (work / "results").rglob("*") if p.name.endswith(".tmp")]
    # the workflow's default store, opened by a real server as docs/workflow.md tells users to,
    # holds one run per cell with every round (the resumed cell's included), over REST
    store = f"sqlite:///{work}/results/{wf.STUDY}/mlflow.db"
    with mlflow_server(store, tmp_path / "ui") as url:
        runs = cell_runs(url, wf.STUDY)
        assert sorted(tags(r)["strategy"] for r in runs) == sorted(wf.STRATEGIES)
        for run in runs:
            assert run["info"]["status"] == "FINISHED"
            cell = cells[tags(run)["strategy"]]
            assert_run_matches_table(url, run, cell)
            assert len(rest_history(url, run["info"]["run_id"], "test/accuracy")) == wf.ROUNDS + 1
