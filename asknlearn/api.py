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

from asknlearn.errors import ConfigError
from asknlearn.losses import lwcc_beta, lwcc_loss, vwcc_alpha, vwcc_loss
from asknlearn.models import as_split_net
from asknlearn.query import build_pool
from asknlearn.strategies import StrategySpec, build_parts, resolve_strategy

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
    parts = build_parts(spec, cfg)
    needs = spec.needs
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
        lx = labeled_x.to(device) if labeled_x is not None else x[:0]
        query = build_pool(net, x, needs, labeled_x=lx, labeler=parts.labeler,
                           generator=generator, batch_size=batch_size, samples=cfg.vwcc_samples)
        rows = parts.selector.select(query.pool, b, generator)
    finally:
        net.train(was_training)
    return rows.cpu().long()
