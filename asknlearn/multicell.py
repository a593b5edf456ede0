"""Several cells in one process, their networks trained together (issue 26, item 3; opt-in).

Each cell runs its own Algorithm 1 (:meth:`asknlearn.loop.Cell.run`) on its own thread, with its
own folder, state, resume, lock and MLflow run, exactly as ``asknlearn run`` would. Only one
step differs: when a cell reaches "train a fresh network on L", it hands the request to a
rendezvous and waits. When every live cell is waiting, the requests are trained as one batched
computation (:func:`asknlearn.batched.train_batched`: the MLPs stacked, one grouped matmul per
layer), and each cell goes on with its own trained model.

Why threads and a turn lock: the loop seeds torch's global RNG per step (initialization,
dropout); two cells interleaving there would draw each other's numbers. So exactly one cell
thread runs at a time (it holds the turn lock), except while it waits at the rendezvous. The
cells' other steps (selection, evaluation, writes) therefore run one after another, as they
would in separate processes sharing the same cores, and the batched training is where the
time is won (the per-operation overhead of M small steps paid once).

What a cell sees is what it would see alone, up to floating-point reassociation: the same
initialization, batch order, dropout masks (from a generator seeded as the loop seeds the
global RNG for the round) and stopping rule; after training, torch's global RNG is left where
the solo training would leave it (the cell's dropout generator has made the same draws), so
the stochastic passes of the selection that follows draw the same masks. Networks that
cannot be stacked (the CNNs, mixed loss families) are trained one by one, as alone.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from asknlearn.batched import NotBatchable, _loss_kind, _mlp_spec, train_batched
from asknlearn.config import ExperimentConfig
from asknlearn.loop import Cell, LabeledSet, derive_seed, generator
from asknlearn.train import TrainingDiverged


@dataclass
class _Request:
    """One cell's "train on L" for one round: the fresh model and what train_model would get."""

    cell: BatchedCell
    round_: int
    model: Any
    x: torch.Tensor
    y: torch.Tensor
    dropout_gen: torch.Generator
    result: Any = None  # (model, TrainResult) or an exception, set by the trainer

    def group(self) -> tuple:
        """Requests that share one train_batched call: the same optimizer and batch settings."""
        c = self.cell.cfg
        try:  # one MLP structure and one loss family (CE/LWCC, or VWCC with one T) per stack
            family, _, samples = _loss_kind(self.cell.parts.loss)
            net = str(_mlp_spec(self.model))
        except NotBatchable:
            family, samples, net = "alone", 0, c.cell_id()
        return (family, samples, net, c.lr, c.train_batch_size, c.weight_decay,
                c.eval_batch_size, bool(c.train_augment), c.precision, c.compile)


class Rendezvous:
    """Collects one training request per live cell, then trains them all at once."""

    def __init__(self, cells: int):
        self.cond = threading.Condition()  # its lock is the turn lock
        self.live = cells
        self.pending: list[_Request] = []
        self.trainings = 0  # train_batched calls made (a diagnostic for the speed-up)
        self.batched_cells = 0

    def submit(self, req: _Request) -> Any:
        """Called by a cell thread holding the turn lock; returns (model, fit) when trained."""
        self.pending.append(req)
        self._maybe_train()
        while req.result is None:
            self.cond.wait()
        if isinstance(req.result, BaseException):
            raise req.result
        return req.result

    def leave(self) -> None:
        """A cell finished or failed: the others no longer wait for it."""
        self.live -= 1
        self._maybe_train()

    def _maybe_train(self) -> None:
        if not self.pending or len(self.pending) < self.live:
            return
        batch, self.pending = self.pending, []
        groups: dict[tuple, list[_Request]] = {}
        for req in batch:
            groups.setdefault(req.group(), []).append(req)
        for reqs in groups.values():
            self._train_group(reqs)
        self.cond.notify_all()

    def _train_group(self, reqs: list[_Request]) -> None:
        c = reqs[0].cell.cfg
        try:
            if len(reqs) == 1 or c.precision != "fp32" or c.compile != "off":
                raise NotBatchable("one request, or a precision/compile setting train_batched lacks")
            results = train_batched(
                [r.model for r in reqs], [r.cell.parts.loss for r in reqs], [r.x for r in reqs],
                [r.y for r in reqs], [generator(r.cell.cfg.seed, "batches", r.round_) for r in reqs],
                dropout_generators=[r.dropout_gen for r in reqs], lr=c.lr,
                batch_size=c.train_batch_size,
                target_accuracy=[r.cell.cfg.target_train_accuracy for r in reqs],
                max_epochs=[r.cell.cfg.max_epochs for r in reqs], weight_decay=c.weight_decay,
                eval_batch_size=c.eval_batch_size,
                augment=reqs[0].cell.parts.augment if c.train_augment else None)
        except NotBatchable:
            for r in reqs:  # as alone, in this (the turn-holding) thread
                try:
                    r.result = Cell.train(r.cell, r.cell.pending_labeled, r.round_)
                except Exception as exc:
                    r.result = exc
            return
        except Exception as exc:
            for r in reqs:
                r.result = exc
            return
        self.trainings += 1
        self.batched_cells += len(reqs)
        for r, res in zip(reqs, results, strict=True):
            if isinstance(res, TrainingDiverged):
                r.result = TrainingDiverged(
                    f"{r.cell.cfg.cell_id()} round {r.round_}: {res}; the round is not recorded; "
                    "valid: a smaller lr / weight_decay")
            else:
                # the global RNG where solo training would leave it (set by the cell when it
                # wakes): the selection's stochastic passes draw the same masks as alone
                r.cell.rng_after_training = r.dropout_gen.get_state()
                r.result = (r.model, res)


class BatchedCell(Cell):
    """A :class:`Cell` whose training step goes through a :class:`Rendezvous`."""

    def __init__(self, cfg: ExperimentConfig, out_dir: str | os.PathLike, rendezvous: Rendezvous,
                 **kw):
        super().__init__(cfg, out_dir, **kw)
        self.rendezvous = rendezvous
        self.pending_labeled: LabeledSet | None = None
        self.rng_after_training: torch.Tensor | None = None

    def train(self, labeled: LabeledSet, round_: int):
        """The loop's training step (same fresh initialization and seeds as
        :meth:`Cell.train`), trained together with the other cells' requests."""
        c = self.cfg
        model = self.new_model(round_)
        drop = torch.Generator().manual_seed(derive_seed(c.seed, "dropout", round_))
        self.pending_labeled = labeled
        req = _Request(self, round_, model, self.x(labeled.index), labeled.label.to(self.device),
                       drop)
        model, fit = self.rendezvous.submit(req)
        if self.rng_after_training is not None:
            # another cell may have run between the trainer setting it and this thread waking
            torch.set_rng_state(self.rng_after_training)
            self.rng_after_training = None
        return model, fit


def run_cells(configs: Sequence[ExperimentConfig], out_dirs: Sequence[str | os.PathLike],
              log: Callable[[str], None] | None = None) -> list[Any]:
    """Run (or resume) each cell ``configs[i]`` into ``out_dirs[i]`` in this process, their
    networks trained together; returns per cell its round table, or the exception it raised
    (the other cells go on). Only CPU cells: on a GPU one cell per process already fills it."""
    if len(configs) != len(out_dirs) or not configs:
        raise ValueError(f"run_cells: {len(configs)} configs and {len(out_dirs)} folders; "
                         "valid: the same number >= 1")
    rv = Rendezvous(len(configs))
    results: list[Any] = [None] * len(configs)

    def body(i: int) -> None:
        with rv.cond:
            try:
                cell = BatchedCell(configs[i], out_dirs[i], rv, log=log)
                try:
                    results[i] = cell.run()
                except BaseException as exc:
                    cell.tracker.fail(exc)
                    raise
            except BaseException as exc:  # reported per cell; the others go on
                results[i] = exc
            finally:
                rv.leave()

    threads = [threading.Thread(target=body, args=(i,), name=f"cell{i}") for i in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
