"""Training one round's model from scratch on the labeled set L (the BADGE protocol)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from asknlearn import accel
from asknlearn.errors import AskNLearnError
from asknlearn.models import SplitNet


class TrainingDiverged(AskNLearnError):
    """The training loss became NaN or infinite: the model is meaningless, record nothing."""

    exit_code = 1


@dataclass
class TrainResult:
    epochs: int
    train_accuracy: float  # eval-mode accuracy on L after the last epoch
    seconds: float


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Slices of an epoch's permutation: full batches, and no batch of one sample (which
    breaks batch norm in train mode): a lone last sample joins the batch before it, so every
    labeled point is trained on in every epoch."""
    bounds = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


@torch.no_grad()
def eval_accuracy(model: SplitNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Accuracy of one deterministic (eval-mode) pass over (x, y)."""
    model.eval()
    correct = torch.zeros((), device=x.device)
    for s in range(0, len(y), batch_size):
        correct += (model(x[s : s + batch_size]).argmax(1) == y[s : s + batch_size]).sum()
    return correct.item() / max(len(y), 1)


def train_model(
    model: SplitNet,
    loss_fn,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    lr: float = 1e-3,
    batch_size: int = 64,
    target_accuracy: float = 0.99,
    max_epochs: int = 200,
    weight_decay: float = 0.0,
    generator: torch.Generator,
    eval_batch_size: int = 4096,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    progress: Callable[[int, float], None] | None = None,
    precision: str = "fp32",
    compile: str = "off",
) -> TrainResult:
    """Adam(lr) on (x, y) until the training accuracy reaches ``target_accuracy`` (Ash et al.
    2019 train to 99 %) or ``max_epochs`` pass.

    One stopping criterion for every loss: after each epoch, the accuracy of ONE deterministic
    eval-mode pass over L (not a running accuracy of stochastic passes, which would differ
    between cross-entropy and VWCC's mean of T inferences). Batches are index slices of a
    per-epoch permutation drawn from ``generator``; ``augment``, if given, transforms each
    batch with draws from the same generator. ``progress(epoch, accuracy)`` is called after
    every epoch (the caller rate-limits what it prints).

    ``precision`` and ``compile`` act on CUDA only (asknlearn.accel.TrainStep; CNNs also get
    channels_last there); on the CPU the step is the plain fp32 eager one, bit for bit.
    """
    t0 = time.perf_counter()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    # GPU use (accel): no-ops on the CPU; the last, smaller batch always runs eagerly
    if accel.to_channels_last(model, x.device):
        x = accel.batch_layout(x, True)
    step = accel.TrainStep(model, opt, loss_fn, batch_size=batch_size, device=x.device,
                           precision=precision, mode=compile)
    n = len(y)
    bounds = batch_bounds(n, batch_size)
    acc, epoch = 0.0, 0
    while epoch < max_epochs:
        epoch += 1
        model.train()
        perm = torch.randperm(n, generator=generator).to(x.device)
        finite = torch.ones((), dtype=torch.bool, device=x.device)  # checked once per epoch: no sync per step
        for s, e in bounds:
            idx = perm[s:e]
            # index_select: the same rows as x[idx], without advanced indexing's overhead
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            if augment is not None:
                xb = augment(xb, generator)
            loss, _ = step(xb, yb)  # zero_grad, forward (+ autocast), backward, Adam
            finite &= torch.isfinite(loss.detach())
        if not bool(finite):
            raise TrainingDiverged(f"training loss is not finite in epoch {epoch} (lr={lr}, "
                                   f"weight_decay={weight_decay}); the model diverged")
        acc = eval_accuracy(model, x, y, eval_batch_size)
        if progress is not None:
            progress(epoch, acc)
        if acc >= target_accuracy:
            break
    model.eval()
    return TrainResult(epoch, acc, time.perf_counter() - t0)
