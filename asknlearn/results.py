"""A study's results: reading its cells, the tidy table, the summary and its Markdown tables.

The workflow gathers each cell's ``rounds.csv`` into one tidy table per study (one row per
cell and round, every metric: ``asknlearn aggregate``), and each cell's optional
``reliability.csv`` into a per-bin table. The summary (``asknlearn summarize``) and the
figures (:mod:`asknlearn.plots`) read only these two tables. Nothing here imports torch or
matplotlib at import time; every file is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from asknlearn import catalogue, records
from asknlearn.errors import AskNLearnError
from asknlearn.naming import NOISE_RESOLUTION
from asknlearn.records import atomic_write

if TYPE_CHECKING:  # pandas stays lazy: the CLI imports this module for every command
    import pandas as pd

# the cell folder's contract, declared once in records; lists here because pandas indexes with them
CELL_KEYS = list(records.CELL_KEYS)
REQUIRED_COLUMNS = list(records.REQUIRED_COLUMNS)
RELIABILITY_FILE = records.RELIABILITY_FILE
RELIABILITY_COLUMNS = list(records.RELIABILITY_COLUMNS)
# the catalogue's metrics (the paper's four, in its order) with their names in tables
METRICS = {name: m.display for name, m in catalogue.METRICS.items()}


class ReportError(AskNLearnError):
    """A missing or malformed results table."""


def strategy_order(names: Iterable[str]) -> list[str]:
    """The paper's strategies in its order first, then any others alphabetically, so every
    table and figure of a study lists strategies in the same order."""
    from asknlearn.strategies import PAPER_STRATEGIES

    present = set(names)
    return [s for s in PAPER_STRATEGIES if s in present] + sorted(present - set(PAPER_STRATEGIES))


def write_csv(df: pd.DataFrame, out: str | Path) -> None:
    """Write ``df`` to ``out`` atomically (readers never see half a table)."""
    atomic_write(Path(out), lambda p: df.to_csv(p, index=False))


def write_text(text: str, out: str | Path) -> None:
    """Write ``text`` to ``out`` atomically."""
    atomic_write(Path(out), lambda p: Path(p).write_text(text))


# ---------------------------------------------------------------------------- tables
def _read_table(path: str | Path, what: str, origin: str, columns: list[str],
                allow_empty: bool = False) -> pd.DataFrame:
    """records.read_table, its one-line error raised as a ReportError (a report's input)."""
    try:
        return records.read_table(path, what, columns, allow_empty=allow_empty, origin=origin)
    except records.CellFolderError as exc:
        raise ReportError(str(exc)) from None


def read_rounds(path: str | Path) -> pd.DataFrame:
    """Read one ``rounds.csv`` (a cell's or a study's) and check it has the contract columns."""
    return _read_table(path, "rounds table", "a rounds.csv written by `asknlearn run` or "
                       "`asknlearn aggregate`", REQUIRED_COLUMNS)


def aggregate(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate per-cell round tables into the study's tidy table (one row per cell and
    round), refusing duplicated cells so a copied folder cannot double-count a seed."""
    import pandas as pd

    frames = [read_rounds(p) for p in paths]
    if not frames:
        raise ReportError("no rounds tables given; valid: one or more cell rounds.csv paths")
    df = pd.concat(frames, ignore_index=True, sort=False)
    dup = df.duplicated(subset=[*CELL_KEYS, "round"], keep=False)
    if dup.any():
        first = df.loc[dup, [*CELL_KEYS, "round"]].iloc[0].to_dict()
        raise ReportError(f"round {first} appears more than once across the inputs; "
                          "valid: each cell's rounds.csv given once")
    # fixed leading columns, then the rest as the loop wrote them (val_* only when present)
    rest = [c for c in df.columns if c not in REQUIRED_COLUMNS]
    return df[REQUIRED_COLUMNS + rest].sort_values([*CELL_KEYS, "round"]).reset_index(drop=True)


def gather_reliability(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Per-bin reliability rows of every cell whose folder holds a ``reliability.csv`` (next to
    its ``rounds.csv``), tagged with the cell keys; an empty table when none does."""
    import pandas as pd

    frames = []
    for p in map(Path, paths):
        rel = p.parent / RELIABILITY_FILE
        if not rel.is_file():
            continue
        r = pd.read_csv(rel)
        missing = [c for c in RELIABILITY_COLUMNS if c not in r.columns]
        if missing:
            raise ReportError(f"{str(rel)!r} lacks columns {missing}; valid: {RELIABILITY_COLUMNS}")
        keys = read_rounds(p)[CELL_KEYS].iloc[0]
        frames.append(r[RELIABILITY_COLUMNS].assign(**keys.to_dict()))
    if not frames:
        return pd.DataFrame(columns=CELL_KEYS + RELIABILITY_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CELL_KEYS + RELIABILITY_COLUMNS]


def read_reliability(path: str | Path) -> pd.DataFrame:
    """Read a study's per-bin reliability table (``asknlearn aggregate --reliability-out``)."""
    # a study whose cells wrote no bins has a header-only table: the plot says so, not an error
    return _read_table(path, "reliability table", "the output of "
                       "`asknlearn aggregate --reliability-out`", CELL_KEYS + RELIABILITY_COLUMNS,
                       allow_empty=True)


def noise_levels(df: pd.DataFrame, dataset: str) -> list[float]:
    """The oracle noise levels that ``dataset`` has rows for, sorted."""
    return sorted({float(n) for n in df.loc[df["dataset"] == dataset, "noise"]})


def select(df: pd.DataFrame, dataset: str, noise: float | None) -> pd.DataFrame:
    """The rows of one dataset (and one noise level unless ``noise`` is None); a clear error
    naming the (dataset, noise) pairs the table has when there are none."""
    sel = df[df["dataset"] == dataset]
    if noise is not None:
        sel = sel[(sel["noise"].astype(float) - noise).abs() < NOISE_RESOLUTION]
    if sel.empty:
        have = sorted({(d, float(n)) for d, n in zip(df["dataset"], df["noise"], strict=True)})
        raise ReportError(f"no rows for dataset={dataset!r} noise={noise!r}; valid: {have}")
    return sel


# ---------------------------------------------------------------------------- summary
def area_under_curve(labels: Sequence[float], accuracy: Sequence[float]) -> float:
    """AULC: the trapezoid area under accuracy vs labels, divided by the label range (a mean
    accuracy over the curve); one point: its accuracy. ``labels`` sorted ascending."""
    import numpy as np

    x, y = np.asarray(labels, float), np.asarray(accuracy, float)
    span = x[-1] - x[0]
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / span) if span > 0 else float(y[0])


def _per_cell(df: pd.DataFrame, target: float) -> pd.DataFrame:
    """One row per cell: AULC, labels to reach ``target`` accuracy, final-round metrics."""
    import numpy as np
    import pandas as pd

    rows = []
    for keys, g in df.groupby(CELL_KEYS, sort=True):
        g = g.sort_values("round")
        x, acc = g["labels"].to_numpy(float), g["accuracy"].to_numpy(float)
        aulc = area_under_curve(x, acc)
        hit = np.nonzero(acc >= target)[0]
        last = g.iloc[-1]
        rows.append({**dict(zip(CELL_KEYS, keys, strict=True)), "aulc": aulc,
                     "labels_to_target": float(x[hit[0]]) if len(hit) else math.nan,
                     "final_round": int(last["round"]), "final_labels": int(last["labels"]),
                     "round_minutes": float(g["round_seconds"].sum()) / 60.0
                     if "round_seconds" in g else math.nan,
                     **{f"final_{m}": float(last[m]) for m in METRICS}})
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, target: float,
              references: Sequence[str] = ("badge", "random")) -> pd.DataFrame:
    """Per (dataset, noise, strategy): mean and sd over seeds of AULC, labels-to-target and
    final metrics, and the paired difference against each reference strategy. Pairing is by
    seed: one seed gives every strategy the same seed set and initial weights, so the
    per-seed difference removes the seed-set variance the two curves share."""
    import pandas as pd

    if not 0.0 < target <= 1.0:
        raise ReportError(f"target accuracy {target!r} is not valid; valid: a value in (0, 1]")
    cells = _per_cell(df, target)
    values = ["aulc", "labels_to_target", *(f"final_{m}" for m in METRICS), "round_minutes"]
    group = ["study", "dataset", "noise", "strategy"]
    out = []
    for keys, g in cells.groupby(group, sort=False):
        row = dict(zip(group, keys, strict=True))
        row["n_seeds"] = len(g)
        row["reached_target"] = int(g["labels_to_target"].notna().sum())
        row["final_labels"] = int(g["final_labels"].max())
        for v in values:
            row[f"{v}_mean"], row[f"{v}_sd"] = g[v].mean(), g[v].std(ddof=1)
        same = cells[(cells["dataset"] == keys[1]) & (cells["noise"] == keys[2])]
        for ref in references:
            r = same[same["strategy"] == ref].set_index("seed")
            paired = g.set_index("seed").join(r.add_suffix("_ref"), how="inner")
            for v in ("aulc", "final_accuracy", "final_ece"):
                d = paired[v] - paired[f"{v}_ref"] if len(r) and ref != keys[3] else pd.Series(dtype=float)
                row[f"delta_{v}_vs_{ref}_mean"] = d.mean() if len(d) else math.nan
                row[f"delta_{v}_vs_{ref}_sd"] = d.std(ddof=1) if len(d) > 1 else math.nan
            row[f"n_pairs_vs_{ref}"] = len(paired) if len(r) and ref != keys[3] else 0
        out.append(row)
    s = pd.DataFrame(out)
    order = {name: i for i, name in enumerate(strategy_order(s["strategy"]))}
    s["_o"] = s["strategy"].map(order)
    s = s.sort_values(["dataset", "noise", "_o"]).drop(columns="_o").reset_index(drop=True)
    s.attrs["target"] = target
    s.attrs["references"] = list(references)
    return s


def _pm(mean: float, sd: float, digits: int = 3, scale: float = 1.0) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}"


def _metric_pm(metric: str, mean: float, sd: float) -> str:
    """mean ± sd of ``metric`` in its catalogue unit and digits."""
    m = catalogue.METRICS[metric]
    return _pm(mean, sd, m.digits, m.scale)


def summary_markdown(s: pd.DataFrame, target: float, references: Sequence[str]) -> str:
    """The summary as Markdown: one table per dataset and noise level, mean ± sd over seeds."""
    lines = [f"# Study {s['study'].iloc[0]}: summary", "",
             "Mean ± sd over seeds. AULC: area under the accuracy-vs-labels curve (trapezoid, "
             "divided by the label range). Labels to target: first round with test accuracy ≥ "
             f"{target:g} (mean over the seeds that reach it; reached k/n). Δ: paired by seed, "
             "strategy minus reference. Round min/cell: the sum of the rounds' own times (training, "
             "selection, evaluation), not the job's wall time (start-up, data loading and "
             "tracking are outside it).", ""]
    for (ds, noise), g in s.groupby(["dataset", "noise"], sort=False):
        head = ["strategy", "n", "AULC", f"labels to {target:g}",
                *(f"final {m.display} ({m.unit})" for m in catalogue.METRICS.values()),
                "round min/cell"]
        acc_unit = catalogue.METRICS["accuracy"].unit
        for ref in references:
            head += [f"ΔAULC vs {ref}", f"Δacc ({acc_unit}) vs {ref}"]
        lines += [f"## {ds}, oracle noise {noise:g} (final labels {int(g['final_labels'].max())})", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in g.iterrows():
            cells = [r["strategy"], str(r["n_seeds"]), _pm(r["aulc_mean"], r["aulc_sd"]),
                     f"{_pm(r['labels_to_target_mean'], r['labels_to_target_sd'], 0)} "
                     f"({r['reached_target']}/{r['n_seeds']})"]
            cells += [_metric_pm(m, r[f"final_{m}_mean"], r[f"final_{m}_sd"]) for m in METRICS]
            cells.append(_pm(r.get("round_minutes_mean", math.nan), r.get("round_minutes_sd", math.nan), 1))
            for ref in references:
                for v, fmt in (("aulc", _pm), ("final_accuracy", partial(_metric_pm, "accuracy"))):
                    col = f"delta_{v}_vs_{ref}"
                    cells.append(fmt(r.get(f"{col}_mean", math.nan), r.get(f"{col}_sd", math.nan))
                                 if f"{col}_mean" in r else "—")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def paired_by_seed(df: pd.DataFrame, labels: Sequence[int], reference: str = "badge") -> pd.DataFrame:
    """Each metric of each cell at the given label counts, long (one row per dataset, noise,
    strategy, label count, seed and metric: ``value``), with ``delta`` = value minus the
    ``reference`` strategy's value for the same seed (NaN for the reference itself, or where
    its cell has no such round). The one place a "Δ vs BADGE at 1,100 labels" is paired."""
    keys = ["dataset", "noise", "labels", "seed"]
    at = df[df["labels"].isin(list(labels))]
    long = at.melt(id_vars=[*keys, "strategy"], value_vars=list(METRICS), var_name="metric")
    ref = (long[long["strategy"] == reference].drop(columns="strategy")
           .rename(columns={"value": "reference_value"}))
    long = long.merge(ref, on=[*keys, "metric"], how="left")
    long["delta"] = (long["value"] - long.pop("reference_value")).where(long["strategy"] != reference)
    return long


def paired_at_labels(df: pd.DataFrame, labels: Sequence[int], reference: str = "badge") -> pd.DataFrame:
    """``paired_by_seed`` over seeds: one flat row per dataset, noise, strategy, label count and
    metric, with ``n`` seeds (mean, sd) and ``n_pairs`` seeds both reached (delta_mean,
    delta_sd; NaN where there is no pair), in the order datasets appear, strategy_order, the
    given label counts and the paper's metrics."""
    long = paired_by_seed(df, labels, reference)
    group = ["dataset", "noise", "strategy", "labels", "metric"]
    g = long.groupby(group, sort=False)
    t = g.agg(n=("value", "count"), mean=("value", "mean"), sd=("value", "std"),
              n_pairs=("delta", "count"), delta_mean=("delta", "mean"),
              delta_sd=("delta", "std")).reset_index()
    rank = {name: i for i, name in enumerate(strategy_order(t["strategy"].unique()))}
    place = {x: i for i, x in enumerate(labels)}
    datasets = {name: i for i, name in enumerate(df["dataset"].unique())}
    t["_o"] = list(zip(t["dataset"].map(datasets), t["noise"], t["strategy"].map(rank),
                       t["labels"].map(place), t["metric"].map(list(METRICS).index), strict=True))
    return t.sort_values("_o").drop(columns="_o").reset_index(drop=True)


def at_labels_markdown(df: pd.DataFrame, labels: Sequence[int], reference: str = "badge") -> str:
    """Every metric at the given label counts, mean ± sd over seeds, and the paired (by seed)
    difference to ``reference``: the paper's claims are about small label counts, which the
    final-round and area summaries average away."""
    lines = ["Metrics at given label counts (mean ± sd over seeds; "
             f"Δ: paired by seed, minus {reference}).", ""]
    t = paired_at_labels(df, labels, reference)
    for (ds, noise), d in t.groupby(["dataset", "noise"], sort=False):
        lines += [f"### {ds}, oracle noise {noise:g}", "",
                  "| strategy | labels | " + " | ".join(f"{catalogue.METRICS[m].label()} | Δ{m}"
                                                      for m in METRICS) + " |",
                  "|---|---|" + "---|---|" * len(METRICS)]
        for (strategy, x), g in d.groupby(["strategy", "labels"], sort=False):
            cells = [strategy, str(x)]
            for r in g.set_index("metric").loc[list(METRICS)].itertuples():
                cells.append(_metric_pm(r.Index, r.mean, r.sd))
                cells.append(_metric_pm(r.Index, r.delta_mean, r.delta_sd) if r.n_pairs else "—")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
