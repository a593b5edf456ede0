"""Study-level reporting: the tidy table every plot reads, the figures and the summary table.

The workflow gathers each cell's ``rounds.csv`` into one tidy table per study (one row per
cell and round, every metric: ``asknlearn aggregate``); plots (``asknlearn plot``) and the
summary (``asknlearn summarize``) read only that table, plus the per-bin reliability table
gathered from each cell's optional ``reliability.csv``. Figures are seaborn long-form plots
of mean ± sd over seeds; every file is written atomically.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asknlearn.cli import command
from asknlearn.errors import AskNLearnError

if TYPE_CHECKING:  # heavy imports stay lazy: cli.main imports this module for every command
    import pandas as pd

CELL_KEYS = ["study", "dataset", "strategy", "seed", "noise"]
REQUIRED_COLUMNS = [*CELL_KEYS, "round", "labels", "accuracy", "ece", "nll", "brier"]
RELIABILITY_FILE = "reliability.csv"
RELIABILITY_COLUMNS = ["round", "bin", "lower", "upper", "count", "confidence", "accuracy"]
# the paper's four panels, in its order, with axis labels
PANELS = {"accuracy": "test accuracy", "ece": "ECE", "nll": "NLL", "brier": "Brier score"}
FORMATS = ("png", "pdf", "svg")


class ReportError(AskNLearnError):
    """A missing or malformed results table."""


# ---------------------------------------------------------------------------- tables
def read_rounds(path: str | Path) -> pd.DataFrame:
    """Read one ``rounds.csv`` (a cell's or a study's) and check it has the contract columns."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ReportError(f"rounds table {str(p)!r} does not exist; valid: a rounds.csv written by "
                          "`asknlearn run` or `asknlearn aggregate`")
    df = pd.read_csv(p)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ReportError(f"rounds table {str(p)!r} lacks columns {missing}; "
                          f"valid: a table with columns {REQUIRED_COLUMNS}")
    if df.empty:
        raise ReportError(f"rounds table {str(p)!r} has no rows; valid: a table of finished rounds")
    return df


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


# ---------------------------------------------------------------------------- summary
def _per_cell(df: pd.DataFrame, target: float) -> pd.DataFrame:
    """One row per cell: AULC, labels to reach ``target`` accuracy, final-round metrics."""
    import numpy as np
    import pandas as pd

    rows = []
    for keys, g in df.groupby(CELL_KEYS, sort=True):
        g = g.sort_values("round")
        x, acc = g["labels"].to_numpy(float), g["accuracy"].to_numpy(float)
        span = x[-1] - x[0]
        # trapezoid over labels, normalized by the label range: a mean accuracy over the curve
        aulc = float(np.sum((acc[1:] + acc[:-1]) / 2 * np.diff(x)) / span) if span > 0 else float(acc[0])
        hit = np.nonzero(acc >= target)[0]
        last = g.iloc[-1]
        rows.append({**dict(zip(CELL_KEYS, keys, strict=True)), "aulc": aulc,
                     "labels_to_target": float(x[hit[0]]) if len(hit) else math.nan,
                     "final_round": int(last["round"]), "final_labels": int(last["labels"]),
                     "wall_minutes": float(g["round_seconds"].sum()) / 60.0
                     if "round_seconds" in g else math.nan,
                     **{f"final_{m}": float(last[m]) for m in PANELS}})
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
    values = ["aulc", "labels_to_target", *(f"final_{m}" for m in PANELS), "wall_minutes"]
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


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def summary_markdown(s: pd.DataFrame, target: float, references: Sequence[str]) -> str:
    """The summary as Markdown: one table per dataset and noise level, mean ± sd over seeds."""
    lines = [f"# Study {s['study'].iloc[0]}: summary", "",
             "Mean ± sd over seeds. AULC: area under the accuracy-vs-labels curve (trapezoid, "
             "divided by the label range). Labels to target: first round with test accuracy ≥ "
             f"{target:g} (mean over the seeds that reach it; reached k/n). Δ: paired by seed, "
             "strategy minus reference.", ""]
    for (ds, noise), g in s.groupby(["dataset", "noise"], sort=False):
        head = ["strategy", "n", "AULC", f"labels to {target:g}", "final acc", "final ECE",
                "final NLL", "final Brier", "wall min/cell"]
        for ref in references:
            head += [f"ΔAULC vs {ref}", f"Δacc vs {ref}"]
        lines += [f"## {ds}, oracle noise {noise:g} (final labels {int(g['final_labels'].max())})", "",
                  "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for _, r in g.iterrows():
            cells = [r["strategy"], str(r["n_seeds"]), _pm(r["aulc_mean"], r["aulc_sd"]),
                     f"{_pm(r['labels_to_target_mean'], r['labels_to_target_sd'], 0)} "
                     f"({r['reached_target']}/{r['n_seeds']})"]
            cells += [_pm(r[f"final_{m}_mean"], r[f"final_{m}_sd"], 4 if m == "ece" else 3)
                      for m in PANELS]
            cells.append(_pm(r.get("wall_minutes_mean", math.nan), r.get("wall_minutes_sd", math.nan), 1))
            for ref in references:
                for v in ("aulc", "final_accuracy"):
                    col = f"delta_{v}_vs_{ref}"
                    cells.append(_pm(r.get(f"{col}_mean", math.nan), r.get(f"{col}_sd", math.nan))
                                 if f"{col}_mean" in r else "—")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def at_labels_markdown(df: pd.DataFrame, labels: Sequence[int], reference: str = "badge") -> str:
    """Every metric at the given label counts, mean ± sd over seeds, and the paired (by seed)
    difference to ``reference``: the paper's claims are about small label counts, which the
    final-round and area summaries average away."""
    lines = ["Metrics at given label counts (mean ± sd over seeds; "
             f"Δ: paired by seed, minus {reference}).", ""]
    for (ds, noise), d in df.groupby(["dataset", "noise"], sort=False):
        present = [x for x in labels if x in set(d["labels"])]
        if not present:
            continue
        lines += [f"### {ds}, oracle noise {noise:g}", "",
                  "| strategy | labels | " + " | ".join(f"{PANELS[m]} | Δ{m}" for m in PANELS) + " |",
                  "|---|---|" + "---|---|" * len(PANELS)]
        ref = d[d["strategy"] == reference].set_index(["seed", "labels"])
        for strategy in strategy_order(d["strategy"].unique()):
            g = d[d["strategy"] == strategy]
            for x in present:
                at = g[g["labels"] == x].set_index("seed")
                cells = [strategy, str(x)]
                for m in PANELS:
                    digits = 4 if m == "ece" else 3
                    cells.append(_pm(at[m].mean(), at[m].std(ddof=1), digits))
                    if strategy == reference or ref.empty:
                        cells.append("—")
                        continue
                    r = ref.xs(x, level="labels")[m] if x in ref.index.get_level_values("labels") else None
                    diff = (at[m] - r).dropna() if r is not None else at[m].iloc[:0]
                    cells.append(_pm(diff.mean(), diff.std(ddof=1), digits) if len(diff) else "—")
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- plots
def strategy_order(names: Iterable[str]) -> list[str]:
    """The paper's strategies in its order first, then any others alphabetically, so every
    figure of a study uses the same order and colours."""
    from asknlearn.strategies import PAPER_STRATEGIES

    present = set(names)
    return [s for s in PAPER_STRATEGIES if s in present] + sorted(present - set(PAPER_STRATEGIES))


# fixed colours: the baselines in muted hues, BADGE blue, the two Ask-n-Learn variants in the
# strongest ones, so a strategy has the same colour in every figure and study
_COLOURS = {"random": "#7f7f7f", "confidence": "#e69f00", "entropy": "#009e73", "badge": "#0072b2",
            "ask-n-learn-lwcc": "#9b4dca", "ask-n-learn-vwcc": "#d55e00"}


def _palette(order: Sequence[str]) -> dict[str, tuple | str]:
    """Colour per strategy: the paper's fixed ones, then the remaining colorblind-safe hues."""
    import seaborn as sns

    spare = iter(c for c in sns.color_palette("tab10") + sns.color_palette("Dark2"))
    return {s: _COLOURS.get(s) or next(spare) for s in order}


def _save(fig, outs: Sequence[str | Path]) -> None:
    from asknlearn.records import atomic_write

    for out in map(Path, outs):
        fmt = out.suffix.lstrip(".").lower()
        if fmt not in FORMATS:
            raise ReportError(f"figure path {str(out)!r} has format {fmt!r}; valid: {', '.join(FORMATS)}")
        atomic_write(out, lambda p, fmt=fmt: fig.savefig(p, format=fmt, dpi=150, bbox_inches="tight"))


def _select(df: pd.DataFrame, dataset: str, noise: float | None) -> pd.DataFrame:
    sel = df[df["dataset"] == dataset]
    if noise is not None:
        sel = sel[(sel["noise"] - noise).abs() < 1e-9]
    if sel.empty:
        have = sorted({(d, float(n)) for d, n in zip(df["dataset"], df["noise"], strict=True)})
        raise ReportError(f"no rows for dataset={dataset!r} noise={noise!r}; valid: {have}")
    return sel


def plot_curves(df: pd.DataFrame, dataset: str, outs: Sequence[str | Path], noise: float | None = None,
                by_noise: bool = False) -> None:
    """The paper's four panels (accuracy, ECE, NLL, Brier vs labels; one line per strategy,
    mean ± sd over seeds) for one dataset at one noise level, or with ``by_noise`` one row of
    panels per noise level (the noisy-oracle figure, Fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sel = _select(df, dataset, None if by_noise else noise)
    long = sel.melt(id_vars=[*CELL_KEYS, "labels"], value_vars=list(PANELS), var_name="metric")
    long["metric"] = long["metric"].map(PANELS)
    long["oracle noise"] = long["noise"].map(lambda r: f"{r:.0%}")
    order = strategy_order(long["strategy"])
    with sns.axes_style("whitegrid"):
        g = sns.relplot(data=long, x="labels", y="value", hue="strategy", hue_order=order,
                        palette=_palette(order), col="metric", col_order=list(PANELS.values()),
                        row="oracle noise" if by_noise else None, kind="line", errorbar="sd",
                        marker="o", markersize=4, height=3.0, aspect=1.1,
                        facet_kws={"sharey": False, "sharex": True})
    g.set_titles(row_template="noise {row_name}", col_template="{col_name}")
    g.set_axis_labels("labels", "")
    if by_noise:
        for (row, col), ax in g.axes_dict.items():
            ax.set_title(f"{col} · oracle noise {row}")
    n_seeds = sel.groupby(["strategy", "noise"])["seed"].nunique()
    seeds = f"{n_seeds.min()}" if n_seeds.min() == n_seeds.max() else f"{n_seeds.min()}–{n_seeds.max()}"
    what = "noisy oracle" if by_noise else f"oracle noise {sel['noise'].iloc[0]:.0%}"
    g.figure.suptitle(f"{dataset} ({what}): mean ± sd over {seeds} seeds", y=1.03)
    sns.move_legend(g, "upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(order), 6),
                    frameon=False, title=None)
    _save(g.figure, outs)
    plt.close(g.figure)


def plot_reliability(rel: pd.DataFrame, dataset: str, noise: float, outs: Sequence[str | Path]) -> None:
    """Reliability diagram of each strategy's final round (bins pooled over seeds: counts
    summed, confidence and accuracy count-weighted); a figure saying so when no cell has
    per-bin data, so the workflow's outputs exist either way."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sel = rel[(rel["dataset"] == dataset) & ((rel["noise"].astype(float) - noise).abs() < 1e-9)] \
        if len(rel) else rel
    if sel.empty:
        fig, ax = plt.subplots(figsize=(6, 2.5))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{dataset}, noise {noise:g}: no per-bin reliability data\n"
                f"(no {RELIABILITY_FILE} in the cell folders; the AL loop writes it for the final round)",
                ha="center", va="center", wrap=True)
        _save(fig, outs)
        plt.close(fig)
        return
    # each cell's last recorded round is its final model
    last = sel.groupby(CELL_KEYS)["round"].transform("max")
    sel = sel[sel["round"] == last].copy()
    sel["w_conf"] = sel["confidence"].fillna(0) * sel["count"]
    sel["w_acc"] = sel["accuracy"].fillna(0) * sel["count"]
    order = strategy_order(sel["strategy"])
    colors = _palette(order)
    ncol = min(3, len(order))
    nrow = math.ceil(len(order) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 3.2 * nrow), squeeze=False,
                             sharex=True, sharey=True)
    for ax, strat in zip(axes.flat, order, strict=False):
        s = sel[sel["strategy"] == strat]
        b = s.groupby(["bin", "lower", "upper"], as_index=False)[["count", "w_conf", "w_acc"]].sum()
        b = b[b["count"] > 0]
        acc, conf = b["w_acc"] / b["count"], b["w_conf"] / b["count"]
        ece = float((b["count"] * (acc - conf).abs()).sum() / b["count"].sum())
        width = (b["upper"] - b["lower"]).to_numpy()
        ax.bar(b["lower"], acc, width=width, align="edge", color=colors[strat], edgecolor="white",
               label="accuracy")
        ax.bar(b["lower"], conf - acc, bottom=acc, width=width, align="edge", fill=False,
               edgecolor="crimson", hatch="//", linewidth=0.5, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{strat}\npooled ECE {ece:.3f}, {s['seed'].nunique()} seeds", fontsize=9)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
    for ax in axes.flat[len(order):]:
        ax.axis("off")
    axes.flat[0].legend(loc="upper left", fontsize=7)
    final = int(np.max(sel["round"]))
    fig.suptitle(f"{dataset}, oracle noise {noise:.0%}: reliability of the final model (round {final})")
    fig.tight_layout()
    _save(fig, outs)
    plt.close(fig)


# ---------------------------------------------------------------------------- CLI
def _write_csv(df: pd.DataFrame, out: str | Path) -> None:
    from asknlearn.records import atomic_write

    atomic_write(Path(out), lambda p: df.to_csv(p, index=False))


def _aggregate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("rounds", nargs="+", help="each cell's rounds.csv")
    p.add_argument("--out", required=True, help="the study's tidy rounds.csv")
    p.add_argument("--reliability-out", help="also gather each cell's reliability.csv into this table")


def _aggregate(args: argparse.Namespace) -> int:
    df = aggregate(args.rounds)
    rel = gather_reliability(args.rounds) if args.reliability_out else None
    _write_csv(df, args.out)
    if rel is not None:
        _write_csv(rel, args.reliability_out)
    n_cells = len(df.groupby(CELL_KEYS))
    print(f"{args.out}: {len(df)} rounds of {n_cells} cells"
          + (f"; {args.reliability_out}: {len(rel)} bins" if rel is not None else ""))
    return 0


_aggregate.add_args = _aggregate_args  # type: ignore[attr-defined]
command("aggregate", "gather cell rounds.csv files into a study's tidy table")(_aggregate)


def _noise_value(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"noise {s!r} is not a number") from None
    return v


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["curves", "noise", "reliability"],
                   help="curves: the 4 metric panels at one noise level; noise: one row of panels "
                        "per noise level; reliability: final-round reliability diagrams")
    p.add_argument("--rounds", help="the study's tidy rounds.csv (curves, noise)")
    p.add_argument("--reliability", help="the study's reliability.csv (reliability)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--noise", type=_noise_value, default=None,
                   help="oracle noise level (curves, reliability)")
    p.add_argument("--out", action="append", required=True,
                   help=f"figure file(s); the suffix picks the format ({', '.join(FORMATS)})")


def _plot(args: argparse.Namespace) -> int:
    import pandas as pd

    for out in args.out:  # fail before drawing anything
        if Path(out).suffix.lstrip(".").lower() not in FORMATS:
            raise ReportError(f"figure path {out!r} has an unknown format; "
                              f"valid suffixes: {', '.join(FORMATS)}")
    if args.kind == "reliability":
        if not args.reliability or args.noise is None:
            raise ReportError("plot reliability needs --reliability TABLE and --noise R")
        p = Path(args.reliability)
        if not p.is_file():
            raise ReportError(f"reliability table {str(p)!r} does not exist; valid: the output of "
                              "`asknlearn aggregate --reliability-out`")
        plot_reliability(pd.read_csv(p), args.dataset, args.noise, args.out)
    else:
        if not args.rounds:
            raise ReportError(f"plot {args.kind} needs --rounds TABLE")
        if args.kind == "curves" and args.noise is None:
            raise ReportError("plot curves needs --noise R (the oracle noise level to draw)")
        plot_curves(read_rounds(args.rounds), args.dataset, args.out, noise=args.noise,
                    by_noise=args.kind == "noise")
    print(f"wrote {', '.join(args.out)}")
    return 0


_plot.add_args = _plot_args  # type: ignore[attr-defined]
command("plot", "draw a study's learning-curve, noisy-oracle or reliability figure")(_plot)


def _summarize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", required=True, help="the study's tidy rounds.csv")
    p.add_argument("--target-accuracy", type=float, required=True,
                   help="accuracy whose first crossing gives 'labels to target'")
    p.add_argument("--references", default="badge,random",
                   help="comma-separated strategies to pair every other one against ('' for none)")
    p.add_argument("--out", required=True, help="summary CSV")
    p.add_argument("--markdown", help="summary as Markdown tables")
    p.add_argument("--at-labels", default="",
                   help="comma-separated label counts for an extra Markdown table of every metric "
                        "there, with paired differences to the first reference")


def _summarize(args: argparse.Namespace) -> int:
    from asknlearn.records import atomic_write

    refs = [r for r in args.references.split(",") if r]
    s = summarize(read_rounds(args.rounds), args.target_accuracy, refs)
    md = summary_markdown(s, args.target_accuracy, refs) if args.markdown else None
    if md is not None and args.at_labels:
        try:
            at = [int(x) for x in args.at_labels.split(",") if x]
        except ValueError:
            raise ReportError(f"--at-labels {args.at_labels!r} is not valid; valid: integers "
                              "separated by commas, e.g. 1100,2100") from None
        md += "\n" + at_labels_markdown(read_rounds(args.rounds), at, refs[0] if refs else "badge")
    _write_csv(s, args.out)
    if md is not None:
        atomic_write(Path(args.markdown), lambda p: Path(p).write_text(md))
    print(f"{args.out}: {len(s)} strategy rows")
    return 0


_summarize.add_args = _summarize_args  # type: ignore[attr-defined]
command("summarize", "per-strategy summary table: AULC, labels to target, final metrics, paired deltas")(
    _summarize)
