"""Shared fixtures: one CPU thread per test process (the suite shares 2 cores)."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
# tests never talk to a tracking server unless they start one themselves
os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def digits():
    from asknlearn.data import load_dataset

    return load_dataset("digits")


@pytest.fixture
def tiny_cfg():
    """A digits cell small enough for a few seconds of CPU."""
    from asknlearn.config import ExperimentConfig

    return ExperimentConfig(dataset="digits", seed_size=20, query_size=20, budget=60,
                            max_epochs=60, threads=1, tracking=False, k_aug=4)
