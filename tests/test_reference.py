"""Bit-identical results: every built-in strategy's digits cell, rerun now, gives the tables
committed under ``tests/data/reference/`` before the architecture refactor (issue 20).

A refactor of the package must not change what a cell computes. The committed tables were
written at commit 59ce359 by ``python tests/test_reference.py --write``; this test reruns the
same cells (CPU, one thread, tracking off) and compares ``rounds.csv`` (wall times and the
timestamp aside) and ``queries.csv`` byte for byte. Only a deliberate change of results may
regenerate them, with the reason in the commit message.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

REFERENCE = Path(__file__).parent / "data" / "reference"
TIMING = ["train_seconds", "inference_seconds", "selection_seconds", "round_seconds", "timestamp_ms"]
# (strategy, noise, val_size): every built-in strategy on a clean oracle; the two refining ones
# and BADGE again with a noisy oracle and a validation split, so the oracle-noise draws and the
# val_* / oracle_* diagnostics are covered too
BUILTIN = ["random", "confidence", "entropy", "margin", "badge", "ask-n-learn-lwcc",
           "ask-n-learn-vwcc", "badge-lwcc", "badge-vwcc", "badge-refine", "badge-dropout",
           "coreset", "bald", "powerbald", "typiclust"]
CELLS = [(s, 0.0, 0) for s in BUILTIN] + [
    ("badge", 0.2, 100), ("ask-n-learn-lwcc", 0.2, 100), ("ask-n-learn-vwcc", 0.2, 100)]
# a fast subset runs in every suite; the rest with the slow tests
FAST = {("random", 0.0, 0), ("badge", 0.2, 100), ("ask-n-learn-vwcc", 0.2, 100),
        ("powerbald", 0.0, 0)}


def cell_name(strategy: str, noise: float, val_size: int) -> str:
    return f"{strategy}_noise{noise}_val{val_size}"


def run_cell(strategy: str, noise: float, val_size: int, out: Path) -> None:
    from asknlearn.cli import main as cli_main

    argv = ["run", "--dataset", "digits", "--strategy", strategy, "--seed", "0",
            "--noise", str(noise), "--val-size", str(val_size), "--seed-size", "20",
            "--query-size", "20", "--budget", "60", "--max-epochs", "40", "--device", "cpu",
            "--threads", "1", "--tracking", "false", "--quiet", "--out", str(out)]
    assert cli_main(argv) == 0


def _params():
    for cell in CELLS:
        marks = () if cell in FAST else (pytest.mark.slow,)
        yield pytest.param(*cell, marks=marks, id=cell_name(*cell))


@pytest.mark.parametrize(("strategy", "noise", "val_size"), list(_params()))
def test_cell_matches_the_committed_reference(strategy, noise, val_size, tmp_path):
    ref = REFERENCE / cell_name(strategy, noise, val_size)
    run_cell(strategy, noise, val_size, tmp_path / "cell")
    got, want = pd.read_csv(tmp_path / "cell" / "rounds.csv"), pd.read_csv(ref / "rounds.csv")
    pd.testing.assert_frame_equal(got.drop(columns=TIMING), want.drop(columns=TIMING),
                                  check_exact=True)
    assert (tmp_path / "cell" / "queries.csv").read_bytes() == (ref / "queries.csv").read_bytes()


def test_the_references_cover_every_builtin_strategy():
    from asknlearn.strategies import STRATEGIES

    assert set(BUILTIN) == set(STRATEGIES)
    assert all((REFERENCE / cell_name(*c) / "queries.csv").is_file() for c in CELLS)


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    import shutil
    import tempfile

    for cell in CELLS:
        with tempfile.TemporaryDirectory() as tmp:
            run_cell(*cell, Path(tmp) / "cell")
            dest = REFERENCE / cell_name(*cell)
            dest.mkdir(parents=True, exist_ok=True)
            for f in ("rounds.csv", "queries.csv"):
                shutil.copyfile(Path(tmp) / "cell" / f, dest / f)
        print("wrote", dest)
