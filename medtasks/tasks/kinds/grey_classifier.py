"""Kind-level base of the 2-D grey-image classifiers (PHE-SICH slices, chest radiographs).

What they share, once: records from the label columns, the grey pipeline (file -> grey ->
resize -> augmentation -> channels -> channel mean/std; :mod:`medtasks.transforms.grey`) with
a task-chosen reader, the channel statistics fitted on the training split (or ImageNet's), a
registered backbone + linear head (:class:`~medtasks.models.classifier.ImageClassifier`),
and, for binary tasks, sklearn's two-class report and Grad-CAM grids of the test split's
TP / FP / FN images (``figures/extra_gradcam_<kind>.png``, MONAI GradCAM).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose
from torch import nn

import medtasks.losses  # noqa: F401  (registers losses)
import medtasks.models  # noqa: F401  (registers backbones)
from medtasks.config import to_dict
from medtasks.engine.trainer import FitResult
from medtasks.io.atomic import write_json_atomic, write_text_atomic
from medtasks.io.images import read_grey
from medtasks.models.classifier import ImageClassifier
from medtasks.registry import LOSSES
from medtasks.rundir import RunDir
from medtasks.tasks.kinds.classification import ClassificationTask
from medtasks.transforms.augment import build_augmentation
from medtasks.transforms.grey import channel_normalisation, grey_pipeline, grey_stats

log = logging.getLogger(__name__)

HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc")
GRADCAM_KINDS = {"tp": "true positives", "fp": "false positives", "fn": "false negatives"}


class GreyImageClassifier(ClassificationTask):
    """Binary or multi-label classifier of 2-D grey images; see the module docstring."""

    class_names: ClassVar[tuple[str, str]] = ("negative", "positive")   # sklearn report names (binary)
    label_note: ClassVar[str] = ""                                      # a report warning on what the label is
    id_columns = ("patient_id", "image")
    case_column = "image"
    input_column = "image"

    @staticmethod
    def read_image(path: str | Path) -> np.ndarray:
        """The image reader of the pipeline: ``(1, H, W)`` float32 in [0, 1]."""
        return read_grey(path)

    def records(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        cols = list(self.labels)
        y = (df[cols].to_numpy(np.float32) if set(cols) <= set(df.columns)
             else np.zeros((len(df), len(cols)), np.float32))
        return [{"image": p, "label": v} for p, v in zip(df["image"], y)]

    def fit_state(self, train_records: list[dict[str, Any]]) -> None:
        """Channel mean/std: the grey training slices' (``input.normalize: dataset``) or ImageNet's."""
        inp = self.cfg.input
        load = grey_pipeline(inp.size, channels=1, reader=self.read_image)
        self.state.update(channel_normalisation(
            inp.normalize, inp.channels, lambda: grey_stats(train_records, load, inp.channels, inp.norm_samples,
                                                            self.cfg.seed)))
        log.info("input normalisation: %s", {k: self.state.get(k) for k in ("norm_mean", "norm_std")})

    # ---- builders -----------------------------------------------------------------------------
    def build_transforms(self, split: str) -> Compose:
        inp = self.cfg.input
        aug = build_augmentation(["image"], to_dict(self.cfg.augment), inp.size) if split == "train" else None
        return grey_pipeline(inp.size, inp.channels, self.state.get("norm_mean"), self.state.get("norm_std"), aug,
                             reader=self.read_image)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return ImageClassifier(m.backbone, n_outputs=len(self.labels), in_channels=self.cfg.input.channels,
                               dropout=m.dropout, pretrained=m.pretrained, weights=m.weights)

    def build_loss(self) -> nn.Module:
        c = self.cfg.loss
        pos = None if c.pos_weight is None else [c.pos_weight]
        return LOSSES.get(c.name)(class_weights=[1.0], pos_weight=pos, label_smoothing=c.label_smoothing)

    # ---- MONAI bundle (medtasks export --format bundle) ----------------------------------------
    def bundle_reader(self) -> Any:
        """The reader ``LoadGreyImaged`` calls in the bundle, as a MONAI config value (default: ``read_grey``)."""
        return "$medtasks.io.images.read_grey"

    def bundle_files(self) -> tuple[tuple[str, ...], str, str]:
        """``(suffixes, modality, what dataset_dir holds)`` of the bundle's inputs."""
        from medtasks.io.images import IMAGE_SUFFIXES

        return IMAGE_SUFFIXES, "CT", (f"2-D slice images ({', '.join(IMAGE_SUFFIXES)}; any folder depth, hidden "
                                      "files skipped), decoded as medtasks predict decodes them")

    def bundle_inputs(self, run: Any) -> dict[str, Any]:
        """The grey pipeline of :meth:`build_transforms` (``predict``) over the image files of ``dataset_dir``."""
        from medtasks.engine.bundle_spec import GREY_COMPONENTS, grey_preprocessing, image_files_datalist

        inp = self.cfg.input
        suffixes, modality, doc = self.bundle_files()
        return dict(datalist=image_files_datalist(suffixes), modality=modality, inputs_doc=doc, data_type="image",
                    preprocessing=grey_preprocessing(self.bundle_reader(), inp.size, inp.channels,
                                                     self.state.get("norm_mean"), self.state.get("norm_std")),
                    batch_size=self.cfg.eval.batch_size, medtasks_components=dict(GREY_COMPONENTS),
                    packages=("opencv-python-headless", "pillow"),
                    notes=["`case_id` is the input's absolute path, as in medtasks predict's predictions.csv; "
                           "predict's other id columns (patient_id, ...) are not repeated.",
                           "A file that cannot be decoded stops the run (medtasks predict lists it in rejected.csv "
                           "and goes on)."])

    # ---- evaluation ---------------------------------------------------------------------------
    def headline(self) -> tuple[str, ...]:
        return HEADLINE

    def val_metrics(self, y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import f1_score, roc_auc_score

        y, p = y_true.reshape(-1).astype(int), y_prob.reshape(-1)
        out = {"f1": float(f1_score(y, p >= 0.5, zero_division=0))}
        if 0 < y.sum() < len(y):
            out["roc_auc"] = float(roc_auc_score(y, p))
        return out

    def evaluate(self, run: RunDir, df: pd.DataFrame, fit_result: FitResult | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        """The kind-level evaluation plus sklearn's classification report (binary: both classes, the notes'
        table; multi-label: per label) and, for binary tasks, the Grad-CAM grids."""
        from sklearn.metrics import classification_report

        metrics = super().evaluate(run, df, fit_result,
                                   [*(warnings or []), *([self.label_note] if self.label_note else [])])
        preds = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
        if self.kind == "binary":
            y, p = preds[f"true_{self.labels[0]}"].to_numpy(int), preds[f"prob_{self.labels[0]}"].to_numpy(float)
            y_pred = (p >= self.thresholds()[self.labels[0]]).astype(int)
            kw: dict[str, Any] = dict(labels=[0, 1], target_names=list(self.class_names), zero_division=0)
        else:
            y = preds[[f"true_{lab}" for lab in self.labels]].to_numpy(int)
            y_pred = preds[[f"pred_{lab}" for lab in self.labels]].to_numpy(int)
            kw = dict(target_names=list(self.labels), zero_division=0)
        metrics["classification_report"] = classification_report(y, y_pred, output_dict=True, **kw)
        write_text_atomic(run / "classification_report.txt", classification_report(y, y_pred, digits=4, **kw))
        if self.kind == "binary" and self.cfg.gradcam.enabled:
            metrics["gradcam"] = self.write_gradcam(run, preds)
        write_json_atomic(run / "metrics.json", metrics)
        log.info("%s %s: %s", self.name, metrics["split"],
                 ", ".join(f"{k} {v['value']:.4f}" for k, v in metrics["headline"].items()
                           if isinstance(v, dict) and isinstance(v.get("value"), float)))
        return metrics

    @staticmethod
    def gradcam_layer(model: nn.Module, name: str) -> str | None:
        """The module to explain: ``name`` itself or inside a transfer wrapper (``model.<name>``);
        ``auto`` = the last conv stage (ResNet ``layer4``, VGG the last conv of ``features``)."""
        modules = dict(model.named_modules())
        if name == "auto":
            convs = [k for k, m in modules.items() if isinstance(m, nn.Conv2d) and "features" in k]
            stages = [k for k in modules if k.endswith("backbone.layer4")]
            candidates = stages or convs[-1:]
            return candidates[0] if candidates else None
        for cand in (name, f"model.{name}"):
            if cand in modules:
                return cand
        return None

    def write_gradcam(self, run: RunDir, preds: pd.DataFrame) -> dict[str, Any]:
        """``figures/extra_gradcam_{tp,fp,fn}.png`` for up to ``gradcam.per_kind`` test slices each.

        Deterministic choice: the most confident true and false positives (highest probability)
        and the most missed false negatives (lowest), ties by case id. A kind with no slice is
        skipped with a log line; so is everything when the target layer is not in the network.
        """
        from medtasks.viz.gradcam import gradcam_grid

        g = self.cfg.gradcam
        y, pred = preds[f"true_{self.labels[0]}"].astype(int), preds[f"pred_{self.labels[0]}"].astype(int)
        picks = {"tp": preds[(y == 1) & (pred == 1)], "fp": preds[(y == 0) & (pred == 1)],
                 "fn": preds[(y == 1) & (pred == 0)]}
        for kind in picks:  # a re-evaluation must not leave an earlier grid behind
            (run / "figures" / f"extra_gradcam_{kind}.png").unlink(missing_ok=True)
        if all(rows.empty for rows in picks.values()):
            log.info("Grad-CAM: no true positives, false positives or false negatives in the %s split; "
                     "no grid written", self.cfg.eval.split)
            return {kind: 0 for kind in picks}
        model = self.load_model(run, "best")
        layer = self.gradcam_layer(model, g.target_layer)
        if layer is None:
            log.warning("Grad-CAM skipped: layer %r is not in the network %s", g.target_layer, type(model).__name__)
            return {"skipped": f"target layer {g.target_layer!r} not in the network"}
        for p in model.parameters():  # a frozen backbone (linear probe) still needs gradients through it
            p.requires_grad_(True)
        written: dict[str, Any] = {}
        display = grey_pipeline(self.cfg.input.size, channels=1, reader=self.read_image)
        for kind, rows in picks.items():
            if rows.empty:
                log.info("Grad-CAM: no %s in the %s split; skipping that grid", GRADCAM_KINDS[kind],
                         self.cfg.eval.split)
                written[kind] = 0
                continue
            rows = rows.sort_values([f"prob_{self.labels[0]}", "case_id"],
                                    ascending=[kind == "fn", True]).head(g.per_kind)
            frame = rows.assign(**{self.labels[0]: rows[f"true_{self.labels[0]}"]})
            tf = self.build_transforms("test")
            images = torch.stack([tf(r)["image"] for r in self.records(frame)])
            backgrounds = np.stack([display({"image": p})["image"].numpy()[0] for p in rows["image"]])
            titles = [f"{Path(str(r.image)).stem}  truth {int(r[f'true_{self.labels[0]}'])}  "
                      f"p={r[f'prob_{self.labels[0]}']:.2f}"
                      for _, r in rows.iterrows()]
            gradcam_grid(model, images, layer, titles, run / "figures" / f"extra_gradcam_{kind}.png",
                         backgrounds=backgrounds, alpha=g.alpha,
                         suptitle=f"Grad-CAM ({layer}) of the {self.labels[0]} logit: {GRADCAM_KINDS[kind]} "
                                  f"({self.cfg.eval.split} split, threshold {self.thresholds()[self.labels[0]]:.2f})")
            written[kind] = len(rows)
        return written
