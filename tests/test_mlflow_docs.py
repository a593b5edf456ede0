"""docs/mlflow.md names what the tracker really logs: every metric under its section, every
provenance tag, the system-metrics switch; and its screenshots exist and stay small."""

from __future__ import annotations

import re
from pathlib import Path

from asknlearn import tracking
from asknlearn.records import METRIC_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "mlflow.md").read_text()


def section_row(section: str) -> str:
    row = next((line for line in DOC.splitlines() if line.startswith(f"| `{section}/` |")), None)
    assert row is not None, f"docs/mlflow.md has no table row for the {section}/ metrics"
    return row


def test_every_logged_metric_is_documented_in_its_section():
    for column in METRIC_COLUMNS:
        section, name = tracking.metric_name(column).split("/", 1)
        row = section_row(section)
        wildcards = re.findall(r"`(\w+)\*`", row)
        assert f"`{name}`" in row or any(name.startswith(w) for w in wildcards), (
            f"{section}/{name} (column {column}) is not in docs/mlflow.md's {section}/ row")


def test_tags_statuses_and_system_metrics_are_the_trackers():
    for tag in (*tracking.provenance_tags("cpu"), tracking.CELL_TAG, tracking.STUDY_TAG,
                tracking.PARENT_TAG, "asknlearn.tracking_uri", "asknlearn.data_root"):
        assert f"`{tag}`" in DOC, tag
    assert f"`{tracking.SYSTEM_METRICS_ENV}=1`" in DOC
    for status in ("RUNNING", "FINISHED", "KILLED", "FAILED"):
        assert status in DOC
    for name in tracking.CELL_ARTIFACTS:
        assert f"`{name}`" in DOC, name


def test_screenshots_exist_and_are_small():
    images = re.findall(r"\]\((img/[^)]+\.png)\)", DOC)
    assert len(images) == 4
    for rel in images:
        path = ROOT / "docs" / rel
        assert path.is_file(), rel
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size < 250_000, f"{rel} is {path.stat().st_size} bytes"
    assert (ROOT / "docs" / "img" / "make_mlflow_screenshots.sh").is_file()
