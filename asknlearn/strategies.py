"""Query strategies: a named composition of (training loss, pseudo-labeller, selector).

The built-in strategies are :data:`asknlearn.catalogue.STRATEGIES` entries; more can be added
from config (``strategies:`` in the YAML, ``experiment.strategies`` in the workflow) without
code. This module checks such definitions (:func:`check_spec`), looks a strategy up by name and
builds its parts for a resolved config (:func:`build_parts`): the loop never asks which strategy
it runs. Importing it does not import torch, so config validation and ``snakemake -n`` stay
light.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from asknlearn.catalogue import (
    LOSSES,
    NETWORKS,
    PAPER_STRATEGIES,
    PSEUDO_LABELERS,
    SELECTORS,
    STRATEGIES,
    StrategySpec,
    lookup,
    unknown,
)
from asknlearn.errors import ConfigError
from asknlearn.selectors import Pool, Selector

__all__ = ["NETWORKS", "PAPER_STRATEGIES", "SELECTORS", "STRATEGIES", "Pool", "StrategyParts",
           "StrategySpec", "build_parts", "check_spec", "check_views", "describe", "resolve_strategy",
           "strategy_table"]


def check_spec(name: str, spec: StrategySpec) -> None:
    """A strategy definition's parts exist and fit together; else one line naming the bad
    part, the nearest valid ones and all valid ones."""
    for key, value, valid in (("loss", spec.loss, LOSSES),
                              ("pseudo_labels", spec.pseudo_labels, PSEUDO_LABELERS),
                              ("selector", spec.selector, SELECTORS),
                              ("network", spec.network, NETWORKS)):
        if value not in valid:
            raise unknown(f"{key} of strategy {name!r}:", value, valid)
    if spec.pseudo_labels != "argmax" and "pseudo_labels" not in spec.needs:
        takes = [k for k, v in SELECTORS.items() if "pseudo_labels" in v.needs]
        raise ConfigError(
            f"strategy {name!r}: pseudo_labels {spec.pseudo_labels!r} would be ignored by "
            f"selector {spec.selector!r}, which takes no pseudo-labels; valid: argmax, or a "
            f"selector among {', '.join(takes)}")
    if spec.network == "plain" and spec.needs_stochastic:
        raise ConfigError(
            f"strategy {name!r}: network 'plain' but loss {spec.loss!r} / selector "
            f"{spec.selector!r} need stochastic inferences; valid: auto, stochastic")


class StrategyParts(NamedTuple):
    """What :func:`build_parts` returns: the objects the loop calls."""

    loss: Any  # loss(model, x, y) -> (scalar, logits)
    labeler: Any  # labeler(model, x, probs, generator, batch_size) -> (labels, refined mask)
    selector: Selector
    augment: Any  # the refinement's Augment (also used by train_augment)


def build_parts(spec: StrategySpec, cfg: Any) -> StrategyParts:
    """The parts of ``spec`` for a resolved :class:`~asknlearn.config.ExperimentConfig`, each
    from its catalogue entry with its own config keys: the training loss (λ of eq. 3, T of
    eq. 2), the pseudo-labeller (τ, k and the refinement's augmentation of Algorithm 1) and the
    selector (β, pruning, clusters). Imports torch."""
    from asknlearn.augment import Augment

    labeler = lookup(PSEUDO_LABELERS, spec.pseudo_labels, "pseudo-labeller")
    check_views(spec, cfg)
    augment = Augment(cfg.aug_shift, cfg.aug_flip)
    return StrategyParts(
        loss=lookup(LOSSES, spec.loss, "loss").build(cfg),
        labeler=labeler.build(cfg, **({"augment": augment} if labeler.augment else {})),
        selector=lookup(SELECTORS, spec.selector, "selector").build(cfg),
        augment=augment,
    )


def check_views(spec: StrategySpec, cfg: Any) -> None:
    """Refuse, in one line, image views (the refinement's ``Aug`` of Algorithm 1, or
    ``train_augment``) on a dataset of feature vectors: a shift or flip of an (N, D) embedding
    has no meaning, and no feature-space view has been chosen on a validation split here."""
    from asknlearn.userdata import dataset_info, is_vector

    views = lookup(PSEUDO_LABELERS, spec.pseudo_labels, "pseudo-labeller").augment
    if not (views and "pseudo_labels" in spec.needs) and not getattr(cfg, "train_augment", False):
        return
    info = dataset_info(cfg.dataset, getattr(cfg, "custom_datasets", None))
    if is_vector(info):
        what = (f"pseudo_labels={spec.pseudo_labels!r} (refinement by image views)"
                if views and "pseudo_labels" in spec.needs else "train_augment=true")
        raise ConfigError(f"dataset {info.name!r} holds (N, D) feature vectors, so {what} does "
                          "not apply (a shift or flip of an embedding means nothing); valid: a "
                          "strategy with pseudo_labels 'argmax' (random, badge, badge-lwcc, "
                          "badge-vwcc, the baselines) and train_augment false")


# a custom strategy's name is a path component and a workflow wildcard value
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")
_PART_KEYS = ("loss", "pseudo_labels", "selector", "network")


def strategy_table(extra: dict[str, dict] | None = None) -> dict[str, StrategySpec]:
    """The built-in strategies plus the config-defined ``extra`` ones ({name: {loss,
    pseudo_labels, selector, network}}, missing parts: ce, argmax, badge, auto), each checked."""
    table = dict(STRATEGIES)
    if extra is None:
        return table
    if not isinstance(extra, dict):
        raise ConfigError(f"strategies={extra!r} is not valid; valid: a mapping of new strategy "
                          "names to {loss, pseudo_labels, selector, network}")
    for key, spec in extra.items():
        if not isinstance(key, str) or not key or key[0] == "-" or set(key) - _NAME_CHARS:
            raise ConfigError(f"strategy name {key!r} is not valid; valid: lower-case letters, "
                              "digits and '-', not starting with '-'")
        if key in STRATEGIES:
            raise ConfigError(f"strategy definition {key!r} would replace the built-in strategy "
                              f"of that name; valid: a new name, not one of {', '.join(STRATEGIES)}")
        if (not isinstance(spec, dict) or set(spec) - set(_PART_KEYS)
                or not all(isinstance(v, str) for v in spec.values())):
            raise ConfigError(
                f"strategy definition {key!r} must be a mapping with keys loss, pseudo_labels, "
                f"selector, network; got {spec!r}"
            )
        s = StrategySpec(spec.get("loss", "ce"), spec.get("pseudo_labels", "argmax"),
                         spec.get("selector", "badge"), spec.get("network", "auto"))
        check_spec(key, s)
        table[key] = s
    return table


def resolve_strategy(name: str, extra: dict[str, dict] | None = None) -> StrategySpec:
    """Look up ``name`` among the built-ins and the config-defined ``extra`` strategies."""
    return lookup(strategy_table(extra), name, "strategy")


def describe(extra: dict[str, dict] | None = None) -> list[str]:
    """The lines of ``asknlearn strategies``: every strategy, built-in and ``extra``, with its
    parts and what its selector reads."""
    lines = [f"{'strategy':<20} {'loss':<6} {'pseudo_labels':<14} {'network':<11} selector (needs)"]
    for name, s in strategy_table(extra).items():
        needs = ", ".join(sorted(s.needs)) or "-"
        net = "stochastic" if s.stochastic else "plain"
        custom = "  [config]" if name not in STRATEGIES else ""
        lines.append(f"{name:<20} {s.loss:<6} {s.pseudo_labels:<14} {net:<11} "
                     f"{s.selector} ({needs}){custom}")
    return lines
