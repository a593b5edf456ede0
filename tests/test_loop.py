"""The AL loop: resume, pairing across strategies, the written files, end to end on digits."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from asknlearn.loop import Cell, run_cell, split_pool
from asknlearn.strategies import PAPER_STRATEGIES

TIMING = ["train_seconds", "inference_seconds", "selection_seconds", "round_seconds", "timestamp_ms"]


class Stop(Exception):
    pass


def _stop_after(round_: int):
    def log(line: str) -> None:
        if f"round {round_:>3}/" in line:
            raise Stop(line)

    return log


@pytest.mark.parametrize("strategy", ["badge", "ask-n-learn-vwcc"])
def test_resume_after_round_2_equals_uninterrupted(strategy, tiny_cfg, digits, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, strategy=strategy, noise=0.1, budget=80)
    full = run_cell(cfg, tmp_path / "full", data=digits, log=lambda s: None)
    with pytest.raises(Stop):
        run_cell(cfg, tmp_path / "cut", data=digits, log=_stop_after(2))
    assert len(pd.read_csv(tmp_path / "cut" / "rounds.csv")) == 3  # rounds 0, 1, 2 on disk
    lines: list[str] = []
    resumed = run_cell(cfg, tmp_path / "cut", data=digits, log=lines.append)
    assert "resuming after round 2" in lines[0]
    assert not any("round   2/" in s for s in lines)  # finished rounds are not retrained
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING))
    for name in ("queries.csv", "reliability.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / name),
                                      pd.read_csv(tmp_path / "cut" / name))
    # a finished run is a no-op that restores deleted tables (Snakemake removes outputs on rerun)
    lines.clear()
    (tmp_path / "cut" / "rounds.csv").unlink()
    run_cell(cfg, tmp_path / "cut", data=digits, log=lines.append)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cut" / "rounds.csv"),
                                  pd.read_csv(tmp_path / "full" / "rounds.csv").assign(
                                      **{c: pd.read_csv(tmp_path / "cut" / "rounds.csv")[c] for c in TIMING}))
    assert lines == [f"[{cfg.cell_id()}] already finished (5 rounds); nothing to do"]
    assert not list((tmp_path / "cut").glob(".*tmp"))


def test_resume_restores_deleted_tables_before_the_next_round(tiny_cfg, digits, tmp_path):
    """Snakemake deletes a rerun job's outputs: the tables of the finished rounds come back when
    the cell resumes, not only after its next round (which can take hours)."""
    cfg = dataclasses.replace(tiny_cfg, strategy="badge", budget=60)
    with pytest.raises(Stop):
        run_cell(cfg, tmp_path, data=digits, log=_stop_after(1))
    before = {n: pd.read_csv(tmp_path / n) for n in ("rounds.csv", "queries.csv", "reliability.csv")}
    for name in before:
        (tmp_path / name).unlink()
    seen: dict[str, pd.DataFrame] = {}

    def log(line: str) -> None:
        if "resuming after round 1" in line:
            seen.update({n: pd.read_csv(tmp_path / n) for n in before})
            raise Stop(line)

    with pytest.raises(Stop):
        run_cell(cfg, tmp_path, data=digits, log=log)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(seen[name], frame)


def test_resume_with_another_eval_batch_size_selects_the_same_points(tiny_cfg, digits, tmp_path):
    """eval_batch_size is runtime-only: it chunks inference, but the refinement's augmentation
    draws are made for the whole low-confidence set at once, so a resume with another value
    (here chunks of 7 rows, well below the pool) queries exactly what the cell would have."""
    cfg = dataclasses.replace(tiny_cfg, strategy="ask-n-learn-lwcc", noise=0.1)
    full = run_cell(cfg, tmp_path / "full", data=digits, log=lambda s: None)
    with pytest.raises(Stop):
        run_cell(cfg, tmp_path / "cut", data=digits, log=_stop_after(1))
    resumed = run_cell(dataclasses.replace(cfg, eval_batch_size=7), tmp_path / "cut", data=digits,
                       log=lambda s: None)
    assert full["oracle_refined_fraction"].iloc[1:].gt(0).all()  # refinement acted
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING))
    assert (tmp_path / "full" / "queries.csv").read_bytes() == (tmp_path / "cut" / "queries.csv").read_bytes()


def test_resume_refuses_a_different_configuration(tiny_cfg, digits, tmp_path):
    from asknlearn.errors import ConfigError

    run_cell(dataclasses.replace(tiny_cfg, budget=20), tmp_path, data=digits, log=lambda s: None)
    with pytest.raises(ConfigError, match="different configuration.*budget"):
        run_cell(dataclasses.replace(tiny_cfg, budget=40), tmp_path, data=digits, log=lambda s: None)


def test_strategies_are_paired_same_seed_set_and_initial_weights(tiny_cfg, digits, tmp_path):
    a = Cell(dataclasses.replace(tiny_cfg, strategy="random"), tmp_path / "a", data=digits)
    b = Cell(dataclasses.replace(tiny_cfg, strategy="ask-n-learn-lwcc"), tmp_path / "b", data=digits)
    for r in (0, 3):
        wa, wb = a.new_model(r).state_dict(), b.new_model(r).state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(a.new_model(0).head.weight, a.new_model(1).head.weight)
    s1 = split_pool(a.cfg, 1300)[0]
    s2 = split_pool(b.cfg, 1300)[0]
    assert torch.equal(s1, s2)
    s3 = split_pool(dataclasses.replace(a.cfg, seed=1), 1300)[0]
    assert not torch.equal(s1, s3)


def test_written_files_and_noisy_labels(tiny_cfg, digits, tmp_path):
    cfg = dataclasses.replace(tiny_cfg, strategy="entropy", noise=0.25, val_size=100)
    rows = run_cell(cfg, tmp_path, data=digits, log=lambda s: None)
    q = pd.read_csv(tmp_path / "queries.csv")
    assert len(q) == cfg.seed_size + cfg.budget and q["index"].is_unique
    assert not q.loc[q["round"] == 0, "wrong"].any()  # the seed set is clean
    per_round = q[q["round"] > 0].groupby("round")["wrong"].sum()
    assert (per_round == round(0.25 * cfg.query_size)).all()
    assert ((q["given_label"] != q["true_label"]) == q["wrong"]).all()
    assert rows["labels"].tolist() == [20, 40, 60, 80]
    assert rows["wrong_label_fraction"].iloc[-1] == pytest.approx(q["wrong"].mean())
    assert rows["val_accuracy"].notna().all()
    # validation points are never queried
    val = split_pool(Cell(cfg, tmp_path / "x", data=digits).cfg, len(digits.y_train))[2]
    assert not set(val.tolist()) & set(q["index"].tolist())


@pytest.mark.slow
def test_end_to_end_every_paper_strategy_improves_with_labels(digits, tmp_path):
    from asknlearn.config import ExperimentConfig

    for strategy in PAPER_STRATEGIES:
        cfg = ExperimentConfig(dataset="digits", strategy=strategy, seed_size=20, query_size=40,
                               budget=120, max_epochs=100, threads=1, tracking=False, k_aug=4)
        rows = run_cell(cfg, tmp_path / strategy, data=digits, log=lambda s: None)
        assert rows["labels"].tolist() == [20, 60, 100, 140]
        acc = rows["accuracy"].tolist()
        assert acc[-1] > acc[0] + 0.1, (strategy, acc)
        assert acc[-1] > 0.8, (strategy, acc)
        assert (rows["train_epochs"] >= 1).all()


def test_round_line_says_when_training_stops_at_max_epochs_short_of_its_target(tiny_cfg, digits,
                                                                               tmp_path):
    """An under-fitted round (max_epochs reached below target_train_accuracy) is named in its
    line, with the accuracy it reached; a round that reaches its target is not flagged."""
    lines: list[str] = []
    capped = dataclasses.replace(tiny_cfg, strategy="badge", budget=20, max_epochs=1)
    rows = run_cell(capped, tmp_path / "capped", data=digits, log=lines.append)
    rounds = [s for s in lines if "/1 labels" in s]
    assert len(rounds) == 2
    for line, acc in zip(rounds, rows["train_accuracy"], strict=True):
        assert f"(max_epochs reached: train acc {acc:.3f} < 0.99)" in line
    lines.clear()
    easy = dataclasses.replace(capped, max_epochs=60, target_train_accuracy=0.5)
    rows = run_cell(easy, tmp_path / "easy", data=digits, log=lines.append)
    assert (rows["train_accuracy"] >= 0.5).all()
    assert not any("max_epochs reached" in s for s in lines)
