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


# ---------------------------------------------------------------------------- learned rounds
ROUNDS_HEAD = "study,dataset,strategy,seed,noise,round,labels,train_epochs,train_seconds\n"


def _finished_cell(root, strategy: str, rows: list[tuple[int, int, float]], *, dropout=0.0,
                   threads=1, seed=0, config_text: str | None = None):
    """A cell folder as the workflow leaves it: config.yaml (resolved) and rounds.csv."""
    cell = root / "old_study" / "runs" / "digits" / strategy / f"seed{seed}" / "noise0.0"
    cell.mkdir(parents=True)
    (cell / "config.yaml").write_text(config_text or (
        f"dataset: digits\nstrategy: {strategy}\nseed: {seed}\nnoise: 0.0\nmodel: mlp\n"
        f"dropout: {dropout}\ntrain_batch_size: 64\nprecision: fp32\ncompile: 'off'\n"
        f"threads: {threads}\nstrategies: {{}}\n"))
    (cell / "rounds.csv").write_text(ROUNDS_HEAD + "".join(
        f"old_study,digits,{strategy},{seed},0.0,{r},{n},{e},{s}\n" for r, (n, e, s) in enumerate(rows)))
    return cell


STUDY = ("study: s\ndatasets: [digits]\nstrategies: [badge, badge-vwcc]\nseeds: [0]\nnoise: [0.0]\n"
         "experiment: {seed_size: 20, query_size: 20, budget: 40}\n"
         "resources: {al: {estimate_epochs: 10, threads: 1}}\n")


def test_epochs_are_learned_from_finished_cells_of_the_same_network_and_loss(tmp_path):
    from asknlearn.estimate import learn_from_results

    # labels 20, 40, 60: E = 4, 8, 12 (mean of two seeds), 0.01 s per sample-epoch
    for seed, shift in ((0, -1), (1, 1)):
        _finished_cell(tmp_path, "badge", [(n, n // 5 + shift, 0.01 * n * (n // 5 + shift))
                                           for n in (20, 40, 60)], seed=seed)
    learned = learn_from_results(tmp_path)
    cfg = _config(tmp_path, STUDY)
    est = estimate_study(cfg, FixedMeter(), slots=1, learned=learned)
    badge = "digits mlp dropout=0 loss=ce"
    assert est.sources[badge].startswith("learned from 6 finished rounds of 2 cell(s)")
    assert "seconds per epoch from those cells" in est.sources[badge]
    # badge-vwcc trains on the dropout network with another loss: nothing learned, E assumed
    assert est.sources["digits mlp dropout=0.5 loss=vwcc"].startswith("assumed E = 10")
    badge_train = 0.01 * (4 * 20 + 8 * 40 + 12 * 60)  # the cells' own seconds per sample-epoch
    vwcc_train = 10 * (20 + 40 + 60) / 100.0  # assumed E at the meter's rate
    assert est.seconds["train"] == pytest.approx(badge_train + vwcc_train)


def test_learned_seconds_need_the_same_settings(tmp_path):
    from asknlearn.estimate import learn_from_results

    _finished_cell(tmp_path, "badge", [(20, 4, 99.0), (40, 8, 99.0), (60, 12, 99.0)], threads=4)
    cfg = _config(tmp_path, STUDY.replace("strategies: [badge, badge-vwcc]", "strategies: [badge]"))
    est = estimate_study(cfg, FixedMeter(), slots=1, learned=learn_from_results(tmp_path))
    # 4 threads there, 1 here: the epochs are learned, the rate is this machine's
    assert "seconds per epoch" not in est.sources["digits mlp dropout=0 loss=ce"]
    assert est.seconds["train"] == pytest.approx((4 * 20 + 8 * 40 + 12 * 60) / 100.0)
    # --epochs-per-round overrides what was learned
    est = estimate_study(cfg, FixedMeter(), slots=1, epochs_per_round=2.0,
                         learned=learn_from_results(tmp_path))
    assert est.seconds["train"] == pytest.approx(2 * (20 + 40 + 60) / 100.0)


def test_epochs_between_and_beyond_the_label_counts_seen():
    from asknlearn.estimate import Learned

    learned = Learned((100, 1100, 3100), (14.0, 30.0, 46.0), 3, 1, None, None, (0.0,))
    assert learned.epochs_at(50) == 14.0
    assert learned.epochs_at(2100) == pytest.approx(38.0)
    beyond = [learned.epochs_at(n) for n in (3100, 5100, 10100)]
    assert beyond[0] == 46.0 and beyond[0] < beyond[1] < beyond[2] < 46.0 + 16 * 7 / 2  # sublinear
    falling = Learned((100, 1100), (30.0, 20.0), 2, 1, None, None, (0.0,))
    assert falling.epochs_at(5000) == 20.0  # never fewer epochs for more labels


def test_unreadable_cells_are_skipped_and_nothing_in_them_runs(tmp_path):
    from asknlearn.estimate import learn_from_results

    marker = tmp_path / "ran"
    _finished_cell(tmp_path, "badge", [(20, 4, 1.0)], config_text=(
        f"!!python/object/apply:os.system ['touch {marker}']\n"))
    _finished_cell(tmp_path, "random", [(20, 4, 1.0)], seed=1,
                   config_text="dataset: digits\nstrategy: not-a-strategy\nmodel: mlp\n")
    bad = _finished_cell(tmp_path, "confidence", [(20, 4, 1.0)], seed=2)
    (bad / "rounds.csv").write_text(ROUNDS_HEAD + "x,digits,confidence,0,0.0,0,twenty,4,1\n")
    assert learn_from_results(tmp_path) == {} and not marker.exists()
    assert learn_from_results(tmp_path / "absent") == {}


def test_the_command_says_what_it_assumed_and_that_it_reports_cpu_hours(tmp_path, capsys):
    import argparse

    from asknlearn.estimate import main

    _finished_cell(tmp_path / "results", "badge", [(20, 4, 1.0), (40, 8, 2.0), (60, 12, 3.0)])
    study = tmp_path / "s.yaml"
    study.write_text(STUDY)
    out = tmp_path / "e.json"
    args = argparse.Namespace(configfile=[str(study)], gpus="1", device="cpu", steps="1",
                              epochs_per_round=None, json=str(out), results=str(tmp_path / "results"))
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "no GPU used" in text and "these are CPU hours" in text and "CPU-h" in text
    assert "s: digits mlp dropout=0 loss=ce: learned from 3 finished rounds of 1 cell(s)" in text
    assert "s: digits mlp dropout=0.5 loss=vwcc: assumed E = 10 every round" in text
    assert '"unit": "CPU"' in out.read_text()
    if not torch.cuda.is_available():
        assert "no GPU on this machine" in text


def test_a_results_folder_that_is_not_there_is_one_line(tmp_path):
    import argparse

    from asknlearn.estimate import main

    out = tmp_path / "e.json"
    args = argparse.Namespace(configfile=["config/config.yaml"], gpus="1", device="cpu", steps="1",
                              epochs_per_round=None, json=str(out), results=str(tmp_path / "nope"))
    with pytest.raises(ConfigError) as exc:
        main(args)
    assert str(exc.value).startswith(f"--results={str(tmp_path / 'nope')!r} is not a folder; valid:")
    assert "\n" not in str(exc.value) and not out.exists()


@pytest.mark.slow
def test_bench_estimate_quick(tmp_path):
    """The benchmark runs from a clone (no other study: its learned-E columns are empty) and
    writes one ratio per strategy of the committed ablation."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(repo / "benchmarks" / "bench_estimate.py"), "--quick",
                           "--study", str(tmp_path / "none"), "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "estimate.json").read_text())
    rows = doc["results"]["per_strategy"]
    assert len(rows) == 10 and all(r["assumed"] > 0 and r["held-out"] > 0 for r in rows.values())
    assert "learned-E" not in rows["badge"] and "held_out_seconds" in proc.stdout
