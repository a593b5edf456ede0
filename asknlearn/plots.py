"""A study's figures, sized for a paper page: learning curves, the noisy-oracle grid and
reliability diagrams.

Every figure reads the tidy tables of :mod:`asknlearn.results` and one :data:`STYLE` table
(display name, fixed colour, marker and line style per strategy), so a strategy looks the same
in every figure and study. :class:`PlotConfig` (the workflow's ``plot:`` block) sets the size,
font scale, which strategies and their display names without code. PDFs embed TrueType
(Type 42) fonts, as publishers ask. Curves are mean ± sd over seeds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from asknlearn import catalogue
from asknlearn.naming import NOISE_RESOLUTION
from asknlearn.records import atomic_write
from asknlearn.results import (
    CELL_KEYS,
    METRICS,
    RELIABILITY_FILE,
    ReportError,
    select,
    strategy_order,
)

if TYPE_CHECKING:  # matplotlib and pandas stay lazy: the CLI imports this module for every command
    import pandas as pd
    from matplotlib.figure import Figure

FORMATS = ("png", "pdf", "svg")
ACCURACY_UNITS = ("percent", "fraction")


@dataclass(frozen=True)
class Style:
    """How one strategy is drawn in every figure."""

    label: str
    colour: str
    marker: str
    linestyle: str = "-"


# One entry per strategy. The paper's six: muted baselines, BADGE blue, the two Ask-n-Learn
# variants in the strongest hues, solid lines. Ablations: dashed, hues none of the six use.
# Further baselines: dash-dot. Every colour and marker is used once (tests check it).
STYLE: dict[str, Style] = {
    "random": Style("Random", "#7f7f7f", "o"),
    "confidence": Style("Confidence", "#e69f00", "v"),
    "entropy": Style("Entropy", "#009e73", "^"),
    "badge": Style("BADGE", "#0072b2", "s"),
    "ask-n-learn-lwcc": Style("Ask-n-Learn (LWCC)", "#9b4dca", "D"),
    "ask-n-learn-vwcc": Style("Ask-n-Learn (VWCC)", "#d55e00", "*"),
    "badge-lwcc": Style("BADGE + LWCC", "#cc79a7", "P", "--"),
    "badge-vwcc": Style("BADGE + VWCC", "#56b4e9", "X", "--"),
    "badge-refine": Style("BADGE + refine", "#8c564b", "h", "--"),
    "badge-dropout": Style("BADGE (dropout net)", "#17becf", "p", "--"),
    "margin": Style("Margin", "#bcbd22", "<", "-."),
    "coreset": Style("Core-set", "#000000", ">", "-."),
    "bald": Style("BALD", "#e41a1c", "d", "-."),
    "powerbald": Style("PowerBALD", "#882255", "H", "-."),
    "typiclust": Style("TypiClust", "#332288", "8", "-."),
}
# colours and markers for strategies the table does not know (custom `strategies:` entries)
_SPARE_COLOURS = ("#6b8e23", "#b8860b", "#4682b4", "#c71585", "#2f4f4f", "#a0522d", "#708090",
                  "#9acd32")
_SPARE_MARKERS = ("1", "2", "3", "4", "+", "x", "|", "_")


def style_for(name: str, names: Mapping[str, str] | None = None) -> Style:
    """The style of strategy ``name``, with its display name from ``names`` when given there.
    An unknown name gets a dotted line and a colour and marker picked by a stable hash of the
    name (sha256, not Python's salted ``hash``), so it looks the same in every run."""
    base = STYLE.get(name)
    if base is None:
        h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
        base = Style(name, _SPARE_COLOURS[h % len(_SPARE_COLOURS)],
                     _SPARE_MARKERS[(h // len(_SPARE_COLOURS)) % len(_SPARE_MARKERS)], ":")
    if names and name in names:
        return Style(names[name], base.colour, base.marker, base.linestyle)
    return base


@dataclass(frozen=True)
class PlotConfig:
    """What a user adjusts about the figures (the workflow's ``plot:`` block).

    ``width`` is the figure width in inches (about 7 for a two-column page, 3.4 for one
    column); ``row_height`` the height of one row of panels; fonts are ``8 pt × font_scale``,
    real points at that width. ``strategies`` picks and orders the strategies drawn (empty: all
    of the study, paper order first); ``names`` overrides display names.
    """

    width: float = 7.0
    row_height: float = 1.9
    font_scale: float = 1.0
    strategies: tuple[str, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    accuracy_unit: str = "percent"
    dpi: int = 300
    title: bool = True

    def __post_init__(self) -> None:
        for key in ("width", "row_height", "font_scale"):
            v = getattr(self, key)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ReportError(f"plot {key} {v!r} is not valid; valid: a positive number")
        if self.accuracy_unit not in ACCURACY_UNITS:
            raise ReportError(f"plot accuracy unit {self.accuracy_unit!r} is not valid; "
                              f"valid: {', '.join(ACCURACY_UNITS)}")
        if not (isinstance(self.dpi, int) and self.dpi > 0):
            raise ReportError(f"plot dpi {self.dpi!r} is not valid; valid: a positive integer")

    @classmethod
    def from_block(cls, block: Mapping) -> PlotConfig:
        """The config of the workflow's ``plot:`` mapping (keys as in the schema)."""
        known = {"width", "row_height", "font_scale", "strategies", "display_names",
                 "accuracy_unit", "dpi", "title"}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ReportError(f"plot keys {unknown} are not valid; valid: {sorted(known)}")
        d = cls()
        return cls(width=block.get("width", d.width), row_height=block.get("row_height", d.row_height),
                   font_scale=block.get("font_scale", d.font_scale),
                   strategies=tuple(block.get("strategies") or ()),
                   names=dict(block.get("display_names") or {}),
                   accuracy_unit=block.get("accuracy_unit", d.accuracy_unit),
                   dpi=block.get("dpi", d.dpi), title=block.get("title", d.title))

    def to_args(self) -> str:
        """The ``asknlearn plot`` flags that give this config, shell-quoted (the workflow's
        plot rules pass them)."""
        import shlex

        # str() of a float is its shortest round-trip form: the flags give back the same config
        args = ["--width", str(self.width), "--row-height", str(self.row_height),
                "--font-scale", str(self.font_scale), "--accuracy-unit", self.accuracy_unit,
                "--dpi", str(self.dpi)]
        if self.strategies:
            args += ["--strategies", ",".join(self.strategies)]
        for k, v in self.names.items():
            args += ["--display-name", f"{k}={v}"]
        if not self.title:
            args.append("--no-title")
        return shlex.join(args)

    @property
    def columns(self) -> int:
        """Metric panels per row: the paper's row of four at page width, 2 × 2 in a column."""
        return 4 if self.width >= 5.0 else 2

    def order(self, present: Sequence[str]) -> list[str]:
        """The strategies to draw, in order; a listed one the study lacks is an error."""
        if not self.strategies:
            return strategy_order(present)
        missing = [s for s in self.strategies if s not in set(present)]
        if missing:
            raise ReportError(f"plot strategies {missing} are not in the table; "
                              f"valid: {strategy_order(present)}")
        return list(self.strategies)

    def unit(self, metric: str) -> tuple[float, str]:
        """(scale, axis label) of ``metric``, from its catalogue entry; ``accuracy_unit:
        fraction`` shows the rates (the metrics in %) as fractions instead."""
        m = catalogue.METRICS[metric]
        if m.unit == "%" and self.accuracy_unit == "fraction":
            return 1.0, f"{m.display} (fraction)"
        return m.scale, m.label()


@contextmanager
def paper_style(cfg: PlotConfig) -> Iterator[None]:
    """Matplotlib settings for print: real point sizes, Type 42 fonts in PDF and PS, light
    grid, no top/right spines."""
    import matplotlib

    matplotlib.use("Agg")
    base = 8.0 * cfg.font_scale
    rc = {"font.size": base, "axes.titlesize": base, "axes.labelsize": base,
          "xtick.labelsize": base - 1, "ytick.labelsize": base - 1, "legend.fontsize": base - 1,
          "figure.titlesize": base + 1, "pdf.fonttype": 42, "ps.fonttype": 42,
          "axes.grid": True, "grid.linewidth": 0.4, "grid.alpha": 0.5, "axes.linewidth": 0.6,
          "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.2,
          "lines.markersize": 3.5, "xtick.major.width": 0.6, "ytick.major.width": 0.6,
          "savefig.dpi": cfg.dpi, "figure.dpi": 100}
    with matplotlib.rc_context(rc):
        yield


def save(fig: Figure, outs: Sequence[str | Path], cfg: PlotConfig | None = None) -> None:
    """Write ``fig`` to every path in ``outs`` (format from the suffix), each atomically.
    Inside the paper style: the font type of a PDF is read when it is saved, not drawn."""
    cfg = cfg or PlotConfig()
    with paper_style(cfg):
        for out in map(Path, outs):
            fmt = out.suffix.lstrip(".").lower()
            if fmt not in FORMATS:
                raise ReportError(f"figure path {str(out)!r} has format {fmt!r}; "
                                  f"valid: {', '.join(FORMATS)}")
            atomic_write(out, lambda p, fmt=fmt: fig.savefig(p, format=fmt, dpi=cfg.dpi,
                                                             bbox_inches="tight"))


def _pct(rate: float) -> str:
    """A noise rate as a percentage without rounding it away (0.125 -> 12.5%)."""
    return f"{100 * rate:.4g}%"


def _seeds_text(sel: pd.DataFrame) -> str:
    n = sel.groupby(["strategy", "noise"])["seed"].nunique()
    return f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"


def curves_figure(df: pd.DataFrame, dataset: str, noise: float | None = None, by_noise: bool = False,
                  cfg: PlotConfig | None = None) -> Figure:
    """The paper's four panels (accuracy, ECE, NLL, Brier vs labels; one line per strategy,
    mean ± sd band over seeds) for one dataset at one noise level, or with ``by_noise`` one
    block of panels per noise level (the noisy-oracle figure, Fig. 6), where each metric's
    panels share their y-limits so the noise levels compare at a glance."""
    import matplotlib.pyplot as plt

    cfg = cfg or PlotConfig()
    sel = select(df, dataset, None if by_noise else noise)
    noises = sorted({float(n) for n in sel["noise"]}) if by_noise else [float(sel["noise"].iloc[0])]
    order = cfg.order(list(sel["strategy"].unique()))
    ncol = cfg.columns
    rows_per_noise = math.ceil(len(METRICS) / ncol)
    nrow = rows_per_noise * len(noises)
    stats = (sel[sel["strategy"].isin(order)]
             .groupby(["noise", "strategy", "labels"])[list(METRICS)].agg(["mean", "std"]))
    drawn = set(stats.index.droplevel("labels"))
    with paper_style(cfg):
        fig, axes = plt.subplots(nrow, ncol, figsize=(cfg.width, cfg.row_height * nrow),
                                 squeeze=False, sharex=True, layout="constrained")
        for i, r in enumerate(noises):
            for j, metric in enumerate(METRICS):
                ax = axes[i * rows_per_noise + j // ncol, j % ncol]
                scale, ylabel = cfg.unit(metric)
                for s in order:
                    if (r, s) not in drawn:
                        continue
                    g = stats.loc[(r, s)]
                    x = g.index.to_numpy(float)
                    m = g[(metric, "mean")].to_numpy(float) * scale
                    sd = g[(metric, "std")].fillna(0.0).to_numpy(float) * scale
                    st = style_for(s, cfg.names)
                    ax.plot(x, m, color=st.colour, marker=st.marker, linestyle=st.linestyle,
                            label=st.label)
                    ax.fill_between(x, m - sd, m + sd, color=st.colour, alpha=0.15, linewidth=0)
                ax.set_ylabel(ylabel)
                if by_noise and j % ncol == 0:
                    ax.set_ylabel(f"noise {_pct(r)}\n{ylabel}")
                if i * rows_per_noise + j // ncol == nrow - 1:
                    ax.set_xlabel("labelled examples")
        if by_noise:  # a metric's panels share y-limits across noise levels
            for j in range(len(METRICS)):
                panels = [axes[i * rows_per_noise + j // ncol, j % ncol] for i in range(len(noises))]
                lo = min(a.get_ylim()[0] for a in panels)
                hi = max(a.get_ylim()[1] for a in panels)
                for a in panels:
                    a.set_ylim(lo, hi)
        handles, labels = axes[0, 0].get_legend_handles_labels()
        # about 1.15 in per legend entry keeps the legend within the figure's width
        fig.legend(handles, labels, loc="outside lower center",
                   ncol=max(1, min(len(order), int(cfg.width / 1.15))), frameon=False)
        if cfg.title:
            what = ("noisy oracle, rows: oracle noise" if by_noise
                    else f"oracle noise {_pct(noises[0])}")
            seeds = _seeds_text(sel[sel["strategy"].isin(order)])
            fig.suptitle(f"{dataset} ({what}): mean ± sd over {seeds} seeds")
    return fig


def plot_curves(df: pd.DataFrame, dataset: str, outs: Sequence[str | Path], noise: float | None = None,
                by_noise: bool = False, cfg: PlotConfig | None = None) -> None:
    """Draw :func:`curves_figure` and write it to every path in ``outs``."""
    import matplotlib.pyplot as plt

    cfg = cfg or PlotConfig()
    fig = curves_figure(df, dataset, noise, by_noise, cfg)
    save(fig, outs, cfg)
    plt.close(fig)


def _pooled_bins(s: pd.DataFrame) -> pd.DataFrame:
    """One strategy's final-round bins pooled over seeds: counts summed, confidence and
    accuracy count-weighted; empty bins dropped."""
    s = s.assign(w_conf=s["confidence"].fillna(0) * s["count"], w_acc=s["accuracy"].fillna(0) * s["count"])
    b = s.groupby(["bin", "lower", "upper"], as_index=False)[["count", "w_conf", "w_acc"]].sum()
    b = b[b["count"] > 0].copy()
    b["acc"], b["conf"] = b["w_acc"] / b["count"], b["w_conf"] / b["count"]
    return b


def reliability_figure(rel: pd.DataFrame, dataset: str, noise: float,
                       cfg: PlotConfig | None = None) -> Figure:
    """Reliability diagram of each strategy's final round, in the curves' colours: bars of
    accuracy per confidence bin, the gap to the bin's confidence hatched, and under each panel
    the bin counts (log scale). A bar's opacity grows with its count (log scale), so a bin of one
    sample reads as the weak evidence it is, not as an outlier. A figure saying so when no cell has
    per-bin data, so the workflow's outputs exist either way."""
    import matplotlib.pyplot as plt
    import numpy as np

    cfg = cfg or PlotConfig()
    sel = rel[(rel["dataset"] == dataset)
              & ((rel["noise"].astype(float) - noise).abs() < NOISE_RESOLUTION)] if len(rel) else rel
    with paper_style(cfg):
        if sel.empty:
            fig, ax = plt.subplots(figsize=(cfg.width, 1.2))
            ax.axis("off")
            ax.text(0.5, 0.5, f"{dataset}, noise {noise:g}: no per-bin reliability data\n"
                    f"(no {RELIABILITY_FILE} in the cell folders)", ha="center", va="center")
            return fig
        # each cell's last recorded round is its final model
        last = sel.groupby(CELL_KEYS)["round"].transform("max")
        sel = sel[sel["round"] == last]
        order = cfg.order(list(sel["strategy"].unique()))
        ncol = max(1, min(len(order), int(cfg.width // 2.2)))
        nrow = math.ceil(len(order) / ncol)
        side = cfg.width / ncol
        fig = plt.figure(figsize=(cfg.width, side * 1.15 * nrow), layout="constrained")
        grid = fig.add_gridspec(nrow, ncol)
        bins = {s: _pooled_bins(sel[sel["strategy"] == s]) for s in order}
        top = max(int(b["count"].max()) for b in bins.values() if len(b))
        for k, strat in enumerate(order):
            sub = grid[k // ncol, k % ncol].subgridspec(2, 1, height_ratios=[3, 1], hspace=0.05)
            ax, axc = fig.add_subplot(sub[0]), fig.add_subplot(sub[1])
            b, st = bins[strat], style_for(strat, cfg.names)
            width = (b["upper"] - b["lower"]).to_numpy(float)
            # log scale, like the count strip: 1 sample -> faint, the fullest bin -> opaque
            weight = (np.log1p(b["count"].to_numpy(float)) / np.log1p(top)).clip(0, 1)
            alpha = 0.15 + 0.85 * weight
            ax.bar(b["lower"], b["acc"], width=width, align="edge",
                   color=[(*_rgb(st.colour), a) for a in alpha], edgecolor="white", linewidth=0.4)
            # the hatch takes the edge colour: it fades with the count too
            ax.bar(b["lower"], b["conf"] - b["acc"], bottom=b["acc"], width=width, align="edge",
                   fill=False, edgecolor=[(0.25, 0.25, 0.25, a) for a in alpha], hatch="////",
                   linewidth=0.4)
            ax.plot([0, 1], [0, 1], color="0.3", linestyle="--", linewidth=0.8)
            ax.set(xlim=(0, 1), ylim=(0, 1))
            ax.tick_params(labelbottom=False)
            n = int(b["count"].sum())
            ece = float((b["count"] * (b["acc"] - b["conf"]).abs()).sum() / n) if n else math.nan
            seeds = sel.loc[sel["strategy"] == strat, "seed"].nunique()
            # ECE in the unit of the curves' ECE panel (the catalogue's, or fraction)
            m = catalogue.METRICS["ece"]
            ece_text = f"{m.format(ece)}{m.unit}" if cfg.unit("ece")[0] == m.scale else f"{ece:.4f}"
            ax.set_title(f"{st.label}\nECE {ece_text}, n = {n}, {seeds} seeds")
            axc.bar(b["lower"], b["count"], width=width, align="edge", color=st.colour,
                    edgecolor="white", linewidth=0.4)
            axc.set(xlim=(0, 1), yscale="log", ylim=(0.8, top * 1.5))
            axc.set_xlabel("confidence")
            if k % ncol == 0:
                ax.set_ylabel("accuracy (fraction)")
                axc.set_ylabel("count")
            else:
                ax.tick_params(labelleft=False)
        from matplotlib.patches import Patch

        fig.axes[0].legend(handles=[Patch(color="0.45", label="accuracy"),
                                    Patch(fill=False, edgecolor="0.25", hatch="////",
                                          label="gap to confidence")],
                           loc="upper left", frameon=False)
        if cfg.title:
            final = int(sel["round"].max())
            fig.suptitle(f"{dataset}, oracle noise {_pct(noise)}: reliability of the final model "
                         f"(round {final}; bins pooled over seeds)")
    return fig


def _rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def plot_reliability(rel: pd.DataFrame, dataset: str, noise: float, outs: Sequence[str | Path],
                     cfg: PlotConfig | None = None) -> None:
    """Draw :func:`reliability_figure` and write it to every path in ``outs``."""
    import matplotlib.pyplot as plt

    cfg = cfg or PlotConfig()
    fig = reliability_figure(rel, dataset, noise, cfg)
    save(fig, outs, cfg)
    plt.close(fig)
