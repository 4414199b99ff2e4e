"""Report sections of the volumetric segmentation runs: MS lesions (``layout: volumes``) and cardiac CT
(``layout: cardiac``); dispatched from :mod:`medtasks.report.segmentation` by metrics.json's ``layout``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medtasks.report import figures
from medtasks.report.html import figure, fmt_ci, fmt_num, note, section, table

if TYPE_CHECKING:
    from medtasks.report import RunData


def ms_sections(run: RunData, fig_dir: Path) -> list[str]:
    m = run.metrics
    pv, pooled, lp = m.get("per_volume") or {}, m.get("pooled") or {}, m.get("lesions_pooled") or {}
    rows = [["Dice", fmt_ci(pv.get("dice")), fmt_ci(pooled.get("dice"))],
            ["IoU", fmt_ci(pv.get("iou")), fmt_ci(pooled.get("iou"))],
            ["sensitivity", fmt_ci(pv.get("sens")), fmt_ci(pooled.get("sens"))],
            ["PPV", fmt_ci(pv.get("ppv")), fmt_ci(pooled.get("ppv"))]]
    body = [table(["Voxel metric", "mean per volume [95% CI]", "pooled voxels [95% CI]"], rows,
                  table_id="volume-table")]
    lrows = [["lesion TPR (detected / true lesions)", fmt_ci(pv.get("ltpr")), fmt_num(lp.get("ltpr"))],
             ["lesion FPR (false / predicted lesions)", fmt_ci(pv.get("lfpr")), ""],
             ["lesion precision", fmt_ci(pv.get("lesion_precision")), fmt_num(lp.get("precision"))],
             ["lesion F1", fmt_ci(pv.get("lesion_f1")), fmt_ci(lp.get("f1_ci"))],
             ["volume correlation (Pearson r)", fmt_ci(m.get("volume_correlation")), ""],
             ["ISBI 2015 composite (raw, not rater-normalised)", fmt_ci(m.get("isbi")), ""],
             ["HD95 (mm)", fmt_ci((m.get("hd95") or {}).get("mean")), ""],
             ["ASSD (mm)", fmt_ci((m.get("assd") or {}).get("mean")), ""],
             [f"NSD at {fmt_num(run.config.get('eval', {}).get('nsd_tolerance_mm'))} mm",
              fmt_ci((m.get("nsd") or {}).get("mean")), ""]]
    iou = (m.get("lesion_rules") or {}).get("iou") or {}
    if iou:  # the report's rule (IoU > threshold) beside ISBI's any-overlap rule above
        thr = fmt_num((m.get("lesion_rules") or {}).get("iou_threshold"))
        ipv, ipo = iou.get("per_volume") or {}, iou.get("pooled") or {}
        lrows += [[f"lesion TPR, IoU > {thr} rule", fmt_ci(ipv.get("ltpr")), fmt_num(ipo.get("ltpr"))],
                  [f"lesion precision, IoU > {thr} rule", fmt_ci(ipv.get("lesion_precision")),
                   fmt_num(ipo.get("precision"))],
                  [f"lesion F1, IoU > {thr} rule", fmt_ci(ipv.get("lesion_f1")), fmt_ci(ipo.get("f1_ci"))]]
    post = m.get("postprocess") or {}
    if post:
        lrows.append(["minimum lesion size (mm^3, " + str(post.get("mode", "")) + ")",
                      fmt_num(post.get("min_lesion_mm3")), ""])
    conn = {1: "6", 2: "18", 3: "26"}.get(int((run.config.get("eval") or {}).get("connectivity", 2)), "18")
    body.append(table([f"Lesion-wise (3-D, {conn}-connected)", "per volume [95% CI]", "pooled counts"], lrows,
                      table_id="lesion-table"))
    slices = m.get("slices") or {}
    if slices:
        sp, si = slices.get("pooled") or {}, slices.get("per_image") or {}
        body.append(table(["Per slice", "Dice", "IoU"],
                          [["pooled over slices", fmt_ci(sp.get("dice")), fmt_ci(sp.get("iou"))],
                           ["mean over lesion slices", fmt_ci(si.get("dice")), fmt_ci(si.get("iou"))]],
                          table_id="slice-table"))
    raters = m.get("raters")
    if raters:
        rv = raters.get("per_volume") or {}
        body.append(table(["Rater 2 vs rater 1 (the inter-rater ceiling)", "value [95% CI]"],
                          [["Dice per volume", fmt_ci(rv.get("dice"))],
                           ["lesion F1 per volume", fmt_ci(rv.get("lesion_f1"))],
                           ["ISBI composite (raw)", fmt_ci(raters.get("isbi"))]], table_id="rater-table"))
    scatter = _volume_scatter(run, fig_dir / "lesion_volumes.png")
    if scatter is not None:
        body.append(figure(scatter.name, "Predicted vs true lesion volume per test volume (mm^3); the diagonal is "
                                         "perfect agreement.", alt="Lesion volumes"))
    body.append(note(f"{m.get('n')} volumes of {m.get('n_patients')} subjects ('{m.get('split')}' split); CIs resample "
                     "subjects. Predicted masks: masks/<subject>_<timepoint>.nii.gz in each FLAIR's own space."))
    return [section("volumes", "Volume-level lesion metrics", *body)]


def _volume_scatter(run: RunData, path: Path) -> Path | None:
    from medtasks.viz.canvas import _new_figure, _style, save_figure

    df = run.predictions
    if df is None or not {"true_volume", "pred_volume"} <= set(df.columns) or df.empty:
        return None
    t, p = df["true_volume"].astype(float).to_numpy(), df["pred_volume"].astype(float).to_numpy()
    hi = float(max(t.max(), p.max(), 1.0)) * 1.05
    with _style():
        fig, axes = _new_figure(4.8, 4.4)
        ax = axes[0, 0]
        ax.plot([0, hi], [0, hi], color="0.6", ls="--", lw=1)
        ax.scatter(t, p, color="#2563eb", s=30)
        r = (run.metrics.get("volume_correlation") or {}).get("value")
        ax.set(xlim=(0, hi), ylim=(0, hi), xlabel="true lesion volume (mm^3)", ylabel="predicted (mm^3)",
               title=f"Lesion volumes (r = {r:.3f})" if isinstance(r, float) else "Lesion volumes")
        return save_figure(fig, path)


def cardiac_sections(run: RunData, fig_dir: Path) -> list[str]:
    m = run.metrics
    s = m.get("summary") or {}
    h = m.get("headline") or {}
    names = ("myocardium", "aortic_valve", "calcification")
    rows = [[n.replace("_", " "), fmt_ci(h.get(f"dice_{n}")), fmt_num(s.get(f"n_{n}_scored")),
             *(fmt_num((m.get(k) or {}).get(n)) for k in ("hd95_mm", "assd_mm", "nsd"))] for n in names]
    nsd_head = f"NSD at {fmt_num(m.get('nsd_tolerance_mm'))} mm"
    body = [table(["Class", f"Dice per patient ({m.get('gate')} gate) [95% CI]", "patients scored", "HD95 mm",
                   "ASSD mm", nsd_head], rows, table_id="cardiac-table"),
            note(f"{m.get('empty_rule')}. {m.get('n')} test patients, {m.get('n_with_calcium')} with calcium.")]
    comp = m.get("gate_comparison") or {}
    keys = ("dice_calcification", "calcium_lesion_recall", "calcium_lesion_precision", "calcium_lesion_f1",
            "gate_accuracy", "false_positive_patients", "dice_myocardium", "dice_aortic_valve")
    body.append(table(["Gate", *[k.replace("_", " ") for k in keys]],
                      [[g, *[fmt_num(v.get(k)) for k in keys]] for g, v in comp.items()], table_id="gate-table"))
    stages = m.get("stages") or {}
    if stages:
        body.append(table(["Stage", "best epoch", "best score", "epochs", "train time s"],
                          [[k, v.get("best_epoch"), fmt_num(v.get("best_score")), v.get("epochs_run"),
                            fmt_num(v.get("train_time_s"))] for k, v in stages.items()], table_id="stage-table"))
    if comp:
        cats = list(comp)
        vals = np.array([[comp[g].get(k) or 0.0 for k in ("dice_calcification", "calcium_lesion_f1", "gate_accuracy")]
                         for g in cats], float)
        out = figures.plot_grouped_bars(cats, ["calcium Dice", "calcium lesion F1", "gate accuracy"], vals,
                                        fig_dir / "gate_comparison.png", title="Gate modes on the test patients")
        body.append(figure(out.name, "The three gate modes: calcium Dice, calcium lesion F1, patient-level gate "
                                     "accuracy.", alt="Gate comparison"))
    return [section("cardiac", "Per-class metrics and gate modes", *body)]
