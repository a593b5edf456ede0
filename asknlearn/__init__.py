"""asknlearn: Ask-n-Learn (Venkatesh & Thiagarajan, 2020) and its baselines for deep active learning.

``asknlearn.select``, ``asknlearn.lwcc_loss`` and ``asknlearn.vwcc_loss`` (the Python API for your
own loop, :mod:`asknlearn.api`, docs/api.md) are imported on first use, so importing the
package does not import torch.
"""

__version__ = "0.1.0"

_API = ("select", "lwcc_loss", "vwcc_loss")


def __getattr__(name: str):
    if name in _API:
        from asknlearn import api

        return getattr(api, name)
    raise AttributeError(f"module 'asknlearn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
