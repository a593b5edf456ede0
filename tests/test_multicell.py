"""asknlearn.multicell: cells run together in one process, their MLPs trained as one batched
computation, give what each cell gives alone (same queries, epochs, metrics up to
floating-point reassociation), keep their own folders and resume, and one failing cell does
not stop the others."""

from __future__ import annotations

import pandas as pd
import pytest

from asknlearn.config import from_mapping
from asknlearn.errors import AskNLearnError
from asknlearn.loop import run_cell
from asknlearn.multicell import run_cells

BASE = dict(dataset="digits", seed_size=20, query_size=20, budget=40, tracking=False, threads=1)
METRICS = ["accuracy", "ece", "nll", "brier", "train_accuracy"]


def _cfgs():
    # CE and LWCC share a stack; VWCC (dropout network, T passes) is its own
    return [from_mapping({**BASE, "strategy": s, "seed": k})
            for s in ("badge", "badge-lwcc", "badge-vwcc") for k in (0, 1)]


@pytest.mark.slow
def test_cells_together_match_cells_alone(tmp_path):
    cfgs = _cfgs()
    alone = [run_cell(c, tmp_path / "alone" / str(i), log=lambda s: None) for i, c in enumerate(cfgs)]
    together = run_cells(cfgs, [tmp_path / "together" / str(i) for i in range(len(cfgs))],
                         log=lambda s: None)
    for i, (a, b) in enumerate(zip(alone, together, strict=True)):
        assert isinstance(b, pd.DataFrame), b
        qa = pd.read_csv(tmp_path / "alone" / str(i) / "queries.csv")
        qb = pd.read_csv(tmp_path / "together" / str(i) / "queries.csv")
        pd.testing.assert_frame_equal(qa, qb)  # the same labels bought, round by round
        assert list(a["train_epochs"]) == list(b["train_epochs"])
        pd.testing.assert_frame_equal(a[METRICS], b[METRICS], atol=1e-5, rtol=0)
    # a finished cell of the batched run is finished for a plain run too (its own state)
    again = run_cell(cfgs[0], tmp_path / "together" / "0", log=lambda s: None)
    pd.testing.assert_frame_equal(again[METRICS], together[0][METRICS])


def test_a_failing_cell_does_not_stop_the_others(tmp_path):
    good = from_mapping({**BASE, "strategy": "random", "seed": 0, "budget": 20})
    bad = from_mapping({**BASE, "strategy": "random", "seed": 1, "budget": 10**6})
    out = run_cells([good, bad], [tmp_path / "good", tmp_path / "bad"], log=lambda s: None)
    assert isinstance(out[0], pd.DataFrame) and len(out[0]) == 2
    assert isinstance(out[1], AskNLearnError) and "budget" in str(out[1])


def test_run_cells_needs_one_folder_per_config(tmp_path):
    with pytest.raises(ValueError, match="the same number"):
        run_cells(_cfgs(), [tmp_path / "a"])
