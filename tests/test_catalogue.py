"""The catalogue (issue 20) and its lookups (issue 23, item 9): every name lookup fails with one
line naming the bad value, the nearest valid ones and all valid ones; the package has no
import cycle; a round line prints a mechanism's diagnostics only where the strategy has it."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import yaml

from asknlearn import catalogue
from asknlearn.config import ExperimentConfig, check_workflow_keys, from_mapping
from asknlearn.errors import AskNLearnError

PACKAGE = Path(__file__).resolve().parents[1] / "asknlearn"
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 1000, msg
    return msg


@pytest.mark.parametrize(("mapping", "bad", "near"), [
    ({"dataset": "fashion_mnst"}, "fashion_mnst", "fashion_mnist"),
    ({"model": "resnet19"}, "resnet19", "resnet18"),
    ({"strategy": "entropyy"}, "entropyy", "entropy"),
    ({"strategy": "m", "strategies": {"m": {"loss": "lwc"}}}, "lwc", "lwcc"),
    ({"strategy": "m", "strategies": {"m": {"selector": "bagde"}}}, "bagde", "badge"),
    ({"strategy": "m", "strategies": {"m": {"pseudo_labels": "refin"}}}, "refin", "refine"),
    ({"sedes": [0]}, "sedes", "seed"),
])
def test_every_name_lookup_is_one_line_with_a_did_you_mean(mapping, bad, near):
    with pytest.raises(AskNLearnError) as exc:
        from_mapping(mapping).resolve()
    msg = one_line(exc)
    assert repr(bad) in msg and f"did you mean {near!r}" in msg and "valid: " in msg


@pytest.mark.parametrize("table", ["LOSSES", "PSEUDO_LABELERS", "SELECTORS", "STRATEGIES",
                                   "METRICS", "MODELS", "DATASETS"])
def test_catalogue_lookup_names_every_valid_entry(table):
    entries = getattr(catalogue, table)
    name = next(iter(entries))
    assert catalogue.lookup(entries, name, "x") is entries[name]
    with pytest.raises(AskNLearnError) as exc:
        catalogue.lookup(entries, name + "x", "x")
    msg = one_line(exc)
    assert f"did you mean {name!r}" in msg and msg.endswith(", ".join(entries))


def test_a_misspelled_top_level_workflow_key_is_one_line_not_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())
    with pytest.raises(AskNLearnError) as exc:
        check_workflow_keys({"study": "s", "sedes": [0, 1]}, schema)
    msg = one_line(exc)
    assert "'sedes'" in msg and "did you mean 'seeds'" in msg
    check_workflow_keys({"study": "s", "seeds": [0]}, schema)  # valid keys pass


def _module_imports(path: Path, name: str) -> set[str]:
    """The package modules ``path`` imports when it is imported (module level, TYPE_CHECKING
    blocks aside; imports inside functions run later and cannot make an import cycle)."""
    tree, out = ast.parse(path.read_text()), set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if isinstance(sub, ast.Import):
                out |= {a.name for a in sub.names}
            elif isinstance(sub, ast.ImportFrom) and sub.module:
                base = sub.module
                if sub.level:  # relative: from the package
                    base = ".".join(name.split(".")[: -sub.level] + ([sub.module] if sub.module else []))
                out.add(base)
                out |= {f"{base}.{a.name}" for a in sub.names}
    return {m for m in out if m.startswith("asknlearn")}


def test_the_package_has_no_import_cycle():
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = path
    graph = {n: {m for m in _module_imports(p, n) if m in mods and m != n} for n, p in mods.items()}
    for n in list(graph):  # importing a.b imports package a first
        graph[n] |= {".".join(m.split(".")[:i]) for m in graph[n] for i in range(2, m.count(".") + 1)
                     if ".".join(m.split(".")[:i]) in mods and ".".join(m.split(".")[:i]) != n}
    state: dict[str, int] = {}

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(m):], m]))
            if m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert {"asknlearn.query", "asknlearn.diagnostics", "asknlearn.records"} <= graph["asknlearn.loop"]


def test_no_module_name_is_one_letter_from_another():
    names = sorted({p.stem for p in PACKAGE.rglob("*.py")} - {"__init__", "__main__", "names"})
    # names.py is a deprecated re-export kept for benchmarks/bench_vwcc.py for one release
    close = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
             if len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) <= 1
             or abs(len(a) - len(b)) == 1 and (a in b or b in a) and min(len(a), len(b)) > 3]
    assert not close, close


# ---------------------------------------------------------------------------- the round line
def _row(**kw) -> dict:
    row = {"round": 1, "labels": 40, "accuracy": 0.8, "ece": 0.05, "nll": 0.6, "brier": 0.3,
           "train_epochs": 20, "train_accuracy": 1.0, "train_seconds": 1.0,
           "inference_seconds": 0.1, "selection_seconds": 0.1, "round_seconds": 1.2,
           "alpha_mean": math.nan, "oracle_refined_fraction": math.nan,
           "val_refined_accuracy": math.nan, "val_refined_argmax_accuracy": math.nan,
           "oracle_wrong_memorised": math.nan, "oracle_wrong_corrected": math.nan}
    return {**row, **kw}


@pytest.mark.parametrize(("strategy", "noise", "shown", "hidden"), [
    ("badge", 0.0, [], ["alpha", "refined", "memorised"]),
    ("ask-n-learn-lwcc", 0.0, ["refined"], ["alpha", "memorised", "val-refined"]),
    ("ask-n-learn-vwcc", 0.0, ["alpha", "refined"], ["memorised"]),
    ("bald", 0.2, ["alpha", "memorised", "corrected"], ["refined"]),
])
def test_the_round_line_prints_only_the_strategys_mechanisms(strategy, noise, shown, hidden):
    from asknlearn.diagnostics import round_text

    cfg = ExperimentConfig(dataset="digits", strategy=strategy, noise=noise, budget=40).resolve()
    row = _row(alpha_mean=0.03, oracle_refined_fraction=0.2, oracle_wrong_memorised=0.9,
               oracle_wrong_corrected=0.05)
    line = round_text(row, [row], cfg, stochastic=cfg.spec.stochastic)
    for word in shown:
        assert f" {word} " in line, (word, line)
    for word in hidden:
        assert f" {word} " not in line, (word, line)
    assert " - " not in line  # no empty placeholders
