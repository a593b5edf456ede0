"""Command line: ``asknlearn run|strategies|...`` (also ``python -m asknlearn``).

Every config key is a ``--flag`` of ``run`` (``--query-size 1000`` sets ``query_size``);
``--config file.yaml`` supplies a base. Bad input exits with status 2 and one message naming
the bad value and the valid ones, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields

from asknlearn.errors import AskNLearnError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help_: str):
    """Register ``fn(args)`` as subcommand ``name``; ``fn.add_args(parser)`` adds its flags."""

    def deco(fn):
        COMMANDS[name] = (help_, getattr(fn, "add_args", lambda p: None), fn)
        return fn

    return deco


# ---------------------------------------------------------------------------- run
def _add_run_args(p: argparse.ArgumentParser) -> None:
    from asknlearn.config import add_config_arguments

    p.add_argument("--config", action="append", default=[],
                   help="YAML file(s) of config keys (later files and flags override)")
    p.add_argument("--out", required=True, help="output folder of this cell")
    p.add_argument("--quiet", action="store_true", help="no per-round lines")
    add_config_arguments(p)


def _run(args: argparse.Namespace) -> int:
    from asknlearn.config import from_mapping, load_yaml, tracking_warning
    from asknlearn.loop import run_cell

    values: dict = {}
    for path in args.config:
        values.update(load_yaml(path))
    from asknlearn.config import ExperimentConfig

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


_run.add_args = _add_run_args  # type: ignore[attr-defined]
command("run", "run (or resume) one active-learning cell")(_run)


# ---------------------------------------------------------------------------- strategies
def _strategies(args: argparse.Namespace) -> int:
    from asknlearn.config import custom_strategies
    from asknlearn.strategies import describe

    print("\n".join(describe(custom_strategies(args.configfile) if args.configfile else None)))
    return 0


_strategies.add_args = lambda p: p.add_argument(  # type: ignore[attr-defined]
    "--configfile", help="also list the strategies a run config (strategies:) or a workflow "
                         "config (experiment.strategies, overrides.*.strategies) defines")
command("strategies", "list the registered strategies and what they are made of")(_strategies)


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
    from pathlib import Path

    from asknlearn.loop import atomic_write
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
        atomic_write(Path(args.out), lambda p: Path(p).write_text(text))
    return 0


_init_store.add_args = _init_store_args  # type: ignore[attr-defined]
command("init-store", "create the MLflow store and experiment once, before parallel jobs")(_init_store)


def build_parser() -> argparse.ArgumentParser:
    from asknlearn import __version__

    parser = argparse.ArgumentParser(
        prog="asknlearn", description="Ask-n-Learn deep active learning benchmark")
    parser.add_argument("--version", action="version", version=f"asknlearn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # optional command modules register themselves on import
    for mod in ("asknlearn.report", "asknlearn.backfill", "asknlearn.estimate"):
        try:
            __import__(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][2](args)
    except AskNLearnError as exc:
        print(f"asknlearn: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("asknlearn: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
