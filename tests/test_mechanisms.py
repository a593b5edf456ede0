"""Tests that fail if one of Ask-n-Learn's mechanisms silently dies (issue 10): VWCC's
stochastic inferences through the whole network, the one stopping rule, the refinement
diagnostics, and the chunk-independence of the augmentation draws."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from asknlearn import diagnostics
from asknlearn.augment import Augment
from asknlearn.config import ExperimentConfig
from asknlearn.loop import Cell, LabeledSet
from asknlearn.metrics import all_metrics
from asknlearn.models import MCDropout, StochasticDepth, build_model, mc_sampling
from asknlearn.pseudolabels import RefinedPseudoLabels
from asknlearn.train import TrainingDiverged, batch_bounds, train_model


def _outputs_of(model, kind, x):
    """Outputs of every stochastic layer of ``kind`` for input x (forward hooks)."""
    outs, hooks = [], []
    for m in model.modules():
        if isinstance(m, kind):
            hooks.append(m.register_forward_hook(lambda mod, inp, out: outs.append((inp[0], out))))
    model(x)
    for h in hooks:
        h.remove()
    return outs


def test_mlp_dropout_is_in_every_hidden_layer_on_in_mc_sampling_off_in_eval():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, dropout=0.5).eval()
    x = torch.randn(32, 1, 8, 8)
    assert len([m for m in model.modules() if isinstance(m, MCDropout)]) == 3
    for inp, out in _outputs_of(model, MCDropout, x):
        assert torch.equal(inp, out)  # eval: off
    with mc_sampling(model):
        pairs = _outputs_of(model, MCDropout, x)
    assert len(pairs) == 3
    for inp, out in pairs:  # every hidden layer drops units
        dropped = (out == 0) & (inp != 0)
        assert dropped.any()
    # and the T stochastic inferences disagree, while eval is deterministic
    lt = model.stochastic_logits(x, 4)
    assert lt.shape == (4, 32, 10) and not torch.allclose(lt[0], lt[1])
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name,kind,count", [("resnet18", StochasticDepth, 8), ("vgg16", MCDropout, 5)])
def test_cnn_stochastic_layers_inside_the_blocks(name, kind, count):
    torch.manual_seed(0)
    model = build_model(name, (3, 32, 32), 10, dropout=0.5).eval()
    layers = [m for m in model.modules() if isinstance(m, kind)]
    assert len(layers) == count and all(m.p > 0 for m in layers)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        lt = model.stochastic_logits(x, 3)
    assert lt.shape == (3, 4, 10) and not torch.allclose(lt[0], lt[1])
    if name == "resnet18":  # linear decay: deeper blocks drop more
        ps = [m.p for m in layers]
        assert ps == sorted(ps) and math.isclose(ps[-1], 0.5)


def test_plain_network_has_no_stochasticity():
    model = build_model("mlp", (1, 8, 8), 10, dropout=0.0)
    assert not model.stochastic
    x = torch.randn(8, 1, 8, 8)
    lt = model.stochastic_logits(x, 3)
    assert torch.allclose(lt[0], lt[1])


def test_vwcc_alpha_on_default_config_is_clearly_above_zero(digits, tmp_path):
    """With the default VWCC network, α (eq. 2) on the labeled set after a short training on
    digits is well above zero: the loss is not plain cross-entropy."""
    cfg = ExperimentConfig(dataset="digits", strategy="ask-n-learn-vwcc", seed_size=200,
                           query_size=20, budget=20, max_epochs=30, threads=1, tracking=False)
    cell = Cell(cfg, tmp_path, data=digits)
    assert cell.cfg.dropout > 0
    labeled = torch.arange(200)
    model, _ = cell.train(LabeledSet.seed(labeled, digits.y_train[labeled]), 0)
    diag = diagnostics.alpha(model, cell.x(labeled), cell.cfg.vwcc_samples, 4096)
    assert diag["alpha_mean"] > 0.01, diag
    assert diag["alpha_p90"] >= diag["alpha_median"] > 0
    # the plain network of BADGE has no α to report
    plain = Cell(dataclasses.replace(cfg, strategy="badge"), tmp_path / "b", data=digits)
    assert plain.cfg.dropout == 0.0
    m2, _ = plain.train(LabeledSet.seed(labeled, digits.y_train[labeled]), 0)
    assert diagnostics.alpha(m2, plain.x(labeled), 5, 4096) == {}


def test_badge_dropout_control_uses_the_vwcc_network(digits, tmp_path):
    base = dict(dataset="digits", seed_size=20, query_size=20, budget=20, threads=1, tracking=False)
    vw = ExperimentConfig(strategy="badge-vwcc", **base).resolve()
    ctl = ExperimentConfig(strategy="badge-dropout", **base).resolve()
    assert ctl.dropout == vw.dropout > 0 and ctl.spec.loss == "ce"
    # network: stochastic gives every strategy that network
    assert ExperimentConfig(strategy="random", network="stochastic", **base).resolve().dropout == vw.dropout


@pytest.mark.parametrize("n", [65, 129, 1])
def test_stop_rule_reaches_target_when_n_mod_batch_is_one(n):
    assert all(e - s >= min(2, n) for s, e in batch_bounds(n, 64))
    assert sum(e - s for s, e in batch_bounds(n, 64)) == n
    torch.manual_seed(0)
    x = torch.randn(n, 1, 8, 8)
    y = torch.randint(0, 10, (n,))
    model = build_model("mlp", (1, 8, 8), 10, dropout=0.3)
    from asknlearn.losses import build_loss

    res = train_model(model, build_loss("ce"), x, y, batch_size=64, max_epochs=300,
                      generator=torch.Generator().manual_seed(0))
    assert res.train_accuracy >= 0.99 and res.epochs < 300


def test_stop_rule_is_the_same_eval_pass_for_every_loss(digits):
    """CE and VWCC on the same stochastic network are judged by the same deterministic pass."""
    from asknlearn.losses import build_loss
    from asknlearn.train import eval_accuracy

    x, y = digits.x_train[:128], digits.y_train[:128]
    for loss in ("ce", "vwcc"):
        torch.manual_seed(0)
        model = build_model("mlp", (1, 8, 8), 10, dropout=0.3)
        res = train_model(model, build_loss(loss), x, y, max_epochs=100,
                          generator=torch.Generator().manual_seed(0))
        assert res.epochs < 100
        assert res.train_accuracy == eval_accuracy(model, x, y) >= 0.99


def test_non_finite_loss_stops_training():
    model = build_model("mlp", (1, 8, 8), 10, dropout=0.0)

    def nan_loss(m, xb, yb):
        out = m(xb)
        return out.sum() * float("nan"), out

    with pytest.raises(TrainingDiverged, match="epoch 1"):
        train_model(model, nan_loss, torch.randn(10, 1, 8, 8), torch.zeros(10, dtype=torch.long),
                    generator=torch.Generator().manual_seed(0))


def test_metrics_of_nan_outputs_are_nan_not_zero():
    probs = torch.full((5, 3), float("nan"))
    m = all_metrics(probs, torch.zeros(5, dtype=torch.long))
    assert all(math.isnan(v) for v in m.values())


def test_refine_diagnostics_use_the_refined_subset_only():
    y = torch.tensor([0, 1, 2, 3])
    probs = torch.tensor([[0.9, 0.1, 0, 0], [0.2, 0.8, 0, 0], [0.6, 0, 0.4, 0], [0, 0, 0.5, 0.5]])
    refined = torch.tensor([False, False, True, True])
    labels = torch.tensor([0, 0, 2, 2])  # row 1 keeps a wrong-ish label outside the subset
    d = diagnostics.refinement(y, probs, labels, refined, "val_")
    assert d["val_refined_fraction"] == 0.5
    # on the refined rows 2, 3: argmax gives 0 (wrong) and 2 (wrong); refined gives 2 (right), 2 (wrong)
    assert d["val_refined_argmax_accuracy"] == 0.0
    assert d["val_refined_accuracy"] == 0.5
    assert d["val_pseudo_label_accuracy"] == 0.5  # rows 0 and 2 over all four


def test_refined_labels_do_not_depend_on_the_chunk_size(digits):
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, dropout=0.0).eval()
    x = digits.x_train[:300]
    probs = torch.softmax(model(x), 1).detach()
    lab = RefinedPseudoLabels(tau=0.99, k=6, augment=Augment(1, False))
    a, ra = lab(model, x, probs, torch.Generator().manual_seed(3), batch_size=4096)
    b, rb = lab(model, x, probs, torch.Generator().manual_seed(3), batch_size=50)
    assert ra.sum() > 100 and torch.equal(ra, rb) and torch.equal(a, b)


def test_round_rows_carry_the_diagnostics(digits, tmp_path):
    cfg = ExperimentConfig(dataset="digits", strategy="ask-n-learn-vwcc", seed_size=30,
                           query_size=20, budget=20, val_size=100, max_epochs=20, threads=1,
                           tracking=False, k_aug=3)
    rows = Cell(cfg, tmp_path, data=digits, log=lambda s: None).run()
    r1 = rows.iloc[1]
    assert r1["alpha_mean"] > 0 and rows["alpha_mean"].notna().all()
    for k in ("val_refined_accuracy", "val_refined_argmax_accuracy", "oracle_refined_accuracy",
              "oracle_pseudo_label_accuracy", "val_refined_fraction"):
        assert 0.0 <= r1[k] <= 1.0, k
    assert math.isnan(rows.iloc[0]["val_refined_fraction"])  # no selection in round 0


def test_noise_diagnostics_count_what_the_model_does_with_wrong_labels(digits, tmp_path):
    """Of the wrong labels in L, memorised + corrected <= 1 and both are checked against a
    recount from queries.csv with the final model's predictions; a clean oracle logs none."""
    cfg = ExperimentConfig(dataset="digits", strategy="random", seed_size=30, query_size=40,
                           budget=80, noise=0.5, max_epochs=60, threads=1, tracking=False)
    cell = Cell(cfg, tmp_path, data=digits, log=lambda s: None)
    rows = cell.run()
    assert math.isnan(rows.iloc[0]["oracle_wrong_memorised"])  # S is labeled truly
    last = rows.iloc[-1]
    mem, cor = last["oracle_wrong_memorised"], last["oracle_wrong_corrected"]
    assert 0.0 <= mem <= 1.0 and 0.0 <= cor <= 1.0 and mem + cor <= 1.0 + 1e-12
    # a network trained to 99 % training accuracy on 110 points memorises most wrong labels
    assert mem > 0.5, mem
    import pandas as pd
    q = pd.read_csv(tmp_path / "queries.csv")
    assert last["n_wrong_labels"] == int(q["wrong"].sum()) == 40  # round(0.5 * 40) per batch
    clean = ExperimentConfig(dataset="digits", strategy="random", seed_size=30, query_size=20,
                             budget=20, max_epochs=20, threads=1, tracking=False)
    crows = Cell(clean, tmp_path / "clean", data=digits, log=lambda s: None).run()
    assert crows["oracle_wrong_memorised"].isna().all()
