"""Several cells' MLPs trained in one process as one batched computation (issue 26, item 3).

A cell of a study trains a small network per round (the MLP of section 4.1 on L, from a fresh
initialization, to 99 % training accuracy, Ash et al. 2019). At batch 64 on a CPU such a step is
dominated by per-operation overhead, not FLOPs, and the cells of a study are independent. Here
M cells' networks are stacked along a leading dimension and every layer runs as one grouped
matmul (``baddbmm``) for all of them, so M steps cost about one step's overhead.

Each cell keeps everything :func:`asknlearn.train.train_model` gives it alone:

* its own labeled set (sizes may differ: batches are padded to the step's largest and the
  padded rows carry zero weight in the loss);
* its own batch order: the per-epoch permutation and the augmentation draws come from the
  cell's own generator, in the order ``train_model`` draws them, so the cell sees exactly the
  batches it would alone;
* its own dropout masks (stochastic network, VWCC): drawn per cell, with the same call and
  shape as ``F.dropout`` on the CPU, from a generator seeded as the loop seeds torch's global
  RNG for the round (``derive_seed(seed, "dropout", round)``);
* its own Adam state: Adam is elementwise, so Adam over the stacked parameters is Adam per
  cell, provided the cells that step share a step count. They do: every active cell steps at
  every global step, and a cell that stops is taken out of the stack (compaction), its
  parameters copied back into its model and never touched again;
* its own stopping rule: after each of ITS epochs one eval-mode pass over ITS L, stop at
  ``target_accuracy`` or ``max_epochs``.

The results differ from training each cell alone only by floating-point reassociation (a
batched matmul sums in another order than a plain one; a loss is a weighted sum instead of a
mean). tests/test_batched.py checks weights, predictions and epochs per cell against
``train_model``.

Scope: networks built by :func:`asknlearn.models.mlp_trunk` under a
:class:`~asknlearn.models.SplitNet` head (the MLP of every MNIST-like study), losses CE, LWCC
(eq. 3) and VWCC (eq. 2). The CNNs are compute-bound at their batch sizes (a ResNet-18 step is
tens of milliseconds of FLOPs), so stacking them saves next to nothing; they are refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from asknlearn.losses import LWCC, VWCC, CrossEntropy, kl_uniform, lwcc_beta, vwcc_alpha
from asknlearn.models import MCDropout, SplitNet
from asknlearn.train import TrainingDiverged, TrainResult, batch_bounds

_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam's defaults, which train_model uses


class NotBatchable(ValueError):
    """The models or losses are not ones this engine can stack (one line says which and why)."""


# ---------------------------------------------------------------------------- the network
@dataclass(frozen=True)
class _MLPSpec:
    """The stackable structure: hidden Linear layers, each followed by ReLU and a dropout of
    rate ``p`` (0: none), then the linear head."""

    dims: tuple[int, ...]  # input, hidden..., classes
    p: float


def _mlp_spec(model: nn.Module) -> _MLPSpec:
    """The structure of ``model`` if it is an :func:`mlp_trunk` MLP under a SplitNet head."""
    if not isinstance(model, SplitNet) or not isinstance(model.trunk, nn.Sequential):
        raise NotBatchable(f"model {type(model).__name__} is not a SplitNet with an MLP trunk; "
                           "valid: the 'mlp' model (asknlearn.models.mlp_trunk)")
    layers = list(model.trunk)
    if not layers or not isinstance(layers[0], nn.Flatten) or (len(layers) - 1) % 3:
        raise NotBatchable("model trunk is not Flatten + [Linear, ReLU, MCDropout]*k; valid: the "
                           "'mlp' model (asknlearn.models.mlp_trunk)")
    dims, rates = [], set()
    for i in range(1, len(layers), 3):
        lin, act, drop = layers[i : i + 3]
        if not (isinstance(lin, nn.Linear) and lin.bias is not None and isinstance(act, nn.ReLU)
                and isinstance(drop, MCDropout)):
            raise NotBatchable(f"model trunk layers {i}-{i + 2} are {type(lin).__name__}, "
                               f"{type(act).__name__}, {type(drop).__name__}; valid: Linear, "
                               "ReLU, MCDropout (asknlearn.models.mlp_trunk)")
        dims.append(lin.in_features)
        rates.add(drop.p)
    if len(rates) > 1:
        raise NotBatchable(f"model has dropout rates {sorted(rates)}; valid: one rate")
    dims += [model.head.in_features, model.head.out_features]
    return _MLPSpec(tuple(dims), rates.pop() if rates else 0.0)


def _params(model: SplitNet) -> list[torch.Tensor]:
    """Weights and biases in layer order: [W1, b1, W2, b2, ..., W_head, b_head]."""
    out = []
    for m in [*model.trunk, model.head]:
        if isinstance(m, nn.Linear):
            out += [m.weight, m.bias]
    return out


def _forward(params: Sequence[torch.Tensor], x: torch.Tensor,
             masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
    """Logits (M, B, K) of M stacked MLPs on x (M, B, D): one baddbmm per layer for all cells.
    ``masks`` (M, B, H) per hidden layer, already scaled by 1/(1 − p) as ``F.dropout`` scales
    its noise, multiply each hidden activation (the training-mode dropout)."""
    h = x
    n_hidden = len(params) // 2 - 1
    for i in range(n_hidden):
        w, b = params[2 * i], params[2 * i + 1]
        h = torch.relu(torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2)))
        if masks is not None:
            h = h * masks[i]
    w, b = params[-2], params[-1]
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


# ---------------------------------------------------------------------------- the losses
def _loss_kind(loss) -> tuple[str, float, int]:
    """(family, λ, T): CE is LWCC with λ = 0 (the extra term is an exact zero), so the two mix
    in one stack; VWCC needs T stochastic passes and cannot mix with them."""
    if isinstance(loss, CrossEntropy):
        return "ce", 0.0, 1
    if isinstance(loss, LWCC):
        return "ce", float(loss.lam), 1
    if isinstance(loss, VWCC):
        return "vwcc", 0.0, int(loss.samples)
    raise NotBatchable(f"loss {type(loss).__name__} cannot be batched; valid: CrossEntropy, "
                       "LWCC, VWCC (asknlearn.losses)")


def _ce_lwcc(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor, lam: torch.Tensor | None
             ) -> torch.Tensor:
    """Per cell (M,): Σ_i w_i [ℓ_ce^i + λ_c β_i D_KL(U || p_i)] (eq. 3; λ_c = 0 is cross-entropy), with
    w_i = 1/b_c on a cell's b_c real rows and 0 on padding: each cell's term is its mean loss."""
    log_p = F.log_softmax(logits, dim=-1)
    ce = -log_p.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    if lam is None:  # cross-entropy in every cell: skip the exact zeros of the LWCC term
        return (ce * w).sum(1)
    beta = lwcc_beta(log_p.detach().exp(), y)
    per = ce + lam[:, None] * beta * kl_uniform(log_p)
    return (per * w).sum(1)


def _vwcc(logits_t: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per cell (M,): mean_{t,i} [(1 − α_i) ℓ_ce(p_t) + α_i D_KL(U || p_t)] (eq. 2) on logits
    (M, T, B, K); α_i from the cell's own T passes, detached; w as in :func:`_ce_lwcc`."""
    t = logits_t.shape[1]
    log_p = F.log_softmax(logits_t, dim=-1)
    alpha = vwcc_alpha(log_p.detach().exp().transpose(0, 1))  # vwcc_alpha takes T first
    ce = -log_p.gather(-1, y[:, None, :, None].expand(-1, t, -1, 1)).squeeze(-1)  # (M, T, B)
    per = (1.0 - alpha[:, None]) * ce + alpha[:, None] * kl_uniform(log_p)
    return (per * (w / t)[:, None, :]).sum((1, 2))


# ---------------------------------------------------------------------------- one cell's schedule
class _Cell:
    """One cell's data, generators and position in its own epoch."""

    def __init__(self, index: int, x: torch.Tensor, y: torch.Tensor, offset: int,
                 gen: torch.Generator, drop_gen: torch.Generator | None, lam: float,
                 target: float, max_epochs: int, batch_size: int):
        self.index, self.x, self.y, self.offset = index, x, y, offset
        self.gen, self.drop_gen, self.lam = gen, drop_gen, lam
        self.target, self.max_epochs = target, max_epochs
        self.bounds = batch_bounds(len(y), batch_size)
        self.epoch, self.step, self.acc = 0, 0, 0.0
        self.perm: torch.Tensor | None = None
        self.t0 = time.perf_counter()

    def next_batch(self) -> torch.Tensor:
        """The rows of this cell's next batch in the concatenated data of all cells; a new
        epoch draws its permutation first, from the cell's generator, as train_model does."""
        if self.step == 0:
            self.epoch += 1
            perm = torch.randperm(len(self.y), generator=self.gen).to(self.x.device)
            self.perm = perm + self.offset
        s, e = self.bounds[self.step]
        self.step += 1
        return self.perm[s:e]  # type: ignore[index]

    @property
    def epoch_done(self) -> bool:
        return self.step == len(self.bounds)


def _stack_rows(rows: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """(M, width, ...) from M tensors of ≤ width rows, zero-padded."""
    out = rows[0].new_zeros((len(rows), width, *rows[0].shape[1:]))
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _dropout_masks(spec: _MLPSpec, cells: Sequence[_Cell], active: Sequence[int],
                   idx: Sequence[torch.Tensor], width: int, t: int, device: torch.device
                   ) -> list[torch.Tensor]:
    """Per hidden layer, the (M, t·width, H) dropout noise of this step: each cell's from its
    own generator, drawn as F.dropout draws it on the CPU (``empty_like(input).bernoulli_(1 −
    p)`` divided by 1 − p) for its (t·b, H) activation, layer after layer as its forward pass
    would; T-major rows as :meth:`SplitNet.stochastic_logits` stacks its T copies. The draws
    are per cell (O(M) small calls a layer): this is where batching a dropout net gains less."""
    keep = 1.0 - spec.p
    noise = [torch.zeros(len(active), t, width, h) for h in spec.dims[1:-1]]
    for j, (c, i) in enumerate(zip(active, idx, strict=True)):
        for layer, h in enumerate(spec.dims[1:-1]):
            nz = torch.empty(t * len(i), h).bernoulli_(keep, generator=cells[c].drop_gen)
            noise[layer][j, :, : len(i)] = nz.div_(keep).view(t, len(i), h)
    return [n.view(len(active), t * width, -1).to(device) for n in noise]


# ---------------------------------------------------------------------------- the engine
@torch.no_grad()
def _adam(params: list[torch.Tensor], m1: list[torch.Tensor], m2: list[torch.Tensor], step: int,
          lr: float, weight_decay: float) -> None:
    """torch.optim.Adam's single-tensor CPU update, op for op, on stacked parameters: every op
    is elementwise, so each cell's slice gets exactly the update it would get alone."""
    bias_correction1 = 1 - _BETA1 ** float(step)
    bias_correction2 = 1 - _BETA2 ** float(step)
    step_size = lr / bias_correction1
    bc2_sqrt = bias_correction2 ** 0.5
    for p, a, s in zip(params, m1, m2, strict=True):
        g = p.grad
        if weight_decay != 0:
            g = g.add(p, alpha=weight_decay)
        a.lerp_(g, 1 - _BETA1)
        s.mul_(_BETA2).addcmul_(g, g, value=1 - _BETA2)
        denom = (s.sqrt() / bc2_sqrt).add_(_EPS)
        p.addcdiv_(a, denom, value=-step_size)


@torch.no_grad()
def _eval_accuracy(params: Sequence[torch.Tensor], rows: Sequence[int], cells: Sequence[_Cell],
                   chunk: int) -> list[float]:
    """Eval-mode accuracy of the networks in rows ``rows`` of the stack, each on its cell's
    whole L (``cells``, in the same order): train_model's stopping criterion, one padded
    batch per chunk for all of them."""
    sel = torch.tensor(rows, device=params[0].device)
    ps = [p.index_select(0, sel) for p in params]
    n_max = max(len(c.y) for c in cells)
    correct = [0] * len(rows)
    for s in range(0, n_max, chunk):
        xs = [c.x[s : s + chunk] for c in cells]
        width = max(len(x) for x in xs)
        pred = _forward(ps, _stack_rows(xs, width)).argmax(-1)
        for j, c in enumerate(cells):
            yb = c.y[s : s + chunk]
            correct[j] += int((pred[j, : len(yb)] == yb).sum())
    return [correct[j] / max(len(c.y), 1) for j, c in enumerate(cells)]


def train_batched(
    models: Sequence[SplitNet],
    losses: Sequence,
    xs: Sequence[torch.Tensor],
    ys: Sequence[torch.Tensor],
    generators: Sequence[torch.Generator],
    *,
    dropout_generators: Sequence[torch.Generator] | None = None,
    lr: float = 1e-3,
    batch_size: int = 64,
    target_accuracy: float | Sequence[float] = 0.99,
    max_epochs: int | Sequence[int] = 200,
    weight_decay: float = 0.0,
    eval_batch_size: int = 4096,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
) -> list[TrainResult | TrainingDiverged]:
    """Train M cells' MLPs together; cell c as ``train_model(models[c], losses[c], xs[c],
    ys[c], generator=generators[c], ...)`` would alone, up to floating-point reassociation.

    ``models`` come initialized (the loop's per-round fresh init) and leave trained, in eval
    mode, as train_model leaves its model. ``dropout_generators[c]`` replaces torch's global
    RNG of cell c for its dropout masks (seed it as the loop seeds the global RNG for the
    round); required when the network has dropout. ``target_accuracy`` and ``max_epochs`` may
    be per cell. Returns per cell its :class:`TrainResult`, or the :class:`TrainingDiverged`
    error of a cell whose loss became non-finite (that cell stops at the end of that epoch,
    as train_model would raise there; the others go on)."""
    m = len(models)
    if not (m == len(losses) == len(xs) == len(ys) == len(generators)) or m == 0:
        raise ValueError(f"train_batched: {m} models, {len(losses)} losses, {len(xs)} x, "
                         f"{len(ys)} y, {len(generators)} generators; valid: the same number >= 1")
    specs = {_mlp_spec(mod) for mod in models}
    if len(specs) > 1:
        raise NotBatchable(f"models differ in structure {sorted(map(str, specs))}; valid: one "
                           "MLP structure and dropout rate per batch")
    spec = specs.pop()
    kinds = [_loss_kind(loss) for loss in losses]
    if len({k[0] for k in kinds}) > 1 or len({k[2] for k in kinds}) > 1:
        raise NotBatchable(f"losses {[type(loss).__name__ for loss in losses]} mix VWCC with "
                           "others or its T; valid: CE/LWCC together, or VWCC with one T")
    family, samples = kinds[0][0], kinds[0][2]
    if family == "vwcc" and spec.p == 0:
        raise NotBatchable("VWCC on a network without dropout; valid: a dropout rate > 0")
    stochastic = spec.p > 0
    if stochastic and (dropout_generators is None or len(dropout_generators) != m):
        raise ValueError("train_batched: the network has dropout; valid: one dropout generator "
                         "per model (dropout_generators)")
    targets = [target_accuracy] * m if isinstance(target_accuracy, (int, float)) else list(target_accuracy)
    caps = [max_epochs] * m if isinstance(max_epochs, int) else list(max_epochs)
    device = xs[0].device
    offsets = [0]
    for y in ys:
        offsets.append(offsets[-1] + len(y))
    # all cells' labeled sets in one tensor (and a zero row for padding): one gather a step
    x_all = torch.cat([x.flatten(1) for x in xs] + [xs[0].new_zeros(1, xs[0][0].numel())])
    y_all = torch.cat([*ys, ys[0].new_zeros(1)])
    pad_row = offsets[-1]
    cells = [_Cell(c, xs[c].flatten(1), ys[c], offsets[c], generators[c],
                   dropout_generators[c] if stochastic else None,  # type: ignore[index]
                   kinds[c][1], targets[c], caps[c], batch_size) for c in range(m)]
    shapes = [xs[c].shape[1:] for c in range(m)]
    params = [torch.stack([p.detach() for p in ps]).requires_grad_()
              for ps in zip(*[_params(mod) for mod in models], strict=True)]
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    active = list(range(m))  # cell index of each row of the stack
    results: list[TrainResult | TrainingDiverged | None] = [None] * m
    finite = torch.ones(m, dtype=torch.bool, device=device)
    lam = torch.tensor([cell.lam for cell in cells], device=device)
    step = 0
    while active:
        step += 1
        idx = [cells[c].next_batch() for c in active]
        rows = pad_sequence(idx, batch_first=True, padding_value=pad_row)  # (M, width)
        width = rows.shape[1]
        x = x_all.index_select(0, rows.flatten()).view(len(active), width, -1)
        if augment is not None:  # per cell, from its generator, after its permutation
            x = _stack_rows([augment(x[j, : len(i)].view(len(i), *shapes[c]), cells[c].gen
                                     ).flatten(1) for j, (c, i) in enumerate(zip(active, idx,
                                                                                strict=True))],
                            width)
        y = y_all.index_select(0, rows.flatten()).view(len(active), width)
        n = torch.tensor([len(i) for i in idx], device=device)
        # 1/b_c on a cell's real rows, 0 on its padding: each cell's term is its batch mean
        w = (torch.arange(width, device=device) < n[:, None]) / n[:, None]
        masks = _dropout_masks(spec, cells, active, idx, width, samples if family == "vwcc" else 1,
                               device) if stochastic else None
        for p in params:
            p.grad = None
        if family == "vwcc":
            xt = x.unsqueeze(1).expand(-1, samples, -1, -1).reshape(len(active), samples * width, -1)
            logits = _forward(params, xt, masks).view(len(active), samples, width, -1)
            per_cell = _vwcc(logits, y, w)
        else:
            per_cell = _ce_lwcc(_forward(params, x, masks), y, w,
                                lam if any(cells[c].lam for c in active) else None)
        per_cell.sum().backward()  # the cells share no parameter: each gets its own gradient
        _adam(params, m1, m2, step, lr, weight_decay)
        finite &= torch.isfinite(per_cell.detach())  # read at each cell's epoch end: no sync per step
        ended = [j for j, c in enumerate(active) if cells[c].epoch_done]
        if not ended:
            continue
        accs = _eval_accuracy(params, ended, [cells[active[j]] for j in ended], eval_batch_size)
        finite_ended = finite[ended].clone()
        finite[ended] = True
        stop = []
        for j, acc in zip(ended, accs, strict=True):
            cell = cells[active[j]]
            cell.step, cell.acc = 0, acc
            if not bool(finite_ended[ended.index(j)]):
                results[cell.index] = TrainingDiverged(
                    f"training loss is not finite in epoch {cell.epoch} (lr={lr}, "
                    f"weight_decay={weight_decay}); the model diverged")
                stop.append(j)
            elif acc >= cell.target or cell.epoch >= cell.max_epochs:
                results[cell.index] = TrainResult(cell.epoch, acc, time.perf_counter() - cell.t0)
                stop.append(j)
        if stop:
            with torch.no_grad():
                for j in stop:
                    for p, q in zip(params, _params(models[active[j]]), strict=True):
                        q.copy_(p[j])
                    models[active[j]].eval()
                keep = [j for j in range(len(active)) if j not in stop]
                sel = torch.tensor(keep, dtype=torch.long, device=device)
                params = [p.detach().index_select(0, sel).requires_grad_() for p in params]
                m1 = [a.index_select(0, sel) for a in m1]
                m2 = [s.index_select(0, sel) for s in m2]
                finite = finite.index_select(0, sel)
                lam = lam.index_select(0, sel)
            active = [active[j] for j in keep]
    return results  # type: ignore[return-value]
