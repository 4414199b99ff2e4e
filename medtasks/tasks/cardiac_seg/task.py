"""cardiac_seg — myocardium, aortic valve and calcification in cardiac CT, SwinUNETR split by class.

Source: ``seeds/cardiac_swinunetr_report.txt`` (AI CUP 2025): one SwinUNETR for the large
structures (out 3: background, myocardium, valve; Dice + CE; AdamW 1e-4; AMP; Spacing 1 mm;
early stopping on validation Dice, patience 20), one for calcium (out 2 on the relabelled
``label == 3`` mask, native spacing, patches biased to calcium, a recall-leaning loss, model
selection by (recall + lesion F1) / 2), a patient-level "has calcium" ResNet-10 on the volume
resized to 128^3 (all positives plus sampled negatives, CE), then fusion: the class-1/2 labels
as the base, calcium voxels overwrite where the calcium model says so, behind a gate
(``always`` | ``classifier`` | ``seg_presence``: at least k voxels, the report's final choice).

Two switches follow the report's text where our default differs: ``class12.ignore_classes: [0, 3]``
(l.60, l.129: the class-1/2 loss "ignores class 0 and class 3"; a masked Dice + CE,
:class:`~medtasks.losses.segmentation.MaskedDiceCELoss`; default ``[]``: calcium relabelled
background and every voxel scored; ignoring 0 leaves background voxels unsupervised, so the network
learns myocardium against valve only — ``[3]`` is the milder reading) and ``input.clip: false``
(l.125: ``ScaleIntensityRanged`` with MONAI's default ``clip=False``; default ``true``). Calcium
lesions below ``postprocess.min_lesion_mm3`` (a number or ``auto``: chosen on validation) are dropped
before the gate (:mod:`medtasks.tasks.cardiac_seg.calcium`).

Each branch trains on the shared engine (:func:`medtasks.engine.trainer.fit`) into its own
folder of the run (``class12/``, ``class3/``, ``gate/``: checkpoints, history), with
sliding-window validation scored batch by batch. Inference and evaluation:
:mod:`medtasks.tasks.cardiac_seg.infer` (sliding window, inverse transforms back to the input
space, fusion, gates) and :mod:`medtasks.tasks.cardiac_seg.evaluate` (per-patient metrics, the three
gate modes compared).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import (
    Compose,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    Orientationd,
    RandCropByLabelClassesd,
    Resized,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)
from torch import nn

import medtasks.losses  # noqa: F401  (registers losses)
import medtasks.models  # noqa: F401  (registers models)
from medtasks.data.cardiac import index_cardiac, write_cardiac_manifest
from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.data.volume_inputs import find_volumes
from medtasks.engine.trainer import FitResult, Precision, Schedule, TrainingSpec, build_optimizer, fit
from medtasks.io.atomic import copy_file_atomic
from medtasks.io.dicom_seg import SegmentSpec
from medtasks.registry import LOSSES, MODELS
from medtasks.rundir import RunDir
from medtasks.synth.cardiac_ct import generate_cardiac_ct
from medtasks.tasks.cardiac_seg.config import CLASSES, CardiacSegConfig
from medtasks.tasks.cardiac_seg.evaluate import evaluate_cardiac, predict_cardiac
from medtasks.tasks.cardiac_seg.infer import stage_scores
from medtasks.tasks.contract import PrepareResult, Task, register_task

log = logging.getLogger(__name__)


@register_task("cardiac_seg")
class CardiacSeg(Task):
    """Cardiac CT: class-1/2 SwinUNETR + calcium SwinUNETR + patient gate, fused (AI CUP 2025 layout)."""

    kind = "segmentation"
    labels = tuple(CLASSES.values())
    Config = CardiacSegConfig
    source_report = "cardiac_swinunetr_report.txt"
    summary = "Cardiac CT (NIfTI) -> myocardium / valve / calcium; SwinUNETR per class group, gated fusion"
    required_columns = ("patient_id", "image", "label")
    input_column = "image"
    case_column = "patient_id"
    probability_maps = True
    dicom_segments = (SegmentSpec(1, "myocardium", "Tissue", "CardiacMuscle"),
                      SegmentSpec(2, "aortic valve", "AnatomicalStructure", "AorticValve"),
                      SegmentSpec(3, "aortic valve calcification", "MorphologicallyAbnormalStructure",
                                  "CalcifiedHeartValve"))

    # ---- data ---------------------------------------------------------------------------------
    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """AI CUP layout -> manifest (image + label pairs) + rejected.csv (shape/affine/label checks)."""
        if labels is not None:
            raise ValueError("cardiac_seg pairs training_label/patientNNNN_gt.nii.gz itself; --labels is not used")
        df, rejected = index_cardiac(source, progress=progress)
        manifest, rej_path = write_cardiac_manifest(df, out, rejected)
        return PrepareResult(Path(manifest), Path(rej_path), len(df), len(rejected))

    def synthesize(self, cache_dir: Path) -> PrepareResult:
        s = self.cfg.synth
        shape = "x".join(str(v) for v in s.shape)
        folder = Path(cache_dir) / f"cardiac_ct-synth-n{s.n_patients}-c{s.calcium_fraction}-{shape}-seed{s.seed}"
        generate_cardiac_ct(folder, n_patients=s.n_patients, shape=tuple(s.shape), spacing=tuple(s.spacing),
                            calcium_fraction=s.calcium_fraction, seed=s.seed, progress=False)
        return self.prepare(folder, folder / "manifest.csv", progress=False)

    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        df = read_manifest(path, self.required_columns, root=self.cfg.data.root, path_columns=("image", "label"))
        if (df["label"] == "").any():
            raise ManifestError(f"manifest {path}: {int((df['label'] == '').sum())} row(s) without a label; training "
                                f"and evaluation need labels (use `medtasks predict` for unlabelled volumes)")
        df["patient_id"] = df["patient_id"].astype(str)
        if "has_calcium" not in df.columns:
            raise ManifestError(f"manifest {path}: no has_calcium column; re-run `medtasks prepare cardiac_seg`")
        df["has_calcium"] = df["has_calcium"].astype(int)
        return df

    def fold_labels(self) -> list[str]:
        return ["has_calcium"]

    # ---- transforms ---------------------------------------------------------------------------
    def base_transforms(self, keys: list[str], stage: str) -> list:
        """Load -> channel first -> RAS -> HU window to [0, 1] (clipped unless ``input.clip=false``, the report's
        MONAI default); class-1/2 also resampled to ``input.spacing``."""
        inp = self.cfg.input
        steps = [LoadImaged(keys, image_only=True), EnsureChannelFirstd(keys),
                 Orientationd(keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
                 ScaleIntensityRanged("image", a_min=inp.hu_min, a_max=inp.hu_max, b_min=0.0, b_max=1.0,
                                      clip=inp.clip)]
        if stage == "class12":
            modes = ["bilinear"] + ["nearest"] * (len(keys) - 1)
            steps.append(Spacingd(keys, pixdim=tuple(inp.spacing), mode=modes))
        return steps

    def stage_transforms(self, stage: str, split: str) -> Compose:
        with_label = split in ("train", "val")
        if stage == "gate":
            size = self.cfg.gate_model.size
            return Compose([*self.base_transforms(["image"], "gate"), Resized("image", (size,) * 3, mode="trilinear"),
                            EnsureTyped("image", dtype=torch.float32, track_meta=False)])
        keys = ["image", "label"] if with_label else ["image"]
        c = self.stage_config(stage)
        steps = self.base_transforms(keys, stage)
        # class12 predicts 0/1/2 only: calcium voxels count as background there (the report leaves class 3 to its
        # own branch) unless training ignores them (class12.ignore_classes has 3: label 3 kept for the masked loss,
        # never a patch centre); validation always scores them as background. class3: the binary calcium mask
        keep3 = stage == "class12" and split == "train" and 3 in c.ignore_classes
        ratios = [*c.ratios, 0.0] if keep3 else list(c.ratios)
        if with_label and not keep3:
            orig, target = ([3], [0]) if stage == "class12" else ([1, 2, 3], [0, 0, 1])
            steps.append(MapLabelValued("label", orig_labels=orig, target_labels=target))
        if split == "train":
            steps += [SpatialPadd(keys, spatial_size=(c.patch,) * 3),
                      RandCropByLabelClassesd(keys, "label", spatial_size=(c.patch,) * 3, ratios=ratios,
                                              num_classes=len(ratios), num_samples=c.num_samples, warn=False)]
        steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=split == "predict"))
        return Compose(steps)

    # ---- models -------------------------------------------------------------------------------
    def stage_config(self, stage: str) -> Any:
        """The config section of a stage: ``class12``, ``class3`` or ``gate_model``."""
        return self.cfg.gate_model if stage == "gate" else getattr(self.cfg, stage)

    def build_stage_model(self, stage: str) -> nn.Module:
        c = self.stage_config(stage)
        if stage == "gate":
            return MODELS.get(c.model)(in_channels=1, num_classes=2)
        return MODELS.get(c.model)(in_channels=1, out_channels=3 if stage == "class12" else 2,
                                   feature_size=c.feature_size, use_checkpoint=c.use_checkpoint)

    def build_stage_loss(self, stage: str) -> nn.Module:
        c = self.stage_config(stage)
        if c.loss == "tversky":
            return LOSSES.get("tversky")(alpha=c.tversky_alpha, beta=c.tversky_beta)
        if c.loss == "dice_ce":
            return LOSSES.get("dice_ce")(ignore_classes=list(getattr(c, "ignore_classes", [])))
        return LOSSES.get(c.loss)()

    def load_stage_model(self, run: RunDir, stage: str, which: str = "best") -> nn.Module:
        return self.restore(self.build_stage_model(stage), run / stage / "checkpoints" / f"{which}.pt",
                            hint=f"train the {stage} stage (stages=[{stage}])")

    # ---- training -----------------------------------------------------------------------------
    def stage_records(self, stage: str, df: pd.DataFrame, split: str) -> list[dict[str, Any]]:
        rows = df[df.split == split]
        if stage == "gate" and split == "train":  # all positives + sampled negatives (the report: 10 + 20)
            pos, neg = rows[rows.has_calcium == 1], rows[rows.has_calcium == 0]
            n_neg = min(len(neg), int(round(self.cfg.gate_model.negatives_per_positive * max(len(pos), 1))))
            rows = pd.concat([pos, neg.sample(n=n_neg, random_state=self.cfg.seed)])
        ratio = self.stage_config(stage).negatives_per_positive
        if stage == "class3" and split == "train" and ratio is not None:
            pos, neg = rows[rows.has_calcium == 1], rows[rows.has_calcium == 0]
            n_neg = min(len(neg), int(round(ratio * len(pos))))
            rows = pd.concat([pos, neg.sample(n=n_neg, random_state=self.cfg.seed)])
        if stage == "class3" and split == "val" and (rows.has_calcium == 1).any():
            rows = rows[rows.has_calcium == 1]  # the report validates the calcium model on positive cases
        if stage == "gate":
            return [{"image": r.image, "label": np.int64(r.has_calcium)} for r in rows.itertuples()]
        return [{"image": r.image, "label": r.label} for r in rows.itertuples()]

    def stage_loader(self, stage: str, df: pd.DataFrame, split: str, batch_size: int) -> Any:
        return self.make_loader(self.stage_records(stage, df, split), self.stage_transforms(stage, split),
                                split == "train", batch_size)

    def train(self, run: RunDir, df: pd.DataFrame, resume: bool = False, progress: bool = True) -> FitResult:
        """Train ``stages`` in turn, each in ``<run>/<stage>/``; the class-1/2 history is the run's history.csv."""
        results: dict[str, FitResult] = {}
        device = self.device()
        for stage in self.cfg.stages:
            if stage == "gate" and not self.cfg.gate_model.enabled:
                continue
            c = self.stage_config(stage)
            model, loss = self.build_stage_model(stage), self.build_stage_loss(stage)
            opt = build_optimizer(model.parameters(), c.optimizer, c.lr, c.weight_decay, c.momentum)
            monitor, score_kw = stage_scores(self, stage)
            log.info("cardiac_seg: training %s (%d train / %d val volumes) on %s", stage,
                     len(self.stage_records(stage, df, "train")), len(self.stage_records(stage, df, "val")), device)
            s = self.cfg.scheduler
            schedule = Schedule(epochs=c.epochs, monitor=monitor, mode="max", patience=c.patience,
                                scheduler=c.scheduler, factor=s.factor, sched_patience=s.patience, min_lr=s.min_lr,
                                steps_per_epoch=c.steps_per_epoch)
            # channels-last is a 2-D layout: the 3-D networks keep the default one
            precision = Precision(amp=self.cfg.train.amp, cpu_bf16=self.cfg.train.cpu_bf16, channels_last=False)
            results[stage] = fit(TrainingSpec(
                network=model, optimizer=opt, loss_fn=loss,
                train_loader=self.stage_loader(stage, df, "train", c.batch_size),
                val_loader=self.stage_loader(stage, df, "val", 1), run_dir=run / stage, device=device,
                schedule=schedule, precision=precision, resume=resume, progress=progress,
                tracking=self.tracking(run / stage), seed=self.cfg.seed, **score_kw))
        first = results.get("class12") or next(iter(results.values()))
        copy_file_atomic(first.history_path, run / "history.csv")
        self.state["stages"] = {s: {"best_epoch": r.best_epoch, "best_score": r.best_score, "epochs_run": r.epochs_run,
                                    "train_time_s": r.train_time_s} for s, r in results.items()}
        self.save_state(run)
        return FitResult(best_epoch=first.best_epoch, best_score=first.best_score,
                         epochs_run=sum(r.epochs_run for r in results.values()),
                         train_time_s=round(sum(r.train_time_s for r in results.values()), 1),
                         best_path=first.best_path, last_path=first.last_path, history_path=run / "history.csv")

    # ---- evaluation / predict -----------------------------------------------------------------
    def evaluate(self, run: RunDir, df: pd.DataFrame, fit_result: FitResult | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        return evaluate_cardiac(self, run, df, fit_result, warnings)

    def export_networks(self, run: RunDir, df: pd.DataFrame, n_inputs: int) -> list[Any]:
        """One file per trained stage (``class12``, ``class3``, ``gate``). Example inputs: windows of the first
        evaluation volume, preprocessed as predict does (the segmenters see ``patch^3`` windows of a sliding-window
        pass; the gate its whole resized volume)."""
        from monai.transforms import SpatialPad

        from medtasks.config import to_dict
        from medtasks.engine.export import ExportedNetwork

        image = self.eval_rows(df)["image"].iloc[0]
        nets = []
        for stage in [s for s in ("class12", "class3", "gate") if (run / s / "checkpoints" / "best.pt").is_file()]:
            x = self.stage_transforms(stage, "predict")({"image": image})["image"]
            x = torch.as_tensor(x.as_tensor() if hasattr(x, "as_tensor") else x, dtype=torch.float32)
            c, i = self.stage_config(stage), self.cfg.infer
            contract: dict[str, Any] = {"stage": stage, "preprocessing": {
                "medtasks_transforms": [type(t).__name__ for t in self.stage_transforms(stage, "predict").transforms],
                "input": to_dict(self.cfg.input), "orientation": "RAS"}}
            if stage == "gate":
                inputs = (x[None],)
                contract.update(output={"logits": "(batch, 2)", "probability": "softmax(logits)[:, 1] = P(calcium)"},
                                classifier_threshold=i.classifier_threshold)
            else:
                p = c.patch
                x = SpatialPad((p, p, p))(x)
                starts = [(s - p) // 2 for s in x.shape[1:]]
                window = x[:, starts[0]:starts[0] + p, starts[1]:starts[1] + p, starts[2]:starts[2] + p]
                inputs = (window[None].repeat(max(1, min(n_inputs, 2)), 1, 1, 1, 1),)
                classes = "0 background, 1 myocardium, 2 aortic valve" if stage == "class12" else "0 rest, 1 calcium"
                contract.update(output={"logits": f"(batch, {3 if stage == 'class12' else 2}, {p}, {p}, {p})",
                                        "labels": f"argmax over channels: {classes}"},
                                sliding_window={"roi_size": [p] * 3, "overlap": i.overlap, "mode": i.mode},
                                spacing_mm=list(self.cfg.input.spacing) if stage == "class12" else "native",
                                fusion=("start from class12's labels; where class3 predicts calcium, write 3, if the "
                                        f"gate ({i.gate}) is open (min_calcium_voxels={i.min_calcium_voxels}, "
                                        f"classifier_threshold={i.classifier_threshold}); then undo the resampling "
                                        "and reorientation"))
            model = self.load_stage_model(run, stage).cpu().eval()
            nets.append(ExportedNetwork(stage, model, inputs, ("image",), contract=contract))
        return nets

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        """NIfTI CT volumes and DICOM CT series under ``source`` (:mod:`medtasks.data.volume_inputs`)."""
        found, rejected = find_volumes(source)
        return (found.rename(columns={"volume": "image", "name": "patient_id"})[["image", "patient_id", "dicom_files"]],
                rejected)

    def predict_frame(self, run: RunDir, df: pd.DataFrame, progress: bool = True, out_dir: Path | None = None,
                      probabilities: bool = False) -> pd.DataFrame:
        return predict_cardiac(self, run, df, out_dir, progress, probabilities)

