"""Every command the README shows, run as written (issue 23), in a copy of the repository:
the quickstart, the HTML report, one cell by hand, the paper configs (as dry runs: they need
hours and downloads) and ``mlflow ui`` up to HTTP 200. The test installs nothing: the
``pip install`` steps are what this environment was made with (CI installs exactly them),
and ``pytest`` is this suite. The quickstart's metrics must equal the committed copy that
the README figure was made from (``snakemake readme_assets`` regenerates both).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import reliability_helpers as wf

from asknlearn.console import cores_present
from asknlearn.readme_assets import CHECKSUM, FIGURE, KEYS, METRICS, METRICS_CSV, metrics_table, sha256

REPO = wf.REPO
README = REPO / "README.md"


def readme_commands(text: str) -> list[str]:
    """The shell commands of the README's ```bash blocks, one per line (backslash
    continuations joined, comments and blank lines dropped), each ``&&`` chain split."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip() if not line.lstrip().startswith("#") else ""
            commands += [c.strip() for c in line.split("&&") if c.strip()]
    return commands


def test_the_readme_commands_are_parsed_as_a_user_would_type_them():
    cmds = readme_commands(README.read_text())
    assert "snakemake --cores 8" in cmds
    assert "snakemake --report report.html" in cmds
    assert any(c.startswith("python -m asknlearn run ") and "--out results/manual/vwcc-s0" in c
               for c in cmds)
    assert any(c.startswith("mlflow ui ") for c in cmds)
    assert any("--configfile config/paper/" in c for c in cmds)


def test_the_readme_figure_is_the_one_its_metrics_were_recorded_with():
    """``docs/img/quickstart.png`` changes only with ``tests/data/quickstart_rounds.csv``
    (``snakemake readme_assets`` writes both and this checksum)."""
    recorded = (REPO / CHECKSUM).read_text().split()[0]
    assert sha256(REPO / FIGURE) == recorded, (
        f"{FIGURE} is not the figure {CHECKSUM} records: regenerate the quickstart "
        "(snakemake --cores 2) and then `snakemake --cores 2 -f readme_assets`")
    table = pd.read_csv(REPO / METRICS_CSV)
    assert list(table.columns) == KEYS + METRICS
    assert not table[METRICS].isna().any().any()


def _copy_repo(dst: Path) -> Path:
    dst.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "config", "profiles", "asknlearn", "README.md", "docs"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(src, dst / name)
    (dst / "results").mkdir()
    return dst


def _env(work: Path) -> dict[str, str]:
    env = wf.env()
    env["PYTHONPATH"] = str(work)  # the copy's package, not an installed one
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _run(cmd: str, work: Path, timeout: float) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "-c", cmd], cwd=work, env=_env(work), capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, f"`{cmd}` failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def _mlflow_ui_answers(cmd: str, work: Path) -> None:
    """Start ``cmd`` (on a free port), wait for HTTP 200 on its front page, stop it."""
    port = wf.free_port()
    proc = subprocess.Popen(["bash", "-c", f"exec {cmd} --port {port}"], cwd=work,
                            env=_env(work), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"`{cmd}` exited {proc.returncode}: {proc.stderr.read()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"`{cmd}` gave no HTTP 200 in 180 s"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.skipif(not wf.has_workflow(), reason="needs the workflow")
def test_every_readme_command_works_as_written(tmp_path):
    work = _copy_repo(tmp_path / "repo")
    ran = []
    for cmd in readme_commands(README.read_text()):
        argv = shlex.split(cmd)
        if argv[:2] == ["pip", "install"] or argv == ["pytest"]:
            continue  # the environment this runs in; the suite itself
        if argv[0] == "mlflow":
            _mlflow_ui_answers(cmd, work)
        elif argv[0] == "snakemake" and any(a.startswith("config/paper/") for a in argv):
            _run(cmd + " -n", work, timeout=600)  # hours of compute and a download: plan only
        elif argv == ["snakemake", "--cores", "8"] and "quickstart" in ran:
            continue  # the same quickstart again (a no-op)
        else:
            r = _run(cmd, work, timeout=1800)
            if argv == ["snakemake", "--cores", "8"]:
                ran.append("quickstart")
                _check_quickstart_console(r.stderr, work)
        ran.append(cmd)
    assert "quickstart" in ran and any("--report" in c for c in ran)
    assert (work / "report.html").stat().st_size > 0
    assert (work / "results/manual/vwcc-s0/rounds.csv").exists()
    _check_quickstart_numbers(work)


def _check_quickstart_console(err: str, work: Path) -> None:
    present = cores_present()
    assert f"Provided cores: {min(8, present)}" in err, err[-3000:]
    assert (err.count("--cores 8 is more than") == 1) == (present < 8)
    cells = 6 * 3  # strategies x seeds of config/config.yaml
    assert len(re.findall(r"^digits/\S+/seed\d/noise0  round 8/8 ", err, flags=re.M)) == cells, err[-3000:]
    for where in ("results/quickstart/figures/", "results/quickstart/summary.md",
                  "--report report.html", "mlflow ui --backend-store-uri sqlite:///"):
        assert where in err, (where, err[-2000:])


def _check_quickstart_numbers(work: Path) -> None:
    """The quickstart's metrics, every cell and round, equal those the README figure shows."""
    fresh = metrics_table(work / "results/quickstart/rounds.csv")
    committed = pd.read_csv(REPO / METRICS_CSV)
    pd.testing.assert_frame_equal(fresh[KEYS], committed[KEYS], check_dtype=False)
    diff = np.abs(fresh[METRICS].to_numpy() - committed[METRICS].to_numpy())
    assert diff.max() < 1e-6, (
        f"the quickstart's metrics changed (max |diff| {diff.max():.3g}): regenerate the README "
        f"figure and its table with `snakemake --cores 2 -f readme_assets` ({FIGURE}, {METRICS_CSV})")


if __name__ == "__main__":  # print the commands the test runs
    print("\n".join(readme_commands(README.read_text())), file=sys.stdout)
