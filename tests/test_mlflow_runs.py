"""What a cell's MLflow run holds, read back through a real ``mlflow server`` over REST:
grouped metric names, provenance tags, the cell's artifacts, the study's parent run with its
tables and figures, and the run status of a finished, a SIGTERM'd, an interrupted, a crashed
and a resumed cell. Also: the store being down does not stop init-store's workflow rule.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import reliability_helpers as wf
from reliability_helpers import cell_runs, free_port, mlflow_server, rest_history, rest_runs, tags

from asknlearn import tracking
from asknlearn.cli import main as cli_main

TINY = ["--dataset", "digits", "--seed-size", "20", "--query-size", "20", "--threads", "1",
        "--max-epochs", "60", "--quiet"]


@pytest.fixture(autouse=True)
def _fast_failing_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.PARENT_ENV, raising=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("mlflow-runs-server")
    with mlflow_server(f"sqlite:///{work}/mlflow.db", work) as url:
        yield url


def artifacts(base: str, run_id: str, path: str | None = None) -> dict[str, int]:
    """The run's artifact files (recursively) with their sizes, as the server lists them."""
    url = f"{base}/api/2.0/mlflow/artifacts/list?" + urllib.parse.urlencode(
        {"run_id": run_id, **({"path": path} if path else {})})
    with urllib.request.urlopen(url, timeout=30) as resp:
        listing = json.loads(resp.read() or b"{}")
    out: dict[str, int] = {}
    for f in listing.get("files", []):
        if f.get("is_dir"):
            out.update(artifacts(base, run_id, f["path"]))
        else:
            out[f["path"]] = int(f.get("file_size", -1))
    return out


def artifact_bytes(base: str, run_id: str, path: str) -> bytes:
    """One artifact's content, downloaded through the server (the UI's endpoint)."""
    url = f"{base}/get-artifact?" + urllib.parse.urlencode({"run_id": run_id, "path": path})
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def cell_cmd(out: Path, uri: str, study: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "asknlearn", "run", *TINY, "--study", study, "--strategy",
            "random", "--out", str(out), "--tracking-uri", uri, *extra]


def child_env() -> dict[str, str]:
    env = wf.env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(wf.REPO), env.get("PYTHONPATH")]))
    env.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10")
    env.pop(tracking.PARENT_ENV, None)
    return env


def rows(path: Path) -> int:
    try:
        return max(0, len(path.read_text().splitlines()) - 1)
    except FileNotFoundError:
        return 0


def run_until_rounds_then(sig: int, out: Path, cmd: list[str], n: int = 2) -> int:
    """Start ``cmd``, send ``sig`` once its rounds.csv holds ``n`` rounds; its exit status.

    A cell that goes on to its last round after the signal fails here with its stderr and
    the rounds it wrote, and one still running 120 s after it is killed and fails as a lost
    signal: an exit status alone (0 for a finished cell) cannot tell the two apart."""
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while rows(out / "rounds.csv") < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the cell ended before it could be signalled: {proc.stderr.read()}"
    at_signal = rows(out / "rounds.csv")
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"signal {sig} was lost: the cell ran on for 120 s after it "
                             f"({at_signal} -> {rows(out / 'rounds.csv')} rounds):\n{err}") from None
    assert "Traceback" not in err or sig == signal.SIGTERM, err
    written = rows(out / "rounds.csv")
    assert written <= last_round(cmd), (
        f"the cell finished all {written} rounds after signal {sig} (sent at {at_signal}); "
        f"exit {proc.returncode}, stderr:\n{err}")
    return proc.returncode


def last_round(cmd: list[str]) -> int:
    """The last round of a ``cell_cmd`` cell: (budget) / query size."""
    flag = dict(zip(cmd, cmd[1:], strict=False))
    return int(flag["--budget"]) // int(flag["--query-size"])


def the_run(base: str, study: str) -> dict:
    (run,) = cell_runs(base, study)
    return run


# ---------------------------------------------------------------------------- names
@pytest.mark.parametrize("column, name", [
    ("accuracy", "test/accuracy"), ("ece", "test/ece"), ("nll", "test/nll"), ("brier", "test/brier"),
    ("val_accuracy", "val/accuracy"), ("val_refined_ece", "val/refined_ece"),
    ("train_seconds", "time/train_seconds"), ("round_seconds", "time/round_seconds"),
    ("train_epochs", "train/epochs"), ("train_accuracy", "train/accuracy"),
    ("pseudo_label_accuracy", "diag/pseudo_label_accuracy"), ("alpha_mean", "diag/alpha_mean"),
    ("oracle_flip_rate", "diag/oracle_flip_rate"),
])
def test_metric_names_are_grouped_by_column_name(column, name):
    assert tracking.metric_name(column) == name


def test_every_logged_column_has_its_own_name_and_round_is_not_a_metric():
    names = [tracking.metric_name(c) for c in tracking.METRIC_COLUMNS]
    assert len(set(names)) == len(names)
    assert "round" not in tracking.METRIC_COLUMNS
    points = tracking.row_metrics([{"round": 3, "labels": 80, "accuracy": 0.5, "ece": float("nan"),
                                    "timestamp_ms": 7}])
    assert [(m.key, m.value, m.step, m.timestamp) for m in points] == [("test/accuracy", 0.5, 80, 7)]


def test_provenance_names_the_device_used_and_the_host():
    got = tracking.provenance_tags("cpu")
    assert got["asknlearn.device"] == "cpu" and got["asknlearn.device_name"]
    assert got["asknlearn.host"] and got["asknlearn.torch_version"]
    if (wf.REPO / ".git").exists():
        assert len(got["mlflow.source.git.commit"]) == 40
        assert got["asknlearn.git_dirty"] in ("true", "false")


# ---------------------------------------------------------------------------- the store is down
def test_init_store_with_the_server_down_is_one_line(tmp_path, capfd):
    down = f"http://127.0.0.1:{free_port()}"
    flag = tmp_path / "flag"
    assert cli_main(["init-store", "--tracking-uri", down, "--experiment", "x", "--out", str(flag)]) == 1
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("asknlearn: error: ") and "cannot be reached" in err
    assert not flag.exists()
    # the workflow's form: warn once, write the flag, exit 0 (the cells run, backfill later)
    assert cli_main(["init-store", "--tracking-uri", down, "--experiment", "x", "--out", str(flag),
                     "--if-down", "warn"]) == 0
    err = capfd.readouterr().err
    assert err.count("asknlearn: warning:") == 1 and "asknlearn backfill results/x" in err, err
    assert flag.read_text() == "untracked\n"


@pytest.mark.slow
@pytest.mark.skipif(not wf.has_workflow(), reason="the workflow is not in this checkout")
def test_workflow_runs_the_cells_with_the_server_down_then_backfill_fills_in(server, tmp_path):
    down = f"http://127.0.0.1:{free_port()}"
    work = wf.copy_workflow(tmp_path / "wf", wf.TINY_CONFIG.replace(
        f"budget: {20 * wf.ROUNDS}", "budget: 40"))
    r = wf.run_snakemake(work, "--cores", "2", "--workflow-profile", "none", "--config",
                         f"tracking_uri={down}", "--", wf.TABLE)
    assert (r.stdout + r.stderr).count("asknlearn: warning: tracking store") == 1
    study = work / "results" / wf.STUDY
    assert len(pd.read_csv(study / "rounds.csv")) == 3 * len(wf.STRATEGIES)
    assert cli_main(["backfill", str(study), "--tracking-uri", server]) == 0
    runs = cell_runs(server, wf.STUDY)
    assert sorted(tags(r)["strategy"] for r in runs) == sorted(wf.STRATEGIES)
    (parent,) = [r for r in rest_runs(server, wf.STUDY) if tracking.STUDY_TAG in tags(r)]
    for run in runs:
        assert run["info"]["status"] == "FINISHED"
        assert tags(run)[tracking.PARENT_TAG] == parent["info"]["run_id"]
        assert set(artifacts(server, run["info"]["run_id"])) == set(tracking.CELL_ARTIFACTS)


# ---------------------------------------------------------------------------- a finished cell
@pytest.mark.slow
def test_finished_cell_run_holds_names_tags_artifacts_and_its_study_parent(server, tmp_path, capfd):
    study = tmp_path / "results" / "fin"
    out = study / "runs" / "cell"
    flag = tmp_path / "flag"
    assert cli_main(["init-store", "--tracking-uri", server, "--experiment", "fin",
                     "--out", str(flag)]) == 0
    parent_id = flag.read_text().split()[1]
    assert cli_main(["run", *TINY, "--budget", "40", "--study", "fin", "--strategy", "entropy",
                     "--out", str(out), "--tracking-uri", server, "--data-root", "data",
                     "--val-size", "20"]) == 0
    assert "warning" not in capfd.readouterr().err
    run = the_run(server, "fin")
    rid, t = run["info"]["run_id"], tags(run)
    assert run["info"]["status"] == "FINISHED"
    assert t[tracking.PARENT_TAG] == parent_id
    table = pd.read_csv(out / "rounds.csv")
    assert rest_history(server, rid, "test/accuracy") == list(zip(table["labels"], table["accuracy"],
                                                                  strict=True))
    keys = {m["key"] for m in run["data"]["metrics"]}
    assert {"test/ece", "val/accuracy", "time/train_seconds", "train/epochs",
            "diag/wrong_label_fraction"} <= keys
    assert not keys & {"round", "accuracy", "ece"}
    # provenance, and machine paths as tags, never params
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert not params.keys() & {"tracking_uri", "data_root", "device", "threads", "tracking"}
    assert t["asknlearn.runtime.device"] == "auto" and t["asknlearn.runtime.threads"] == "1"
    assert t["asknlearn.tracking_uri"] == server
    assert t["asknlearn.data_root"] == str(Path("data").resolve())
    assert t["asknlearn.device"] == ("cuda:0" if tracking.provenance_tags()["asknlearn.device"]
                                     .startswith("cuda") else "cpu")
    for key in ("asknlearn.version", "asknlearn.torch_version", "asknlearn.cuda_version",
                "asknlearn.device_name", "asknlearn.host"):
        assert t[key], key

    # the study's tables and figures on the parent run
    (study / "figures").mkdir()
    for name in ("rounds.csv", "summary.csv", "summary.md", "figures/digits_noise0.png",
                 "figures/digits_noise0.pdf"):
        (study / name).write_bytes(name.encode() * 3)
    assert cli_main(["log-study", str(study), "--tracking-uri", server, "--out",
                     str(tmp_path / "logged")]) == 0
    assert "5 artifacts logged" in capfd.readouterr().out
    (parent,) = [r for r in rest_runs(server, "fin") if r["info"]["run_id"] == parent_id]
    assert parent["info"]["status"] == "FINISHED" and tags(parent)[tracking.STUDY_TAG] == "fin"
    assert artifacts(server, parent_id) == {
        "rounds.csv": 30, "summary.csv": 33, "summary.md": 30,
        "figures/digits_noise0.png": 75, "figures/digits_noise0.pdf": 75}
    assert cli_main(["log-study", str(study), "--tracking-uri", server]) == 0
    assert "up to date" in capfd.readouterr().out


@pytest.mark.slow
def test_finished_cell_run_carries_the_cell_folder_files(server, tmp_path):
    out = tmp_path / "cell"
    assert cli_main(["run", *TINY, "--budget", "40", "--study", "art", "--strategy", "badge",
                     "--out", str(out), "--tracking-uri", server]) == 0
    rid = the_run(server, "art")["info"]["run_id"]
    assert set(artifacts(server, rid)) == set(tracking.CELL_ARTIFACTS)
    for name in tracking.CELL_ARTIFACTS:
        assert artifact_bytes(server, rid, name) == (out / name).read_bytes(), name


# ---------------------------------------------------------------------------- run status
@pytest.mark.slow
def test_sigterm_ends_the_run_killed_and_a_resume_finishes_the_same_run(server, tmp_path):
    out = tmp_path / "cell"
    cmd = cell_cmd(out, server, "term", "--budget", "200")
    assert run_until_rounds_then(signal.SIGTERM, out, cmd) == -signal.SIGTERM  # dies as before
    killed = the_run(server, "term")
    assert killed["info"]["status"] == "KILLED"
    assert (out / "state.pt").exists()

    assert tags(killed)["asknlearn.runtime.threads"] == "1"
    # resumed "on another machine": a runtime key differs, and its tag follows (never a param)
    r = subprocess.run([*cmd, "--threads", "2"], env=child_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    run = the_run(server, "term")
    assert run["info"]["run_id"] == killed["info"]["run_id"]  # the same run, continued
    assert tags(run)["asknlearn.runtime.threads"] == "2"
    assert run["info"]["status"] == "FINISHED"
    table = pd.read_csv(out / "rounds.csv")
    assert len(table) == 11
    assert rest_history(server, run["info"]["run_id"], "test/nll") == list(
        zip(table["labels"], table["nll"], strict=True))
    rid = run["info"]["run_id"]
    assert artifact_bytes(server, rid, "rounds.csv") == (out / "rounds.csv").read_bytes()


@pytest.mark.slow
def test_sigint_ends_the_run_killed(server, tmp_path):
    """Ctrl-C after round 1: exit 130 and a KILLED run. 50 rounds (up to 1,020 labels), so
    on a loaded machine the cell cannot reach its end before the signal acts; it stops at
    the round in progress, seconds after the signal."""
    out = tmp_path / "cell"
    assert run_until_rounds_then(signal.SIGINT, out, cell_cmd(out, server, "int", "--budget", "1000"),
                                 n=2) == 130
    assert the_run(server, "int")["info"]["status"] == "KILLED"


@pytest.mark.slow
def test_a_crashed_cell_ends_its_run_failed(server, tmp_path):
    """A cell whose training raises in round 1: the process fails, its run is FAILED (not
    RUNNING forever) and holds round 0."""
    out = tmp_path / "cell"
    crash = (
        "import sys\n"
        "import asknlearn.loop as L\n"
        "train = L.Cell.train\n"
        "def broken(self, labeled, round_):\n"
        "    if round_ == 1:\n"
        "        raise RuntimeError('injected crash')\n"
        "    return train(self, labeled, round_)\n"
        "L.Cell.train = broken\n"
        "from asknlearn.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n")
    cmd = [sys.executable, "-c", crash, *cell_cmd(out, server, "crash", "--budget", "60")[3:]]
    r = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 1 and "injected crash" in r.stderr
    run = the_run(server, "crash")
    assert run["info"]["status"] == "FAILED"
    assert [s for s, _ in rest_history(server, run["info"]["run_id"], "test/accuracy")] == [20]
    assert "rounds.csv" in artifacts(server, run["info"]["run_id"])


@pytest.mark.slow
def test_system_metrics_are_opt_in(tmp_path, monkeypatch):
    """ASKNLEARN_SYSTEM_METRICS=1 adds MLflow's system/ metrics to the cell's run; unset, none."""
    pytest.importorskip("psutil")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    cfg = dict(study="sys", dataset="digits", strategy="random", noise=0.0, device="cpu")
    system = {}
    for seed, opt_in in ((0, "0"), (1, "1")):
        monkeypatch.setenv(tracking.SYSTEM_METRICS_ENV, opt_in)
        t = tracking.MlflowTracker(uri, "sys")
        rid = t.start({**cfg, "seed": seed})
        t.log_round(dict(labels=20, round=0, accuracy=0.5, timestamp_ms=1))
        time.sleep(1.5)
        t.finish()
        run = t.client.get_run(rid)
        assert run.info.status == "FINISHED"
        system[opt_in] = {k for k in run.data.metrics if k.startswith("system/")}
    assert system["0"] == set() and "system/cpu_utilization_percentage" in system["1"], system


def test_a_study_name_with_both_quote_characters_finds_its_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    study = """it's "quoted" """
    client = tracking.client_for(uri)
    exp = tracking.experiment_id(client, "q")
    parent = tracking.study_run(client, exp, study, create=True)
    assert tracking.study_run(client, exp, study).info.run_id == parent.info.run_id
    assert tracking.study_run(client, exp, study.replace("'", "_")) is None  # exact, not LIKE
    cfg = dict(study=study, dataset="digits", strategy="random", seed=0, noise=0.0)
    run, created = tracking.ensure_run(client, exp, cfg)
    again, created_again = tracking.ensure_run(client, exp, cfg)
    assert created and not created_again and again.info.run_id == run.info.run_id
    assert again.data.tags[tracking.PARENT_TAG] == parent.info.run_id
