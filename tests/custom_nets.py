"""Small networks of a user's own, named in tests as ``model: "custom_nets:<factory>"``
(tests/ is on sys.path under pytest; the subprocess tests put it on PYTHONPATH)."""

from __future__ import annotations

import torch
import torch.nn as nn


class TinyCNN(nn.Module):
    """conv → ReLU → pool → dropout → linear head: a module with ``features``/``head``."""

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Dropout(dropout))
        self.head = nn.Linear(32, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def make_net(shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0) -> TinyCNN:
    """The factory: takes ``dropout``, so the package sets the rate (0 on the plain network)."""
    return TinyCNN(shape[0], num_classes, dropout)


def make_trunk(shape: tuple[int, int, int]) -> tuple[nn.Module, int]:
    """A factory returning (trunk, feature size); no dropout argument, no dropout layer."""
    return nn.Sequential(nn.Conv2d(shape[0], 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten()), 4
