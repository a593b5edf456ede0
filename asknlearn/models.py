"""The paper's networks (section 4.1), each split into a feature trunk and a linear head.

Every model is a :class:`SplitNet`: ``trunk(x)`` gives the penultimate features z (eq. 4),
``head`` is the last linear layer θ°, and dropout sits between them. Because the only
stochastic layer is after the trunk, T stochastic inferences (VWCC, eq. 2) need the trunk
once and the head on T dropout masks: one batched op, exact, no Python loop over T.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitNet(nn.Module):
    """trunk → dropout → head. ``forward`` returns logits; ``features`` returns z."""

    def __init__(self, trunk: nn.Module, feat_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.trunk = trunk
        self.feat_dim = feat_dim
        self.dropout_p = dropout
        self.head = nn.Linear(feat_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.dropout(self.trunk(x), self.dropout_p, self.training))

    def stochastic_logits(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """(T, N, K) logits from ``samples`` = T dropout masks on one trunk pass (eq. 2)."""
        z = self.trunk(x)
        zt = z.unsqueeze(0).expand(samples, *z.shape)
        p = self.dropout_p if self.dropout_p > 0 else 0.0
        # training=True: stochastic inference is MC dropout even when the model is in eval mode
        return self.head(F.dropout(zt, p, training=True))


def mlp_trunk(in_dim: int, hidden: tuple[int, ...] = (256, 256, 256)) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(inplace=True)]
        in_dim = h
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18Trunk(nn.Module):
    """ResNet-18, CIFAR variant (He et al. 2015; 3×3 stem, no max-pool), up to global pooling."""

    def __init__(self, in_ch: int = 3):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        layers, planes_in = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(planes_in, planes, stride), BasicBlock(planes, planes, 1)]
            planes_in = planes
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_bn_trunk(in_ch: int = 3) -> nn.Sequential:
    """VGG-16 with batch norm (Simonyan & Zisserman 2014), 32×32 inputs → 512 features."""
    layers: list[nn.Module] = []
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_ch = v
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


MODELS = ("mlp", "resnet18", "vgg16")


def build_model(name: str, shape: tuple[int, int, int], num_classes: int, dropout: float) -> SplitNet:
    """Build model ``name`` for inputs of ``shape`` = (C, H, W)."""
    from asknlearn.errors import ConfigError

    c, h, w = shape
    if name == "mlp":
        return SplitNet(mlp_trunk(c * h * w), 256, num_classes, dropout)
    if name in ("resnet18", "vgg16"):
        if (h, w) != (32, 32):
            raise ConfigError(f"model {name!r} expects 32x32 images, got {h}x{w}; use 'mlp'")
        trunk = ResNet18Trunk(c) if name == "resnet18" else vgg16_bn_trunk(c)
        return SplitNet(trunk, 512, num_classes, dropout)
    raise ConfigError(f"unknown model {name!r}; valid: {', '.join(MODELS)}")
