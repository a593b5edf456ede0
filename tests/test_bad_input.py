"""Bad input, through the CLI and through the workflow config: every case gets one clear
message naming the bad value and the valid ones, a nonzero exit, and writes nothing.

The CLI cases call ``asknlearn.cli.main`` in-process (what ``python -m asknlearn`` runs; one
case goes through a real subprocess); the workflow cases run ``snakemake -n`` and must fail
on validation before any job starts.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from asknlearn.cli import main as cli_main

REPO = Path(__file__).resolve().parents[1]
BASE = ["run", "--dataset", "digits", "--strategy", "random", "--seed", "0", "--seed-size", "20",
        "--query-size", "20", "--budget", "40", "--threads", "1", "--max-epochs", "30",
        "--tracking", "false", "--quiet"]


def with_flags(**flags: str) -> list[str]:
    """BASE with some ``--flag value`` pairs replaced or added."""
    argv = list(BASE)
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    return argv


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (the MNIST/Fashion-MNIST format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(root: Path, n_train: int = 100, n_test: int = 40) -> Path:
    """A tiny Fashion-MNIST in torchvision's raw layout (random pixels, real format)."""
    rng = np.random.default_rng(0)
    raw = root / "FashionMNIST" / "raw"
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n))
    return raw


def run_cli(argv: list[str], out: Path, capsys) -> tuple[int, str]:
    """Exit status and stderr of ``asknlearn`` with ``--out out``."""
    try:
        code = cli_main([*argv, "--out", str(out)])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    return code, capsys.readouterr().err


def assert_one_clear_error(code: int, err: str, *names: str) -> None:
    assert code == 2, err
    assert err.count("error:") == 1, err  # one message, not a traceback
    assert "Traceback" not in err
    for name in names:
        assert name in err, (name, err)


# ---------------------------------------------------------------------------- CLI flags
CASES = {
    # id: (flags, strings the message must hold: the bad value and a valid one)
    "unknown dataset": ({"dataset": "mnist3d"}, ["'mnist3d'", "valid:", "digits"]),
    "unknown strategy": ({"strategy": "badgee"}, ["'badgee'", "valid:", "badge", "ask-n-learn-lwcc"]),
    "unknown model": ({"model": "resnet50"}, ["'resnet50'", "valid:", "resnet18", "vgg16"]),
    "negative budget": ({"budget": "-20"}, ["budget=-20", "valid:"]),
    "zero budget": ({"budget": "0"}, ["budget=0", "valid:"]),
    "budget not a multiple of b": ({"budget": "50"}, ["budget=50", "valid:", "query_size=20"]),
    "b larger than the pool": ({"query_size": "2000", "budget": "2000"},
                               ["2000", "pool of 1300", "valid:", "budget <= 1280"]),
    "zero b": ({"query_size": "0"}, ["query_size=0", "valid:"]),
    "noise = 1": ({"noise": "1.0"}, ["noise=1.0", "valid:", "[0, 1)"]),
    "negative noise": ({"noise": "-0.1"}, ["noise=-0.1", "valid:", "[0, 1)"]),
    "tau above 1": ({"strategy": "ask-n-learn-lwcc", "tau": "1.5"}, ["tau=1.5", "valid:", "[0, 1]"]),
    "negative tau": ({"tau": "-0.01"}, ["tau=-0.01", "valid:", "[0, 1]"]),
    "non-integer seed": ({"seed": "1.5"}, ["seed='1.5'", "valid:", "int"]),
    "non-numeric seed": ({"seed": "one"}, ["seed='one'", "valid:", "int"]),
    "negative seed": ({"seed": "-1"}, ["seed=-1", "valid:"]),
    "non-numeric noise": ({"noise": "high"}, ["noise='high'", "valid:", "float"]),
    "unknown device": ({"device": "tpu"}, ["device='tpu'", "valid:", "cpu"]),
    # values C code cannot hold, or that would fail after round 0 is written
    "threads beyond int32": ({"threads": "2147483648"}, ["threads=2147483648", "valid:", "4096"]),
    "ece bins 1e30": ({"ece_bins": "1e30"}, ["ece_bins='1e30'", "valid:", "int"]),
    "huge aug shift": ({"aug_shift": "100000000000"}, ["aug_shift=100000000000", "valid:", "64"]),
    "seed beyond int64": ({"seed": str(2**64)}, [f"seed='{2**64}'", "valid:", "int"]),
    "list for a number": ({"budget": "[40]"}, ["budget='[40]'", "valid:", "int"]),
    "infinite lr": ({"lr": "inf"}, ["lr=inf", "valid:", "(0, 1]"]),
    # MLflow filters quote a name with ' or ", never both: tracking would fail every time
    "study with both quotes": ({"study": "it's \"x\""}, ["study=", "valid:", "both quote"]),
    "study with a newline": ({"study": "a\nb"}, ["study=", "valid:", "control"]),
    "strategies not JSON": ({"strategies": "{nope"}, ["strategies='{nope'", "valid:", "dict"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_flag(case, tmp_path, capsys):
    flags, names = CASES[case]
    out = tmp_path / "out"
    code, err = run_cli(with_flags(**flags), out, capsys)
    assert_one_clear_error(code, err, *names)
    assert not out.exists()


def test_misspelled_flag_is_an_argparse_error(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli([*BASE, "--budgett", "40"], out, capsys)
    assert code == 2 and "unrecognized arguments: --budgett 40" in err
    assert "--budget" in err  # the usage lists the valid flags
    assert not out.exists()


# ---------------------------------------------------------------------------- config files
@pytest.mark.parametrize("text, names", [
    ("budgett: 40\n", ["'budgett'", "did you mean 'budget'?", "valid:"]),
    ("query_sise: 20\nnoise: 0.1\n", ["'query_sise'", "'query_size'", "valid:"]),
    ("noise: 1.5\n", ["noise=1.5", "valid:"]),
    ("- a list\n- not a mapping\n", ["must hold a mapping"]),
    ("budget: [40\n", ["is not valid YAML"]),
    ("1: 40\n", ["key 1", "valid: string keys"]),
    ("strategies: {1: {loss: ce}}\n", ["key 1", "valid: string keys"]),
    ("lr: [1]\n", ["lr=[1]", "valid:", "float"]),
    ("val_size: {a: 1}\n", ["val_size={'a': 1}", "valid:", "int"]),
    ("ece_bins: [20]\n", ["ece_bins=[20]", "valid:", "int"]),
    (b"budget: 40 # \xff\xfe\n", ["not UTF-8", "valid: a UTF-8 YAML file"]),
    ("version: 0.0.0-elsewhere\n", ["version='0.0.0-elsewhere'", "valid:", "remove the key"]),
], ids=["misspelled key", "misspelled key 2", "bad value", "not a mapping", "bad YAML",
        "non-string key", "non-string strategy name", "list for a float", "mapping for an int",
        "list for an int", "not UTF-8", "other version"])
def test_bad_config_file(text, names, tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(text) if isinstance(text, bytes) else cfg.write_text(text)
    out = tmp_path / "out"
    code, err = run_cli([*BASE, "--config", str(cfg)], out, capsys)
    assert_one_clear_error(code, err, *names)
    assert not out.exists()


def test_missing_config_file(tmp_path, capsys):
    out = tmp_path / "out"
    code, err = run_cli([*BASE, "--config", str(tmp_path / "nope.yaml")], out, capsys)
    assert_one_clear_error(code, err, "nope.yaml", "does not exist", "valid:")
    assert not out.exists()


# ---------------------------------------------------------------------------- files on disk
def test_missing_dataset_files(tmp_path, capsys):
    root = tmp_path / "empty"
    root.mkdir()
    out = tmp_path / "out"
    # --download false: tests never touch the network
    code, err = run_cli(with_flags(dataset="fashion_mnist", data_root=str(root), download="false"),
                        out, capsys)
    assert_one_clear_error(code, err, "'fashion_mnist'", str(root),
                           "FashionMNIST/raw/train-images-idx3-ubyte")
    assert not out.exists()


@pytest.mark.parametrize("damage", ["truncated", "bad header"])
def test_damaged_dataset_file_is_named(damage, tmp_path, capsys):
    raw = fake_fashion_mnist(tmp_path / "data")
    bad = raw / "train-images-idx3-ubyte"
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00\x00\x0d\x03" + data[4:])
    out = tmp_path / "out"
    code, err = run_cli(with_flags(dataset="fashion_mnist", data_root=str(tmp_path / "data"),
                                   download="false"), out, capsys)
    assert_one_clear_error(code, err, str(bad), "truncated" if damage == "truncated" else "header",
                           "expected files")
    assert not out.exists()


def test_intact_fake_dataset_runs(tmp_path, capsys):
    """The control of the damaged-file cases: the same files, undamaged, give a finished cell."""
    fake_fashion_mnist(tmp_path / "data")
    out = tmp_path / "out"
    code, err = run_cli(with_flags(dataset="fashion_mnist", data_root=str(tmp_path / "data"),
                                   download="false"), out, capsys)
    assert code == 0, err
    assert len(pd.read_csv(out / "rounds.csv")) == 3  # rounds 0, 1, 2


def test_a_cells_own_config_runs_again(tmp_path, capsys):
    """A finished cell's config.yaml (with its ``version`` key) fed back with --config runs the
    same cell: the version is checked, not refused as an unknown key."""
    first, again = tmp_path / "first", tmp_path / "again"
    code, err = run_cli(BASE, first, capsys)
    assert code == 0, err
    assert "version" in (first / "config.yaml").read_text()
    code, err = run_cli(["run", "--config", str(first / "config.yaml"), "--quiet"], again, capsys)
    assert code == 0, err
    cols = ["round", "labels", "accuracy", "ece"]
    pd.testing.assert_frame_equal(pd.read_csv(first / "rounds.csv")[cols],
                                  pd.read_csv(again / "rounds.csv")[cols])


def test_dataset_defaults_are_chosen_and_said(tmp_path, capsys, monkeypatch):
    """``run --dataset digits`` alone gets a protocol that fits digits and says so; asking for
    tracking with no URI warns once."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "x"
    code = cli_main(["run", "--dataset", "digits", "--strategy", "random", "--max-epochs", "2",
                     "--threads", "1", "--tracking", "true", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "defaults for dataset 'digits': seed_size=20 query_size=20 budget=160" in captured.out
    assert captured.err.count("nothing will be logged to MLflow") == 1, captured.err
    assert pd.read_csv(out / "rounds.csv")["labels"].tolist() == list(range(20, 181, 20))


def test_output_under_a_regular_file(tmp_path, capsys):
    # tests run as root, who may write anywhere chmod forbids: a path under a file cannot be made
    blocker = tmp_path / "afile"
    blocker.write_text("keep me\n")
    out = blocker / "sub"
    code, err = run_cli(BASE, out, capsys)
    assert_one_clear_error(code, err, str(out), "not writable", "valid:")
    assert blocker.read_text() == "keep me\n"


def test_subprocess_exit_status_and_stderr(tmp_path):
    """The same contract through a real ``python -m asknlearn`` process."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "asknlearn", *with_flags(strategy="entropyy"),
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.startswith("asknlearn: error: unknown strategy 'entropyy' (did you mean "
                               "'entropy'?); valid:"), r.stderr
    assert r.stdout == "" and not out.exists()


# ---------------------------------------------------------------------------- workflow config
WORKFLOW_CASES = {
    # id: (an extra --configfile, strings the message must hold)
    "misspelled top-level key": ("seedz: [0]\n", ["seedz"]),
    "misspelled experiment key": ("experiment:\n  budgett: 40\n", ["budgett", "budget"]),
    "noise = 1": ("noise: [1.0]\n", ["1.0"]),
    "unknown strategy": ("strategies: [badge, badgee]\n", ["badgee"]),
}
CONTROL = "seeds: [0]\n"  # a valid extra config: the same dry run lists the jobs


@pytest.fixture(scope="module")
def workflow_dry_runs(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """``snakemake -n`` on a copy of the workflow per case, with the case's config as an extra
    configfile; all cases at once (each pays Snakemake's start-up)."""
    if not (REPO / "Snakefile").exists():
        pytest.skip("the workflow is not in this checkout")
    procs = {}
    cases = {**{case: text for case, (text, _) in WORKFLOW_CASES.items()}, "control": CONTROL}
    for i, (case, text) in enumerate(cases.items()):
        work = tmp_path_factory.mktemp(f"wf{i}")
        for name in ("Snakefile", "workflow", "config", "asknlearn"):
            src = REPO / name
            if src.is_dir():
                shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy(src, work / name)
        (work / "bad.yaml").write_text(text)
        # output to a file, not a pipe: Snakemake dumps the whole schema (~100 KB) on a schema
        # error, which would fill a pipe nobody reads until wait() returns (a deadlock)
        with (work / "out.txt").open("w") as out:
            procs[case] = (subprocess.Popen(
                [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--workflow-profile",
                 "none", "--configfile", "bad.yaml"], cwd=work, stdout=out,
                stderr=subprocess.STDOUT, text=True), work)
    return {case: (subprocess.CompletedProcess(p.args, p.wait(timeout=600),
                                               (work / "out.txt").read_text(), ""), work)
            for case, (p, work) in procs.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(WORKFLOW_CASES))
def test_bad_workflow_config_fails_before_any_job(case, workflow_dry_runs):
    r, work = workflow_dry_runs[case]
    out = r.stdout
    assert r.returncode != 0, out
    # the message comes first (Snakemake then dumps the schema): look at its head
    head = "\n".join(out.splitlines()[:12])
    assert "Error" in head, head
    for name in WORKFLOW_CASES[case][1]:
        assert name in head, (name, head)
    # validation stops it before the DAG is built: no job listed, nothing written
    assert "Job stats" not in out and not re.search(r"^(local)?rule \w+:", out, re.M), out[-3000:]
    assert not (work / "results").exists()


@pytest.mark.slow
def test_valid_workflow_config_dry_run_lists_jobs(workflow_dry_runs):
    """The control of the cases above: the same dry run with a valid config lists AL jobs."""
    r, work = workflow_dry_runs["control"]
    assert r.returncode == 0, r.stdout[-3000:]
    assert re.search(r"^rule al_cell:", r.stdout, re.M), r.stdout[-3000:]
