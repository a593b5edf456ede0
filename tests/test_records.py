"""A cell's folder: no code runs from it, one writer at a time, a damaged state is never used,
stale temp files of the package's own files only are removed, a full disk gives one line, and
the records module stays free of torch."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from asknlearn import records
from asknlearn.cli import main as cli_main
from asknlearn.loop import run_cell

REPO = Path(__file__).resolve().parents[1]
TIMING = [*records.TIMING_COLUMNS, "timestamp_ms"]
ARGV = ["run", "--dataset", "digits", "--strategy", "random", "--seed", "0", "--seed-size", "20",
        "--query-size", "20", "--budget", "40", "--max-epochs", "30", "--threads", "1",
        "--tracking", "false", "--quiet"]


def cli(argv: list[str], out: Path | str, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = cli_main([*argv, "--out", str(out)])
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert err.startswith("asknlearn: error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, (n, err)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock file's (each run writes its pid there)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if p.is_file() and p.name != records.LOCK_FILE}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished three-round cell (rounds 0..2), written once; tests work on copies."""
    out = tmp_path_factory.mktemp("cell") / "cell"
    assert cli_main([*ARGV, "--out", str(out)]) == 0
    return out


@pytest.fixture
def cell(finished, tmp_path) -> Path:
    dst = tmp_path / "cell"
    shutil.copytree(finished, dst)
    return dst


def python(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


# ---------------------------------------------------------------------------- layering
def test_records_imports_without_torch():
    p = python("import sys, asknlearn.records\nprint('torch' in sys.modules)")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.strip() == "False"


def test_row_schema_is_the_one_tracking_logs_and_the_loop_writes(finished):
    table = records.read_rounds(finished / records.ROUNDS_FILE)
    # no validation split in this cell: every schema column but val_*
    assert tuple(table.columns) == tuple(c for c in records.ROUND_COLUMNS
                                         if c not in records.VAL_METRICS)
    with pytest.raises(KeyError, match="not_a_column"):
        records.round_row({"not_a_column": 1.0}, validation=False)


# ---------------------------------------------------------------------------- no code runs
class _Evil:
    """Unpickling it creates a file: what a crafted state.pt could do with any callable."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _crafted_state(path: Path, marker: Path) -> None:
    torch.save({"identity": _Evil(marker), "rows": []}, path)


def test_crafted_state_could_run_code_when_unpickled(tmp_path):
    """The control: the crafted file below really runs code under a plain torch.load."""
    marker = tmp_path / "marker"
    _crafted_state(tmp_path / "state.pt", marker)
    torch.load(tmp_path / "state.pt", weights_only=False)
    assert marker.exists()


def test_old_format_state_is_refused_without_being_loaded(cell, tmp_path, capsys):
    marker = tmp_path / "marker"
    (cell / records.CHECKSUM_FILE).unlink()  # what an old (pickle) state folder looks like
    _crafted_state(cell / records.STATE_FILE, marker)
    before = snapshot(cell)
    code, err = cli(ARGV, cell, capsys)
    one_line_error(code, err, str(cell / records.STATE_FILE), "old-format", "afresh", "aside")
    assert not marker.exists()
    assert snapshot(cell) == before


def test_crafted_state_with_a_matching_checksum_is_refused_without_running(cell, tmp_path, capsys):
    """Someone who can write the folder can also write the checksum: the weights-only
    loader still runs nothing."""
    import hashlib

    marker = tmp_path / "marker"
    state = cell / records.STATE_FILE
    _crafted_state(state, marker)
    sha = hashlib.sha256(state.read_bytes()).hexdigest()
    (cell / records.CHECKSUM_FILE).write_text(json.dumps({"file": "state.pt", "sha256": sha}))
    code, err = cli(ARGV, cell, capsys)
    one_line_error(code, err, str(state), "not a cell state", "aside")
    assert not marker.exists()


# ---------------------------------------------------------------------------- integrity
def _truncate(b: bytes) -> bytes:
    return b[: len(b) // 2]


def _flip(b: bytes) -> bytes:
    i = len(b) // 2
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1 :]


@pytest.mark.parametrize("damage", [_truncate, lambda b: b"", _flip], ids=["truncated", "empty", "flipped"])
def test_damaged_state_is_refused_and_nothing_changes(damage, cell, capsys):
    state = cell / records.STATE_FILE
    state.write_bytes(damage(state.read_bytes()))
    before = snapshot(cell)
    code, err = cli(ARGV, cell, capsys)
    one_line_error(code, err, str(state), "SHA-256", "tables are intact", "aside", "rerun")
    assert snapshot(cell) == before


def test_recovery_from_a_damaged_state_as_the_message_says(cell, finished, capsys):
    state = cell / records.STATE_FILE
    state.write_bytes(_flip(state.read_bytes()))
    state.rename(cell / "state.pt.bad")
    code, err = cli(ARGV, cell, capsys)
    assert code == 0, err
    for name in (records.ROUNDS_FILE, records.QUERIES_FILE, records.RELIABILITY_FILE):
        a, b = pd.read_csv(cell / name), pd.read_csv(finished / name)
        drop = [c for c in TIMING if c in a]
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))


def test_killed_between_checksum_and_state_resumes_from_the_previous_round(tiny_cfg, digits,
                                                                          tmp_path, monkeypatch):
    """The checksum file is written first and names the previous state too, so a job killed
    before replacing state.pt leaves a state that verifies."""
    cfg = dataclasses.replace(tiny_cfg, budget=40)
    full = run_cell(cfg, tmp_path / "full", data=digits, log=lambda s: None)

    class Killed(BaseException):
        pass

    real, calls = records.atomic_write, []

    def dies_on_second_state(path, write):
        if Path(path).name == records.STATE_FILE:
            calls.append(path)
            if len(calls) == 2:  # round 1: its checksum is on disk, its state is not
                raise Killed
        real(path, write)

    monkeypatch.setattr(records, "atomic_write", dies_on_second_state)
    with pytest.raises(Killed):
        run_cell(cfg, tmp_path / "cut", data=digits, log=lambda s: None)
    monkeypatch.setattr(records, "atomic_write", real)
    sums = json.loads((tmp_path / "cut" / records.CHECKSUM_FILE).read_text())
    assert sums["previous_sha256"] is not None
    lines: list[str] = []
    resumed = run_cell(cfg, tmp_path / "cut", data=digits, log=lines.append)
    assert "resuming after round 0" in lines[0]
    pd.testing.assert_frame_equal(full.drop(columns=TIMING), resumed.drop(columns=TIMING))


# ---------------------------------------------------------------------------- one writer
def test_second_run_on_a_busy_folder_exits_2_naming_the_holder(tmp_path, capsys):
    out = tmp_path / "cell"
    argv = [*ARGV, "--budget", "200", "--max-epochs", "60", "--out", str(out)]
    first = python(f"from asknlearn.cli import main; raise SystemExit(main({argv!r}))")
    try:
        lock = out / records.LOCK_FILE
        deadline = time.monotonic() + 120
        while not (lock.exists() and lock.read_text().strip()) and first.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert first.poll() is None, first.communicate()
        code, err = cli([*ARGV, "--strategy", "entropy"], out, capsys)
        one_line_error(code, err, str(out), "in use by another run",
                       f"pid {first.pid} on host {socket.gethostname()}")
    finally:
        _, ferr = first.communicate(timeout=600)
    assert first.returncode == 0, ferr
    # the first run is intact: its strategy everywhere, every round
    assert records.read_config(out)["strategy"] == "random"
    rounds = records.read_rounds(out / records.ROUNDS_FILE)
    assert rounds["strategy"].unique().tolist() == ["random"]
    assert rounds["round"].tolist() == list(range(11))


def test_lock_is_released_when_the_holder_is_sigkilled(tiny_cfg, digits, tmp_path):
    out = tmp_path / "cell"
    holder = python("import sys, time\nfrom asknlearn.records import CellLock\n"
                    f"CellLock({str(out)!r}).acquire()\nprint('locked', flush=True)\ntime.sleep(600)")
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(records.CellFolderError, match=f"pid {holder.pid} on host"):
            run_cell(tiny_cfg, out, data=digits, log=lambda s: None)
        assert not (out / records.ROUNDS_FILE).exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    rows = run_cell(tiny_cfg, out, data=digits, log=lambda s: None)
    assert len(rows) == tiny_cfg.rounds + 1


# ---------------------------------------------------------------------------- clean-up
def test_cleanup_removes_only_the_package_temp_files_and_only_under_the_lock(cell, capsys):
    ours = [cell / ".rounds.csv.ab12cd34.tmp", cell / ".state.pt.x_9k2mq0.tmp"]
    theirs = [cell / ".notes.md.tmp", cell / ".rounds.csv.tmp", cell / ".draft.ab12cd34.tmp",
              cell / ".queries.csv.NOT-OURS.tmp"]
    for p in ours + theirs:
        p.write_text("data\n")
    holder = python("import time\nfrom asknlearn.records import CellLock\n"
                    f"CellLock({str(cell)!r}).acquire()\nprint('locked', flush=True)\ntime.sleep(600)")
    try:
        assert holder.stdout.readline().strip() == "locked"
        code, err = cli(ARGV, cell, capsys)
        one_line_error(code, err, "in use by another run")
        assert all(p.exists() for p in ours + theirs)  # not the lock holder: touches nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    code, err = cli(ARGV, cell, capsys)
    assert code == 0, err
    assert not any(p.exists() for p in ours)
    assert all(p.read_text() == "data\n" for p in theirs)


# ---------------------------------------------------------------------------- disk full
def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("writer", ["state", "table"])
def test_disk_full_gives_one_line_and_keeps_the_last_round(writer, finished, tmp_path, capsys,
                                                           monkeypatch):
    out = tmp_path / "cell"
    calls = []
    if writer == "state":
        real = records._write_bytes

        def fill(tmp, data):
            calls.append(tmp)
            if len(calls) > 2:  # round 0's checksum and state fit; round 1's checksum does not
                _enospc()
            real(tmp, data)

        monkeypatch.setattr(records, "_write_bytes", fill)
    else:
        real = pd.DataFrame.to_csv

        def fill(self, *a, **kw):
            calls.append(a)
            if len(calls) > 3:  # round 0's three tables fit, round 1's rounds.csv does not
                _enospc()
            return real(self, *a, **kw)

        monkeypatch.setattr(pd.DataFrame, "to_csv", fill)
    code, err = cli(ARGV, out, capsys)
    one_line_error(code, err, f"no space left on {str(out)!r}", "rerun the same command")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    # the last complete tables (round 0); the state may be a round ahead, the rerun catches up
    assert len(pd.read_csv(out / records.ROUNDS_FILE)) == 1
    code, err = cli(ARGV, out, capsys)
    assert code == 0, err
    a, b = pd.read_csv(out / records.ROUNDS_FILE), pd.read_csv(finished / records.ROUNDS_FILE)
    pd.testing.assert_frame_equal(a.drop(columns=TIMING), b.drop(columns=TIMING))


# ---------------------------------------------------------------------------- bad --out
@pytest.mark.parametrize("out", ["", "  "])
def test_empty_out_is_refused_and_nothing_is_written(out, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli(ARGV, out, capsys)
    one_line_error(code, err, "--out", "is empty", "valid:")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- reading tables
@pytest.mark.parametrize("text, needle", [
    (b"\xff\xfe\x00garbage\x81\n", "not a readable CSV"),
    (b"", "is empty"),
    (b"round,labels\n0,20\n", "lacks columns"),
    (b'study,dataset,strategy,seed,noise,round,labels,accuracy,ece,nll,brier\n'
     b's,digits,random,0,0.0,0,20,"oops",0.1,0.2,0.3\n', "non-numeric"),
    (b'a,b\n1,2,3,4\n"x\n', "not a readable CSV"),
], ids=["binary", "empty", "columns", "non-numeric", "ragged"])
def test_malformed_rounds_table_is_named(text, needle, tmp_path):
    p = tmp_path / "rounds.csv"
    p.write_bytes(text)
    with pytest.raises(records.CellFolderError, match=needle) as exc:
        records.read_rounds(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("text, needle", [
    (b"\xff\xfe not utf-8", "not valid YAML"),
    (b"[1, 2]\n", "lacks study"),
    (b"study: [\n", "not valid YAML"),
], ids=["not-utf8", "not-a-mapping", "broken"])
def test_malformed_config_is_named(text, needle, tmp_path):
    (tmp_path / "config.yaml").write_bytes(text)
    with pytest.raises(records.CellFolderError, match=needle):
        records.read_config(tmp_path)


def test_cell_tables_read_back(finished):
    cfg, rows = records.read_cell(finished)
    assert cfg["strategy"] == "random" and [r["round"] for r in rows] == [0, 1, 2]
    q = records.read_queries(finished / records.QUERIES_FILE)
    assert tuple(q.columns) == records.QUERY_COLUMNS and len(q) == 60
    rel = records.read_reliability(finished / records.RELIABILITY_FILE)
    assert tuple(rel.columns) == records.RELIABILITY_COLUMNS and set(rel["round"]) == {0, 1, 2}
    assert records.find_cells([finished.parent]) == [finished]


def test_find_cells_descends_below_a_study_folder(tmp_path):
    """A study folder holds a tidy rounds.csv but no config.yaml: its cells are below it. One
    finder serves the CLI (via backfill) and the readers."""
    from asknlearn import backfill

    study = tmp_path / "results" / "s"
    cells = [study / "runs" / name for name in ("a", "b")]
    for c in [*cells, study / "runs" / "no-config"]:
        c.mkdir(parents=True)
        (c / records.ROUNDS_FILE).write_text("round,labels\n0,20\n")
    for c in cells:
        (c / records.CONFIG_FILE).write_text("study: s\n")
    (study / records.ROUNDS_FILE).write_text("round,labels\n")  # the study's tidy table
    assert backfill.find_cells is records.find_cells and backfill.read_cell is records.read_cell
    assert records.find_cells([study]) == cells
    assert records.find_cells([cells[1], study, tmp_path]) == [cells[1], cells[0]]
    for bad, needle in ((tmp_path / "missing", "does not exist"),
                        (study / "runs" / "no-config", "holds no cell")):
        with pytest.raises(records.CellFolderError, match=needle) as exc:
            records.find_cells([bad])
        assert "valid: a cell folder" in str(exc.value) and "\n" not in str(exc.value)


def test_a_cell_finishes_at_round_budget_over_query_size():
    """The one rule that backfill (run status) and the workflow's start-up line share."""
    from asknlearn.records import final_round, is_finished

    cfg = {"budget": 100, "query_size": 20}
    assert final_round(cfg) == 5
    assert is_finished(cfg, [0, 1, 2, 3, 4, 5]) and is_finished(cfg, ["5"])
    assert not is_finished(cfg, [0, 1, 2, 3, 4]) and not is_finished(cfg, [])
