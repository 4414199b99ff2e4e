"""phe_segment — perihematomal edema (PHE) masks with a U-Net (PHE-SICH-CT-IDS, notes' task 3).

Source: ``seeds/phe_sich_ct_ids_notes.txt`` (task 3): a U-Net on the labelled slices, evaluated
by Dice / IoU / sensitivity / specificity pooled over all pixels (Dice 0.3936, IoU 0.2450,
sensitivity 0.5876, specificity 0.9995 on their validation slices), the pixel confusion matrix,
and a "mask -> slice has PHE" classification check. Their to-do list (early stopping, Dice
loss, augmentation, validation loss curve) is built in here.

Inputs: the PNG slice and PNG mask (``input.source: png``) or the axial slices of the NIfTI
volume and mask (``nifti``; HU, brain-windowed like the PNGs). Model: segmentation-models-pytorch
``Unet`` with a resnet34 encoder (no downloaded weights unless asked). Loss: BCE + Dice. The
label is the edema rim, not the hematoma. HD95 / ASSD / NSD are in mm from each patient's NIfTI
header (``eval.spacing_from_header``), else ``eval.pixel_spacing_mm``, else pixels (:meth:`case_spacing`).
Everything else is :class:`SegmentationTask`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import Compose, EnsureTyped, Lambdad, RepeatChanneld
from torch import nn

import medtasks.losses  # noqa: F401  (registers losses)
import medtasks.models  # noqa: F401  (registers models)
from medtasks.config import to_dict
from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.data.volume_inputs import find_volumes
from medtasks.io.dicom_seg import SegmentSpec
from medtasks.io.images import IMAGE_SUFFIXES, read_grey
from medtasks.registry import LOSSES, MODELS
from medtasks.tasks.contract import register_task
from medtasks.tasks.kinds.segmentation import SegmentationTask
from medtasks.tasks.kinds.slice_spacing import CaseSpacing, axial_slice_spacing
from medtasks.tasks.phe_segment.config import PheSegmentConfig
from medtasks.tasks.sources.phe_sich import PheSichSource, find_images
from medtasks.transforms.augment import build_augmentation
from medtasks.transforms.ct import apply_window
from medtasks.transforms.grey import LoadGreyImaged, channel_normalisation, grey_stats
from medtasks.transforms.resize import NormalizeChannelsd, ResizeImaged
from medtasks.transforms.slicing import LoadAxialSliced, LoadMaskd, axial_slice, read_mask

LABEL_NOTE = "Mask = perihematomal edema (PHE), the hypodense rim around the hematoma, not the hematoma itself."
SOURCE_COLUMNS = {"jpg": ("jpg", "jpg_mask"), "png": ("image", "mask"), "nifti": ("nifti_volume", "nifti_mask")}


@register_task("phe_segment")
class PheSegment(PheSichSource, SegmentationTask):
    """PHE masks on PHE-SICH-CT-IDS slices (PNG or NIfTI), smp U-Net, BCE + Dice."""

    labels = ("phe",)
    Config = PheSegmentConfig
    source_report = "phe_sich_ct_ids_notes.txt"
    summary = "PHE-SICH slices -> perihematomal edema masks, smp U-Net (resnet34), BCE+Dice, pooled & per-patient Dice"
    required_columns = ("patient_id", "slice_index", "image")
    id_columns = ("patient_id",)
    phe_require = ()   # every indexed slice; load_manifest checks the files of the chosen input.source
    phe_manifest = "manifest_segment.csv"
    dicom_segments = (SegmentSpec(1, "perihematomal edema", "MorphologicallyAbnormalStructure", "Edema"),)

    # ---- data ---------------------------------------------------------------------------------
    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        src = self.cfg.input.source
        cols = SOURCE_COLUMNS[src]
        df = read_manifest(path, (*self.required_columns, *cols), root=self.cfg.data.root,
                           path_columns=("image", "mask", "jpg", "jpg_mask", "nifti_volume", "nifti_mask"))
        missing = df[list(cols)].isna().any(axis=1) | (df[list(cols)].astype(str) == "").any(axis=1)
        if missing.any():
            raise ManifestError(f"manifest {path}: {int(missing.sum())} row(s) lack {' / '.join(cols)} (input.source="
                                f"{src}; e.g. {df.loc[missing, 'image'].iloc[0]}). "
                                "Re-run `medtasks prepare phe_segment` "
                                f"or choose another input.source ({', '.join(k for k in SOURCE_COLUMNS if k != src)})")
        return df

    def records(self, df: pd.DataFrame) -> list[dict[str, Any]]:
        img, lab = SOURCE_COLUMNS[self.cfg.input.source]
        img = img if img in df.columns else "image"   # predict: the image files found under --input
        has_label = lab in df.columns
        return [{"image": r[img], **({"label": r[lab]} if has_label else {}), "slice_index": int(r["slice_index"])}
                for r in df[[c for c in (img, lab, "slice_index") if c in df.columns]].to_dict("records")]

    def _window(self, hu: np.ndarray) -> np.ndarray:
        return apply_window(hu, self.cfg.input.window_level, self.cfg.input.window_width).astype(np.float32)

    def fit_state(self, train_records: list[dict[str, Any]]) -> None:
        inp = self.cfg.input
        load = self._pipeline(augment=False, normalise=False, with_label=False, channels=1)
        self.state.update(channel_normalisation(
            inp.normalize, inp.channels, lambda: grey_stats(train_records, load, inp.channels, inp.norm_samples,
                                                            self.cfg.seed)))

    # ---- builders -----------------------------------------------------------------------------
    def _pipeline(self, augment: bool, normalise: bool = True, with_label: bool = True,
                  channels: int | None = None, source: str | None = None) -> Compose:
        """The record -> tensor steps; ``source`` (default ``input.source``): how the slice is read — ``png`` /
        ``jpg`` (8-bit brain-windowed files) or ``nifti`` (an axial slice in HU, brain-windowed here)."""
        inp = self.cfg.input
        keys = ["image", "label"] if with_label else ["image"]
        if (source or inp.source) in ("png", "jpg"):
            steps: list = [LoadGreyImaged("image")] + ([LoadMaskd("label")] if with_label else [])
        else:
            steps = [LoadAxialSliced(keys, "slice_index", mask_keys=["label"]), Lambdad("image", self._window)]
        steps.append(ResizeImaged("image", inp.size, mode="area"))
        if with_label:
            steps.append(ResizeImaged("label", inp.size, mode="nearest"))
        if augment:
            steps += build_augmentation(["image"], to_dict(self.cfg.augment), inp.size,
                                        label_keys=["label"] if with_label else [])
        ch = inp.channels if channels is None else channels
        if ch > 1:
            steps.append(RepeatChanneld("image", repeats=ch))
        if normalise and self.state.get("norm_mean") is not None:
            steps.append(NormalizeChannelsd("image", self.state["norm_mean"], self.state["norm_std"], as_tensor=True))
        steps.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
        return Compose(steps)

    def build_transforms(self, split: str) -> Compose:
        """``volume``: axial slices of a NIfTI volume (predict on NIfTI / DICOM input), whatever ``input.source``
        the run trained on — the release's PNG / JPG slices are those slices in the same brain window."""
        if split == "volume":
            return self._pipeline(augment=False, with_label=False, source="nifti")
        return self._pipeline(augment=split == "train", with_label=split != "predict")

    def build_model(self) -> nn.Module:
        m = self.cfg.model
        return MODELS.get(m.name)(encoder=m.encoder, in_channels=self.cfg.input.channels, classes=1,
                                  encoder_weights=m.encoder_weights, weights=m.weights)

    def build_loss(self) -> nn.Module:
        c = self.cfg.loss
        return LOSSES.get(c.name)(bce_weight=c.bce_weight, dice_weight=c.dice_weight, batch_dice=c.batch_dice,
                                  pos_weight=c.pos_weight)

    # ---- native-resolution views --------------------------------------------------------------
    def truth_mask(self, row: pd.Series) -> np.ndarray:
        src = self.cfg.input.source
        if src == "nifti":
            return axial_slice(row["nifti_mask"], int(row["slice_index"]))[0] > 0
        return read_mask(row[SOURCE_COLUMNS[src][1]])[0] > 0.5

    def display_image(self, row: pd.Series) -> np.ndarray:
        src = self.cfg.input.source
        if src == "nifti" and "nifti_volume" in row.index:
            return self._window(axial_slice(row["nifti_volume"], int(row["slice_index"]))[0])
        col = SOURCE_COLUMNS.get(src, ("image",))[0]
        return read_grey(row[col] if col in row.index else row["image"])[0]

    def case_name(self, row: pd.Series) -> str:
        if "patient_id" in row.index and str(row.get("slice_index", "")) not in ("", "nan", "None"):
            try:
                return f"{int(row['patient_id']):04d}_{int(row['slice_index']):02d}"
            except (TypeError, ValueError):
                pass
        return super().case_name(row)

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        """PNG / JPG slices under ``source`` (masks as PNG), and NIfTI head-CT volumes or DICOM CT series (every
        axial slice in the run's brain window; a NIfTI mask, and a DICOM SEG for DICOM input)."""
        images, rejected = find_images(source)
        volumes, vol_rejected = find_volumes(source, skip_suffixes=IMAGE_SUFFIXES)
        # a file neither reader takes is rejected once (by find_volumes); find_images' unknown_file rows are the
        # volumes' files
        rejected = Rejected([r for r in rejected.rows if r["reason"] != "unknown_file"])
        rejected.extend(vol_rejected.rows)
        images = images.assign(slice_index=images["slice_index"].fillna(-1).astype(int))
        volumes = volumes.assign(image=volumes["volume"], patient_id=volumes["name"], slice_index=-1)
        return pd.concat([images, volumes], ignore_index=True), rejected

    def bundle_inputs(self, run) -> dict[str, Any]:
        """MONAI bundle inputs: the 2-D slice files of ``dataset_dir`` through :meth:`_pipeline` (``predict``) as
        MONAI config: medtasks' reader and area resize, MONAI's channel replication and normalisation. A run
        trained on NIfTI slices (``input.source=nifti``) has no bundle: its network reads HU volumes."""
        from medtasks.engine.bundle_spec import GREY_COMPONENTS, grey_preprocessing, image_files_datalist

        inp = self.cfg.input
        if inp.source == "nifti":
            raise ValueError("--format bundle: this phe_segment run was trained on axial slices of NIfTI volumes "
                             "(input.source=nifti); the bundle reads 2-D slice files. Export the network with "
                             "--format torchscript or onnx (the sidecar gives the window and normalisation), or "
                             "bundle a run trained with input.source=png")
        return dict(datalist=image_files_datalist(IMAGE_SUFFIXES), modality="CT", data_type="image",
                    inputs_doc=(f"2-D head-CT slice images ({', '.join(IMAGE_SUFFIXES)}; any folder depth), "
                                "brain-windowed like the release's PNGs (NIfTI volumes and DICOM series: medtasks "
                                "predict)"),
                    preprocessing=grey_preprocessing("$medtasks.io.images.read_grey", inp.size, inp.channels,
                                                     self.state.get("norm_mean"), self.state.get("norm_std"),
                                                     native_shape=True),
                    batch_size=self.cfg.eval.batch_size, medtasks_components=dict(GREY_COMPONENTS),
                    packages=("opencv-python-headless", "pillow"),
                    notes=["A file that cannot be decoded stops the run (medtasks predict lists it in rejected.csv "
                           "and goes on)."])

    def hd95_spacing(self) -> float | None:
        return self.cfg.eval.pixel_spacing_mm

    def case_spacing(self, row: pd.Series) -> CaseSpacing | None:
        """The slice's spacing from its patient's NIfTI header (``nifti_volume``) when it has a readable one,
        for every ``input.source``: the release's JPG / PNG slices are the NIfTI's axial slices on the same
        512x512 grid (the evaluation refuses a slice whose grid is not the header's); else
        ``eval.pixel_spacing_mm``; else None (pixels)."""
        vol = row.get("nifti_volume") if self.cfg.eval.spacing_from_header else None
        if isinstance(vol, str) and vol:
            sp = axial_slice_spacing(vol)
            if sp is not None:
                return sp
        return super().case_spacing(row)

    def evaluate(self, run, df: pd.DataFrame, fit_result=None, warnings: list[str] | None = None) -> dict[str, Any]:
        return super().evaluate(run, df, fit_result, [*(warnings or []), LABEL_NOTE])

