"""cardiac_seg inference: validation scores per stage, sliding-window prediction back in the input's space,
and the fusion of the class-1/2 labels with the calcium mask behind a gate.

Fusion (the report's rule): start from the class-1/2 label map; where the calcium model predicts
calcium, write 3 (calcium wins over myocardium / valve) — if the gate is open:

* ``always`` — open for every patient;
* ``classifier`` — open when the patient-level classifier's P(calcium) >= ``infer.classifier_threshold``;
* ``seg_presence`` — open when the calcium model predicts >= ``infer.min_calcium_voxels`` voxels.

Example:
    >>> base = np.array([0, 1, 2, 2]); calc = np.array([0, 0, 1, 1], bool)
    >>> fuse(base, calc, "seg_presence", min_voxels=3)[0].tolist()   # 2 voxels < 3: gate closed
    [0, 1, 2, 2]
    >>> fuse(base, calc, "always")[0].tolist()
    [0, 1, 3, 3]
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from medtasks.metrics.lesions import lesion_detection, pooled_lesion_scores

if TYPE_CHECKING:
    from medtasks.tasks.cardiac_seg.task import CardiacSeg

log = logging.getLogger(__name__)

GATES = ("always", "classifier", "seg_presence")


def fuse(base: np.ndarray, calcium: np.ndarray, gate: str, min_voxels: int = 1, p_calcium: float | None = None,
         threshold: float = 0.5) -> tuple[np.ndarray, bool]:
    """Fused label map and whether the gate let the calcium in (see the module docstring)."""
    if gate not in GATES:
        raise ValueError(f"infer.gate={gate!r}: use one of {', '.join(GATES)}")
    if base.shape != calcium.shape:
        raise ValueError(f"class-1/2 map {base.shape} and calcium mask {calcium.shape} differ in shape")
    if gate == "always":
        open_ = True
    elif gate == "classifier":
        if p_calcium is None:
            raise ValueError("gate=classifier needs the classifier's probability (train the gate stage)")
        open_ = bool(p_calcium >= threshold)
    else:
        open_ = int(np.count_nonzero(calcium)) >= int(min_voxels)
    out = np.asarray(base).copy()
    if open_:
        out[np.asarray(calcium, bool)] = 3
    return out, open_


# ---- validation scores of each stage (streamed: whole volumes) -----------------------------------
def _counts(logits: torch.Tensor, label: torch.Tensor, n_classes: int) -> dict[str, Any]:
    pred = logits.argmax(1)
    true = label[:, 0].long()
    out = {}
    for c in range(1, n_classes):
        p, t = pred == c, true == c
        out[f"tp{c}"], out[f"fp{c}"], out[f"fn{c}"] = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    return out


def _class12_reduce(parts: list) -> dict[str, float]:
    dice = {}
    for c in (1, 2):
        tp, fp, fn = (sum(p[f"{k}{c}"] for p in parts) for k in ("tp", "fp", "fn"))
        dice[c] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"dice_myocardium": dice[1], "dice_valve": dice[2], "dice": (dice[1] + dice[2]) / 2}


def _class3_batch(connectivity: int):
    def fn(logits: torch.Tensor, label: torch.Tensor) -> dict[str, Any]:
        out = _counts(logits, label, 2)
        pred, true = logits.argmax(1).numpy() == 1, label[:, 0].numpy() > 0.5
        det = [lesion_detection(p, t, connectivity=connectivity) for p, t in zip(pred, true)]
        out.update(n_true=sum(d["n_true_lesions"] for d in det), n_pred=sum(d["n_pred_lesions"] for d in det),
                   n_det=sum(d["n_detected"] for d in det), n_fp=sum(d["n_false_pos"] for d in det))
        return out
    return fn


def _class3_reduce(parts: list) -> dict[str, float]:
    tp, fp, fn = (sum(p[f"{k}1"] for p in parts) for k in ("tp", "fp", "fn"))
    n_true, n_pred, n_det, n_fp = (sum(p[k] for p in parts) for k in ("n_true", "n_pred", "n_det", "n_fp"))
    recall = tp / (tp + fn) if tp + fn else 0.0
    lf1 = pooled_lesion_scores(n_true, n_pred, n_det, n_fp)["f1"]
    lf1 = 0.0 if np.isnan(lf1) else lf1  # model selection needs a number: nothing found scores 0
    return {"recall": recall, "precision": tp / (tp + fp) if tp + fp else 0.0, "lesion_f1": lf1,
            "score": (recall + lf1) / 2}


def stage_scores(task: CardiacSeg, stage: str) -> tuple[str, dict[str, Any]]:
    """``(monitor, fit keyword arguments)`` of a stage: the validation inferer and scores (see the report)."""
    if stage == "gate":
        def acc(logits: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
            return {"accuracy": float((logits.argmax(1) == y.reshape(-1).long()).float().mean())}
        return "val_accuracy", {"score_fn": acc}
    from monai.inferers import SlidingWindowInferer

    c, i = task.stage_config(stage), task.cfg.infer
    inferer = SlidingWindowInferer(roi_size=(c.patch,) * 3, sw_batch_size=i.sw_batch_size, overlap=i.overlap,
                                   mode=i.mode)
    if stage == "class12":
        stream = (lambda lg, y: _counts(lg, y, 3), _class12_reduce)
        return "val_dice", {"score_fn": lambda p, y: {}, "val_inferer": inferer, "stream_score": stream}
    stream = (_class3_batch(task.cfg.eval.connectivity), _class3_reduce)
    return "val_score", {"score_fn": lambda p, y: {}, "val_inferer": inferer, "stream_score": stream}


# ---- prediction in the input's space ----------------------------------------------------------
def predict_stage(task: CardiacSeg, model: torch.nn.Module, image_path: str, stage: str,
                  with_probability: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Label map of one stage (argmax) in the input volume's own voxel grid (preprocessing inverted); with
    ``with_probability`` also its softmax probabilities ``(classes, x, y, z)`` float32 in that grid (linear
    interpolation back)."""
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Invertd

    c, i = task.stage_config(stage), task.cfg.infer
    pre = task.stage_transforms(stage, "predict")
    data = pre({"image": image_path})
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = sliding_window_inference(data["image"][None].to(device), roi_size=(c.patch,) * 3,
                                          sw_batch_size=i.sw_batch_size, predictor=model, overlap=i.overlap,
                                          mode=i.mode, sw_device=device, device="cpu")
    labels = logits[0].argmax(0, keepdim=True).to(torch.float32)
    data["pred"] = MetaTensor(labels, meta=data["image"].meta, applied_operations=data["image"].applied_operations)
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=True, to_tensor=True)(data)
    out = np.asarray(inv["pred"][0]).round().astype(np.uint8)
    if not with_probability:
        return out
    data["prob"] = MetaTensor(torch.softmax(logits[0].float(), 0), meta=data["image"].meta,
                              applied_operations=data["image"].applied_operations)
    prob = Invertd("prob", transform=pre, orig_keys="image", nearest_interp=False, to_tensor=True)(data)["prob"]
    return out, np.clip(np.asarray(prob, dtype=np.float32), 0.0, 1.0)


def calcium_probability(task: CardiacSeg, model: torch.nn.Module, image_path: str) -> float:
    """The gate classifier's P(patient has calcium)."""
    x = task.stage_transforms("gate", "predict")({"image": image_path})["image"][None]
    with torch.inference_mode():
        return float(torch.softmax(model(x.to(next(model.parameters()).device)), 1)[0, 1])
