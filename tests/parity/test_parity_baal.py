"""BALD and PowerBALD against baal (baal.active.heuristics), plus baal's Entropy, Margin and
Certainty as a second reference for the uncertainty scores.

baal takes predictions shaped [n_sample, n_class, n_iterations]; ours are (T, N, K), so the
tests transpose the same MC-dropout softmax outputs.

PowerBALD by design: baal's ``PowerSampling(BALD(), query_size, temperature)`` samples
∝ BALD^(1/temperature); ours (the paper, Kirsch et al.) samples ∝ BALD^β, so β = 1/temperature
(the default β = 1 = temperature 1 hides the difference; the tests use β = 2). baal draws with
numpy's global RNG (np.random.choice without replacement), ours by Gumbel-top-k from a torch
generator: the same distribution of ordered draws, different streams. Where fewer than b
points have positive BALD, baal falls back to uniform over the whole pool; ours takes every
positive point first and fills uniformly from the rest.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

heuristics = pytest.importorskip("baal.active.heuristics")
stochastics = pytest.importorskip("baal.active.heuristics.stochastics")

import ours  # noqa: E402
from parity_stats import P_MIN, counts_of, gof_p, homogeneity_p, softmax  # noqa: E402

B = 25


def _baal(mc: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(mc.transpose(1, 2, 0))


def test_bald_scores_equal_baal(mc_probs):
    ref = heuristics.BALD().get_uncertainties(_baal(mc_probs))
    mine = ours.bald(mc_probs)
    assert (mine[:10] < 1e-15).all()  # passes that agree: zero mutual information
    # ours is clamped at 0 (the estimate is ≥ 0 by Jensen; only rounding makes baal's negative)
    np.testing.assert_allclose(mine, np.maximum(ref, 0.0), rtol=1e-10, atol=1e-13)


def test_bald_picks_equal_baal_ranking(mc_probs):
    ranks = heuristics.BALD()(_baal(mc_probs))
    np.testing.assert_array_equal(ours.bald_picks(mc_probs, B), ranks[:B])


def test_uncertainty_scores_equal_baal(probs):
    """baal's single-pass heuristics on the same softmax rows (given as one pass)."""
    one = probs[:, :, None]
    k = probs.shape[1]
    # entropy: up to our 1e-12 clamp inside the log (test_parity_modal)
    np.testing.assert_allclose(ours.entropy_scores(probs),
                               heuristics.Entropy().get_uncertainties(one),
                               rtol=1e-12, atol=k * 1e-12 / np.e)
    np.testing.assert_array_equal(ours.max_prob_scores(probs),
                                  heuristics.Certainty().get_uncertainties(one))
    np.testing.assert_array_equal(ours.margin_picks(probs, B), heuristics.Margin()(one)[:B])


# ------------------------------------------------------------------ PowerBALD distribution
def _small_pool() -> np.ndarray:
    """(T, 6, 3) MC outputs whose BALD scores are spread over a factor of ~20."""
    rng = np.random.default_rng(3)
    t, n, k = 30, 6, 3
    mean = rng.normal(size=(1, n, k))
    noise = rng.normal(size=(t, n, k)) * np.array([0.3, 0.6, 1.0, 1.5, 2.0, 3.0])[None, :, None]
    return softmax(mean + noise)


PAIRS = list(itertools.permutations(range(6), 2))
DRAWS = 10_000


def _exact_first_two(scores: np.ndarray, beta: float) -> np.ndarray:
    """P(first draw i, second j) of successive sampling ∝ scores^β without replacement."""
    q = scores**beta / (scores**beta).sum()
    return np.array([q[i] * q[j] / (1 - q[i]) for i, j in PAIRS])


@pytest.fixture(scope="module")
def small():
    mc = _small_pool()
    scores = ours.bald(mc)
    assert scores.min() > 0 and scores.max() / scores.min() > 5
    mine = [tuple(ours.powerbald_picks(mc, 2, 2.0, seed)) for seed in range(DRAWS)]
    return mc, scores, mine


def _baal_draws(mc: np.ndarray, temperature: float, seed: int) -> list[tuple]:
    sampler = stochastics.PowerSampling(heuristics.BALD(), query_size=2, temperature=temperature)
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return [tuple(sampler.get_ranks(_baal(mc))[0]) for _ in range(DRAWS)]
    finally:
        np.random.set_state(state)


def test_powerbald_draws_follow_bald_to_the_beta(small):
    """Ours at β = 2: the ordered first two draws fit successive sampling ∝ BALD²."""
    mc, scores, mine = small
    counts = counts_of(mine, PAIRS)
    assert gof_p(counts, _exact_first_two(scores, 2.0)) > P_MIN


def test_powerbald_matches_baal_power_sampling_at_temperature_one_over_beta(small):
    mc, scores, mine = small
    theirs = _baal_draws(mc, temperature=0.5, seed=11)
    ct = counts_of(theirs, PAIRS)
    assert gof_p(ct, _exact_first_two(scores, 2.0)) > P_MIN
    assert homogeneity_p(counts_of(mine, PAIRS), ct) > P_MIN


def test_negative_control_temperature_equal_to_beta_is_rejected(small):
    """The test can fail: baal at temperature = β = 2 (∝ BALD^0.5) is not our β = 2."""
    mc, scores, mine = small
    theirs = _baal_draws(mc, temperature=2.0, seed=12)
    assert homogeneity_p(counts_of(mine, PAIRS),
                                counts_of(theirs, PAIRS)) < 1e-12
    assert gof_p(counts_of(theirs, PAIRS), _exact_first_two(scores, 2.0)) < 1e-12
