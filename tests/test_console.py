"""The workflow's console (issue 23): --cores capped at the cores present with one warning,
one compact line per finished round, and where the outputs are when a run ends."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
import reliability_helpers as wf

from asknlearn.console import cap_cores, compact_round, cores_present, tee, where_lines

# a round line as `asknlearn run` prints it (issue 23's quickstart log)
ROUND = ("[quickstart/digits/badge/seed0/noise0] round   3/8 labels     80 acc 0.7123 ece 0.0512 "
         "nll 0.912 brier 0.4100 epochs  24 train    1.4s select   0.1s total    2.1s "
         "elapsed 0m09s eta 0m40s")


def test_cores_above_the_machine_are_capped_with_a_warning_naming_both():
    assert cap_cores(8, 2)[0] == 2
    assert "--cores 8" in cap_cores(8, 2)[1] and "2 core(s)" in cap_cores(8, 2)[1]
    assert cap_cores(2, 2) == (2, None)
    assert cap_cores(1, 16) == (1, None)
    assert cap_cores(None, 2) == (None, None)  # no --cores (dry run): nothing to cap


def test_cores_present_is_the_affinity_mask():
    if hasattr(os, "sched_getaffinity"):
        assert cores_present() == len(os.sched_getaffinity(0))
    assert cores_present() >= 1


def test_a_round_line_becomes_one_compact_line_and_other_lines_stay_in_the_log():
    assert compact_round(ROUND) == (
        "digits/badge/seed0/noise0  round 3/8  80 labels  acc 0.712  ece 0.051  2.1s  eta 0m40s")
    last = ROUND.replace("round   3/8", "round   8/8").replace("eta 0m40s", "done")
    assert compact_round(last).endswith("round 8/8  80 labels  acc 0.712  ece 0.051  2.1s  done")
    capped = ROUND.replace("epochs  24", "epochs 200 (max_epochs reached: train acc 0.920 < 0.99)")
    assert "max_epochs reached" in compact_round(capped)
    for other in ("defaults for dataset 'digits': aug_shift=1",
                  "[quickstart/digits/badge/seed0/noise0] round   0 training: epoch 1 train accuracy 0.35",
                  "asknlearn: warning: MLflow tracking failed", ""):
        assert compact_round(other) is None, other


def test_tee_copies_every_line_to_the_log_and_only_round_lines_to_the_console():
    lines = ["header\n", ROUND + "\n", "warning\n"]
    log, console = io.StringIO(), io.StringIO()
    tee(lines, log, console)
    assert log.getvalue() == "".join(lines)
    assert console.getvalue() == compact_round(ROUND) + "\n"


def test_tee_refuses_a_planted_symlink_and_keeps_the_jobs_exit_status(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    log = tmp_path / "cell.log"
    log.symlink_to(target)
    r = subprocess.run([sys.executable, "-m", "asknlearn.console", "tee", str(log)], input="x\n",
                       capture_output=True, text=True, env=wf.env(), cwd=wf.REPO)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert target.read_text() == "keep"


def test_where_lines_name_the_figures_summary_report_and_mlflow_ui():
    lines = where_lines("results/q", "sqlite:////abs/results/q/mlflow.db", ["config/paper/f.yaml"])
    text = "\n".join(lines)
    assert "results/q/figures/" in text and "results/q/summary.md" in text
    assert "snakemake --configfile config/paper/f.yaml --report report.html" in text
    assert "mlflow ui --backend-store-uri sqlite:////abs/results/q/mlflow.db" in text
    assert not any("mlflow" in line for line in where_lines("results/q", None))


@pytest.mark.skipif(not wf.has_workflow(), reason="needs the workflow")
def test_more_cores_than_present_warn_once_in_a_dry_run(tmp_path):
    work = wf.copy_workflow(tmp_path / "wf")
    r = subprocess.run(wf.snakemake_cmd("-n", "--cores", "4096", "--workflow-profile", "none"),
                       cwd=work, env=wf.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert out.count("--cores 4096 is more than") == 1, out[-3000:]
    assert f"the {cores_present()} core(s)" in out
