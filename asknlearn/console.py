"""What the workflow tells the user on the console while a study runs (issue 23).

Three things, none of which changes what a cell computes:

- ``cap_cores``: ``snakemake --cores 8`` on a 2-core machine would run 8 single-threaded
  cells at once and make each several times slower (measured: 5 min 36 s against 2 min 55 s
  for the quickstart); the workflow caps its core count at the cores this process may use.
- ``python -m asknlearn.console tee LOG``: an AL job's output goes whole to its log file, and
  each finished round also goes to the console as one compact line, so ``Execute N jobs...``
  is followed by progress instead of minutes of silence.
- ``where_lines``: when a run ends, where its figures, ``summary.md``, the report command and
  the ``mlflow ui`` command are.

Standard library only: the tee runs once per job and must start fast (no torch, no pandas).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TextIO


# ---------------------------------------------------------------------------- cores
def cores_present() -> int:
    """The cores this process may run on: its CPU affinity mask where the OS has one (a
    container or ``taskset`` limits it below ``os.cpu_count()``), else ``os.cpu_count()``."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def cap_cores(requested: int | None, present: int) -> tuple[int | None, str | None]:
    """The core count to schedule local jobs with, and the warning to print once when it is
    lower than ``requested``. None (no ``--cores`` given, e.g. a dry run) stays None."""
    if requested is None or requested <= present:
        return requested, None
    return present, (
        f"--cores {requested} is more than the {present} core(s) this machine gives this "
        f"process; running at most {present} core(s) of jobs at once (more would only make "
        "every cell slower). On a cluster, use a profile with an executor "
        "(--workflow-profile profiles/slurm)")


# ---------------------------------------------------------------------------- round lines
# a round line of the loop: "[study/ds/strategy/seedN/noiseR] round   3/8 labels     80 acc ..."
_ROUND = re.compile(r"^\[(?P<cell>[^\]]+)\] round\s+(?P<round>\d+)/(?P<rounds>\d+)\s")
_FIELDS = {
    "labels": re.compile(r"\blabels\s+(\d+)"),
    "acc": re.compile(r"\bacc\s+([0-9.]+)"),
    "ece": re.compile(r"\bece\s+([0-9.]+)"),
    "total": re.compile(r"\btotal\s+([0-9.]+s)"),
    "eta": re.compile(r"\b(eta \S+|done)\s*$"),
    "cap": re.compile(r"(max_epochs reached)"),
}


def compact_round(line: str) -> str | None:
    """A round line of ``asknlearn run`` as one short console line, or None for any other
    line (headers, warnings: those stay in the log, which a failed job prints whole).

    ``[quickstart/digits/badge/seed0/noise0] round 3/8 labels 80 acc 0.7123 ... eta 0m40s``
    becomes ``digits/badge/seed0/noise0  round 3/8  80 labels  acc 0.712  ece 0.051  2.1s
    eta 0m40s``: the study is dropped (the run prints it once), the rest kept in order."""
    m = _ROUND.match(line)
    if m is None:
        return None
    cell = m["cell"].split("/", 1)[-1] if m["cell"].count("/") >= 4 else m["cell"]
    parts = [cell, f"round {m['round']}/{m['rounds']}"]
    found = {k: (r.search(line) or [None, None])[1] for k, r in _FIELDS.items()}
    if found["labels"]:
        parts.append(f"{found['labels']} labels")
    for key in ("acc", "ece"):
        if found[key]:
            parts.append(f"{key} {float(found[key]):.3f}")
    if found["total"]:
        parts.append(found["total"])
    if found["cap"]:
        parts.append(found["cap"])
    if found["eta"]:
        parts.append(found["eta"])
    return "  ".join(parts)


def tee(lines: Iterable[str], log: TextIO, console: TextIO) -> None:
    """Copy every line to ``log``; each round line also, compacted, to ``console``."""
    for line in lines:
        log.write(line)
        log.flush()
        short = compact_round(line.rstrip("\n"))
        if short is not None:
            console.write(short + "\n")
            console.flush()


def _open_log(path: Path) -> TextIO:
    """The job's log, truncated, never through a symlink planted at its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o666)
    return os.fdopen(fd, "w", encoding="utf-8", errors="replace")


# ---------------------------------------------------------------------------- where things are
def where_lines(out: str | os.PathLike, tracking_uri: str | None,
                configfiles: Sequence[str] = ()) -> list[str]:
    """Where a finished study's outputs are, and the two commands that open them: the HTML
    report (same config flags as the run) and the MLflow UI on the study's store."""
    out = Path(out)
    cfg = "".join(f" --configfile {shlex.quote(c)}" for c in configfiles)
    lines = [
        f"figures:  {out / 'figures'}/",
        f"summary:  {out / 'summary.md'} (and summary.csv; tidy table {out / 'rounds.csv'})",
        f"report:   snakemake{cfg} --report report.html",
    ]
    if tracking_uri:
        lines.append(f"MLflow:   mlflow ui --backend-store-uri {shlex.quote(tracking_uri)}"
                     if tracking_uri.startswith("sqlite:") else f"MLflow:   {tracking_uri}")
    return lines


# ---------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m asknlearn.console",
        description="tee an AL job's output to its log, its round lines to the console")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tee", help="copy stdin to LOG; print each round line compactly on stderr")
    p.add_argument("log", type=Path)
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole job; the cell writes its last lines while it stops, so read on
    # until it closes the pipe (a tee that died first would cost the log its tail)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        log = _open_log(args.log)
    except OSError as exc:
        print(f"asknlearn: error: cannot write the log {str(args.log)!r} ({exc.strerror}); "
              "valid: a writable path that is not a symlink", file=sys.stderr)
        for _ in sys.stdin:  # drain, so the job's own exit status decides
            pass
        return 2
    with log:
        tee(sys.stdin, log, sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
