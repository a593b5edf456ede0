"""Training objectives: cross-entropy and the two calibration losses of eq. 1.

Each loss is called as ``loss(model, x, y) -> (scalar, logits)`` so the training loop never
asks which one it has; ``logits`` (N, K) feed the running training accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from asknlearn.models import SplitNet


def kl_uniform(log_p: torch.Tensor) -> torch.Tensor:
    """D_KL(U || p) per row, from log-probabilities (..., K): −log K − mean_k log p_k."""
    k = log_p.shape[-1]
    return -math.log(k) - log_p.mean(dim=-1)


def lwcc_beta(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """β_i = (1 − max_k p_ik)^{1[y_i = ŷ_i]} (eq. 3).

    Correct predictions get β = 1 − confidence (little smoothing when confidently right);
    wrong ones get β = 1 (full smoothing), so confident mistakes are pushed toward uniform.
    """
    conf, pred = probs.max(dim=-1)
    return torch.where(pred == y, 1.0 - conf, torch.ones_like(conf))


def vwcc_alpha(probs_t: torch.Tensor) -> torch.Tensor:
    """Normalized variance α_i ∈ [0, 1] of T stochastic predictions (T, N, K), as in Seo et al.
    (2019): one minus the mean Bhattacharyya coefficient between each prediction and their mean,
    α_i = 1 − (1/T) Σ_t Σ_k sqrt(p_tik · p̄_ik). It is 0 when all T inferences agree."""
    mean = probs_t.mean(dim=0, keepdim=True)
    bc = (probs_t * mean).clamp_min(0).sqrt().sum(dim=-1)  # (T, N)
    return (1.0 - bc.mean(dim=0)).clamp(0.0, 1.0)


def lwcc_loss(logits: torch.Tensor, y: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """LWCC (eq. 3): mean_i [ℓ_ce^i + λ β_i D_KL(U || p_i)] of logits (N, K) and labels (N,),
    with β_i = (1 − max_k p_ik)^{1[y_i = ŷ_i]} detached (a weight, not a path for gradients);
    the mean instead of the sum so λ does not scale with the batch."""
    log_p = F.log_softmax(logits, dim=-1)
    beta = lwcc_beta(log_p.detach().exp(), y)
    ce = F.nll_loss(log_p, y, reduction="none")
    return (ce + lam * beta * kl_uniform(log_p)).mean()


def vwcc_loss(logits_t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """VWCC (eq. 2, Seo et al. 2019) of T stochastic inferences' logits (T, N, K) and labels
    (N,): mean_i (1/T) Σ_t [(1 − α_i) ℓ_ce(p_t) + α_i D_KL(U || p_t)], α_i the normalized
    variance of the T predictions, detached. Get ``logits_t`` from
    ``SplitNet.stochastic_logits(x, T)`` (one T·B pass), or stack T forward passes in
    training mode."""
    if logits_t.dim() != 3:
        from asknlearn.errors import ConfigError

        raise ConfigError(f"vwcc_loss: logits_t has shape {tuple(logits_t.shape)}; valid: "
                          "(T, N, K), T >= 2 stochastic inferences")
    samples = logits_t.shape[0]
    log_p = F.log_softmax(logits_t, dim=-1)
    alpha = vwcc_alpha(log_p.detach().exp())
    ce = -log_p.gather(-1, y.expand(samples, -1).unsqueeze(-1)).squeeze(-1)
    return ((1.0 - alpha) * ce + alpha * kl_uniform(log_p)).mean()


@dataclass(frozen=True)
class CrossEntropy:
    name: str = "ce"

    def __call__(self, model: SplitNet, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return F.cross_entropy(logits, y), logits


@dataclass(frozen=True)
class LWCC:
    """ℓ = mean_i [ ℓ_ce^i + λ β_i D_KL(U || p_i) ] (eq. 3; mean instead of sum so λ does not
    scale with the batch). β is a weight, not a path for gradients: it is detached."""

    lam: float = 1.0
    name: str = "lwcc"

    def __call__(self, model: SplitNet, x: torch.Tensor, y: torch.Tensor):
        logits = model(x)
        return lwcc_loss(logits, y, self.lam), logits


@dataclass(frozen=True)
class VWCC:
    """ℓ = mean_i (1/T) Σ_t [ (1 − α_i) ℓ_ce(p_t) + α_i D_KL(U || p_t) ] (eq. 2, Seo et al. 2019).

    The T stochastic inferences run through the whole network (dropout in every hidden layer,
    or stochastic depth), as one forward pass over a T·B batch
    (:meth:`SplitNet.stochastic_logits`); α_i is detached (a per-sample weight). The logits
    returned for bookkeeping are the mean over the T inferences.
    """

    samples: int = 5
    name: str = "vwcc"

    def __call__(self, model: SplitNet, x: torch.Tensor, y: torch.Tensor):
        logits_t = model.stochastic_logits(x, self.samples)  # (T, N, K)
        return vwcc_loss(logits_t, y), logits_t.mean(dim=0)


def build_loss(name: str, lwcc_lambda: float = 1.0, vwcc_samples: int = 5):
    """The training objective ``name`` (a :data:`asknlearn.catalogue.LOSSES` entry) with its
    hyperparameters (λ of eq. 3, T of eq. 2)."""
    from types import SimpleNamespace

    from asknlearn.catalogue import LOSSES, lookup

    keys = SimpleNamespace(lwcc_lambda=lwcc_lambda, vwcc_samples=vwcc_samples)
    return lookup(LOSSES, name, "loss").build(keys)
