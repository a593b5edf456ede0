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


def reliability_bins(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, torch.Tensor]:
    """Per-bin count, mean confidence and accuracy over equal-width bins (a reliability diagram;
    empty bins have NaN confidence and accuracy)."""
    conf, pred = probs.double().max(dim=1)
    correct = (pred == y).double()
    idx = (conf * bins).ceil().long().clamp(1, bins) - 1
    count = torch.zeros(bins, dtype=torch.float64, device=probs.device)
    conf_sum, acc_sum = torch.zeros_like(count), torch.zeros_like(count)
    count.index_add_(0, idx, torch.ones_like(conf))
    conf_sum.index_add_(0, idx, conf)
    acc_sum.index_add_(0, idx, correct)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    return {
        "bin": torch.arange(bins), "lower": edges[:-1], "upper": edges[1:],
        "count": count.cpu(), "confidence": (conf_sum / count).cpu(),
        "accuracy": (acc_sum / count).cpu(),
    }


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    """ECE = Σ_b (N_b / N) |acc(B_b) − conf(B_b)| over equal-width bins."""
    r = reliability_bins(probs, y, bins)
    gap = (r["accuracy"] - r["confidence"]).nan_to_num(0.0).abs()
    return float((r["count"] * gap).sum() / len(y))


def nll(probs: torch.Tensor, y: torch.Tensor, eps: float = 1e-12) -> float:
    p = probs.double().gather(1, y[:, None]).squeeze(1)
    return (-p.clamp_min(eps).log()).mean().item()


def brier(probs: torch.Tensor, y: torch.Tensor) -> float:
    onehot = torch.nn.functional.one_hot(y, probs.shape[1]).double()
    return ((probs.double() - onehot) ** 2).sum(dim=1).mean().item()


def all_metrics(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> dict[str, float]:
    """Every catalogue metric (accuracy, ECE, NLL, Brier) of ``probs`` (N, K) against ``y``.

    A model that outputs NaN/inf anywhere gets NaN for every metric: never a perfect-looking
    ECE of 0 or the accuracy of an argmax over NaNs."""
    from asknlearn.catalogue import METRICS, load

    if not bool(torch.isfinite(probs).all()):
        return dict.fromkeys(METRICS, float("nan"))
    return {name: load(m.factory)(probs, y, bins) if m.bins else load(m.factory)(probs, y)
            for name, m in METRICS.items()}
