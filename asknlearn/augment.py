"""Batched image augmentations for pseudo-label refinement (Algorithm 1, the ``Aug`` step).

Augmentations act on whole (N, C, H, W) tensors at once: one random shift/crop and an
optional horizontal flip per image, made by one gather of precomputed indices, never per
image through PIL. The random draws are separate from their application (:meth:`Augment.draw`,
:meth:`Augment.apply`), so a caller can draw for a whole set once and apply in chunks of any
size: the result does not depend on the chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Random translation by up to ``shift`` pixels (a padded random crop; the padding is the
    background value given to :meth:`apply`, by default the images' minimum, which is the
    background after normalization) and, if ``flip``, a horizontal flip with probability 1/2."""

    shift: int = 2
    flip: bool = False

    @property
    def identity(self) -> bool:
        return self.shift == 0 and not self.flip

    def draw(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Offsets (oy, ox) in [0, 2·shift] and flip flags for n images, on the CPU."""
        s = self.shift
        if s > 0:
            oy = torch.randint(0, 2 * s + 1, (n,), generator=generator)
            ox = torch.randint(0, 2 * s + 1, (n,), generator=generator)
        else:
            oy = ox = torch.zeros(n, dtype=torch.long)
        flip = (torch.rand(n, generator=generator) < 0.5) if self.flip else torch.zeros(n, dtype=torch.bool)
        return oy, ox, flip

    def apply(self, x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor,
              pad_value: float | None = None) -> torch.Tensor:
        """Crop (and flip) each image of x (N, C, H, W) with the given draws."""
        if self.identity:
            return x
        n, c, h, w = x.shape
        dev, s = x.device, self.shift
        oy, ox, flip = oy.to(dev), ox.to(dev), flip.to(dev)
        ar = torch.arange(w, device=dev)
        # a flipped crop reads the padded columns right to left
        cols = torch.where(flip[:, None], w - 1 - ar, ar) if self.flip else ar.expand(n, w)
        pad = float(x.amin()) if pad_value is None else pad_value
        padded = F.pad(x, (s, s, s, s), value=pad) if s > 0 else x
        wp = w + 2 * s
        rows = oy[:, None] + torch.arange(h, device=dev)  # (n, h)
        # one gather per image: crop (and flip) as flat indices into the padded image
        flat = (rows[:, :, None] * wp + (ox[:, None] + cols)[:, None, :]).view(n, 1, h * w)
        return padded.reshape(n, c, -1).gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 pad_value: float | None = None) -> torch.Tensor:
        """Draw and apply in one call (training-time augmentation of a batch)."""
        if self.identity:
            return x
        return self.apply(x, *self.draw(len(x), generator), pad_value=pad_value)

