"""How a cell's values are spelled in paths, ids and tags.

A noise level is written in its shortest round-trip form (``repr`` of the float, without a
trailing ``.0``), so the path of a cell names the exact rate it ran with: ``0.1`` and
``0.1000001`` are two cells, ``0.123456789`` runs as ``0.123456789``. Rates that ``:g`` already
wrote exactly (``0``, ``0.1``, ``1e-05``) keep their old spelling, so existing result folders
and MLflow cell tags still match.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from asknlearn.errors import ConfigError

# the report selects a noise level with this tolerance (asknlearn/report.py `_select`); levels
# closer than it would be drawn in one figure, so they are refused up front
NOISE_RESOLUTION = 1e-9


def noise_token(noise: float) -> str:
    """The exact, shortest spelling of ``noise`` in a path or id; ``float(token) == noise``."""
    v = float(noise) + 0.0  # + 0.0 turns -0.0 into 0.0, so 0 has one spelling
    if not math.isfinite(v):
        raise ConfigError(f"noise={noise!r} is not a finite number; valid: a rate in [0, 1)")
    s = repr(v)
    return s[:-2] if s.endswith(".0") else s


def noise_tokens(levels: Iterable[float]) -> list[str]:
    """The path spellings of a study's noise levels, refusing levels that would collide in a
    path or be drawn as one level by the report."""
    values = [float(r) for r in levels]
    tokens = [noise_token(v) for v in values]
    order = sorted(range(len(values)), key=values.__getitem__)
    for a, b in zip(order, order[1:], strict=False):
        if values[b] - values[a] < NOISE_RESOLUTION:
            raise ConfigError(
                f"noise levels {tokens[a]} and {tokens[b]} are the same cell (closer than "
                f"{NOISE_RESOLUTION:g}); valid: distinct levels at least {NOISE_RESOLUTION:g} apart"
            )
    return tokens
