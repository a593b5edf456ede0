"""TypiClust (Hacohen, Dekel & Weinshall 2022) against scikit-activeml
(skactiveml.pool.TypiClust), given the same clusters.

Both cluster [pool; labeled], visit clusters without labeled points largest first, and take
the most typical unlabeled point of each. The clustering is fixed on both sides (ours through
``ours.typiclust_picks_given_clusters``, the reference through its ``cluster_algo``), so what is
compared is the selection rule.

By design, ours follows the authors' code (avihu111/TypiClust) where the reference differs:
- clusters: ours min(M + b, 500) (the authors' MAX_NUM_CLUSTERS), the reference M + b;
- clusters of ≤ 5 points are dropped by ours (MIN_CLUSTER_SIZE), kept by the reference;
- covered clusters: ours visits clusters in the order (fewest labeled, largest) and cycles
  when b exceeds their number; the reference visits uncovered clusters only, once each, and
  then picks uniformly;
- typicality: ours 1 / (mean squared Euclidean distance to the min(20, size // 2) nearest
  others + 1e-5), as the authors' FAISS IndexFlatL2 code; the reference 1 / (mean Euclidean
  distance to the k = 5 (parameter) nearest others + 1e-7 / k), the formula of the paper.
  With one neighbour the two are monotone in each other and rank alike; with more they can
  differ. Ours is checked against the authors' convention in test_parity_faiss_typicality.py.
- ties (equal sizes, equal typicality): uniform in the reference, first index in ours.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skactiveml")
import ours  # noqa: E402
from skactiveml.pool import TypiClust  # noqa: E402
from skactiveml.pool._typi_clust import _typicality  # noqa: E402

SIZES = (90, 75, 60, 52, 46, 41)  # distinct, each > 40 so that ours uses 20 neighbours


def _blobs(seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(SIZES), 8)) * 6.0
    labels = np.repeat(np.arange(len(SIZES)), SIZES)
    x = centres[labels] + rng.normal(size=(len(labels), 8)) * rng.uniform(0.5, 2.0, len(labels))[:, None]
    perm = rng.permutation(len(labels))
    return x[perm], labels[perm]


def _fixed_clusterer(labels):
    class Fixed:
        def __init__(self, n_clusters, random_state=None):
            assert labels.max() < n_clusters
            self.n_clusters = n_clusters

        def fit_predict(self, x):
            return labels

    return Fixed


def _reference(pool, labeled, labels, b, k):
    x = np.concatenate([pool, labeled])
    y = np.concatenate([np.full(len(pool), np.nan), np.zeros(len(labeled))])
    algo = TypiClust(cluster_algo=_fixed_clusterer(labels), k=k, random_state=0)
    return np.asarray(algo.query(x, y, batch_size=b))


@pytest.mark.parametrize("n_labeled", [0, 2])
def test_typiclust_visits_the_same_clusters_in_the_same_order(n_labeled):
    x, labels = _blobs(0)
    # the labeled points: one in each of the two largest clusters, moved to the end
    lab_rows = [int(np.flatnonzero(labels == c)[0]) for c in range(n_labeled)]
    keep = np.setdiff1d(np.arange(len(x)), lab_rows)
    pool, labeled = x[keep], x[lab_rows]
    all_labels = np.concatenate([labels[keep], labels[lab_rows]])
    b = len(SIZES) - n_labeled  # one pick per uncovered cluster: where the rules coincide
    mine = ours.typiclust_picks_given_clusters(pool, labeled, all_labels, b)
    # k = 20: the authors' K_NN, which ours uses on clusters of more than 40 points
    ref = _reference(pool, labeled, all_labels, b, k=20)
    assert ref.max() < len(pool)
    np.testing.assert_array_equal(all_labels[mine], all_labels[ref])
    np.testing.assert_array_equal(all_labels[mine], np.arange(n_labeled, len(SIZES)))


def test_one_neighbour_typicality_equals_skactiveml_up_to_the_conventions():
    """With one neighbour, ours is 1/(d² + 1e-5) and the reference 1/(d + 1e-7) for the same
    nearest-neighbour distance d: mapped through that, the scores are equal (so they rank
    alike; mutual nearest neighbours tie on both sides)."""
    x, _ = _blobs(1)
    mine = ours.typicality_scores(x, 1)
    ref = _typicality(x, np.arange(len(x)), 1)
    d = np.sqrt(1.0 / mine - 1e-5)
    np.testing.assert_allclose(1.0 / (d + 1e-7), ref, rtol=1e-9)


def test_skactiveml_typicality_is_the_unsquared_mean_distance():
    """Pins the reference's convention stated above (the paper's formula), so that a change
    in it shows here."""
    x, _ = _blobs(2)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(2))
    np.fill_diagonal(d, np.inf)
    k = 5
    mean = np.sort(d, 1)[:, :k].mean(1)
    np.testing.assert_allclose(_typicality(x, np.arange(len(x)), k), 1.0 / (mean + 1e-7 / k),
                               rtol=1e-9)


@pytest.mark.parametrize(("n_pool", "n_labeled", "b", "expected"), [
    (300, 20, 30, 50),  # M + b: the reference's rule too
    (900, 450, 100, 500),  # capped at 500, as the authors' code; the reference would ask 550
])
def test_typiclust_cluster_count_is_the_authors_rule(n_pool, n_labeled, b, expected):
    assert ours.typiclust_cluster_count(n_pool, n_labeled, b) == expected
