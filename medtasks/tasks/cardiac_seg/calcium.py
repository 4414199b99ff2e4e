"""cardiac_seg calcium post-processing: the minimum calcium lesion size, chosen on validation, and the lesion table.

The calcium branch's mask loses its connected components below ``postprocess.min_lesion_mm3``
(:mod:`medtasks.transforms.postprocess`; components with ``eval.connectivity``, the calcium lesion
metric's, 26-connected by default) *before* the gate, so ``seg_presence`` counts the voxels that
survive. ``auto`` predicts every validation patient (with and without calcium: the false lesions of
calcium-free patients are what the filter removes; the calcium model's own validation used positives
only) and picks the candidate with the best pooled calcium lesion F1 after the evaluation's gate.
The per-lesion table (``lesions.csv``) lists the true and predicted calcium lesions (label 3) of the
evaluated patients, fused under that gate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
import pandas as pd

from medtasks.io.nifti import voxel_spacing
from medtasks.metrics.lesion_table import lesion_table
from medtasks.metrics.lesions import match_lesions
from medtasks.tasks.cardiac_seg.infer import calcium_probability, fuse, predict_stage
from medtasks.transforms.postprocess import lesion_f1_curve, resolve_min_lesion_size

if TYPE_CHECKING:
    from medtasks.tasks.cardiac_seg.task import CardiacSeg

__all__ = ["evaluation_gate", "choose_calcium_postprocess", "min_calcium_mm3", "calcium_lesions"]


def evaluation_gate(task: CardiacSeg, models: dict[str, Any]) -> str:
    """``infer.gate``, or ``seg_presence`` when it is ``classifier`` and the run has no gate model."""
    gate = task.cfg.infer.gate
    return gate if gate != "classifier" or models.get("gate") is not None else "seg_presence"


def choose_calcium_postprocess(task: CardiacSeg, models: dict[str, Any], df: pd.DataFrame) -> dict[str, Any]:
    """``postprocess`` of metrics.json (the size used; for ``auto`` the validation curve); kept in the task state."""
    pp, e, inf = task.cfg.postprocess, task.cfg.eval, task.cfg.infer
    gate = evaluation_gate(task, models)
    val = df[df.split == "val"] if "split" in df.columns else df.iloc[:0]
    curve_fn = None
    if pp.min_lesion_mm3 == "auto" and len(val) and models.get("class3") is not None:
        cases, probs = [], []
        for r in val.itertuples():
            calcium = predict_stage(task, models["class3"], r.image, "class3") == 1
            true = np.asarray(nib.load(r.label).dataobj) == 3
            cases.append((calcium, true, voxel_spacing(r.image)))
            probs.append(calcium_probability(task, models["gate"], r.image) if models.get("gate") is not None
                         else None)

        def gated(i: int, mask: np.ndarray) -> np.ndarray:
            fused, _ = fuse(np.zeros(mask.shape, np.uint8), mask, gate, inf.min_calcium_voxels, probs[i],
                            inf.classifier_threshold)
            return fused == 3

        def curve_fn(candidates):
            return lesion_f1_curve(cases, candidates, e.connectivity, gate=gated)
    info = resolve_min_lesion_size(pp, curve_fn, e.connectivity,
                                   chosen=task.state.get("postprocess", {}).get("min_lesion_mm3"))
    info.update(applies_to="calcium (class 3), before the gate", gate=gate)
    task.state["postprocess"] = {"min_lesion_mm3": info["min_lesion_mm3"]}
    return info


def min_calcium_mm3(task: CardiacSeg) -> float:
    """The size ``predict`` uses: the configured number, or the one chosen on validation (task state; 0 if none)."""
    pp = task.cfg.postprocess
    if pp.min_lesion_mm3 != "auto":
        return float(pp.min_lesion_mm3)
    return float(task.state.get("postprocess", {}).get("min_lesion_mm3", 0.0))


def calcium_lesions(fused: np.ndarray, true: np.ndarray, patient_id: str, spacing: tuple[float, ...],
                    affine: np.ndarray, connectivity: int, iou_threshold: float) -> pd.DataFrame:
    """The patient's rows of ``lesions.csv``: true and predicted calcium lesions (label 3), both matching rules."""
    match = match_lesions(fused == 3, true == 3, connectivity, iou_threshold=iou_threshold)
    return lesion_table(match, patient_id, spacing, affine)
