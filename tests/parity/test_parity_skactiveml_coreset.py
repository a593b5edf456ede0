"""CoreSet (greedy k-center, Sener & Savarese 2018) against scikit-activeml
(skactiveml.pool.CoreSet, its ``k_greedy_center``), and least confidence, margin and entropy
against its ``uncertainty_scores``.

Greedy k-center is deterministic once a labeled set exists: each step takes the pool point
farthest (Euclidean) from every labeled and chosen point, so the ordered picks must be equal.
Ours ranks by squared distances, which has the same argmax. Without a labeled set both take a
uniform first point (ours from the torch generator, the reference from its RandomState) and are
deterministic after it.

By design: ties for the farthest point go to a uniformly drawn one of them in the reference,
to the first index in ours (the inputs here have none).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skactiveml")
import ours  # noqa: E402
from parity_stats import P_MIN, counts_of, gof_p  # noqa: E402
from skactiveml.pool import CoreSet  # noqa: E402
from skactiveml.pool._uncertainty_sampling import uncertainty_scores  # noqa: E402


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(12, d)) * 4.0
    return centres[rng.integers(12, size=n)] + rng.normal(size=(n, d))


def _reference(pool: np.ndarray, labeled: np.ndarray, b: int, seed: int = 0) -> np.ndarray:
    """The reference's picks, indices into ``pool`` (it is given [pool; labeled])."""
    x = np.concatenate([pool, labeled])
    y = np.concatenate([np.full(len(pool), np.nan), np.zeros(len(labeled))])
    return np.asarray(CoreSet(random_state=seed).query(x, y, batch_size=b))


@pytest.mark.parametrize("prune", [True, False])
@pytest.mark.parametrize("structure", ["clustered", "isotropic"])
def test_coreset_picks_equal_skactiveml_k_greedy_center(prune, structure):
    rng = np.random.default_rng(5)
    x = _clustered(600, 16, 1) if structure == "clustered" else rng.normal(size=(600, 16))
    pool, labeled = x[:540], x[540:]
    ref = _reference(pool, labeled, 40)
    assert ref.max() < len(pool)
    np.testing.assert_array_equal(ours.coreset_picks(pool, labeled, 40, seed=0, prune=prune), ref)


def test_coreset_without_labeled_set_equals_skactiveml_after_the_uniform_first_pick():
    """Given our (random) first pick as the reference's labeled set, the reference's picks
    are the rest of ours."""
    pool = _clustered(300, 8, 2)
    for seed in range(3):
        mine = ours.coreset_picks(pool, None, 20, seed=seed)
        x = pool
        y = np.full(len(pool), np.nan)
        y[mine[0]] = 0
        ref = np.asarray(CoreSet(random_state=seed).query(x, y, batch_size=19))
        np.testing.assert_array_equal(mine[1:], ref)


def test_coreset_first_pick_without_labeled_set_is_uniform():
    """The reference draws it uniformly (a random tie-break among equal distances); ours too."""
    pool = _clustered(10, 3, 3)
    firsts = [(int(ours.coreset_picks(pool, None, 2, seed=s)[0]),) for s in range(5000)]
    counts = counts_of(firsts, [(i,) for i in range(10)])
    assert gof_p(counts, np.ones(10)) > P_MIN
    # negative control: the same draws are not ∝ (index + 1)
    assert gof_p(counts, np.arange(1.0, 11.0)) < 1e-12


def test_uncertainty_scores_equal_skactiveml(probs):
    """least_confident = 1 − max p; margin_sampling = 1 − (p_(1) − p_(2)); entropy = −Σ p log p
    (ours up to the 1e-12 clamp inside the log, test_parity_modal)."""
    k = probs.shape[1]
    np.testing.assert_allclose(1.0 - ours.max_prob_scores(probs),
                               uncertainty_scores(probs, method="least_confident"),
                               rtol=0, atol=1e-15)
    np.testing.assert_allclose(ours.entropy_scores(probs),
                               uncertainty_scores(probs, method="entropy"),
                               rtol=1e-12, atol=k * 1e-12 / np.e)
    margin = uncertainty_scores(probs, method="margin_sampling")  # largest = most uncertain
    np.testing.assert_array_equal(ours.margin_picks(probs, 40),
                                  np.argsort(-margin, kind="stable")[:40])
