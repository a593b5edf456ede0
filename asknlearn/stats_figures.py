"""The figures of :mod:`asknlearn.stats`: difference curves, penalty-matrix heatmaps, mean ranks.

- :func:`difference_figure`: Δ = strategy − reference (paired by seed) of each metric vs labels,
  one line per strategy with its 95 % t-interval as a band and a zero line; one panel per
  metric, one row per setting (dataset × noise). The figure a reviewer reads first: a band
  that contains 0 is a difference the seeds do not support.
- :func:`penalty_figure`: Ash et al. (2020)'s pairwise penalty matrix as an annotated heatmap,
  with its column means ("how often is j beaten") as a row below.
- :func:`rank_figure`: each strategy's mean rank over the points of a study, with its sd and IQR.

Each figure states its method in a caption drawn under it. Strategies keep the colours of
:data:`asknlearn.plots.STYLE`. Files are written atomically (:func:`save_figure`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from asknlearn.records import atomic_write
from asknlearn.stats import (
    CONFIDENCE,
    DISPLAY_SCALE,
    HIGHER_IS_BETTER,
    METRIC_NAMES,
    PenaltyMatrix,
    StatsError,
    delta_caption,
)

if TYPE_CHECKING:  # matplotlib and pandas stay lazy
    import pandas as pd
    from matplotlib.figure import Figure

FORMATS = ("png", "pdf", "svg")
# the figure's caption is wrapped to about this many characters per inch of width
_CHARS_PER_INCH = 15


@contextmanager
def _style(font: float = 8.0) -> Iterator[None]:
    """Print settings: real point sizes, TrueType (Type 42) fonts in PDF, light grid."""
    import matplotlib

    matplotlib.use("Agg")
    rc = {"font.size": font, "axes.titlesize": font, "axes.labelsize": font,
          "xtick.labelsize": font - 1, "ytick.labelsize": font - 1, "legend.fontsize": font - 1,
          "pdf.fonttype": 42, "ps.fonttype": 42, "axes.grid": True, "grid.linewidth": 0.4,
          "grid.alpha": 0.5, "axes.linewidth": 0.6, "axes.spines.top": False,
          "axes.spines.right": False, "lines.linewidth": 1.2, "lines.markersize": 3.5}
    with matplotlib.rc_context(rc):
        yield


def _style_for(name: str, names: Mapping[str, str] | None):
    from asknlearn.plots import style_for

    return style_for(name, names)


def _caption(fig: Figure, text: str, width: float) -> None:
    import textwrap

    fig.text(0.0, 0.0, textwrap.fill(text, int(width * _CHARS_PER_INCH)), ha="left", va="top",
             fontsize=6.5, wrap=False, transform=fig.transFigure)


def save_figure(fig: Figure, outs: Sequence[str | Path], dpi: int = 200) -> None:
    """Write ``fig`` to every path in ``outs`` (format from the suffix: png, pdf or svg), each
    through a temp file with an unpredictable name in the same folder and ``os.replace``: a
    reader never sees half a file, and a symlink planted at the path is replaced, not followed."""
    bad = [str(o) for o in outs if Path(o).suffix.lstrip(".").lower() not in FORMATS]
    if bad or not outs:
        raise StatsError(f"figure paths {bad or list(outs)} are not valid; valid: paths ending in "
                         f"{', '.join('.' + f for f in FORMATS)}")
    with _style():
        for out in map(Path, outs):
            fmt = out.suffix.lstrip(".").lower()
            atomic_write(out, lambda p, fmt=fmt: fig.savefig(p, format=fmt, dpi=dpi, bbox_inches="tight"))


# ---------------------------------------------------------------------------- difference curves
def difference_figure(summary: pd.DataFrame, metrics: Sequence[str] | None = None,
                      order: Sequence[str] | None = None, names: Mapping[str, str] | None = None,
                      scale: Mapping[str, float] = DISPLAY_SCALE, confidence: float = CONFIDENCE,
                      higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER,
                      width: float = 7.0, row_height: float = 1.9) -> Figure:
    """Difference curves of a :func:`asknlearn.stats.paired_summary` at label counts (not AULC):
    per setting (row) and metric (column) Δ vs labels for each strategy, the band its
    t-interval (absent where n = 1), and a zero line. Each band is a PolyCollection with
    ``gid`` ``"band:<dataset>:<noise>:<metric>:<strategy>"`` so tests can read it back."""
    import matplotlib.pyplot as plt

    if summary.empty or "labels_from" in summary.columns:
        raise StatsError("difference curves need a paired summary at label counts; valid: "
                         "stats.paired_summary(stats.long_values(rounds), reference)")
    reference = str(summary["reference"].iloc[0])
    metrics = list(metrics) if metrics is not None else list(summary["metric"].unique())
    strategies = list(order) if order is not None else list(summary["strategy"].unique())
    settings = list(summary[["dataset", "noise"]].drop_duplicates().itertuples(index=False, name=None))
    s = summary[summary["strategy"].isin(strategies) & summary["metric"].isin(metrics)]
    cells = {k: g.sort_values("labels") for k, g in s.groupby(["dataset", "noise", "metric", "strategy"])}
    nrow, ncol = len(settings), len(metrics)
    with _style():
        fig, axes = plt.subplots(nrow, ncol, figsize=(width, row_height * nrow + 0.6), squeeze=False,
                                 sharex=True, layout="constrained")
        for i, (ds, noise) in enumerate(settings):
            for j, m in enumerate(metrics):
                ax = axes[i, j]
                k = scale.get(m, 1.0)
                ax.axhline(0.0, color="black", linewidth=0.8, zorder=1)
                for st in strategies:
                    g = cells.get((ds, noise, m, st))
                    if g is None:
                        continue
                    sty = _style_for(st, names)
                    x = g["labels"].to_numpy(float)
                    ax.plot(x, g["mean"].to_numpy(float) * k, color=sty.colour, marker=sty.marker,
                            linestyle=sty.linestyle, label=sty.label)
                    lo, hi = g["ci_low"].to_numpy(float) * k, g["ci_high"].to_numpy(float) * k
                    band = ax.fill_between(x, lo, hi, color=sty.colour, alpha=0.15, linewidth=0)
                    band.set_gid(f"band:{ds}:{noise:g}:{m}:{st}")
                unit = " (pts)" if k == 100.0 else ""
                arrow = "↑" if higher_is_better.get(m, True) else "↓"
                ax.set_ylabel(f"Δ {METRIC_NAMES.get(m, m)}{unit}, {arrow} better")
                if i == 0:
                    ax.set_title(METRIC_NAMES.get(m, m))
                if j == 0 and nrow > 1:
                    ax.set_ylabel(f"{ds}, noise {noise:g}\nΔ {METRIC_NAMES.get(m, m)}{unit}, {arrow} better")
                if i == nrow - 1:
                    ax.set_xlabel("labelled examples")
        handles, labels = [], []
        for ax in axes.flat:  # every strategy once, even one missing from the first panel
            for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        # at the right: a legend above or below the panels collides with the title or caption
        fig.legend(handles, labels, loc="outside right center", frameon=False)
        ns = sorted(s["n"].unique().astype(int))
        n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
        title = (f"{settings[0][0]}, noise {settings[0][1]:g}: " if nrow == 1 else "") + \
            f"Δ vs {reference}, band: {100 * confidence:g} % t-interval, n = {n} seeds"
        fig.suptitle(title, x=0.02, ha="left")
        _caption(fig, delta_caption(reference, confidence, {m: higher_is_better[m] for m in metrics
                                                            if m in higher_is_better},
                                    {m: v for m, v in scale.items() if m in metrics}), width)
    return fig


# ---------------------------------------------------------------------------- penalty matrix
def penalty_figure(pm: PenaltyMatrix, names: Mapping[str, str] | None = None, width: float = 5.5) -> Figure:
    """The penalty matrix as an annotated heatmap (rows: winner i, columns: loser j, colour
    0 → ``settings``), its column means as a separate row below, and the method as caption."""
    import matplotlib.pyplot as plt
    import numpy as np

    m = pm.matrix
    k = len(m)
    labels = [_style_for(s, names).label for s in m.columns]
    with _style():
        fig = plt.figure(figsize=(width, width * 0.85 + 0.9), layout="constrained")
        grid = fig.add_gridspec(2, 1, height_ratios=[k, 1.2])
        ax, bar = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])
        vmax = max(float(pm.settings), 1e-9)
        a = m.to_numpy(float)
        im = ax.imshow(np.ma.masked_invalid(a), cmap="Blues", vmin=0.0, vmax=vmax, aspect="auto")
        for r in range(k):
            for c in range(k):
                v = a[r, c]
                txt = "—" if math.isnan(v) else f"{v:.2f}"
                ax.text(c, r, txt, ha="center", va="center", fontsize=6,
                        color="white" if not math.isnan(v) and v > 0.6 * vmax else "black")
        ax.set_xticks(range(k), [""] * k)
        ax.set_yticks(range(k), labels)
        ax.set_ylabel("i (row) beats …")
        ax.grid(False)
        means = pm.column_means.to_numpy(float)
        bar.imshow(means[None, :], cmap="Reds", vmin=0.0, vmax=vmax, aspect="auto")
        for c, v in enumerate(means):
            bar.text(c, 0, f"{v:.2f}", ha="center", va="center", fontsize=6)
        bar.set_yticks([0], ["column mean"])
        bar.set_xticks(range(k), labels, rotation=45, ha="right")
        bar.set_xlabel("… j (column)")
        bar.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.8, label="settings won")
        fig.suptitle(f"Pairwise penalty matrix: {METRIC_NAMES.get(pm.metric, pm.metric)}")
        _caption(fig, pm.caption(), width)
    return fig


# ---------------------------------------------------------------------------- mean ranks
def rank_figure(ranks: pd.DataFrame, names: Mapping[str, str] | None = None, width: float = 7.0,
                row_height: float = 2.4) -> Figure:
    """:func:`asknlearn.stats.mean_ranks` as one panel per metric: each strategy's mean rank
    (dot), ± sd (thin line) and IQR (thick line), best at the top."""
    import matplotlib.pyplot as plt

    metrics = list(ranks["metric"].unique())
    ncol = min(len(metrics), 2)  # strategy names need the width of half a page
    nrow = math.ceil(len(metrics) / ncol)
    with _style():
        fig, axes = plt.subplots(nrow, ncol, figsize=(width, row_height * nrow + 0.5), squeeze=False,
                                 layout="constrained")
        for ax in axes.flat[len(metrics):]:
            ax.set_visible(False)
        for ax, m in zip(axes.flat, metrics, strict=False):
            d = ranks[ranks["metric"] == m].sort_values("mean_rank")
            y = range(len(d))
            for yy, r in zip(y, d.itertuples(), strict=True):
                sty = _style_for(r.strategy, names)
                sd = 0.0 if math.isnan(r.sd) else r.sd
                ax.plot([r.mean_rank - sd, r.mean_rank + sd], [yy, yy], color=sty.colour, linewidth=0.8)
                ax.plot([r.q25, r.q75], [yy, yy], color=sty.colour, linewidth=3.0, alpha=0.6)
                ax.plot([r.mean_rank], [yy], color=sty.colour, marker=sty.marker, markersize=5,
                        linestyle="none")
            ax.set_yticks(list(y), [_style_for(s, names).label for s in d["strategy"]])
            ax.invert_yaxis()
            of = int(d["of"].iloc[0])
            ax.set_xlim(0.5, of + 0.5)
            ax.set_xlabel(f"rank (1 = best of {of})")
            ax.set_title(METRIC_NAMES.get(m, m))
        fig.suptitle("Mean rank over settings × label counts")
        _caption(fig, "Rank of each strategy's seed-mean at every point (dataset × noise × label "
                 "count), 1 = best in the metric's direction, ties averaged. Dot: mean rank; thin "
                 "line: ± sd; thick line: interquartile range over the points.", width)
    return fig


def plot(fig: Figure, outs: Sequence[str | Path], dpi: int = 200) -> None:
    """Save ``fig`` to ``outs`` (:func:`save_figure`) and close it."""
    import matplotlib.pyplot as plt

    try:
        save_figure(fig, outs, dpi)
    finally:
        plt.close(fig)
