"""phe_classify — does this head-CT slice show perihematomal edema (PHE)? (PHE-SICH-CT-IDS, notes' task 1)

Source: ``seeds/phe_sich_ct_ids_notes.txt`` (task 1). The label is PHE, not the hematoma: ``phe``
= 1 when the slice's VOC annotation has a box (``has_phe`` from :mod:`medtasks.data.phe_sich`);
every patient has a hemorrhage, so this is not "hemorrhage vs normal" although the notes call it so.

Input: the dataset's 8-bit PNG (already brain-windowed) -> grey float in [0, 1] -> resize
(:class:`~medtasks.transforms.resize.ResizeImaged`) -> augmentation (train only; MONAI transforms
from :func:`~medtasks.transforms.augment.build_augmentation`) -> grey replicated to 3 channels ->
channel mean/std (fitted on train, or ImageNet's) -> tensor. Augmenting before the replication
keeps the three channels identical (noise included) and costs a third.
Model: a registered backbone (ResNet18) + dropout + one-logit linear head, the notes'
``resnet18`` with ``fc = Linear(512, n)``; loss: BCEWithLogits (``weighted_bce`` with one class,
optional ``pos_weight``). After evaluation, Grad-CAM grids of test TP / FP / FN slices go to
``figures/extra_gradcam_<kind>.png`` (the report shows ``figures/extra_*.png``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose
from torch import nn

import medtasks.losses  # noqa: F401  (registers losses)
import medtasks.models  # noqa: F401  (registers backbones)
from medtasks.config import to_dict
from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.io import images
from medtasks.io.atomic import write_text_atomic
from medtasks.models.classifier import ImageClassifier
from medtasks.registry import LOSSES, TASKS
from medtasks.rundir import write_json_atomic
from medtasks.tasks.base import PrepareResult
from medtasks.tasks.classification import ClassificationTask
from medtasks.tasks.phe_config import PheClassifyConfig
from medtasks.transforms.augment import build_augmentation
from medtasks.transforms.grey import IMAGENET_MEAN, IMAGENET_STD, fit_grey_stats, grey_pipeline

log = logging.getLogger(__name__)

LABEL = "phe"
HEADLINE = ("accuracy", "precision", "recall", "f1", "roc_auc")
LABEL_NOTE = ("Label = perihematomal edema (PHE): phe = 1 when the slice's annotation has a PHE box. The dataset "
              "marks the edema, not the hematoma, and every patient has a hemorrhage: this is not "
              "hemorrhage-vs-normal classification (the source notes call it 'Hemorrhage vs Non-Hemorrhage').")
GRADCAM_KINDS = {"tp": "true positives", "fp": "false positives", "fn": "false negatives"}


def find_images(source: Path) -> tuple[pd.DataFrame, Rejected]:
    """Image files under ``source`` (a file or a folder, recursive) that decode; the others rejected.
    ``patient_id`` / ``slice_index`` come from the PHE-SICH name when it parses (else empty)."""
    from medtasks.data.phe_sich import parse_slice_name

    found, bad = images.find_images(source)
    rows = []
    for p in found:
        key = parse_slice_name(p.name)
        rows.append({"image": str(p), "patient_id": str(key[0]) if key else "", "slice_index": key[1] if key else None})
    return pd.DataFrame(rows, columns=["image", "patient_id", "slice_index"]), Rejected(bad)


@TASKS.register("phe_classify")
class PheClassify(ClassificationTask):
    """Slice-level PHE present / absent on PHE-SICH-CT-IDS PNG slices (ResNet18)."""

    name = "phe_classify"
    kind = "binary"
    labels = (LABEL,)
    Config = PheClassifyConfig
    source_report = "phe_sich_ct_ids_notes.txt"
    summary = "PHE-SICH PNG slices -> perihematomal edema present? ResNet18 binary, Grad-CAM"
    required_columns = ("patient_id", "image", "has_phe")
    id_columns = ("patient_id", "slice_index", "image")
    case_column = "image"

    # ---- data ---------------------------------------------------------------------------------
    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """PHE-SICH-CT-IDS layout -> manifest (one row per PNG slice with a VOC XML) + rejected.csv.

        ``workers`` is accepted for the CLI's sake (indexing reads headers only; it is serial).
        """
        from medtasks.data.phe_sich import index_phe_sich, write_phe_manifest

        if labels is not None:
            raise ValueError("phe_classify takes its labels from the VOC XML annotations; --labels is not used")
        df, rejected = index_phe_sich(source, require=("xml",), progress=progress)
        manifest, rej_path = write_phe_manifest(df, out, rejected)
        return PrepareResult(Path(manifest), Path(rej_path), len(df), len(rejected))

    def synthesize(self, cache_dir: Path) -> PrepareResult:
        from medtasks.synth.phe_sich import generate_phe_sich

        s = self.cfg.synth
        params = to_dict(s)
        tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        folder = Path(cache_dir) / f"phe_sich-synth-n{s.n_patients}-m{s.matrix}-seed{s.seed}-{tag}"
        generate_phe_sich(folder, n_patients=s.n_patients, seed=s.seed, matrix=s.matrix, slices=tuple(s.slices),
                          progress=False)
        return self.prepare(folder, folder / "manifest.csv", progress=False)

    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        """The manifest with absolute ``image`` paths and the label column ``phe`` (= ``has_phe``)."""
        df = read_manifest(path, self.required_columns, root=self.cfg.data.root, path_columns=("image",))
        bad = df["has_phe"].isna() | ~df["has_phe"].isin([0, 1])
        if bad.any():
            raise ManifestError(f"manifest {path}: {int(bad.sum())} row(s) have no 0/1 has_phe (e.g. "
                                f"{df.loc[bad, 'image'].iloc[0]}); re-run `medtasks prepare phe_classify` "
                                f"(it requires the VOC XML of every slice) or drop those rows")
        return df.assign(**{LABEL: df["has_phe"].astype(int)})

    def records(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        y = df[LABEL].to_numpy(np.float32) if LABEL in df.columns else np.zeros(len(df), np.float32)
        return [{"image": p, "label": np.array([v], np.float32)} for p, v in zip(df["image"], y)]

    def fit_state(self, train_records: list[dict[str, Any]]) -> None:
        """Channel mean/std: the grey training slices' (``input.normalize: dataset``) or ImageNet's."""
        inp = self.cfg.input
        if inp.normalize == "imagenet":
            if inp.channels != 3:
                raise ValueError(f"input.normalize=imagenet needs input.channels=3, got {inp.channels}")
            self.state["norm_mean"], self.state["norm_std"] = list(IMAGENET_MEAN), list(IMAGENET_STD)
        elif inp.normalize == "dataset":
            self.state["norm_mean"], self.state["norm_std"] = fit_grey_stats(
                [r["image"] for r in train_records], inp.size, inp.channels, inp.norm_samples, self.cfg.seed)
        log.info("input normalisation: %s", {k: self.state.get(k) for k in ("norm_mean", "norm_std")})

    # ---- builders -----------------------------------------------------------------------------
    def build_transforms(self, split: str) -> Compose:
        inp = self.cfg.input
        aug = build_augmentation(["image"], to_dict(self.cfg.augment), inp.size) if split == "train" else None
        return grey_pipeline(inp.size, inp.channels, self.state.get("norm_mean"), self.state.get("norm_std"), aug)

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return ImageClassifier(m.backbone, n_outputs=len(self.labels), in_channels=self.cfg.input.channels, dropout=m.dropout,
                             pretrained=m.pretrained, weights=m.weights)

    def build_loss(self) -> nn.Module:
        c = self.cfg.loss
        pos = None if c.pos_weight is None else [c.pos_weight]
        return LOSSES.get(c.name)(class_weights=[1.0], pos_weight=pos, label_smoothing=c.label_smoothing)

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        return find_images(source)

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

    def evaluate(self, run, df: pd.DataFrame, fit_result=None, warnings: list[str] | None = None) -> dict[str, Any]:
        """The kind-level evaluation plus the binary table with patient-bootstrap CIs on accuracy,
        precision, recall, F1 and ROC-AUC, sklearn's two-class report, and the Grad-CAM grids."""
        from sklearn.metrics import classification_report

        metrics = super().evaluate(run, df, fit_result, [*(warnings or []), LABEL_NOTE])
        binary = metrics  # the kind-level evaluation carries the binary table with CIs
        preds = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
        y, p = preds[f"true_{LABEL}"].to_numpy(int), preds[f"prob_{LABEL}"].to_numpy(float)
        thr = self.thresholds()[LABEL]
        # The notes' table: both classes' precision / recall / F1 / support and the averages.
        kw = dict(labels=[0, 1], target_names=["no PHE", "PHE"], zero_division=0)
        y_pred = (p >= thr).astype(int)
        metrics["classification_report"] = classification_report(y, y_pred, output_dict=True, **kw)
        write_text_atomic(run / "classification_report.txt", classification_report(y, y_pred, digits=4, **kw))
        if self.cfg.gradcam.enabled:
            metrics["gradcam"] = self.write_gradcam(run, preds)
        write_json_atomic(run / "metrics.json", metrics)
        log.info("phe_classify %s: accuracy %.4f precision %.4f recall %.4f f1 %.4f roc_auc %s",
                 metrics["split"], binary["accuracy"], binary["precision"], binary["recall"], binary["f1"],
                 binary["roc_auc"])
        return metrics

    def write_gradcam(self, run, preds: pd.DataFrame) -> dict[str, Any]:
        """``figures/extra_gradcam_{tp,fp,fn}.png`` for up to ``gradcam.per_kind`` test slices each.

        Deterministic choice: the most confident true and false positives (highest probability)
        and the most missed false negatives (lowest), ties by case id. A kind with no slice is
        skipped with a log line; so is everything when the target layer is not in the network.
        """
        from medtasks.viz.gradcam import gradcam_grid

        g = self.cfg.gradcam
        y, pred = preds[f"true_{LABEL}"].astype(int), preds[f"pred_{LABEL}"].astype(int)
        picks = {"tp": preds[(y == 1) & (pred == 1)], "fp": preds[(y == 0) & (pred == 1)],
                 "fn": preds[(y == 1) & (pred == 0)]}
        for kind in picks:  # a re-evaluation must not leave an earlier grid behind
            (run / "figures" / f"extra_gradcam_{kind}.png").unlink(missing_ok=True)
        if all(rows.empty for rows in picks.values()):
            log.info("Grad-CAM: no true positives, false positives or false negatives in the %s split; "
                     "no grid written", self.cfg.eval.split)
            return {kind: 0 for kind in picks}
        model = self.load_model(run, "best")
        if g.target_layer not in dict(model.named_modules()):
            log.warning("Grad-CAM skipped: layer %r is not in the network %s", g.target_layer, type(model).__name__)
            return {"skipped": f"target layer {g.target_layer!r} not in the network"}
        written: dict[str, Any] = {}
        display = grey_pipeline(self.cfg.input.size, channels=1)
        for kind, rows in picks.items():
            if rows.empty:
                log.info("Grad-CAM: no %s in the %s split; skipping that grid", GRADCAM_KINDS[kind], self.cfg.eval.split)
                written[kind] = 0
                continue
            rows = rows.sort_values([f"prob_{LABEL}", "case_id"], ascending=[kind == "fn", True]).head(g.per_kind)
            frame = rows.assign(**{LABEL: rows[f"true_{LABEL}"]})
            tf = self.build_transforms("test")
            images = torch.stack([tf(r)["image"] for r in self.records(frame)])
            backgrounds = np.stack([display({"image": p})["image"].numpy()[0] for p in rows["image"]])
            titles = [f"{Path(str(r.image)).stem}  truth {int(r[f'true_{LABEL}'])}  p={r[f'prob_{LABEL}']:.2f}"
                      for _, r in rows.iterrows()]
            gradcam_grid(model, images, g.target_layer, titles, run / "figures" / f"extra_gradcam_{kind}.png",
                         backgrounds=backgrounds, alpha=g.alpha,
                         suptitle=f"Grad-CAM ({g.target_layer}) of the PHE logit: {GRADCAM_KINDS[kind]} "
                                  f"({self.cfg.eval.split} split, threshold {self.thresholds()[LABEL]:.2f})")
            written[kind] = len(rows)
        return written
