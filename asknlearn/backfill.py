"""``asknlearn backfill``: copy cell tables into MLflow after a tracking outage.

The per-cell tables (``rounds.csv`` and the resolved ``config.yaml``) are the source of truth;
MLflow is a view of them. When the tracking store was down during (part of) a run, this command
brings the store up to date: it creates the runs of cells the store lacks, completes the metric
points missing from partial runs, and marks runs of finished cells FINISHED. It never creates a
second run for a cell (runs are found by their ``asknlearn.cell`` tag) nor a second point for a
(metric, step), so running it twice changes nothing the second time.

    asknlearn backfill results/quickstart/runs --tracking-uri sqlite:///$PWD/results/mlflow.db
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asknlearn.cli import command
from asknlearn.errors import AskNLearnError, ConfigError
from asknlearn.records import CONFIG_FILE, ROUNDS_FILE

_REQUIRED = ("study", "dataset", "strategy", "seed", "noise", "budget", "query_size")


@dataclass
class CellOutcome:
    """What backfilling one cell did to the store."""

    cell: str
    run_id: str
    created: bool
    points: int
    finished_now: bool

    def describe(self) -> str:
        what = []
        if self.created:
            what.append("run created")
        if self.points:
            what.append(f"{self.points} metric points logged")
        if self.finished_now:
            what.append("marked FINISHED")
        return f"{self.cell}: {', '.join(what) or 'up to date'} (run {self.run_id})"


def find_cells(paths: list[str]) -> list[Path]:
    """Cell folders (holding rounds.csv and config.yaml) at or below each of ``paths``."""
    cells: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise ConfigError(f"run folder {raw!r} does not exist; valid: a cell folder holding "
                              f"{ROUNDS_FILE} and {CONFIG_FILE}, or a folder above such cells")
        found = [p] if (p / ROUNDS_FILE).is_file() else sorted(
            f.parent for f in p.rglob(ROUNDS_FILE) if (f.parent / CONFIG_FILE).is_file())
        found = [c for c in found if (c / CONFIG_FILE).is_file()]
        if not found:
            raise ConfigError(f"run folder {raw!r} holds no cell ({ROUNDS_FILE} next to {CONFIG_FILE}); "
                              "valid: a cell folder written by `asknlearn run`, or a folder above such cells")
        cells += [c for c in found if c not in cells]
    return cells


def read_cell(cell_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The resolved config and the per-round rows of one cell folder."""
    import pandas as pd
    import yaml

    try:
        cfg = yaml.safe_load((cell_dir / CONFIG_FILE).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{str(cell_dir / CONFIG_FILE)!r} is not valid YAML: {exc}") from None
    missing = [k for k in _REQUIRED if not isinstance(cfg, dict) or k not in cfg]
    if missing:
        raise ConfigError(f"{str(cell_dir / CONFIG_FILE)!r} lacks {', '.join(missing)}; "
                          "valid: the config.yaml that `asknlearn run` writes")
    try:
        table = pd.read_csv(cell_dir / ROUNDS_FILE)
    except pd.errors.EmptyDataError:
        table = pd.DataFrame()
    if len(table) and not {"round", "labels"} <= set(table.columns):
        raise ConfigError(f"{str(cell_dir / ROUNDS_FILE)!r} has no round/labels columns; "
                          "valid: the rounds.csv that `asknlearn run` writes")
    return cfg, table.to_dict("records")


def backfill_cell(client, cell_dir: Path, experiment: str | None = None) -> CellOutcome:
    """Bring the MLflow run of the cell in ``cell_dir`` up to date with its tables."""
    from asknlearn.tracking import (
        cell_id,
        ensure_run,
        experiment_id,
        log_metrics,
        missing_metrics,
        retry,
        row_metrics,
    )

    cfg, rows = read_cell(cell_dir)
    exp_id = experiment_id(client, experiment or cfg.get("experiment") or cfg["study"])
    run, created = ensure_run(client, exp_id, cfg)
    run_id = run.info.run_id
    points = row_metrics(rows)
    todo = points if created else missing_metrics(client, run_id, points)
    log_metrics(client, run_id, todo)
    rounds = int(cfg["budget"]) // int(cfg["query_size"])
    finished = any(int(r["round"]) == rounds for r in rows)
    finished_now = False
    if finished and (created or run.info.status != "FINISHED"):
        stamps = [r.get("timestamp_ms") for r in rows]
        end = max((int(t) for t in stamps if t is not None and not math.isnan(float(t))), default=None)
        retry(lambda: client.set_terminated(run_id, "FINISHED", end_time=end))
        finished_now = True
    return CellOutcome(cell_id(cfg), run_id, created, len(todo), finished_now)


def _backfill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="cell folders (rounds.csv + config.yaml) or folders above them")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment (default: each cell's own, i.e. its study)")


def _backfill(args: argparse.Namespace) -> int:
    from asknlearn.tracking import TrackingError, client_for, tracking_uri

    uri = tracking_uri(args.tracking_uri)
    if uri is None:
        raise ConfigError("no tracking URI; valid: --tracking-uri URI or $MLFLOW_TRACKING_URI")
    cells = find_cells(args.run_dirs)
    for c in cells:  # every table is read before the store is touched: bad input writes nothing
        read_cell(c)
    created = points = finished = 0
    try:
        client = client_for(uri)
        for c in cells:
            out = backfill_cell(client, c, args.experiment)
            print(out.describe(), flush=True)
            created += out.created
            points += out.points
            finished += out.finished_now
    except AskNLearnError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0][:300] if str(exc) else ""
        raise TrackingError(f"tracking store {uri!r} failed ({type(exc).__name__}: {first}); "
                            "nothing is lost: rerun the same command when it is back") from exc
    print(f"backfilled {len(cells)} cells into {uri}: {created} runs created, "
          f"{points} metric points logged, {finished} runs marked FINISHED")
    return 0


_backfill.add_args = _backfill_args  # type: ignore[attr-defined]
command("backfill", "copy cell tables into MLflow (after an outage) without duplicating runs")(_backfill)
