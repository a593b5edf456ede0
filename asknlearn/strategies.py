"""Query strategies: a named composition of (training loss, pseudo-labeler, selector).

A selector is a small object with one ``select(pool, b, generator)`` method and a ``needs``
set naming what it reads from the pool: ``probs``, ``features``, ``pseudo_labels``,
``stochastic_probs`` (T MC-dropout inferences) or ``labeled_features``. The loop computes exactly
those (:meth:`asknlearn.loop.Cell.select`) and never asks which strategy it runs. The
paper's methods and its ablations are entries of :data:`STRATEGIES`;
more can be added from config (``strategies:`` in the YAML) without code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch

from asknlearn.errors import ConfigError
from asknlearn.kmeanspp import embedding_factors, kmeanspp_factored


@dataclass
class Pool:
    """What a selector may read about the unlabeled pool (row i = i-th unlabeled point)."""

    size: int
    probs: torch.Tensor | None = None  # (N, K) softmax
    features: torch.Tensor | None = None  # (N, D) penultimate z
    pseudo_labels: torch.Tensor | None = None  # (N,) ŷ
    stochastic_probs: torch.Tensor | None = None  # (T, N, K) softmax of T stochastic inferences
    labeled_features: torch.Tensor | None = None  # (M, D) penultimate z of the labeled set


class Selector(Protocol):
    needs: ClassVar[frozenset[str]]

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        """Return ``b`` distinct row indices into the pool (int64)."""
        ...


class RandomSelector:
    """Uniform sampling without replacement: the fully supervised protocol."""

    needs: ClassVar[frozenset[str]] = frozenset()

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(pool.size, generator=generator)[:b]


class ConfidenceSelector:
    """Least confidence (Wang & Shang 2014): the b points with the lowest max probability."""

    needs: ClassVar[frozenset[str]] = frozenset({"probs"})

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        return torch.topk(pool.probs.max(dim=1).values, b, largest=False).indices.cpu()


class EntropySelector:
    """Maximum predictive entropy H(p) = −Σ_k p_k log p_k."""

    needs: ClassVar[frozenset[str]] = frozenset({"probs"})

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        p = pool.probs
        h = -(p * p.clamp_min(1e-12).log()).sum(dim=1)
        return torch.topk(h, b).indices.cpu()


class GradientKMeansPP:
    """BADGE's selector: k-means++ seeding on gradient embeddings (eq. 4) of the pseudo-labels."""

    needs: ClassVar[frozenset[str]] = frozenset({"probs", "features", "pseudo_labels"})

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        u = embedding_factors(pool.probs, pool.pseudo_labels)
        return kmeanspp_factored(u, pool.features, b, generator).cpu()


SELECTORS: dict[str, type] = {
    "random": RandomSelector,
    "confidence": ConfidenceSelector,
    "entropy": EntropySelector,
    "badge": GradientKMeansPP,
}
NETWORKS = ("auto", "plain", "stochastic")


@dataclass(frozen=True)
class StrategySpec:
    """A named strategy = training loss + pseudo-labeler + selector, on a network.

    ``network``: ``stochastic`` trains and selects with the network that has dropout /
    stochastic depth in its hidden layers (VWCC's network); ``plain`` with the BADGE protocol's
    plain one; ``auto`` with the stochastic one exactly when a part needs stochastic
    inferences (the VWCC loss, a selector that needs ``stochastic_probs``).
    """

    loss: str
    pseudo_labels: str
    selector: str
    network: str = "auto"

    @property
    def needs_stochastic(self) -> bool:
        from asknlearn.losses import STOCHASTIC_LOSSES

        return (self.loss in STOCHASTIC_LOSSES
                or "stochastic_probs" in SELECTORS[self.selector].needs)

    @property
    def stochastic(self) -> bool:
        """Whether this strategy runs on the stochastic network."""
        return self.network == "stochastic" or (self.network == "auto" and self.needs_stochastic)

    def validate(self, name: str) -> None:
        from asknlearn.losses import LOSSES
        from asknlearn.pseudolabels import PSEUDO_LABELERS

        for key, value, valid in (
            ("loss", self.loss, tuple(LOSSES)),
            ("pseudo_labels", self.pseudo_labels, tuple(PSEUDO_LABELERS)),
            ("selector", self.selector, tuple(SELECTORS)),
            ("network", self.network, NETWORKS),
        ):
            if value not in valid:
                raise ConfigError(
                    f"strategy {name!r}: unknown {key} {value!r}; valid: {', '.join(valid)}"
                )
        if self.pseudo_labels != "argmax" and "pseudo_labels" not in SELECTORS[self.selector].needs:
            takes = [k for k, v in SELECTORS.items() if "pseudo_labels" in v.needs]
            raise ConfigError(
                f"strategy {name!r}: pseudo_labels {self.pseudo_labels!r} would be ignored by "
                f"selector {self.selector!r}, which takes no pseudo-labels; valid: argmax, or a "
                f"selector among {', '.join(takes)}")
        if self.network == "plain" and self.needs_stochastic:
            raise ConfigError(
                f"strategy {name!r}: network 'plain' but loss {self.loss!r} / selector "
                f"{self.selector!r} need stochastic inferences; valid: auto, stochastic")


STRATEGIES: dict[str, StrategySpec] = {
    "random": StrategySpec("ce", "argmax", "random"),
    "confidence": StrategySpec("ce", "argmax", "confidence"),
    "entropy": StrategySpec("ce", "argmax", "entropy"),
    "badge": StrategySpec("ce", "argmax", "badge"),
    "ask-n-learn-lwcc": StrategySpec("lwcc", "refine", "badge"),
    "ask-n-learn-vwcc": StrategySpec("vwcc", "refine", "badge"),
    # the paper's ablations: calibration without refinement, refinement without calibration
    "badge-lwcc": StrategySpec("lwcc", "argmax", "badge"),
    "badge-vwcc": StrategySpec("vwcc", "argmax", "badge"),
    "badge-refine": StrategySpec("ce", "refine", "badge"),
    # the control that separates VWCC's loss from its network: BADGE trained with cross-entropy
    # on the same stochastic (dropout) network as the VWCC strategies
    "badge-dropout": StrategySpec("ce", "argmax", "badge", network="stochastic"),
}
PAPER_STRATEGIES = (
    "random", "confidence", "entropy", "badge", "ask-n-learn-lwcc", "ask-n-learn-vwcc",
)


def resolve_strategy(name: str, extra: dict[str, dict] | None = None) -> StrategySpec:
    """Look up ``name`` among the built-ins and the config-defined ``extra`` strategies."""
    table = dict(STRATEGIES)
    for key, spec in (extra or {}).items():
        if not isinstance(spec, dict) or set(spec) - {"loss", "pseudo_labels", "selector", "network"}:
            raise ConfigError(
                f"strategy definition {key!r} must be a mapping with keys loss, pseudo_labels, "
                f"selector, network; got {spec!r}"
            )
        s = StrategySpec(spec.get("loss", "ce"), spec.get("pseudo_labels", "argmax"),
                         spec.get("selector", "badge"), spec.get("network", "auto"))
        s.validate(key)
        table[key] = s
    if name not in table:
        raise ConfigError(f"unknown strategy {name!r}; valid: {', '.join(table)}")
    return table[name]
