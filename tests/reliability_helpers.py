"""Shared by the workflow-level reliability tests (kill/resume, PostgreSQL, SLURM): a tiny
workflow config, a throwaway copy of the workflow to run it in, and the uninterrupted local
reference run that the interrupted and the SLURM runs must reproduce, computed once per session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
