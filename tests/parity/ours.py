"""The one place the parity tests reach into asknlearn.

Every parity test calls our selectors and scores through these small functions, numpy in and
numpy out, so that moving a selector inside the package means editing this file only. Each
function builds the pool the selector reads (:class:`asknlearn.selectors.Pool`) and a
``torch.Generator`` seeded from an int where the selector draws.
"""

from __future__ import annotations

from contextlib import contextmanager
from unittest import mock

import numpy as np
import torch

from asknlearn.selectors import Pool, baselines
from asknlearn.selectors.baselines import (
    BALDSelector,
    CoresetSelector,
    MarginSelector,
    PowerBALDSelector,
    TypiclustSelector,
    bald_scores,
    typicality,
)
from asknlearn.selectors.simple import ConfidenceSelector, EntropySelector, GradientKMeansPP


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


# ------------------------------------------------------------------ uncertainty scores
def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """H(p) per row, the score the entropy selector ranks by (largest first)."""
    return EntropySelector.score(_t(probs)).numpy()


def max_prob_scores(probs: np.ndarray) -> np.ndarray:
    """max_k p_k per row, the score least confidence ranks by (smallest first)."""
    return ConfidenceSelector.score(_t(probs)).numpy()


def entropy_picks(probs: np.ndarray, b: int) -> np.ndarray:
    return EntropySelector().select(Pool(len(probs), probs=_t(probs)), b, _gen(0)).numpy()


def least_confidence_picks(probs: np.ndarray, b: int) -> np.ndarray:
    return ConfidenceSelector().select(Pool(len(probs), probs=_t(probs)), b, _gen(0)).numpy()


def margin_picks(probs: np.ndarray, b: int) -> np.ndarray:
    """Margin's b picks in rank order (smallest p_(1) − p_(2) first); the selector exposes no
    separate score function."""
    return MarginSelector().select(Pool(len(probs), probs=_t(probs)), b, _gen(0)).numpy()


# ------------------------------------------------------------------ BALD, PowerBALD
def bald(stochastic_probs: np.ndarray) -> np.ndarray:
    """BALD mutual information per pool row from (T, N, K) MC-dropout softmax outputs."""
    return bald_scores(_t(stochastic_probs)).numpy()


def bald_picks(stochastic_probs: np.ndarray, b: int) -> np.ndarray:
    sp = _t(stochastic_probs)
    return BALDSelector().select(Pool(sp.shape[1], stochastic_probs=sp), b, _gen(0)).numpy()


def powerbald_picks(stochastic_probs: np.ndarray, b: int, beta: float, seed: int) -> np.ndarray:
    """PowerBALD's b draws, in the order drawn (Gumbel-top-k keys sorted largest first)."""
    sp = _t(stochastic_probs)
    return PowerBALDSelector(beta).select(Pool(sp.shape[1], stochastic_probs=sp), b,
                                          _gen(seed)).numpy()


# ------------------------------------------------------------------ BADGE
def badge_picks(probs: np.ndarray, features: np.ndarray, b: int, seed: int) -> np.ndarray:
    """BADGE's k-means++ picks on the gradient embeddings of the argmax pseudo-labels (the
    ``badge`` strategy), in the order chosen."""
    p, z = _t(probs), _t(features)
    pool = Pool(len(p), probs=p, features=z, pseudo_labels=p.argmax(1))
    return GradientKMeansPP().select(pool, b, _gen(seed)).numpy()


# ------------------------------------------------------------------ CoreSet
def coreset_picks(features: np.ndarray, labeled_features: np.ndarray | None, b: int, seed: int,
                  prune: bool | None = None) -> np.ndarray:
    """Greedy k-center picks in the order taken."""
    z = _t(features)
    lab = None if labeled_features is None else _t(labeled_features)
    pool = Pool(len(z), features=z, labeled_features=lab)
    return CoresetSelector(prune=prune).select(pool, b, _gen(seed)).numpy()


# ------------------------------------------------------------------ TypiClust
def typicality_scores(x: np.ndarray, neighbours: int) -> np.ndarray:
    """TypiClust's typicality of each row of ``x`` among the other rows."""
    return typicality(_t(x), neighbours).numpy()


@contextmanager
def _fixed_clusters(labels: np.ndarray | None, requested: list[int]):
    """TypiClust with its k-means replaced: ``labels`` (over pool rows then labeled rows) are
    returned as the clustering, and the number of clusters asked for is recorded."""

    def fake_kmeans(x, k, generator, **kwargs):
        requested.append(int(k))
        if labels is None:
            return torch.arange(len(x)) % k
        return torch.as_tensor(labels, dtype=torch.long)

    with mock.patch.object(baselines, "kmeans", fake_kmeans):
        yield


def typiclust_picks_given_clusters(features: np.ndarray, labeled_features: np.ndarray | None,
                                   labels: np.ndarray, b: int, seed: int = 0) -> np.ndarray:
    """TypiClust's picks (in order) when the clustering of [pool; labeled] is ``labels``."""
    z = _t(features)
    lab = None if labeled_features is None else _t(labeled_features)
    with _fixed_clusters(labels, []):
        return TypiclustSelector().select(Pool(len(z), features=z, labeled_features=lab), b,
                                          _gen(seed)).numpy()


def typiclust_cluster_count(n_pool: int, n_labeled: int, b: int) -> int:
    """The number of clusters TypiClust asks its k-means for, on a pool of ``n_pool`` points
    with ``n_labeled`` labeled ones and budget ``b``."""
    requested: list[int] = []
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n_pool, 3, generator=g, dtype=torch.float64)
    lab = torch.randn(n_labeled, 3, generator=g, dtype=torch.float64)
    with _fixed_clusters(None, requested):
        TypiclustSelector().select(Pool(n_pool, features=z, labeled_features=lab), b, _gen(0))
    return requested[0]
