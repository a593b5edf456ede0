"""Tables of the mechanisms' ablation (docs/reproduction/ablation_fashion_mnist.md) from a study's
cell folders, finished or not: every number is computed from the rounds the cells have written.

    python workflow/scripts/ablation_report.py results/ablation_fashion_mnist [--labels 1100 2100 5100]

Prints Markdown: (1) accuracy/ECE/NLL/Brier at the given label counts, mean ± sd over seeds, and
the paired (by seed) difference to BADGE; (2) AULC of accuracy over 100..N labels for a few N, from the
cells that reached N, paired the same way; (3) per-round mechanism diagnostics (α on L; refinement on the
validation split), mean over seeds. Only seeds that reached a label count enter its cells, and
every paired difference uses only the seeds both strategies reached (n is printed).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ORDER = ["badge", "badge-dropout", "badge-lwcc", "badge-vwcc", "badge-refine", "ask-n-learn-lwcc",
         "ask-n-learn-vwcc", "random", "confidence", "entropy"]
WHAT = {"badge": "reference", "badge-dropout": "dropout network alone",
        "badge-lwcc": "LWCC alone", "badge-vwcc": "VWCC (+ its network) alone",
        "badge-refine": "refinement alone", "ask-n-learn-lwcc": "LWCC + refinement",
        "ask-n-learn-vwcc": "VWCC + refinement"}
METRICS = ["accuracy", "ece", "nll", "brier"]


def load(study: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in sorted(study.glob("runs/*/*/seed*/noise*/rounds.csv"))]
    if not frames:
        sys.exit(f"no rounds.csv under {study}/runs")
    df = pd.concat(frames, ignore_index=True)
    return df[df.strategy.isin(ORDER)]


def pm(x: pd.Series, digits: int = 4) -> str:
    x = x.dropna()
    if len(x) == 0:
        return "–"
    if len(x) == 1:
        return f"{x.iloc[0]:.{digits}f} (n=1)"
    return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f} (n={len(x)})"


def dpm(x: pd.Series, scale: float = 1.0, digits: int = 2) -> str:
    x = x.dropna() * scale
    if len(x) == 0:
        return "–"
    sd = f" ± {x.std(ddof=1):.{digits}f}" if len(x) > 1 else ""
    return f"{x.mean():+.{digits}f}{sd} (n={len(x)})"


def at_labels(df: pd.DataFrame, labels: list[int], ref: str = "badge") -> str:
    out = []
    strategies = [s for s in ORDER if s in set(df.strategy)]
    for n in labels:
        d = df[df.labels == n].set_index(["strategy", "seed"])
        if d.empty:
            continue
        out += [f"**{n:,} labels.** Accuracy in points (%), ECE, NLL, Brier; Δ = strategy − BADGE, "
                "paired by seed.", "",
                "| strategy | isolates | accuracy (%) | Δ acc (pts) | ECE | Δ ECE | NLL | Δ NLL "
                "| Brier | Δ Brier |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for s in strategies:
            if s not in d.index.get_level_values(0):
                continue
            row = d.loc[s]
            cells = [s, WHAT.get(s, "baseline")]
            for m in METRICS:
                v = row[m] * (100 if m == "accuracy" else 1)
                cells.append(pm(v, 2 if m == "accuracy" else 4))
                if s == ref or ref not in d.index.get_level_values(0):
                    cells.append("")
                else:
                    r = d.loc[ref][m]
                    diff = (row[m] - r).dropna()
                    cells.append(dpm(diff, 100 if m == "accuracy" else 1, 2 if m == "accuracy" else 4))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def aulc(df: pd.DataFrame, tops: list[int], ref: str = "badge") -> str:
    """AULC over 100..top labels for each top, from the cells that reached it (paired by seed)."""

    def area(g: pd.DataFrame) -> float:
        g = g.sort_values("labels")
        x, y = g.labels.to_numpy(float), g.accuracy.to_numpy(float)
        return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))

    reached = df.groupby(["strategy", "seed"]).labels.max()
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
                "| strategy | AULC (%) | Δ vs BADGE (pts) |", "|---|---|---|"]
        for s in [s for s in ORDER if s in a.index.get_level_values(0)]:
            v = a.loc[s] * 100
            has_ref = ref in a.index.get_level_values(0)
            delta = "" if s == ref or not has_ref else dpm((a.loc[s] - a.loc[ref]).dropna(), 100)
            out.append(f"| {s} | {pm(v, 2)} | {delta} |")
        out.append("")
    return "\n".join(out)


def diagnostics(df: pd.DataFrame) -> str:
    cols = ["alpha_mean", "alpha_p90", "val_refined_fraction", "val_refined_argmax_accuracy",
            "val_refined_accuracy", "oracle_pseudo_label_accuracy"]
    cols = [c for c in cols if c in df]
    d = df[df.strategy.isin(["badge-dropout", "badge-vwcc", "ask-n-learn-vwcc", "badge-refine",
                             "ask-n-learn-lwcc", "badge", "badge-lwcc"])]
    g = d.groupby(["strategy", "round"])[cols].mean().round(4)
    g["seeds"] = d.groupby(["strategy", "round"]).size()
    return ("**Mechanism diagnostics per round** (mean over the seeds that reached the round; α on "
            "the labeled set after training; refinement on the 1,000-point validation split with "
            "the model that selects the round's batch; the pool's pseudo-label accuracy is "
            "oracle-only, for reading):\n\n" + g.reset_index().to_markdown(index=False) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("--labels", type=int, nargs="+", default=[1100, 2100, 5100])
    ap.add_argument("--aulc-to", type=int, nargs="+", default=[2100, 5100, 10100],
                    help="upper label counts of the AULC ranges")
    a = ap.parse_args()
    df = load(a.study)
    reached = df.groupby(["strategy", "seed"]).labels.max().unstack("seed")
    print("**Cells and the labels each has reached:**\n")
    print(reached.reindex([s for s in ORDER if s in reached.index]).to_markdown() + "\n")
    print(at_labels(df, a.labels))
    print(aulc(df, a.aulc_to))
    print(diagnostics(df))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
