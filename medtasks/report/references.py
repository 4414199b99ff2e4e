"""The source reports' headline numbers (``references.yaml``, kept once) and their report section.

Every report.html shows them beside the run's own figures with the protocol differences listed, because
that is what a user on the real release wants to see first; a run on synthetic data is labelled as not
comparable, and a run under the report's own protocol (``protocol.name: report``) says so.

Example:
    >>> ref = reference("phe_classify")
    >>> ref["metrics"][0]["name"], ref["metrics"][0]["value"]
    ('accuracy', 0.9828)
"""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

__all__ = ["references", "reference", "lookup", "comparison_rows", "references_section"]


@lru_cache(maxsize=1)
def references() -> dict[str, dict[str, Any]]:
    """``{task: entry}`` of the packaged ``references.yaml``."""
    text = resources.files("medtasks.report").joinpath("references.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


def reference(task: str) -> dict[str, Any] | None:
    """The entry of ``task`` (``None`` for a task without one)."""
    return references().get(task)


def lookup(metrics: dict[str, Any], key: str | None) -> float | None:
    """The number at dot path ``key`` of ``metrics`` (a ``{"value": x}`` entry gives x); ``None`` when absent
    or not a finite number.

    Example:
        >>> lookup({"weighted": {"f1": 0.5}, "headline": {"a": {"value": 2}}}, "weighted.f1")
        0.5
        >>> lookup({"headline": {"a": {"value": 2}}}, "headline.a"), lookup({}, "x.y")
        (2.0, None)
    """
    if not key:
        return None
    node: Any = metrics
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        node = node.get("value")
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(float(node)):
        return None
    return float(node)


def comparison_rows(task: str, metrics: dict[str, Any]) -> list[list[str]]:
    """``[metric, source value, this run, note]`` rows for the report's table."""
    from medtasks.report.html import fmt_num

    ref = reference(task) or {}
    rows = []
    for m in ref.get("metrics") or []:
        own = lookup(metrics, m.get("key"))
        this = "no comparable figure" if m.get("key") is None else ("n/a" if own is None else fmt_num(own))
        rows.append([str(m["name"]), fmt_num(m["value"]), this, str(m.get("note", ""))])
    return rows


def references_section(task: str, metrics: dict[str, Any], synthetic: bool) -> str | None:
    """The "Source report's numbers" section, or ``None`` for a task without a reference entry."""
    from medtasks.report.html import esc, note, section, table

    ref = reference(task)
    if ref is None:
        return None
    verdict = ("NOT COMPARABLE: this run is on SYNTHETIC data; the source figures are on the real release."
               if synthetic else
               "This run follows the source report's protocol (protocol: report), flaws included."
               if metrics.get("protocol") == "report" else
               "This run follows medtasks' protocol (patient-grouped, held-out); the differences below bias the "
               "source figures upwards or make them measure something else.")
    body = [note(f"{ref['source']}: {ref['setting']}. Protocol: {ref['protocol']}."),
            f'<p class="{"warning" if synthetic else "meta"}" id="reference-verdict">{esc(verdict)}</p>']
    rows = comparison_rows(task, metrics)
    if rows:
        body.append(table(["Metric", "Source report", "This run", "Note"], rows, table_id="reference-table",
                          numeric=[False, True, True, False]))
    diffs = ref.get("differences") or []
    if diffs:
        items = "".join(f"<li>{esc(d)}</li>" for d in diffs)
        body.append(f'<p>How the source protocol differs from medtasks\' default:</p><ul id="reference-differences">'
                    f"{items}</ul>")
    return section("reference", "Source report's numbers", *body)
