"""A Python API for your own loop: pick a batch with any strategy, train with the calibration
losses.

``select`` runs one query step of a strategy (:data:`asknlearn.strategies.STRATEGIES`, or a
:class:`~asknlearn.strategies.StrategySpec`) on your model and pool, computing exactly what the
strategy's selector reads (softmax, penultimate features z of eq. 4, pseudo-labels, T
MC-dropout inferences, the labeled set's features), the same code the benchmark's loop runs.
The model is a :class:`~asknlearn.models.SplitNet` or any module with ``features(x) -> z`` and
a linear ``head``; strategies that need stochastic inferences sample its dropout layers
(``nn.Dropout`` included) in eval mode. The losses take logits, so they fit any training loop.
See docs/api.md for a runnable example.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from asknlearn.errors import ConfigError
from asknlearn.losses import kl_uniform, lwcc_beta, vwcc_alpha
from asknlearn.models import as_split_net
from asknlearn.strategies import Pool, StrategySpec, resolve_strategy

__all__ = ["lwcc_beta", "lwcc_loss", "select", "vwcc_alpha", "vwcc_loss"]


def select(strategy: str | StrategySpec, model: torch.nn.Module, x_pool: torch.Tensor, b: int,
           *, labeled_x: torch.Tensor | None = None, generator: torch.Generator | None = None,
           batch_size: int = 4096, **options: Any) -> torch.Tensor:
    """The indices (int64, on the CPU) of the ``b`` points of ``x_pool`` that ``strategy``
    asks to label next, as one round of Algorithm 1 would pick them.

    ``strategy``: a name that ``asknlearn strategies`` lists (``badge``, ``ask-n-learn-vwcc``,
    ``margin``, ``coreset``, ``bald``, ...) or a :class:`StrategySpec`; its training loss is
    yours to use (:func:`lwcc_loss`, :func:`vwcc_loss`). ``model``: a SplitNet or a module with
    ``features``/``head``, on the device where ``x_pool`` is moved. ``labeled_x``: the labeled
    images, for selectors that read them (``coreset``). ``generator``: the random source of
    the selection and the pseudo-label refinement (None: one seeded from torch's global RNG, so
    ``torch.manual_seed`` makes the call reproducible). ``options``: config keys of the
    pseudo-labeler and the T of the MC inferences (tau, k_aug, aug_shift, aug_flip,
    refine_include_original, vwcc_samples), defaults as in ``asknlearn run --help`` except
    the refinement's views: a 1-pixel shift, no flip (pass your data's ``aug_shift``).
    The model's train/eval mode is restored on return.
    """
    from asknlearn.config import ExperimentConfig
    from asknlearn.inference import predict

    spec = resolve_strategy(strategy) if isinstance(strategy, str) else strategy
    known = {"tau", "k_aug", "aug_shift", "aug_flip", "refine_include_original", "vwcc_samples"}
    if set(options) - known:
        raise ConfigError(f"select(): unknown option {sorted(set(options) - known)[0]!r}; valid: "
                          f"{', '.join(sorted(known))}")
    cfg = dataclasses.replace(ExperimentConfig(aug_shift=1, aug_flip=False), **options)
    n = len(x_pool)
    if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= n:
        raise ConfigError(f"select(): b={b!r} is not valid; valid: an integer in [1, {n}] (the "
                          "pool's size)")
    parts = spec.build(cfg)
    needs = parts.selector.needs
    net = as_split_net(model)
    device = next(net.parameters()).device
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))
    if "stochastic_probs" in needs and not net.stochastic:
        raise ConfigError("select(): strategy needs stochastic inferences (MC dropout) but the "
                          "model has no dropout layer with p > 0; valid: a model with dropout "
                          "(nn.Dropout, MCDropout), or a strategy on the plain network")
    if "labeled_features" in needs and labeled_x is None:
        raise ConfigError(f"select(): selector {spec.selector!r} reads the labeled set; valid: "
                          "pass labeled_x (the labeled images)")
    was_training = net.training
    try:
        x = x_pool.to(device)
        pool = Pool(size=n)
        if needs & {"probs", "features", "pseudo_labels"}:
            pool.probs, pool.features = predict(net, x, batch_size,
                                                features="features" in needs)
        if "stochastic_probs" in needs:
            net.eval()
            t = cfg.vwcc_samples
            per = max(1, batch_size // t)
            with torch.no_grad():
                pool.stochastic_probs = torch.cat(
                    [torch.softmax(net.stochastic_logits(x[s : s + per], t), dim=-1)
                     for s in range(0, n, per)], dim=1)
        if "labeled_features" in needs:
            lx = labeled_x.to(device)
            pool.labeled_features = (predict(net, lx, batch_size, features=True)[1] if len(lx)
                                     else torch.zeros(0, net.feat_dim, device=device))
        if "pseudo_labels" in needs:
            pool.pseudo_labels, _ = parts.labeler(net, x, pool.probs, generator, batch_size)
        rows = parts.selector.select(pool, b, generator)
    finally:
        net.train(was_training)
    return rows.cpu().long()


def lwcc_loss(logits: torch.Tensor, y: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """LWCC (eq. 3): mean_i [ℓ_ce^i + λ β_i D_KL(U || p_i)] of logits (N, K) and labels (N,),
    with β_i = (1 − max_k p_ik)^{1[y_i = ŷ_i]} detached. The loss ``lwcc`` trains with."""
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
        raise ConfigError(f"vwcc_loss: logits_t has shape {tuple(logits_t.shape)}; valid: "
                          "(T, N, K), T >= 2 stochastic inferences")
    samples = logits_t.shape[0]
    log_p = F.log_softmax(logits_t, dim=-1)
    alpha = vwcc_alpha(log_p.detach().exp())
    ce = -log_p.gather(-1, y.expand(samples, -1).unsqueeze(-1)).squeeze(-1)
    return ((1.0 - alpha) * ce + alpha * kl_uniform(log_p)).mean()
