"""The line the workflow prints when it starts: how many cells of the study are finished,
resumable, new or unreadable, read from the cell folders without torch and never failing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asknlearn.cellstatus import CellStatus, cell_status, summary_line

ROOT = Path(__file__).resolve().parents[1]
HEADER = "study,dataset,strategy,seed,noise,round,labels,accuracy,ece,nll,brier\n"


def make_cell(folder: Path, last_round: int | None, *, budget: int = 60, query_size: int = 20,
              state: bool = False, checksum: bool = True) -> Path:
    """A fake cell folder: config.yaml, rounds 0..last_round in rounds.csv, a state file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        f"study: s\ndataset: digits\nstrategy: random\nseed: 0\nnoise: 0.0\n"
        f"budget: {budget}\nquery_size: {query_size}\n")
    if last_round is not None:
        rows = "".join(f"s,digits,random,0,0.0,{r},{20 * (r + 1)},0.5,0.1,1.0,0.5\n"
                       for r in range(last_round + 1))
        (folder / "rounds.csv").write_text(HEADER + rows)
    if state:
        (folder / "state.pt").write_bytes(b"state")
        if checksum:
            (folder / "state.pt.sha256").write_text("{}")
    return folder


# ---------------------------------------------------------------------------- one folder
def test_status_of_each_kind_of_folder(tmp_path):
    assert cell_status(tmp_path / "absent") == CellStatus("new")
    assert cell_status(make_cell(tmp_path / "fin", 3)) == CellStatus("finished", 3)
    # finished by the table even without its state (the tables are the record)
    assert cell_status(make_cell(tmp_path / "fin2", 3, state=True)).status == "finished"
    assert cell_status(make_cell(tmp_path / "res", 1, state=True)) == CellStatus("resumable", 1)
    # killed between saving round 0's state and writing its tables: resumable, round unknown
    assert cell_status(make_cell(tmp_path / "res0", None, state=True)) == CellStatus("resumable")
    # a config alone, or a partial table without a state, restarts from round 0
    assert cell_status(make_cell(tmp_path / "cfg", None)).status == "new"
    assert cell_status(make_cell(tmp_path / "part", 1)).status == "new"
    # budget not a multiple of the query size: the last round is budget // query_size
    assert cell_status(make_cell(tmp_path / "odd", 2, budget=50)).status == "finished"


@pytest.mark.parametrize("damage", ["file", "fifo", "dev_zero", "dangling", "dir_table",
                                    "bad_yaml", "yaml_list", "no_budget", "bad_table",
                                    "old_state", "huge"])
def test_hostile_folders_are_unreadable_never_an_error(tmp_path, damage):
    cell = tmp_path / "cell"
    if damage == "file":
        cell.write_text("not a folder")
    else:
        make_cell(cell, 1, state=True, checksum=damage != "old_state")
    table = cell / "rounds.csv"
    if damage in ("fifo", "dev_zero", "dangling", "dir_table", "huge"):
        table.unlink()
    if damage == "fifo":
        os.mkfifo(table)  # opening it would block forever
    elif damage == "dev_zero":
        table.symlink_to("/dev/zero")  # reading it would never end
    elif damage == "dangling":
        table.symlink_to(tmp_path / "nowhere")
    elif damage == "dir_table":
        table.mkdir()
    elif damage == "huge":
        with open(table, "wb") as f:
            f.truncate(1 << 30)  # sparse: larger than any rounds table, never read
    elif damage == "bad_yaml":
        (cell / "config.yaml").write_text(":::: [\n")
    elif damage == "yaml_list":
        (cell / "config.yaml").write_text("- 1\n- 2\n")
    elif damage == "no_budget":
        (cell / "config.yaml").write_text("study: s\n")
    elif damage == "bad_table":
        table.write_text("round,labels\nx,\"\n")
    st = cell_status(cell)
    assert st.status == "unreadable", st
    assert st.reason and "\n" not in st.reason


def test_summary_line_counts_and_names_unreadable_folders(tmp_path):
    cells = [make_cell(tmp_path / "a", 3), make_cell(tmp_path / "b", 1, state=True),
             make_cell(tmp_path / "c", 2, state=True), tmp_path / "d", tmp_path / "e"]
    (tmp_path / "e").write_text("")
    line, bad = summary_line("s", cells)
    assert line == ("s: 5 cells — 1 finished, 2 resumable (state saved at rounds 1-2), 1 new, "
                    "1 unreadable")
    assert bad == [f"{tmp_path / 'e'}: unreadable (not a folder)"]
    line, bad = summary_line("s", cells[:2])
    assert line == "s: 2 cells — 1 finished, 1 resumable (state saved at round 1), 0 new"
    assert bad == []


def test_status_reader_imports_without_torch():
    code = "import sys, asknlearn.cellstatus; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# ---------------------------------------------------------------------------- the workflow
@pytest.mark.skipif(shutil.which("snakemake") is None, reason="snakemake not installed")
def test_dry_run_prints_the_cell_counts_once_without_torch(tmp_path):
    """`snakemake -n` on a 2 strategies x 3 seeds study with a finished, a resumable, an
    unreadable (a FIFO for a table) and new cells prints one line, names the unreadable cell,
    and parses the Snakefile with torch unimportable; a job's Snakemake prints nothing."""
    wd = tmp_path / "wf"
    wd.mkdir()
    shutil.copy(ROOT / "Snakefile", wd)
    for d in ("workflow", "config"):
        shutil.copytree(ROOT / d, wd / d, ignore=shutil.ignore_patterns("__pycache__"))
    runs = wd / "results" / "tiny" / "runs" / "digits"
    make_cell(runs / "random" / "seed0" / "noise0", 3)
    make_cell(runs / "random" / "seed1" / "noise0", 1, state=True)
    make_cell(runs / "entropy" / "seed0" / "noise0", 2, state=True)
    bad = runs / "entropy" / "seed1" / "noise0"
    bad.mkdir(parents=True)
    os.mkfifo(bad / "rounds.csv")
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch imported while parsing')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(poison.parent), str(ROOT),
                                          os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    (wd / "tiny.yaml").write_text(
        "study: tiny\nstrategies: [random, entropy]\nseeds: [0, 1, 2]\ntracking: false\n"
        "experiment: {seed_size: 20, query_size: 20, budget: 60, model: mlp}\n")
    def dry_run(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["snakemake", "--workflow-profile", "none", "-n", "--cores", "1",
             "--configfile", "tiny.yaml", *extra],
            cwd=wd, env=env, capture_output=True, text=True, timeout=300)

    proc = dry_run()
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    line = ("tiny: 6 cells — 1 finished, 2 resumable (state saved at rounds 1-2), 2 new, "
            "1 unreadable")
    assert out.count(line) == 1, out
    assert out.count("entropy/seed1/noise0: unreadable (rounds.csv is not a regular file)") == 1
    # a job's own Snakemake (a cluster job, a subprocess) parses the Snakefile again: silent
    for mode in ("remote", "subprocess"):
        again = dry_run("--mode", mode)
        assert again.returncode == 0, again.stderr[-2000:]
        assert " cells — " not in again.stdout + again.stderr, mode
