"""Gradient embeddings (eq. 4) and k-means++ seeding on them without materializing them.

A gradient embedding is g = u ⊗ z with u = p − e_ŷ (K values) and z the penultimate
features (D values). Inner products factor, ⟨g_a, g_c⟩ = ⟨u_a, u_c⟩·⟨z_a, z_c⟩, so squared
distances to a centre need at most one pass over U (N×K) and Z (N×D): memory and time
O(N·(K + D)) per centre instead of O(N·K·D).

Seeding rule (as in the BADGE reference code, Ash et al. 2019): the first centre is the point
of largest gradient norm; every next centre is drawn with probability proportional to its
squared distance to the nearest chosen centre (D² sampling, Arthur & Vassilvitskii 2006), by
inverse CDF on one uniform per centre. The b − 1 uniforms are drawn from the caller's
generator up front, which yields exactly the values of one draw per centre in order. The
inverse CDF is taken in two levels (block sums, then within the block): no sequential prefix
sum over the pool per draw, and the pruned path re-sums only the blocks whose D² changed
(the same sums, bit for bit). Chosen points have distance 0 and are never drawn again.

Exact pruning (the CPU default). The factored form bounds every point's distance to the new
centre c from below without reading its features: with a = ⟨u_x, u_c⟩ (K floats per point),
Cauchy–Schwarz on the features gives ‖g_x − g_c‖² ≥ ‖g_x‖² + ‖g_c‖² − 2·a⁺·‖z_x‖·‖z_c‖
(a⁺ = max(a, 0) for non-negative features, as after a ReLU; |a| otherwise). A point whose
bound is not below its current D² cannot move. Points are grouped into blocks of one
pseudo-class and similar norm, and a block's box bound on a (from the per-coordinate
extremes of its u) skips the whole block: gradient embeddings of different pseudo-classes are
nearly orthogonal, so a centre mostly touches blocks of its own class, and only the points
that may move have their feature rows read. This is the bound-and-skip idea of exact
accelerated k-means++ seeding (Raff 2021) specialized to the structure of eq. 4. The bounds
carry the float rounding of the dot products as a margin: pruning never skips a point that
the full pass would update, so both give the same picks.
"""

from __future__ import annotations

import numpy as np
import torch

DRAW_BLOCK = 128  # points per block of the two-level inverse CDF
PRUNE_BLOCK = 128  # points per block of the pruning bounds
STREAM_FRACTION = 0.125  # above this fraction of rows to read, one streaming pass replaces a gather


def embedding_factors(probs: torch.Tensor, pseudo_labels: torch.Tensor) -> torch.Tensor:
    """u = p − e_ŷ (N, K), the class factor of eq. 4 for the cross-entropy loss."""
    u = probs.clone()
    u[torch.arange(len(u), device=u.device), pseudo_labels] -= 1.0
    return u


def gradient_embedding(probs: torch.Tensor, feats: torch.Tensor, pseudo_labels: torch.Tensor):
    """Dense eq. 4 embeddings (N, K·D), row-major like the head's weight matrix. For tests and
    small N only: the selector itself never builds this."""
    u = embedding_factors(probs, pseudo_labels)
    return (u[:, :, None] * feats[:, None, :]).reshape(len(u), -1)


# ---------------------------------------------------------------------------- draws
def _uniforms(b: int, generator: torch.Generator) -> torch.Tensor:
    """The b − 1 uniforms of the D² draws (float64, CPU): the same values, in the same order,
    as b − 1 single draws from ``generator``."""
    return torch.rand(max(b - 1, 0), generator=generator, dtype=torch.float64)


def _padded(n: int, block: int = DRAW_BLOCK) -> int:
    return -(-n // block) * block


def _draw_np(d2: np.ndarray, r: float, block: int = DRAW_BLOCK,
             sums: np.ndarray | None = None) -> int | None:
    """Index drawn with probability ∝ ``d2`` (float64, zero-padded to a multiple of ``block``)
    for the uniform ``r``; None if all of ``d2`` is zero.

    The first index whose cumulative mass exceeds r·total, found over block sums and then
    inside one block; capped at the last point with mass (r·total can round onto the total).
    ``sums`` may hold the block sums already (``d2.reshape(-1, block).sum(1)``).
    """
    cs = np.cumsum(d2.reshape(-1, block).sum(1) if sums is None else sums)
    total = cs[-1]
    if not total > 0:
        return None
    target = r * total
    j = min(int(np.searchsorted(cs, target, "right")), int(np.searchsorted(cs, total, "left")))
    local = np.cumsum(d2[j * block : (j + 1) * block])
    rest = target - (cs[j - 1] if j else 0.0)
    i = min(int(np.searchsorted(local, rest, "right")), int(np.searchsorted(local, local[-1], "left")))
    return j * block + i


def _draw_torch(d2: torch.Tensor, r: torch.Tensor, block: int = DRAW_BLOCK) -> tuple[torch.Tensor, ...]:
    """:func:`_draw_np` with tensor ops only (no host synchronization on a GPU): returns the
    index and the total mass, both 1-element tensors."""
    rows = d2.view(-1, block)
    cs = torch.cumsum(rows.sum(1), 0)
    total = cs[-1:]
    target = r * total
    j = torch.minimum(torch.searchsorted(cs, target, right=True), torch.searchsorted(cs, total))
    local = torch.cumsum(rows.index_select(0, j).squeeze(0), 0)
    before = torch.where(j > 0, cs.index_select(0, (j - 1).clamp_min(0)), torch.zeros_like(total))
    rest = target - before
    i = torch.minimum(torch.searchsorted(local, rest, right=True), torch.searchsorted(local, local[-1:]))
    return j * block + i, total


def _fill_duplicates(picks: list[int], n: int, b: int, generator: torch.Generator) -> torch.Tensor:
    """Every remaining point has D² = 0 (duplicates): the rest uniformly from the unchosen."""
    chosen = torch.zeros(n, dtype=torch.bool)
    chosen[torch.tensor(picks, dtype=torch.long)] = True
    rest = torch.nonzero(~chosen).squeeze(1)
    extra = rest[torch.randperm(len(rest), generator=generator)[: b - len(picks)]]
    return torch.tensor(picks + extra.tolist(), dtype=torch.long)


# ---------------------------------------------------------------------------- distances
# Squared distances from norms and dot products, ‖x‖² + ‖c‖² − 2⟨x, c⟩ (dot products in the
# input dtype, the rest in float64): shared by the k-means++ seeding here and the greedy
# k-center of asknlearn.selectors.baselines, so both round the same way.
def sq_norms(x: torch.Tensor, chunk: int = 2048, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Row sums of squares accumulated in float64, ``chunk`` rows at a time, so the pool is
    never copied whole. The squares are taken in ``dtype`` (None: ``x``'s own; float64 makes
    them exact for float32 rows)."""
    out = torch.empty(len(x), dtype=torch.float64, device=x.device)
    for s in range(0, len(x), chunk):
        xs = x[s : s + chunk] if dtype is None else x[s : s + chunk].to(dtype)
        out[s : s + chunk] = (xs * xs).sum(1, dtype=torch.float64)
    return out


def _sq_dists(xn: torch.Tensor, cn: torch.Tensor, dots: torch.Tensor) -> torch.Tensor:
    """‖x‖² + ‖c‖² − 2⟨x, c⟩ from float64 norms (broadcast) and float64 dot products,
    clamped at 0 (rounding can make it slightly negative)."""
    return (xn + cn).sub_(dots, alpha=2.0).clamp_min_(0.0)


def nearest_sq_dists(x: torch.Tensor, centres: torch.Tensor, xn: torch.Tensor, cn: torch.Tensor,
                     block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared distance of each row of ``x`` to its nearest row of ``centres``, the index of
    that centre), ``block`` rows of ``x`` at a time against all centres (never an N × M matrix
    at once); ``xn``/``cn`` are their :func:`sq_norms`. Without centres: inf and 0."""
    n = len(x)
    mind = torch.full((n,), float("inf"), dtype=torch.float64, device=x.device)
    assign = torch.zeros(n, dtype=torch.long, device=x.device)
    for s in range(0, n if len(centres) else 0, block):
        dots = (x[s : s + block] @ centres.T).double()
        mind[s : s + block], assign[s : s + block] = _sq_dists(xn[s : s + block, None], cn,
                                                               dots).min(1)
    return mind, assign


def add_centre(d2: torch.Tensor, xn: torch.Tensor, dots: torch.Tensor, c: torch.Tensor) -> None:
    """One more centre, row ``c`` (a (1,) index tensor) of the pool: ``d2``, each point's
    squared distance to its nearest centre, becomes min(d2, its distance to c) in place, and
    d2[c] = 0. ``xn``: the pool's :func:`sq_norms`; ``dots``: ⟨x, x_c⟩ for every point
    (float64). Everything stays on the device: no host synchronization."""
    torch.minimum(d2, _sq_dists(xn, xn.index_select(0, c), dots), out=d2)
    d2.index_fill_(0, c, 0.0)


class _one_thread:
    """Run a block on one torch CPU thread, restoring the setting after.

    The pruned seeding is a few hundred microseconds of small operations per centre;
    splitting them across threads gains little and, on a shared CPU, every parallel region
    waits for a descheduled thread (milliseconds each).
    """

    def __enter__(self) -> None:
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.threads)


# ---------------------------------------------------------------------------- seeding
def kmeanspp_factored(
    u: torch.Tensor,
    z: torch.Tensor,
    b: int,
    generator: torch.Generator,
    *,
    prune: bool | None = None,
    stats: dict | None = None,
) -> torch.Tensor:
    """Select ``b`` distinct rows by k-means++ seeding on g = u ⊗ z, never forming g.

    ``u`` (N, K) and ``z`` (N, D) may be float32 (dot products in float32, distances and D²
    accumulated in float64) or float64. ``prune`` skips points whose distance provably
    cannot shrink (module docstring; CPU tensors only); ``None`` prunes on the CPU and runs
    the synchronization-free full pass on other devices. Both give the same picks. A
    ``stats`` dict receives ``feature_rows_read`` (rows of ``z`` read after the norms; N per
    centre without pruning) and ``u_rows_read`` for benchmarks.

    Returns int64 indices (b,) on the CPU into the rows of ``u``/``z``. If every remaining
    point has zero distance (duplicates), the rest are drawn uniformly from the unchosen
    points (after the b − 1 uniforms).
    """
    n = len(u)
    if not 0 < b <= n:
        raise ValueError(f"b={b} must be in 1..{n}")
    if len(z) != n:
        raise ValueError(f"u has {n} rows but z has {len(z)}; valid: the same pool for both")
    if prune is None:
        prune = u.device.type == "cpu"
    if prune and u.device.type != "cpu":
        raise ValueError(f"prune=True needs CPU tensors, got {u.device}; valid: prune=False or None")
    if stats is None:
        stats = {}
    stats["feature_rows_read"] = 0
    stats["u_rows_read"] = 0
    r = _uniforms(b, generator)
    if prune:
        with _one_thread():
            zn = sq_norms(z)
            gn = sq_norms(u) * zn  # ||g||² = ||u||²·||z||²
            c = int(torch.argmax(gn))
            if b == 1:
                return torch.tensor([c])
            return _seed_pruned(u.contiguous(), z.contiguous(), b, generator, r, zn.numpy(),
                                gn.numpy(), c, stats)
    zn = sq_norms(z)
    gn = sq_norms(u) * zn
    c = torch.argmax(gn)
    if b == 1:
        return c.view(1).cpu()
    stats["feature_rows_read"] = stats["u_rows_read"] = n * (b - 1)
    return _seed_full_pass(u, z, b, generator, r, gn, c)


def _seed_full_pass(u, z, b, generator, r, gn, c) -> torch.Tensor:
    """One pass over U and Z per centre. On a GPU everything stays on the device with no
    host synchronization in the loop; an all-zero D² is detected once at the end."""
    n, dev = len(u), u.device
    on_cpu = dev.type == "cpu"
    d2 = torch.zeros(_padded(n), dtype=torch.float64, device=dev)
    d2[:n] = float("inf")
    picks = torch.empty(b, dtype=torch.long, device=dev)
    totals = torch.empty(b - 1, dtype=torch.float64, device=dev)
    rd = r.to(dev)
    picks[0] = c
    for t in range(b - 1):
        ci = c.view(1)
        dots = (u @ u.index_select(0, ci).squeeze(0)).double()
        dots *= (z @ z.index_select(0, ci).squeeze(0)).double()  # ⟨g, g_c⟩ (eq. 4 factored)
        add_centre(d2[:n], gn, dots, ci)
        if on_cpu:  # the same draw as the pruned path and the dense reference, bit for bit
            i = _draw_np(d2.numpy(), float(r[t]))
            if i is None:
                return _fill_duplicates(picks[: t + 1].tolist(), n, b, generator)
            c = torch.tensor(i)
        else:
            c, totals[t : t + 1] = _draw_torch(d2, rd[t : t + 1])
            c = c.squeeze(0)
        picks[t + 1] = c
    if not on_cpu:
        picks, totals = picks.cpu(), totals.cpu()
        empty = torch.nonzero(totals <= 0)
        if len(empty):
            return _fill_duplicates(picks[: int(empty[0]) + 1].tolist(), n, b, generator)
    return picks


def _seed_pruned(u, z, b, generator, r, zn, gn, c: int, stats: dict) -> torch.Tensor:
    """Bound, skip, then read feature rows only for the points that may move (module
    docstring). The bookkeeping is numpy on views of the tensors (about a microsecond per
    operation instead of a torch dispatch); the dot products are torch, as in the full pass."""
    n, k = u.shape
    un = u.numpy()
    zl = np.sqrt(zn)
    eps = float(torch.finfo(z.dtype).eps)
    # a dot product of length L computed in floating point is within (L + 2)·eps of the exact
    # one relative to Σ|terms| (Higham's γ_L); twice that is a margin for any summation order
    zmargin = 2.0 * (1.0 + 2.0 * (z.shape[1] + 2) * eps)  # factor 2 of the cross term included
    umargin = 2.0 * (k + 2) * eps
    nonneg = bool(z.min() >= 0)

    # blocks of one most-negative u coordinate (ŷ for u = p − e_ŷ) and similar norm
    bp = PRUNE_BLOCK
    nbp = -(-n // bp)
    size = nbp * bp
    perm = np.lexsort((gn, un.argmin(1)))
    pos = np.empty(n, dtype=np.int64)
    pos[perm] = np.arange(n)
    up = np.zeros((size, k), dtype=un.dtype)
    up[:n] = un[perm]
    up_blocks = torch.from_numpy(up).view(nbp, bp * k)
    ub = up.reshape(nbp, bp, k).astype(np.float64)
    umax, umin = ub.max(1), ub.min(1)
    uabs = np.maximum(np.abs(umax), np.abs(umin))
    del ub
    # a ≤ umax·uc⁺ − umin·uc⁻ over a block (box bound), + the rounding of a computed a:
    # one matrix-vector product with [uc⁺, uc⁻, |uc|] gives every block's bound
    box = np.hstack([umax, -umin, umargin * uabs])
    if not nonneg:  # the lower bound too, for |a|
        box = np.vstack([box, np.hstack([umin, -umax, -umargin * uabs])])
    box = torch.from_numpy(np.ascontiguousarray(box))
    zlp = np.zeros(size)
    zlp[:n] = zl[perm]
    zlp = zlp.reshape(nbp, bp)
    zlmax = zlp.max(1)
    gnp = np.zeros(size)
    gnp[:n] = gn[perm]
    origp = np.zeros(size, dtype=np.int64)
    origp[:n] = perm
    # slack = ‖g‖² − D² − 1e-12·‖g‖² (the last term: room for the float64 rounding of slack
    # itself): x may move only if its reach 2·a⁺·‖z_x‖‖z_c‖ exceeds slack + ‖g_c‖²
    slack = np.full((nbp, bp), -np.inf)
    slack.ravel()[n:] = np.inf  # padding never moves
    slack_flat = slack.ravel()
    smin = slack.min(1)
    d2 = np.zeros(_padded(n))
    d2[:n] = np.inf
    d2_rows = d2.reshape(-1, DRAW_BLOCK)
    changed = np.zeros(len(d2_rows), dtype=bool)
    rn = r.numpy()
    picks = [c]
    for t in range(b - 1):
        uc = un[c].astype(np.float64)
        gc = gn[c] * (1.0 - 1e-12)
        zc = zl[c] * zmargin
        ucv = np.concatenate([np.maximum(uc, 0.0), np.maximum(-uc, 0.0), np.abs(uc)])
        bound = torch.mv(box, torch.from_numpy(ucv)).numpy()
        amax = bound if nonneg else np.maximum(bound[:nbp], -bound[nbp:])
        live = np.flatnonzero(np.maximum(amax, 0.0) * zlmax * zc > smin + gc)
        if len(live):
            nl = len(live)
            a = torch.mv(up_blocks.index_select(0, torch.from_numpy(live)).view(nl * bp, k), u[c]).numpy()
            stats["u_rows_read"] += nl * bp
            ap = np.maximum(a, 0.0) if nonneg else np.abs(a)
            reach = ap.reshape(nl, bp) * zlp[live]
            reach *= zc
            sl = slack[live]
            sel = np.flatnonzero(reach > sl + gc)
            if len(sel):
                pidx = live[sel // bp] * bp + sel % bp
                oi = origp[pidx]
                m = len(oi)
                stats["feature_rows_read"] += m
                if m > STREAM_FRACTION * n:  # the first centres: stream, no copy of many rows
                    s = torch.mv(z, z[c]).numpy()[oi]
                else:
                    s = torch.mv(z.index_select(0, torch.from_numpy(oi)), z[c]).numpy()
                dots = s.astype(np.float64) * a[sel]
                gi = gnp[pidx]
                dist = gi + gn[c] - 2.0 * dots
                np.maximum(dist, 0.0, out=dist)
                new = np.minimum(d2[oi], dist)
                d2[oi] = new
                # block sums of the draw, recomputed for the blocks that changed only
                changed[oi // DRAW_BLOCK] = True
                slack_flat[pidx] = gi * (1.0 - 1e-12) - new
                smin[live] = slack[live].min(1)
        pc = pos[c]
        d2[c] = 0.0
        slack_flat[pc] = gn[c] * (1.0 - 1e-12)
        smin[pc // bp] = slack[pc // bp].min()
        changed[c // DRAW_BLOCK] = True
        touched = np.flatnonzero(changed)
        if t == 0 or 2 * len(touched) > len(changed):
            sums = d2_rows.sum(1)
        else:
            sums[touched] = d2_rows[touched].sum(1)
        changed[touched] = False
        nxt = _draw_np(d2, float(rn[t]), sums=sums)
        if nxt is None:
            return _fill_duplicates(picks, n, b, generator)
        c = nxt
        picks.append(c)
    return torch.tensor(picks, dtype=torch.long)


def kmeanspp_dense(g: torch.Tensor, b: int, generator: torch.Generator) -> torch.Tensor:
    """Reference k-means++ seeding on explicit embeddings (N, K·D); same rule and draws."""
    n = len(g)
    g = g.double().cpu()
    r = _uniforms(b, generator)
    c = int(torch.argmax((g * g).sum(1)))
    picks = [c]
    d2 = np.zeros(_padded(n))
    d2[:n] = np.inf
    chosen = torch.zeros(n, dtype=torch.bool)
    for t in range(b - 1):
        chosen[c] = True
        np.minimum(d2[:n], ((g - g[c]) ** 2).sum(1).numpy(), out=d2[:n])
        d2[:n][chosen.numpy()] = 0.0
        nxt = _draw_np(d2, float(r[t]))
        if nxt is None:
            return _fill_duplicates(picks, n, b, generator)
        c = nxt
        picks.append(c)
    return torch.tensor(picks, dtype=torch.long)
