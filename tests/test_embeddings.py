"""Issue 24.1: (N, D) feature vectors as a dataset, their models, every strategy on them, the
refusals, ``asknlearn.select`` on embeddings, and docs/embeddings.md's example run as written."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import asknlearn
from asknlearn.catalogue import MODELS, STRATEGIES
from asknlearn.config import ExperimentConfig
from asknlearn.errors import AskNLearnError, ConfigError, DatasetError
from asknlearn.loop import run_cell
from asknlearn.models import build_model
from asknlearn.userdata import LINEAR_PROBE_MIN_DIM, custom_dataset_info

DOC = Path(__file__).resolve().parents[1] / "docs" / "embeddings.md"


def vectors(path: Path, d: int = 12, n_train: int = 90, n_test: int = 30, k: int = 3,
            fmt: str = "npz", **override) -> Path:
    """Separable class clusters in D dimensions (class means apart, unit noise)."""
    rng = np.random.default_rng(0)
    means = rng.normal(0, 3, (k, d))
    ytr, yte = np.arange(n_train) % k, np.arange(n_test) % k
    arrays = {"x_train": (means[ytr] + rng.normal(size=(n_train, d))).astype(np.float32),
              "y_train": ytr,
              "x_test": (means[yte] + rng.normal(size=(n_test, d))).astype(np.float32),
              "y_test": yte}
    arrays.update(override)
    if fmt == "npz":
        np.savez(path, **arrays)
    else:
        torch.save({k: torch.as_tensor(v) for k, v in arrays.items()}, path)
    return path


def cfg_for(path: Path, name: str, **kw) -> ExperimentConfig:
    args = {"seed_size": 12, "query_size": 6, "budget": 12, "max_epochs": 10, "threads": 1,
            "tracking": False, **kw}
    return ExperimentConfig(dataset=name, custom_datasets={name: {"path": str(path)}}, **args)


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_vectors_are_described_with_their_default_model(fmt, tmp_path):
    short = custom_dataset_info("vs" + fmt, {"path": str(vectors(tmp_path / f"a.{fmt}",
                                                                  fmt=fmt))})
    assert (short.shape, short.layout, short.loader, short.num_classes) == (
        (12, 1, 1), "nd", "vectors", 3)
    assert short.default_model == "mlp" and short.aug_shift == 0
    wide = custom_dataset_info("vw" + fmt, {"path": str(vectors(
        tmp_path / f"b.{fmt}", d=LINEAR_PROBE_MIN_DIM, fmt=fmt))})
    assert wide.default_model == "linear"


def test_linear_and_mlp_are_catalogue_entries_and_linear_is_vectors_only():
    assert MODELS["linear"].input_hw == (1, 1)
    net = build_model("linear", (12, 1, 1), 3, 0.2)
    assert net.feat_dim == 12 and net.stochastic
    x = torch.randn(5, 12, 1, 1)
    assert torch.equal(net.eval().features(x), x.flatten(1))  # z is the embedding itself
    logits = net.stochastic_logits(x, 4)
    assert logits.shape == (4, 5, 3) and not torch.allclose(logits[0], logits[1])
    assert not build_model("linear", (12, 1, 1), 3, 0.0).stochastic
    with pytest.raises(ConfigError, match="expects 1x1 images"):
        build_model("linear", (1, 8, 8), 3, 0.0)


@pytest.mark.parametrize("strategy", ["random", "margin", "coreset", "bald", "typiclust",
                                      "badge-lwcc", "badge-vwcc"])
def test_a_vector_cell_runs(strategy, tmp_path):
    path = vectors(tmp_path / "v.npz")
    table = run_cell(cfg_for(path, "vcell", strategy=strategy), tmp_path / "cell",
                     log=lambda s: None)
    assert list(table["labels"]) == [12, 18, 24]
    assert np.isfinite(table["accuracy"]).all()
    # separable clusters: far above the 1/3 of chance with 12 labels
    assert table["accuracy"].iloc[0] > 0.6
    rows = pd.read_csv(tmp_path / "cell" / "rounds.csv")
    assert len(rows) == 3


def test_the_linear_head_runs_the_stochastic_strategies(tmp_path):
    path = vectors(tmp_path / "v.npz")
    table = run_cell(cfg_for(path, "vlin", strategy="powerbald", model="linear"),
                     tmp_path / "cell", log=lambda s: None)
    assert list(table["labels"]) == [12, 18, 24]


@pytest.mark.parametrize("strategy", [s for s, spec in STRATEGIES.items()
                                      if spec.pseudo_labels == "refine"])
def test_refinement_on_vectors_is_one_line_and_writes_nothing(strategy, tmp_path):
    path = vectors(tmp_path / "v.npz")
    with pytest.raises(ConfigError) as info:
        run_cell(cfg_for(path, "vref", strategy=strategy), tmp_path / "cell", log=lambda s: None)
    msg = str(info.value)
    assert "\n" not in msg and "feature vectors" in msg and "valid:" in msg
    assert not (tmp_path / "cell" / "rounds.csv").exists()


def test_train_augment_on_vectors_is_refused(tmp_path):
    path = vectors(tmp_path / "v.npz")
    with pytest.raises(ConfigError, match="train_augment=true"):
        run_cell(cfg_for(path, "vaug", strategy="badge", train_augment=True), tmp_path / "cell",
                 log=lambda s: None)


@pytest.mark.parametrize("override,pattern", [
    ({"x_train": np.zeros((90, 12), np.int64)}, r"x_train holds \(N, D\) vectors of dtype int64"),
    ({"x_test": np.zeros((30, 7), np.float32)}, r"x_train is \(12,\) per item but x_test \(7,\)"),
    ({"x_test": np.zeros((30, 8, 8), np.float32)}, r"x_train is \(12,\) per item"),
    ({"y_train": np.zeros(90, np.int64)}, r"y_train has a single class"),
    ({"y_train": np.zeros(89, np.int64)}, r"x_train has 90 images but y_train has 89"),
])
def test_bad_vector_files_are_one_line(override, pattern, tmp_path):
    path = vectors(tmp_path / "v.npz", **override)
    with pytest.raises(DatasetError) as info:
        custom_dataset_info(f"vbad{abs(hash(pattern)) % 1000}", {"path": str(path)})
    assert "\n" not in str(info.value) and re.search(pattern, str(info.value)), str(info.value)


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_non_finite_vector_is_named_by_split_and_row(split, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90 if split == "train" else 30, 12)).astype(np.float32)
    x[17, 3] = np.nan if split == "train" else np.inf
    path = vectors(tmp_path / "v.npz", **{f"x_{split}": x})
    with pytest.raises(DatasetError, match=f"x_{split} row 17 holds a non-finite value"):
        run_cell(cfg_for(path, f"vnan{split}"), tmp_path / "cell", log=lambda s: None)
    assert not (tmp_path / "cell" / "rounds.csv").exists()


def test_features_are_standardized_with_the_training_split_only(tmp_path):
    from asknlearn.data import load_dataset

    path = vectors(tmp_path / "v.npz")
    cfg_for(path, "vstd").resolve()
    data = load_dataset("vstd")
    xtr = data.x_train.flatten(1)
    assert data.x_train.shape == (90, 12, 1, 1)
    assert torch.allclose(xtr.mean(0), torch.zeros(12), atol=1e-5)
    assert torch.allclose(xtr.std(0), torch.ones(12), atol=1e-4)
    raw = np.load(path)
    m, s = raw["x_train"].mean(0), raw["x_train"].std(0, ddof=1)
    expect = torch.from_numpy((raw["x_test"] - m) / s).float()
    assert torch.allclose(data.x_test.flatten(1), expect, atol=1e-4)


class _Probe(torch.nn.Module):
    def __init__(self, d: int = 12, k: int = 3):
        super().__init__()
        self.drop = torch.nn.Dropout(0.3)
        self.head = torch.nn.Linear(d, k)

    def features(self, x):
        return self.drop(x)

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.parametrize("strategy", ["random", "badge", "badge-vwcc", "bald", "margin"])
def test_select_takes_embeddings(strategy):
    torch.manual_seed(0)
    x = torch.randn(40, 12)
    picked = asknlearn.select(strategy, _Probe(), x, 5)
    assert picked.dtype == torch.int64 and len(torch.unique(picked)) == 5
    again = asknlearn.select(strategy, _Probe(), x.numpy(), 5,
                             generator=torch.Generator().manual_seed(1))
    assert len(torch.unique(again)) == 5


def test_select_refuses_refinement_and_a_wrong_length_on_embeddings():
    with pytest.raises(ConfigError, match="refinement by image views"):
        asknlearn.select("ask-n-learn-lwcc", _Probe(), torch.randn(40, 12), 5)
    with pytest.raises(ConfigError, match=r"fails on x_pool items of shape \(7,\)"):
        asknlearn.select("badge", _Probe(), torch.randn(40, 7), 5)


def test_the_docs_example_runs(tmp_path, monkeypatch):
    text = DOC.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "run_cell" in b)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    for strategy in ("random", "badge-vwcc"):
        rows = pd.read_csv(tmp_path / "cells" / strategy / "rounds.csv")
        assert list(rows["labels"]) == [20, 40, 60]
        assert (rows["accuracy"] > 0.3).all()  # 10 classes: chance is 0.1
    assert issubclass(DatasetError, AskNLearnError)
