"""Tables of the mechanisms' ablation (docs/reproduction/ablation_fashion_mnist.md) from a study's
cell folders, finished or not: every number is computed from the rounds the cells have written.

    asknlearn ablation results/ablation_fashion_mnist [--labels 1100 2100 5100]

Prints Markdown: (1) accuracy/ECE/NLL/Brier at the given label counts, mean ± sd over seeds, and
the paired (by seed) difference to BADGE, with each seed's accuracy Δ; (2) AULC of accuracy over
100..N labels for a few N, from the cells that reached N, paired the same way, with each seed's Δ;
(3) per-round diagnostics (the training accuracy each round stopped at and its epochs; α on L;
refinement on the validation split), mean over seeds; (4) refinement pooled over rounds and seeds:
on every refined validation point, how often argmax and the refined label are right. Only seeds
that reached a label count enter its cells, and every paired difference uses only the seeds both
strategies reached (n is printed). ``--figure out.png [out.pdf]`` draws the diagnostics: α on L
per round, and the pooled refined-subset accuracies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from asknlearn.catalogue import METRICS
from asknlearn.results import ReportError, aggregate, area_under_curve, paired_at_labels, paired_by_seed

ORDER = ["badge", "badge-dropout", "badge-lwcc", "badge-vwcc", "badge-refine", "ask-n-learn-lwcc",
         "ask-n-learn-vwcc", "random", "confidence", "entropy"]
WHAT = {"badge": "reference", "badge-dropout": "dropout network alone",
        "badge-lwcc": "LWCC alone", "badge-vwcc": "VWCC (+ its network) alone",
        "badge-refine": "refinement alone", "ask-n-learn-lwcc": "LWCC + refinement",
        "ask-n-learn-vwcc": "VWCC + refinement"}


def load(study: Path, strategies: list[str] | None = None) -> pd.DataFrame:
    """Every cell's rounds under ``study``, restricted to ``strategies`` (default: ORDER)."""
    paths = sorted(study.glob("runs/*/*/seed*/noise*/rounds.csv"))
    if not paths:
        raise ReportError(f"no rounds.csv under {str(study / 'runs')!r}; valid: a study folder with "
                          "cell folders runs/<dataset>/<strategy>/seed*/noise*")
    df = aggregate(paths)  # the study tables' checked reader: one line for a broken table
    return df[df.strategy.isin(strategies or ORDER)]


def fmt(mean: float, sd: float, n: int, digits: int = 4, signed: bool = False) -> str:
    """mean ± sd (n=k); the sd is left out for one seed, the whole entry for none."""
    if n == 0:
        return "–"
    sign = "+" if signed else ""
    sd_part = f" ± {sd:.{digits}f}" if n > 1 else ""
    return f"{mean:{sign}.{digits}f}{sd_part} (n={n})"


def pm(x: pd.Series, digits: int = 4) -> str:
    x = x.dropna()
    return fmt(x.mean(), x.std(ddof=1), len(x), digits)


def dpm(x: pd.Series, scale: float = 1.0, digits: int = 2) -> str:
    x = x.dropna() * scale
    return fmt(x.mean(), x.std(ddof=1), len(x), digits, signed=True)


def by_seed(x: pd.Series, seeds: list, scale: float = 100.0) -> str:
    """One value per seed, in ``seeds`` order ("–" where a seed has none): whether a mean Δ
    comes from every seed or from one."""
    return " / ".join("–" if pd.isna(x.get(k)) else f"{x[k] * scale:+.2f}" for k in seeds)


def at_labels(df: pd.DataFrame, labels: list[int], ref: str = "badge") -> str:
    """Each metric at each label count and its paired Δ vs ``ref`` (results.paired_at_labels),
    one table per label count, with n printed: cells of a running study reach a count at
    different times."""
    t = paired_at_labels(df, labels, ref).set_index(["labels", "strategy", "metric"])
    long = paired_by_seed(df, labels, ref)
    per_seed = long[long.metric == "accuracy"].set_index(["labels", "strategy", "seed"])["delta"].sort_index()
    seeds = sorted(df.seed.unique())
    out = []
    for n in labels:
        if n not in t.index.get_level_values(0):
            continue
        d = t.loc[n]
        has_ref = ref in d.index.get_level_values(0)
        out += [f"**{n:,} labels.** Each metric in its unit; Δ = strategy − BADGE, paired by seed.", "",
                "| strategy | isolates | " + " | ".join(
                    f"{METRICS[m].label()} | Δ {m}" + (f" | Δ acc by seed ({' / '.join(map(str, seeds))})"
                                                       if m == "accuracy" else "")
                    for m in METRICS) + " |",
                "|---" * (3 + 2 * len(METRICS)) + "|"]
        for s in [s for s in ORDER if s in d.index.get_level_values(0)]:
            cells = [s, WHAT.get(s, "baseline")]
            for m in METRICS:
                r = d.loc[(s, m)]
                scale, digits = METRICS[m].scale, METRICS[m].digits
                cells.append(fmt(r["mean"] * scale, r["sd"] * scale, int(r["n"]), digits))
                cells.append("" if s == ref or not has_ref else
                             fmt(r["delta_mean"] * scale, r["delta_sd"] * scale, int(r["n_pairs"]),
                                 digits, signed=True))
                if m == "accuracy":
                    cells.append("" if s == ref or not has_ref else by_seed(per_seed.loc[(n, s)], seeds))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def aulc(df: pd.DataFrame, tops: list[int], ref: str = "badge") -> str:
    """AULC over 100..top labels for each top, from the cells that reached it (paired by seed)."""

    def area(g: pd.DataFrame) -> float:
        g = g.sort_values("labels")
        return area_under_curve(g.labels, g.accuracy)

    reached = df.groupby(["strategy", "seed"]).labels.max()
    seeds = sorted(df.seed.unique())
    out = []
    for top in tops:
        ok = reached[reached >= top].index
        d = df.set_index(["strategy", "seed"]).loc[lambda t, ok=ok: t.index.isin(ok)].reset_index()
        d = d[d.labels <= top]
        if d.empty:
            continue
        a = d.groupby(["strategy", "seed"]).apply(area, include_groups=False).rename("aulc")
        out += [f"**AULC over 100–{top:,} labels** (mean test accuracy, trapezoids), in points, "
                "from the cells that reached it; Δ paired by seed.", "",
                f"| strategy | AULC (%) | Δ vs BADGE (pts) | Δ by seed ({' / '.join(map(str, seeds))}) |",
                "|---|---|---|---|"]
        for s in [s for s in ORDER if s in a.index.get_level_values(0)]:
            v = a.loc[s] * 100
            has_ref = ref in a.index.get_level_values(0)
            paired = (a.loc[s] - a.loc[ref]).dropna() if s != ref and has_ref else None
            delta = "" if paired is None else dpm(paired, 100)
            out.append(f"| {s} | {pm(v, 2)} | {delta} | {'' if paired is None else by_seed(paired, seeds)} |")
        out.append("")
    return "\n".join(out)


def diagnostics(df: pd.DataFrame) -> str:
    cols = ["train_accuracy", "train_epochs", "alpha_mean", "alpha_p90", "val_refined_fraction",
            "val_refined_argmax_accuracy", "val_refined_accuracy", "oracle_pseudo_label_accuracy"]
    cols = [c for c in cols if c in df]
    d = df[df.strategy.isin(["badge-dropout", "badge-vwcc", "ask-n-learn-vwcc", "badge-refine",
                             "ask-n-learn-lwcc", "badge", "badge-lwcc"])]
    g = d.groupby(["strategy", "round"])[cols].mean().round(4)
    g["seeds"] = d.groupby(["strategy", "round"]).size()
    return ("**Mechanism diagnostics per round** (mean over the seeds that reached the round; "
            "training accuracy of the eval-mode pass that stops training, and its epochs; α on "
            "the labeled set after training; refinement on the 1,000-point validation split with "
            "the model that selects the round's batch; the pool's pseudo-label accuracy is "
            "oracle-only, for reading):\n\n" + g.reset_index().to_markdown(index=False) + "\n")


REFINERS = ["badge-refine", "ask-n-learn-lwcc", "ask-n-learn-vwcc"]
STOCHASTIC = ["badge-dropout", "badge-vwcc", "ask-n-learn-vwcc"]


def refine_pooled(df: pd.DataFrame, val_size: int) -> pd.DataFrame:
    """Per refine strategy, over every round ≥ 1 and seed: refined validation points, and how
    many of them argmax and the refined label get right (counts rebuilt from the fractions)."""
    d = df[df.strategy.isin(REFINERS) & (df["round"] >= 1)].copy()
    d["refined"] = (d.val_refined_fraction * val_size).round()
    d = d[d.refined > 0]
    d["argmax_right"] = d.refined * d.val_refined_argmax_accuracy
    d["refined_right"] = d.refined * d.val_refined_accuracy
    g = d.groupby("strategy")
    out = pd.DataFrame({
        "rounds": g.size(), "refined points": g.refined.sum().astype(int),
        "argmax accuracy": g.argmax_right.sum() / g.refined.sum(),
        "refined accuracy": g.refined_right.sum() / g.refined.sum(),
        "rounds refined > argmax": g.apply(lambda t: int((t.val_refined_accuracy
                                                          > t.val_refined_argmax_accuracy).sum()),
                                           include_groups=False),
        "rounds refined < argmax": g.apply(lambda t: int((t.val_refined_accuracy
                                                          < t.val_refined_argmax_accuracy).sum()),
                                           include_groups=False),
    })
    out["net change (points of the split)"] = (
        (g.refined_right.sum() - g.argmax_right.sum()) / (g.size() * val_size) * 100)
    return out.reindex([s for s in REFINERS if s in out.index])


def figure(df: pd.DataFrame, pooled: pd.DataFrame, outs: list[Path]) -> None:
    """Left: α (eq. 2) on L per round, mean over seeds (p90 dashed). Right: on the refined
    validation points pooled over rounds and seeds, the accuracy of argmax and of refinement."""
    import matplotlib.pyplot as plt

    from asknlearn.plots import PlotConfig, paper_style, save, style_for

    with paper_style(PlotConfig()):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(7.0, 2.3), layout="constrained")
        for s in [s for s in STOCHASTIC if s in set(df.strategy)]:
            st = style_for(s)
            g = df[df.strategy == s].groupby("labels")[["alpha_mean", "alpha_p90"]].mean()
            a1.plot(g.index, g.alpha_mean, color=st.colour, marker=st.marker, label=st.label)
            a1.plot(g.index, g.alpha_p90, color=st.colour, linestyle=":", linewidth=0.9)
        a1.set(xlabel="labels", ylabel="α on the labeled set",
               title="VWCC's α (eq. 2): mean (solid), 90th percentile (dotted)")
        a1.legend(frameon=False)
        x = np.arange(len(pooled))
        for off, col, name, hatch in [(-0.2, "argmax accuracy", "argmax", ""),
                                      (0.2, "refined accuracy", "refined", "//")]:
            bars = a2.bar(x + off, pooled[col] * 100, width=0.38, label=name, hatch=hatch,
                          color=[style_for(s).colour for s in pooled.index], edgecolor="black",
                          linewidth=0.5, alpha=0.55 if name == "argmax" else 0.9)
            a2.bar_label(bars, fmt="%.1f", fontsize=6)
        a2.set_xticks(x, [f"{style_for(s).label.replace(' (', chr(10) + '(')}\n{n} points" for s, n in
                          zip(pooled.index, pooled["refined points"], strict=True)])
        a2.set(ylabel="accuracy on refined points (%)", ylim=(0, 100),
               title="refinement on the validation split, pooled")
        a2.legend(frameon=False, loc="upper left")
        save(fig, outs)
        plt.close(fig)


def run(a: argparse.Namespace) -> int:
    """``asknlearn ablation``: print the tables (Markdown), optionally draw the figure."""
    a.strategies = a.strategies or ",".join(ORDER)
    unknown = sorted(set(a.strategies.split(",")) - set(ORDER))
    if unknown:
        raise ReportError(f"--strategies {unknown} are not reported here; valid: {', '.join(ORDER)}")
    df = load(a.study, a.strategies.split(","))
    reached = df.groupby(["strategy", "seed"]).labels.max().unstack("seed")
    print("**Cells and the labels each has reached:**\n")
    print(reached.reindex([s for s in ORDER if s in reached.index]).to_markdown() + "\n")
    print(at_labels(df, a.labels))
    print(aulc(df, a.aulc_to))
    if a.no_diagnostics:
        return 0
    print(diagnostics(df))
    pooled = refine_pooled(df, a.val_size)
    print("**Refinement pooled over rounds 1–10 and seeds** (validation split; a round counts if it "
          "refined at least one point):\n")
    print(pooled.round(4).to_markdown() + "\n")
    if a.figure:
        figure(df, pooled, a.figure)
    return 0

