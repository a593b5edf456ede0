"""The standard batch active-learning baselines as selectors (issue 15).

Each class follows the selector protocol of :mod:`asknlearn.selectors`: its catalogue entry's
``needs`` names the pool fields it reads, and ``select(pool, b, generator)`` returning ``b`` distinct
int64 row indices into the pool (on the CPU). The pool fields used here:

``probs``             (N, K) softmax of the network in eval mode;
``features``          (N, D) penultimate features z;
``stochastic_probs``  (T, N, K) softmax under T MC-dropout passes of the stochastic network;
``labeled_features``  (M, D) penultimate features of the labeled set (M may be 0).

Costs at N = 60,000, D = 256, T passes, K classes: margin O(N·K); BALD and PowerBALD
O(T·N·K) plus a top-b; coreset O(b·N·D) without pruning and much less with it (see
:func:`k_center_greedy`); TypiClust a k-means of the pool into up to 500 clusters.
``benchmarks/bench_selectors.py`` times coreset and BALD against plain implementations.
"""

from __future__ import annotations

import importlib
import math
from typing import TYPE_CHECKING, Any


class _LazyModule:
    """A module imported on first attribute access: importing a selector's module (the
    catalogue's factory) must not pay torch's import before the selector runs."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


torch = _LazyModule("torch")
np = _LazyModule("numpy")


def kmeanspp_factored(*args: Any, **kwargs: Any):
    from asknlearn.kmeanspp import kmeanspp_factored as seeding

    return seeding(*args, **kwargs)


if TYPE_CHECKING:
    from asknlearn.selectors import Pool

BALD_CHUNK = 8192  # pool rows per float64 chunk of the BALD computation
KCENTER_BLOCK = 2048  # pool rows per block of the pool × labeled-set distances
GATHER_FRACTION = 0.25  # above this fraction of candidate rows, one streaming pass replaces a gather


# ---------------------------------------------------------------------------- helpers
def _check_b(b: int, n: int) -> None:
    if not 0 < b <= n:
        raise ValueError(f"b={b} must be in 1..{n} (the pool size)")


def _field(pool: Pool, name: str) -> torch.Tensor:
    """A pool field the selector declared in ``needs``; a clear error where the caller did not
    provide it."""
    value = getattr(pool, name, None)
    if value is None:
        raise ValueError(f"pool.{name} is missing; this selector needs it (declared in needs)")
    return value.detach()


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Row sums of exact squares (float64), 4096 rows at a time (:func:`asknlearn.kmeanspp.sq_norms`)."""
    from asknlearn.kmeanspp import sq_norms

    return sq_norms(x, chunk=4096, dtype=torch.float64)


# ---------------------------------------------------------------------------- margin
class MarginSelector:
    """Margin sampling (Scheffer, Decomain & Wrobel 2001; Roth & Small 2006): the b points with
    the smallest gap p_(1) − p_(2) between the two most probable classes."""


    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        p = _field(pool, "probs")
        _check_b(b, len(p))
        if p.shape[1] < 2:
            raise ValueError(f"margin needs at least 2 classes, got probs of shape {tuple(p.shape)}")
        top2 = torch.topk(p, 2, dim=1).values
        return torch.topk(top2[:, 0] - top2[:, 1], b, largest=False).indices.cpu()


# ---------------------------------------------------------------------------- BALD
def bald_scores(stochastic_probs: torch.Tensor, chunk: int = BALD_CHUNK) -> torch.Tensor:
    """Mutual information between the label and the weights (BALD; Houlsby et al. 2011,
    eq. 3 of Gal, Islam & Ghahramani 2017), estimated from T MC-dropout passes:

        I(y; ω | x) ≈ H[(1/T) Σ_t p_t(y|x)] − (1/T) Σ_t H[p_t(y|x)].

    ``stochastic_probs`` is (T, N, K). Returns (N,) float64, clamped at 0 (the estimate is
    non-negative by Jensen's inequality; only rounding makes it negative). The pool is read
    in chunks of rows, each promoted to float64 once: the two entropies are close for points
    whose passes agree, so their difference needs the precision.
    """
    if stochastic_probs.dim() != 3:
        raise ValueError(f"stochastic_probs must be (T, N, K), got shape {tuple(stochastic_probs.shape)}")
    t, n, _ = stochastic_probs.shape
    out = torch.empty(n, dtype=torch.float64, device=stochastic_probs.device)
    for s in range(0, n, chunk):
        p = stochastic_probs[:, s : s + chunk].double()
        mean_entropy = torch.special.entr(p).sum(2).sum(0).div_(t)
        out[s : s + chunk] = torch.special.entr(p.mean(0)).sum(1).sub_(mean_entropy)
    return out.clamp_min_(0.0)


class BALDSelector:
    """BALD (Houlsby et al. 2011; Gal, Islam & Ghahramani 2017, "Deep Bayesian Active Learning
    with Image Data"): the b points of largest mutual information between the prediction and
    the network weights, from MC-dropout passes (:func:`bald_scores`). Top-b of a per-point
    score: it ignores redundancy inside the batch, which is what BatchBALD and PowerBALD
    address."""


    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        sp = _field(pool, "stochastic_probs")
        _check_b(b, sp.shape[1])
        return torch.topk(bald_scores(sp), b).indices.cpu()


class PowerBALDSelector:
    """PowerBALD (Kirsch, Farquhar, Atighehchian, Jesson, Branchaud-Charron & Gal 2021/2023,
    "Stochastic Batch Acquisition: A Simple Baseline for Deep Active Learning"): b points drawn
    without replacement with probability ∝ BALD^β, by Gumbel-top-k: the b largest of
    β·log BALD_i + G_i with G_i ~ Gumbel(0, 1) from ``generator`` (β = 1 by default, as in the
    paper; β = 0 is uniform sampling, β → ∞ is top-b BALD).

    Why PowerBALD and not BatchBALD (Kirsch, van Amersfoort & Gal 2019): BatchBALD grows the
    batch greedily by the mutual information of the joint prediction of all points chosen so
    far. The joint entropy of n points sums over K^n label configurations, so it is exact only
    for a handful of points; beyond that it is estimated from sampled configurations (10,000
    in their experiments, with acquisition sizes of at most a few tens), at a cost of about
    N·T·samples per added point. At b = 1000 on a 60,000-point pool that is ~10^13 operations
    per round, and the sampled estimate of an entropy over K^1000 configurations is poor
    long before the batch is complete. PowerBALD reaches the same aim, diversity inside a
    large batch, by randomizing the ranking instead (Kirsch et al. 2021 report it on par with
    BatchBALD at a small fraction of its cost): BALD plus one top-b, O(T·N·K + N log N).

    Points with BALD 0 are floored at the smallest positive float64: at β = 1 they come after
    every point of positive BALD except with negligible probability, and they are drawn only
    when fewer than b points have positive BALD.
    """


    def __init__(self, beta: float = 1.0):
        if not (math.isfinite(beta) and beta >= 0):
            raise ValueError(f"beta={beta!r} must be a finite number >= 0")
        self.beta = beta

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        sp = _field(pool, "stochastic_probs")
        _check_b(b, sp.shape[1])
        return power_sample(bald_scores(sp), b, self.beta, generator)


def power_sample(scores: torch.Tensor, b: int, beta: float, generator: torch.Generator) -> torch.Tensor:
    """b distinct indices drawn without replacement with probability ∝ scores^β (scores ≥ 0),
    by Gumbel-top-k (the b largest of β·log s_i + G_i equal b successive draws without
    replacement; Kool, van Hoof & Welling 2019). One Exp(1) draw per point from
    ``generator``; zero scores are floored at the smallest positive float64."""
    _check_b(b, len(scores))
    tiny = torch.finfo(torch.float64).tiny
    log_score = scores.detach().double().cpu().clamp_min(tiny).log_()
    # Gumbel(0, 1) = −log E with E ~ Exp(1)
    e = torch.empty(len(scores), dtype=torch.float64).exponential_(generator=generator)
    keys = log_score.mul_(beta).sub_(e.clamp_min_(tiny).log_())
    return torch.topk(keys, b).indices


# ---------------------------------------------------------------------------- coreset
def k_center_greedy(
    x: torch.Tensor,
    centres: torch.Tensor | None,
    b: int,
    generator: torch.Generator,
    *,
    prune: bool | None = None,
    block: int = KCENTER_BLOCK,
    stats: dict | None = None,
) -> torch.Tensor:
    """Greedy k-center (Gonzalez 1985), the core-set selection of Sener & Savarese 2018
    (their Algorithm 1): repeatedly take the pool point farthest from every centre, where the
    centres are the labeled points ``centres`` (M, D) and the points already taken.

    Distances are squared Euclidean, ‖x‖² + ‖c‖² − 2⟨x, c⟩ (dot products in the input dtype,
    the rest in float64). A running vector of each point's squared distance to its nearest
    centre is initialized by blocks of ``block`` pool rows against all of ``centres`` (never an
    N × M matrix at once) and updated with one new centre per step.

    ``prune`` (the CPU default) skips the points that provably cannot move. With a(x) the
    nearest centre of x and d(x) its distance, the triangle inequality gives
    ‖x − c‖ ≥ ‖a − c‖ − d(x), so x cannot get closer to the new centre c unless
    ‖a − c‖² < 4·d(x)². One product of the (at most M + b) centres with c gives every ‖a − c‖,
    and only the feature rows of the points that may move are read. The test carries a margin
    for the rounding of every computed distance (E = 4·(D + 4)·eps·max‖·‖², skip only if
    ‖a − c‖² ≥ 4·d(x)² + 5E), so pruning never skips a point the full pass would update. Both
    give the same picks, except where two distances tie within rounding (a product over
    gathered rows may round differently from the product over the whole pool). It pays off
    once the centres cover the pool, which is most of a batch of b = 1000 on clustered
    features; on features without structure (isotropic noise) nothing is skipped.

    Returns int64 indices (b,) on the CPU, in the order taken. Without labeled centres, the
    first point is uniform from ``generator``; ``generator`` is otherwise used only if every
    remaining point coincides with a centre, when the rest are drawn uniformly from the
    points not taken. A ``stats`` dict receives ``rows_read`` (feature rows read in the
    updates; N per step without pruning).
    """
    from asknlearn.kmeanspp import nearest_sq_dists

    n, d = x.shape
    _check_b(b, n)
    if centres is None:
        centres = x.new_zeros(0, d)
    if centres.dim() != 2 or centres.shape[1] != d:
        raise ValueError(f"labeled features have shape {tuple(centres.shape)}; valid: (M, {d}) "
                         f"like the pool features")
    if prune is None:
        prune = x.device.type == "cpu"
    if prune and x.device.type != "cpu":
        raise ValueError(f"prune=True needs CPU tensors, got {x.device}; valid: prune=False or None")
    if stats is None:
        stats = {}
    stats["rows_read"] = 0
    centres = centres.to(device=x.device, dtype=x.dtype)
    xn = _sq_norms(x)
    cn = _sq_norms(centres)
    mind, assign = nearest_sq_dists(x, centres, xn, cn, block)
    if prune:
        picks, best = _k_center_pruned(x, centres, b, generator, xn, cn, mind, assign, stats)
    else:
        picks, best = _k_center_full(x, len(centres), b, generator, xn, mind, stats)
    dup = torch.nonzero(best <= 0)
    if len(dup):  # every remaining point coincides with a centre: the rest uniformly
        kept = picks[: int(dup[0])]
        taken = torch.zeros(n, dtype=torch.bool)
        taken[kept] = True
        rest = torch.nonzero(~taken).squeeze(1)
        extra = rest[torch.randperm(len(rest), generator=generator)[: b - len(kept)]]
        return torch.cat([kept, extra])
    return picks


def _first_pick(n: int, m: int, generator: torch.Generator) -> int | None:
    """A uniform first point when there is no labeled centre, else None (take the farthest)."""
    return int(torch.randint(n, (1,), generator=generator)) if m == 0 else None


def _k_center_full(x, m, b, generator, xn, mind, stats) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over the pool per new centre; on a GPU no host synchronization in the loop.
    Returns the picks and the distance of each at the time it was taken (CPU)."""
    from asknlearn.kmeanspp import add_centre

    n, dev = len(x), x.device
    picks = torch.empty(b, dtype=torch.long, device=dev)
    best = torch.full((b,), float("inf"), dtype=torch.float64, device=dev)
    first = _first_pick(n, m, generator)
    for t in range(b):
        if t == 0 and first is not None:
            c = torch.tensor([first], device=dev)
        else:
            best[t], c = mind.max(0)
            c = c.view(1)
        picks[t] = c
        if t == b - 1:
            break
        add_centre(mind, xn, (x @ x.index_select(0, c).squeeze(0)).double(), c)
        stats["rows_read"] += n
    return picks.cpu(), best.cpu()


def _k_center_pruned(x, centres, b, generator, xn, cn, mind, assign, stats):
    """Bound, skip, then read feature rows only for the points that may move (docstring of
    :func:`k_center_greedy`). The per-point bookkeeping is numpy on views of the tensors (a
    few microseconds of dispatch per operation instead of tens); the dot products are torch,
    as in the full pass."""
    n, d = x.shape
    m = len(centres)
    cbuf = torch.empty(m + b, d, dtype=x.dtype)  # centres so far: labeled, then taken
    cbuf[:m] = centres
    cnb = np.empty(m + b)
    cnb[:m] = cn.numpy()
    xnn, mn, an = xn.numpy(), mind.numpy(), assign.numpy()
    # |computed − exact| ≤ 2·γ_D·‖x‖‖c‖ + float64 rounding for every squared distance here;
    # E = 4·(D + 4)·eps·max‖·‖² bounds it, and x cannot move if ‖a − c‖² ≥ 4·d(x)² + 5E
    scale = max(float(xn.max()), float(cn.max()) if m else 0.0)
    margin = 5.0 * 4.0 * (d + 4) * torch.finfo(x.dtype).eps * scale
    thr = 4.0 * mn + margin
    picks = np.empty(b, dtype=np.int64)
    best = np.full(b, np.inf)
    first = _first_pick(n, m, generator)
    for t in range(b):
        if t == 0 and first is not None:
            c = first
        else:
            c = int(mn.argmax())
            best[t] = mn[c]
        picks[t] = c
        if t == b - 1:
            break
        j = m + t
        xc = x[c]
        cbuf[j] = xc
        cnb[j] = xnn[c]
        mn[c], an[c], thr[c] = 0.0, j, margin
        dcc = cnb[: j + 1] + cnb[j] - 2.0 * (cbuf[: j + 1] @ xc).numpy()
        cand = np.flatnonzero(dcc[an] < thr)
        nc = len(cand)
        if nc == 0:
            continue
        if nc > GATHER_FRACTION * n:  # early steps: stream the pool, as the full pass does
            stats["rows_read"] += n
            dist = xnn + cnb[j] - 2.0 * (x @ xc).numpy().astype(np.float64)
            np.maximum(dist, 0.0, out=dist)
            idx = np.flatnonzero(dist < mn)
            new = dist[idx]
        else:
            stats["rows_read"] += nc
            dots = (x.index_select(0, torch.from_numpy(cand)) @ xc).numpy()
            dist = xnn[cand] + cnb[j] - 2.0 * dots.astype(np.float64)
            np.maximum(dist, 0.0, out=dist)
            moved = dist < mn[cand]
            idx, new = cand[moved], dist[moved]
        mn[idx] = new
        an[idx] = j
        thr[idx] = 4.0 * new + margin
    return torch.from_numpy(picks), torch.from_numpy(best)


class CoresetSelector:
    """Core-set selection (Sener & Savarese 2018, "Active Learning for Convolutional Neural
    Networks: A Core-Set Approach"), greedy k-center version: the b points that greedily
    minimize the largest distance from any pool point to its nearest labeled or selected
    point, in the penultimate feature space (:func:`k_center_greedy`)."""


    def __init__(self, prune: bool | None = None):
        self.prune = prune

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        feats = _field(pool, "features")
        labeled = getattr(pool, "labeled_features", None)
        labeled = None if labeled is None else labeled.detach()
        return k_center_greedy(feats, labeled, b, generator, prune=self.prune)


# ---------------------------------------------------------------------------- TypiClust
def kmeans(x: torch.Tensor, k: int, generator: torch.Generator, *, iters: int = 30,
           block: int = KCENTER_BLOCK) -> torch.Tensor:
    """Lloyd's k-means from a k-means++ seeding (Arthur & Vassilvitskii 2007, as sklearn's
    KMeans; :func:`asknlearn.kmeanspp.kmeanspp_factored` with u = 1 seeds on x itself, drawing
    from ``generator``). Assignments by blocks of rows (never an N × k matrix at once); stops
    when no point changes cluster or after ``iters`` rounds. An empty cluster keeps its centre.
    Returns the (N,) cluster ids."""
    n = len(x)
    seeds = kmeanspp_factored(x.new_ones(n, 1), x, k, generator)
    cent = x[seeds.to(x.device)].double()
    labels = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(iters):
        c = cent.to(x.dtype)
        cn = (cent * cent).sum(1).to(x.dtype)
        # argmin over centres of ‖c‖² − 2⟨x, c⟩ (‖x‖² is the same for every centre), in the
        # input dtype: an assignment needs no more precision than the features carry
        new = torch.cat([torch.addmm(cn, x[s : s + block], c.T, alpha=-2.0).argmin(1)
                         for s in range(0, n, block)])
        if torch.equal(new, labels):
            break
        labels = new
        sums = torch.zeros_like(cent)
        for s in range(0, n, block):
            sums.index_add_(0, labels[s : s + block], x[s : s + block].double())
        counts = torch.bincount(labels, minlength=k)
        full = counts > 0
        cent[full] = sums[full] / counts[full, None]
    return labels


def typicality(x: torch.Tensor, neighbours: int) -> torch.Tensor:
    """Typicality (Hacohen et al. 2022, eq. 4): the inverse of the mean squared Euclidean
    distance to the ``neighbours`` nearest other points (squared, as in their FAISS
    IndexFlatL2 code; 1e-5 added to the mean as there)."""
    d2 = torch.cdist(x.double(), x.double()).square_()
    d2.fill_diagonal_(float("inf"))
    nearest = torch.topk(d2, neighbours, dim=1, largest=False).values
    return 1.0 / (nearest.mean(1) + 1e-5)


class TypiclustSelector:
    """TypiClust (Hacohen, Dekel & Weinshall 2022, "Active Learning on a Budget: Opposite
    Strategies Suit High and Low Budgets"), on the penultimate features.

    The labeled and pool points are clustered together by k-means into min(M + b, 500)
    clusters; clusters of at most 5 points are dropped; the rest are visited in the order of
    fewest labeled points, then largest size, cycling when b exceeds their number. From each
    visited cluster the most typical unlabeled point (:func:`typicality`, among
    min(20, size // 2) neighbours in the cluster's remaining unlabeled points) is taken. The
    constants and the visiting rule are those of the authors' code; their features are
    self-supervised (SimCLR), ours are the trained network's. Their clustering is sklearn's
    (MiniBatch)KMeans; ours is :func:`kmeans` with ``generator``. Meant for the low-budget
    regime; its cost is the clustering, O(iters · N · k · D).
    """

    MIN_CLUSTER_SIZE = 5
    MAX_CLUSTERS = 500
    K_NN = 20

    def __init__(self, n_clusters: int | None = None):
        self.n_clusters = n_clusters

    def select(self, pool: Pool, b: int, generator: torch.Generator) -> torch.Tensor:
        feats = _field(pool, "features")
        n = len(feats)
        _check_b(b, n)
        labeled = getattr(pool, "labeled_features", None)
        labeled = feats.new_zeros(0, feats.shape[1]) if labeled is None else labeled.detach()
        m = len(labeled)
        allx = torch.cat([feats, labeled.to(feats)]).cpu()
        k = self.n_clusters or min(m + b, self.MAX_CLUSTERS)
        labels = kmeans(allx, min(k, len(allx)), generator)
        sizes = torch.bincount(labels, minlength=k)
        have = torch.bincount(labels[n:], minlength=k)
        ids = torch.nonzero(sizes > self.MIN_CLUSTER_SIZE).squeeze(1)
        # fewest labeled first, then largest (a stable two-key sort)
        ids = ids[torch.argsort(-sizes[ids], stable=True)]
        ids = ids[torch.argsort(have[ids], stable=True)]
        free = labels[:n].clone()  # a pool point's cluster id while unlabeled, then -1
        picks: list[int] = []
        idle = i = 0
        while len(picks) < b and idle < len(ids):
            members = torch.nonzero(free == ids[i % len(ids)]).squeeze(1)
            i += 1
            if len(members) == 0:  # exhausted: the next cluster
                idle += 1
                continue
            idle = 0
            nn = min(self.K_NN, max(len(members) // 2, 1))
            best = members[int(typicality(feats[members].cpu(), nn).argmax())] \
                if len(members) > 1 else members[0]
            picks.append(int(best))
            free[best] = -1
        if len(picks) < b:  # every eligible cluster exhausted: the rest uniformly
            taken = torch.zeros(n, dtype=torch.bool)
            taken[torch.tensor(picks, dtype=torch.long)] = True
            rest = torch.nonzero(~taken).squeeze(1)
            picks += rest[torch.randperm(len(rest), generator=generator)[: b - len(picks)]].tolist()
        return torch.tensor(picks, dtype=torch.long)

