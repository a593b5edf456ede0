"""TypiClust against the authors' convention (avihu111/TypiClust), with FAISS (faiss-cpu) for
the nearest neighbours as in their code.

The authors compute typicality as 1 / (mean of the squared L2 distances that FAISS's
IndexFlatL2 returns for the k nearest other points + 1e-5), with k = min(20, size // 2) among
a cluster's unlabeled points, and visit clusters of more than 5 points in the order (fewest
labeled, largest), cycling. ``_authors_rule`` restates that rule (pandas ordering, FAISS
distances) independently of our code; ours must pick the same points in the same order.
The paper's formula and scikit-activeml use unsquared distances instead
(test_parity_skactiveml_typiclust.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

faiss = pytest.importorskip("faiss")

import ours  # noqa: E402

# the authors' constants (their TypiClust class), stated here independently of ours
MIN_CLUSTER_SIZE = 5
K_NN = 20


def _faiss_typicality(x: np.ndarray, k: int) -> np.ndarray:
    f = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatL2(f.shape[1])
    index.add(f)
    dist, _ = index.search(f, k + 1)  # the nearest is the point itself
    return 1.0 / (dist[:, 1:].mean(1) + 1e-5)


def test_typicality_equals_faiss_squared_l2():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32).astype(np.float64)
    for k in (1, 5, 20):
        mine = ours.typicality_scores(x, k)
        np.testing.assert_allclose(mine, _faiss_typicality(x, k), rtol=1e-5)
        assert mine.argmax() == _faiss_typicality(x, k).argmax()


def _authors_rule(pool, labels_all, n_pool, b):
    """The authors' selection given clusters (labels of [pool; labeled])."""
    ids, sizes = np.unique(labels_all, return_counts=True)
    existing = np.bincount(labels_all[n_pool:], minlength=ids.max() + 1)[ids]
    df = pd.DataFrame({"cluster_id": ids, "cluster_size": sizes, "existing_count": existing,
                       "neg_cluster_size": -sizes})
    df = df[df.cluster_size > MIN_CLUSTER_SIZE]
    df = df.sort_values(["existing_count", "neg_cluster_size"])
    free = labels_all[:n_pool].copy()
    picks = []
    for i in range(b):
        cluster = df.iloc[i % len(df)].cluster_id
        members = np.flatnonzero(free == cluster)
        typ = _faiss_typicality(pool[members], min(K_NN, len(members) // 2))
        picks.append(int(members[typ.argmax()]))
        free[picks[-1]] = -1
    return np.array(picks)


def test_typiclust_picks_equal_the_authors_rule_given_clusters():
    """Clusters of 4 (dropped), 12 and 30-80 points; labeled points in three clusters, so the
    order is by labeled count then size; b = 20 > 6 eligible clusters, so it cycles."""
    rng = np.random.default_rng(1)
    sizes = [80, 64, 50, 41, 30, 12, 4]
    centres = rng.normal(size=(len(sizes), 10)) * 5.0
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = (centres[labels] + rng.normal(size=(len(labels), 10))).astype(np.float32).astype(np.float64)
    perm = rng.permutation(len(labels))
    x, labels = x[perm], labels[perm]
    lab_rows = np.concatenate([np.flatnonzero(labels == 0)[:3], np.flatnonzero(labels == 1)[:1],
                               np.flatnonzero(labels == 4)[:1]])
    keep = np.setdiff1d(np.arange(len(x)), lab_rows)
    pool, labeled = x[keep], x[lab_rows]
    labels_all = np.concatenate([labels[keep], labels[lab_rows]])
    mine = ours.typiclust_picks_given_clusters(pool, labeled, labels_all, 20)
    np.testing.assert_array_equal(mine, _authors_rule(pool, labels_all, len(pool), 20))
    assert 6 not in set(labels_all[mine])  # the cluster of 4 is never visited
