"""Command line: ``asknlearn run|strategies|...`` (also ``python -m asknlearn``).

Every config key is a ``--flag`` of ``run`` (``--query-size 1000`` sets ``query_size``);
``--config file.yaml`` supplies a base. Bad input exits with status 2 and one message naming
the bad value and the valid ones, before anything is written.

This module owns every command: each is a ``_name_args(parser)`` function that declares its
flags and a ``_name(args) -> int`` function that runs it, listed once in :data:`COMMANDS` at
the bottom. The commands call library functions (results, plots, backfill, ...); those
modules never import this one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from asknlearn import plots, results
from asknlearn.backfill import (
    STUDY_TABLES,
    backfill_cell,
    find_cells,
    is_study_dir,
    log_study,
    read_cell,
)
from asknlearn.errors import AskNLearnError, ConfigError


# ---------------------------------------------------------------------------- run
def _run_args(p: argparse.ArgumentParser) -> None:
    from asknlearn.config import add_config_arguments

    p.add_argument("--config", action="append", default=[],
                   help="YAML file(s) of config keys (later files and flags override)")
    p.add_argument("--out", required=True, help="output folder of this cell")
    p.add_argument("--quiet", action="store_true", help="no per-round lines")
    add_config_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from asknlearn.config import ExperimentConfig, from_mapping, load_yaml, tracking_warning
    from asknlearn.loop import run_cell

    values: dict = {}
    for path in args.config:
        values.update(load_yaml(path))
    for f in fields(ExperimentConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    cfg = from_mapping(values)
    if not args.quiet and (chosen := cfg.chosen_defaults()):
        print(f"defaults for dataset {cfg.dataset!r}: "
              + " ".join(f"{k}={v}" for k, v in chosen.items()), flush=True)
    if warning := tracking_warning(cfg, "tracking" in values):
        print(f"asknlearn: {warning}", file=sys.stderr, flush=True)
    run_cell(cfg, args.out, log=(lambda s: None) if args.quiet else None)
    return 0


# ---------------------------------------------------------------------------- strategies
def _strategies_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", help="also list the strategies a run config (strategies:) or a "
                                        "workflow config (experiment.strategies, "
                                        "overrides.*.strategies) defines")


def _strategies(args: argparse.Namespace) -> int:
    from asknlearn.config import custom_strategies
    from asknlearn.strategies import describe

    print("\n".join(describe(custom_strategies(args.configfile) if args.configfile else None)))
    return 0


# ---------------------------------------------------------------------------- init-store
def _init_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", required=True, help="MLflow tracking URI (sqlite:///ABS/PATH.db, http://...)")
    p.add_argument("--experiment", required=True, help="MLflow experiment name (the study)")
    p.add_argument("--study", help="study of the parent run the cells nest under (default: the experiment)")
    p.add_argument("--out", help="file to write the experiment and parent run ids to (a workflow flag file)")
    p.add_argument("--if-down", choices=("fail", "warn"), default="fail",
                   help="when the store cannot be reached: fail (exit 1), or warn once, write "
                        "--out anyway and exit 0 so the cells run untracked (the workflow's "
                        "choice; `asknlearn backfill` fills the store in later)")


def _init_store(args: argparse.Namespace) -> int:
    from asknlearn.tracking import TrackingError, init_store

    try:
        exp_id, parent = init_store(args.tracking_uri, args.experiment, args.study)
    except TrackingError as exc:
        if args.if_down != "warn":
            raise
        print(f"asknlearn: warning: {exc}. The cells run untracked (their tables are the source "
              f"of truth); fill the store in later with: asknlearn backfill results/"
              f"{args.study or args.experiment} --tracking-uri {args.tracking_uri}",
              file=sys.stderr, flush=True)
        text = "untracked\n"
    else:
        print(f"MLflow store {args.tracking_uri} ready: experiment {args.experiment!r} id {exp_id}, "
              f"study run {parent}")
        text = f"{exp_id}\n{parent}\n"
    if args.out:
        results.write_text(text, args.out)
    return 0


# ---------------------------------------------------------------------------- backfill, log-study
def _backfill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="cell folders (rounds.csv + config.yaml) or folders above them; a "
                        "study folder (results/<study>) also gets its tables and figures logged "
                        "to the study's parent run")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default=None,
                   help="MLflow experiment (default: each cell's own, i.e. its study)")


def _store_errors(uri: str):
    """Turn any failure of the store into the package's one-line TrackingError."""
    from contextlib import contextmanager

    from asknlearn.tracking import store_error

    @contextmanager
    def guard():
        try:
            yield
        except AskNLearnError:
            raise
        except Exception as exc:
            raise store_error(uri, exc) from exc

    return guard()


def _backfill(args: argparse.Namespace) -> int:
    from asknlearn.tracking import client_for, tracking_uri

    uri = tracking_uri(args.tracking_uri)
    if uri is None:
        raise ConfigError("no tracking URI; valid: --tracking-uri URI or $MLFLOW_TRACKING_URI")
    cells = find_cells(args.run_dirs)
    studies = [Path(p) for p in args.run_dirs if is_study_dir(Path(p))]
    for c in cells:  # every table is read before the store is touched: bad input writes nothing
        read_cell(c)
    created = points = finished = artifacts = 0
    parents: dict[tuple[str, str], str] = {}
    with _store_errors(uri):
        client = client_for(uri)
        for c in cells:
            out = backfill_cell(client, c, args.experiment, parents)
            print(out.describe(), flush=True)
            created += out.created
            points += out.points
            finished += out.finished_now
            artifacts += out.artifacts
        for d in studies:
            print(log_study(client, d, args.experiment).describe(), flush=True)
    print(f"backfilled {len(cells)} cells into {uri}: {created} runs created, "
          f"{points} metric points logged, {finished} runs marked FINISHED, "
          f"{artifacts} artifacts logged")
    return 0


def _log_study_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_dir", metavar="STUDY_DIR", help="the study folder, results/<study>")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: the study)")
    p.add_argument("--study", default=None,
                   help="study name (default: its cells' study, else the folder's name)")
    p.add_argument("--if-down", choices=("fail", "warn"), default="fail",
                   help="when the store cannot be reached: fail (exit 1), or warn and exit 0 "
                        "(the workflow's choice: `asknlearn backfill STUDY_DIR` catches up later)")
    p.add_argument("--out", help="flag file written on success, or with the warning (workflow)")


def _log_study(args: argparse.Namespace) -> int:
    from asknlearn.tracking import TrackingError, client_for, tracking_uri

    uri = tracking_uri(args.tracking_uri)
    if uri is None:
        raise ConfigError("no tracking URI; valid: --tracking-uri URI or $MLFLOW_TRACKING_URI")
    study_dir = Path(args.study_dir)
    if not is_study_dir(study_dir):
        raise ConfigError(f"{args.study_dir!r} is not a study folder; valid: results/<study>, "
                          f"holding {', '.join(STUDY_TABLES)} or figures/")
    try:
        with _store_errors(uri):
            out = log_study(client_for(uri), study_dir, args.experiment, args.study)
    except TrackingError as exc:
        if args.if_down != "warn":
            raise
        print(f"asknlearn: warning: {exc}. The study's tables and figures are not in MLflow "
              f"yet; log them later with: asknlearn backfill {args.study_dir} --tracking-uri {uri}",
              file=sys.stderr, flush=True)
        text = "untracked\n"
    else:
        print(out.describe(), flush=True)
        text = f"{out.run_id}\n"
    if args.out:
        results.write_text(text, args.out)
    return 0


# ---------------------------------------------------------------------------- aggregate
def _aggregate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("rounds", nargs="+", help="each cell's rounds.csv")
    p.add_argument("--out", required=True, help="the study's tidy rounds.csv")
    p.add_argument("--reliability-out", help="also gather each cell's reliability.csv into this table")


def _aggregate(args: argparse.Namespace) -> int:
    df = results.aggregate(args.rounds)
    rel = results.gather_reliability(args.rounds) if args.reliability_out else None
    results.write_csv(df, args.out)
    if rel is not None:
        results.write_csv(rel, args.reliability_out)
    n_cells = len(df.groupby(results.CELL_KEYS))
    print(f"{args.out}: {len(df)} rounds of {n_cells} cells"
          + (f"; {args.reliability_out}: {len(rel)} bins" if rel is not None else ""))
    return 0


# ---------------------------------------------------------------------------- plot
def _number(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None


def _plot_args(p: argparse.ArgumentParser) -> None:
    d = plots.PlotConfig()
    p.add_argument("kind", choices=["curves", "noise", "reliability"],
                   help="curves: the 4 metric panels at one noise level; noise: one row of panels "
                        "per noise level; reliability: final-round reliability diagrams")
    p.add_argument("--rounds", help="the study's tidy rounds.csv (curves, noise)")
    p.add_argument("--reliability", help="the study's reliability.csv (reliability)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--noise", type=_number, default=None,
                   help="oracle noise level (curves, reliability; default: the dataset's only one)")
    p.add_argument("--out", action="append", required=True,
                   help=f"figure file(s); the suffix picks the format ({', '.join(plots.FORMATS)})")
    look = p.add_argument_group("figure look (the workflow's plot: block)")
    look.add_argument("--width", type=_number, default=d.width,
                      help=f"figure width in inches: ~7 two-column page, ~3.4 one column (default {d.width})")
    look.add_argument("--row-height", type=_number, default=d.row_height,
                      help=f"height of one row of panels in inches (default {d.row_height})")
    look.add_argument("--font-scale", type=_number, default=d.font_scale,
                      help=f"fonts are 8 pt times this (default {d.font_scale})")
    look.add_argument("--strategies", default="",
                      help="comma-separated strategies to draw, in this order (default: all)")
    look.add_argument("--display-name", action="append", default=[], metavar="STRATEGY=NAME",
                      help="legend name of a strategy (repeatable)")
    look.add_argument("--accuracy-unit", choices=plots.ACCURACY_UNITS, default=d.accuracy_unit,
                      help=f"unit of the accuracy and ECE axes (default {d.accuracy_unit})")
    look.add_argument("--dpi", type=int, default=d.dpi, help=f"PNG resolution (default {d.dpi})")
    look.add_argument("--no-title", action="store_true", help="no figure title (captions say it)")


def _plot_config(args: argparse.Namespace) -> plots.PlotConfig:
    names = {}
    for item in args.display_name:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ConfigError(f"--display-name {item!r} is not valid; valid: STRATEGY=NAME, "
                              "e.g. ask-n-learn-vwcc=Ask-n-Learn")
        names[key] = value
    return plots.PlotConfig(width=args.width, row_height=args.row_height, font_scale=args.font_scale,
                            strategies=tuple(s for s in args.strategies.split(",") if s),
                            names=names, accuracy_unit=args.accuracy_unit, dpi=args.dpi,
                            title=not args.no_title)


def _only_noise(df, dataset: str, kind: str) -> float:
    """The noise level to draw when --noise is left out: the dataset's only one."""
    levels = results.noise_levels(df, dataset)
    if not levels:
        results.select(df, dataset, None)  # raises, naming the datasets the table has
    if len(levels) > 1:
        raise results.ReportError(f"plot {kind} needs --noise R: dataset {dataset!r} has several "
                                  f"noise levels; valid: {', '.join(f'{n:g}' for n in levels)}")
    return levels[0]


def _plot(args: argparse.Namespace) -> int:
    for out in args.out:  # fail before drawing anything
        if Path(out).suffix.lstrip(".").lower() not in plots.FORMATS:
            raise results.ReportError(f"figure path {out!r} has an unknown format; "
                                      f"valid suffixes: {', '.join(plots.FORMATS)}")
    cfg = _plot_config(args)
    if args.kind == "reliability":
        if not args.reliability:
            raise results.ReportError("plot reliability needs --reliability TABLE")
        rel = results.read_reliability(args.reliability)
        noise = args.noise if args.noise is not None else _only_noise(rel, args.dataset, args.kind)
        plots.plot_reliability(rel, args.dataset, noise, args.out, cfg)
    else:
        if not args.rounds:
            raise results.ReportError(f"plot {args.kind} needs --rounds TABLE")
        df = results.read_rounds(args.rounds)
        noise = args.noise
        if args.kind == "curves" and noise is None:
            noise = _only_noise(df, args.dataset, args.kind)
        plots.plot_curves(df, args.dataset, args.out, noise=noise, by_noise=args.kind == "noise", cfg=cfg)
    print(f"wrote {', '.join(args.out)}")
    return 0


# ---------------------------------------------------------------------------- summarize
def _summarize_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", required=True, help="the study's tidy rounds.csv")
    p.add_argument("--target-accuracy", type=float, required=True,
                   help="accuracy whose first crossing gives 'labels to target'")
    p.add_argument("--references", default="badge,random",
                   help="comma-separated strategies to pair every other one against ('' for none)")
    p.add_argument("--out", required=True, help="summary CSV")
    p.add_argument("--markdown", help="summary as Markdown tables")
    p.add_argument("--at-labels", default="",
                   help="comma-separated label counts for an extra Markdown table of every metric "
                        "there, with paired differences to the first reference")


def _summarize(args: argparse.Namespace) -> int:
    refs = [r for r in args.references.split(",") if r]
    df = results.read_rounds(args.rounds)
    s = results.summarize(df, args.target_accuracy, refs)
    md = results.summary_markdown(s, args.target_accuracy, refs) if args.markdown else None
    if md is not None and args.at_labels:
        try:
            at = [int(x) for x in args.at_labels.split(",") if x]
        except ValueError:
            raise results.ReportError(f"--at-labels {args.at_labels!r} is not valid; valid: integers "
                                      "separated by commas, e.g. 1100,2100") from None
        md += "\n" + results.at_labels_markdown(df, at, refs[0] if refs else "badge")
    results.write_csv(s, args.out)
    if md is not None:
        results.write_text(md, args.markdown)
    print(f"{args.out}: {len(s)} strategy rows")
    return 0


# ---------------------------------------------------------------------------- estimate
def _estimate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--configfile", nargs="+", action="extend", required=True, metavar="CONFIG",
                   help="study config(s), each merged over config/config.yaml as the workflow does; "
                        "several give one row each and a total")
    p.add_argument("--gpus", default="1", help="devices the cells share (wall time); default 1")
    p.add_argument("--device", default="auto", help="device to measure on: auto, cpu, cuda, cuda:N")
    p.add_argument("--epochs-per-round", default=None,
                   help="the assumption E (default: resources.al.estimate_epochs, else "
                        "asknlearn.estimate.EPOCHS_PER_ROUND_DEFAULT)")
    p.add_argument("--steps", default="5", help="timed training steps per model (default 5)")
    p.add_argument("--json", default=None, help="also write the estimate to this JSON file")


def _estimate(args: argparse.Namespace) -> int:
    from asknlearn import estimate  # imports torch: only when the command runs

    return estimate.main(args)


def _tune_args(ap: argparse.ArgumentParser) -> None:
    """The flags of ``asknlearn tune``."""
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--labels", type=int, nargs="+", default=[1100, 3100])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--merge", nargs="+", default=None,
                    help="summarize the CSVs of these earlier --out folders instead of running")


def _tune(args: argparse.Namespace) -> int:
    from asknlearn import tune  # imports torch: only when the command runs

    return tune.run(args)


def _ablation_args(ap: argparse.ArgumentParser) -> None:
    """The flags of ``asknlearn ablation``."""
    ap.add_argument("study", type=Path)
    ap.add_argument("--labels", type=int, nargs="+", default=[1100, 2100, 5100])
    ap.add_argument("--aulc-to", type=int, nargs="+", default=[2100, 5100, 10100],
                    help="upper label counts of the AULC ranges")
    ap.add_argument("--val-size", type=int, default=1000, help="the cells' val_size")
    ap.add_argument("--strategies", default=None,
                    help="comma-separated strategies to report (default: asknlearn.ablation.ORDER, "
                         "the ablation's and Fig. 3's)")
    ap.add_argument("--no-diagnostics", action="store_true",
                    help="only the metric tables (e.g. for Fig. 3's strategies)")
    ap.add_argument("--figure", type=Path, nargs="+", default=[],
                    help="write the diagnostics figure to these paths (.png, .pdf)")


def _ablation(args: argparse.Namespace) -> int:
    from asknlearn import ablation

    return ablation.run(args)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--schema", nargs="?", const="", default=None, metavar="PATH",
                   help="rewrite the experiment part of the workflow schema from the config "
                        "declarations (default: workflow/schemas/config.schema.yaml)")


def _config(args: argparse.Namespace) -> int:
    from asknlearn.config import write_schema

    if args.schema is None:
        raise ConfigError("asknlearn config: nothing to do; valid: --schema [PATH]")
    write_schema(args.schema or None)
    return 0


# ---------------------------------------------------------------------------- the table
def _no_args(p: argparse.ArgumentParser) -> None:
    """A command without flags."""


@dataclass(frozen=True)
class Command:
    """One subcommand: its one-line help, the function that runs it, the one adding its flags."""

    help: str
    run: Callable[[argparse.Namespace], int]
    add_args: Callable[[argparse.ArgumentParser], None] = _no_args


COMMANDS: dict[str, Command] = {
    "run": Command("run (or resume) one active-learning cell", _run, _run_args),
    "strategies": Command("list the registered strategies and what they are made of",
                          _strategies, _strategies_args),
    "init-store": Command("create the MLflow store and experiment once, before parallel jobs",
                          _init_store, _init_store_args),
    "backfill": Command("copy cell tables into MLflow (after an outage) without duplicating runs",
                        _backfill, _backfill_args),
    "log-study": Command("log a study's tables, summary and figures to its MLflow parent run",
                         _log_study, _log_study_args),
    "aggregate": Command("gather cell rounds.csv files into a study's tidy table",
                         _aggregate, _aggregate_args),
    "plot": Command("draw a study's learning-curve, noisy-oracle or reliability figure",
                    _plot, _plot_args),
    "summarize": Command("per-strategy summary table: AULC, labels to target, final metrics, "
                         "paired deltas", _summarize, _summarize_args),
    "estimate": Command("print each study's expected GPU-hours (or CPU hours) and wall time",
                        _estimate, _estimate_args),
    "ablation": Command("the mechanisms' ablation tables (and figure) of a study's cells",
                        _ablation, _ablation_args),
    "tune": Command("the validation-split study of dropout, tau and k (docs/hyperparameters.md)",
                    _tune, _tune_args),
    "config": Command("regenerate the workflow schema's experiment keys (--schema)",
                      _config, _config_args),
}


def build_parser() -> argparse.ArgumentParser:
    from asknlearn import __version__

    parser = argparse.ArgumentParser(
        prog="asknlearn", description="Ask-n-Learn deep active learning benchmark")
    parser.add_argument("--version", action="version", version=f"asknlearn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        cmd.add_args(sub.add_parser(name, help=cmd.help, description=cmd.help))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args)
    except AskNLearnError as exc:
        print(f"asknlearn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("asknlearn: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
