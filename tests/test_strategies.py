"""The strategy contract (every registered strategy) and the noisy oracle."""

from __future__ import annotations

import pytest
import torch

from asknlearn.augment import Augment
from asknlearn.config import ExperimentConfig
from asknlearn.errors import ConfigError
from asknlearn.loop import Cell, LabeledSet
from asknlearn.oracle import noisy_labels
from asknlearn.pseudolabels import RefinedPseudoLabels
from asknlearn.strategies import STRATEGIES, resolve_strategy


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_each_strategy_returns_b_distinct_pool_indices(name, digits, tmp_path):
    cfg = ExperimentConfig(dataset="digits", strategy=name, seed_size=30, query_size=25,
                           budget=25, max_epochs=5, threads=1, tracking=False, k_aug=3)
    cell = Cell(cfg, tmp_path, data=digits)
    labeled = LabeledSet.seed(torch.arange(30), digits.y_train[:30])
    model, _ = cell.train(labeled, 0)
    pool = torch.arange(30, 400)
    picked, extra = cell.query(model, labeled, pool, torch.zeros(0, dtype=torch.long), 1)
    assert len(picked) == 25
    assert len(set(picked.tolist())) == 25
    assert set(picked.tolist()) <= set(pool.tolist())
    assert extra["selection_seconds"] >= 0


def test_uncertainty_selectors_pick_the_least_confident(digits, tmp_path):
    cfg = ExperimentConfig(dataset="digits", strategy="confidence", seed_size=30,
                           query_size=10, budget=10, max_epochs=5, threads=1, tracking=False)
    cell = Cell(cfg, tmp_path, data=digits)
    labeled = LabeledSet.seed(torch.arange(30), digits.y_train[:30])
    model, _ = cell.train(labeled, 0)
    pool = torch.arange(30, 500)
    picked, _ = cell.query(model, labeled, pool, torch.zeros(0, dtype=torch.long), 1)
    from asknlearn.inference import predict

    conf = predict(model, digits.x_train[pool])[0].max(1).values
    assert conf[(picked - 30)].max() <= conf.sort().values[9] + 1e-7


def test_refinement_keeps_confident_labels_and_averages_augmentations():
    class Fixed(torch.nn.Module):
        """A model whose prediction depends only on the image mean (shift-invariant)."""

        def features(self, x):
            return x.flatten(1).mean(1, keepdim=True)

        head = torch.nn.Linear(1, 2)

        def forward(self, x):
            return self.head(self.features(x))

    m = Fixed()
    with torch.no_grad():
        m.head.weight[:] = torch.tensor([[5.0], [-5.0]])
        m.head.bias[:] = 0
    x = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 0.01)])
    probs = torch.softmax(m(x), 1)
    lab = RefinedPseudoLabels(tau=0.9, k=3, augment=Augment(shift=0))
    labels, refined = lab(m, x, probs, torch.Generator().manual_seed(0))
    assert refined.tolist() == [False, True]  # only the low-confidence point is augmented
    assert labels.tolist() == probs.argmax(1).tolist()
    # tau = 0: nothing is refined; tau = 1: everything is
    assert not RefinedPseudoLabels(0.0, 3, Augment(0))(m, x, probs, torch.Generator())[1].any()
    assert RefinedPseudoLabels(1.0, 3, Augment(0))(m, x, probs, torch.Generator())[1].all()


def test_augment_shift_is_a_translation_and_flip_mirrors():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = Augment(shift=0, flip=True)(x, torch.Generator().manual_seed(1))
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    g = torch.Generator().manual_seed(0)
    shifted = Augment(shift=2)(x, g)
    assert shifted.shape == x.shape
    # every output pixel is either padding (the minimum) or a pixel of the same image
    for i in range(2):
        vals = set(shifted[i].flatten().tolist()) - {float(x.min())}
        assert vals <= set(x[i].flatten().tolist())


@pytest.mark.parametrize("rate,b", [(0.0, 50), (0.1, 50), (0.2, 1000), (0.13, 7), (0.99, 10)])
def test_noisy_oracle_corrupts_exactly_round_rb_and_never_to_true_class(rate, b):
    y = torch.randint(0, 10, (b,), generator=torch.Generator().manual_seed(1))
    given, wrong = noisy_labels(y, 10, rate, torch.Generator().manual_seed(2))
    assert int(wrong.sum()) == round(rate * b)
    assert torch.equal(given != y, wrong)  # wrong labels are never the true class
    assert int(given.min()) >= 0 and int(given.max()) < 10


def test_noisy_oracle_wrong_labels_are_uniform_over_other_classes():
    y = torch.zeros(20000, dtype=torch.long)
    given, wrong = noisy_labels(y, 5, 0.5, torch.Generator().manual_seed(0))
    freq = torch.bincount(given[wrong], minlength=5).double() / wrong.sum()
    assert freq[0] == 0
    torch.testing.assert_close(freq[1:], torch.full((4,), 0.25, dtype=torch.float64), atol=0.02, rtol=0)


def test_config_defined_strategy_composes_parts():
    spec = resolve_strategy("mine", {"mine": {"loss": "lwcc", "pseudo_labels": "argmax",
                                              "selector": "entropy"}})
    assert (spec.loss, spec.pseudo_labels, spec.selector) == ("lwcc", "argmax", "entropy")
    # a part that would be silently ignored is refused
    with pytest.raises(ConfigError, match="'refine' would be ignored by selector 'entropy'"):
        resolve_strategy("m", {"m": {"pseudo_labels": "refine", "selector": "entropy"}})
    with pytest.raises(ConfigError, match="network 'plain'.*need stochastic"):
        resolve_strategy("m", {"m": {"loss": "vwcc", "network": "plain"}})
    with pytest.raises(ConfigError, match="'nope'.*valid: random, confidence"):
        resolve_strategy("x", {"x": {"selector": "nope"}})


def test_score_selectors_share_one_top_k():
    """Confidence and entropy differ only in their score: both take the b best rows of it."""
    from asknlearn.selectors import Pool
    from asknlearn.selectors.simple import ConfidenceSelector, EntropySelector, ScoreSelector

    probs = torch.softmax(torch.randn(200, 10, generator=torch.Generator().manual_seed(0)), 1)
    pool, g = Pool(size=200, probs=probs), torch.Generator()
    conf = ConfidenceSelector().select(pool, 7, g)
    assert set(conf.tolist()) == set(probs.max(1).values.argsort()[:7].tolist())
    h = -(probs * probs.log()).sum(1)
    ent = EntropySelector().select(pool, 7, g)
    assert set(ent.tolist()) == set(h.argsort(descending=True)[:7].tolist())
    assert issubclass(ConfidenceSelector, ScoreSelector) and issubclass(EntropySelector, ScoreSelector)


@pytest.mark.parametrize("name", ["badge", "ask-n-learn-lwcc", "ask-n-learn-vwcc", "entropy"])
def test_build_gives_the_strategys_parts(name):
    from asknlearn.catalogue import SELECTORS, load
    from asknlearn.losses import LWCC, VWCC, CrossEntropy
    from asknlearn.pseudolabels import ArgmaxPseudoLabels
    from asknlearn.strategies import build_parts

    cfg = ExperimentConfig(dataset="digits", strategy=name, tau=0.7, k_aug=4).resolve()
    spec = cfg.spec
    parts = build_parts(spec, cfg)
    assert isinstance(parts.loss, {"ce": CrossEntropy, "lwcc": LWCC, "vwcc": VWCC}[spec.loss])
    assert isinstance(parts.selector, load(SELECTORS[spec.selector].factory))
    assert parts.augment == Augment(1, False)  # digits' 1-pixel shift, from its dataset entry
    if spec.pseudo_labels == "refine":
        assert isinstance(parts.labeler, RefinedPseudoLabels)
        assert (parts.labeler.tau, parts.labeler.k, parts.labeler.augment) == (0.7, 4, parts.augment)
    else:
        assert isinstance(parts.labeler, ArgmaxPseudoLabels)


def test_strategies_command_lists_config_defined_ones(tmp_path, capsys):
    from asknlearn.cli import main

    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text("strategies: {my-lwcc: {loss: lwcc, selector: badge}}\n")
    wf_cfg = tmp_path / "wf.yaml"
    wf_cfg.write_text("strategies: [badge, my-entropy]\n"
                      "experiment: {strategies: {my-entropy: {selector: entropy}}}\n")
    assert main(["strategies", "--configfile", str(run_cfg)]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("my-lwcc") and "lwcc" in line for line in out.splitlines()), out
    assert main(["strategies", "--configfile", str(wf_cfg)]) == 0
    out = capsys.readouterr().out
    assert any(line.startswith("my-entropy") and "entropy" in line for line in out.splitlines())
    assert "ask-n-learn-vwcc" in out
