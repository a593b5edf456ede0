"""Where each cell of a study stands, read from its folder without torch: finished, resumable
(a saved state, not finished), new (nothing saved) or unreadable. The workflow prints the
counts when it starts (``workflow/rules/common.smk``).

"Finished" is the package's one rule (:func:`asknlearn.records.is_finished`): the cell's rounds
table has the row of round ``budget // query_size`` of the cell's ``config.yaml``. Reading never fails:
a folder that cannot be read as a cell (a malformed table or config, an old-format state
without its checksum, a special file where a table belongs, a table too large to be one) is
counted as unreadable, with the reason, and a job for it then stops with the package's message.

It reads only the round column and the two config keys it needs, so that a thousand cells take
a second (records' validating readers take ~10 ms a table).
"""

from __future__ import annotations

import csv
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from asknlearn.records import (
    CHECKSUM_FILE,
    CONFIG_FILE,
    ROUNDS_FILE,
    STATE_FILE,
    final_round,
    is_finished,
)

STATUSES = ("finished", "resumable", "new", "unreadable")
# larger than any real rounds.csv / config.yaml (a few KB): such a file is not read at all
MAX_TABLE_BYTES = 64 << 20
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class CellStatus:
    """One cell folder's status; ``round`` is the last finished round (resumable cells, when
    the table says), ``reason`` why an unreadable folder is one."""

    status: str
    round: int | None = None
    reason: str = ""


def _regular(path: Path, limit: int) -> bool:
    """Whether ``path`` exists; raises ValueError when it is not a regular file under
    ``limit`` bytes (a FIFO, a device, a folder, a huge file are never opened)."""
    try:
        st = path.stat()  # follows a symlink: what a reader would open
    except FileNotFoundError:
        if path.is_symlink():
            raise ValueError(f"{path.name} is a dangling link") from None
        return False
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path.name} is not a regular file")
    if st.st_size > limit:
        raise ValueError(f"{path.name} is {st.st_size} bytes, not a cell's table")
    return True


def _protocol(path: Path) -> dict:
    """A cell's config.yaml, checked for the two keys that say when it finishes. libyaml's
    safe loader where PyYAML has it: ~8x faster than records.read_config's pure Python one,
    which matters for a start-up line over hundreds of cells."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    if not isinstance(cfg, dict) or "budget" not in cfg or "query_size" not in cfg:
        raise ValueError(f"{path.name} lacks budget or query_size")
    return cfg


def _rounds_done(path: Path) -> list[int]:
    """The ``round`` column of a rounds table, read with the csv module (pandas takes ~10 ms
    a table, too slow for a start-up line over hundreds of cells); ValueError if malformed."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f)
        header = next(rows, None)
        if header is None:
            return []  # an empty table: no round finished yet
        if "round" not in header or "labels" not in header:
            raise ValueError(f"{path.name} lacks the round and labels columns")
        i = header.index("round")
        done = []
        for row in rows:
            if not row:
                continue  # a blank line, as pandas skips it
            value = float(row[i])  # IndexError / ValueError: a malformed row
            if value != int(value):
                raise ValueError(f"{path.name} has a round {row[i]!r}")
            done.append(int(value))
        return done


def _status(folder: Path) -> CellStatus:
    if not folder.exists():
        return CellStatus("new")
    if not folder.is_dir():
        return CellStatus("unreadable", reason="not a folder")
    has_state = _regular(folder / STATE_FILE, 1 << 62)
    has_rounds = _regular(folder / ROUNDS_FILE, MAX_TABLE_BYTES)
    last = None
    if has_rounds:
        _regular(folder / CONFIG_FILE, MAX_CONFIG_BYTES)
        cfg = _protocol(folder / CONFIG_FILE)
        done = _rounds_done(folder / ROUNDS_FILE)
        if is_finished(cfg, done):
            return CellStatus("finished", final_round(cfg))
        last = max(done, default=None)
    if not has_state:
        # no state: `asknlearn run` starts the cell from round 0 (config.yaml or a partial
        # table alone are rewritten)
        return CellStatus("new")
    if not (folder / CHECKSUM_FILE).is_file():
        return CellStatus("unreadable", last, f"{STATE_FILE} has no {CHECKSUM_FILE} (an "
                          "old-format state, which a run refuses)")
    return CellStatus("resumable", last)


def cell_status(folder: str | os.PathLike) -> CellStatus:
    """The status of the cell folder ``folder``; never raises (unreadable instead)."""
    try:
        return _status(Path(folder))
    except Exception as exc:  # a hostile folder must not stop the caller
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CellStatus("unreadable", reason=first)


def summary_line(study: str, folders: Iterable[str | os.PathLike]) -> tuple[str, list[str]]:
    """``study: N cells — a finished, b resumable (state saved at round k), c new`` (and
    ``, d unreadable``), plus one line per unreadable folder naming it and why."""
    counts = dict.fromkeys(STATUSES, 0)
    saved: list[int] = []
    bad: list[str] = []
    folders = list(folders)
    for f in folders:
        st = cell_status(f)
        counts[st.status] += 1
        if st.status == "resumable" and st.round is not None:
            saved.append(st.round)
        if st.status == "unreadable":
            bad.append(f"{f}: unreadable ({st.reason})")
    resumable = f"{counts['resumable']} resumable"
    if saved:
        lo, hi = min(saved), max(saved)
        resumable += (f" (state saved at round {lo})" if lo == hi
                      else f" (state saved at rounds {lo}-{hi})")
    parts = [f"{counts['finished']} finished", resumable, f"{counts['new']} new"]
    if counts["unreadable"]:
        parts.append(f"{counts['unreadable']} unreadable")
    n = len(folders)
    return f"{study}: {n} cell{'s' if n != 1 else ''} — {', '.join(parts)}", bad
