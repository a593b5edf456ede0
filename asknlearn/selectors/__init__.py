"""Selectors: which b pool points to label next, from what :mod:`asknlearn.query` computed.

A selector is a small object with one ``select(pool, b, generator)`` method returning ``b``
distinct row indices into the pool. What it reads (``needs``) and the config keys it takes are
declared in its :data:`asknlearn.catalogue.SELECTORS` entry, not here; :mod:`asknlearn.query`
fills exactly those fields of :class:`Pool`. The simple scores and BADGE are in
:mod:`.simple`, the field's batch-AL baselines in :mod:`.baselines`. Importing this package does
not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch


@dataclass
class Pool:
    """What a selector may read about the unlabeled pool (row i = i-th unlabeled point)."""

    size: int
    probs: torch.Tensor | None = None  # (N, K) softmax
    features: torch.Tensor | None = None  # (N, D) penultimate z
    pseudo_labels: torch.Tensor | None = None  # (N,) ŷ
    stochastic_probs: torch.Tensor | None = None  # (T, N, K) softmax of T stochastic inferences
    labeled_features: torch.Tensor | None = None  # (M, D) penultimate z of the labeled set


class Selector(Protocol):
    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        """Return ``b`` distinct row indices into the pool (int64)."""
        ...
