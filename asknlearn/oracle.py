"""The (possibly noisy) labeling oracle of section 4.1 and Fig. 6."""

from __future__ import annotations

import torch


def noisy_labels(
    y_true: torch.Tensor, num_classes: int, rate: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer a queried batch: exactly round(rate·b) of its labels are wrong, each replaced
    uniformly by one of the K − 1 other classes. Returns (labels given, is_wrong)."""
    b = len(y_true)
    n_wrong = int(round(rate * b))
    wrong = torch.zeros(b, dtype=torch.bool)
    wrong[torch.randperm(b, generator=generator)[:n_wrong]] = True
    # y + s mod K with s uniform in 1..K-1 is uniform over the other classes
    shift = torch.randint(1, num_classes, (b,), generator=generator)
    y = y_true.cpu()
    given = torch.where(wrong, (y + shift) % num_classes, y)
    return given.to(y_true.device), wrong.to(y_true.device)
