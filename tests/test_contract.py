"""The catalogue's contract (issue 20): a new metric, a new selector with a config key of its own
and a new dataset are each ONE entry in ONE file (asknlearn/catalogue.py) plus a tiny
implementation (tests/contract_parts.py), and run through the loop, the summary, the plots and
MLflow. The entries are added to catalogue.py's source only, in a fresh interpreter: if any
other file needed an edit, this fails."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

ENTRIES = {
    "METRICS: dict[str, MetricInfo] = {\n":
        '    "top2": MetricInfo("contract_parts:top2_accuracy", "top-2 accuracy", "%", 100.0, 2),\n',
    "SELECTORS: dict[str, SelectorInfo] = {\n":
        '    "stride": SelectorInfo("contract_parts:StrideSelector", options={"stride_step": Option('
        '"stride", "int", 1, "take every k-th least confident point", lo=1, valid="an integer >= 1")},'
        ' needs=frozenset({"probs"})),\n',
    "DATASETS: dict[str, DatasetInfo] = {\n":
        '    "tiny": DatasetInfo("tiny", family="mnist", shape=(1, 6, 6), num_classes=3, '
        'default_model="mlp", expected_files=(), mean=(0.0,), std=(1.0,), loader="npz", '
        'path=sys.argv[1], layout="nhw", seed_size=12, query_size=12, budget=24, '
        'sizes=(150, 60)),\n',
}

_SCRIPT = r"""
import json, sys, types
from pathlib import Path

src = Path("asknlearn/catalogue.py").read_text()
for anchor, entry in json.loads(sys.argv[3]).items():
    assert src.count(anchor) == 1, f"the table {anchor!r} moved: update tests/test_contract.py"
    src = src.replace(anchor, anchor + entry)
src = src.replace("import re\n", "import re\nimport sys\n", 1)
mod = types.ModuleType("asknlearn.catalogue")
mod.__file__ = "asknlearn/catalogue.py"
sys.modules["asknlearn.catalogue"] = mod
exec(compile(src, mod.__file__, "exec"), mod.__dict__)

import pandas as pd
from mlflow.tracking import MlflowClient

from asknlearn.cli import main

tmp = Path(sys.argv[2])
cfg = tmp / "cfg.yaml"
cfg.write_text("strategies: {stride-pick: {selector: stride}}\n")
uri = f"sqlite:///{tmp / 'mlflow.db'}"
cell = tmp / "cell"
assert main(["run", "--config", str(cfg), "--dataset", "tiny", "--strategy", "stride-pick",
             "--stride-step", "2", "--max-epochs", "20", "--threads", "1", "--study", "contract",
             "--tracking", "true", "--tracking-uri", uri, "--quiet", "--out", str(cell)]) == 0
assert main(["aggregate", str(cell / "rounds.csv"), "--out", str(tmp / "rounds.csv")]) == 0
assert main(["summarize", "--rounds", str(tmp / "rounds.csv"), "--target-accuracy", "0.5",
             "--references", "stride-pick", "--out", str(tmp / "summary.csv"),
             "--markdown", str(tmp / "summary.md")]) == 0
assert main(["plot", "curves", "--rounds", str(tmp / "rounds.csv"), "--dataset", "tiny",
             "--out", str(tmp / "curves.png")]) == 0

from asknlearn.plots import curves_figure

rounds = pd.read_csv(cell / "rounds.csv")
fig = curves_figure(pd.read_csv(tmp / "rounds.csv"), "tiny")
client = MlflowClient(uri)
run = client.search_runs([client.get_experiment_by_name("contract").experiment_id],
                         "tags.`asknlearn.cell` != ''")[0]
print(json.dumps({
    "rounds": len(rounds), "top2": rounds["top2"].tolist(), "acc": rounds["accuracy"].tolist(),
    "queried": pd.read_csv(cell / "queries.csv")["round"].tolist(),
    "summary_csv": [c for c in pd.read_csv(tmp / "summary.csv").columns if "top2" in c],
    "summary_md": "final top-2 accuracy (%)" in (tmp / "summary.md").read_text(),
    "axes": [ax.get_ylabel() for ax in fig.axes], "png": (tmp / "curves.png").stat().st_size,
    "mlflow_metrics": sorted(run.data.metrics), "mlflow_params": run.data.params.get("stride_step"),
}))
"""


@pytest.mark.slow
def test_a_metric_a_selector_and_a_dataset_are_each_one_catalogue_entry(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 36)) * 2.0
    def split(n):
        y = rng.integers(0, 3, n)
        return (centres[y] + rng.normal(size=(n, 36))).reshape(n, 6, 6).astype("float32"), y
    (xtr, ytr), (xte, yte) = split(150), split(60)
    np.savez(tmp_path / "tiny.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    r = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path / "tiny.npz"), str(tmp_path),
                        json.dumps(ENTRIES)], capture_output=True, text=True, timeout=600,
                       cwd=ROOT, env={"PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}",
                                      "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                                      "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # the loop: two rounds of b=12 after |S|=12, the new metric in every row, top-2 >= top-1
    assert out["rounds"] == 3 and out["queried"].count(1) == 12 == out["queried"].count(2)
    assert all(t >= a for t, a in zip(out["top2"], out["acc"], strict=True))
    # the summary, the plots (a panel in the metric's unit) and MLflow (its group, the key)
    assert "final_top2_mean" in out["summary_csv"] and out["summary_md"]
    assert "top-2 accuracy (%)" in out["axes"] and out["png"] > 0
    assert "test/top2" in out["mlflow_metrics"] and out["mlflow_params"] == "2"
