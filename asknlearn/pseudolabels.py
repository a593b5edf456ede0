"""Pseudo-labelers: how the unlabeled pool's labels ŷ for eq. 4 are guessed.

``argmax`` is BADGE's rule. ``refine`` is Ask-n-Learn's (Algorithm 1): keep argmax p where
max p ≥ τ, otherwise take argmax of the mean softmax over k random augmentations. Only the
low-confidence subset is augmented, k copies in one batched pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from asknlearn.augment import Augment
from asknlearn.inference import predict
from asknlearn.models import SplitNet


@dataclass(frozen=True)
class ArgmaxPseudoLabels:
    name: str = "argmax"

    def __call__(self, model, x, probs, generator, batch_size=4096):
        return probs.argmax(dim=1), torch.zeros(len(probs), dtype=torch.bool, device=probs.device)


@dataclass(frozen=True)
class RefinedPseudoLabels:
    """Algorithm 1's refinement with threshold ``tau`` and ``k`` augmentations."""

    tau: float = 0.9
    k: int = 10
    augment: Augment = field(default_factory=Augment)
    name: str = "refine"

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
        if len(low) == 0 or self.k == 0:
            return labels, torch.zeros_like(conf, dtype=torch.bool)
        mean = torch.zeros(len(low), probs.shape[1], device=probs.device)
        # chunk the low-confidence subset so k copies of it fit in one batch
        per = max(1, batch_size // self.k)
        for s in range(0, len(low), per):
            xs = x[low[s : s + per]]
            xa = self.augment(xs.repeat(self.k, 1, 1, 1), generator)
            p, _ = predict(model, xa, batch_size)
            mean[s : s + per] = p.view(self.k, len(xs), -1).mean(dim=0)
        labels = labels.clone()
        labels[low] = mean.argmax(dim=1)
        refined = torch.zeros_like(conf, dtype=torch.bool)
        refined[low] = True
        return labels, refined
