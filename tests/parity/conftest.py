"""Inputs and statistics shared by the parity tests (docs/parity.md).

Each parity module skips (pytest.importorskip) when its reference package is not installed:
the default suite stays green without the ``parity`` extra. Our side is reached only through
``ours.py`` beside this file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.stats import chi2_contingency, chisquare

# A parity test that compares distributions passes when p > P_MIN. Under the null hypothesis
# it then fails with probability 1e-4 per run (and the draws are seeded, so a given version
# either passes every time or fails every time); every negative control reaches p < 1e-12.
P_MIN = 1e-4


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.fixture
def probs() -> np.ndarray:
    """(500, 10) float64 softmax rows of every shape a trained network gives: near one-hot,
    near uniform, two-way ties of the top classes, and rows with exact zeros."""
    rng = np.random.default_rng(20240611)
    n, k = 500, 10
    scale = rng.choice([0.3, 1.0, 3.0, 8.0], size=(n, 1))
    p = softmax(rng.normal(size=(n, k)) * scale)
    p[:20] = rng.dirichlet(np.full(k, 0.05), size=20)  # many entries underflow to ~0
    p[20:30, 5:] = 0.0  # exact zeros
    p[20:30] /= p[20:30].sum(1, keepdims=True)
    return p


@pytest.fixture
def mc_probs() -> np.ndarray:
    """(T=20, N=400, K=10) float64 softmax outputs of T stochastic passes: a per-point mean
    logit plus per-pass noise of a per-point size (0 for the first 10 rows: the passes agree
    and BALD is 0)."""
    rng = np.random.default_rng(7)
    t, n, k = 20, 400, 10
    mean = rng.normal(size=(1, n, k)) * rng.choice([0.5, 2.0, 5.0], size=(1, n, 1))
    noise = rng.normal(size=(t, n, k)) * rng.uniform(0.0, 3.0, size=(1, n, 1))
    noise[:, :10] = 0.0
    return softmax(mean + noise)


def counts_of(outcomes: list[tuple], categories: list[tuple]) -> np.ndarray:
    """How often each category occurs among ``outcomes`` (an outcome outside them is an error)."""
    index = {c: i for i, c in enumerate(categories)}
    out = np.zeros(len(categories), dtype=np.int64)
    for o in outcomes:
        out[index[o]] += 1
    return out


def gof_p(counts: np.ndarray, expected_probs: np.ndarray) -> float:
    """Chi-square goodness-of-fit p-value of ``counts`` against ``expected_probs``."""
    expected = expected_probs / expected_probs.sum() * counts.sum()
    return float(chisquare(counts, expected).pvalue)


def homogeneity_p(counts_a: np.ndarray, counts_b: np.ndarray) -> float:
    """Chi-square p-value that two samples of the same categories share one distribution."""
    table = np.vstack([counts_a, counts_b])
    table = table[:, table.sum(0) > 0]
    return float(chi2_contingency(table).pvalue)


@pytest.fixture
def stats() -> dict[str, Callable]:
    return {"counts": counts_of, "gof": gof_p, "homogeneity": homogeneity_p}
