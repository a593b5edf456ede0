"""The README's quickstart figure and the numbers it shows, made from a quickstart run
(``snakemake readme_assets``), so the figure cannot drift from what the quickstart produces.

Three files move together: ``docs/img/quickstart.png`` (a copy of the study's
``figures/digits_noise0.png``), ``tests/data/quickstart_rounds.csv`` (the metrics of every
cell and round of that run: accuracy, ECE, NLL, Brier) and ``tests/data/quickstart_figure.sha256``
(the figure's checksum). The README test compares a fresh quickstart's metrics with the CSV,
and a fast test the figure with its checksum: changed numbers without a regenerated figure
fail one of them.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

KEYS = ["dataset", "strategy", "seed", "noise", "round", "labels"]
METRICS = ["accuracy", "ece", "nll", "brier"]
FIGURE = Path("docs/img/quickstart.png")
METRICS_CSV = Path("tests/data/quickstart_rounds.csv")
CHECKSUM = Path("tests/data/quickstart_figure.sha256")


def metrics_table(rounds: str | os.PathLike) -> pd.DataFrame:
    """The metrics of a study's tidy ``rounds.csv``, one row per cell and round, in a fixed
    order (the aggregate's row order is not part of its contract)."""
    table = pd.read_csv(rounds)
    missing = [c for c in KEYS + METRICS if c not in table.columns]
    if missing:
        raise ValueError(f"{rounds}: no column(s) {', '.join(missing)}; valid: a study's "
                         "tidy rounds.csv (asknlearn aggregate)")
    return table[KEYS + METRICS].sort_values(KEYS, kind="stable").reset_index(drop=True)


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _replace(src_write, dst: Path) -> None:
    """Write through a temp file beside ``dst`` and rename: atomic, and a symlink planted at
    ``dst`` is replaced, never written through."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    try:
        src_write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_assets(study: str | os.PathLike, repo: str | os.PathLike = ".") -> list[Path]:
    """Copy the quickstart study's figure into the README's place and record its metrics and
    checksum beside the tests; returns the three files written."""
    study, repo = Path(study), Path(repo)
    png = study / "figures" / "digits_noise0.png"
    if not png.is_file():
        raise FileNotFoundError(f"no figure {str(png)!r}; valid: a finished quickstart study "
                                "folder (run `snakemake --cores 2` first)")
    table = metrics_table(study / "rounds.csv")
    _replace(lambda tmp: shutil.copyfile(png, tmp), repo / FIGURE)
    _replace(lambda tmp: table.to_csv(tmp, index=False, float_format="%.10g"), repo / METRICS_CSV)
    _replace(lambda tmp: Path(tmp).write_text(f"{sha256(png)}  {FIGURE}\n"), repo / CHECKSUM)
    return [repo / FIGURE, repo / METRICS_CSV, repo / CHECKSUM]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asknlearn.readme_assets",
                                description="copy a quickstart study's figure and metrics to "
                                            "the README figure and the README test's data")
    p.add_argument("study", help="the quickstart's study folder, e.g. results/quickstart")
    p.add_argument("--repo", default=".", help="repository root (default: .)")
    args = p.parse_args(argv)
    try:
        for path in write_assets(args.study, args.repo):
            print(f"wrote {path}")
    except (OSError, ValueError) as exc:
        print(f"asknlearn: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
