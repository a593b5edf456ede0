"""asknlearn ablation (asknlearn/ablation.py): paired deltas, pooled refinement counts and the figure,
on a hand-made study whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from asknlearn.results import ReportError


@pytest.fixture(scope="module")
def report():
    from asknlearn import ablation

    return ablation


def _cell(root: Path, strategy: str, seed: int, acc: list[float], refined=None, alpha=None):
    rows = []
    for r, a in enumerate(acc):
        row = {"study": "s", "dataset": "fashion_mnist", "strategy": strategy, "seed": seed,
               "noise": 0.0, "round": r, "labels": 100 + 1000 * r, "accuracy": a, "ece": 0.1,
               "nll": 0.5, "brier": 0.3, "alpha_mean": alpha if alpha is not None else math.nan,
               "alpha_p90": 2 * alpha if alpha is not None else math.nan}
        if refined and r >= 1:
            frac, argmax_acc, ref_acc = refined[r - 1]
            row.update(val_refined_fraction=frac, val_refined_argmax_accuracy=argmax_acc,
                       val_refined_accuracy=ref_acc)
        rows.append(row)
    d = root / "runs" / "fashion_mnist" / strategy / f"seed{seed}" / "noise0"
    d.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(d / "rounds.csv", index=False)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    for seed, shift in [(0, 0.00), (1, 0.02)]:
        _cell(tmp_path, "badge", seed, [0.60 + shift, 0.70 + shift, 0.75 + shift])
        _cell(tmp_path, "ask-n-learn-vwcc", seed, [0.61 + shift, 0.72 + shift], alpha=0.03,
              # (fraction of 1000 val points, argmax acc, refined acc) for round 1
              refined=[(0.010, 0.5, 0.7) if seed == 0 else (0.030, 0.4, 0.3)])
    return tmp_path


def test_paired_delta_uses_the_seeds_both_reached(report, study):
    df = report.load(study)
    table = report.at_labels(df, [1100, 2100])
    row = next(ln for ln in table.splitlines() if ln.startswith("| ask-n-learn-vwcc"))
    assert "+2.00 ± 0.00 (n=2)" in row  # 1,100 labels: +0.02 in both seeds
    # at 2,100 labels only BADGE has rows: no Ask-n-Learn line there
    block_2100 = table.split("**2,100 labels.**")[1]
    assert "ask-n-learn-vwcc" not in block_2100


def test_refinement_is_pooled_by_points_not_by_rounds(report, study):
    pooled = report.refine_pooled(report.load(study), val_size=1000)
    r = pooled.loc["ask-n-learn-vwcc"]
    assert r["refined points"] == 40
    # 10 points at 0.5/0.7 and 30 points at 0.4/0.3: (5 + 12) / 40 and (7 + 9) / 40
    assert r["argmax accuracy"] == pytest.approx(17 / 40)
    assert r["refined accuracy"] == pytest.approx(16 / 40)
    assert (r["rounds refined > argmax"], r["rounds refined < argmax"]) == (1, 1)
    assert r["net change (points of the split)"] == pytest.approx(-1 / 2000 * 100)


def test_figure_writes_png_and_pdf(report, study, tmp_path):
    df = report.load(study)
    outs = [tmp_path / "diag.png", tmp_path / "diag.pdf"]
    report.figure(df, report.refine_pooled(df, 1000), outs)
    assert all(p.stat().st_size > 1000 for p in outs)


def test_per_seed_deltas_are_printed_next_to_the_mean(report, study):
    """The doc cites per-seed gains ("positive in every seed"): the report prints them, in
    seed order, at label counts and for the AULC."""
    df = report.load(study)
    row = next(ln for ln in report.at_labels(df, [1100]).splitlines()
               if ln.startswith("| ask-n-learn-vwcc"))
    assert "| +2.00 / +2.00 |" in row
    aulc = report.aulc(df, [1100])
    assert "Δ by seed (0 / 1)" in aulc
    # AULC over 100-1,100 is the mean of the two points: (0.61+0.72)/2 - (0.60+0.70)/2 in both seeds
    row = next(ln for ln in aulc.splitlines() if ln.startswith("| ask-n-learn-vwcc"))
    assert row.endswith("| +1.50 / +1.50 |")


def test_a_broken_cell_table_is_one_line_not_a_traceback(report, study):
    bad = study / "runs" / "fashion_mnist" / "badge" / "seed0" / "noise0" / "rounds.csv"
    bad.write_bytes(b"\x00\xff garbage\n\"unterminated")
    with pytest.raises(ReportError, match=r"is not a readable CSV table"):
        report.load(study)
