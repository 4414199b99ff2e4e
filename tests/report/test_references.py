"""The source reports' numbers: kept once (references.yaml), shown on every report, quoted by every card."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from medtasks import api
from medtasks.report.html import fmt_num
from medtasks.report.references import comparison_rows, lookup, reference, references, references_section

CARDS = Path(__file__).resolve().parents[2] / "tasks"


def test_every_task_has_an_entry_with_its_protocol_differences() -> None:
    assert set(references()) == set(api.TASKS.names())
    for task, ref in references().items():
        assert ref["source"] and ref["setting"] and ref["protocol"], task
        assert ref["differences"], f"{task}: list how the source protocol differs"
        for m in ref["metrics"]:
            assert isinstance(m["value"], float) and m["name"], (task, m)


@pytest.mark.parametrize("task", sorted(references()))
def test_card_quotes_the_source_numbers(task: str) -> None:
    """The task card and the report read the same figures: every value in references.yaml is on the card."""
    text = (CARDS / f"{task}.md").read_text(encoding="utf-8")
    for m in reference(task)["metrics"]:
        v = m["value"]
        forms = {f"{v:.4f}", f"{v:.3f}", f"{v:g}", f"{100 * v:.2f}%"}
        assert any(re.search(re.escape(f) + r"(?!\d)", text) for f in forms), (task, m["name"], v)


def test_lookup_and_rows_against_a_run() -> None:
    metrics = {"accuracy": 0.75, "precision": {"value": 0.5}, "recall": float("nan")}
    rows = {r[0]: r for r in comparison_rows("phe_classify", metrics)}
    assert rows["accuracy"][1:3] == [fmt_num(0.9828), fmt_num(0.75)]
    assert rows["PHE precision"][2] == fmt_num(0.5)
    assert rows["PHE recall"][2] == "n/a" and rows["PHE F1"][2] == "n/a"   # NaN / absent: never a number
    assert lookup({"a": {"b": True}}, "a.b") is None


def test_section_labels_synthetic_runs_not_comparable_and_marks_report_protocol() -> None:
    syn = references_section("phe_classify", {"accuracy": 0.7}, synthetic=True)
    assert "NOT COMPARABLE" in syn and "SYNTHETIC" in syn and 'id="reference-table"' in syn
    real = references_section("phe_classify", {"accuracy": 0.7, "protocol": "report"}, synthetic=False)
    assert "NOT COMPARABLE" not in real and "protocol: report" in real
    assert "slices split at random" in real
    cardiac = references_section("cardiac_seg", {}, synthetic=False)
    assert "no comparable figure" in cardiac
