"""Training one round's model from scratch on the labeled set L (the BADGE protocol)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from asknlearn.models import SplitNet


@dataclass
class TrainResult:
    epochs: int
    train_accuracy: float
    seconds: float


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
) -> TrainResult:
    """Adam(lr) on (x, y) until the running training accuracy of an epoch reaches
    ``target_accuracy`` (Ash et al. 2019 train to 99 %) or ``max_epochs`` pass.

    Batches are index slices of a per-epoch permutation drawn from ``generator``.
    """
    t0 = time.perf_counter()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(y)
    acc, epoch = 0.0, 0
    model.train()
    while epoch < max_epochs:
        epoch += 1
        perm = torch.randperm(n, generator=generator).to(x.device)
        correct = torch.zeros((), device=x.device)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            if len(idx) == 1 and n > 1:
                # a batch of one breaks BatchNorm in train mode; it still counts next epoch
                continue
            # index_select: the same rows as x[idx], without advanced indexing's overhead
            xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            loss, logits = loss_fn(model, xb, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += (logits.detach().argmax(1) == yb).sum()
        acc = correct.item() / n
        if acc >= target_accuracy:
            break
    return TrainResult(epoch, acc, time.perf_counter() - t0)
