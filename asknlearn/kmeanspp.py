"""Gradient embeddings (eq. 4) and k-means++ seeding on them without materializing them.

A gradient embedding is g = u ⊗ z with u = p − e_ŷ (K values) and z the penultimate
features (D values). Inner products factor, ⟨g_a, g_c⟩ = ⟨u_a, u_c⟩·⟨z_a, z_c⟩, so squared
distances to a centre need one pass over U (N×K) and Z (N×D): memory and time O(N·(K + D))
per centre instead of O(N·K·D).

Seeding rule (as in the BADGE reference code, Ash et al. 2019): the first centre is the point
of largest gradient norm; every next centre is drawn with probability proportional to its
squared distance to the nearest chosen centre (D² sampling, Arthur & Vassilvitskii 2006).
Chosen points have distance 0 and are never drawn again.
"""

from __future__ import annotations

import torch


def embedding_factors(probs: torch.Tensor, pseudo_labels: torch.Tensor) -> torch.Tensor:
    """u = p − e_ŷ (N, K), the class factor of eq. 4 for the cross-entropy loss."""
    u = probs.clone()
    u[torch.arange(len(u), device=u.device), pseudo_labels] -= 1.0
    return u


def gradient_embedding(probs: torch.Tensor, feats: torch.Tensor, pseudo_labels: torch.Tensor):
    """Dense eq. 4 embeddings (N, K·D), row-major like the head's weight matrix. For tests and
    small N only: the selector itself never builds this."""
    u = embedding_factors(probs, pseudo_labels)
    return (u[:, :, None] * feats[:, None, :]).reshape(len(u), -1)


def _draw(d2: torch.Tensor, generator: torch.Generator) -> int:
    """Index drawn with probability ∝ d2 (d2 ≥ 0, float64), by inverse CDF on one uniform."""
    cdf = torch.cumsum(d2, 0)
    total = cdf[-1]
    r = torch.rand((), generator=generator, dtype=torch.float64) * total.cpu()
    i = int(torch.searchsorted(cdf, r.to(cdf.device).view(1), right=True))
    if i >= len(d2) or d2[i] <= 0:  # r rounded onto the last edge: take the last point with mass
        i = int(torch.nonzero(d2 > 0)[-1])
    return i


def kmeanspp_factored(
    u: torch.Tensor, z: torch.Tensor, b: int, generator: torch.Generator
) -> torch.Tensor:
    """Select ``b`` distinct rows by k-means++ seeding on g = u ⊗ z, never forming g.

    Returns int64 indices (b,) into the rows of ``u``/``z``. If every remaining point has
    zero distance (duplicates), the rest are drawn uniformly from the unchosen points.
    """
    n = len(u)
    if not 0 < b <= n:
        raise ValueError(f"b={b} must be in 1..{n}")
    zn = (z * z).sum(1).double()
    gn = (u * u).sum(1).double() * zn  # ||g||² = ||u||²·||z||²
    chosen = torch.zeros(n, dtype=torch.bool, device=u.device)
    c = int(torch.argmax(gn))
    picks = [c]
    d2 = torch.full((n,), float("inf"), dtype=torch.float64, device=u.device)
    for _ in range(b - 1):
        chosen[c] = True
        # one fused pass per centre: both dot products, then the factored distance
        dist = gn + gn[c] - 2.0 * (u @ u[c]).double() * (z @ z[c]).double()
        torch.minimum(d2, dist.clamp_min_(0.0), out=d2)
        d2[chosen] = 0.0
        if d2.sum() <= 0:
            rest = torch.nonzero(~chosen).squeeze(1)
            extra = rest[torch.randperm(len(rest), generator=generator)[: b - len(picks)].to(rest.device)]
            return torch.tensor(picks + extra.tolist(), dtype=torch.long)
        c = _draw(d2, generator)
        picks.append(c)
    return torch.tensor(picks, dtype=torch.long)


def kmeanspp_dense(g: torch.Tensor, b: int, generator: torch.Generator) -> torch.Tensor:
    """Reference k-means++ seeding on explicit embeddings (N, K·D); same rule and draws."""
    n = len(g)
    g = g.double()
    gn = (g * g).sum(1)
    c = int(torch.argmax(gn))
    picks = [c]
    d2 = torch.full((n,), float("inf"), dtype=torch.float64)
    chosen = torch.zeros(n, dtype=torch.bool)
    for _ in range(b - 1):
        chosen[c] = True
        d2 = torch.minimum(d2, ((g - g[c]) ** 2).sum(1))
        d2[chosen] = 0.0
        c = _draw(d2, generator)
        picks.append(c)
    return torch.tensor(picks, dtype=torch.long)
