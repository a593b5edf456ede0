"""Statistics shared by the parity tests: the chi-square tests of the randomized selectors."""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2_contingency, chisquare

# A parity test that compares distributions passes when p > P_MIN. Under the null hypothesis
# it then fails with probability 1e-4 per run (and the draws are seeded, so a given version
# either passes every time or fails every time); every negative control reaches p < 1e-12.
P_MIN = 1e-4


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


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
