"""Kept importable for one release (benchmarks import it): the baselines live in
:mod:`asknlearn.selectors.baselines`."""

from asknlearn.selectors.baselines import *  # noqa: F403
from asknlearn.selectors.baselines import bald_scores, k_center_greedy, kmeans, power_sample  # noqa: F401
