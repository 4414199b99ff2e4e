"""Report sections for binary segmentation runs (metrics.json from :mod:`medtasks.tasks.kinds.segmentation`).

Overlap metrics in their three aggregates side by side (pooled over pixels as the PHE notes
report, per image over slices with a lesion, per patient), each with its patient-bootstrap CI;
HD95; the pooled pixel confusion matrix; the Dice distribution over lesion slices; and the
seg -> classification check. The overlay grids are ``figures/extra_overlays_*.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medtasks.report import figures
from medtasks.report.html import classification_report_table, figure, fmt_ci, fmt_num, note, section, table
from medtasks.viz.canvas import _new_figure, _style, save_figure

if TYPE_CHECKING:
    from medtasks.report import RunData

METRIC_NAMES = {"dice": "Dice", "iou": "IoU", "sens": "Sensitivity", "spec": "Specificity"}
AGGREGATES = (("pooled", "pooled over all pixels (the notes' figure)"),
              ("per_image", "mean over slices with a lesion"),
              ("per_image_all", "mean over all slices (both empty = 1)"),
              ("per_patient", "mean over patients (pixels pooled per patient)"))


def _overlap_section(m: dict[str, Any]) -> str:
    rows = []
    for key, label in AGGREGATES:
        block = m.get(key) or {}
        rows.append([label, *(fmt_ci(block.get(k)) if k in block else "—" for k in METRIC_NAMES)])
    body = [table(["Aggregate", *METRIC_NAMES.values()], rows, table_id="overlap-table")]
    hd = m.get("hd95") or {}
    unit = m.get("distance_unit") or ("mm" if m.get("pixel_spacing_mm") else "px")
    if hd.get("n"):
        rows = [[f"HD95 mean ({unit}) [95% CI]", fmt_ci(hd.get("mean"))], [f"HD95 median ({unit})",
                                                                         fmt_num(hd.get("median"))],
                ["HD95 slices (truth and prediction non-empty)", hd["n"]]]
        asd = m.get("assd") or {}
        if asd.get("n"):
            rows += [[f"ASSD mean ({unit}) [95% CI]", fmt_ci(asd.get("mean"))],
                     [f"ASSD median ({unit})", fmt_num(asd.get("median"))]]
        nsd = m.get("nsd") or {}
        if nsd.get("n"):
            rows += [[f"NSD at {fmt_num(m.get('nsd_tolerance_mm'))} mm, mean [95% CI]", fmt_ci(nsd.get("mean"))],
                     ["NSD slices (truth non-empty)", nsd["n"]]]
        body.append(table(["Surface distance", "Value"], rows, table_id="hd95-table"))
    else:
        body.append(note("HD95 / ASSD: no slice has both a truth and a predicted lesion."))
    if m.get("spacing_sources"):
        src = ", ".join(f"{k}: {v}" for k, v in m["spacing_sources"].items())
        body.append(note(f"Distances in {unit}; pixel spacing per slice from {src}."))
    body.append(note(f"{m.get('n_cases')} slices ({m.get('n_cases_with_lesion')} with a lesion) of "
                     f"{m.get('n_patients')} patients, '{m.get('split')}' split, threshold {m.get('threshold')}. "
                     "95% CIs resample patients. Pooled figures are dominated by large lesions; per-patient "
                     "figures weigh every patient alike."))
    return section("overlap", "Overlap metrics", *body)


def _dice_histogram(run: RunData, path: Path) -> Path | None:
    df = run.predictions
    if df is None or "dice" not in df.columns or "true_lesion" not in df.columns:
        return None
    dice = df.loc[df["true_lesion"] == 1, "dice"].astype(float).dropna().to_numpy()
    if dice.size == 0:
        return None
    with _style():
        fig, axes = _new_figure(6.5, 3.6)
        ax = axes[0, 0]
        ax.hist(dice, bins=np.linspace(0, 1, 21), color="#2563eb", edgecolor="white")
        ax.axvline(float(np.mean(dice)), color="#ef4444", ls="--", label=f"mean {np.mean(dice):.3f}")
        ax.set(xlabel="Dice per slice (slices with a lesion)", ylabel="slices", xlim=(0, 1),
               title=f"Dice distribution ({dice.size} lesion slices)")
        ax.legend()
        return save_figure(fig, path)


def _confusion_section(m: dict[str, Any], fig_dir: Path, run: RunData) -> str:
    body = []
    mats = {}
    if m.get("pixel_confusion_matrix"):
        mats["pixels (pooled)"] = np.asarray(m["pixel_confusion_matrix"])
    s2c = m.get("seg_to_classification") or {}
    if s2c.get("confusion_matrix"):
        mats[f"slices (>= {s2c.get('min_area')} px = lesion)"] = np.asarray(s2c["confusion_matrix"])
    if mats:
        out = figures.plot_confusion_matrices(mats, fig_dir / "confusion_matrices.png", ncols=2)
        body.append(figure(out.name, "Left: pooled pixel confusion matrix (rows truth, columns prediction). Right: the "
                                     "notes' seg -> classification check per slice.", alt="Confusion matrices"))
    rep = s2c.get("report") or {}
    if rep:
        body.append(classification_report_table(rep, "seg2cls-table"))
    hist = _dice_histogram(run, fig_dir / "dice_histogram.png")
    if hist is not None:
        body.append(figure(hist.name, "Per-slice Dice over the slices whose truth has a lesion.", alt="Dice histogram"))
    return section("seg-confusion", "Confusion matrices and seg -> classification", *(body or [note("not available")]))


def build_sections(run: RunData, fig_dir: Path) -> list[str]:
    """2-D slices: overlap table with CIs, HD95, confusion matrices, seg -> classification, Dice histogram;
    volumes (``layout`` in metrics.json): :mod:`medtasks.report.volumes`."""
    from medtasks.report import volumes

    m = run.metrics
    if m.get("layout") == "volumes":
        return volumes.ms_sections(run, fig_dir)
    if m.get("layout") == "cardiac":
        return volumes.cardiac_sections(run, fig_dir)
    return [_overlap_section(m), _confusion_section(m, fig_dir, run)]
