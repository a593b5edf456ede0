"""The cluster path on a real SLURM cluster: a one-node cluster from Debian's slurm-wlm and munge
(started by tests/slurm/setup.sh, installed there when missing), the tiny study sent through it
with ``snakemake --workflow-profile profiles/slurm``, and the results compared with a local run.

No accounting daemon runs, so the executor is told to read job states with squeue; the
scheduler's own record of finished jobs (jobcomp/filetxt) shows which jobs it ran.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import reliability_helpers as wf

pytestmark = [pytest.mark.slurm, pytest.mark.slow,
              pytest.mark.skipif(not wf.has_workflow(), reason="the workflow is not in this checkout")]
SCRIPTS = wf.REPO / "tests" / "slurm"


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory) -> Iterator[Path]:
    """A running one-node cluster; yields its state folder (logs, jobcomp.log)."""
    state = tmp_path_factory.mktemp("slurm")
    r = subprocess.run(["bash", str(SCRIPTS / "setup.sh"), str(state)], capture_output=True,
                       text=True, timeout=900)
    if r.returncode == 3:
        pytest.skip(f"slurm-wlm/munge cannot be installed on this machine: {r.stderr.strip()[-500:]}")
    if r.returncode == 4:
        pytest.skip("/etc/slurm/slurm.conf belongs to a real cluster; the test cluster would replace it")
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    try:
        yield state
    finally:
        subprocess.run(["bash", str(SCRIPTS / "teardown.sh"), str(state)], timeout=120)


def test_study_through_slurm_equals_local_run(slurm_cluster, tmp_path, tmp_path_factory):
    reference = wf.local_reference(tmp_path_factory)
    work = wf.copy_workflow(tmp_path / "wf")
    r = wf.run_snakemake(
        work, "--workflow-profile", "profiles/slurm",
        # this cluster has no accounting daemon: job states come from squeue; no account to guess
        "--slurm-status-command", "squeue", "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks", "2",
        # MLflow has its own tests; here it would only add the local init_store job
        "--config", "tracking=False", "--", wf.TABLE)
    out = r.stdout + r.stderr

    # the AL jobs went through SLURM: Snakemake got a job id from sbatch for each cell ...
    ids = re.findall(r"submitted with SLURM jobid (\d+)", out)
    assert len(ids) == len(wf.STRATEGIES), out[-3000:]
    # ... the scheduler's record of finished jobs lists each of them as COMPLETED on this node ...
    jobcomp = (slurm_cluster / "jobcomp.log").read_text()
    for job_id in ids:
        assert re.search(rf"^JobId={job_id} .*JobState=COMPLETED .*Partition=debug", jobcomp, re.M), jobcomp
    # ... and each cell ran inside its allocation (the executor's per-job SLURM log)
    for strategy in wf.STRATEGIES:
        logs = list((work / "results" / "slurm-logs" / "rule_al_cell").glob(f"digits_{strategy}_0_0/*.log"))
        assert len(logs) == 1 and logs[0].stem in ids, logs
        assert "rule al_cell:" in logs[0].read_text()
    # and only they: the aggregate is a local rule (the cluster is this test's own)
    assert len(re.findall(r"^JobId=", jobcomp, re.M)) == len(ids), jobcomp

    table = pd.read_csv(work / wf.TABLE)
    assert len(table) == len(wf.STRATEGIES) * (wf.ROUNDS + 1)
    pd.testing.assert_frame_equal(wf.without_timings(table), wf.without_timings(reference),
                                  check_exact=True)
