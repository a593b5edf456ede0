"""Hardening of cell naming and data loading (issue 12, items 8, 11 and 12).

- Noise levels are spelled exactly in paths, cell ids and MLflow tags; levels that would still
  be one cell are refused before any job runs.
- Canonical ``.gz`` files are extracted without the network; one that fails its MD5 check is
  named, with what to do, instead of being reported as missing or as a download error.
- Several processes loading one dataset on a fresh data root all succeed: the first extraction
  holds a lock and publishes each file by an atomic rename.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import pickle
import random
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from test_data import write_idx

from asknlearn.config import ExperimentConfig
from asknlearn.data import load_dataset
from asknlearn.errors import ConfigError, DatasetError
from asknlearn.naming import noise_token, noise_tokens
from asknlearn.tracking import cell_id, cell_tags

ROOT = Path(__file__).resolve().parents[1]
HAS_SNAKEMAKE = shutil.which("snakemake") is not None


# ---------------------------------------------------------------------------- item 8: naming
@pytest.mark.parametrize("value, token", [
    (0, "0"), (0.0, "0"), (-0.0, "0"), (0.1, "0.1"), (0.2, "0.2"), (0.1000001, "0.1000001"),
    (0.123456789, "0.123456789"), (1e-05, "1e-05"), (0.30000000000000004, "0.30000000000000004"),
])
def test_noise_token_is_exact_and_shortest(value, token):
    assert noise_token(value) == token
    assert float(token) == value


def test_noise_token_round_trips_and_keeps_the_old_spelling_where_it_was_exact():
    rng = random.Random(12)
    for _ in range(2000):
        v = rng.random() if rng.random() < 0.5 else round(rng.random(), rng.randint(1, 6))
        t = noise_token(v)
        assert float(t) == v
        if float(f"{v:g}") == v:  # existing folders (noise0, noise0.1, noise1e-05) keep their names
            assert t == f"{v:g}"


def test_close_noise_levels_are_distinct_cells_everywhere():
    a = {"study": "s", "dataset": "digits", "strategy": "badge", "seed": 0, "noise": 0.1}
    b = {**a, "noise": 0.1000001}
    assert ExperimentConfig(**a).cell_id() != ExperimentConfig(**b).cell_id()
    assert ExperimentConfig(**b).cell_id().endswith("/noise0.1000001")
    assert cell_id(a) != cell_id(b)  # the MLflow run a cell resumes is found by this tag
    assert cell_tags(b)["noise"] == "0.1000001"
    assert ExperimentConfig(**{**a, "noise": 0.123456789}).cell_id().endswith("/noise0.123456789")


def test_noise_levels_that_are_one_cell_are_refused():
    assert noise_tokens([0.0, 0.1, 0.1000001]) == ["0", "0.1", "0.1000001"]
    with pytest.raises(ConfigError, match=r"noise levels 0\.1 and 0\.1000000000001 are the same cell"):
        noise_tokens([0.2, 0.1, 0.1000000000001])
    with pytest.raises(ConfigError, match="noise levels 0 and 0 are the same cell"):
        noise_tokens([0, 0.0])


def _dry_run(tmp_path: Path, noise: str) -> subprocess.CompletedProcess:
    """``snakemake -n -p`` of a copy of the workflow with the quickstart's digits cells."""
    wd = tmp_path / "wf"
    wd.mkdir()
    shutil.copy(ROOT / "Snakefile", wd)
    for d in ("workflow", "config"):
        shutil.copytree(ROOT / d, wd / d, ignore=shutil.ignore_patterns("__pycache__"))
    (wd / "noise.yaml").write_text(f"strategies: [random]\nseeds: [0]\nnoise: {noise}\ntracking: false\n")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(["snakemake", "--workflow-profile", "none", "-n", "-p", "--configfile",
                           "noise.yaml"], cwd=wd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not HAS_SNAKEMAKE, reason="snakemake not installed")
def test_workflow_runs_each_noise_level_as_its_own_cell_with_the_exact_rate(tmp_path):
    proc = _dry_run(tmp_path, "[0.1, 0.1000001, 0.123456789]")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for token in ("0.1", "0.1000001", "0.123456789"):
        assert f"seed0/noise{token}/rounds.csv" in out
        assert f"--noise {token} " in out
    assert "0.123457" not in out


@pytest.mark.skipif(not HAS_SNAKEMAKE, reason="snakemake not installed")
def test_workflow_refuses_noise_levels_that_are_one_cell(tmp_path):
    proc = _dry_run(tmp_path, "[0.1, 0.1000000000001]")
    assert proc.returncode != 0
    assert "config noise: noise levels 0.1 and 0.1000000000001 are the same cell" in proc.stdout + proc.stderr
    assert not (tmp_path / "wf" / "results").exists()


# ---------------------------------------------------------------------------- items 11, 12: data
def make_mnist_gz(root: Path, folder: str, n_train: int = 12, n_test: int = 5,
                  seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Only the four canonical ``.gz`` files, in the real IDX format; their arrays and MD5s."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    md5s = {}
    for name, arr in arrays.items():
        write_idx(root / folder / "raw" / name, arr, compress=True)
        md5s[f"{name}.gz"] = hashlib.md5((root / folder / "raw" / f"{name}.gz").read_bytes()).hexdigest()
    return arrays, md5s


# no network: a mirror that refuses connections at once
UNREACHABLE = "http://127.0.0.1:9/"


def use_tiny_md5s(monkeypatch, md5s: dict[str, str]) -> None:
    """torchvision's resource list, with the MD5s of the tiny archives and no reachable mirror."""
    import torchvision.datasets as tvd

    for cls in (tvd.MNIST, tvd.FashionMNIST):
        monkeypatch.setattr(cls, "resources", [(n, md5s[n]) for n, _ in cls.resources])
        monkeypatch.setattr(cls, "mirrors", [UNREACHABLE])


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_canonical_gz_files_are_used_with_download_off(name, folder, tmp_path, monkeypatch):
    arrays, md5s = make_mnist_gz(tmp_path, folder)
    use_tiny_md5s(monkeypatch, md5s)
    d = load_dataset(name, tmp_path, download=False)
    assert d.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert d.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert not list((tmp_path / folder / "raw").glob(".*.tmp"))


def test_a_half_extracted_file_is_extracted_again(tmp_path, monkeypatch):
    arrays, md5s = make_mnist_gz(tmp_path, "MNIST")
    use_tiny_md5s(monkeypatch, md5s)
    raw = tmp_path / "MNIST" / "raw"
    full = gzip.decompress((raw / "train-images-idx3-ubyte.gz").read_bytes())
    (raw / "train-images-idx3-ubyte").write_bytes(full[:1000])  # a killed extraction
    d = load_dataset("mnist", tmp_path, download=False)
    assert d.x_train.shape == (12, 1, 28, 28)
    assert (raw / "train-images-idx3-ubyte").read_bytes() == full


def _damage(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "flipped":
        i = len(data) // 2
        return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1:]
    return b""


@pytest.mark.parametrize("download", [False, True])
@pytest.mark.parametrize("how", ["truncated", "flipped", "empty"])
def test_damaged_gz_names_the_md5_failure_and_the_fix(how, download, tmp_path, monkeypatch):
    _, md5s = make_mnist_gz(tmp_path, "FashionMNIST")
    use_tiny_md5s(monkeypatch, md5s)
    gz = tmp_path / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    gz.write_bytes(damaged := _damage(gz.read_bytes(), how))
    with pytest.raises(DatasetError) as err:
        load_dataset("fashion_mnist", tmp_path, download=download)
    msg = str(err.value)
    assert f"{str(gz)!r} fails its MD5 check (expected {md5s[gz.name]}, got " in msg
    assert "Replace it with the canonical t10k-images-idx3-ubyte.gz" in msg
    assert "not found" not in msg.lower()
    assert ("downloading a fresh copy failed" in msg) == download
    assert ("the file is empty" in msg) == (how == "empty")
    assert gz.read_bytes() == damaged  # the user's file is left as it was, nothing extracted
    assert not (gz.parent / "t10k-images-idx3-ubyte").exists()
    assert not list(gz.parent.glob(".*.tmp"))


def test_missing_file_with_download_off_names_it(tmp_path, monkeypatch):
    _, md5s = make_mnist_gz(tmp_path, "MNIST")
    use_tiny_md5s(monkeypatch, md5s)
    (tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError,
                       match=r"(?s)nor its \.gz .* for train-labels-idx1-ubyte \(download is off\)"):
        load_dataset("mnist", tmp_path, download=False)


_CHILD = """
import os, sys, time, zlib
import torchvision.datasets as tvd
from asknlearn.data import load_dataset

root, go, md5s, download = sys.argv[1], sys.argv[2], dict(a.split("=") for a in sys.argv[4:]), sys.argv[3]
for cls in (tvd.MNIST, tvd.FashionMNIST):
    cls.resources = [(n, md5s[n]) for n, _ in cls.resources]
    cls.mirrors = ["http://127.0.0.1:9/"]
open(f"{go}.ready.{os.getpid()}", "w").close()
while not os.path.exists(go):  # start together
    time.sleep(0.002)
d = load_dataset("mnist", root, download=download == "1")
print(len(d.y_train), len(d.y_test), zlib.crc32(d.x_train.numpy().tobytes()), d.y_train.sum().item())
"""


@pytest.mark.slow
@pytest.mark.parametrize("download", [True, False])
def test_concurrent_first_loads_on_a_fresh_root_all_succeed(download, tmp_path):
    """Four processes start together on a root holding only the canonical .gz files (the
    workflow's first cells on a fresh clone): every one loads the same, whole dataset."""
    root = tmp_path / "data"
    arrays, md5s = make_mnist_gz(root, "MNIST", n_train=6000, n_test=1000, seed=3)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(root), str(go), "1" if download else "0",
                               *(f"{k}={v}" for k, v in md5s.items())],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    while len(list(tmp_path.glob("go.ready.*"))) < len(procs):  # every child at the start line
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    go.touch()
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err[-2000:]
    lines = {out.strip() for out, _ in results}
    assert len(lines) == 1, lines
    n_train, n_test, _, label_sum = lines.pop().split()
    assert (int(n_train), int(n_test)) == (6000, 1000)
    assert int(label_sum) == int(arrays["train-labels-idx1-ubyte"].sum())
    raw = root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted([*arrays, *md5s])  # no temp file left


def _load_in_thread(*args, **kwargs) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target() -> None:
        try:
            box["data"] = load_dataset(*args, **kwargs)
        except Exception as exc:  # handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, box


@contextmanager
def holding(lock: Path) -> Iterator[None]:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_extraction_waits_for_the_lock_of_another_process(tmp_path, monkeypatch):
    _, md5s = make_mnist_gz(tmp_path, "MNIST")
    use_tiny_md5s(monkeypatch, md5s)
    raw = tmp_path / "MNIST" / "raw"
    with holding(tmp_path / "MNIST" / ".asknlearn-mnist.lock"):
        t, box = _load_in_thread("mnist", tmp_path, download=False)
        t.join(1.0)
        assert t.is_alive() and not (raw / "train-images-idx3-ubyte").exists()
    t.join(60)
    assert "error" not in box and box["data"].x_train.shape == (12, 1, 28, 28)


def test_cifar_with_download_on_waits_for_the_lock(tmp_path, monkeypatch):
    """torchvision may download and unpack CIFAR-10 in place, so that step takes turns too."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    rng = np.random.default_rng(4)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch"):
        with open(base / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, 2).tolist()}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    with holding(tmp_path / ".asknlearn-cifar10.lock"):
        t, box = _load_in_thread("cifar10", tmp_path, download=True)
        t.join(1.0)
        assert t.is_alive()
    t.join(60)
    assert "error" not in box and box["data"].x_train.shape == (10, 3, 32, 32)
