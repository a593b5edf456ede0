"""ECE / NLL / Brier on hand-computed cases; LWCC's β and VWCC's α on constructed inputs."""

from __future__ import annotations

import math

import pytest
import torch

from asknlearn.losses import LWCC, VWCC, CrossEntropy, kl_uniform, lwcc_beta, vwcc_alpha
from asknlearn.metrics import accuracy, brier, ece, nll, reliability_bins
from asknlearn.models import build_model


def test_metrics_hand_computed():
    # confidences kept off bin edges (0.6 in float32 is 0.6000000238 > 0.6)
    probs = torch.tensor([[0.95, 0.05], [0.65, 0.35], [0.25, 0.75], [0.15, 0.85]])
    y = torch.tensor([0, 1, 1, 1])
    assert accuracy(probs, y) == pytest.approx(0.75)
    # 2 bins: all four in (0.5, 1]; acc 3/4, mean conf 0.8 -> ECE 0.05
    assert ece(probs, y, bins=2) == pytest.approx(0.05, abs=1e-6)
    # 10 bins: one point each; ECE = (|1-.95| + |0-.65| + |1-.75| + |1-.85|) / 4 = 0.275
    assert ece(probs, y, bins=10) == pytest.approx(0.275, abs=1e-6)
    assert nll(probs, y) == pytest.approx(-(math.log(0.95) + math.log(0.35) + math.log(0.75)
                                            + math.log(0.85)) / 4, rel=1e-6)
    # Brier: sum over classes of squared error, mean over samples
    b = 2 * (0.05**2 + 0.65**2 + 0.25**2 + 0.15**2) / 4
    assert brier(probs, y) == pytest.approx(b, rel=1e-6)


def test_ece_bin_edges_are_right_closed():
    # confidence exactly 0.5 belongs to the bin (0, 0.5], not (0.5, 1]
    probs = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
    y = torch.tensor([0, 0])
    r = reliability_bins(probs, y, bins=2)
    assert r["count"].tolist() == [1.0, 1.0]
    # bin 1: conf .5 acc 1 -> gap .5; bin 2: conf 1 acc 1 -> 0
    assert ece(probs, y, bins=2) == pytest.approx(0.25)


def test_perfect_and_worst_predictions():
    y = torch.tensor([0, 1, 2])
    onehot = torch.eye(3)
    assert brier(onehot, y) == pytest.approx(0.0)
    assert nll(onehot, y) == pytest.approx(0.0, abs=1e-9)
    wrong = onehot[[1, 2, 0]]
    assert brier(wrong, y) == pytest.approx(2.0)
    assert ece(wrong, y) == pytest.approx(1.0)


def test_lwcc_beta_switches_on_correctness():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    y = torch.tensor([0, 1, 0])
    beta = lwcc_beta(probs, y)
    # correct: 1 - max p; wrong: exponent 0 -> 1
    torch.testing.assert_close(beta, torch.tensor([0.3, 1.0, 2 / 3]))
    assert bool(((beta >= 0) & (beta <= 1)).all())
    # a confidently correct prediction is (almost) not smoothed
    assert lwcc_beta(torch.tensor([[1.0, 0.0]]), torch.tensor([0])).item() == pytest.approx(0.0)


def test_kl_uniform():
    k = 4
    assert kl_uniform(torch.full((1, k), 1 / k).log()).item() == pytest.approx(0.0, abs=1e-7)
    p = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    expect = sum(0.25 * math.log(0.25 / q) for q in p[0].tolist())
    assert kl_uniform(p.log()).item() == pytest.approx(expect, rel=1e-6)


def test_vwcc_alpha_bounds_and_limits():
    same = torch.tensor([[0.7, 0.2, 0.1]]).expand(5, 1, 3)
    assert vwcc_alpha(same).item() == pytest.approx(0.0, abs=1e-7)
    # T one-hot predictions on K distinct classes: maximal disagreement
    t = 4
    disjoint = torch.eye(t).unsqueeze(1)  # (T, 1, K=T)
    a = vwcc_alpha(disjoint).item()
    assert a == pytest.approx(1 - math.sqrt(1 / t))  # BC(e_t, mean) = sqrt(1/T)
    mild = torch.tensor([[[0.6, 0.4]], [[0.4, 0.6]]])
    strong = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]])
    assert 0 < vwcc_alpha(mild).item() < vwcc_alpha(strong).item() <= 1


def test_calibration_losses_reduce_to_ce_when_weights_vanish():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, dropout=0.0).eval()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    ce, _ = CrossEntropy()(model, x, y)
    lw, _ = LWCC(lam=0.0)(model, x, y)
    torch.testing.assert_close(lw, ce)
    # VWCC without dropout: T identical inferences, α = 0, loss = CE
    vw, logits = VWCC(samples=3)(model, x, y)
    torch.testing.assert_close(vw, ce, rtol=1e-5, atol=1e-6)
    # with λ > 0 the LWCC penalty is positive unless predictions are uniform
    lw1, _ = LWCC(lam=1.0)(model, x, y)
    assert lw1.item() > ce.item()


def test_vwcc_stochastic_logits_is_one_batched_pass_with_distinct_masks():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 8, 8), 10, dropout=0.5).eval()
    x = torch.randn(8, 1, 8, 8)
    lt = model.stochastic_logits(x, 5)
    assert lt.shape == (5, 8, 10)
    assert not torch.allclose(lt[0], lt[1])  # different dropout masks per inference
