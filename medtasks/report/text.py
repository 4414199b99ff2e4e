"""Plain-text tables for the terminal (the end of `medtasks run`)."""

from __future__ import annotations

from typing import Any


def per_class_table(metrics: dict[str, Any]) -> str:
    """Plain-text per-class table (printed at the end of `medtasks run`)."""
    rows = [f"{'label':<18}{'precision':>10}{'recall':>10}{'f1':>10}{'roc_auc':>10}{'support':>9}"]
    for lab, m in metrics["per_class"].items():
        auc = "n/a" if m.get("roc_auc") is None else f"{m['roc_auc']:.4f}"
        rows.append(f"{lab:<18}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{auc:>10}{m['support']:>9}")
    for avg in ("macro", "weighted"):
        m = metrics[avg]
        rows.append(f"{avg + ' avg':<18}{m['precision']:>10.4f}{m['recall']:>10.4f}{m['f1']:>10.4f}{'':>10}{'':>9}")
    return "\n".join(rows)
