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

from asknlearn.catalogue import PSEUDO_LABELERS
from asknlearn.errors import ConfigError
from asknlearn.losses import lwcc_beta, lwcc_loss, vwcc_alpha, vwcc_loss
from asknlearn.models import as_split_net
from asknlearn.query import build_pool
from asknlearn.strategies import STRATEGIES, StrategySpec, build_parts, resolve_strategy

__all__ = ["lwcc_beta", "lwcc_loss", "select", "vwcc_alpha", "vwcc_loss"]


def _as_pool(x: Any, name: str) -> torch.Tensor:
    """``x`` as a float32 tensor: a tensor or numpy array of floats as it is (float64 cast to
    float32, the models' dtype); anything else (uint8 images, lists) refused in one line, since
    the scale your model was trained on is yours to apply."""
    import numpy as np

    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x) if x.dtype.kind == "f" else x
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        what = (f"a tensor of dtype {x.dtype}" if isinstance(x, (torch.Tensor, np.ndarray))
                else f"a {type(x).__name__}")
        raise ConfigError(f"select(): {name} is {what}; valid: a float tensor or numpy array of "
                          "images (N, C, H, W) or feature vectors (N, D), scaled and normalized "
                          "as your model was trained on them")
    if x.dim() < 2 or len(x) == 0:
        raise ConfigError(f"select(): {name} has shape {tuple(x.shape)}; valid: a non-empty "
                          "batch, images (N, C, H, W) or feature vectors (N, D)")
    return x.float()


def _check_model_takes(net: torch.nn.Module, x: torch.Tensor, name: str) -> None:
    """One line, not the model's traceback, when it fails on the pool's items (a wrong image
    size, vectors of another length)."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            z = net.features(x)
            net.head(z)
    except Exception as exc:  # the user's model: what it raises names the mismatch
        first = (str(exc).splitlines() or [""])[0][:200]
        raise ConfigError(f"select(): the model fails on {name} items of shape "
                          f"{tuple(x.shape[1:])} ({type(exc).__name__}: {first}); valid: items "
                          "of the shape the model was built for") from None
    finally:
        net.train(was)


def select(strategy: str | StrategySpec, model: torch.nn.Module, x_pool: torch.Tensor, b: int,
           *, labeled_x: torch.Tensor | None = None, generator: torch.Generator | None = None,
           batch_size: int = 4096, **options: Any) -> torch.Tensor:
    """The indices (int64, on the CPU) of the ``b`` points of ``x_pool`` that ``strategy``
    asks to label next, as one round of Algorithm 1 would pick them.

    ``x_pool``: images (N, C, H, W) or feature vectors (N, D) (embeddings; then the
    refinement's image views do not apply and strategies that use them are refused), a float
    tensor or numpy array.
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
    import contextlib
    import operator

    from asknlearn.config import ExperimentConfig, validate

    if isinstance(strategy, str):
        spec = resolve_strategy(strategy)
    elif isinstance(strategy, StrategySpec):
        spec = strategy
    else:
        raise ConfigError(f"select(): strategy={strategy!r} is not valid; valid: a strategy name "
                          f"({', '.join(STRATEGIES)}) or a StrategySpec")
    known = {"tau", "k_aug", "aug_shift", "aug_flip", "refine_include_original", "vwcc_samples"}
    if set(options) - known:
        raise ConfigError(f"select(): unknown option {sorted(set(options) - known)[0]!r}; valid: "
                          f"{', '.join(sorted(known))}")
    cfg = dataclasses.replace(ExperimentConfig(aug_shift=1, aug_flip=False), **options)
    try:  # the config's own range and type checks on every option (tau in [0, 1], T >= 2, ...)
        validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"select(): {exc}") from None
    x_pool = _as_pool(x_pool, "x_pool")
    n = len(x_pool)
    with contextlib.suppress(TypeError):  # numpy integers count as integers
        b = operator.index(b) if not isinstance(b, bool) else b
    if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= n:
        raise ConfigError(f"select(): b={b!r} is not valid; valid: an integer in [1, {n}] (the "
                          "pool's size)")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"select(): batch_size={batch_size!r} is not valid; valid: an integer "
                          ">= 1")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ConfigError(f"select(): generator={type(generator).__name__} is not valid; valid: "
                          "a torch.Generator (torch.Generator().manual_seed(s)), or None")
    needs = spec.needs
    views = PSEUDO_LABELERS[spec.pseudo_labels].augment and "pseudo_labels" in needs
    if views and x_pool.dim() != 4 and cfg.k_aug > 0:
        raise ConfigError(f"select(): x_pool has shape {tuple(x_pool.shape)}, not images (N, C, "
                          f"H, W), so strategy {strategy!r}'s refinement by image views does not "
                          "apply; valid: a strategy with pseudo_labels 'argmax' (random, badge, "
                          "badge-lwcc, badge-vwcc, the baselines) for feature vectors")
    parts = build_parts(spec, cfg)
    net = as_split_net(model)
    device = next(net.parameters()).device
    _check_model_takes(net, x_pool[:2].to(device), "x_pool")
    if generator is None:
        generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))
    if "stochastic_probs" in needs and not net.stochastic:
        raise ConfigError("select(): strategy needs stochastic inferences (MC dropout) but the "
                          "model has no dropout layer with p > 0; valid: a model with dropout "
                          "(nn.Dropout, MCDropout), or a strategy on the plain network")
    if "labeled_features" in needs and labeled_x is None:
        raise ConfigError(f"select(): selector {spec.selector!r} reads the labeled set; valid: "
                          "pass labeled_x (the labeled images)")
    if labeled_x is not None:
        labeled_x = _as_pool(labeled_x, "labeled_x")
        if labeled_x.shape[1:] != x_pool.shape[1:]:
            raise ConfigError(f"select(): labeled_x has items of shape {tuple(labeled_x.shape[1:])}"
                              f" but x_pool {tuple(x_pool.shape[1:])}; valid: the same shape")
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
