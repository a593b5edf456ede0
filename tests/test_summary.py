"""The metrics-at-label-counts table pairs strategies by seed."""

from __future__ import annotations

import pandas as pd

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
    assert cells[2] == "0.800 ± 0.071"
    assert cells[3] == "0.050 ± 0.000"
    assert "| 9999 |" not in md  # label counts that no round has are skipped
    assert next(s for s in md.splitlines() if s.startswith("| badge | 1100")).count("—") == 4
