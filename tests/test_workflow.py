"""The Snakemake workflow and the study-level report code (asknlearn/results.py, asknlearn/plots.py).

Workflow runs use a copy of the workflow in a temp dir and ``--workflow-profile none`` (no
conda, no GPU); the end-to-end test runs a tiny digits study: 2 strategies × 2 seeds × 2 rounds.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIGS = sorted((ROOT / "config" / "paper").glob("*.yaml"))
SCHEMA = yaml.safe_load((ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text())

pytestmark = pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not installed")


# ---------------------------------------------------------------------------- helpers
def copy_workflow(dest: Path) -> Path:
    """Copy what a user checks out to run the workflow (the package itself is installed)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "Snakefile", dest)
    for d in ("workflow", "config", "profiles"):
        shutil.copytree(ROOT / d, dest / d, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def snakemake(workdir: Path, *args: str, check: bool = True,
              timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(["snakemake", "--workflow-profile", "none", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count}, checked against its total."""
    table = output[output.index("Job stats:"):]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    total = counts.pop("total")
    assert sum(counts.values()) == total
    return counts


def effective_config(*files: Path) -> dict:
    """The config a run sees: config/config.yaml, then --configfile files merged over it
    (nested mappings merged key by key, like Snakemake), then the schema's defaults."""
    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    def defaults(schema: dict, value: dict) -> dict:
        for k, sub in schema.get("properties", {}).items():
            if k not in value and "default" in sub:
                value[k] = sub["default"] if not isinstance(sub["default"], dict) else {}
            if sub.get("type") == "object" and isinstance(value.get(k), dict):
                defaults(sub, value[k])
        return value

    cfg: dict = {}
    for f in (ROOT / "config" / "config.yaml", *files):
        cfg = merge(cfg, yaml.safe_load(Path(f).read_text()))
    return defaults(SCHEMA, cfg)


def expected_jobs(cfg: dict, done_cells: int = 0) -> dict[str, int]:
    """Jobs of a fresh run of ``cfg``: one per cell, the store, the aggregate, the figures."""
    d, s, k, r = (len(cfg[x]) for x in ("datasets", "strategies", "seeds", "noise"))
    jobs = {"al_cell": d * s * k * r - done_cells, "aggregate": 1, "plot_curves": d * r,
            "plot_reliability": d * r, "summarize": 1, "all": 1}
    if cfg["tracking"]:
        jobs["init_store"] = 1
        jobs["log_study"] = 1
    if any(n > 0 for n in cfg["noise"]):
        jobs["plot_noisy_oracle"] = d
    return jobs


@pytest.fixture(scope="module")
def dry_dir(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("dry"))


# ---------------------------------------------------------------------------- workflow checks
def test_lint_is_clean():
    proc = snakemake(ROOT, "--lint", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Lints for" not in out, out


def test_schema_documents_every_key():
    """Every config key has a description and a default (the schema is the reference)."""
    def walk(schema: dict, path: str) -> None:
        for key, sub in schema.get("properties", {}).items():
            assert "description" in sub, f"{path}{key} lacks a description"
            if path == "experiment.":
                # generated from asknlearn/config.py (tests/test_config.py checks it agrees);
                # the package fills these defaults, so they are stated, not set by Snakemake
                assert "Default: " in sub["description"], f"{path}{key} lacks its default"
                continue
            assert "default" in sub, f"{path}{key} lacks a default"
            if sub.get("type") == "object":
                walk(sub, f"{path}{key}.")
    walk(SCHEMA, "")
    assert SCHEMA["additionalProperties"] is False


PAPER_SIX = ("random", "confidence", "entropy", "badge", "ask-n-learn-lwcc", "ask-n-learn-vwcc")


@pytest.mark.parametrize("cfg_file", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_dry_run(dry_dir, cfg_file):
    proc = snakemake(dry_dir, "-n", "--configfile", str(cfg_file))
    cfg = effective_config(cfg_file)
    assert job_counts(proc.stdout) == expected_jobs(cfg)
    # the figures: the paper's 6 strategies × 3 seeds per dataset and noise level; the
    # ablations: BADGE and both Ask-n-Learn variants with their controls
    if cfg_file.stem.startswith("fig"):
        assert list(cfg["strategies"]) == list(PAPER_SIX) and cfg["seeds"] == [0, 1, 2]
    else:
        assert {"badge", "ask-n-learn-lwcc", "ask-n-learn-vwcc"} <= set(cfg["strategies"])
    assert cfg["experiment"]["seed_size"] == 100 and cfg["experiment"]["lr"] == 0.001


def test_paper_configs_cover_the_figures():
    stems = {p.stem for p in PAPER_CONFIGS}
    assert stems == {"fig2_mnist", "fig3_fashion_mnist", "fig4_cifar10", "fig5_svhn", "fig6_cifar10_noise",
                     "ablation_fashion_mnist", "ablation_fashion_mnist_noise"}
    fig4 = effective_config(ROOT / "config/paper/fig4_cifar10.yaml")
    assert fig4["experiment"]["query_size"] == 5000 and fig4["experiment"]["model"] == "resnet18"
    assert effective_config(ROOT / "config/paper/fig5_svhn.yaml")["experiment"]["model"] == "vgg16"
    assert effective_config(ROOT / "config/paper/fig6_cifar10_noise.yaml")["noise"] == [0.1, 0.2]


@pytest.mark.parametrize("cfg_file", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_overrides_every_quickstart_setting(cfg_file):
    """--configfile merges over config/config.yaml: a quickstart setting the paper file does
    not repeat would silently leak into the paper run."""
    def leaks(quick: dict, paper: dict, path: str = "") -> list[str]:
        out = []
        for k, v in quick.items():
            if k not in paper:
                out.append(path + k)
            elif isinstance(v, dict) and isinstance(paper[k], dict):
                out += leaks(v, paper[k], f"{path}{k}.")
        return out

    quick = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    assert leaks(quick, yaml.safe_load(cfg_file.read_text())) == []


@pytest.mark.parametrize("bad, message", [
    ("strategy: [badge]", "unknown top-level config key 'strategy' (did you mean 'strategies'?)"),
    ("sedes: [1]", "unknown top-level config key 'sedes' (did you mean 'seeds'?); valid: study,"),
    ("experiment: {query_sise: 20}", "did you mean 'query_size'"),
    ("experiment: {seed: 3}", "seed are set by the workflow"),
    ("experiment: {lr: [1]}", "lr=[1] is not valid; valid: a value of type float"),
    ("experiment: {budget: {a: 1}}", "budget={'a': 1} is not valid"),
    ("experiment: {1: 2}", "key 1 is not valid; valid: string keys"),
    ("experiment: {budget: 40.5}", "budget=40.5 is not valid"),
    ("experiment: {strategies: {mine: {selector: nope}}}", "unknown selector of strategy 'mine': 'nope'"),
])
def test_bad_config_fails_before_any_job(dry_dir, tmp_path, bad, message):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(bad + "\n")
    proc = snakemake(dry_dir, "-n", "--configfile", str(cfg), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (dry_dir / "results").exists()


def test_jobs_get_exactly_the_checked_values(dry_dir, tmp_path):
    """One coercion: ``budget: 40.0`` is checked and passed as 40; a custom strategy defined in
    ``experiment.strategies`` runs with its definition (and only its own); a study may be named
    "null"; list overrides from ``--config`` are read as YAML before the schema checks them;
    every table a cell writes is a declared output of its job."""
    cfg = tmp_path / "ok.yaml"
    cfg.write_text('study: "null"\nstrategies: [badge, my-lwcc]\n'
                   "experiment: {seed_size: 20, query_size: 20, budget: 40.0,\n"
                   "             strategies: {my-lwcc: {loss: lwcc}, unused: {loss: vwcc}}}\n")
    proc = snakemake(dry_dir, "-n", "-p", "--configfile", str(cfg), "--config", "seeds=[0,1]",
                     "noise=[0,0.25]")
    out = proc.stdout
    assert job_counts(out)["al_cell"] == 1 * 2 * 2 * 2
    cmds = [line for line in out.splitlines() if "python -m asknlearn run" in line]
    assert len(cmds) == 8
    assert all("--budget 40 " in c and "--study null " in c for c in cmds), cmds[0]
    own = "--strategies '{\"my-lwcc\": {\"loss\": \"lwcc\"}}'"
    assert sum(own in c for c in cmds) == 4 and not any("unused" in c for c in cmds)
    assert not any("--strategy badge" in c and "--strategies" in c for c in cmds)
    assert "--noise 0.25 " in out and "results/null/runs/digits/my-lwcc/seed1/noise0.25" in out
    for table in ("rounds", "queries", "reliability"):
        assert "runs/digits/badge/seed0/noise0/" + table + ".csv" in out
    assert not (dry_dir / "results").exists()


def test_gpu_slots_give_concurrent_jobs_distinct_gpus(tmp_path):
    """Two jobs at once on a 2-GPU machine get GPUs 0 and 1; a third waits for a free one."""
    script = ROOT / "workflow" / "scripts" / "gpu_slot.py"
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    job = [sys.executable, "-c", "import os,time; print(os.environ['CUDA_VISIBLE_DEVICES']); time.sleep(2)"]

    def launch(*extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), "--gpus", "2", "--lock-dir", str(tmp_path),
                                 *extra, "--", *job], env=env, stdout=subprocess.PIPE, text=True)

    first = [launch("--gpus-per-job", "1") for _ in range(2)]
    time.sleep(1.0)
    third = launch("--gpus-per-job", "1")
    outs = [p.communicate(timeout=60)[0].strip() for p in first]
    assert sorted(outs) == ["0", "1"]
    assert third.communicate(timeout=60)[0].strip() in ("0", "1")
    # a scheduler's CUDA_VISIBLE_DEVICES (SLURM) is kept; 0 GPUs per job sets nothing
    show = [sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES', '-'))"]
    kept = subprocess.run([sys.executable, str(script), "--gpus", "2", "--lock-dir", str(tmp_path), "--",
                           *show], env={**env, "CUDA_VISIBLE_DEVICES": "5"}, capture_output=True, text=True)
    assert kept.stdout.strip() == "5"
    none = subprocess.run([sys.executable, str(script), "--gpus-per-job", "0", "--", *show], env=env,
                          capture_output=True, text=True)
    assert none.stdout.strip() == "-"


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    wd = copy_workflow(tmp_path / "wf")
    tiny = wd / "tiny.yaml"
    tiny.write_text(
        "study: tiny\nstrategies: [random, badge]\nseeds: [0, 1]\n"
        "experiment: {seed_size: 20, query_size: 20, budget: 40, model: mlp, lr: 0.001, max_epochs: 60}\n")
    snakemake(wd, "--cores", "2", "--configfile", str(tiny), timeout=600)
    out = wd / "results" / "tiny"

    # the tidy table: one row per cell and round, every metric
    df = pd.read_csv(out / "rounds.csv")
    from asknlearn.results import REQUIRED_COLUMNS
    assert list(df.columns[: len(REQUIRED_COLUMNS)]) == REQUIRED_COLUMNS
    assert {"train_seconds", "selection_seconds", "wrong_label_fraction"} <= set(df.columns)
    assert len(df) == 2 * 2 * 3  # strategies × seeds × (seed round + 2 rounds)
    assert sorted(df["labels"].unique()) == [20, 40, 60]
    assert df.groupby(["strategy", "seed"]).size().eq(3).all()
    rel = pd.read_csv(out / "reliability.csv")
    assert set(rel["strategy"]) == {"random", "badge"}

    for name in ("digits_noise0", "digits_reliability_noise0"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["strategy"]) == ["random", "badge"]
    assert "| badge |" in (out / "summary.md").read_text()

    # the HTML report with every figure and table
    snakemake(wd, "--configfile", str(tiny), "--report", "report.html")
    html = (wd / "report.html").read_text(errors="replace")
    for name in ("digits_noise0.png", "digits_reliability_noise0.png", "summary.csv", "rounds.csv"):
        assert name in html

    # MLflow: one run per cell in the study's experiment, every round at step = labels
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = [r for r in client.search_runs([exp.experiment_id])
            if "asknlearn.cell" in r.data.tags]  # the study's parent run aside
    cells = sorted(r.data.tags["asknlearn.cell"] for r in runs)
    assert cells == sorted(f"tiny/digits/{s}/seed{k}/noise0" for s in ("random", "badge") for k in (0, 1))
    for r in runs:
        hist = client.get_metric_history(r.info.run_id, "test/accuracy")
        assert sorted(m.step for m in hist) == [20, 40, 60]
        cell = df[(df["strategy"] == r.data.tags["strategy"]) & (df["seed"] == int(r.data.tags["seed"]))]
        assert sorted(m.value for m in hist) == pytest.approx(sorted(cell["accuracy"]))

    # adding a seed reruns only the new cells (and what reads them)
    more = wd / "more.yaml"
    more.write_text(tiny.read_text().replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    proc = snakemake(wd, "-n", "--configfile", str(more))
    counts = job_counts(proc.stdout)
    assert counts["al_cell"] == 2 and "init_store" not in counts


# ---------------------------------------------------------------------------- results.py
def _table(curves: dict[tuple[str, int], list[float]], labels=(10, 20, 30)) -> pd.DataFrame:
    rows = []
    for (strategy, seed), accs in curves.items():
        for r, (n, a) in enumerate(zip(labels, accs, strict=True)):
            rows.append({"study": "t", "dataset": "digits", "strategy": strategy, "seed": seed,
                         "noise": 0.0, "round": r, "labels": n, "accuracy": a, "ece": 0.1,
                         "nll": 1.0 - a, "brier": 0.5})
    return pd.DataFrame(rows)


def test_summary_aulc_target_and_paired_deltas():
    from asknlearn.results import summarize

    df = _table({("random", 0): [0.5, 0.6, 0.7], ("random", 1): [0.4, 0.5, 0.6],
                 ("badge", 0): [0.5, 0.8, 0.9], ("badge", 1): [0.4, 0.6, 0.8]})
    s = summarize(df, target=0.75, references=["badge", "random"]).set_index("strategy")
    # trapezoid / label range: ((0.5+0.6)/2*10 + (0.6+0.7)/2*10) / 20 = 0.6
    assert s.loc["random", "aulc_mean"] == pytest.approx((0.6 + 0.5) / 2)
    assert s.loc["badge", "aulc_mean"] == pytest.approx(((0.65 + 0.85) / 2 + (0.5 + 0.7) / 2) / 2)
    assert s.loc["badge", "labels_to_target_mean"] == pytest.approx(25.0)  # seed 0 at 20, seed 1 at 30
    assert s.loc["badge", "reached_target"] == 2 and s.loc["random", "reached_target"] == 0
    assert math.isnan(s.loc["random", "labels_to_target_mean"])
    # paired by seed: badge − random final accuracy is 0.2 for both seeds, so sd 0
    assert s.loc["badge", "delta_final_accuracy_vs_random_mean"] == pytest.approx(0.2)
    assert s.loc["badge", "delta_final_accuracy_vs_random_sd"] == pytest.approx(0.0)
    assert s.loc["random", "delta_aulc_vs_badge_mean"] == pytest.approx(
        s.loc["random", "aulc_mean"] - s.loc["badge", "aulc_mean"])
    assert math.isnan(s.loc["badge", "delta_aulc_vs_badge_mean"])
    assert list(s.index) == ["random", "badge"]  # the paper's order


def test_aggregate_refuses_duplicates_and_bad_tables(tmp_path):
    from asknlearn.results import ReportError, aggregate

    df = _table({("random", 0): [0.5, 0.6, 0.7]})
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    df.to_csv(a, index=False)
    df.to_csv(b, index=False)
    assert len(aggregate([a])) == 3
    with pytest.raises(ReportError, match="more than once"):
        aggregate([a, b])
    df.drop(columns="ece").to_csv(b, index=False)
    with pytest.raises(ReportError, match="lacks columns \\['ece'\\]"):
        aggregate([b])
    with pytest.raises(ReportError, match="does not exist"):
        aggregate([tmp_path / "missing.csv"])


def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path):
    from asknlearn.cli import main

    df = _table({("random", 0): [0.5, 0.6, 0.7]})
    df.to_csv(tmp_path / "r.csv", index=False)
    out = tmp_path / "fig.png"
    assert main(["plot", "curves", "--rounds", str(tmp_path / "r.csv"), "--dataset", "mnist",
                 "--noise", "0", "--out", str(out)]) == 2
    assert main(["summarize", "--rounds", str(tmp_path / "r.csv"), "--target-accuracy", "1.5",
                 "--out", str(tmp_path / "s.csv")]) == 2
    assert list(tmp_path.iterdir()) == [tmp_path / "r.csv"]


@pytest.mark.slow
def test_every_baseline_and_control_runs_through_the_workflow(tmp_path):
    """The field's baselines (issue 15) and the ablation control run as workflow cells on the
    quickstart's digits, with their diagnostics in the tidy table."""
    wd = copy_workflow(tmp_path / "wf")
    tiny = wd / "tiny.yaml"
    names = ["margin", "coreset", "bald", "powerbald", "typiclust", "badge-dropout"]
    tiny.write_text(
        f"study: base\nstrategies: [{', '.join(names)}]\nseeds: [0]\ntracking: false\n"
        "experiment: {seed_size: 20, query_size: 20, budget: 40, model: mlp, lr: 0.001, "
        "max_epochs: 40}\n")
    snakemake(wd, "--cores", "2", "--configfile", str(tiny), timeout=900)
    df = pd.read_csv(wd / "results" / "base" / "rounds.csv")
    assert sorted(df["strategy"].unique()) == sorted(names)
    assert df.groupby("strategy").size().eq(3).all()
    # the MC-dropout selectors and the control run on the stochastic network: α is logged
    stochastic = df[df.strategy.isin(["bald", "powerbald", "badge-dropout"])]
    assert (stochastic["alpha_mean"] > 0).all()
    assert df[df.strategy.isin(["margin", "coreset", "typiclust"])]["alpha_mean"].isna().all()
