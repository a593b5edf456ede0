"""The package's extension points are declared once: a model is one entry of
``asknlearn.catalogue.MODELS`` (config resolution and ``build_model`` both read it), and the shared
numerical helpers equal their brute-force definitions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asknlearn import catalogue as names
from asknlearn.errors import ConfigError
from asknlearn.models import SplitNet, UserNet, build_model, mlp_trunk

ROOT = Path(__file__).resolve().parents[1]
TOY_ENTRY = '    "toy": ModelInfo("custom_nets:make_net", None, 0.4),\n'

# Runs catalogue.py with one entry added (the whole change a new model needs), then resolves a
# config and builds the network: config resolution must see the entry without importing torch
# or the factory's module, and build_model must build it.
_ONE_ENTRY = r"""
import json, re, sys, types
from pathlib import Path

import yaml

src = Path("asknlearn/catalogue.py").read_text()
anchor = 'MODELS: dict[str, ModelInfo] = {\n'
assert src.count(anchor) == 1, "the MODELS table moved: update tests/test_architecture.py"
mod = types.ModuleType("asknlearn.catalogue")
mod.__file__ = "asknlearn/catalogue.py"
sys.modules["asknlearn.catalogue"] = mod
exec(compile(src.replace(anchor, anchor + sys.argv[1]), mod.__file__, "exec"), mod.__dict__)

from asknlearn.config import from_mapping

plain = from_mapping({"dataset": "digits", "model": "toy", "strategy": "badge"}).resolve()
mc = from_mapping({"dataset": "digits", "model": "toy", "strategy": "bald"}).resolve()
loaded = sorted(m for m in sys.modules if m in ("torch", "custom_nets"))
committed = yaml.safe_load(Path("workflow/schemas/config.schema.yaml").read_text())
pattern = committed["properties"]["experiment"]["properties"]["model"]["pattern"]

from asknlearn.models import build_model

net = build_model(mc.model, (1, 8, 8), 10, mc.dropout)
print(json.dumps({"loaded": loaded, "dropout": [plain.dropout, mc.dropout],
                  "in_pattern": re.match(pattern, "toy") is not None, "net": type(net).__name__,
                  "stochastic": net.stochastic, "head": net.head.out_features}))
"""


def test_a_model_is_one_entry_of_the_catalogue():
    r = subprocess.run([sys.executable, "-c", _ONE_ENTRY, TOY_ENTRY], capture_output=True,
                       text=True, timeout=300, cwd=ROOT,
                       env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}", "PATH": "/usr/bin:/bin",
                            "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["loaded"] == []  # resolving read the entry only: no torch, no factory import
    assert out["dropout"] == [0.0, 0.4]  # the entry's default rate on the stochastic network
    assert out["in_pattern"]  # the committed workflow schema accepts it: no regeneration
    assert out == {**out, "net": "UserNet", "stochastic": True, "head": 10}


def test_build_model_reads_the_names_table(monkeypatch):
    monkeypatch.setitem(names.MODELS, "toy", names.ModelInfo("custom_nets:make_net", (8, 8), 0.4))
    net = build_model("toy", (1, 8, 8), 3, 0.2)
    assert isinstance(net, UserNet) and net.head.out_features == 3 and net.stochastic
    with pytest.raises(ConfigError, match=r"model 'toy' expects 8x8 images, got 28x28; valid: mlp"):
        build_model("toy", (1, 28, 28), 3, 0.2)
    with pytest.raises(ConfigError, match="unknown model 'nope'; valid: mlp, resnet18, vgg16, linear, toy"):
        build_model("nope", (1, 8, 8), 3, 0.2)


def test_built_in_models_are_the_networks_they_were():
    """A built-in model goes through its entry's factory: the same parameters, drawn in the
    same order, as the trunk and head built directly."""
    torch.manual_seed(0)
    via_entry = build_model("mlp", (1, 8, 8), 10, 0.3)
    torch.manual_seed(0)
    direct = SplitNet(mlp_trunk(64, dropout=0.3), 256, 10)
    assert type(via_entry) is SplitNet and via_entry.stochastic
    assert str(via_entry) == str(direct)
    a, b = via_entry.state_dict(), direct.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- shared distances
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blocked_nearest_distances_are_the_brute_force_minimum(dtype):
    from asknlearn.kmeanspp import nearest_sq_dists, sq_norms

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1003, 24, generator=g, dtype=dtype)
    centres = torch.randn(37, 24, generator=g, dtype=dtype)
    x[5] = centres[3]  # a point on a centre: distance 0 up to rounding, never negative
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    brute = torch.cdist(x.double(), centres.double()).square()
    for block in (1, 64, 1003, 4096):  # 64 does not divide 1003
        mind, assign = nearest_sq_dists(x, centres, sq_norms(x, chunk=100), sq_norms(centres), block)
        assert mind.dtype == torch.float64 and (mind >= 0).all() and mind[5] <= tol
        torch.testing.assert_close(mind, brute.min(1).values, rtol=tol, atol=tol)
        assert torch.equal(assign, brute.argmin(1))
    empty = nearest_sq_dists(x, centres[:0], sq_norms(x), sq_norms(centres[:0]), 64)
    assert torch.isinf(empty[0]).all() and not empty[1].any()


def test_adding_a_centre_lowers_distances_to_the_brute_force_minimum():
    from asknlearn.kmeanspp import add_centre, sq_norms

    g = torch.Generator().manual_seed(1)
    x = torch.randn(501, 8, generator=g, dtype=torch.float64)
    xn = sq_norms(x, chunk=64)
    assert torch.equal(xn, sq_norms(x, chunk=501)) and torch.allclose(xn, (x * x).sum(1))
    d2 = torch.full((501,), float("inf"), dtype=torch.float64)
    for c in (7, 300, 42):
        ci = torch.tensor([c])
        add_centre(d2, xn, (x @ x[c]).double(), ci)
    brute = torch.cdist(x, x[[7, 300, 42]]).square().min(1).values
    torch.testing.assert_close(d2, brute, rtol=1e-10, atol=1e-10)
    assert d2[[7, 300, 42]].eq(0).all()


