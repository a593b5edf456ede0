"""asknlearn.batched: M cells' MLPs trained together match each trained alone by train_model.

Each cell is set up as the loop sets up a round (fresh init seeded with derive_seed(seed,
"init", r), batches from generator(seed, "batches", r), dropout from derive_seed(seed,
"dropout", r)), on digits, with labeled sets of unequal sizes, and cells that stop at
different epochs (one by max_epochs). Weights and predictions may differ only by
floating-point reassociation; the epochs and training accuracy must be the same.
"""

from __future__ import annotations

import pytest
import torch

from asknlearn.augment import Augment
from asknlearn.batched import NotBatchable, _adam, train_batched
from asknlearn.loop import derive_seed, generator
from asknlearn.losses import LWCC, VWCC, CrossEntropy
from asknlearn.models import build_model
from asknlearn.train import TrainingDiverged, train_model

# (seed, labeled-set size, target accuracy, max_epochs): sizes give last batches of 65, 40,
# 65 and 17 rows (two with a lone sample merged in); targets/caps make the cells stop at different
# epochs, the FIRST one first (by max_epochs), so every later cell changes row in the stack
CELLS = [(0, 257, 0.99, 2), (1, 104, 0.95, 60), (2, 193, 0.9, 60), (3, 145, 0.99, 60)]


def _model(seed: int, r: int, shape, dropout: float):
    torch.manual_seed(derive_seed(seed, "init", r))
    return build_model("mlp", shape, 10, dropout)


def _setup(digits, dropout: float, r: int = 1):
    x, y = digits.x_train, digits.y_train
    out = []
    for seed, n, target, cap in CELLS:
        rows = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
        out.append((seed, x[rows], y[rows], target, cap))
    return out


def _alone(cells, losses, dropout, r=1, **kw):
    models, res = [], []
    for (seed, x, y, target, cap), loss in zip(cells, losses, strict=True):
        mod = _model(seed, r, x.shape[1:], dropout)
        torch.manual_seed(derive_seed(seed, "dropout", r))  # the loop's per-round dropout seed
        res.append(train_model(mod, loss, x, y, target_accuracy=target, max_epochs=cap,
                               generator=generator(seed, "batches", r), **kw))
        models.append(mod)
    return models, res


def _together(cells, losses, dropout, r=1, **kw):
    models = [_model(seed, r, x.shape[1:], dropout) for seed, x, *_ in cells]
    drop = [generator(seed, "dropout", r) for seed, *_ in cells] if dropout else None
    res = train_batched(models, losses, [c[1] for c in cells], [c[2] for c in cells],
                        [generator(seed, "batches", r) for seed, *_ in cells],
                        dropout_generators=drop, target_accuracy=[c[3] for c in cells],
                        max_epochs=[c[4] for c in cells], **kw)
    return models, res


def _check_same(cells, alone, together, atol: float) -> None:
    (ma, ra), (mt, rt) = alone, together
    epochs = [r.epochs for r in ra]
    assert len(set(epochs)) >= 3, f"the cells should stop at different epochs: {epochs}"
    assert any(r.epochs == c[4] for r, c in zip(ra, cells, strict=True)), "one cell hits max_epochs"
    for c, (a, t, mod_a, mod_t) in enumerate(zip(ra, rt, ma, mt, strict=True)):
        assert isinstance(t, type(a)), (c, t)
        assert t.epochs == a.epochs, (c, t.epochs, a.epochs)
        assert t.train_accuracy == a.train_accuracy, c
        assert not mod_t.training
        for (k, pa), pt in zip(mod_a.state_dict().items(), mod_t.state_dict().values(), strict=True):
            assert torch.allclose(pt, pa, rtol=0, atol=atol), (c, k, (pt - pa).abs().max())
        x = cells[c][1]
        with torch.no_grad():
            pa, pt = mod_a.eval()(x).softmax(-1), mod_t(x).softmax(-1)
        assert torch.allclose(pt, pa, rtol=0, atol=atol), (c, (pt - pa).abs().max())
        assert torch.equal(pt.argmax(1), pa.argmax(1))


@pytest.mark.parametrize("mix", ["ce", "lwcc", "mixed"])
def test_batched_matches_train_model(digits, mix):
    cells = _setup(digits, 0.0)
    losses = {"ce": [CrossEntropy()] * 4, "lwcc": [LWCC(1.0)] * 4,
              "mixed": [CrossEntropy(), LWCC(1.0), LWCC(0.5), CrossEntropy()]}[mix]
    alone = _alone(cells, losses, 0.0)
    together = _together(cells, losses, 0.0)
    _check_same(cells, alone, together, atol=2e-5)


def test_batched_weight_decay_and_augment(digits):
    """Weight decay enters Adam per cell; augmentation draws come from each cell's generator
    after its permutation, as train_model draws them."""
    cells = _setup(digits, 0.0)
    losses = [LWCC(1.0)] * 4
    kw = {"weight_decay": 1e-4, "augment": Augment(1, False)}
    _check_same(cells, _alone(cells, losses, 0.0, **kw), _together(cells, losses, 0.0, **kw),
                atol=2e-5)


@pytest.mark.parametrize("loss", [CrossEntropy(), VWCC(3)], ids=["ce-dropout", "vwcc"])
def test_batched_dropout_masks_match(digits, loss):
    """The stochastic network: each cell's dropout masks are drawn from its own generator
    exactly as F.dropout draws them from the global RNG the loop seeds per round."""
    cells = _setup(digits, 0.5)
    losses = [loss] * 4
    _check_same(cells, _alone(cells, losses, 0.5), _together(cells, losses, 0.5), atol=2e-5)


def test_stacked_adam_is_per_cell_adam():
    """Adam over stacked parameters = torch.optim.Adam on each cell's slice (it is elementwise
    and the stacked cells share their step count)."""
    g = torch.Generator().manual_seed(0)
    ps = [torch.randn(3, 5, 7, generator=g) for _ in range(2)]
    grads = [[torch.randn(3, 5, 7, generator=g) for _ in range(2)] for _ in range(4)]
    stacked = [p.clone().requires_grad_() for p in ps]
    m1 = [torch.zeros_like(p) for p in ps]
    m2 = [torch.zeros_like(p) for p in ps]
    for step, gs in enumerate(grads, 1):
        for p, gr in zip(stacked, gs, strict=True):
            p.grad = gr.clone()
        _adam(stacked, m1, m2, step, 1e-3, 1e-2)
    for c in range(3):
        own = [p[c].clone().requires_grad_() for p in ps]
        opt = torch.optim.Adam(own, lr=1e-3, weight_decay=1e-2)
        for gs in grads:
            for p, gr in zip(own, gs, strict=True):
                p.grad = gr[c].clone()
            opt.step()
        for p, s in zip(own, stacked, strict=True):
            assert torch.equal(p.detach(), s.detach()[c])


def test_diverged_cell_stops_alone(digits):
    """A cell whose loss is not finite reports TrainingDiverged; the others train on as alone."""
    cells = _setup(digits, 0.0)[:2]
    losses = [CrossEntropy()] * 2
    alone = _alone(cells, losses, 0.0)
    models = [_model(seed, 1, x.shape[1:], 0.0) for seed, x, *_ in cells]
    with torch.no_grad():
        models[0].head.bias.fill_(float("nan"))
    res = train_batched(models, losses, [c[1] for c in cells], [c[2] for c in cells],
                        [generator(seed, "batches", 1) for seed, *_ in cells],
                        target_accuracy=[c[3] for c in cells], max_epochs=[c[4] for c in cells])
    assert isinstance(res[0], TrainingDiverged) and "epoch 1" in str(res[0])
    assert res[1].epochs == alone[1][1].epochs
    assert torch.allclose(models[1].head.weight, alone[0][1].head.weight, atol=2e-5)


def test_refuses_what_it_cannot_stack(digits):
    x, y = digits.x_train[:100], digits.y_train[:100]
    gen = [torch.Generator().manual_seed(0)]
    torch.manual_seed(0)
    cnn = build_model("resnet18", (3, 32, 32), 10, 0.0)
    with pytest.raises(NotBatchable, match="valid: the 'mlp' model"):
        train_batched([cnn], [CrossEntropy()], [x], [y], gen)
    with pytest.raises(NotBatchable, match="VWCC on a network without dropout"):
        train_batched([_model(0, 0, x.shape[1:], 0.0)], [VWCC(3)], [x], [y], gen)
    with pytest.raises(NotBatchable, match="mix VWCC"):
        train_batched([_model(0, 0, x.shape[1:], 0.5)] * 2, [VWCC(3), CrossEntropy()], [x] * 2,
                      [y] * 2, gen * 2, dropout_generators=gen * 2)
    with pytest.raises(ValueError, match="one dropout generator per model"):
        train_batched([_model(0, 0, x.shape[1:], 0.5)], [CrossEntropy()], [x], [y], gen)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["ce", "vwcc"])
def test_bench_batched_quick(tmp_path, loss):
    """The benchmark's smoke run: it writes its result file, and both modes agree on epochs."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "bench_batched.py"), "--quick",
                           "--threads", "1", "--loss", loss, "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "batched.json").read_text())
    assert doc["quick"] is True and doc["params"]["loss"] == loss
    assert all(r["same_epochs"] for r in doc["results"]["runs"])
    assert "loadavg_start" in doc["environment"]
