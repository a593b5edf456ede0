"""Query strategies: a named composition of (training loss, pseudo-labeler, selector).

A selector is a small object with one ``select(pool, b, generator)`` method and a ``needs``
set naming what it reads from the pool: ``probs``, ``features``, ``pseudo_labels``,
``stochastic_probs`` (T MC-dropout inferences) or ``labeled_features``. The loop computes exactly
those and never asks which strategy it runs: :meth:`StrategySpec.build` gives it the parts. The
paper's methods and its ablations are entries of :data:`STRATEGIES`; more can be added from
config (``strategies:`` in the YAML, ``experiment.strategies`` in the workflow) without code.

Importing this module does not import torch (the selectors import it when they run), so config
validation and ``snakemake -n`` stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from asknlearn.baselines import BASELINE_SELECTORS
from asknlearn.errors import ConfigError
from asknlearn.names import LOSSES, PSEUDO_LABELERS, STOCHASTIC_LOSSES

if TYPE_CHECKING:
    import torch


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
        import torch

        return torch.randperm(pool.size, generator=generator)[:b]


class ScoreSelector:
    """The b pool points that rank first by a per-point score of the softmax: the largest
    scores, or the smallest when ``largest`` is False."""

    needs: ClassVar[frozenset[str]] = frozenset({"probs"})
    largest: ClassVar[bool] = True

    @staticmethod
    def score(p: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        return torch.topk(self.score(pool.probs), b, largest=self.largest).indices.cpu()


class ConfidenceSelector(ScoreSelector):
    """Least confidence (Wang & Shang 2014): the b points with the lowest max probability."""

    largest: ClassVar[bool] = False

    @staticmethod
    def score(p: torch.Tensor) -> torch.Tensor:
        return p.max(dim=1).values


class EntropySelector(ScoreSelector):
    """Maximum predictive entropy H(p) = −Σ_k p_k log p_k."""

    @staticmethod
    def score(p: torch.Tensor) -> torch.Tensor:
        return -(p * p.clamp_min(1e-12).log()).sum(dim=1)


class GradientKMeansPP:
    """BADGE's selector: k-means++ seeding on gradient embeddings (eq. 4) of the pseudo-labels."""

    needs: ClassVar[frozenset[str]] = frozenset({"probs", "features", "pseudo_labels"})

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        from asknlearn.kmeanspp import embedding_factors, kmeanspp_factored

        u = embedding_factors(pool.probs, pool.pseudo_labels)
        return kmeanspp_factored(u, pool.features, b, generator).cpu()


SELECTORS: dict[str, type] = {
    "random": RandomSelector,
    "confidence": ConfidenceSelector,
    "entropy": EntropySelector,
    "badge": GradientKMeansPP,
    # the field's standard batch-AL baselines (asknlearn/baselines.py): margin, coreset, bald,
    # powerbald, typiclust
    **BASELINE_SELECTORS,
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
        return (self.loss in STOCHASTIC_LOSSES
                or "stochastic_probs" in SELECTORS[self.selector].needs)

    @property
    def stochastic(self) -> bool:
        """Whether this strategy runs on the stochastic network."""
        return self.network == "stochastic" or (self.network == "auto" and self.needs_stochastic)

    def validate(self, name: str) -> None:
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

    def build(self, cfg: Any) -> StrategyParts:
        """The parts of this strategy for a resolved :class:`~asknlearn.config.ExperimentConfig`:
        its training loss (λ of eq. 3, T of eq. 2), pseudo-labeller (τ, k and the refinement's
        augmentation of Algorithm 1) and selector. Imports torch."""
        from asknlearn.augment import Augment
        from asknlearn.losses import build_loss
        from asknlearn.pseudolabels import PSEUDO_LABELERS as LABELER_FACTORIES

        augment = Augment(cfg.aug_shift, cfg.aug_flip)
        return StrategyParts(
            loss=build_loss(self.loss, cfg.lwcc_lambda, cfg.vwcc_samples),
            labeler=LABELER_FACTORIES[self.pseudo_labels](
                cfg.tau, cfg.k_aug, augment, cfg.refine_include_original),
            selector=SELECTORS[self.selector](),
            augment=augment,
        )


class StrategyParts(NamedTuple):
    """What :meth:`StrategySpec.build` returns: the objects the loop calls."""

    loss: Any  # loss(model, x, y) -> (scalar, logits)
    labeler: Any  # labeler(model, x, probs, generator, batch_size) -> (labels, refined mask)
    selector: Selector
    augment: Any  # the refinement's Augment (also used by train_augment)


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
    # baselines beyond the paper, each trained with cross-entropy; bald and powerbald run on the
    # stochastic network (their selectors need MC-dropout inferences)
    **{name: StrategySpec("ce", "argmax", name) for name in BASELINE_SELECTORS},
}
PAPER_STRATEGIES = (
    "random", "confidence", "entropy", "badge", "ask-n-learn-lwcc", "ask-n-learn-vwcc",
)


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
        s.validate(key)
        table[key] = s
    return table


def resolve_strategy(name: str, extra: dict[str, dict] | None = None) -> StrategySpec:
    """Look up ``name`` among the built-ins and the config-defined ``extra`` strategies."""
    table = strategy_table(extra)
    if name not in table:
        raise ConfigError(f"unknown strategy {name!r}; valid: {', '.join(table)}")
    return table[name]


def describe(extra: dict[str, dict] | None = None) -> list[str]:
    """The lines of ``asknlearn strategies``: every strategy, built-in and ``extra``, with its
    parts and what its selector reads."""
    lines = [f"{'strategy':<20} {'loss':<6} {'pseudo_labels':<14} {'network':<11} selector (needs)"]
    for name, s in strategy_table(extra).items():
        needs = ", ".join(sorted(SELECTORS[s.selector].needs)) or "-"
        net = "stochastic" if s.stochastic else "plain"
        custom = "  [config]" if name not in STRATEGIES else ""
        lines.append(f"{name:<20} {s.loss:<6} {s.pseudo_labels:<14} {net:<11} "
                     f"{s.selector} ({needs}){custom}")
    return lines
