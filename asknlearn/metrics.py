"""Test-set metrics of section 4.1: accuracy, ECE, NLL and Brier score.

Conventions: ECE uses ``bins`` equal-width confidence bins on (0, 1] (a confidence c falls in
bin ⌈c·bins⌉, so the edges are right-closed, as in Guo et al. 2017); NLL is the mean negative
log-probability of the true class; Brier is the mean over samples of Σ_k (p_k − 1[y = k])²,
the multi-class form, in [0, 2].
"""

from __future__ import annotations

import torch


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return (probs.argmax(dim=1) == y).double().mean().item()


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE = Σ_b (N_b / N) |acc(B_b) − conf(B_b)| over equal-width bins."""
    conf, pred = probs.double().max(dim=1)
    correct = (pred == y).double()
    idx = (conf * bins).ceil().long().clamp(1, bins) - 1
    n = torch.zeros(bins, dtype=torch.float64, device=probs.device)
    gap = torch.zeros_like(n)
    n.index_add_(0, idx, torch.ones_like(conf))
    # Σ_{i∈b} (correct_i − conf_i) = N_b (acc_b − conf_b)
    gap.index_add_(0, idx, correct - conf)
    return (gap.abs().sum() / len(y)).item()


def nll(probs: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> float:
    p = probs.double().gather(1, y[:, None]).squeeze(1)
    return (-p.clamp_min(eps).log()).mean().item()


def brier(probs: torch.Tensor, y: torch.Tensor) -> float:
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).double()
    return ((probs.double() - onehot) ** 2).sum(dim=1).mean().item()


def all_metrics(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    return {
        "accuracy": accuracy(probs, y),
        "ece": ece(probs, y, bins),
        "nll": nll(probs, y),
        "brier": brier(probs, y),
    }
