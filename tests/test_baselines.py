"""The baseline selectors (issue 15): the selector contract, and for each one a constructed
pool where the right pick is known and a plausible wrong implementation picks otherwise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scipy.stats import chisquare

from asknlearn.catalogue import BASELINE_SELECTORS, SELECTORS, load
from asknlearn.selectors import Pool
from asknlearn.selectors.baselines import (
    BALDSelector,
    CoresetSelector,
    MarginSelector,
    PowerBALDSelector,
    TypiclustSelector,
    bald_scores,
    k_center_greedy,
    power_sample,
)

REPO = Path(__file__).resolve().parents[1]


def full_pool(n: int = 60, k: int = 4, d: int = 5, t: int = 6, m: int = 7, seed: int = 0) -> Pool:
    """A pool with every field any selector may need, random but seeded."""
    g = torch.Generator().manual_seed(seed)
    pool = Pool(size=n, probs=torch.softmax(torch.randn(n, k, generator=g), 1),
                features=torch.relu(torch.randn(n, d, generator=g)))
    pool.pseudo_labels = pool.probs.argmax(1)
    pool.stochastic_probs = torch.softmax(torch.randn(t, n, k, generator=g) * 2, 2)
    pool.labeled_features = torch.relu(torch.randn(m, d, generator=g))
    return pool


def dense_k_center(x: torch.Tensor, centres: torch.Tensor, b: int) -> list[int]:
    """Reference greedy k-center: all distances recomputed from the full centre set each step,
    as explicit differences (no norm expansion, no blocks, no pruning)."""
    picks: list[int] = []
    cs = centres.clone()
    for _ in range(b):
        d = ((x[:, None, :] - cs[None, :, :]) ** 2).sum(2).min(1).values
        c = int(d.argmax())
        picks.append(c)
        cs = torch.cat([cs, x[c : c + 1]])
    return picks


# ---------------------------------------------------------------------------- contract
def test_registry_and_needs():
    assert set(BASELINE_SELECTORS) <= set(SELECTORS)
    classes = {load(SELECTORS[n].factory) for n in BASELINE_SELECTORS}
    assert classes == {MarginSelector, CoresetSelector, BALDSelector, PowerBALDSelector,
                       TypiclustSelector}
    # what each reads is its catalogue entry's needs (the loop computes exactly that)
    assert SELECTORS["bald"].needs == SELECTORS["powerbald"].needs == {"stochastic_probs"}


@pytest.mark.parametrize("name", list(BASELINE_SELECTORS))
@pytest.mark.parametrize("b", [1, 13, 60])
def test_each_selector_returns_b_distinct_int64_indices(name, b):
    pool = full_pool()
    picked = load(SELECTORS[name].factory)().select(pool, b, torch.Generator().manual_seed(1))
    assert picked.dtype == torch.int64 and picked.device.type == "cpu"
    assert picked.shape == (b,)
    assert len(set(picked.tolist())) == b
    assert int(picked.min()) >= 0 and int(picked.max()) < pool.size


@pytest.mark.parametrize("name", list(BASELINE_SELECTORS))
def test_bad_b_and_missing_fields_are_clear_errors(name):
    sel = load(SELECTORS[name].factory)()
    with pytest.raises(ValueError, match="b=61 must be in 1..60"):
        sel.select(full_pool(), 61, torch.Generator())
    field = sorted(SELECTORS[name].needs - {"labeled_features"})[0]
    pool = full_pool()
    setattr(pool, field, None)
    with pytest.raises(ValueError, match=f"pool.{field} is missing"):
        sel.select(pool, 3, torch.Generator())


# ---------------------------------------------------------------------------- margin
def test_margin_picks_the_smallest_top2_gap_not_the_least_confident():
    probs = torch.tensor([
        [0.50, 0.49, 0.01],  # gap 0.01
        [0.40, 0.30, 0.30],  # gap 0.10, yet the least confident and of highest entropy
        [0.90, 0.05, 0.05],
        [0.46, 0.43, 0.11],  # gap 0.03
        [0.70, 0.20, 0.10],
    ])
    picked = MarginSelector().select(Pool(size=5, probs=probs), 2, torch.Generator())
    assert picked.tolist() == [0, 3]


# ---------------------------------------------------------------------------- coreset
def line_points() -> torch.Tensor:
    pos = torch.tensor([0.0, 1.0, 3.0, 4.5, 7.0, 9.5, 10.0], dtype=torch.float64)
    return torch.stack([pos, torch.zeros_like(pos)], 1)


@pytest.mark.parametrize("prune", [True, False])
def test_coreset_on_a_line_takes_the_farthest_point_each_time(prune):
    x = line_points()
    g = torch.Generator()
    # from a labeled point at 0: 10 (distance 10), then 4.5 (4.5 from 0), then 7 (2.5 from 4.5)
    assert k_center_greedy(x, x[:1], 3, g, prune=prune).tolist() == [6, 3, 4]
    # the labeled set decides: from a labeled point at 10 the first pick is 0
    assert k_center_greedy(x, x[6:], 2, g, prune=prune).tolist() == [0, 3]
    pool = Pool(size=7, features=x)
    pool.labeled_features = x[:1]
    assert CoresetSelector(prune=prune).select(pool, 3, g).tolist() == [6, 3, 4]


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("clustered", [True, False])
def test_blocked_coreset_equals_the_dense_reference(prune, clustered):
    g = torch.Generator().manual_seed(3)
    n, d = 400, 6
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if clustered:  # tight clusters: the pruning bound then skips most points
        x = x * 0.05 + 4.0 * torch.randn(8, d, generator=g, dtype=torch.float64)[
            torch.randint(8, (n,), generator=g)]
    labeled = x[:30] + 0.01
    stats: dict = {}
    ours = k_center_greedy(x, labeled, 60, torch.Generator(), prune=prune, block=37, stats=stats)
    assert ours.tolist() == dense_k_center(x, labeled, 60)
    if prune and clustered:
        assert stats["rows_read"] < 0.5 * n * 59  # pruning really skips points
    if not prune:
        assert stats["rows_read"] == n * 59


def test_coreset_pruned_and_full_agree_in_float32():
    g = torch.Generator().manual_seed(4)
    x = torch.relu(torch.randn(3000, 32, generator=g))
    lab = torch.relu(torch.randn(50, 32, generator=g))
    a = k_center_greedy(x, lab, 200, torch.Generator(), prune=True)
    b = k_center_greedy(x, lab, 200, torch.Generator(), prune=False)
    assert a.tolist() == b.tolist()


def test_coreset_without_labeled_set_starts_from_the_generator():
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    first = int(torch.randint(100, (1,), generator=torch.Generator().manual_seed(9)))
    for prune in (True, False):
        picks = k_center_greedy(x, None, 10, torch.Generator().manual_seed(9), prune=prune)
        assert int(picks[0]) == first
        assert picks[1:].tolist() == dense_k_center(x, x[first : first + 1], 9)


@pytest.mark.parametrize("prune", [True, False])
def test_coreset_fills_with_distinct_points_when_only_duplicates_remain(prune):
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    picks = k_center_greedy(x, x[:1], 5, torch.Generator().manual_seed(0), prune=prune)
    assert int(picks[0]) in (1, 2, 4)  # a point at distance 1 first
    assert sorted(picks.tolist()) == [0, 1, 2, 3, 4]


def test_coreset_rejects_labeled_features_of_another_width():
    with pytest.raises(ValueError, match=r"valid: \(M, 2\)"):
        k_center_greedy(torch.zeros(5, 2), torch.zeros(3, 4), 2, torch.Generator())


# ---------------------------------------------------------------------------- BALD
def disagreement_pool() -> tuple[torch.Tensor, set[int]]:
    """(T, N, K) passes: rows 2 and 5 flip between two confident classes from pass to pass
    (high mutual information, mean prediction of entropy ≈ log 2); rows 0, 3 are uniform in
    every pass (maximal entropy log 4, zero mutual information); the rest are confident and
    agree."""
    t, n, k = 8, 8, 4
    sp = torch.full((t, n, k), 0.01)
    sp[:, :, 0] = 0.97
    sp[:, [0, 3], :] = 0.25
    for row in (2, 5):
        sp[:, row, :] = 0.01
        sp[torch.arange(t), row, torch.arange(t) % 2] = 0.97
    return sp, {2, 5}


def test_bald_picks_disagreeing_passes_not_uniform_uncertainty():
    sp, want = disagreement_pool()
    scores = bald_scores(sp)
    assert scores[[0, 3]].max() < 1e-12  # uniform and agreeing: zero mutual information
    pool = Pool(size=8, probs=sp.mean(0))
    pool.stochastic_probs = sp
    picked = BALDSelector().select(pool, 2, torch.Generator())
    assert set(picked.tolist()) == want
    # the mean prediction's entropy alone (max-entropy selection) would have taken 0 and 3
    h = torch.special.entr(sp.mean(0)).sum(1)
    assert set(torch.topk(h, 2).indices.tolist()) == {0, 3}


def test_bald_scores_match_a_loop_over_passes_and_chunks_do_not_matter():
    sp = full_pool(n=100, t=5).stochastic_probs
    mean = sp.double().mean(0)
    want = -(mean * mean.log()).sum(1)
    for t in range(len(sp)):
        p = sp[t].double()
        want += (p * p.log()).sum(1) / len(sp)
    torch.testing.assert_close(bald_scores(sp), want.clamp_min(0), rtol=0, atol=1e-12)
    torch.testing.assert_close(bald_scores(sp, chunk=7), bald_scores(sp), rtol=0, atol=1e-15)


# ---------------------------------------------------------------------------- PowerBALD
def test_powerbald_is_reproducible_and_random():
    pool = full_pool(n=200)
    a = PowerBALDSelector().select(pool, 20, torch.Generator().manual_seed(7))
    b = PowerBALDSelector().select(pool, 20, torch.Generator().manual_seed(7))
    c = PowerBALDSelector().select(pool, 20, torch.Generator().manual_seed(8))
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 20


def test_power_sample_first_draw_is_proportional_to_the_score():
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 0.0])
    draws = 4000
    counts = torch.zeros(5)
    for seed in range(draws):
        counts[power_sample(scores, 1, 1.0, torch.Generator().manual_seed(seed))] += 1
    assert counts[4] == 0  # a zero score is never drawn while positive ones remain
    assert chisquare(counts[:4].numpy(), (scores[:4] / 10 * draws).numpy()).pvalue > 1e-3


def test_powerbald_favours_high_bald_rows_but_is_not_top_b():
    sp, high = disagreement_pool()
    # 40 rows: the two disagreeing rows repeated (high BALD), the rest mildly disagreeing
    rows = torch.tensor([2, 5] * 5 + [1] * 30)
    sp = sp[:, rows].clone()
    sp[::2, 10:, :] = torch.tensor([0.9, 0.08, 0.01, 0.01])
    pool = Pool(size=40)
    pool.stochastic_probs = sp
    scores = bald_scores(sp)
    assert scores[:10].min() > 20 * scores[10:].max() > 0
    frac = [(PowerBALDSelector().select(pool, 10, torch.Generator().manual_seed(s)) < 10)
            .float().mean().item() for s in range(200)]
    mean = sum(frac) / len(frac)
    assert 0.75 < mean < 0.95  # mostly high-BALD rows (≈ 0.85), a sample, not BALD's top-10
    uniform = [(PowerBALDSelector(beta=0.0).select(pool, 10, torch.Generator().manual_seed(s))
                < 10).float().mean().item() for s in range(200)]
    assert abs(sum(uniform) / len(uniform) - 0.25) < 0.05  # β = 0: uniform, 10 of 40 rows


def test_powerbald_rejects_a_negative_beta():
    with pytest.raises(ValueError, match="beta=-1"):
        PowerBALDSelector(beta=-1)


# ---------------------------------------------------------------------------- TypiClust
def reference_typicality(x: torch.Tensor, nn: int) -> torch.Tensor:
    """1 / (mean squared distance to the nn nearest other points + 1e-5), by sorting."""
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(2)
    return 1.0 / (d2.sort(1).values[:, 1 : nn + 1].mean(1) + 1e-5)


def test_typiclust_takes_the_most_typical_point_of_uncovered_clusters_largest_first():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], dtype=torch.float64)
    sizes = (30, 40, 20)  # blob 0 holds the labeled points; 1 is larger than 2
    blobs = [c + torch.randn(s, 2, generator=g, dtype=torch.float64)
             for c, s in zip(centres, sizes, strict=True)]
    x = torch.cat(blobs)
    pool = Pool(size=len(x), features=x)
    pool.labeled_features = centres[:1] + 0.1 * torch.randn(3, 2, generator=g, dtype=torch.float64)
    picked = TypiclustSelector(n_clusters=3).select(pool, 3, torch.Generator().manual_seed(1))
    start = [0, 30, 70, 90]
    want = []
    for blob in (1, 2, 0):  # uncovered blobs first, larger first; the labeled blob last
        members = x[start[blob] : start[blob + 1]]
        want.append(start[blob] + int(reference_typicality(members, min(20, len(members) // 2)).argmax()))
    assert picked.tolist() == want
    # the next round visits the same order: a second point from the largest uncovered blob
    four = TypiclustSelector(n_clusters=3).select(pool, 4, torch.Generator().manual_seed(1))
    assert four[:3].tolist() == want and 30 <= int(four[3]) < 70


def test_typiclust_fills_at_random_when_every_cluster_is_too_small():
    pool = full_pool(n=12)
    picked = TypiclustSelector().select(pool, 10, torch.Generator().manual_seed(0))
    assert len(set(picked.tolist())) == 10


# ---------------------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_bench_selectors_quick(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_selectors.py"), "--quick", "--threads",
         "1", "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "selectors.json").read_text())
    assert doc["benchmark"] == "selectors" and doc["quick"] is True
    r = doc["results"]
    for pool in ("clustered", "isotropic"):
        c = r["coreset"][pool]
        assert c["ours"]["seconds"] > 0 and c["full_pass"]["seconds"] > 0
        # every contender takes the same points
        assert c["full_pass"]["same_picks"] and c["distil"]["same_picks"]
    assert r["bald"]["loop_over_T"]["max_abs_diff"] < 1e-9
    for t in doc["targets"]:
        assert f"target {t['name']}:" in proc.stdout
