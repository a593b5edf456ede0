"""Batched image augmentations for pseudo-label refinement (Algorithm 1, the ``Aug`` step).

Augmentations act on whole (N, C, H, W) tensors at once: one random shift/crop and an
optional horizontal flip per image, made by gather indexing, never per image through PIL.
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
        out = x
        if self.shift > 0:
            s = self.shift
            # pad with the image minimum (background after normalization) rather than 0
            fill = float(x.amin())
            padded = F.pad(x, (s, s, s, s), value=fill)
            dev = x.device
            oy = torch.randint(0, 2 * s + 1, (n,), generator=generator).to(dev)
            ox = torch.randint(0, 2 * s + 1, (n,), generator=generator).to(dev)
            rows = oy[:, None] + torch.arange(h, device=dev)  # (n, h)
            cols = ox[:, None] + torch.arange(w, device=dev)  # (n, w)
            # gather rows, then columns, of each padded image
            tmp = padded.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2 * s))
            out = tmp.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))
        if self.flip:
            flip = torch.rand(n, generator=generator).to(x.device) < 0.5
            out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
        return out


# Defaults per dataset family. The paper leaves the augmentations unspecified; these are the
# standard label-preserving ones: small shifts for digits/clothing (no flip: it changes
# some classes' meaning), crop + flip for CIFAR-10, crop without flip for SVHN (digits).
FAMILY_AUGMENT = {
    "mnist": {"shift": 2, "flip": False},
    "cifar": {"shift": 4, "flip": True},
    "svhn": {"shift": 4, "flip": False},
}
