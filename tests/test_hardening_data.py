"""Hardening of cell naming and data loading (issue 12, items 8, 11 and 12).

- Noise levels are spelled exactly in paths, cell ids and MLflow tags; levels that would still
  be one cell are refused before any job runs.
- Canonical ``.gz`` files are extracted without the network; one that fails its MD5 check is
  named, with what to do, instead of being reported as missing or as a download error.
- Several processes loading one dataset on a fresh data root all succeed: the first extraction
  holds a lock and publishes each file by an atomic rename.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from asknlearn.config import ExperimentConfig
from asknlearn.errors import ConfigError
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
