"""Model factories that misbehave, named in tests/test_reliability3.py as
``model: "reliability3_nets:<factory>"`` (tests/ is on sys.path under pytest; the subprocess
tests put it on PYTHONPATH). Each is a user's mistake or a user's slow model the package must
report in one line (or keep visibly alive), never run on silently or crash with a traceback."""

from __future__ import annotations

import os
import time

import torch
import torch.nn as nn


class _Small(nn.Module):
    """flatten → 16 → ReLU → dropout, a linear head: a module with ``features``/``head``."""

    def __init__(self, shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0):
        super().__init__()
        c, h, w = shape
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(),
                                  nn.Dropout(dropout))
        self.head = nn.Linear(16, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _EvalNaN(_Small):
    """Trains normally; in eval mode (inference, scoring, metrics) every feature is NaN."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x)
        return z if self.training else z * torch.nan


def eval_nan(shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> nn.Module:
    return _EvalNaN(shape, num_classes, dropout)


def raising(shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    raise RuntimeError("factory exploded: weights file /models/w.bin not found")


class _TupleFeatures(_Small):
    def features(self, x: torch.Tensor):  # a user's mistake: (z, logits) instead of z
        z = self.body(x)
        return z, self.head(z)


def tuple_features(shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return _TupleFeatures(shape, num_classes)


def zero_features(shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """(trunk, feature size 0): a trunk whose features are empty."""
    c, h, w = shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 0)), 0


_built = 0


def sleepy(shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> nn.Module:
    """A slow but healthy model: the first build in a process takes
    ``$RELIABILITY3_SLEEP_S`` seconds (a big download, a slow file system)."""
    global _built
    if _built == 0:
        time.sleep(float(os.environ.get("RELIABILITY3_SLEEP_S", "0")))
    _built += 1
    return _Small(shape, num_classes, dropout)
