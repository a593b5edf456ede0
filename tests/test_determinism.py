"""Determinism: two runs of the same cell on the CPU select the same points and give the same
metrics, bit for bit (timings aside) — here one run in this process and one in a fresh
interpreter with a different hash seed, so nothing may hang on process state."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from asknlearn.cli import main as cli_main

TIMING = ["train_seconds", "inference_seconds", "selection_seconds", "round_seconds", "timestamp_ms"]
# the strategies with the most randomness: k-means++ sampling, MC dropout, augmentations;
# noise 0.1 adds the noisy oracle's draws
STRATEGIES = ["badge", "ask-n-learn-vwcc", "ask-n-learn-lwcc"]


def argv(strategy: str, out: Path) -> list[str]:
    return ["run", "--dataset", "digits", "--strategy", strategy, "--seed", "3", "--noise", "0.1",
            "--seed-size", "20", "--query-size", "20", "--budget", "60", "--max-epochs", "60",
            "--k-aug", "4", "--threads", "1", "--tracking", "false", "--quiet", "--out", str(out)]


@pytest.fixture(scope="module")
def twice(tmp_path_factory) -> tuple[Path, Path]:
    """Every strategy's cell run here, and again in a subprocess."""
    here, there = tmp_path_factory.mktemp("here"), tmp_path_factory.mktemp("there")
    for s in STRATEGIES:
        assert cli_main(argv(s, here / s)) == 0
    code = ("import sys; from asknlearn.cli import main\n"
            f"for a in {[argv(s, there / s) for s in STRATEGIES]!r}:\n"
            "    assert main(a) == 0\n")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=600)
    return here, there


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_cell_twice_gives_identical_selections_and_metrics(strategy, twice):
    a, b = (d / strategy for d in twice)
    # the selections: which pool points were queried in which round, and the labels given
    assert (a / "queries.csv").read_bytes() == (b / "queries.csv").read_bytes()
    ra, rb = pd.read_csv(a / "rounds.csv"), pd.read_csv(b / "rounds.csv")
    assert len(ra) == 4 and ra["n_wrong_labels"].iloc[-1] > 0  # 3 rounds, the oracle did err
    pd.testing.assert_frame_equal(ra.drop(columns=TIMING), rb.drop(columns=TIMING), check_exact=True)
    for extra in ("reliability.csv",):
        if (a / extra).exists():
            assert (a / extra).read_bytes() == (b / extra).read_bytes()


@pytest.mark.slow
def test_a_different_seed_gives_different_selections(twice, tmp_path):
    """The control: the comparison above would notice a change (seed 3 vs 4 differ)."""
    out = tmp_path / "seed4"
    args = argv("badge", out)
    args[args.index("--seed") + 1] = "4"
    assert cli_main(args) == 0
    assert (out / "queries.csv").read_bytes() != (twice[0] / "badge" / "queries.csv").read_bytes()
