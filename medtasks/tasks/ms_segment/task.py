"""ms_segment — multiple-sclerosis lesions on FLAIR MRI with the report's LeakyReLU U-Net.

Source: ``seeds/ms_lesion_unet_report.txt``: a U-Net built from ``DoubleConv`` blocks
(Conv3x3 -> BN -> LeakyReLU, x2), channels 64 -> 1024, one output channel, no softmax, trained on
axial slices of the ISBI 2015 longitudinal FLAIR volumes (grey replicated to 3 channels) with
BCEDiceLoss (the poster's pytorch-nested-unet code: 0.5 x BCE + per-image Dice, ``loss.bce_weight=0.5``,
``loss.batch_dice=false``), SGD lr 1e-2 momentum 0.9, best model by validation Dice; each of its tables is one
switch of :mod:`medtasks.models.ms_unet`. It reports Dice 0.9392 / IoU 0.8523 and 13.79 FPS.

Volumes stay volumes: the manifest has one row per FLAIR (subject, timepoint); splits are by
subject (8:1:1 as the report, never by slice); the axial slices are a transform step
(:class:`~medtasks.transforms.slicing.LoadAxialSliced`: per-volume intensity normalisation,
grey x3 or 2.5-D neighbours). Training and slice inference are the segmentation kind's; the
evaluation (:mod:`medtasks.tasks.ms_segment.evaluate`) puts the slices back into volumes, drops
lesions below ``postprocess.min_lesion_mm3`` (a number or ``auto``: chosen on validation), and scores
them per slice, per volume and voxel-pooled, lesion-wise in 3-D (18-connected) under the ISBI
any-overlap rule and the report's IoU > 0.5 rule, with the ISBI composite, HD95, a per-lesion table
(``lesions.csv``), and the second rater's agreement when ``mask2`` exists. ``predict`` takes a NIfTI file or a
DICOM series folder and writes a mask NIfTI with the input's affine, plus overlay PNGs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose, EnsureTyped, RepeatChanneld
from torch import nn

import medtasks.losses  # noqa: F401  (registers losses)
import medtasks.models  # noqa: F401  (registers models)
from medtasks.config import to_dict
from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.io.dicom_seg import SegmentSpec
from medtasks.io.nifti import check_axial
from medtasks.registry import LOSSES, MODELS
from medtasks.tasks.contract import PrepareResult, register_task
from medtasks.tasks.kinds.segmentation import SegmentationTask
from medtasks.tasks.ms_segment.config import MsSegmentConfig
from medtasks.tasks.ms_segment.evaluate import evaluate_volumes, predict_volumes
from medtasks.tasks.ms_segment.slice_split import ALL_SPLITS, SLICE_SPLIT_WARNING, split_slices
from medtasks.tasks.ms_segment.volumes import VOLUME_COLUMNS, find_ms_volumes, parse_shape
from medtasks.transforms.augment import build_augmentation
from medtasks.transforms.resize import ResizeImaged
from medtasks.transforms.slicing import LoadAxialSliced, axial_slice, brain_slices, load_volume

log = logging.getLogger(__name__)

@register_task("ms_segment")
class MsSegment(SegmentationTask):
    """MS lesions on FLAIR slices (ISBI 2015 layout), the report's U-Net, volume-level evaluation."""

    labels = ("lesion",)
    Config = MsSegmentConfig
    source_report = "ms_lesion_unet_report.txt"
    summary = "FLAIR MRI (NIfTI) -> MS lesion masks; the report's LeakyReLU U-Net on axial slices, lesion-wise + ISBI"
    required_columns = VOLUME_COLUMNS
    group_column = "subject_id"
    id_columns = ("subject_id", "timepoint", "slice_index")
    case_column = "flair"
    input_column = "flair"
    dicom_segments = (SegmentSpec(1, "MS lesion", "MorphologicallyAbnormalStructure", "Lesion"),)

    # ---- data ---------------------------------------------------------------------------------
    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """ISBI 2015 layout (or a CSV of flair,mask,subject via ``--labels``) -> manifest + rejected.csv."""
        from medtasks.data.ms_isbi import index_ms_isbi, read_ms_manifest, write_ms_manifest

        df, rejected = read_ms_manifest(labels) if labels is not None else index_ms_isbi(source, progress=progress)
        manifest, rej_path = write_ms_manifest(df, out, rejected)
        return PrepareResult(Path(manifest), Path(rej_path), len(df), len(rejected))

    def synthesize(self, cache_dir: Path) -> PrepareResult:
        from medtasks.synth.ms_flair import generate_ms_flair

        s = self.cfg.synth
        folder = Path(cache_dir) / f"ms_flair-synth-n{s.n_subjects}-t{s.timepoints}-seed{s.seed}"
        generate_ms_flair(folder, n_subjects=s.n_subjects, timepoints=s.timepoints, seed=s.seed, progress=False)
        return self.prepare(folder, folder / "manifest.csv", progress=False)

    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        df = read_manifest(path, self.required_columns, root=self.cfg.data.root,
                           path_columns=("flair", "mask", "mask2"))
        df["subject_id"] = df["subject_id"].astype(str)
        if "shape" not in df.columns:
            raise ManifestError(f"manifest {path}: no 'shape' column (XxYxZ); re-run `medtasks prepare ms_segment`")
        return df

    def slice_frame(self, df: pd.DataFrame, training: bool = False) -> pd.DataFrame:
        """One row per axial slice of each volume row (brain slices only; in training, a seeded share of the
        lesion-free ones: ``input.empty_slice_fraction``)."""
        inp = self.cfg.input
        rng = np.random.default_rng(self.cfg.seed)
        rows = []
        for r in df.to_dict("records"):
            check_axial(r["flair"])
            vol = load_volume(r["flair"])
            brain = set(brain_slices(vol, inp.min_brain_fraction))
            mask = load_volume(r["mask"]) if isinstance(r.get("mask"), str) and r["mask"] else None
            lesion = (mask > 0).sum(axis=(0, 1)) if mask is not None else np.zeros(vol.shape[2])
            for k in range(vol.shape[2]):
                if k not in brain and not lesion[k]:
                    continue
                if training and not lesion[k] and rng.random() >= inp.empty_slice_fraction:
                    continue
                rows.append({**r, "slice_index": k, "lesion_pixels": int(lesion[k])})
        return pd.DataFrame(rows)

    # ---- data.split_level=slice: the report's protocol (medtasks.tasks.ms_segment.slice_split) -----------
    def slice_level(self) -> bool:
        return self.cfg.data.split_level == "slice"

    def make_splits(self, df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        if not self.slice_level():
            return super().make_splits(df)
        if self.cfg.cv.folds >= 2:
            raise ValueError("data.split_level=slice splits slices inside each scan; cv.folds needs "
                             "split_level=patient")
        return df.assign(split=ALL_SPLITS).reset_index(drop=True), [SLICE_SPLIT_WARNING]

    def eval_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.reset_index(drop=True) if self.slice_level() else super().eval_rows(df)

    def export_rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """The network sees axial slices: those of the evaluation volumes."""
        return self.slice_frame(self.eval_rows(df))

    def eval_slices(self, row: dict[str, Any], split: str) -> list[int]:
        """The slice indices of one volume row that ``split`` scores (all of them unless split by slice)."""
        ks = self.slice_frame(pd.DataFrame([row]))
        if self.slice_level():
            ks = split_slices(ks, self.cfg.seed, self.cfg.data.split)
            ks = ks[ks.split == split]
        return [int(k) for k in ks["slice_index"]] if len(ks) else []

    def split_train_val(self, df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        if not self.slice_level():
            return super().split_train_val(df)
        f, seed = self.cfg.data.split, self.cfg.seed
        train = split_slices(self.slice_frame(df, training=True), seed, f)
        val = split_slices(self.slice_frame(df), seed, f)
        train, val = train[train.split == "train"], val[val.split == "val"]
        if train.empty or val.empty:
            raise ValueError(f"data.split_level=slice gave {len(train)} train / {len(val)} val slices; "
                             f"check data.split ({list(f)})")
        return train.reset_index(drop=True), val.reset_index(drop=True)

    def loader(self, df: pd.DataFrame, split: str, shuffle: bool, batch_size: int) -> Any:
        """Volume rows become slice rows here (training: ``input.empty_slice_fraction`` of the empty ones)."""
        if "slice_index" not in df.columns:
            df = self.slice_frame(df, training=split == "train")
        return super().loader(df, split, shuffle, batch_size)

    def records(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        if "slice_index" not in df.columns:
            df = self.slice_frame(df)
        has_mask = "mask" in df.columns
        return [{"image": r["flair"], **({"label": r["mask"]} if has_mask else {}),
                 "slice_index": int(r["slice_index"])}
                for r in df.to_dict("records")]

    # ---- builders -----------------------------------------------------------------------------
    def build_transforms(self, split: str) -> Compose:
        inp = self.cfg.input
        with_label = split != "predict"
        keys = ["image", "label"] if with_label else ["image"]
        context = inp.context if inp.channels == "context" else 0
        steps: list = [LoadAxialSliced(keys, "slice_index", mask_keys=["label"], context=context,
                                       normalize=inp.normalize),
                       ResizeImaged("image", inp.size, mode="area")]
        if with_label:
            steps.append(ResizeImaged("label", inp.size, mode="nearest"))
        if split == "train":
            steps += build_augmentation(["image"], to_dict(self.cfg.augment), inp.size,
                                        label_keys=["label"] if with_label else [])
        if inp.channels == "replicate":
            steps.append(RepeatChanneld("image", repeats=3))
        steps.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
        return Compose(steps)

    def build_model(self) -> nn.Module:
        m, ch = self.cfg.model, self.cfg.input.n_channels
        if m.name == "smp_unet":
            return MODELS.get("smp_unet")(encoder=m.encoder, in_channels=ch, classes=1)
        return MODELS.get("ms_unet")(in_channels=ch, out_channels=1, activation=m.activation, order=m.order,
                                     convs_per_block=m.convs_per_block, max_channels=m.max_channels,
                                     softmax_head=m.softmax_head, base_channels=m.base_channels)

    def build_loss(self) -> nn.Module:
        c = self.cfg.loss
        return LOSSES.get(c.name)(bce_weight=c.bce_weight, dice_weight=c.dice_weight, batch_dice=c.batch_dice,
                                  pos_weight=c.pos_weight)

    # ---- native-resolution views (one slice) --------------------------------------------------
    def native_shape(self, row: pd.Series) -> tuple[int, int]:
        x, y = parse_shape(row["shape"])[:2]
        return (y, x)

    def truth_mask(self, row: pd.Series) -> np.ndarray:
        return axial_slice(row["mask"], int(row["slice_index"]))[0] > 0

    def display_image(self, row: pd.Series) -> np.ndarray:
        plane = axial_slice(row["flair"], int(row["slice_index"]))[0]
        lo, hi = np.percentile(plane[plane != 0], [0.5, 99.5]) if (plane != 0).any() else (0.0, 1.0)
        return np.clip((plane - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)

    def case_name(self, row: pd.Series) -> str:
        return f"{row['subject_id']}_{row['timepoint']}_{int(row['slice_index']):03d}"

    def case_ids(self, df: pd.DataFrame) -> pd.Series:
        """Volume rows: ``<subject>_<timepoint>``, the case_id of the volume evaluation's predictions.csv."""
        return df["subject_id"].astype(str) + "_" + df["timepoint"].astype(str)

    # ---- evaluation / predict -----------------------------------------------------------------
    def evaluate(self, run, df: pd.DataFrame, fit_result=None, warnings: list[str] | None = None) -> dict[str, Any]:
        return evaluate_volumes(self, run, df, fit_result, warnings)

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        return find_ms_volumes(Path(source))

    def bundle_spec(self, run, df: pd.DataFrame) -> Any:
        """MONAI bundle parts: each FLAIR NIfTI of ``dataset_dir`` as :func:`predict_volumes` sees it — MONAI's
        ``LoadImaged`` (the affine ``SaveImaged`` writes with), the brain slices stacked by
        :class:`~medtasks.transforms.bundle.BrainSliceStackd`, MONAI's ``SliceInferer`` running the 2-D network
        over them, and :class:`~medtasks.transforms.bundle.SliceProbabilitiesToVolumed` back to the volume's grid
        with ``eval.threshold`` and the run's minimum lesion size; ``masks/<name>.nii.gz`` by ``SaveImaged``."""
        from medtasks.engine.bundle_spec import BundleSpec
        from medtasks.tasks.ms_segment.evaluate import _min_lesion_size

        inp, e = self.cfg.input, self.cfg.eval
        min_mm3 = _min_lesion_size(self)
        return BundleSpec(
            datalist=("$[{'image': p, 'flair': p} for p in [str(f.resolve()) for f in "
                      "sorted(pathlib.Path(@dataset_dir).rglob('*')) if f.is_file() and not f.name.startswith('.') "
                      "and f.name.lower().endswith(('.nii', '.nii.gz'))]]"),
            preprocessing=[
                {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": False},
                {"_target_": "medtasks.transforms.bundle.BrainSliceStackd", "keys": "image", "path_key": "flair",
                 "size": int(inp.size), "context": int(inp.context) if inp.channels == "context" else 0,
                 "normalize": inp.normalize, "replicate": 3 if inp.channels == "replicate" else 0,
                 "min_brain_fraction": float(inp.min_brain_fraction)}],
            inferer={"_target_": "SliceInferer", "roi_size": [int(inp.size), int(inp.size)],
                     "sw_batch_size": int(e.batch_size), "spatial_dim": 2, "progress": False},
            postprocessing=[
                {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
                {"_target_": "medtasks.transforms.bundle.SliceProbabilitiesToVolumed", "keys": "pred",
                 "path_key": "flair", "threshold": "@threshold", "min_lesion_mm3": "@min_lesion_mm3",
                 "connectivity": int(e.connectivity)},
                {"_target_": "SaveImaged", "keys": "pred", "meta_keys": "image_meta_dict",
                 "output_dir": "$os.path.join(@output_dir, 'masks')", "output_ext": ".nii.gz",
                 "output_dtype": "$numpy.uint8", "resample": False, "separate_folder": False, "output_postfix": "",
                 "print_log": False}],
            writers=[], params={"threshold": float(e.threshold), "min_lesion_mm3": float(min_mm3)},
            data_type="nibabel", modality="MR (FLAIR)", output_format="segmentation",
            inputs_doc=("FLAIR volumes as NIfTI (.nii / .nii.gz, any folder depth) whose third voxel axis is axial "
                        "(DICOM series: medtasks predict converts them)"),
            outputs_doc=(f"`masks/<name>.nii.gz`: the lesion mask (uint8 0/1) in the input's own voxel grid and "
                         f"affine: slice probabilities >= {e.threshold}, "
                         + (f"lesions under {min_mm3:g} mm^3 ({e.connectivity}-rank connectivity) removed"
                            if min_mm3 > 0 else "no minimum lesion size (the run's is 0)")),
            medtasks_components={
                "medtasks.transforms.bundle.BrainSliceStackd": (
                    "the brain slices (input.min_brain_fraction) with the volume's own normalisation "
                    f"({inp.normalize}: statistics of the non-zero voxels applied to every voxel; MONAI's "
                    "NormalizeIntensity(nonzero=True) leaves the zero voxels at 0, 4-5 z-units from medtasks' value on "
                    "the synthetic FLAIRs) and medtasks' area resize"),
                "medtasks.transforms.bundle.SliceProbabilitiesToVolumed": (
                    "each slice's probability back to the volume's grid (bilinear, per-volume size), the threshold "
                    "and the minimum lesion size in mm^3 from the header's voxel size, as medtasks predict")},
            packages=("nibabel", "opencv-python-headless", "scikit-image"),
            notes=["The bundle writes the masks; medtasks predict also writes predictions.csv (lesion count and "
                   "volume), overlays and, for DICOM input, a DICOM SEG.",
                   "A mask's file name is the input's (MONAI's SaveImaged); medtasks predict names it after the "
                   "part of the name before `.nii`.",
                   "A volume that is not an axial stack or cannot be read stops the run (medtasks predict lists it in "
                   "rejected.csv and goes on)."])

    def predict_frame(self, run, df: pd.DataFrame, progress: bool = True, out_dir: Path | None = None,
                      probabilities: bool = False) -> pd.DataFrame:
        return predict_volumes(self, run, df, out_dir, progress, probabilities)

