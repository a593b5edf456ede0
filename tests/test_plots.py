"""The study figures (asknlearn/plots.py): one style table, print-ready PDFs, shared y-limits
across noise rows, the plot config applied, and ``plot curves`` without ``--noise``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from asknlearn import plots
from asknlearn.cli import main
from asknlearn.results import ReportError

ROOT = Path(__file__).resolve().parents[1]
PAPER_SIX = ["random", "confidence", "entropy", "badge", "ask-n-learn-lwcc", "ask-n-learn-vwcc"]
ABLATIONS = ["badge-lwcc", "badge-vwcc", "badge-refine", "badge-dropout"]
UPCOMING = ["margin", "coreset", "bald", "powerbald", "typiclust"]


def study(strategies=("random", "badge"), noises=(0.0,), seeds=(0, 1), dataset="digits") -> pd.DataFrame:
    """A tidy rounds table: accuracy rises with labels and falls with noise (so the noise rows'
    natural y-ranges differ), a different offset per strategy and seed."""
    rows = []
    for i, s in enumerate(strategies):
        for r in noises:
            for k in seeds:
                for rnd, n in enumerate((20, 40, 60, 80)):
                    acc = 0.5 + 0.1 * rnd + 0.02 * i + 0.01 * k - r
                    rows.append({"study": "t", "dataset": dataset, "strategy": s, "seed": k,
                                 "noise": r, "round": rnd, "labels": n, "accuracy": acc,
                                 "ece": 0.2 - 0.03 * rnd + r, "nll": 1.5 - 0.2 * rnd + 2 * r,
                                 "brier": 0.6 - 0.1 * rnd + r})
    return pd.DataFrame(rows)


def reliability(strategies=("random", "badge"), counts=(1, 40, 400, 2000)) -> pd.DataFrame:
    """Final-round bins of two seeds per strategy: the first bin holds a single sample."""
    rows = []
    edges = np.linspace(0, 1, len(counts) + 1)
    for s in strategies:
        for k in (0, 1):
            for b, c in enumerate(counts):
                rows.append({"study": "t", "dataset": "digits", "strategy": s, "seed": k, "noise": 0.0,
                             "round": 3, "bin": b, "lower": edges[b], "upper": edges[b + 1],
                             "count": c, "confidence": (edges[b] + edges[b + 1]) / 2,
                             "accuracy": 1.0 if b == 0 else (edges[b] + edges[b + 1]) / 2})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------- the style table
def test_style_covers_every_strategy_with_distinct_looks():
    from asknlearn.strategies import STRATEGIES

    for name in [*STRATEGIES, *PAPER_SIX, *ABLATIONS, *UPCOMING]:
        assert name in plots.STYLE, f"{name} has no entry in plots.STYLE"
    colours = [s.colour.lower() for s in plots.STYLE.values()]
    markers = [s.marker for s in plots.STYLE.values()]
    assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)
    # ablations never reuse a colour of the paper's six (issue 14 §2)
    assert not {plots.STYLE[a].colour for a in ABLATIONS} & {plots.STYLE[p].colour for p in PAPER_SIX}
    assert plots.STYLE["ask-n-learn-vwcc"].label == "Ask-n-Learn (VWCC)"


def test_unknown_strategy_gets_a_stable_fallback_style():
    a, b = plots.style_for("my-custom"), plots.style_for("my-custom")
    assert a == b and a.label == "my-custom" and a.linestyle == ":"
    assert a.colour not in {s.colour for s in plots.STYLE.values()}
    assert plots.style_for("badge", {"badge": "B"}).label == "B"
    assert plots.style_for("badge").label == "BADGE"


# ---------------------------------------------------------------------------- figures
def test_pdf_embeds_truetype_not_type3(tmp_path):
    pdf = tmp_path / "c.pdf"
    plots.plot_curves(study(), "digits", [pdf], noise=0.0)
    data = pdf.read_bytes()
    assert b"/Subtype /Type3" not in data
    assert b"/FontFile2" in data  # embedded TrueType (Type 42)
    rel = tmp_path / "r.pdf"
    plots.plot_reliability(reliability(), "digits", 0.0, [rel])
    assert b"/Subtype /Type3" not in rel.read_bytes()


def test_noise_rows_share_y_limits_per_metric():
    fig = plots.curves_figure(study(noises=(0.0, 0.1, 0.2)), "digits", by_noise=True)
    axes = np.array(fig.axes).reshape(3, 4)
    for col in range(4):
        lims = {axes[row, col].get_ylim() for row in range(3)}
        assert len(lims) == 1, f"column {col} has y-limits {lims}"
    # the data differ by noise, so the shared limits are the union, not any one row's own
    acc_lo, acc_hi = axes[0, 0].get_ylim()
    assert acc_lo < 100 * (0.5 - 0.2) and acc_hi > 100 * 0.8
    assert axes[0, 0].get_ylabel().endswith("test accuracy (%)")
    assert axes[1, 0].get_ylabel().startswith("noise 10%\n")


def test_axes_have_units_and_page_size():
    fig = plots.curves_figure(study(), "digits", noise=0.0)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert labels == ["test accuracy (%)", "ECE (%)", "NLL (nats)", "Brier score (0–2)"]
    assert fig.axes[0].get_xlabel() == "labelled examples"
    assert tuple(fig.get_size_inches()) == pytest.approx((7.0, 1.9))
    frac = plots.curves_figure(study(), "digits", noise=0.0,
                               cfg=plots.PlotConfig(accuracy_unit="fraction"))
    line = frac.axes[0].get_lines()[0]
    assert frac.axes[0].get_ylabel() == "test accuracy (fraction)"
    assert max(line.get_ydata()) < 1.0  # fractions, not percent


def test_plot_config_is_applied():
    cfg = plots.PlotConfig(width=3.4, row_height=1.5, font_scale=1.25, strategies=("badge", "random"),
                           names={"badge": "BADGE (ours)"}, title=False)
    fig = plots.curves_figure(study(strategies=("random", "badge", "entropy")), "digits", 0.0, cfg=cfg)
    # one column wide: the four panels wrap into 2 × 2
    assert tuple(fig.get_size_inches()) == pytest.approx((3.4, 3.0))
    assert len(fig.axes) == 4
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["BADGE (ours)", "Random"]  # the chosen strategies, in the chosen order
    assert fig.axes[0].yaxis.label.get_size() == pytest.approx(10.0)
    assert fig._suptitle is None
    with pytest.raises(ReportError, match=r"plot strategies \['bald'\] are not in the table"):
        plots.curves_figure(study(), "digits", 0.0, cfg=plots.PlotConfig(strategies=("bald",)))
    with pytest.raises(ReportError, match="plot width -1"):
        plots.PlotConfig(width=-1)


def test_reliability_shows_counts_and_fades_sparse_bins():
    fig = plots.reliability_figure(reliability(), "digits", 0.0)
    main_ax, count_ax = fig.axes[0], fig.axes[1]
    assert count_ax.get_yscale() == "log" and count_ax.get_ylabel() == "count"
    heights = [round(p.get_height()) for p in count_ax.patches]
    assert heights == [2, 80, 800, 4000]  # pooled over the two seeds
    bars = main_ax.containers[0]
    alphas = [p.get_facecolor()[3] for p in bars]
    # opacity grows with the count: the one-sample bin (accuracy 1.0) is the faintest
    assert alphas == sorted(alphas) and alphas[0] < 0.3 < 0.99 < alphas[-1]
    assert plots.STYLE["random"].label in main_ax.get_title()


# ---------------------------------------------------------------------------- the command
def test_plot_curves_without_noise_uses_the_only_level(tmp_path):
    study().to_csv(tmp_path / "r.csv", index=False)
    out = tmp_path / "c.png"
    assert main(["plot", "curves", "--rounds", str(tmp_path / "r.csv"), "--dataset", "digits",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 1000


def test_plot_curves_without_noise_refuses_several_levels(tmp_path, capsys):
    study(noises=(0.0, 0.1)).to_csv(tmp_path / "r.csv", index=False)
    assert main(["plot", "curves", "--rounds", str(tmp_path / "r.csv"), "--dataset", "digits",
                 "--out", str(tmp_path / "c.png")]) == 2
    assert "several noise levels; valid: 0, 0.1" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_plot_flags_reach_the_figure(tmp_path):
    study(strategies=("random", "badge", "entropy")).to_csv(tmp_path / "r.csv", index=False)
    pdf = tmp_path / "c.pdf"
    assert main(["plot", "curves", "--rounds", str(tmp_path / "r.csv"), "--dataset", "digits",
                 "--noise", "0", "--out", str(pdf), "--width", "3.4", "--strategies", "badge,random",
                 "--display-name", "badge=Badge!", "--no-title"]) == 0
    text = pdf.read_bytes()
    assert b"/Subtype /Type3" not in text
    assert main(["plot", "curves", "--rounds", str(tmp_path / "r.csv"), "--dataset", "digits",
                 "--out", str(tmp_path / "d.png"), "--display-name", "badge"]) == 2
    assert not (tmp_path / "d.png").exists()


# ---------------------------------------------------------------------------- the workflow's plot: block
def test_plot_block_in_schema_config_and_rules():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["plot"]["properties"]
    d = plots.PlotConfig()
    assert props["width"]["default"] == d.width and props["row_height"]["default"] == d.row_height
    assert props["font_scale"]["default"] == d.font_scale and props["dpi"]["default"] == d.dpi
    assert props["accuracy_unit"]["enum"] == list(plots.ACCURACY_UNITS)
    assert "plot" in yaml.safe_load((ROOT / "config/config.yaml").read_text())
    rules = (ROOT / "workflow/rules/report.smk").read_text()
    # every plot rule passes the block's flags
    assert len(re.findall(r"\{params\.look\}", rules)) == 3
    assert "PlotConfig.from_block(config[\"plot\"])" in rules


def test_plot_block_round_trips_through_the_flags():
    """The workflow turns the plot: block into flags (PlotConfig.to_args); the command parses
    them back into the same config."""
    import shlex

    from asknlearn.cli import _plot_config, build_parser

    block = {"width": 3.4, "row_height": 1.2345678901, "font_scale": 1.2, "dpi": 200,
             "accuracy_unit": "fraction", "title": False, "strategies": ["badge", "random"],
             "display_names": {"badge": "BADGE (ours)", "random": "Random's pick"}}
    cfg = plots.PlotConfig.from_block(block)
    args = build_parser().parse_args(["plot", "curves", "--dataset", "d", "--out", "x.png",
                                      *shlex.split(cfg.to_args())])
    assert _plot_config(args) == cfg
    assert cfg.names == {"badge": "BADGE (ours)", "random": "Random's pick"} and cfg.dpi == 200
    defaults = build_parser().parse_args(["plot", "curves", "--dataset", "d", "--out", "x.png"])
    assert _plot_config(defaults) == plots.PlotConfig.from_block({}) == plots.PlotConfig()
    with pytest.raises(ReportError, match=r"plot keys \['colour'\] are not valid"):
        plots.PlotConfig.from_block({"colour": "red"})


# ---------------------------------------------------------------------------- layering
def test_cli_owns_the_commands_and_imports_stay_light():
    """results/plots/backfill never import the CLI (it imports them), and importing the CLI
    loads none of torch, pandas or matplotlib: `asknlearn --help` stays instant."""
    import subprocess
    import sys

    for mod in ("results", "plots", "backfill", "estimate"):
        assert "asknlearn.cli" not in (ROOT / "asknlearn" / f"{mod}.py").read_text()
    code = ("import sys, asknlearn.cli; asknlearn.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"
    from asknlearn.cli import COMMANDS

    assert list(COMMANDS) == ["run", "strategies", "init-store", "backfill", "log-study", "aggregate",
                              "plot", "summarize", "estimate", "ablation", "tune", "config"]
