"""The paper's networks (section 4.1), each split into a feature trunk and a linear head.

Every model is a :class:`SplitNet`: ``trunk(x)`` gives the penultimate features z (eq. 4) and
``head`` is the last linear layer θ°. The stochastic layers that VWCC (eq. 2) and MC-dropout
selectors sample from sit *inside* the trunk, as in Seo et al. (2019), who obtain their
stochastic inferences from dropout or stochastic depth in the whole network:

* MLP: dropout after every hidden layer (so also on z, before the head);
* ResNet-18: stochastic depth in every residual block (Huang et al. 2016), linear decay of the
  drop rate from 0 at the stem to ``dropout`` at the last block;
* VGG-16-BN: dropout after every pooling stage.

Those layers are :class:`MCDropout` / :class:`StochasticDepth` modules: active in training, off in
eval mode, and switched on in eval mode by :func:`mc_sampling` (batch norm then still uses its
running statistics). :meth:`SplitNet.stochastic_logits` runs T stochastic inferences as ONE
forward pass over a T·B batch, never a Python loop over T. With ``dropout = 0`` the stochastic
layers are identities and the network is the plain one of the BADGE protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Stochastic(nn.Module):
    """Base of the layers that MC sampling switches on in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop rate {p!r} not in [0, 1)")
        self.p = p
        self.mc = False  # set by mc_sampling(): sample even in eval mode

    @property
    def active(self) -> bool:
        return self.p > 0 and (self.training or self.mc)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MCDropout(_Stochastic):
    """Inverted dropout that stays on during MC sampling (Gal & Ghahramani 2016)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True) if self.active else x


class StochasticDepth(_Stochastic):
    """Per-sample stochastic depth on a residual branch (Huang et al. 2016), inverted scaling:
    the branch of each sample is kept with probability 1 − p and scaled by 1/(1 − p), so eval
    mode is the identity. Per sample (not per batch), so the T copies of a T·B batch draw
    independent depths."""

    def forward(self, branch: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return branch
        keep = torch.empty((branch.shape[0],) + (1,) * (branch.dim() - 1), device=branch.device,
                           dtype=branch.dtype).bernoulli_(1.0 - self.p)
        return branch * keep / (1.0 - self.p)


@contextmanager
def mc_sampling(model: nn.Module) -> Iterator[None]:
    """Within this block every stochastic layer of ``model`` samples, whatever its mode: ours,
    and the plain ``nn.Dropout`` layers of a user's own network (put in training mode for the
    block, so that its batch norm keeps its running statistics)."""
    layers = [m for m in model.modules() if isinstance(m, _Stochastic)]
    torch_dropout = [(m, m.training) for m in model.modules()
                     if isinstance(m, nn.modules.dropout._DropoutNd)]
    for m in layers:
        m.mc = True
    for m, _ in torch_dropout:
        m.train(True)
    try:
        yield
    finally:
        for m in layers:
            m.mc = False
        for m, mode in torch_dropout:
            m.train(mode)


def has_stochastic_layers(model: nn.Module) -> bool:
    """Whether ``model`` has a stochastic layer with a non-zero rate that :func:`mc_sampling`
    switches on (ours, or torch's ``nn.Dropout`` family)."""
    return any(isinstance(m, (_Stochastic, nn.modules.dropout._DropoutNd)) and m.p > 0
               for m in model.modules())


class SplitNet(nn.Module):
    """trunk (with its stochastic layers, which carry their rates) → head. ``forward`` returns
    logits; ``features`` returns z, the input of the last layer (eq. 4)."""

    def __init__(self, trunk: nn.Module, feat_dim: int, num_classes: int):
        super().__init__()
        self.trunk = trunk
        self.feat_dim = feat_dim
        self.head = nn.Linear(feat_dim, num_classes)

    @property
    def stochastic(self) -> bool:
        """Whether the network has any stochastic layer with a non-zero rate."""
        return has_stochastic_layers(self)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    def stochastic_logits(self, x: torch.Tensor, samples: int) -> torch.Tensor:
        """(T, B, K) logits of T = ``samples`` stochastic inferences of x (B, ...) (eq. 2).

        One forward pass over the T·B batch ``x`` repeated T times: each copy draws its own
        dropout masks / depths. Batch norm keeps the model's mode (batch statistics while
        training, running statistics in eval), and since every copy of a sample sees the same
        batch, the T copies do not change the batch statistics.
        """
        b = x.shape[0]
        xt = x.unsqueeze(0).expand(samples, *x.shape).reshape(samples * b, *x.shape[1:])
        with mc_sampling(self):
            return self(xt).view(samples, b, -1)


def mlp_trunk(in_dim: int, hidden: tuple[int, ...] = (256, 256, 256), dropout: float = 0.0
              ) -> nn.Sequential:
    """[Linear → ReLU → dropout] per hidden layer (dropout after *every* hidden layer)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU(inplace=True), MCDropout(dropout)]
        in_dim = h
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """ResNet basic block whose residual branch goes through stochastic depth."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, drop: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.drop = StochasticDepth(drop)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.drop(self.bn2(self.conv2(out)))
        return F.relu(out + self.shortcut(x))


class ResNet18Trunk(nn.Module):
    """ResNet-18, CIFAR variant (He et al. 2015; 3×3 stem, no max-pool), up to global pooling.
    Block l of L drops its residual branch with rate ``dropout``·l/L (Huang et al.'s linear
    decay rule, which Seo et al. 2019 use for their ResNets)."""

    def __init__(self, in_ch: int = 3, dropout: float = 0.0):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_ch, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        stages = ((64, 1), (128, 2), (256, 2), (512, 2))
        n_blocks = 2 * len(stages)
        layers, planes_in, i = [], 64, 0
        for planes, stride in stages:
            for s in (stride, 1):
                i += 1
                layers.append(BasicBlock(planes_in, planes, s, dropout * i / n_blocks))
                planes_in = planes
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.stem(x))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def vgg16_bn_trunk(in_ch: int = 3, dropout: float = 0.0) -> nn.Sequential:
    """VGG-16 with batch norm (Simonyan & Zisserman 2014), 32×32 inputs → 512 features, with
    dropout after every pooling stage (the last one acts on z)."""
    layers: list[nn.Module] = []
    for v in _VGG16:
        if v == "M":
            layers += [nn.MaxPool2d(2), MCDropout(dropout)]
        else:
            layers += [nn.Conv2d(in_ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            in_ch = v
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


# The built-in models' factories, declared by their entries in asknlearn.catalogue.MODELS (which
# also holds their input size and default dropout): called as a factory of your own is, with
# the (C, H, W) shape and the dropout rate, returning (trunk, feature size).
def mlp(shape: tuple[int, int, int], dropout: float) -> tuple[nn.Module, int]:
    """The MLP: 3 hidden layers of 256, dropout after every one."""
    c, h, w = shape
    return mlp_trunk(c * h * w, dropout=dropout), 256


def linear(shape: tuple[int, int, int], dropout: float) -> tuple[nn.Module, int]:
    """The linear head on feature vectors (a linear probe on embeddings, shape (D, 1, 1)): the
    trunk passes the D features through, so z of eq. 4 is the embedding itself. Its stochastic
    network is MC dropout on those input features (Gal & Ghahramani 2016), the T inferences
    that VWCC (eq. 2), BALD and PowerBALD sample; with ``dropout`` 0 it is the plain probe."""
    c, h, w = shape
    return nn.Sequential(nn.Flatten(), MCDropout(dropout)), c * h * w


def resnet18(shape: tuple[int, int, int], dropout: float) -> tuple[nn.Module, int]:
    """ResNet-18 (CIFAR variant) with stochastic depth."""
    return ResNet18Trunk(shape[0], dropout), 512


def vgg16(shape: tuple[int, int, int], dropout: float) -> tuple[nn.Module, int]:
    """VGG-16 with batch norm, dropout after every pooling stage."""
    return vgg16_bn_trunk(shape[0], dropout), 512


# ---------------------------------------------------------------------------- your own model
class _FeaturesTrunk(nn.Module):
    """The trunk of a user's module that has ``features`` and ``head``: ``net.features(x)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


class UserNet(SplitNet):
    """A user's module with ``features(x) -> z`` and a linear ``head`` seen as a
    :class:`SplitNet`: trunk = ``features``, head = the module's own ``head`` (shared, not
    copied), so eq. 4, VWCC and every selector run on it unchanged."""

    def __init__(self, net: nn.Module):
        nn.Module.__init__(self)
        head = getattr(net, "head", None)
        if not callable(getattr(net, "features", None)) or not isinstance(head, nn.Linear):
            from asknlearn.errors import ConfigError

            raise ConfigError(
                f"model {type(net).__name__} is not usable: it needs features(x) -> z and a "
                f"head that is an nn.Linear (got head={type(head).__name__}); valid: a module "
                "with features/head, or a factory returning (trunk, feature size)")
        self.trunk = _FeaturesTrunk(net)
        self.feat_dim = head.in_features
        self.head = head


def as_split_net(model: nn.Module) -> SplitNet:
    """``model`` as a :class:`SplitNet`: itself, or a :class:`UserNet` view of a module with
    ``features``/``head``."""
    return model if isinstance(model, SplitNet) else UserNet(model)


def _first_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for a one-line error."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def load_factory(name: str):
    """The callable that ``"package.module:function"`` names, imported now: a built-in model
    entry's factory, or one a config the user passes names (never one read back from a
    results folder: resuming compares identities, it does not resolve stored configs)."""
    import importlib

    from asknlearn.errors import ConfigError

    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"model={name!r}: module {exc.name!r} cannot be imported; valid: "
                          "'package.module:function' importable from the working directory or "
                          "PYTHONPATH") from None
    except AttributeError:
        raise ConfigError(f"model={name!r}: module {module!r} has no {attr!r}; valid: the name "
                          "of a factory function in it") from None
    except Exception as exc:  # the user's module: ImportError, SyntaxError, any error it raises
        raise ConfigError(f"model={name!r}: module {module!r} fails to import: "
                          f"{_first_line(exc)}; valid: a module that imports cleanly (run "
                          f"python -c 'import {module}' to see its traceback)") from exc
    if not callable(fn):
        raise ConfigError(f"model={name!r} is a {type(fn).__name__}, not callable; valid: a "
                          "factory function")
    return fn


def factory_takes_dropout(name: str) -> bool:
    """Whether the factory ``name`` accepts a ``dropout`` argument (then the package sets the
    rate of its stochastic layers, as for the built-in models)."""
    import inspect

    try:
        params = inspect.signature(load_factory(name)).parameters
    except (TypeError, ValueError):
        return False
    return "dropout" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _build_factory(name: str, shape: tuple[int, int, int], num_classes: int,
                   dropout: float | None, factory: str | None = None) -> SplitNet:
    """Call the factory of model ``name`` (``factory``, a built-in model's from its entry;
    None: ``name`` itself, ``"package.module:function"``) with the arguments it takes among
    ``shape`` (C, H, W), ``num_classes`` and ``dropout`` (only when it takes it), and wrap what
    it returns: (trunk, feature size) becomes trunk → a new linear head; a module with
    features/head a :class:`UserNet`. Checked on two zero images: z must be (2, feature size)."""
    import inspect

    from asknlearn.errors import ConfigError

    fn = load_factory(factory or name)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    anykw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in (("shape", tuple(shape)), ("num_classes", num_classes),
                                ("dropout", dropout))
              if (k in params or anykw) and not (k == "dropout" and v is None)}
    try:
        out = fn(**kwargs)
    except Exception as exc:  # the user's factory: whatever it raises is theirs to see
        raise ConfigError(f"model={name!r}: the factory raised {_first_line(exc)}; valid: a "
                          "factory that builds the network for shape (C, H, W) and num_classes"
                          ) from exc
    if (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], nn.Module)
            and isinstance(out[1], int) and not isinstance(out[1], bool)):
        net: SplitNet = SplitNet(out[0], out[1], num_classes)
    elif isinstance(out, nn.Module) and hasattr(out, "features") and hasattr(out, "head"):
        net = UserNet(out)
        if net.head.out_features != num_classes:
            raise ConfigError(f"model={name!r}: its head has {net.head.out_features} outputs but "
                              f"the dataset has {num_classes} classes; valid: a head of "
                              "num_classes outputs (the factory may take num_classes)")
    else:
        raise ConfigError(f"model={name!r} returned {type(out).__name__}; valid: (trunk module, "
                          "feature size) or a module with features(x) and an nn.Linear head")
    if net.feat_dim < 1:
        raise ConfigError(f"model={name!r} has feature size {net.feat_dim}; valid: features z "
                          "of at least 1 dimension (the input of the linear head, eq. 4)")
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            z = net.features(torch.zeros(2, *shape))
    except Exception as exc:  # the user's network: any error it raises is the user's to see
        raise ConfigError(f"model={name!r} fails on images of shape {tuple(shape)} (C, H, W): "
                          f"{_first_line(exc)}") from None
    finally:
        net.train(was)
    if not isinstance(z, torch.Tensor):
        raise ConfigError(f"model={name!r}: features(x) returned a {type(z).__name__}, not a "
                          "tensor; valid: features(x) returning z alone, shape (batch, feature "
                          "size), not (z, logits)")
    if tuple(z.shape) != (2, net.feat_dim):
        raise ConfigError(f"model={name!r}: its features are {tuple(z.shape[1:])} per image but "
                          f"the head takes {net.feat_dim}; valid: features(x) of shape "
                          "(batch, feature size)")
    return net


def check_factory_model(name: str, shape: tuple[int, int, int], num_classes: int,
                        dropout: float | None, stochastic: bool, strategy: str) -> None:
    """Build factory model ``name`` once (on the CPU) to check it up front, and, when
    ``strategy`` runs on the stochastic network, that it has stochastic layers to sample."""
    from asknlearn.errors import ConfigError

    net = _build_factory(name, shape, num_classes, dropout)
    if stochastic and not net.stochastic:
        why = "at dropout=0" if dropout == 0 else "and its factory takes no dropout argument"
        raise ConfigError(
            f"model={name!r} has no stochastic layer (nn.Dropout with p > 0, MCDropout, "
            f"StochasticDepth) {why}, so strategy {strategy!r} cannot draw stochastic inferences (VWCC, "
            "MC-dropout selectors); valid: a network with dropout layers, a factory taking "
            "dropout, or a strategy on the plain network")


def build_model(name: str, shape: tuple[int, int, int], num_classes: int,
                dropout: float | None) -> SplitNet:
    """Build model ``name`` for inputs of ``shape`` = (C, H, W) with stochastic-layer rate
    ``dropout`` (0: the plain network): a built-in model (its entry in
    :data:`asknlearn.catalogue.MODELS` names its factory and input size) or your own factory,
    ``"package.module:function"`` (``dropout`` None: the network's own rates). Both are built
    the same way (:func:`_build_factory`)."""
    from asknlearn.catalogue import MODELS, is_model_factory, lookup
    from asknlearn.errors import ConfigError

    if is_model_factory(name):
        return _build_factory(name, shape, num_classes, dropout)
    entry = lookup(MODELS, name, "model")
    hw = entry.input_hw
    if hw is not None and tuple(shape[1:]) != hw:
        fits = [m for m, i in MODELS.items() if i.input_hw in (None, tuple(shape[1:]))]
        raise ConfigError(f"model {name!r} expects {hw[0]}x{hw[1]} images, got "
                          f"{shape[1]}x{shape[2]}; valid: {', '.join(fits)}")
    return _build_factory(name, shape, num_classes, dropout, factory=entry.factory)
