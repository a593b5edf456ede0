"""Batched image augmentations for pseudo-label refinement (Algorithm 1, the ``Aug`` step).

Augmentations act on whole (N, C, H, W) tensors at once: one random shift/crop and an
optional horizontal flip per image, made by one gather of precomputed indices, never per
image through PIL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Random translation by up to ``shift`` pixels (zero padding, i.e. a padded random crop)
    and, if ``flip``, a random horizontal flip with probability 1/2."""

    shift: int = 2
    flip: bool = False

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.shift == 0 and not self.flip:
            return x
        dev = x.device
        s = self.shift
        if s > 0:
            oy = torch.randint(0, 2 * s + 1, (n,), generator=generator).to(dev)
            ox = torch.randint(0, 2 * s + 1, (n,), generator=generator).to(dev)
        else:
            oy = ox = torch.zeros(n, dtype=torch.long, device=dev)
        ar = torch.arange(w, device=dev)
        cols = ar.expand(n, w)
        if self.flip:
            flip = torch.rand(n, generator=generator).to(dev) < 0.5
            # a flipped crop reads the padded columns right to left
            cols = torch.where(flip[:, None], w - 1 - ar, ar)
        # pad with the image minimum (background after normalization) rather than 0
        padded = F.pad(x, (s, s, s, s), value=float(x.amin())) if s > 0 else x
        wp = w + 2 * s
        rows = oy[:, None] + torch.arange(h, device=dev)  # (n, h)
        # one gather per image: crop (and flip) as flat indices into the padded image
        flat = (rows[:, :, None] * wp + (ox[:, None] + cols)[:, None, :]).view(n, 1, h * w)
        return padded.reshape(n, c, -1).gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)


# Defaults per dataset family. The paper leaves the augmentations unspecified; these are the
# standard label-preserving ones: small shifts for digits/clothing (no flip: it changes
# some classes' meaning), crop + flip for CIFAR-10, crop without flip for SVHN (digits).
FAMILY_AUGMENT = {
    "mnist": {"shift": 2, "flip": False},
    "cifar": {"shift": 4, "flip": True},
    "svhn": {"shift": 4, "flip": False},
}
