"""Pseudo-labelers: how the unlabeled pool's labels ŷ for eq. 4 are guessed.

``argmax`` is BADGE's rule. ``refine`` is Ask-n-Learn's (Algorithm 1): keep argmax p where
max p ≥ τ, otherwise take the argmax of the mean softmax over k random augmentations (and,
optionally, the un-augmented view). Only the low-confidence subset is augmented, k copies per
chunk in one batched pass; the augmentation draws are made once for the whole subset, so the
labels do not depend on the chunk size (``eval_batch_size``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from asknlearn.augment import Augment
from asknlearn.inference import predict
from asknlearn.models import SplitNet


@dataclass(frozen=True)
class ArgmaxPseudoLabels:
    """BADGE's rule: ŷ = argmax p."""

    def __call__(self, model, x, probs, generator, batch_size=4096):
        return probs.argmax(dim=1), torch.zeros(len(probs), dtype=torch.bool, device=probs.device)


@dataclass(frozen=True)
class RefinedPseudoLabels:
    """Algorithm 1's refinement with threshold ``tau`` and ``k`` augmentations.

    ``include_original`` also counts the un-augmented prediction in the mean (k + 1 views);
    the paper averages the k augmented views only.
    """

    tau: float = 0.9
    k: int = 10
    augment: Augment = field(default_factory=Augment)
    include_original: bool = False

    @torch.no_grad()
    def __call__(
        self,
        model: SplitNet,
        x: torch.Tensor,
        probs: torch.Tensor,
        generator: torch.Generator,
        batch_size: int = 4096,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (pseudo-labels, mask of the points whose label came from augmentations)."""
        conf, labels = probs.max(dim=1)
        low = torch.nonzero(conf < self.tau).squeeze(1)
        refined = torch.zeros_like(conf, dtype=torch.bool)
        if len(low) == 0 or self.k == 0:
            return labels, refined
        n = len(low)
        # all draws up front, copy j of point i at j·n + i; one background value for the set
        oy, ox, flip = self.augment.draw(self.k * n, generator)
        pad = float(x.amin())
        total = probs[low].clone() if self.include_original else torch.zeros_like(probs[low])
        # chunk the low-confidence subset so k copies of it fit in one batch
        per = max(1, batch_size // self.k)
        for s in range(0, n, per):
            e = min(s + per, n)
            xs = x[low[s:e]]
            j = (torch.arange(self.k)[:, None] * n + torch.arange(s, e)[None, :]).reshape(-1)
            xa = self.augment.apply(xs.repeat(self.k, 1, 1, 1), oy[j], ox[j], flip[j], pad)
            p, _ = predict(model, xa, batch_size)
            total[s:e] += p.view(self.k, e - s, -1).sum(dim=0)
        labels = labels.clone()
        labels[low] = total.argmax(dim=1)
        refined[low] = True
        return labels, refined

