"""Config validation, the cell grid, wildcard constraints and input functions."""

import re
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# the package is imported from this repository (conda envs cannot pip-install a relative path)
PKG_ROOT = str(Path(workflow.basedir).resolve())
sys.path.insert(0, PKG_ROOT)

from asknlearn.config import (WORKFLOW_KEYS, check_workflow_keys, coerce_mapping, flag_value,
                              from_mapping, string_keys)
from asknlearn.errors import AskNLearnError

SCHEMA_PATH = Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml")


def _typed(value, schema: dict):
    """``value`` with the strings that Snakemake's ``--config key=value`` leaves in place of
    numbers and booleans (``seeds=[0,1]`` arrives as ['0', '1']) read as YAML where the schema
    wants a number or a boolean, so command-line overrides validate like the same YAML."""
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if isinstance(value, str) and {"integer", "number", "boolean"} & set(kinds):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            return value
    if isinstance(value, list) and "items" in schema:
        return [_typed(v, schema["items"]) for v in value]
    if isinstance(value, dict) and "properties" in schema:
        return {k: _typed(v, schema["properties"].get(k, {})) for k, v in value.items()}
    return value


def _experiment_mappings() -> list[tuple[str, str | None]]:
    """Where ExperimentConfig keys live: (``experiment``, None), (``overrides``, dataset)..."""
    over = config.get("overrides") or {}
    return [("experiment", None), *(("overrides", d) for d in (over if isinstance(over, dict) else {}))]


def _coerce_config() -> None:
    """One coercion before anything checks or uses the config: the package converts every
    ExperimentConfig value (``budget: 40.0`` becomes 40, a list where a number belongs is
    refused with its one-line message), and these converted values are both what the
    pre-flight check resolves and what the jobs get as flags."""
    try:
        string_keys(config, "config")
        schema = yaml.safe_load(SCHEMA_PATH.read_text())
        check_workflow_keys(config, schema)
        for k, v in list(config.items()):
            config[k] = _typed(v, schema["properties"].get(k, {}))
        for top, ds in _experiment_mappings():
            where = top if ds is None else f"{top}.{ds}"
            mapping = config.get(top, {}) if ds is None else config[top][ds]
            if not isinstance(mapping, dict):
                continue  # the schema names the problem
            bad = sorted(set(mapping) & WORKFLOW_KEYS)
            if bad:
                raise WorkflowError(
                    f"config {where}: {', '.join(bad)} are set by the workflow; use the "
                    "top-level datasets/strategies/seeds/noise/study/device/data_root/"
                    "tracking_uri keys instead")
            values = coerce_mapping(mapping, f"config {where}")
            if ds is None:
                config[top] = values
            else:
                config[top][ds] = values
    except AskNLearnError as exc:
        raise WorkflowError(f"config: {exc}") from None


_coerce_config()
validate(config, "../schemas/config.schema.yaml")

STUDY = config["study"]
OUT = f"results/{STUDY}"
DATASETS = config["datasets"]
STRATEGIES = config["strategies"]
SEEDS = config["seeds"]

def _noise_tokens() -> list[str]:
    """The noise levels' path form: exact and shortest (0, 0.1, 0.123456789), never rounded,
    so each level is its own cell and the flag a job gets is the configured rate."""
    from asknlearn.errors import AskNLearnError
    from asknlearn.naming import noise_tokens

    try:
        return noise_tokens(config["noise"])
    except AskNLearnError as exc:
        raise WorkflowError(f"config noise: {exc}") from None


NOISES = _noise_tokens()
AL = config["resources"]["al"]
REPORT_RES = config["resources"]["report"]
def tracking_uri() -> str | None:
    """The configured MLflow URI, or an absolute SQLite URI under results/<study>/."""
    if not config["tracking"]:
        return None
    return config["tracking_uri"] or f"sqlite:///{Path(OUT, 'mlflow.db').resolve()}"


def experiment_values(dataset: str) -> dict:
    """ExperimentConfig keys shared by every cell of ``dataset`` (experiment + overrides)."""
    return {**config["experiment"], **config["overrides"].get(dataset, {})}


def _check_experiment() -> None:
    """Build and resolve every cell's config with the package before any job runs, so a
    misspelled key or a bad value stops the workflow with the package's own message."""
    for ds in DATASETS:
        for strat in STRATEGIES:
            cell = {
                **experiment_values(ds),
                "dataset": ds,
                "strategy": strat,
                "seed": SEEDS[0],
                "noise": max(config["noise"]),
                "study": STUDY,
            }
            try:
                from_mapping(cell).resolve()
            except AskNLearnError as exc:
                raise WorkflowError(
                    f"config for dataset {ds!r}, strategy {strat!r}: {exc}"
                ) from None


_check_experiment()


def cell_flags(wildcards) -> str:
    """``asknlearn run`` flags of the experiment keys for this cell's dataset, spelled so the
    job reads back exactly the values the pre-flight check resolved; of the ``strategies``
    and ``custom_datasets`` definitions only the cell's own, so defining another strategy or
    dataset reruns no cell."""
    values = dict(experiment_values(wildcards.dataset))
    for key, name in (("strategies", wildcards.strategy), ("custom_datasets", wildcards.dataset)):
        own = {k: v for k, v in values.pop(key, {}).items() if k == name}
        if own:
            values[key] = own
    flags = []
    for key, value in sorted(values.items()):
        flags += [f"--{key.replace('_', '-')}", flag_value(value)]
    return shlex.join(flags)


def _runtime_flags() -> str:
    """Flags that do not change what a cell computes: device, data root, tracking store."""
    flags = ["--device", config["device"]]
    if config["data_root"]:
        flags += ["--data-root", config["data_root"]]
    uri = tracking_uri()
    flags += ["--tracking-uri", uri] if uri else ["--tracking", "false"]
    return shlex.join(flags)


def al_resources() -> dict:
    """Resources of an AL job; the SLURM keys only when set, so a profile's defaults apply.

    With cells_per_gpu = k > 1 a job still asks for gpu=1: on a workstation `--resources
    gpu=K` then counts GPU slots (K = GPUs x k) and the launcher puts k jobs on each GPU."""
    if AL["cells_per_gpu"] > 1 and AL["gpu"] != 1:
        raise WorkflowError(
            f"config resources.al: cells_per_gpu={AL['cells_per_gpu']} needs gpu: 1 "
            f"(got gpu: {AL['gpu']}); valid: gpu 1 to share GPUs, or cells_per_gpu 1"
        )
    res = {
        "mem_mb": AL["mem_mb"],
        "runtime": AL["runtime"],
        "gpu": AL["gpu"],
        "cpus_per_task": AL["threads"],
    }
    for key in ("gpu_model", "slurm_partition", "slurm_account"):
        if AL[key]:
            res[key] = AL[key]
    return res


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    strategy="|".join(map(re.escape, STRATEGIES)),
    seed=r"\d+",
    noise="|".join(map(re.escape, NOISES)),


# shell snippets the rules take as params
_PYPATH = f"PYTHONPATH={shlex.quote(PKG_ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}"
ASKNLEARN = f"{_PYPATH} python -m asknlearn"
# the launcher execs the AL command on its own free GPU(s); PYTHONPATH passes through the exec
GPU_SLOT = (
    f"{_PYPATH} python {shlex.quote(str(Path(PKG_ROOT, 'workflow', 'scripts', 'gpu_slot.py')))}"
    f" --cells-per-gpu {AL['cells_per_gpu']}"
)
TRACKING_URI = tracking_uri() or ""
TEE = f"{_PYPATH} python -m asknlearn.console tee"
RUNTIME_FLAGS = _runtime_flags()

# ------------------------------------------------------------------ paths and input functions
CELL = f"{OUT}/runs/{{dataset}}/{{strategy}}/seed{{seed}}/noise{{noise}}"
STORE_FLAG = f"{OUT}/.mlflow-store-ready"


def _report_cells() -> None:
    """One line when the workflow starts, dry runs included (onstart skips those):
    ``<study>: N cells — a finished, b resumable (state saved at round k), c new``, read from
    the cell folders without torch; a folder that cannot be read is counted as unreadable
    and named, never an error. Only the process a user started prints it: the jobs that
    Snakemake runs as subprocesses or on a cluster parse this file again in another exec mode."""
    from snakemake.logging import logger
    from snakemake_interface_executor_plugins.settings import ExecMode

    from asknlearn.cellstatus import summary_line

    if workflow.exec_mode != ExecMode.DEFAULT:
        return
    cells = expand(CELL, dataset=DATASETS, strategy=STRATEGIES, seed=SEEDS, noise=NOISES)
    line, unreadable = summary_line(STUDY, cells)
    logger.info(line)
    for bad in unreadable[:5]:
        logger.warning(bad)
    if len(unreadable) > 5:
        logger.warning(f"... and {len(unreadable) - 5} more unreadable cell folders")


_report_cells()


def _cap_cores() -> None:
    """``--cores`` above the cores present (e.g. the README's ``--cores 8`` on a 2-core
    machine) would run that many single-threaded cells at once, each several times slower:
    cap the local core count at what the machine gives this process, with one warning. Only
    for local runs (an executor with nodes, e.g. SLURM, schedules its own cores) and only in
    the process the user started (jobs parse this file again)."""
    from snakemake.logging import logger
    from snakemake_interface_executor_plugins.settings import ExecMode

    from asknlearn.console import cap_cores, cores_present

    if workflow.exec_mode != ExecMode.DEFAULT or workflow.nodes is not None:
        return
    cores, warning = cap_cores(workflow.global_resources["_cores"].value, cores_present())
    if warning:
        workflow.global_resources["_cores"] = cores
        logger.warning(f"asknlearn: {warning}")


_cap_cores()


def store_flag(wildcards) -> list[str]:
    """The init_store flag, when MLflow tracking is on."""
    return [STORE_FLAG] if tracking_uri() else []


def all_cells(wildcards=None) -> list[str]:
    """Every cell's rounds.csv: dataset × strategy × seed × noise."""
    return expand(
        f"{CELL}/rounds.csv",
        dataset=DATASETS,
        strategy=STRATEGIES,
        seed=SEEDS,
        noise=NOISES,
    )


def noisy_datasets() -> list[str]:
    """Datasets of the noisy-oracle figure: all of them when some noise level is > 0."""
    return DATASETS if any(r > 0 for r in config["noise"]) else []


def final_outputs() -> list[str]:
    """The targets of the default rule: the tidy table, every figure and the summary."""
    figs = expand(
        f"{OUT}/figures/{{dataset}}_noise{{noise}}.{{ext}}",
        dataset=DATASETS,
        noise=NOISES,
        ext=["png", "pdf"],
    )
    figs += expand(
        f"{OUT}/figures/{{dataset}}_noisy_oracle.{{ext}}",
        dataset=noisy_datasets(),
        ext=["png", "pdf"],
    )
    figs += expand(
        f"{OUT}/figures/{{dataset}}_reliability_noise{{noise}}.{{ext}}",
        dataset=DATASETS,
        noise=NOISES,
        ext=["png", "pdf"],
    )
    return [f"{OUT}/rounds.csv", f"{OUT}/summary.csv", f"{OUT}/summary.md", *figs]
