"""Shims that let the BADGE reference (JordanAsh/badge ``run.py``) run on a CPU with today's
torch, torchvision and numpy, without editing its files. ``benchmarks/bench_reference.py``
puts this folder first on the reference's ``PYTHONPATH``; Python imports ``sitecustomize`` at
start-up. Each patch is applied right after the module it patches is first imported, so the
import costs stay where the reference itself incurs them:

* ``torch``: ``Tensor.cuda`` and ``nn.Module.cuda`` return ``self`` (the reference calls
  ``.cuda()`` unconditionally; on a CPU-only machine that raises);
* ``dataset`` (the reference's own module): ``DataHandler1.__getitem__`` reads the image with
  ``np.asarray(x)`` where the reference calls ``x.numpy()`` on what ``run.py`` already turned
  into a numpy array (an AttributeError with current torchvision, whose ``train_data`` is a
  tensor that ``run.py`` converts);
* ``torchfile``: ``badge_sampling.py`` imports this unmaintained package and never uses it;
  where it is not installed an empty module stands in.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import types


def _patch_torch(torch: types.ModuleType) -> None:
    def _self(obj, *args, **kwargs):
        return obj

    torch.Tensor.cuda = _self
    torch.nn.Module.cuda = _self


def _patch_dataset(dataset: types.ModuleType) -> None:
    import numpy as np
    from PIL import Image

    handler = getattr(dataset, "DataHandler1", None)
    if handler is None:
        return

    def __getitem__(self, index):  # the reference's method with x.numpy() -> np.asarray(x)
        x, y = self.X[index], self.Y[index]
        if self.transform is not None:
            x = Image.fromarray(np.asarray(x), mode="L")
            x = self.transform(x)
        return x, y, index

    handler.__getitem__ = __getitem__


_PATCHES = {"torch": _patch_torch, "dataset": _patch_dataset}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Finds the real spec of a patched module and runs its patch once it has executed."""

    def find_spec(self, name, path=None, target=None):
        if name not in _PATCHES:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return None
        loader, patch = spec.loader, _PATCHES[name]
        exec_module = loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchAfterImport())

if importlib.util.find_spec("torchfile") is None:
    sys.modules["torchfile"] = types.ModuleType("torchfile")
