"""Paired statistics of a study: which differences between strategies are real.

Everything here reads the study's tidy rounds table (one row per cell and round, columns as in
:data:`asknlearn.records.ROUND_COLUMNS`) and returns plain pandas tables; nothing is drawn
(:mod:`asknlearn.stats_figures` draws) and nothing imports torch.

- **Paired differences.** Every strategy shares its seed with the reference (same seed set,
  initial weights and batch order), so Δ = strategy − reference is taken per seed and the
  seed-to-seed variance the two curves share cancels. Only seeds both strategies have are
  paired; ``n`` says how many. Δ is in the metric's own units, so for lower-is-better metrics
  (ECE, NLL, Brier) a negative Δ is an improvement.
- **Interval and test.** The 95 % interval is the t-interval on the n paired differences,
  mean ± t_{n−1, 0.975}·sd/√n, and p is that of the two-sided paired t-test (one-sample t-test
  of the differences against 0, as :func:`scipy.stats.ttest_rel`); quantiles and tail areas come
  from :data:`scipy.stats.t`. Edge cases, by definition here:

  - n = 1: no sd, so no interval and no test (sd, interval, t and p are NaN);
  - all n differences equal (zero variance, up to float rounding: :data:`EQUAL_TOLERANCE`): an
    interval of width 0 at that value; if it is not 0, t = ±∞ and p = 0 (scipy's value: every
    seed moves by the same amount); if every difference is 0 (identical curves), t = 0 and
    p = 1 (scipy gives NaN; "no evidence of a difference" is the reading a table needs).
- **AULC** (area under the learning curve, Zhan et al. 2021's AUBC) is the trapezoid area over
  a label range divided by that range, the formula of :func:`asknlearn.results.area_under_curve`,
  per cell and then paired like any other value.
- **Penalty matrix** (Ash et al. 2020, BADGE, section 5): over every setting (dataset × noise)
  and label count in it, P[i, j] gains 1 / (label counts in that setting) when i beats j by a
  paired two-sided t-test at α = 0.05, "beats" meaning better in the metric's direction. A
  row sums i's wins; the column mean says how often j is beaten (0 = never).
- **Mean ranks** (as CDALBench reports them): per setting and label count, strategies ranked by
  their seed-mean (1 = best, ties averaged); the mean rank over those points and its spread.
- **What n buys**: the half-width of the 95 % interval t_{n−1, 0.975}·sd/√n that the observed sd
  of a paired Δ would give at n = 3, 5 and 10 seeds.

Performance: every computation is a merge and groupby over the long table; no per-row Python.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asknlearn.errors import AskNLearnError
from asknlearn.records import atomic_write

if TYPE_CHECKING:  # pandas/numpy/scipy stay lazy: the CLI imports modules for every command
    import numpy as np
    import pandas as pd

# Whether a larger value is better, for the paper's four test metrics (section 4.1). The one
# place the direction is declared until the metric catalogue supplies it: every function takes a
# ``higher_is_better`` mapping and defaults to this one.
HIGHER_IS_BETTER: Mapping[str, bool] = {"accuracy": True, "ece": False, "nll": False, "brier": False}
# display names and the factor a table shows each metric in (accuracy in percentage points)
METRIC_NAMES: Mapping[str, str] = {"accuracy": "accuracy", "ece": "ECE", "nll": "NLL", "brier": "Brier"}
DISPLAY_SCALE: Mapping[str, float] = {"accuracy": 100.0}
CONFIDENCE = 0.95
ALPHA = 0.05
N_BUYS = (3, 5, 10)
# paired differences this close to each other are equal (float rounding, not seed noise)
EQUAL_TOLERANCE = 1e-12
SETTING = ["dataset", "noise"]  # what the penalty matrix weighs by its label counts
POINT = [*SETTING, "labels"]  # one comparison point: a setting at one label count
_VALUE_COLUMNS = ["dataset", "noise", "strategy", "seed", "labels"]


class StatsError(AskNLearnError):
    """A table or argument the statistics cannot use; the message names the valid values."""


# ---------------------------------------------------------------------------- inputs
def _check_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise StatsError(f"{what} lacks columns {missing}; valid: a table with {list(columns)}")


def _direction(metrics: Sequence[str], higher_is_better: Mapping[str, bool]) -> None:
    unknown = [m for m in metrics if m not in higher_is_better]
    if unknown:
        raise StatsError(f"metrics {unknown} have no direction; valid: {sorted(higher_is_better)} "
                         "(or pass higher_is_better with them)")


def long_values(df: pd.DataFrame, metrics: Sequence[str] = tuple(HIGHER_IS_BETTER),
                labels: Sequence[int] | None = None) -> pd.DataFrame:
    """The rounds table long: one row per dataset, noise, strategy, seed, label count and metric
    (``value``), at every label count or only at ``labels``. The input of every paired
    statistic below."""
    metrics = list(metrics)
    _check_columns(df, [*_VALUE_COLUMNS, *metrics], "rounds table")
    at = df
    if labels is not None:
        have = set(df["labels"].unique().astype(int).tolist())
        absent = [x for x in labels if int(x) not in have]
        if absent:
            raise StatsError(f"label counts {absent} are in no round; valid: {sorted(have)}")
        at = df[df["labels"].isin([int(x) for x in labels])]
    long = at.melt(id_vars=_VALUE_COLUMNS, value_vars=metrics, var_name="metric")
    long["noise"] = long["noise"].astype(float)
    return long.dropna(subset=["value"]).reset_index(drop=True)


def _trapezoid_area(cells: pd.DataFrame, keys: list[str]) -> pd.Series:
    """area_under_curve's formula per group of ``keys``, as one groupby: the sum of trapezoids
    (y_i + y_{i−1})/2·(x_i − x_{i−1}) divided by the label span; one point gives its value.
    ``cells`` sorted by keys and labels."""
    g = cells.groupby(keys, sort=False)
    x, y = cells["labels"].astype(float), cells["value"].astype(float)
    piece = (y + g["value"].shift()) / 2 * (x - g["labels"].shift())
    total = piece.groupby([cells[k] for k in keys], sort=False).sum(min_count=1)
    lo = g["labels"].min().astype(float)
    span = g["labels"].max().astype(float) - lo
    first = g["value"].first()
    return (total / span).where(span > 0, first)


def aulc_values(df: pd.DataFrame, ranges: Sequence[tuple[int, int]], metrics: Sequence[str] = ("accuracy",),
                area: Callable[[Sequence[float], Sequence[float]], float] | None = None) -> pd.DataFrame:
    """Each cell's normalised area under its ``metric`` curve over every label range (lo, hi),
    as :func:`long_values` rows with ``labels_from`` = lo and ``labels`` = hi. Only cells with
    rounds at both ends count: a cell that stopped early has no area over the range (and so no
    pair). ``area(labels, values)`` overrides the formula (e.g.
    :func:`asknlearn.results.area_under_curve`, called once per cell); by default the same
    formula is computed in one groupby."""
    import pandas as pd

    bad = [r for r in ranges if len(r) != 2 or not int(r[0]) <= int(r[1])]
    if bad or not ranges:
        raise StatsError(f"label ranges {list(ranges)!r} are not valid; valid: (lo, hi) pairs with lo ≤ hi")
    long = long_values(df, metrics)
    cell = ["dataset", "noise", "strategy", "seed", "metric"]
    out = []
    for lo, hi in ranges:
        part = long[(long["labels"] >= lo) & (long["labels"] <= hi)]
        ends = part.groupby(cell, sort=False)["labels"].agg(["min", "max"])
        whole = ends[(ends["min"] == lo) & (ends["max"] == hi)].index
        part = part.set_index(cell).loc[lambda t, w=whole: t.index.isin(w)].reset_index()
        part = part.sort_values([*cell, "labels"], kind="stable")
        if part.empty:
            continue
        if area is None:
            a = _trapezoid_area(part, cell)
        else:
            a = part.groupby(cell, sort=False).apply(
                lambda g: area(g["labels"].to_numpy(float), g["value"].to_numpy(float)), include_groups=False)
        out.append(a.rename("value").reset_index().assign(labels_from=int(lo), labels=int(hi)))
    if not out:
        raise StatsError(f"no cell has rounds at both ends of any range {list(ranges)}; valid: ranges "
                         f"from the label counts {sorted(long['labels'].unique().tolist())}")
    cols = ["dataset", "noise", "strategy", "seed", "labels_from", "labels", "metric", "value"]
    return pd.concat(out, ignore_index=True)[cols]


# ---------------------------------------------------------------------------- the paired t
def _point_columns(values: pd.DataFrame) -> list[str]:
    """The columns that name one comparison point (everything but strategy, seed and value)."""
    return [c for c in values.columns if c not in ("strategy", "seed", "value")]


def t_interval(n: np.ndarray, mean: np.ndarray, sd: np.ndarray, confidence: float = CONFIDENCE
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(half-width of the t-interval, t statistic, two-sided p) of paired differences from
    their count, mean and sd, vectorised; the edge cases as in the module docstring (n < 2:
    NaN; sd = 0: width 0, p = 0, or p = 1 when the mean is 0 too)."""
    import numpy as np
    from scipy import stats

    n, mean, sd = (np.asarray(a, float) for a in (n, mean, sd))
    dof = np.where(n >= 2, n - 1, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = sd / np.sqrt(n)
        half = stats.t.ppf(0.5 + confidence / 2, dof) * se
        t = np.where(se > 0, mean / se, np.where(mean == 0, 0.0, np.sign(mean) * np.inf))
    t = np.where(np.isnan(dof) | np.isnan(sd), np.nan, t)
    p = 2 * stats.t.sf(np.abs(t), dof)
    return half, t, p


def _paired_test(paired: pd.DataFrame, group: list[str], confidence: float) -> pd.DataFrame:
    """n, mean, sd, interval, k positive, t and p of ``delta`` per ``group``. Differences equal
    up to float rounding (spread ≤ :data:`EQUAL_TOLERANCE` × max(1, |Δ|)) have sd exactly 0, so
    a constant shift such as 0.72 + 0.03 − 0.72 gets a width-0 interval and p = 0, not a
    rounding residue's p."""
    g = paired.assign(_pos=paired["delta"] > 0, _abs=paired["delta"].abs()).groupby(group, sort=False)
    t = g.agg(n=("delta", "count"), mean=("delta", "mean"), sd=("delta", "std"),
              _lo=("delta", "min"), _hi=("delta", "max"), _big=("_abs", "max"),
              k_positive=("_pos", "sum"))
    equal = (t["_hi"] - t["_lo"]) <= EQUAL_TOLERANCE * t["_big"].clip(lower=1.0)
    t["sd"] = t["sd"].where(~equal, 0.0).where(t["n"] >= 2)
    # equal differences around 0 (identical curves up to rounding) are exactly 0
    t["mean"] = t["mean"].where(~equal | (t["_big"] > EQUAL_TOLERANCE), 0.0)
    half, tt, p = t_interval(t["n"], t["mean"], t["sd"], confidence)
    t["ci_low"], t["ci_high"], t["half_width"] = t["mean"] - half, t["mean"] + half, half
    t["t"], t["p"] = tt, p
    return t.drop(columns=["_lo", "_hi", "_big"])


def paired_deltas(values: pd.DataFrame, reference: str) -> pd.DataFrame:
    """``values`` (from :func:`long_values` or :func:`aulc_values`) of every strategy but the
    reference, with ``reference_value`` and ``delta`` = value − reference value of the same
    seed at the same point; only seeds both have (an inner join)."""
    if reference not in set(values["strategy"].unique()):
        raise StatsError(f"reference strategy {reference!r} is not in the table; "
                         f"valid: {sorted(set(values['strategy'].unique()))}")
    point = _point_columns(values)
    ref = (values[values["strategy"] == reference].drop(columns="strategy")
           .rename(columns={"value": "reference_value"}))
    other = values[values["strategy"] != reference]
    paired = other.merge(ref, on=[*point, "seed"], how="inner")
    paired["delta"] = paired["value"] - paired["reference_value"]
    return paired


def paired_summary(values: pd.DataFrame, reference: str, confidence: float = CONFIDENCE,
                   alpha: float = ALPHA, higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER
                   ) -> pd.DataFrame:
    """Δ = strategy − ``reference``, paired by seed, per point (dataset, noise, [labels_from,]
    labels, metric) and strategy: ``n`` pairs (``n_strategy``/``n_reference``: the seeds each
    has there, so a missing seed shows), mean Δ, sd, the t-interval (``ci_low``, ``ci_high``,
    ``half_width``), ``k_positive`` (seeds with Δ > 0), t and two-sided p, the two sides' means
    over the paired seeds, and ``verdict``: better / worse (p < ``alpha``, in the metric's
    direction) or n.s."""
    import numpy as np

    if not 0 < confidence < 1 or not 0 < alpha < 1:
        raise StatsError(f"confidence {confidence!r} / alpha {alpha!r} are not valid; "
                         "valid: values in (0, 1)")
    _direction(sorted(set(values["metric"].unique())), higher_is_better)
    point = _point_columns(values)
    paired = paired_deltas(values, reference)
    group = [*point, "strategy"]
    t = _paired_test(paired, group, confidence)
    means = paired.groupby(group, sort=False)[["value", "reference_value"]].mean()
    t = t.join(means.rename(columns={"value": "strategy_mean", "reference_value": "reference_mean"}))
    seeds = values.groupby([*point, "strategy"], sort=False)["seed"].nunique()
    t["n_strategy"] = seeds.reindex(t.index).to_numpy()
    t["n_reference"] = seeds.xs(reference, level="strategy").reindex(
        t.index.droplevel("strategy")).to_numpy()
    t = t.reset_index()
    up = t["metric"].map(higher_is_better).astype(bool)
    good = np.where(up, t["mean"] > 0, t["mean"] < 0)
    sig = t["p"] < alpha
    t["verdict"] = np.where(sig & good, "better", np.where(sig & ~good, "worse", "n.s."))
    t.insert(t.columns.get_loc("strategy") + 1, "reference", reference)
    cols = [*point, "strategy", "reference", "n", "n_strategy", "n_reference", "mean", "sd", "ci_low",
            "ci_high", "half_width", "k_positive", "t", "p", "verdict", "strategy_mean", "reference_mean"]
    # metrics in the order the values list them (the paper's), the rest sorted
    place = {m: i for i, m in enumerate(values["metric"].unique())}
    return (t[cols].sort_values([*point, "strategy"], kind="stable",
                                key=lambda c: c.map(place) if c.name == "metric" else c)
            .reset_index(drop=True))


# ---------------------------------------------------------------------------- penalty matrix
@dataclass(frozen=True)
class PenaltyMatrix:
    """Ash et al. (2020)'s pairwise penalty matrix for one metric: ``matrix.loc[i, j]`` is the
    number of settings (dataset × noise, each label count weighing 1/its setting's count) in
    which row i beats column j; the diagonal is NaN. ``settings`` bounds every entry."""

    metric: str
    matrix: pd.DataFrame
    settings: int
    alpha: float
    n_min: int
    n_max: int
    higher_is_better: bool

    @property
    def column_means(self) -> pd.Series:
        """How often each column strategy is beaten: the mean of its column over the other
        strategies (the diagonal is no comparison)."""
        return self.matrix.mean(axis=0, skipna=True)

    def caption(self) -> str:
        """The method, its reference and the sign convention, for a figure or a table."""
        better = "higher" if self.higher_is_better else "lower"
        n = f"{self.n_min}" if self.n_min == self.n_max else f"{self.n_min}–{self.n_max}"
        return (f"Pairwise penalty matrix, {METRIC_NAMES.get(self.metric, self.metric)} (Ash et al. "
                f"2020, section 5). P[i, j]: in how many of the {self.settings} setting(s) "
                "(dataset × noise) row i beats column j, each label count of a setting adding "
                f"1/(its number of label counts) when i is significantly better ({better} is "
                f"better) by a two-sided paired t-test at α = {self.alpha:g} over n = {n} seeds. "
                "Bottom row: column means over the other strategies (how often j is beaten; "
                "lower is better).")


def penalty_matrix(values: pd.DataFrame, metric: str, alpha: float = ALPHA,
                   higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER,
                   strategies: Sequence[str] | None = None) -> PenaltyMatrix:
    """The penalty matrix of ``metric`` over every setting and label count in ``values``
    (:func:`long_values` rows; restrict the label counts there, e.g. to drop saturated ones as
    BADGE does). Each ordered pair is paired by seed at each point (common seeds only); a point
    where a pair has n < 2 cannot be a win."""
    import numpy as np
    import pandas as pd

    _direction([metric], higher_is_better)
    if not 0 < alpha < 1:
        raise StatsError(f"alpha {alpha!r} is not valid; valid: a value in (0, 1)")
    v = values[values["metric"] == metric]
    if v.empty:
        raise StatsError(f"metric {metric!r} has no values; "
                         f"valid: {sorted(set(values['metric'].unique()))}")
    present = list(v["strategy"].unique())
    order = list(strategies) if strategies is not None else present
    unknown = [s for s in order if s not in present]
    if unknown:
        raise StatsError(f"strategies {unknown} are not in the table; valid: {present}")
    v = v[v["strategy"].isin(order)]
    point = [c for c in _point_columns(v) if c != "metric"]
    right = v[[*point, "seed", "strategy", "value"]].rename(columns={"strategy": "j", "value": "vj"})
    pairs = v[[*point, "seed", "strategy", "value"]].rename(columns={"strategy": "i"}).merge(
        right, on=[*point, "seed"])
    pairs = pairs[pairs["i"] != pairs["j"]]
    pairs = pairs.assign(delta=pairs["value"] - pairs["vj"])
    t = _paired_test(pairs, [*point, "i", "j"], CONFIDENCE).reset_index()
    sign = 1.0 if higher_is_better[metric] else -1.0
    win = (t["p"] < alpha) & (sign * t["mean"] > 0)
    counts = v.groupby(SETTING)["labels"].nunique().rename("_k")
    t = t.join(counts, on=SETTING)
    m = (t.assign(w=win / t["_k"]).groupby(["i", "j"])["w"].sum().unstack("j")
         .reindex(index=order, columns=order).fillna(0.0))
    a = m.to_numpy(float, copy=True)
    np.fill_diagonal(a, np.nan)
    m = pd.DataFrame(a, index=pd.Index(order, name="winner"), columns=pd.Index(order, name="loser"))
    return PenaltyMatrix(metric, m, int(v.groupby(SETTING).ngroups), alpha,
                         int(t["n"].min()), int(t["n"].max()), bool(higher_is_better[metric]))


# ---------------------------------------------------------------------------- ranks
def ranks_per_point(values: pd.DataFrame, higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER
                    ) -> pd.DataFrame:
    """Per point (dataset, noise, labels, metric) and strategy: the seed-mean and its rank among
    the strategies there (1 = best in the metric's direction, ties get their average rank)."""
    _direction(sorted(set(values["metric"].unique())), higher_is_better)
    point = _point_columns(values)
    means = values.groupby([*point, "strategy"], sort=False)["value"].mean().rename("mean").reset_index()
    flip = {m: -1.0 if up else 1.0 for m, up in higher_is_better.items()}
    signed = means["mean"] * means["metric"].map(flip)
    means["rank"] = signed.groupby([means[c] for c in point]).rank(method="average")
    return means


def mean_ranks(values: pd.DataFrame, higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER) -> pd.DataFrame:
    """Per metric and strategy, over the points of :func:`ranks_per_point`: mean rank, its sd,
    quartiles and IQR, and the number of points; sorted by metric, then mean rank."""
    r = ranks_per_point(values, higher_is_better)
    g = r.groupby(["metric", "strategy"], sort=False)["rank"]
    out = g.agg(mean_rank="mean", sd="std", median="median", points="count")
    out["q25"], out["q75"] = g.quantile(0.25), g.quantile(0.75)
    out = out.reset_index()
    out["iqr"] = out["q75"] - out["q25"]
    out["of"] = out["metric"].map(r.groupby("metric")["strategy"].nunique())
    order = {m: i for i, m in enumerate(values["metric"].unique())}
    return (out.sort_values(["metric", "mean_rank"], key=lambda c: c.map(order) if c.name == "metric" else c,
                            kind="stable").reset_index(drop=True))


# ---------------------------------------------------------------------------- what n buys
def half_width(sd: float | np.ndarray, n: int | np.ndarray, confidence: float = CONFIDENCE) -> np.ndarray:
    """Half-width t(n−1)·sd/√n of the t-interval that a paired Δ with this sd has at n seeds."""
    import numpy as np
    from scipy import stats

    n = np.asarray(n, float)
    if np.any(n < 2):
        raise StatsError(f"n {n.tolist()!r} is not valid; valid: 2 or more seeds (one has no interval)")
    return stats.t.ppf(0.5 + confidence / 2, n - 1) * np.asarray(sd, float) / np.sqrt(n)


def what_n_buys(summary: pd.DataFrame, ns: Sequence[int] = N_BUYS, confidence: float = CONFIDENCE,
                by: Sequence[str] = ("dataset", "noise", "metric")) -> pd.DataFrame:
    """For each group ``by`` of a :func:`paired_summary`: the median and largest observed sd of
    the paired Δ over its comparisons, and the half-width of the interval each would give at
    every n in ``ns`` (columns ``hw{n}_median``, ``hw{n}_max``), in the metric's units."""
    s = summary.dropna(subset=["sd"])
    if s.empty:
        raise StatsError("no comparison has n ≥ 2, so no sd; valid: a study with 2 or more seeds")
    out = s.groupby(list(by), sort=False)["sd"].agg(sd_median="median", sd_max="max",
                                                    comparisons="count").reset_index()
    for n in ns:
        out[f"hw{n}_median"] = half_width(out["sd_median"], n, confidence)
        out[f"hw{n}_max"] = half_width(out["sd_max"], n, confidence)
    return out


# ---------------------------------------------------------------------------- formatting
def _num(x: float, digits: int, signed: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    s = f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"
    return s.replace("-", "−")


def _digits(metric: str) -> int:
    return {"accuracy": 2, "ece": 3, "nll": 2, "brier": 3}.get(metric, 3)


def _p(p: float) -> str:
    if math.isnan(p):
        return "p —"
    return "p < 0.001" if p < 0.001 else f"p {p:.3f}"


def format_delta(row: Mapping, scale: float = 1.0, digits: int = 3) -> str:
    """One paired comparison as ``Δ [low, high] k/n+ p``, e.g. ``+0.92 [+0.17, +1.67] 3/3+ p 0.03``
    (n written "n of m" when a side lacks seeds)."""
    n = int(row["n"])
    most = max(int(row.get("n_strategy", n)), int(row.get("n_reference", n)))
    npairs = f"{n}" if n == most else f"{n} of {most}"
    return (f"{_num(row['mean'] * scale, digits)} [{_num(row['ci_low'] * scale, digits)}, "
            f"{_num(row['ci_high'] * scale, digits)}] {int(row['k_positive'])}/{npairs}+ {_p(row['p'])}")


def delta_caption(reference: str, confidence: float = CONFIDENCE,
                  higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER,
                  scale: Mapping[str, float] = DISPLAY_SCALE) -> str:
    """The method of every Δ table, stated once: pairing, interval, test, sign convention."""
    lower = [METRIC_NAMES.get(m, m) for m, up in higher_is_better.items() if not up]
    higher = [METRIC_NAMES.get(m, m) for m, up in higher_is_better.items() if up]
    pts = [METRIC_NAMES.get(m, m) for m, s in scale.items() if s == 100.0]
    points = f" ({', '.join(pts)} in percentage points)" if pts else ""
    return (f"Δ = strategy − {reference}, paired by seed (same seed set, initial weights and batch "
            f"order), in each metric's own units{points}: "
            f"mean Δ [{100 * confidence:g} % t-interval on the n paired differences, "
            "mean ± t(n−1)·sd/√n with scipy.stats.t], k/n+ the seeds with Δ > 0, p of the two-sided "
            "paired t-test. Only seeds both strategies have are paired (\"2 of 3\": a side lacks a "
            f"seed). Higher is better for {', '.join(higher) or 'none'}; lower is better for "
            f"{', '.join(lower) or 'none'}, so a negative Δ is an improvement there. n = 1: no "
            "interval (—). All Δ equal: an interval of width 0 and p = 0 (p = 1 when all are 0).")


def delta_markdown(summary: pd.DataFrame, metrics: Sequence[str] | None = None,
                   order: Sequence[str] | None = None, scale: Mapping[str, float] = DISPLAY_SCALE,
                   confidence: float = CONFIDENCE,
                   higher_is_better: Mapping[str, bool] = HIGHER_IS_BETTER) -> str:
    """A :func:`paired_summary` as Markdown: the caption, then per dataset and noise one row per
    strategy and label count (or label range) with one ``Δ [CI] k/n+ p`` cell per metric."""
    if summary.empty:
        raise StatsError("the paired summary is empty; valid: a summary with at least one comparison")
    reference = str(summary["reference"].iloc[0])
    metrics = list(metrics) if metrics is not None else list(summary["metric"].unique())
    strategies = list(order) if order is not None else list(summary["strategy"].unique())
    rank = {s: i for i, s in enumerate(strategies)}
    ranged = "labels_from" in summary.columns
    lines = [delta_caption(reference, confidence,
                           {m: higher_is_better[m] for m in metrics if m in higher_is_better}, scale), ""]
    s = summary[summary["strategy"].isin(strategies) & summary["metric"].isin(metrics)]
    for (ds, noise), d in s.groupby(["dataset", "noise"], sort=False):
        what = "AULC over labels" if ranged else "labels"
        lines += [f"**{ds}, oracle noise {noise:g}**", "",
                  f"| strategy | {what} | "
                  + " | ".join(f"Δ {METRIC_NAMES.get(m, m)}" for m in metrics) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        cells = d.set_index(["strategy", *(["labels_from"] if ranged else []), "labels", "metric"])
        rows = cells.index.droplevel("metric").unique()
        for key in sorted(rows, key=lambda k: (rank[k[0]], *k[1:])):
            x = f"{key[1]:,}–{key[2]:,}" if ranged else f"{key[1]:,}"
            out = [key[0], x]
            for m in metrics:
                r = cells.loc[(*key, m)] if (*key, m) in cells.index else None
                out.append("—" if r is None else format_delta(r, scale.get(m, 1.0), _digits(m)))
            lines.append("| " + " | ".join(out) + " |")
        lines.append("")
    return "\n".join(lines)


def penalty_markdown(pm: PenaltyMatrix, names: Mapping[str, str] | None = None) -> str:
    """A penalty matrix as Markdown: caption, rows i (winner), columns j, and the column means."""
    names = names or {}
    cols = list(pm.matrix.columns)
    head = "| i beats j → | " + " | ".join(names.get(c, c) for c in cols) + " |"
    lines = [pm.caption(), "", head, "|---|" + "---|" * len(cols)]
    for i, row in pm.matrix.iterrows():
        lines.append(f"| {names.get(i, i)} | " + " | ".join(
            "—" if math.isnan(v) else f"{v:.2f}" for v in row) + " |")
    lines.append("| **column mean** | " + " | ".join(f"**{v:.2f}**" for v in pm.column_means) + " |")
    return "\n".join(lines) + "\n"


def ranks_markdown(ranks: pd.DataFrame, names: Mapping[str, str] | None = None) -> str:
    """:func:`mean_ranks` as Markdown, one block per metric, best first."""
    names = names or {}
    lines = ["Mean rank over the points (dataset × noise × label count) of each strategy's "
             "seed-mean, 1 = best in the metric's direction, ties averaged; spread: sd and IQR "
             "over the points.", ""]
    for metric, d in ranks.groupby("metric", sort=False):
        lines += [f"**{METRIC_NAMES.get(metric, metric)}** (of {int(d['of'].iloc[0])} strategies)", "",
                  "| strategy | mean rank | sd | median | IQR | points |", "|---|---|---|---|---|---|"]
        for r in d.itertuples():
            lines.append(f"| {names.get(r.strategy, r.strategy)} | {r.mean_rank:.2f} | "
                         f"{_num(r.sd, 2, False)} | {r.median:.1f} | {r.q25:.1f}–{r.q75:.1f} | {r.points} |")
        lines.append("")
    return "\n".join(lines)


def n_buys_markdown(t: pd.DataFrame, scale: Mapping[str, float] = DISPLAY_SCALE,
                    confidence: float = CONFIDENCE) -> str:
    """:func:`what_n_buys` as Markdown: per metric the observed sd of a paired Δ and the
    half-width of the interval it gives at each n (median comparison / largest sd)."""
    ns = [int(c[2:-7]) for c in t.columns if c.startswith("hw") and c.endswith("_median")]
    lines = [f"What n buys: half-width of the {100 * confidence:g} % t-interval of a paired Δ, "
             "t(n−1)·sd/√n, for the median and the largest sd of the paired Δ observed in this "
             "study (same units as the Δ tables).", "",
             "| dataset | noise | metric | sd of Δ (median / max) | "
             + " | ".join(f"±, n = {n}" for n in ns) + " |",
             "|---|---|---|---|" + "---|" * len(ns)]
    for r in t.to_dict("records"):
        k, d = scale.get(r["metric"], 1.0), _digits(r["metric"])
        pair = [(r["sd_median"], r["sd_max"]), *((r[f"hw{n}_median"], r[f"hw{n}_max"]) for n in ns)]
        lines.append(f"| {r['dataset']} | {r['noise']:g} | {METRIC_NAMES.get(r['metric'], r['metric'])} | "
                     + " | ".join(f"{_num(a * k, d, False)} / {_num(b * k, d, False)}" for a, b in pair)
                     + " |")
    return "\n".join(lines) + "\n"


def write_csv(df: pd.DataFrame, out: str | Path) -> None:
    """Write a statistics table to ``out`` atomically (full precision, no index)."""
    atomic_write(Path(out), lambda p: df.to_csv(p, index=False))


def write_text(text: str, out: str | Path) -> None:
    """Write a Markdown table to ``out`` atomically."""
    atomic_write(Path(out), lambda p: Path(p).write_text(text))
