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


def _ci_text(h: dict[str, Any]) -> str:
    ci = "" if h.get("ci_low") is None else f"  95% CI [{h['ci_low']:.4f}, {h['ci_high']:.4f}]"
    return f"{h['value']:.4f}{ci}" if h.get("value") is not None else "n/a"


def segmentation_table(metrics: dict[str, Any]) -> str:
    """Dice / IoU / sensitivity / specificity by aggregate (pooled, per image, per patient)."""
    rows = [f"{'aggregate':<26}{'dice':>9}{'iou':>9}{'sens':>9}{'spec':>9}"]
    for key, label in (("pooled", "pooled pixels"), ("per_image", "per lesion slice"), ("per_patient", "per patient")):
        block = metrics.get(key) or {}
        cells = [f"{block[k]['value']:>9.4f}" if k in block and block[k].get("value") is not None else f"{'-':>9}"
                 for k in ("dice", "iou", "sens", "spec")]
        rows.append(f"{label:<26}" + "".join(cells))
    return "\n".join(rows)


def run_summary(task: str, metrics: dict[str, Any]) -> str:
    """What `medtasks run` prints at the end: the split, the kind's table, the headline metrics with CIs."""
    tag = " (SYNTHETIC data)" if metrics.get("synthetic") else ""
    n = metrics.get("n", metrics.get("n_cases", metrics.get("n_images")))
    lines = [f"\n{task} — held-out split '{metrics.get('split')}', {n} cases, "
             f"{metrics.get('n_patients')} patients{tag}"]
    if "per_class" in metrics:
        lines.append(per_class_table(metrics))
    elif metrics.get("kind") == "segmentation" and metrics.get("layout") is None:
        lines.append(segmentation_table(metrics))
    for name, h in (metrics.get("headline") or {}).items():
        lines.append(f"{name}: {_ci_text(h)}")
    return "\n".join(lines)
