"""ich_classify — RSNA intracranial hemorrhage, 6 labels per head-CT slice.

Source: ``seeds/ich_classify_rsna_report.txt``. DICOM -> HU (RescaleSlope/Intercept, RSNA
wrapped-pixel fix) -> brain / subdural / bone windows as 3 channels -> resize -> channel
normalisation; a position-aware backbone (slice ``z_normalized`` -> 64-d MLP, fused -> 256 -> 6)
trained with the RSNA-weighted BCE (any = 2).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.engines.utils import PrepareBatchExtraInput
from monai.transforms import Compose

import medtasks.losses  # noqa: F401  (registers losses)
import medtasks.models  # noqa: F401  (registers models)
from medtasks.config import to_dict
from medtasks.data.dicom_index import index_dicoms
from medtasks.data.manifest import Rejected, relative_paths
from medtasks.data.series import add_z_normalized, neighbour_paths
from medtasks.io.atomic import write_csv_atomic, write_json_atomic
from medtasks.io.rsna import read_rsna_labels, submission_frame
from medtasks.losses.classification import prevalence_pos_weight
from medtasks.registry import LOSSES, MODELS
from medtasks.tasks.contract import PrepareResult, register_task
from medtasks.tasks.ich_classify.config import LABELS, IchConfig
from medtasks.tasks.ich_classify.sequence import load_sequence_head, refine, train_sequence_head
from medtasks.tasks.kinds.classification import ClassificationTask
from medtasks.transforms.augment import build_augmentation
from medtasks.transforms.ct import ct_window_pipeline

log = logging.getLogger(__name__)

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MANIFEST_COLUMNS = ("patient_id", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "Z",
                    "any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural",
                    "z_normalized", "path")


@register_task("ich_classify")
class IchClassify(ClassificationTask):
    """Intracranial hemorrhage: 5 subtypes + any, per head-CT slice."""

    kind = "multilabel"
    labels = LABELS
    Config = IchConfig
    source_report = "ich_classify_rsna_report.txt"
    summary = "head-CT DICOM slices -> 6 hemorrhage labels; 3 CT windows, slice-position-aware CNN"
    required_columns = ("patient_id", "series_instance_uid", "sop_instance_uid", "z_normalized", "path", *LABELS)
    id_columns = ("patient_id", "series_instance_uid", "sop_instance_uid", "z_normalized")
    case_column = "sop_instance_uid"

    # ---- data ---------------------------------------------------------------------------------
    def prepare(self, source: Path, out: Path, labels: Path | None = None, workers: int | None = None,
                progress: bool = True) -> PrepareResult:
        """RSNA layout (``stage_2_train/ID_*.dcm`` + ``stage_2_train.csv``) -> manifest + rejected.csv."""
        source, out = Path(source), Path(out)
        if not source.is_dir():  # before the label file: "no label file" would send the user the wrong way
            raise FileNotFoundError(f"{source}: the source folder does not exist (or is not a folder); pass the RSNA "
                                    f"release's folder (stage_2_train/ and stage_2_train.csv)")
        if labels is None and (source / "stage_2_train.csv").is_file():
            labels = source / "stage_2_train.csv"
        if labels is None:
            raise FileNotFoundError(f"no label file: pass --labels <stage_2_train.csv> (none found in {source})")
        table = read_rsna_labels(labels, LABELS)
        journal = out.with_name(out.stem + ".scan-journal.jsonl")  # an interrupted prepare resumes from it
        df, rejected = index_dicoms(source, workers, progress, journal=journal)
        has = df["sop_instance_uid"].isin(table.index)
        for p in df.loc[~has, "path"]:
            rejected.add(p, "no_label", f"SOPInstanceUID not in {Path(labels).name}")
        df = df[has].join(table, on="sop_instance_uid")
        df = add_z_normalized(df)  # recompute on the labelled slices: positions of rejected slices are unknown
        df["path"] = relative_paths(df["path"], out.resolve().parent)
        df = df[list(MANIFEST_COLUMNS)].sort_values(["patient_id", "series_instance_uid", "Z"], kind="stable")
        write_csv_atomic(df, out)
        rej_path = out.with_name(out.stem + ".rejected.csv")
        rejected.write(rej_path)
        journal.unlink(missing_ok=True)
        log.info("prepare: %d slices of %d patients -> %s; %d rejected -> %s", len(df), df.patient_id.nunique(),
                 out, len(rejected), rej_path)
        return PrepareResult(out, rej_path, len(df), len(rejected))

    def synthesize(self, cache_dir: Path) -> PrepareResult:
        from medtasks.synth.head_ct import generate_head_ct

        s = self.cfg.synth
        params = to_dict(s)
        tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        folder = Path(cache_dir) / f"ich_classify-synth-n{s.n_patients}-seed{s.seed}-{tag}"
        labels = generate_head_ct(folder, **params)
        return self.prepare(folder, folder / "manifest.csv", labels=labels)

    def records(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        lab = (df[list(LABELS)].to_numpy(np.float32) if set(LABELS) <= set(df.columns)
               else np.zeros((len(df), 6), np.float32))
        context = self.cfg.input.context
        images = neighbour_paths(df, context) if context else df["path"].tolist()
        return [{"image": p, "label": lab[i], "z": np.float32(z)}
                for i, (p, z) in enumerate(zip(images, df["z_normalized"]))]

    def fit_state(self, train_records: list[dict[str, Any]]) -> None:
        """Channel mean/std of the windowed, resized training slices (``input.normalize: dataset``), and
        ``loss.pos_weight: prevalence`` from their labels."""
        if self.cfg.loss.pos_weight == "prevalence":
            self.state["pos_weight"] = prevalence_pos_weight(np.stack([r["label"] for r in train_records]), LABELS)
            log.info("loss pos_weight (negatives / positives in training): %s", self.state["pos_weight"])
        mode = self.cfg.input.normalize
        if mode == "imagenet":
            k = 2 * self.cfg.input.context + 1  # window-major channels: each window's mean repeats per slice
            self.state["norm_mean"] = [m for m in IMAGENET_MEAN for _ in range(k)]
            self.state["norm_std"] = [v for v in IMAGENET_STD for _ in range(k)]
        elif mode == "dataset":
            rng = np.random.default_rng(self.cfg.seed)
            pick = rng.choice(len(train_records), size=min(self.cfg.input.norm_samples, len(train_records)),
                              replace=False)
            load = self._deterministic()
            stack = np.stack([np.asarray(load({"image": train_records[i]["image"]})["image"]) for i in sorted(pick)])
            self.state["norm_mean"] = stack.mean(axis=(0, 2, 3)).round(6).tolist()
            self.state["norm_std"] = np.maximum(stack.std(axis=(0, 2, 3)), 1e-6).round(6).tolist()
        log.info("input normalisation: %s", {k: self.state.get(k) for k in ("norm_mean", "norm_std")})

    # ---- builders -----------------------------------------------------------------------------
    def _deterministic(self) -> Compose:
        return ct_window_pipeline(("image",), self.cfg.input.windows, self.cfg.input.size)

    def build_transforms(self, split: str) -> Compose:
        aug = (build_augmentation(["image"], to_dict(self.cfg.augment), self.cfg.input.size)
               if split == "train" else None)
        return ct_window_pipeline(("image",), self.cfg.input.windows, self.cfg.input.size,
                                  self.state.get("norm_mean"), self.state.get("norm_std"), augment=aug)

    def build_model(self):
        m = self.cfg.model
        return MODELS.get(m.name)(backbone=m.backbone, n_outputs=len(LABELS), in_channels=self.cfg.input.channels,
                                  use_position=m.use_position, position_dim=m.position_dim, fusion_dim=m.fusion_dim,
                                  dropout=m.dropout, pretrained=m.pretrained, weights=m.weights)

    def build_loss(self):
        c = self.cfg.loss
        pos = self.state.get("pos_weight") if c.pos_weight == "prevalence" else c.pos_weight
        return LOSSES.get(c.name)(class_weights=c.class_weights, pos_weight=pos, label_smoothing=c.label_smoothing)

    def train(self, run, df: pd.DataFrame, resume: bool = False, progress: bool = True):
        """The kind-level training (CV when configured), then the sequence head when enabled."""
        result = super().train(run, df, resume=resume, progress=progress)
        if self.cfg.sequence.enabled:
            write_json_atomic(run / "sequence.json", train_sequence_head(self, run, df, progress=False))
        return result

    def postprocess_logits(self, run, df: pd.DataFrame, logits: np.ndarray) -> np.ndarray:
        """Stage 2: the run's sequence head (when it trained one) refines each slice from its series."""
        head = load_sequence_head(self, run) if (run / "sequence").is_dir() else None
        return logits if head is None else refine(head, df, logits)

    def sampling_labels(self) -> tuple[str, ...]:
        return LABELS[:-1]  # the five subtypes; "any" follows from them

    def export_contract(self, run) -> dict[str, Any]:
        out = super().export_contract(run)
        out["position_input"] = ("z: the slice's position in its series, (Z - min Z) / (max Z - min Z) over the "
                                 "series' ImagePositionPatient z, 0.5 for a one-slice series; float32 (batch,)")
        out["preprocessing"]["recipe"] = (
            "HU = stored * RescaleSlope + RescaleIntercept; resize each slice to input.size (area); per window "
            "(level, width) in input.windows: clip((HU - level + width / 2) / width, 0, 1); channels window-major "
            "(channel i * k + j = window i of slice j, k = 2 * input.context + 1 neighbouring slices in position "
            "order); then (x - fitted.norm_mean[c]) / fitted.norm_std[c] when fitted")
        if (run / "sequence").is_dir():
            out["not_in_the_file"].append("the stage-2 sequence head (sequence/): medtasks refines each slice's "
                                          "logits from its series after this network; the file gives stage 1")
        return out

    def bundle_inputs(self, run) -> dict[str, Any]:
        """MONAI bundle inputs: every CT slice of ``dataset_dir`` with its series position ``z`` (and 2.5-D
        neighbours) from :func:`~medtasks.transforms.bundle.ct_series_datalist`, windowed and normalised by
        ``LoadCTWindowsd`` as :meth:`build_transforms` (``predict``); ``z`` reaches the network through MONAI's
        ``PrepareBatchExtraInput``."""
        inp = self.cfg.input
        mean, std = self.state.get("norm_mean"), self.state.get("norm_std")
        load = {"_target_": "medtasks.transforms.ct_load.LoadCTWindowsd", "keys": "image",
                "windows": [[float(lv), float(w)] for lv, w in inp.windows], "size": int(inp.size),
                "mean": mean, "std": std}
        return dict(
            datalist=f"$medtasks.transforms.bundle.ct_series_datalist(@dataset_dir, context={int(inp.context)})",
            preprocessing=[load], prepare_batch={"_target_": "PrepareBatchExtraInput", "extra_keys": ["z"]},
            batch_size=self.cfg.eval.batch_size, data_type="dicom", modality="CT",
            inputs_doc=("single-slice head-CT DICOM files (*.dcm, any folder depth), whole series: each slice's "
                        "position input z is its rank in its series' z range, so a folder with part of a series "
                        "gives other z values (as medtasks predict on that folder would)"),
            medtasks_components={
                "medtasks.transforms.bundle.ct_series_datalist": (
                    "the inputs with z = (Z - min Z) / (max Z - min Z) over each slice's series (0.5 for one slice) "
                    "and the 2.5-D neighbours: both depend on the whole series, which no per-item MONAI transform "
                    "sees"),
                "medtasks.transforms.ct_load.LoadCTWindowsd": (
                    "HU from the stored pixels with the RSNA wrapped-pixel fix, medtasks' area resize, the CT "
                    "windows and the fitted channel normalisation in one step; MONAI's PydicomReader has no RSNA fix "
                    "and its Resized(mode='area') differs from medtasks' resize at non-integer ratios (512 -> 224)")},
            packages=("pydicom", "opencv-python-headless"),
            notes=["`case_id` is the slice's SOPInstanceUID (medtasks predict's case_id); predict's other id columns "
                   "(patient, series, z_normalized) are not repeated. Files predict rejects are left out with a "
                   "log line."])

    def mixup_alpha(self) -> float:
        return float(self.cfg.loss.mixup_alpha)

    def prepare_batch(self) -> Any:
        return PrepareBatchExtraInput(extra_keys=("z",))

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        return index_dicoms(source)

    def write_predict_outputs(self, frame: pd.DataFrame, out_dir: Path) -> None:
        """Kaggle submission format: ``ID_<sop>_<subtype>,Label`` (probabilities)."""
        probs = frame[[f"prob_{lab}" for lab in LABELS]].to_numpy()
        write_csv_atomic(submission_frame(frame["sop_instance_uid"].tolist(), probs, LABELS),
                         out_dir / "submission.csv")

    # ---- evaluation ---------------------------------------------------------------------------
    def class_weights(self) -> list[float]:
        return list(self.cfg.loss.class_weights)

    def headline(self) -> tuple[str, ...]:
        return ("weighted_f1", "any_auc", "rsna_weighted_log_loss")

    def val_metrics(self, y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
        from medtasks.metrics.classification import rsna_weighted_log_loss

        out = super().val_metrics(y_true, y_prob)
        out["rsna_weighted_log_loss"] = rsna_weighted_log_loss(y_true, y_prob, self.class_weights())
        return out
