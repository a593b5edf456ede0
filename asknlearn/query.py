"""One query step's inputs: what a selector reads about the pool, computed exactly as it needs.

The loop (:mod:`asknlearn.loop`) and the Python API (:func:`asknlearn.api.select`) both build
a selector's :class:`~asknlearn.selectors.Pool` here, so a round of the benchmark and a call
of ``select`` compute the same things the same way: the softmax p, the penultimate features z
of eq. 4, the pseudo-labels ŷ (argmax or Algorithm 1's refinement), the T stochastic inferences
(MC dropout / stochastic depth) and the labeled set's features; then the selector picks b rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asknlearn.inference import predict
from asknlearn.selectors import Pool


@torch.no_grad()
def stochastic_probs(model, x: torch.Tensor, samples: int, batch_size: int) -> torch.Tensor:
    """(T, N, K) softmax of ``samples`` stochastic inferences of ``model`` on ``x`` (eval-mode
    batch norm, dropout on), in chunks of one T·chunk batch each. The one place the T passes
    of eq. 2, BALD and the α diagnostics are computed."""
    model.eval()
    per = max(1, batch_size // samples)
    return torch.cat([torch.softmax(model.stochastic_logits(x[s : s + per], samples), dim=-1)
                      for s in range(0, len(x), per)], dim=1)


@dataclass
class Query:
    """A built pool and what the pseudo-labeller refined (None: it was not run)."""

    pool: Pool
    refined: torch.Tensor | None = None


def build_pool(model, x: torch.Tensor, needs: frozenset[str], *, labeled_x: torch.Tensor,
               labeler, generator: torch.Generator, batch_size: int, samples: int) -> Query:
    """The pool fields a selector ``needs`` (:data:`asknlearn.catalogue.POOL_FIELDS`) for the
    unlabeled images ``x``: p and z in one pass, the T stochastic inferences, the labeled set's
    z (``labeled_x``, may be empty) and the pseudo-labels of ``labeler`` drawn from
    ``generator``."""
    pool = Pool(size=len(x))
    if needs & {"probs", "features", "pseudo_labels"}:
        pool.probs, pool.features = predict(model, x, batch_size, features="features" in needs)
    if "stochastic_probs" in needs:
        pool.stochastic_probs = stochastic_probs(model, x, samples, batch_size)
    if "labeled_features" in needs:
        pool.labeled_features = (
            predict(model, labeled_x, batch_size, features=True)[1] if len(labeled_x)
            else torch.zeros(0, model.feat_dim, device=x.device))
    refined = None
    if "pseudo_labels" in needs:
        pool.pseudo_labels, refined = labeler(model, x, pool.probs, generator, batch_size)
    return Query(pool, refined)


def check_rows(rows: torch.Tensor, b: int, selector: str) -> torch.Tensor:
    """A selector's answer on the CPU, checked: exactly ``b`` distinct row indices."""
    rows = rows.cpu()
    if len(rows) != b or len(torch.unique(rows)) != len(rows):
        raise RuntimeError(f"selector {selector!r} returned {len(rows)} indices "
                           f"({len(torch.unique(rows))} distinct), expected {b} distinct")
    return rows
