"""Inputs shared by the parity tests (docs/parity.md).

Each parity module skips (pytest.importorskip) when its reference package is not installed:
the default suite stays green without the ``parity`` extra. Our side is reached only through
``ours.py`` beside this file; the chi-square helpers are in ``parity_stats.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity_stats import softmax


@pytest.fixture
def probs() -> np.ndarray:
    """(500, 10) float64 softmax rows from near one-hot to near uniform, some with entries
    below 1e-12 and some with exact zeros."""
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
