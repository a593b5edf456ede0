"""The simple selectors: uniform sampling, the softmax scores (least confidence, entropy) over
one shared top-k, and BADGE's k-means++ on gradient embeddings (eq. 4)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    import torch

    from asknlearn.selectors import Pool


class RandomSelector:
    """Uniform sampling without replacement: the fully supervised protocol."""


    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        return torch.randperm(pool.size, generator=generator)[:b]


class ScoreSelector:
    """The b pool points that rank first by a per-point score of the softmax: the largest
    scores, or the smallest when ``largest`` is False."""

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


    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        from asknlearn.kmeanspp import embedding_factors, kmeanspp_factored

        u = embedding_factors(pool.probs, pool.pseudo_labels)
        return kmeanspp_factored(u, pool.features, b, generator).cpu()
