"""Batched inference over a tensor dataset (pool or test set)."""

from __future__ import annotations

import torch

from asknlearn.models import SplitNet


@torch.no_grad()
def predict(
    model: SplitNet, x: torch.Tensor, batch_size: int = 4096, features: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax probabilities (N, K) and, if asked, penultimate features z (N, D), eval mode."""
    model.eval()
    probs, feats = [], []
    for s in range(0, len(x), batch_size):
        z = model.features(x[s : s + batch_size])
        probs.append(torch.softmax(model.head(z), dim=1))
        if features:
            feats.append(z)
    return torch.cat(probs), (torch.cat(feats) if features else None)
