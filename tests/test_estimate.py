"""``asknlearn estimate`` reads every dataset's split sizes from its entry: the built-in ones
declare them, your own data's come from its file; a dataset without sizes is one line."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from asknlearn import catalogue as names
from asknlearn.errors import ConfigError
from asknlearn.estimate import RateMeter, Rates, estimate_study, load_workflow_config


class FixedMeter:
    """Known rates, so the estimate is a formula of the split sizes."""

    device = torch.device("cpu")

    def rates(self, cell, n_pool, train=True):
        return Rates(train_samples_per_s=100.0, infer_samples_per_s=1000.0, select_seconds=0.0,
                     select_pool=1)


def _config(tmp_path, text: str) -> dict:
    f = tmp_path / "s.yaml"
    f.write_text(text)
    return load_workflow_config([f])


def test_built_in_entries_declare_their_split_sizes(digits):
    for name, info in names.DATASETS.items():
        assert min(info.sizes) > 0, name
    assert names.DATASETS["digits"].sizes == (len(digits.y_train), len(digits.y_test))


def test_estimate_of_a_custom_dataset_uses_its_file(tmp_path):
    g = np.random.default_rng(0)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=g.random((300, 8, 8), dtype=np.float32), y_train=np.arange(300) % 3,
             x_test=g.random((70, 8, 8), dtype=np.float32), y_test=np.arange(70) % 3)
    cfg = _config(tmp_path, (
        "study: s\ndatasets: [mine]\nstrategies: [random]\nseeds: [0]\nnoise: [0.0]\n"
        f"experiment: {{custom_datasets: {{mine: {{path: {path}}}}}, seed_size: 10, "
        "query_size: 10, budget: 30, max_epochs: 200}\nresources: {al: {estimate_epochs: 10}}\n"))
    est = estimate_study(cfg, FixedMeter(), slots=1)
    assert est.cells == 1 and est.rounds == 3
    assert est.seconds["evaluate"] == pytest.approx(4 * 70 / 1000)  # 4 evaluations of the 70
    # the pool of 300 bounds the budget, as for a built-in dataset
    cfg["experiment"]["budget"] = 300
    with pytest.raises(ConfigError, match="dataset 'mine' has a pool of 300"):
        estimate_study(cfg, FixedMeter(), slots=1)


def test_dataset_without_split_sizes_is_one_line(tmp_path, monkeypatch):
    undeclared = dataclasses.replace(names.DATASETS["digits"], sizes=(0, 0))
    monkeypatch.setitem(names.DATASETS, "digits", undeclared)
    cfg = _config(tmp_path, "study: s\ndatasets: [digits]\nstrategies: [random]\n")
    with pytest.raises(ConfigError) as exc:
        estimate_study(cfg, FixedMeter(), slots=1)
    msg = str(exc.value)
    assert "dataset 'digits' declares no split sizes" in msg and "valid:" in msg
    assert "\n" not in msg


def test_selection_is_timed_on_the_networks_own_feature_size():
    from asknlearn.config import ExperimentConfig

    meter = RateMeter(torch.device("cpu"))
    cell = ExperimentConfig(dataset="digits", strategy="badge", tracking=False).resolve()
    assert meter._feat_dim(cell) == 256
    cell = ExperimentConfig(dataset="digits", strategy="badge", model="custom_nets:make_trunk",
                            tracking=False).resolve()
    assert meter._feat_dim(cell) == 4  # a factory of your own: its features, not a guess
