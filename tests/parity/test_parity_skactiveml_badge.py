"""BADGE against scikit-activeml (skactiveml.pool.Badge).

Both build the gradient embedding g = (p − e_ŷ) ⊗ z of the argmax pseudo-label ŷ (Ash et al.,
eq. 4 of the Ask-n-Learn paper) and seed k-means++ on it: the first centre is the point of
largest ‖g‖, every next one is drawn ∝ D², its squared distance to the nearest centre. The
first pick is deterministic and must be equal; the later ones are compared as distributions.

By design of the reference: scikit-activeml keeps the origin as an implicit centre (its D²
after the first centre c is min(‖g‖², ‖g − g_c‖²)); BADGE's code and ours do not. The
distribution is therefore compared on embeddings far from the origin, where the two rules
coincide, and the difference itself is pinned by a test.

The reference distribution is scikit-activeml's own: its ``utilities`` are the D² sampling
probabilities of each step. To read the third step's probabilities after a given second
pick, the reference is run with a RandomState whose ``choice`` returns that pick (its D²
bookkeeping is untouched). Ours is sampled over many seeds; a chi-square test compares.
Badge is slow per call (a quarter second here), so the reference is never sampled.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skactiveml")
import ours  # noqa: E402
from parity_stats import P_MIN, counts_of, gof_p, softmax  # noqa: E402
from skactiveml.base import SkactivemlClassifier  # noqa: E402
from skactiveml.pool import Badge  # noqa: E402


class _Given(SkactivemlClassifier):
    """A 'classifier' that returns given softmax rows and features for the row index in X[:, 0]."""

    def __init__(self, probs=None, feats=None, classes=None, missing_label=np.nan):
        super().__init__(classes=classes, missing_label=missing_label)
        self.probs = probs
        self.feats = feats

    def fit(self, X, y, sample_weight=None):
        return self

    def predict_proba(self, X, **kwargs):
        rows = X[:, 0].astype(int)
        return self.probs[rows], self.feats[rows]


class _Forced(np.random.RandomState):
    """Returns the given indices from ``choice`` (the D² draws of Badge), in order."""

    def __init__(self, picks):
        super().__init__(0)
        self.picks = list(picks)

    def choice(self, a, size=None, replace=True, p=None):
        return np.array([self.picks.pop(0)])


class _ForcedBadge(Badge):
    """Badge whose D² draws return ``forced`` (Badge deep-copies a given RandomState, which
    would lose the subclass, so the draws are replaced after its input checks)."""

    forced: tuple = ()

    def _validate_data(self, *args, **kwargs):
        out = super()._validate_data(*args, **kwargs)
        self.random_state_ = _Forced(self.forced)
        return out


def _reference(probs, feats, b, forced=()):
    """The reference's picks and its (b, N) utilities: row t holds the probabilities of step
    t's draw (nan for chosen points, here 0)."""
    n = len(probs)
    clf = _Given(probs, feats, classes=np.arange(probs.shape[1]))
    badge = _ForcedBadge()
    badge.forced = tuple(forced) + (0,) * b
    picks, util = badge.query(np.arange(n, dtype=float)[:, None], np.full(n, np.nan), clf,
                              fit_clf=False, batch_size=b, return_utilities=True)
    return np.asarray(picks), np.nan_to_num(util)


def _pool(n: int, k: int = 4, d: int = 5, seed: int = 0):
    """General softmax rows and ReLU-like features."""
    rng = np.random.default_rng(seed)
    probs = softmax(rng.normal(size=(n, k)) * rng.uniform(0.5, 3.0, size=(n, 1)))
    feats = np.maximum(rng.normal(size=(n, d)), 0.0) + 0.1
    return probs, feats


def _far_pool(n: int, k: int = 4, d: int = 5, seed: int = 0):
    """Rows of one pseudo-class and features near one direction: gradient embeddings in a
    cluster far from the origin, every point nearer to every other than to 0, so that the
    reference's implicit origin centre never counts
    (test_skactiveml_keeps_the_origin_as_a_centre_and_ours_follows_badge)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 0.3
    logits[:, 0] += 1.5
    probs = softmax(logits)
    feats = 1.0 + 0.25 * rng.normal(size=(n, d))
    return probs, feats


def _embeddings(probs, feats):
    u = probs - np.eye(probs.shape[1])[probs.argmax(1)]
    return (u[:, :, None] * feats[:, None, :]).reshape(len(u), -1)


@pytest.mark.parametrize("pool", [_pool, _far_pool])
def test_first_pick_is_the_largest_gradient_norm_as_in_skactiveml(pool):
    probs, feats = pool(200, k=10, d=16, seed=1)
    ref, _ = _reference(probs, feats, 1)
    for seed in range(3):
        assert ours.badge_picks(probs, feats, 1, seed)[0] == ref[0]


N_SMALL = 8
DRAWS = 4_000


def _exact_pairs(probs, feats):
    """Every ordered (2nd, 3rd) pick pair and its probability from the reference's utilities."""
    picks, util = _reference(probs, feats, 2)
    first = int(picks[0])
    pairs, exact = [], []
    for j in range(N_SMALL):
        if j == first:
            continue
        _, u = _reference(probs, feats, 3, forced=[j])
        np.testing.assert_allclose(u[1], util[1])
        for k in range(N_SMALL):
            if k not in (first, j):
                pairs.append((j, k))
                exact.append((util[1][j], u[2][k]))
    return first, pairs, np.array(exact)


def _our_pairs(probs, feats, first):
    draws = [ours.badge_picks(probs, feats, 3, seed) for seed in range(DRAWS)]
    assert all(d[0] == first for d in draws)
    return [(int(d[1]), int(d[2])) for d in draws]


@pytest.fixture(scope="module")
def far():
    probs, feats = _far_pool(N_SMALL, seed=2)
    g = _embeddings(probs, feats)
    dist2 = ((g[:, None] - g[None]) ** 2).sum(2)
    assert (dist2 < (g * g).sum(1)[:, None]).all()  # the origin is nobody's nearest centre
    first, pairs, exact = _exact_pairs(probs, feats)
    return pairs, exact, _our_pairs(probs, feats, first)


def test_second_and_third_picks_follow_skactiveml_d2_probabilities(far):
    pairs, exact, mine = far
    p = exact.prod(1)
    assert abs(p.sum() - 1.0) < 1e-9
    assert gof_p(counts_of(mine, pairs), p) > P_MIN


def test_negative_control_d_instead_of_d2_is_rejected(far):
    """The test can fail: the same draws against sampling ∝ D (not D²) at each step."""
    pairs, exact, mine = far
    step2 = {}
    for (j, _), (p2, _) in zip(pairs, exact, strict=True):
        step2[j] = p2
    norm2 = sum(np.sqrt(v) for v in step2.values())
    # ∝ D at step 3 after j: sqrt of the reference's D² probabilities, renormalized per j
    norm3 = {}
    for (j, _), (_, p3) in zip(pairs, exact, strict=True):
        norm3[j] = norm3.get(j, 0.0) + np.sqrt(p3)
    d_exact = np.array([np.sqrt(p2) / norm2 * np.sqrt(p3) / norm3[j]
                        for (j, _), (p2, p3) in zip(pairs, exact, strict=True)])
    assert abs(d_exact.sum() - 1.0) < 1e-9
    assert gof_p(counts_of(mine, pairs), d_exact) < 1e-12


def test_skactiveml_keeps_the_origin_as_a_centre_and_ours_follows_badge():
    """By design of the reference, not ours: scikit-activeml starts its running D² at ‖g‖²
    (the first step's score), so after the first centre c its D² is min(‖g‖², ‖g − g_c‖²), as
    if the origin were a centre. BADGE's code (Ash et al., ``init_centers``) and ours use
    ‖g − g_c‖² alone. On general embeddings the two differ; ours is checked against the
    reference where they agree (``far``) and against the dense BADGE rule in
    tests/test_kmeanspp.py."""
    probs, feats = _pool(N_SMALL, seed=2)
    g = _embeddings(probs, feats)
    picks, util = _reference(probs, feats, 2)
    c = int(picks[0])
    to_c = ((g - g[c]) ** 2).sum(1)
    with_origin = np.minimum((g * g).sum(1), to_c)
    np.testing.assert_allclose(util[1], with_origin / with_origin.sum(), rtol=1e-9, atol=1e-15)
    assert not np.allclose(with_origin / with_origin.sum(), to_c / to_c.sum(), atol=1e-3)

