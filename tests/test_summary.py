"""The metrics-at-label-counts table pairs strategies by seed."""

from __future__ import annotations

import pandas as pd
import pytest

from asknlearn.results import at_labels_markdown


def test_at_labels_table_pairs_by_seed():
    rows = []
    for strategy, bump in (("badge", 0.0), ("ask-n-learn-lwcc", 0.05)):
        for seed, base in ((0, 0.6), (1, 0.7)):
            for labels, gain in ((100, 0.0), (1100, 0.1)):
                rows.append({"study": "s", "dataset": "d", "noise": 0.0, "strategy": strategy,
                             "seed": seed, "labels": labels, "accuracy": base + gain + bump,
                             "ece": 0.1, "nll": 1.0, "brier": 0.3})
    md = at_labels_markdown(pd.DataFrame(rows), [1100, 9999], "badge")
    line = next(s for s in md.splitlines() if s.startswith("| ask-n-learn-lwcc | 1100"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    # accuracy 0.75 / 0.85 over seeds; paired difference exactly 0.05 with sd 0
    assert cells[2] == "80.00 ± 7.07"  # accuracy in %, its catalogue unit
    assert cells[3] == "5.00 ± 0.00"
    assert "| 9999 |" not in md  # label counts that no round has are skipped
    assert next(s for s in md.splitlines() if s.startswith("| badge | 1100")).count("—") == 4


def test_a_report_input_that_is_not_a_table_gets_one_line(tmp_path):
    """A study table read for a report goes through the same checks as a cell's (records)."""
    from asknlearn.results import ReportError, read_rounds

    bad = tmp_path / "rounds.csv"
    bad.write_bytes(b"\x00\xff\xfe garbage\n\"unterminated")
    with pytest.raises(ReportError, match=r"is not a readable CSV table .*valid: a rounds.csv "
                                          r"written by `asknlearn run` or `asknlearn aggregate`"):
        read_rounds(bad)
    words = tmp_path / "words.csv"
    words.write_text("study,dataset,strategy,seed,noise,round,labels,accuracy,ece,nll,brier\n"
                     "s,d,x,zero,0,0,10,0.5,0.1,1,0.2\n")
    with pytest.raises(ReportError, match=r"non-numeric values in \['seed'\]"):
        read_rounds(words)


def test_a_header_only_reliability_table_is_read_as_no_bins(tmp_path):
    """A study whose cells wrote no reliability bins: the plot draws a 'no data' figure, so
    reading the header-only table must not fail (an empty rounds table still does)."""
    from asknlearn.results import (
        CELL_KEYS,
        RELIABILITY_COLUMNS,
        REQUIRED_COLUMNS,
        ReportError,
        read_reliability,
        read_rounds,
    )

    rel = tmp_path / "reliability.csv"
    pd.DataFrame(columns=CELL_KEYS + RELIABILITY_COLUMNS).to_csv(rel, index=False)
    assert read_reliability(rel).empty
    rounds = tmp_path / "rounds.csv"
    pd.DataFrame(columns=REQUIRED_COLUMNS).to_csv(rounds, index=False)
    with pytest.raises(ReportError, match="has no rows"):
        read_rounds(rounds)


def test_paired_at_labels_pairs_only_the_seeds_both_reached():
    """A running study: the reference reached 1,100 labels in seeds 0-2, the strategy in seeds
    0-1 only. Its mean pools its 2 seeds, and its Δ the 2 seeds both have (not BADGE's 3-seed
    mean); a strategy without a row at a label count gets no row there."""
    from asknlearn.results import paired_at_labels

    rows = []
    for strategy, seeds, acc in (("badge", (0, 1, 2), (0.5, 0.6, 0.9)), ("x", (0, 1), (0.55, 0.7))):
        for seed, a in zip(seeds, acc, strict=True):
            rows.append({"dataset": "d", "noise": 0.0, "strategy": strategy, "seed": seed,
                         "labels": 1100, "accuracy": a, "ece": 0.1, "nll": 1.0, "brier": 0.3})
    t = paired_at_labels(pd.DataFrame(rows), [1100, 2100], "badge")
    r = t[(t.strategy == "x") & (t.metric == "accuracy")].iloc[0]
    assert (r["n"], r["n_pairs"]) == (2, 2)
    assert r["delta_mean"] == pytest.approx((0.05 + 0.1) / 2)
    assert r["delta_sd"] == pytest.approx(pd.Series([0.05, 0.1]).std())
    b = t[(t.strategy == "badge") & (t.metric == "accuracy")].iloc[0]
    assert (b["n"], b["n_pairs"]) == (3, 0) and pd.isna(b["delta_mean"])
    assert set(t["labels"]) == {1100}
