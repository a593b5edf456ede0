"""``asknlearn backfill`` and ``asknlearn log-study``: copy tables and figures into MLflow.

The per-cell tables (``rounds.csv`` and the resolved ``config.yaml``) are the source of truth;
MLflow is a view of them. When the tracking store was down during (part of) a run, ``backfill``
brings the store up to date: it creates the runs of cells the store lacks (nested under their
study's parent run, created if missing), completes the metric points missing from partial runs,
logs the artifacts a run lacks, and marks runs of finished cells FINISHED. It never creates a
second run for a cell (runs are found by their ``asknlearn.cell`` tag) nor a second point for a
(metric, step), so running it twice changes nothing the second time. Given a study folder
(``results/<study>``), it also does what ``log-study`` does.

``log-study`` gives the study's parent run its tidy tables, summary and every figure.

    asknlearn backfill results/quickstart --tracking-uri sqlite:///$PWD/results/quickstart/mlflow.db
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from asknlearn.records import CONFIG_FILE, find_cells, is_finished, read_cell

# find_cells and read_cell are the cell folder's own (records); the CLI takes them from here
__all__ = ["FIGURE_SUFFIXES", "STUDY_TABLES", "CellOutcome", "StudyOutcome", "backfill_cell",
           "find_cells", "is_study_dir", "log_study", "read_cell", "study_files", "study_name"]

# what a study folder's parent run carries: tables at its root, figures under figures/
STUDY_TABLES = ("rounds.csv", "reliability.csv", "summary.csv", "summary.md")
FIGURE_SUFFIXES = (".png", ".pdf")


@dataclass
class CellOutcome:
    """What backfilling one cell did to the store."""

    cell: str
    run_id: str
    created: bool
    points: int
    finished_now: bool
    artifacts: int = 0

    def describe(self) -> str:
        what = []
        if self.created:
            what.append("run created")
        if self.points:
            what.append(f"{self.points} metric points logged")
        if self.artifacts:
            what.append(f"{self.artifacts} artifacts logged")
        if self.finished_now:
            what.append("marked FINISHED")
        return f"{self.cell}: {', '.join(what) or 'up to date'} (run {self.run_id})"


def backfill_cell(client, cell_dir: Path, experiment: str | None = None,
                  parents: dict[tuple[str, str], str] | None = None) -> CellOutcome:
    """Bring the MLflow run of the cell in ``cell_dir`` up to date with its tables: the run,
    its parent (the study's, created if missing; ``parents`` caches them by (experiment id,
    study)), the metric points and the artifacts it lacks, and its FINISHED status."""
    from asknlearn.tracking import (
        cell_artifacts,
        cell_id,
        ensure_run,
        experiment_id,
        log_files,
        log_metrics,
        missing_metrics,
        retry,
        row_metrics,
        study_run,
    )

    cfg, rows = read_cell(cell_dir)
    exp_id = experiment_id(client, experiment or cfg.get("experiment") or cfg["study"])
    parents = {} if parents is None else parents
    key = (exp_id, str(cfg["study"]))
    if key not in parents:
        parents[key] = study_run(client, exp_id, key[1], create=True).info.run_id
    run, created = ensure_run(client, exp_id, cfg, parent=parents[key])
    run_id = run.info.run_id
    points = row_metrics(rows)
    todo = points if created else missing_metrics(client, run_id, points)
    log_metrics(client, run_id, todo)
    artifacts = log_files(client, run_id, cell_artifacts(cell_dir), only_changed=not created)
    finished = is_finished(cfg, (r["round"] for r in rows))
    finished_now = False
    if finished and (created or run.info.status != "FINISHED"):
        stamps = [r.get("timestamp_ms") for r in rows]
        end = max((int(t) for t in stamps if t is not None and not math.isnan(float(t))), default=None)
        retry(lambda: client.set_terminated(run_id, "FINISHED", end_time=end))
        finished_now = True
    return CellOutcome(cell_id(cfg), run_id, created, len(todo), finished_now, artifacts)


# ---------------------------------------------------------------------------- study runs
def is_study_dir(path: Path) -> bool:
    """Whether ``path`` is a study folder (``results/<study>``): study tables or figures, and
    no cell config of its own."""
    return path.is_dir() and not (path / CONFIG_FILE).is_file() and (
        any((path / name).is_file() for name in STUDY_TABLES) or (path / "figures").is_dir())


def study_files(study_dir: Path) -> list[tuple[Path, str | None]]:
    """The artifacts of a study's parent run: the tidy tables and summary at its root, every
    figure (PNG and PDF) under ``figures/``."""
    files: list[tuple[Path, str | None]] = [(study_dir / n, None) for n in STUDY_TABLES]
    figures = study_dir / "figures"
    if figures.is_dir():
        files += [(f, "figures") for f in sorted(figures.iterdir())
                  if f.is_file() and f.suffix in FIGURE_SUFFIXES]
    return [(f, d) for f, d in files if f.is_file()]


def study_name(study_dir: Path) -> str:
    """The study of a study folder: its cells' (from their config.yaml), else the folder's name."""
    import yaml

    for cfg_path in sorted(study_dir.glob(f"runs/**/{CONFIG_FILE}")):
        try:
            cfg = yaml.safe_load(cfg_path.read_text())
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            continue
        if isinstance(cfg, dict) and cfg.get("study"):
            return str(cfg["study"])
    return study_dir.resolve().name


@dataclass
class StudyOutcome:
    """What logging a study folder did to the store."""

    study: str
    run_id: str
    artifacts: int
    finished_now: bool

    def describe(self) -> str:
        what = [f"{self.artifacts} artifacts logged"] if self.artifacts else []
        if self.finished_now:
            what.append("marked FINISHED")
        return f"study {self.study}: {', '.join(what) or 'up to date'} (parent run {self.run_id})"


def log_study(client, study_dir: Path, experiment: str | None = None,
              study: str | None = None) -> StudyOutcome:
    """Give the parent run of the study in ``study_dir`` (created if missing) the study's
    tables and figures it lacks, and end it FINISHED: the study's report is complete."""
    from asknlearn.tracking import experiment_id, log_files, retry, study_run

    study = study or study_name(study_dir)
    exp_id = experiment_id(client, experiment or study)
    run = study_run(client, exp_id, study, create=True)
    artifacts = log_files(client, run.info.run_id, study_files(study_dir), only_changed=True)
    finished_now = run.info.status != "FINISHED"
    if finished_now:
        retry(lambda: client.set_terminated(run.info.run_id, "FINISHED"))
    return StudyOutcome(study, run.info.run_id, artifacts, finished_now)
