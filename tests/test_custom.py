"""Your own data, your own model, your own loop (issue 15 items 2-5).

A tiny .npz dataset made here (600 8x8 grey images of 3 classes) runs through ``asknlearn run``
and through the workflow; every bad-data case stops up front with its one line; a small CNN of
tests/custom_nets.py runs as ``model: "custom_nets:make_net"``; the docs/api.md example runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

import asknlearn
from asknlearn import userdata as names
from asknlearn.cli import main as cli_main
from asknlearn.config import ExperimentConfig
from asknlearn.data import load_dataset
from asknlearn.errors import ConfigError, DatasetError
from asknlearn.models import SplitNet, build_model

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def toy_arrays(n_train: int = 600, n_test: int = 150, seed: int = 0) -> dict[str, np.ndarray]:
    """3 classes of 8x8 grey uint8 images: class k lights up rows 2k..2k+2."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 3, n)
        x = (rng.random((n, 8, 8)) * 60).astype(np.uint8)
        for k in range(3):
            x[y == k, 2 * k : 2 * k + 3, :] += 150
        out[f"x_{split}"], out[f"y_{split}"] = x, y
    return out


@pytest.fixture
def toy_npz(tmp_path: Path) -> Path:
    path = tmp_path / "toy.npz"
    np.savez(path, **toy_arrays())
    return path


def run_args(npz: Path, out: Path, *flags: str) -> list[str]:
    custom = f'{{"toy": {{"path": "{npz}"}}}}'
    return ["run", "--dataset", "toy", "--custom-datasets", custom, "--seed-size", "10",
            "--query-size", "10", "--budget", "20", "--max-epochs", "5", "--threads", "1",
            "--tracking", "false", "--quiet", "--out", str(out), *flags]


# ---------------------------------------------------------------------------- your data
def test_npz_dataset_runs_through_asknlearn_run(toy_npz, tmp_path):
    out = tmp_path / "cell"
    assert cli_main(run_args(toy_npz, out, "--strategy", "margin")) == 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["labels"]) == [10, 20, 30]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["dataset"] == "toy" and cfg["model"] == "mlp"  # small grey images: the MLP
    assert cfg["custom_datasets"] == {"toy": {"path": str(toy_npz.resolve())}}
    assert rounds["accuracy"].iloc[-1] > 0.6  # the classes are separable; chance is 1/3


def test_defaults_follow_the_data(toy_npz):
    cfg = ExperimentConfig(dataset="toy", custom_datasets={"toy": {"path": str(toy_npz)}},
                           strategy="badge").resolve()
    # pool of 600: b = 600/60 = 10, |S| = 10, B = 10 rounds of b
    assert (cfg.seed_size, cfg.query_size, cfg.budget, cfg.model) == (10, 10, 100, "mlp")
    assert names.dataset_info("toy").num_classes == 3


@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_layouts_and_training_split_normalization(tmp_path, layout):
    a = toy_arrays(120, 30)
    rgb = {k: (np.stack([v, v // 2, 255 - v], axis=1 if layout == "nchw" else 3)
               if k.startswith("x") else v) for k, v in a.items()}
    np.savez(tmp_path / "rgb.npz", **rgb)
    torch.save({k: torch.from_numpy(v) for k, v in rgb.items()}, tmp_path / "rgb.pt")
    ref = None
    for file in ("rgb.npz", "rgb.pt"):
        info = names.dataset_info("rgb", {"rgb": {"path": str(tmp_path / file)}})
        assert info.shape == (3, 8, 8) and info.layout == layout
        data = load_dataset("rgb")
        x = data.x_train
        # per-channel mean 0 and std 1 on the training split, from the training split
        assert torch.allclose(x.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4)
        assert torch.allclose(x.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
        assert data.x_test.shape == (30, 3, 8, 8) and data.y_test.dtype == torch.int64
        assert len(data.info.mean) == 3
        ref = x if ref is None else ref
        assert torch.equal(x, ref)  # .pt and .npz read the same images


def test_imagefolder_tree(tmp_path):
    from PIL import Image

    a = toy_arrays(30, 12)
    root = tmp_path / "tree"
    for split in ("train", "test"):
        for i, (img, y) in enumerate(zip(a[f"x_{split}"], a[f"y_{split}"], strict=True)):
            # the test split lacks class "c1": its labels must still follow train's indices
            cls = f"c{y}" if split == "train" or y != 1 else "c2"
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img, mode="L").save(root / split / cls / f"{i:03d}.png")
    info = names.dataset_info("tree", {"tree": {"path": str(root)}})
    assert info.loader == "imagefolder" and info.shape == (1, 8, 8) and info.num_classes == 3
    data = load_dataset("tree")
    assert data.x_train.shape == (30, 1, 8, 8)
    test_names = sorted(p.parent.name for p in (root / "test").rglob("*.png"))
    assert sorted(f"c{int(v)}" for v in data.y_test) == test_names


def bad_npz(tmp_path: Path, **change) -> Path:
    a = toy_arrays(60, 20)
    for k, v in change.items():
        if v is None:
            a.pop(k)
        else:
            a[k] = v
    path = tmp_path / "bad.npz"
    np.savez(path, **a)
    return path


BAD_DATA = {
    "missing split": ({"x_test": None}, r"has no x_test; valid: a file holding x_train"),
    "mismatched lengths": ({"y_train": np.zeros(59, dtype=np.int64)},
                           r"x_train has 60 images but y_train has 59 labels"),
    "labels outside": ({"y_test": np.full(20, 7)}, r"y_test holds labels outside 0\.\.2 \(e\.g\. 7\)"),
    "negative labels": ({"y_train": np.full(60, -1)}, r"y_train holds labels outside 0\.\.K-1"),
    "non-image shape": ({"x_train": np.zeros((60, 2, 2, 2, 2), np.uint8)},
                        r"x_train has shape \(60, 2, 2, 2, 2\), not images or vectors; valid: "
                        r"\(N, H, W\)"),
    "integer vectors": ({"x_train": np.zeros((60, 64), np.uint8)},
                        r"x_train holds \(N, D\) vectors of dtype uint8; valid: floating-point"),
    "shapes differ": ({"x_test": np.zeros((20, 9, 9), np.uint8)},
                      r"train images are \(1, 8, 8\) \(C, H, W\) but test images \(1, 9, 9\)"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_gives_one_line(tmp_path, capsys, case):
    change, message = BAD_DATA[case]
    path = bad_npz(tmp_path, **change)
    out = tmp_path / "cell"
    assert cli_main(run_args(path, out, "--strategy", "random")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert "dataset 'toy'" in err and not out.exists()  # nothing written


def test_dataset_too_big_for_memory_says_so(toy_npz, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(names, "available_memory", lambda: 100_000)
    names._DESCRIBED.clear()
    assert cli_main(run_args(toy_npz, tmp_path / "cell", "--strategy", "random")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert re.search(r"does not fit in memory: 750 images of 1x8x8 need about [0-9.]+ GiB", err)


def test_bad_definitions_and_folders(tmp_path, toy_npz):
    cases = [
        ({"toy": {"path": str(tmp_path / "none.npz")}}, DatasetError, "does not exist"),
        ({"toy": {"file": str(toy_npz)}}, ConfigError, "must be a mapping with key path"),
        ({"digits": {"path": str(toy_npz)}}, ConfigError, "would replace the built-in"),
        ({"toy": {"path": str(toy_npz), "format": "csv"}}, ConfigError, "format='csv'"),
        ({"toy": {"path": str(tmp_path)}}, DatasetError, "has no train/ folder"),
    ]
    for defs, err, text in cases:
        name = next(iter(defs))
        with pytest.raises(err, match=re.escape(text)):
            ExperimentConfig(dataset=name, custom_datasets=defs).resolve()
    with pytest.raises(DatasetError, match="unknown dataset 'nope'; valid: .*custom_datasets"):
        ExperimentConfig(dataset="nope").resolve()


# ---------------------------------------------------------------------------- your model
@pytest.mark.parametrize("strategy", ["badge", "ask-n-learn-vwcc"])
def test_custom_model_runs_badge_and_vwcc(toy_npz, tmp_path, strategy):
    out = tmp_path / strategy
    assert cli_main(run_args(toy_npz, out, "--strategy", strategy, "--model",
                             "custom_nets:make_net")) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    # the factory takes dropout: the package sets it (0 on BADGE's plain network)
    assert cfg["model"] == "custom_nets:make_net"
    assert cfg["dropout"] == (0.5 if strategy == "ask-n-learn-vwcc" else 0.0)
    assert len(pd.read_csv(out / "rounds.csv")) == 3


def test_custom_model_is_wrapped_as_a_split_net():
    net = build_model("custom_nets:make_net", (1, 8, 8), 3, 0.3)
    assert isinstance(net, SplitNet) and net.stochastic and net.feat_dim == 32
    x = torch.randn(4, 1, 8, 8)
    net.eval()
    assert torch.equal(net(x), net.head(net.features(x)))
    t = net.stochastic_logits(x, 6)  # nn.Dropout sampled in eval mode
    assert t.shape == (6, 4, 3) and not torch.allclose(t[0], t[1])
    assert not net.training and not any(m.training for m in net.modules())
    trunk = build_model("custom_nets:make_trunk", (1, 8, 8), 3, None)
    assert trunk.feat_dim == 4 and trunk(x).shape == (4, 3) and not trunk.stochastic


def test_custom_model_errors_are_one_line(toy_npz):
    base = {"dataset": "toy", "custom_datasets": {"toy": {"path": str(toy_npz)}}}
    cases = [
        ("custom_nets:make_trunk", "bald", {}, "has no stochastic layer"),
        ("custom_nets:make_trunk", "badge", {"dropout": 0.3}, "factory takes no dropout"),
        ("no_such_module_x:make", "badge", {}, "module 'no_such_module_x' cannot be imported"),
        ("custom_nets:nothing", "badge", {}, "has no 'nothing'"),
        ("custom nets", "badge", {}, "model='custom nets' is not valid"),
    ]
    for model, strategy, extra, text in cases:
        with pytest.raises(ConfigError, match=re.escape(text)) as exc:
            ExperimentConfig(**base, model=model, strategy=strategy, **extra).resolve()
        assert "\n" not in str(exc.value)


def test_stored_config_is_never_imported(tmp_path):
    """A results folder is data: reading a cell whose config.yaml names a model factory must
    not import it (the factory's module would write a file when imported)."""
    from asknlearn import records

    (tmp_path / "evil_nets.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\ndef make(shape): ...\n")
    cell = tmp_path / "cell"
    cell.mkdir()
    cfg = {**ExperimentConfig().to_dict(), "model": "evil_nets:make", "version": "0.1.0"}
    (cell / "config.yaml").write_text(yaml.safe_dump(cfg))
    (cell / "rounds.csv").write_text("round,labels\n")
    sys.path.insert(0, str(tmp_path))
    try:
        stored, rows = records.read_cell(cell)
        assert stored["model"] == "evil_nets:make" and rows == []
        assert records.find_cells([tmp_path]) == [cell]
    finally:
        sys.path.remove(str(tmp_path))
    assert not (tmp_path / "imported").exists()


# ---------------------------------------------------------------------------- your loop
def test_api_is_lazy_and_selects():
    code = "import sys, asknlearn; assert 'torch' not in sys.modules; asknlearn.__version__"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    torch.manual_seed(0)
    net = build_model("mlp", (1, 8, 8), 3, 0.3)
    x = torch.randn(50, 1, 8, 8)
    for strategy in ("margin", "badge", "ask-n-learn-vwcc", "bald"):
        idx = asknlearn.select(strategy, net, x, 7, generator=torch.Generator().manual_seed(1))
        assert idx.dtype == torch.int64 and len(torch.unique(idx)) == 7 and int(idx.max()) < 50
    # margin through the API = the smallest top-2 margins of the model's softmax
    net.eval()
    p = torch.softmax(net(x), 1).topk(2, dim=1).values
    assert set(asknlearn.select("margin", net, x, 5).tolist()) == set(
        torch.topk(p[:, 0] - p[:, 1], 5, largest=False).indices.tolist())
    with pytest.raises(ConfigError, match="pass labeled_x"):
        asknlearn.select("coreset", net, x, 5)
    with pytest.raises(ConfigError, match=r"b=60 is not valid; valid: an integer in \[1, 50\]"):
        asknlearn.select("badge", net, x, 60)
    plain = build_model("custom_nets:make_trunk", (1, 8, 8), 3, None)
    with pytest.raises(ConfigError, match="no dropout layer"):
        asknlearn.select("bald", plain, x, 5)


def test_api_losses_are_the_training_losses():
    from asknlearn.losses import LWCC, VWCC

    class Fixed(torch.nn.Module):  # returns the given logits: the module losses on plain logits
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return self.logits

        def stochastic_logits(self, x, samples):
            return self.logits

    torch.manual_seed(0)
    logits, logits_t, y = torch.randn(9, 4), torch.randn(5, 9, 4), torch.randint(0, 4, (9,))
    assert torch.allclose(asknlearn.lwcc_loss(logits, y, 0.7), LWCC(0.7)(Fixed(logits), None, y)[0])
    assert torch.allclose(asknlearn.vwcc_loss(logits_t, y), VWCC(5)(Fixed(logits_t), None, y)[0])


def test_docs_api_example_runs(tmp_path):
    text = (ROOT / "docs" / "api.md").read_text()
    block = re.findall(r"```python\n(.*?)```", text, re.S)[-1]
    script = tmp_path / "example.py"
    script.write_text(block)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    labeled, more, loss = proc.stdout.split()
    assert (labeled, more) == ("45", "10") and float(loss) > 0


# ---------------------------------------------------------------------------- the workflow
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not installed")
def test_workflow_on_a_custom_npz(toy_npz, tmp_path, monkeypatch):
    from test_workflow import copy_workflow, snakemake

    work = copy_workflow(tmp_path / "wf")
    config = {
        "study": "custom", "datasets": ["toy"], "strategies": ["margin", "ask-n-learn-vwcc"],
        "seeds": [0], "noise": [0.0], "tracking": False, "device": "cpu",
        "experiment": {"custom_datasets": {"toy": {"path": str(toy_npz)}},
                       "model": "custom_nets:make_net", "seed_size": 10, "query_size": 10,
                       "budget": 20, "max_epochs": 5},
    }
    (work / "study.yaml").write_text(yaml.safe_dump(config))
    # a wrong path stops the dry run up front with the package's one line, before any job
    bad = {**config, "experiment": {**config["experiment"],
                                    "custom_datasets": {"toy": {"path": str(tmp_path / "x.npz")}}}}
    (work / "bad.yaml").write_text(yaml.safe_dump(bad))
    proc = snakemake(work, "-n", "--configfile", "bad.yaml", check=False)
    assert proc.returncode != 0 and "Job stats" not in proc.stdout
    assert f"dataset 'toy': '{tmp_path / 'x.npz'}' does not exist" in proc.stdout + proc.stderr
    # the jobs import the factory from tests/ (a user's own package on PYTHONPATH)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(TESTS)]))
    snakemake(work, "--configfile", "study.yaml", "--cores", "1", timeout=900)
    table = pd.read_csv(work / "results" / "custom" / "rounds.csv")
    assert set(table["dataset"]) == {"toy"}
    assert set(table["strategy"]) == {"margin", "ask-n-learn-vwcc"}
    assert sorted(table["labels"].unique()) == [10, 20, 30]
