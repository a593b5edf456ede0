"""Shared by the workflow-level reliability tests (kill/resume, PostgreSQL, SLURM): a tiny
workflow config, a throwaway copy of the workflow to run it in, and the uninterrupted local
reference run that the interrupted and the SLURM runs must reproduce, computed once per session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
STUDY = "tiny"
STRATEGIES = ("random", "entropy")
ROUNDS = 10  # budget / query_size: rounds 0..10, enough for a kill between two of them
TINY_CONFIG = f"""\
study: {STUDY}
datasets: [digits]
strategies: [{", ".join(STRATEGIES)}]
seeds: [0]
noise: [0.0]
experiment:
  seed_size: 20
  query_size: 20
  budget: {20 * ROUNDS}
  max_epochs: 60
resources:
  al:
    threads: 1
"""
TABLE = f"results/{STUDY}/rounds.csv"  # the aggregate rule's tidy table (no plots: faster)
_reference: dict[str, pd.DataFrame] = {}


def has_workflow() -> bool:
    return (REPO / "Snakefile").exists() and (REPO / "config" / "config.yaml").exists()


def copy_workflow(dst: Path, config_text: str = TINY_CONFIG) -> Path:
    """A runnable copy of the workflow (Snakefile, rules, configs, profiles, the package) in
    ``dst`` with ``config_text`` as ``tiny.yaml``; results land in ``dst/results``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "profiles", "asknlearn"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif src.exists():
            shutil.copy(src, dst / name)
    (dst / "tiny.yaml").write_text(config_text)
    return dst


def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    e["OMP_NUM_THREADS"] = "1"
    return e


def snakemake_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--configfile", "tiny.yaml", *args]


def run_snakemake(work: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``snakemake ARGS`` in ``work``; fails the test with Snakemake's output on error."""
    r = subprocess.run(snakemake_cmd(*args), cwd=work, env=env(), capture_output=True, text=True,
                       timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def without_timings(table: pd.DataFrame) -> pd.DataFrame:
    """The table sorted by cell and round, without wall-clock columns (the only ones that may
    differ between two runs of the same cells)."""
    drop = [c for c in table.columns if c.endswith("_seconds") or c == "timestamp_ms"]
    keys = [c for c in ("study", "dataset", "strategy", "seed", "noise", "round") if c in table]
    return table.drop(columns=drop).sort_values(keys).reset_index(drop=True)


def local_reference(tmp_path_factory) -> pd.DataFrame:
    """The tidy table of an uninterrupted local run of TINY_CONFIG (computed once a session)."""
    if "table" not in _reference:
        work = copy_workflow(tmp_path_factory.mktemp("reference"))
        run_snakemake(work, "--cores", "2", "--workflow-profile", "none", "--config", "tracking=False",
                      "--", TABLE)
        _reference["table"] = pd.read_csv(work / TABLE)
    return _reference["table"]


def remember_reference(table: pd.DataFrame) -> None:
    """Offer the table of another complete, uninterrupted local run of TINY_CONFIG (tracking
    does not change results) as the reference, saving a run of its own."""
    _reference.setdefault("table", table)


# ---------------------------------------------------------------------------- a real MLflow server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def rest(base: str, path: str, body: dict | None = None, **query: str) -> dict:
    """One call of MLflow's REST API (GET, or POST with a JSON body)."""
    url = f"{base}/api/2.0/mlflow/{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


def rest_runs(base: str, experiment: str) -> list[dict]:
    """Every run of ``experiment`` as the server reports it (runs/search)."""
    exp = rest(base, "experiments/get-by-name", experiment_name=experiment)["experiment"]
    return rest(base, "runs/search", {"experiment_ids": [exp["experiment_id"]],
                                      "max_results": 1000}).get("runs", [])


def rest_history(base: str, run_id: str, key: str) -> list[tuple[int, float]]:
    hist = rest(base, "metrics/get-history", run_id=run_id, metric_key=key).get("metrics", [])
    return sorted((int(m.get("step", 0)), float(m["value"])) for m in hist)


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@contextmanager
def mlflow_server(backend_uri: str, workdir: Path) -> Iterator[str]:
    """A real ``mlflow server`` on a free localhost port; yields its URL, stops it after."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "mlflow-server.log"
    # the job runner is a feature of the UI this test does not use; it only costs CPU
    env = cli_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
             "--default-artifact-root", str(workdir / "artifacts"), "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not up after 180 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, timeout: float = 3) -> None:
    """SIGTERM the process group of ``proc`` (it was started in its own session), then KILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:  # a throwaway server: no need to wait for a clean exit
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        except ProcessLookupError:
            pass


def cell_runs(base: str, experiment: str) -> list[dict]:
    """The cell runs of ``experiment`` (the study's parent run left out)."""
    from asknlearn.tracking import CELL_TAG

    return [r for r in rest_runs(base, experiment) if CELL_TAG in tags(r)]
