"""Deprecated: kept importable for one release (benchmarks/bench_vwcc.py imports it). The tables
are :mod:`asknlearn.catalogue`; your own datasets are :mod:`asknlearn.userdata`."""

from asknlearn.catalogue import DATASETS, MODELS, ModelInfo  # noqa: F401
from asknlearn.userdata import dataset_info  # noqa: F401
