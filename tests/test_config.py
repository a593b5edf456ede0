"""The config declared once: its generated views (flags and help, schema, key sets) agree with
the dataclass, its names agree with the factories, and importing it needs no torch."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from asknlearn import catalogue
from asknlearn.config import (
    RUNTIME_KEYS,
    WORKFLOW_KEYS,
    ExperimentConfig,
    add_config_arguments,
    coerce,
    experiment_schema,
    flag_value,
    from_mapping,
)
from asknlearn.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {f.name: f for f in dataclasses.fields(ExperimentConfig)}


def test_config_and_strategies_import_without_torch():
    code = ("import sys, asknlearn.config, asknlearn.strategies, asknlearn.catalogue;"
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]", r.stdout


def test_workflow_schema_experiment_properties_are_the_declared_keys():
    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["experiment"]["properties"]
    assert props == experiment_schema(), "regenerate with: asknlearn config --schema"
    assert set(props) == set(FIELDS) - WORKFLOW_KEYS
    assert props["lr"]["exclusiveMinimum"] == 0 and props["lr"]["maximum"] == 1
    assert props["budget"]["type"] == ["integer", "null"]
    # the schema takes any entry name or "pkg.mod:fn" (a new MODELS entry needs no schema
    # regeneration); the pre-flight resolve of every cell names the valid models
    assert props["model"]["pattern"] == catalogue.MODEL_NAME_PATTERN
    assert re.match(props["model"]["pattern"], "lenet") and re.match(props["model"]["pattern"], "a.b:f")
    assert not re.match(props["model"]["pattern"], "rm -rf /")
    with pytest.raises(ConfigError, match=r"model='lenet' is not valid.*; valid: mlp, resnet18"):
        ExperimentConfig(model="lenet").resolve()
    assert "strategies" in props  # custom strategies are an experiment key of the workflow


def test_key_sets_come_from_the_declarations():
    runtime = {"device", "threads", "data_root", "download", "tracking", "tracking_uri",
               "experiment", "eval_batch_size"}
    workflow = {"dataset", "strategy", "seed", "noise", "study", "device", "threads", "data_root",
                "tracking", "tracking_uri", "experiment"}
    assert set(RUNTIME_KEYS) == runtime
    assert set(WORKFLOW_KEYS) == workflow


def test_help_gives_meaning_valid_values_and_default_of_every_key():
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    actions = {a.dest: a for a in p._actions if a.dest in FIELDS}
    assert set(actions) == set(FIELDS)
    for name, a in actions.items():
        assert "Valid: " in a.help and "Default: " in a.help, (name, a.help)
        assert a.option_strings == [f"--{name.replace('_', '-')}"]
    assert "Valid: a rate in [0, 1). Default: 0.0" in actions["noise"].help
    assert "mlp, resnet18, vgg16" in actions["model"].help
    text = p.format_help()
    assert "digits: seed_size=20 query_size=20 budget=160" in text


@pytest.mark.parametrize("name", list(FIELDS))
def test_every_default_round_trips_through_its_flag(name):
    f = FIELDS[name]
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default
    assert coerce(name, flag_value(default)) == default


@pytest.mark.parametrize("name, value, want", [
    ("budget", 40.0, 40), ("budget", "40", 40), ("lr", "0.001", 0.001), ("train_augment", "yes", True),
    ("model", "null", None), ("study", "none", "none"), ("study", "null", "null"),
    ("strategies", '{"m": {"loss": "lwcc"}}', {"m": {"loss": "lwcc"}}),
])
def test_coercion_follows_the_type_hints(name, value, want):
    assert coerce(name, value) == want


@pytest.mark.parametrize("name, value", [
    ("budget", 40.5), ("budget", [40]), ("lr", [1]), ("lr", {"a": 1}), ("seed", True),
    ("threads", 2**63), ("strategies", "[1, 2]"), ("strategies", {1: {"loss": "ce"}}),
    ("study", None),
])
def test_coercion_refuses_with_one_clear_message(name, value):
    with pytest.raises(ConfigError, match=f"{name}"):
        coerce(name, value)


def test_per_dataset_defaults_are_entry_fields():
    digits = from_mapping({"dataset": "digits"})
    assert digits.chosen_defaults() == {"seed_size": 20, "query_size": 20, "budget": 160,
                                        "model": "mlp", "aug_shift": 1, "aug_flip": False}
    r = from_mapping({"dataset": "cifar10", "strategy": "random"}).resolve()
    assert (r.seed_size, r.query_size, r.budget, r.model, r.aug_shift, r.aug_flip) == \
        (100, 5000, 25000, "resnet18", 4, True)
    # an explicit value wins over the entry's default, and is not reported as chosen
    given = from_mapping({"dataset": "digits", "budget": 40, "aug_shift": 0})
    assert given.resolve().budget == 40 and given.resolve().aug_shift == 0
    assert "budget" not in given.chosen_defaults()


def test_every_catalogue_entry_builds_and_takes_real_config_keys():
    """Each part's factory resolves, and every config key an entry takes is an ExperimentConfig
    key its factory accepts: a misspelled key in an entry fails here, not in a cell."""
    import inspect

    from asknlearn import catalogue, data, models
    from asknlearn.config import ExperimentConfig

    fields_ = {f.name for f in dataclasses.fields(ExperimentConfig)}
    for entry in catalogue.MODELS.values():  # one entry declares a model; its factory resolves
        assert catalogue.is_model_factory(entry.factory) and models.factory_takes_dropout(entry.factory)
    for table in (catalogue.LOSSES, catalogue.PSEUDO_LABELERS, catalogue.SELECTORS):
        for name, entry in table.items():
            params = inspect.signature(catalogue.load(entry.factory)).parameters
            assert set(entry.keys) | {o.arg for o in entry.options.values()} <= set(params), name
            assert set(entry.keys.values()) | set(entry.options) <= fields_, name
    for entry in catalogue.METRICS.values():
        assert callable(catalogue.load(entry.factory))
    assert {d.loader for d in catalogue.DATASETS.values()} <= set(data.LOADERS)
    for info in catalogue.DATASETS.values():
        assert info.default_model in catalogue.MODELS
        assert info.budget % info.query_size == 0


def test_custom_strategy_definition_is_pruned_to_the_cells_own():
    extra = {"mine": {"loss": "lwcc"}, "other": {"selector": "entropy"}}
    r = from_mapping({"strategy": "mine", "strategies": extra}).resolve()
    assert r.strategies == {"mine": {"loss": "lwcc"}}
    assert from_mapping({"strategy": "badge", "strategies": extra}).resolve().strategies == {}
    with pytest.raises(ConfigError, match="would replace the built-in"):
        from_mapping({"strategies": {"badge": {"loss": "lwcc"}}}).resolve()
