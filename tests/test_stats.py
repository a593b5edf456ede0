"""asknlearn.stats and asknlearn.stats_figures on hand-made studies whose answers are known:
intervals, p-values and sign counts against scipy (n = 2, zero variance, a missing seed), the
penalty matrix of Ash et al. (2020), mean ranks, what n buys, and the figures."""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from asknlearn import stats as S
from asknlearn.results import area_under_curve


def _rounds(values: dict[tuple[str, int, int], float], metric: str = "accuracy", dataset: str = "d",
            noise: float = 0.0) -> pd.DataFrame:
    """A rounds table from {(strategy, seed, labels): value of ``metric``}; the other metrics
    are filled with the same value so every column is numeric."""
    rows = [{"study": "s", "dataset": dataset, "noise": noise, "strategy": st, "seed": seed, "round": 0,
             "labels": x, **{m: (v if m == metric else 0.5) for m in S.HIGHER_IS_BETTER}}
            for (st, seed, x), v in values.items()]
    return pd.DataFrame(rows)


def _summary(df: pd.DataFrame, reference: str = "ref", metric: str = "accuracy") -> pd.DataFrame:
    s = S.paired_summary(S.long_values(df, [metric]), reference)
    return s.set_index(["strategy", "labels"])


REF = [0.70, 0.72, 0.69, 0.75, 0.71]
NEW = [0.73, 0.72, 0.74, 0.76, 0.70]


def test_interval_p_and_sign_count_match_scipy():
    df = _rounds({**{("ref", i, 100): v for i, v in enumerate(REF)},
                  **{("new", i, 100): v for i, v in enumerate(NEW)}})
    r = _summary(df).loc[("new", 100)]
    res = sps.ttest_rel(NEW, REF)
    ci = res.confidence_interval(0.95)
    d = np.subtract(NEW, REF)
    assert r["n"] == 5 and r["k_positive"] == int((d > 0).sum()) == 3
    assert r["mean"] == pytest.approx(d.mean(), abs=1e-15)
    assert r["sd"] == pytest.approx(d.std(ddof=1), rel=1e-12)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert r["p"] == pytest.approx(res.pvalue, rel=1e-10)
    assert r["t"] == pytest.approx(res.statistic, rel=1e-10)
    assert r["verdict"] == "n.s." and r["reference"] == "ref"
    assert r["strategy_mean"] == pytest.approx(np.mean(NEW))
    assert r["reference_mean"] == pytest.approx(np.mean(REF))


def test_n_equals_two_matches_scipy():
    df = _rounds({("ref", 0, 100): 0.70, ("ref", 1, 100): 0.72, ("new", 0, 100): 0.75, ("new", 1, 100): 0.74})
    r = _summary(df).loc[("new", 100)]
    res = sps.ttest_rel([0.75, 0.74], [0.70, 0.72])
    ci = res.confidence_interval(0.95)
    assert r["n"] == 2 and r["k_positive"] == 2
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert r["p"] == pytest.approx(res.pvalue, rel=1e-10)
    # t(0.975, 1) = 12.71: two seeds give a wide interval
    assert r["half_width"] == pytest.approx(sps.t.ppf(0.975, 1) * r["sd"] / math.sqrt(2), rel=1e-12)


def test_zero_variance_delta_has_width_zero_and_defined_p():
    # every seed moves by 0.03; in floats the three differences differ in their last bits
    ref = {("ref", i, 100): v for i, v in enumerate([0.1, 0.2, 0.3])}
    df = _rounds({**ref, **{("up", i, 100): v + 0.03 for (_, i, _), v in ref.items()},
                  **{("same", i, 100): v for (_, i, _), v in ref.items()}})
    d = np.array([v + 0.03 - v for v in ref.values()])
    assert d.std(ddof=1) > 0  # the rounding residue the statistics must not read as seed noise
    s = _summary(df)
    up = s.loc[("up", 100)]
    assert up["sd"] == 0.0 and up["ci_low"] == up["ci_high"] == up["mean"] == pytest.approx(0.03, abs=1e-15)
    assert up["half_width"] == 0.0 and up["p"] == 0.0 and up["t"] == math.inf and up["k_positive"] == 3
    assert up["verdict"] == "better"
    with warnings.catch_warnings():  # scipy warns that the data are identical, which is the point
        warnings.simplefilter("ignore", RuntimeWarning)
        assert sps.ttest_1samp([0.25] * 3, 0.0).pvalue == 0.0  # the same p as scipy's on exact data
    same = s.loc[("same", 100)]
    assert same["sd"] == 0.0 and same["ci_low"] == same["ci_high"] == 0.0
    assert same["p"] == 1.0 and same["t"] == 0.0 and same["k_positive"] == 0 and same["verdict"] == "n.s."


def test_missing_seed_pairs_only_common_seeds():
    df = _rounds({**{("ref", i, 100): v for i, v in enumerate(REF[:3])},
                  **{("new", i, 100): v for i, v in enumerate(NEW[:2])}})  # new lacks seed 2
    r = _summary(df).loc[("new", 100)]
    res = sps.ttest_rel(NEW[:2], REF[:2])
    assert (r["n"], r["n_strategy"], r["n_reference"]) == (2, 2, 3)
    assert r["p"] == pytest.approx(res.pvalue, rel=1e-10)
    assert r["ci_low"] == pytest.approx(res.confidence_interval().low, rel=1e-10)
    assert "/2 of 3+" in S.format_delta(r, 100.0, 2)
    # the reference lacking a seed: the strategy's mean is over the paired seeds only
    df = _rounds({**{("ref", i, 100): v for i, v in enumerate(REF[:2])},
                  **{("new", i, 100): v for i, v in enumerate(NEW[:3])}})
    r = _summary(df).loc[("new", 100)]
    assert (r["n"], r["n_strategy"], r["n_reference"]) == (2, 3, 2)
    assert r["strategy_mean"] == pytest.approx(np.mean(NEW[:2]))


def test_one_pair_has_no_interval():
    df = _rounds({("ref", 0, 100): 0.7, ("new", 0, 100): 0.8, ("ref", 1, 100): 0.7})
    r = _summary(df).loc[("new", 100)]
    assert r["n"] == 1 and r["k_positive"] == 1 and r["mean"] == pytest.approx(0.1)
    assert all(math.isnan(r[c]) for c in ("sd", "ci_low", "ci_high", "half_width", "t", "p"))
    assert r["verdict"] == "n.s."
    assert S.format_delta(r, 1.0, 2).startswith("+0.10 [—, —] 1/1 of 2+ p —")


def test_lower_is_better_sign_convention():
    ref = [0.10, 0.12, 0.11, 0.13]
    gain = [0.05, 0.06, 0.04, 0.05]
    df = _rounds({**{("ref", i, 100): v for i, v in enumerate(ref)},
                  **{("calib", i, 100): ref[i] - gain[i] for i in range(4)}}, metric="ece")
    r = _summary(df, metric="ece").loc[("calib", 100)]
    assert r["mean"] < 0 and r["k_positive"] == 0 and r["p"] < 0.05 and r["verdict"] == "better"
    flipped = S.paired_summary(S.long_values(df, ["ece"]), "ref", higher_is_better={"ece": True})
    assert flipped.loc[0, "verdict"] == "worse"
    caption = S.delta_caption("ref", 0.95, {"ece": False})
    assert "lower is better for ECE, so a negative Δ is an improvement" in caption


def test_bad_input_is_one_clear_error():
    df = _rounds({("ref", 0, 100): 0.7, ("new", 0, 100): 0.8})
    v = S.long_values(df, ["accuracy"])
    with pytest.raises(S.StatsError, match=r"reference strategy 'badge'.*valid: \['new', 'ref'\]"):
        S.paired_summary(v, "badge")
    with pytest.raises(S.StatsError, match=r"have no direction; valid"):
        S.paired_summary(v, "ref", higher_is_better={"nll": False})
    with pytest.raises(S.StatsError, match=r"label counts \[1100\] are in no round; valid: \[100\]"):
        S.long_values(df, ["accuracy"], labels=[1100])
    with pytest.raises(S.StatsError, match="lacks columns"):
        S.long_values(df.drop(columns="seed"))
    with pytest.raises(S.StatsError, match="valid: 2 or more seeds"):
        S.half_width(0.1, 1)


# ---------------------------------------------------------------------------- AULC
def _curves(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = {}
    for st in ("ref", "new"):
        for s in range(3):
            top = 700 if (st, s) == ("new", 2) else 1100  # one cell stopped early
            for x in range(100, top + 1, 200):
                rows[(st, s, x)] = 0.5 + x / 5000 + rng.normal(0, 0.01)
    return _rounds(rows)


def test_aulc_reproduces_results_area_under_curve():
    df = _curves(0)
    ranges = [(100, 500), (100, 1100), (300, 300)]
    got = S.aulc_values(df, ranges)
    via = S.aulc_values(df, ranges, area=area_under_curve)
    key = ["strategy", "seed", "labels_from", "labels"]
    m = got.merge(via, on=key, suffixes=("", "_via"))
    assert len(m) == len(got) == len(via)
    np.testing.assert_allclose(m["value"], m["value_via"], rtol=1e-13, atol=0)
    for r in got.itertuples():  # and each equals the formula on the raw cell
        c = df[(df.strategy == r.strategy) & (df.seed == r.seed) & df.labels.between(r.labels_from, r.labels)]
        c = c.sort_values("labels")
        assert r.value == pytest.approx(area_under_curve(c.labels, c.accuracy), rel=1e-13)
    # the cell that stopped at 700 labels has no area over 100-1,100, so that pair has n = 2
    full = got[got.labels == 1100]
    assert len(full) == 5 and not ((full.strategy == "new") & (full.seed == 2)).any()
    s = S.paired_summary(got, "ref").set_index(["labels_from", "labels"])
    assert (s.loc[(100, 1100), "n"], s.loc[(100, 1100), "n_reference"]) == (2, 3)
    assert s.loc[(100, 500), "n"] == 3
    md = S.delta_markdown(s.reset_index(), order=["new"])
    assert "| new | 100–1,100 |" in md and "| new | 300–300 |" in md


# ---------------------------------------------------------------------------- penalty matrix
def _penalty_study() -> pd.DataFrame:
    """A beats B clearly at 2 of the 3 label counts of setting noise 0 and ties at the third;
    C is B plus a tiny noise. At noise 0.1 (2 label counts) A beats B at one only, so P[A, B]
    over both settings = 2/3 + 1/2."""
    rng = np.random.default_rng(1)
    rows = []
    for noise, labels, wins in ((0.0, (100, 200, 300), (200, 300)), (0.1, (100, 200), (200,))):
        for x in labels:
            for seed in range(4):
                b = 0.6 + 0.05 * rng.normal()
                a = b + (0.1 + 0.002 * seed if x in wins else 0.0)
                c = b + 1e-4 * (seed - 1.5) * ((-1) ** seed)
                for st, v in (("A", a), ("B", b), ("C", c)):
                    rows.append({"dataset": "d", "noise": noise, "strategy": st, "seed": seed, "labels": x,
                                 "accuracy": v, "ece": 1 - v, "nll": 1.0, "brier": 1.0})
    return pd.DataFrame(rows)


def test_penalty_matrix_on_a_known_study():
    v = S.long_values(_penalty_study())
    pm = S.penalty_matrix(v[v.noise == 0.0], "accuracy")
    m = pm.matrix
    assert list(m.index) == list(m.columns) == ["A", "B", "C"]
    assert m.loc["A", "B"] == pytest.approx(2 / 3) and m.loc["A", "C"] == pytest.approx(2 / 3)
    assert m.loc["B", "A"] == 0.0 and m.loc["C", "A"] == 0.0 and m.loc["B", "C"] == 0.0
    assert all(math.isnan(m.iloc[i, i]) for i in range(3))
    assert pm.column_means["B"] == pytest.approx((2 / 3 + 0) / 2) and pm.column_means["A"] == 0.0
    assert pm.settings == 1 and (pm.n_min, pm.n_max) == (4, 4)
    # two settings: each label count weighs 1/(its setting's label counts)
    both = S.penalty_matrix(v, "accuracy", strategies=["B", "A", "C"])
    assert both.matrix.loc["A", "B"] == pytest.approx(2 / 3 + 1 / 2) and both.settings == 2
    assert list(both.matrix.index) == ["B", "A", "C"]
    # lower is better: ECE = 1 - accuracy, so A (lower ECE) still wins, not B
    ece = S.penalty_matrix(v[v.noise == 0.0], "ece")
    assert ece.matrix.loc["A", "B"] == pytest.approx(2 / 3) and ece.matrix.loc["B", "A"] == 0.0
    # cross-check one cell's test with scipy: A vs B at 200 labels, noise 0
    w = v[(v.noise == 0.0) & (v.labels == 200) & (v.metric == "accuracy")]
    w = w.pivot(index="seed", columns="strategy", values="value")
    assert sps.ttest_rel(w["A"], w["B"]).pvalue < 0.05
    md = S.penalty_markdown(pm)
    assert "Ash et al. 2020" in md and "| A | — | 0.67 | 0.67 |" in md and "**column mean**" in md
    with pytest.raises(S.StatsError, match=r"strategies \['Z'\] are not in the table"):
        S.penalty_matrix(v, "accuracy", strategies=["A", "Z"])


# ---------------------------------------------------------------------------- ranks, what n buys
def test_mean_ranks_direction_and_ties():
    # point 1: A best, B and C tie; point 2: C best, A second, B last (accuracy, ECE)
    points = {100: (("A", .9, .05), ("B", .8, .1), ("C", .8, .1)),
              200: (("A", .85, .2), ("B", .7, .3), ("C", .9, .1))}
    df = pd.DataFrame([{"dataset": "d", "noise": 0.0, "strategy": s, "seed": k, "labels": x, "accuracy": a,
                        "ece": e, "nll": 1.0, "brier": 1.0}
                       for x, rows in points.items() for k in range(2) for s, a, e in rows])
    v = S.long_values(df, ["accuracy", "ece"])
    per = S.ranks_per_point(v).set_index(["labels", "metric", "strategy"])["rank"]
    assert [per[(100, "accuracy", s)] for s in "ABC"] == [1.0, 2.5, 2.5]
    assert [per[(100, "ece", s)] for s in "ABC"] == [1.0, 2.5, 2.5]  # lower ECE ranks first
    assert [per[(200, "accuracy", s)] for s in "ABC"] == [2.0, 3.0, 1.0]
    r = S.mean_ranks(v).set_index(["metric", "strategy"])
    assert r.loc[("accuracy", "A"), "mean_rank"] == 1.5 and r.loc[("accuracy", "B"), "mean_rank"] == 2.75
    assert r.loc[("accuracy", "A"), "sd"] == pytest.approx(np.std([1, 2], ddof=1))
    q25, q75 = np.quantile([2.5, 3], [0.25, 0.75])
    assert r.loc[("accuracy", "B"), "iqr"] == pytest.approx(q75 - q25)
    assert (r["points"] == 2).all() and (r["of"] == 3).all()
    assert list(S.mean_ranks(v).query("metric == 'accuracy'").strategy) == ["A", "C", "B"]
    assert "| A | 1.50 |" in S.ranks_markdown(S.mean_ranks(v))


def test_what_n_buys_is_the_t_half_width():
    for n in (3, 5, 10):
        lo, hi = sps.t.interval(0.95, n - 1, loc=0.0, scale=0.02 / math.sqrt(n))
        assert S.half_width(0.02, n) == pytest.approx(hi, rel=1e-12)
    df = _rounds({**{("ref", i, 100): v for i, v in enumerate(REF)},
                  **{("new", i, 100): v for i, v in enumerate(NEW)}})
    s = S.paired_summary(S.long_values(df, ["accuracy"]), "ref")
    t = S.what_n_buys(s).iloc[0]
    assert t["sd_median"] == pytest.approx(s["sd"].iloc[0])
    assert t["hw3_median"] > t["hw5_median"] > t["hw10_median"]
    assert t["hw5_median"] == pytest.approx(sps.t.ppf(0.975, 4) * t["sd_median"] / math.sqrt(5))
    assert "±, n = 10" in S.n_buys_markdown(S.what_n_buys(s))


def test_delta_table_and_csv(tmp_path):
    df = _rounds({**{("ref", i, x): v + x / 1e4 for i, v in enumerate(REF) for x in (100, 200)},
                  **{("new", i, x): v + x / 1e4 for i, v in enumerate(NEW) for x in (100, 200)}})
    s = S.paired_summary(S.long_values(df, ["accuracy"]), "ref")
    every = S.paired_summary(S.long_values(df), "ref")
    assert list(dict.fromkeys(every["metric"])) == ["accuracy", "ece", "nll", "brier"]  # the paper's order
    md = S.delta_markdown(s)
    assert md.startswith("Δ = strategy − ref, paired by seed") and "95 % t-interval" in md
    r = s.iloc[0]
    cell = f"{100 * r['mean']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}] 3/5+"
    cell = cell.replace("-", "−")
    assert f"| new | 100 | {cell}" in md
    S.write_csv(s, tmp_path / "d.csv")
    back = pd.read_csv(tmp_path / "d.csv")
    np.testing.assert_allclose(back["ci_low"], s["ci_low"], rtol=1e-15)


# ---------------------------------------------------------------------------- figures
def _png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_difference_figure_bands_are_the_intervals(tmp_path):
    from asknlearn import stats_figures as F

    df = _curves(3)
    s = S.paired_summary(S.long_values(df, ["accuracy", "ece"]), "ref")
    fig = F.difference_figure(s)
    bands = {c.get_gid(): c for ax in fig.axes for c in ax.collections
             if (c.get_gid() or "").startswith("band:")}
    assert set(bands) == {"band:d:0:accuracy:new", "band:d:0:ece:new"}
    g = s[(s.metric == "accuracy") & (s.n >= 2)].sort_values("labels")
    vert = bands["band:d:0:accuracy:new"].get_paths()[0].vertices
    for x, lo, hi in zip(g["labels"], g["ci_low"], g["ci_high"], strict=True):
        ys = vert[np.isclose(vert[:, 0], x), 1]
        assert ys.min() == pytest.approx(100 * lo) and ys.max() == pytest.approx(100 * hi)
    zero = [line for ax in fig.axes for line in ax.get_lines() if list(line.get_ydata()) == [0, 0]]
    assert len(zero) == 2  # a zero line in each panel
    F.plot(fig, [tmp_path / "diff.png", tmp_path / "diff.pdf"])
    _png(tmp_path / "diff.png")
    assert (tmp_path / "diff.pdf").read_bytes()[:5] == b"%PDF-"


def test_penalty_and_rank_figures_render(tmp_path):
    from asknlearn import stats_figures as F

    v = S.long_values(_penalty_study())
    pm = S.penalty_matrix(v, "accuracy")
    fig = F.penalty_figure(pm)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "1.17" in texts and "—" in texts  # P[A, B] = 2/3 + 1/2; the diagonal
    assert any("Ash et al. 2020" in t.get_text() for t in fig.texts)
    F.plot(fig, [tmp_path / "penalty.png"])
    _png(tmp_path / "penalty.png")
    F.plot(F.rank_figure(S.mean_ranks(v)), [tmp_path / "ranks.png"])
    _png(tmp_path / "ranks.png")


def test_figures_never_write_through_a_planted_symlink(tmp_path):
    from asknlearn import stats_figures as F

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "fig.png"
    os.symlink(victim, out)
    v = S.long_values(_penalty_study())
    F.plot(F.rank_figure(S.mean_ranks(v)), [out])
    assert victim.read_text() == "keep me" and not out.is_symlink()
    _png(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    with pytest.raises(S.StatsError, match=r"valid: paths ending in \.png, \.pdf, \.svg"):
        F.save_figure(F.rank_figure(S.mean_ranks(v)), [tmp_path / "fig.jpg"])
    assert not (tmp_path / "fig.jpg").exists()
