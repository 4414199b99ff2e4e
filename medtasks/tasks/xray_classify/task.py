"""xray_classify — pneumonia vs normal on chest radiographs, transfer learning (Kermany release).

Source: ``seeds/chest_xray_transfer_report.txt``: ResNet-18 and VGG-16 (torchvision), input 224
then 256, cross-entropy then focal loss against the class imbalance; transfer modes compared:
the full pretrained network fine-tuned, VGG-16 with ``features`` layers 2-30 frozen, and only
the last layer trained (linear probe: ResNet-18 75.33%, VGG-16 70.47% test accuracy against
87.59% / 86.23% fine-tuned). The report does not say which test split it used (its section 1.5
mentions 16 test images, the size of the release's val folder); see the task card.

Data: the Kermany layout ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`` and CR/DX DICOM
radiographs (:mod:`medtasks.data.chest_xray`, :mod:`medtasks.io.radiograph`: MONOCHROME1
inverted, the full bit depth kept until the [0, 1] normalisation). Splits group images by child
(``personN``): the release's own folders leak children between train and test and its val
folder holds 16 images, too few to select a model on (``resplit`` in the config).
Model: a registered backbone + linear head, wrapped by :func:`medtasks.models.transfer.apply_transfer`;
the optimiser only sees trainable parameters; Grad-CAM grids of TP / FP / FN test images.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from medtasks.config import to_dict
from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.data.splits import assign_splits
from medtasks.io import images
from medtasks.io.radiograph import RADIOGRAPH_SUFFIXES, is_dicom, probe_radiograph, read_radiograph
from medtasks.models.transfer import apply_transfer, trainable_fraction
from medtasks.registry import LOSSES
from medtasks.tasks.contract import PrepareResult, register_task
from medtasks.tasks.kinds.grey_classifier import GreyImageClassifier
from medtasks.tasks.xray_classify.config import XrayClassifyConfig

log = logging.getLogger(__name__)

LABEL = "pneumonia"


@register_task("xray_classify")
class XrayClassify(GreyImageClassifier):
    """Chest radiograph -> pneumonia? ResNet18 / VGG16, CE / weighted CE / focal, three transfer modes."""

    kind = "binary"
    labels = (LABEL,)
    Config = XrayClassifyConfig
    source_report = "chest_xray_transfer_report.txt"
    summary = "Chest X-ray (Kermany JPEG or CR/DX DICOM) -> pneumonia; ResNet18/VGG16, focal loss, transfer modes"
    required_columns = ("patient_id", "image", LABEL)
    id_columns = ("patient_id", "image")
    class_names = ("NORMAL", "PNEUMONIA")

    def read_image(self, path: str | Path) -> np.ndarray:  # type: ignore[override]
        return read_radiograph(path, voi=self.cfg.input.voi)

    # ---- data ---------------------------------------------------------------------------------
    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """Kermany layout (+ DICOM) -> manifest (one row per image) + rejected.csv; labels from the folders."""
        from medtasks.data.chest_xray import index_chest_xray, write_chest_xray_manifest

        if labels is not None:
            raise ValueError("xray_classify takes its labels from the NORMAL / PNEUMONIA folders; --labels is not used")
        df, rejected = index_chest_xray(source, progress=progress)
        manifest, rej_path = write_chest_xray_manifest(df, out, rejected)
        return PrepareResult(Path(manifest), Path(rej_path), len(df), len(rejected))

    def synthesize(self, cache_dir: Path) -> PrepareResult:
        from medtasks.synth.chest_xray import generate_chest_xray

        s = self.cfg.synth
        params = to_dict(s)
        tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        folder = Path(cache_dir) / f"chest_xray-synth-n{s.n_children}-s{s.size}-seed{s.seed}-{tag}"
        generate_chest_xray(folder, n_children=s.n_children, images_per_child=tuple(s.images_per_child),
                            pneumonia_fraction=s.pneumonia_fraction, size=s.size, seed=s.seed, dicom=s.dicom,
                            progress=False)
        return self.prepare(folder, folder / "manifest.csv", progress=False)

    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        df = read_manifest(path, self.required_columns, root=self.cfg.data.root, path_columns=("image",))
        bad = ~df[LABEL].isin([0, 1])
        if bad.any():
            raise ManifestError(f"manifest {path}: {int(bad.sum())} row(s) have no 0/1 {LABEL} (e.g. "
                                f"{df.loc[bad, 'image'].iloc[0]}); re-run `medtasks prepare xray_classify`")
        return df.assign(**{LABEL: df[LABEL].astype(int)})

    def make_splits(self, df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """``resplit.mode``: ``grouped`` (the base's patient-grouped split), ``official_test`` or ``release``."""
        if "split" in df.columns and self.cfg.resplit.mode != "grouped":
            log.warning("the manifest has a split column: it is used as is and resplit.mode=%s is ignored "
                        "(remove the column to let medtasks split)", self.cfg.resplit.mode)
        if self.cfg.resplit.mode == "release" and "split" not in df.columns:
            return self._release_splits(df)
        if self.cfg.resplit.mode == "grouped" or "split" in df.columns:
            return super().make_splits(df)
        if "source_split" not in df.columns or not (df["source_split"] == "test").any():
            raise ManifestError("resplit.mode=official_test needs a source_split column with 'test' rows "
                                "(the release's test folder); use resplit.mode=grouped")
        test = df["source_split"] == "test"
        test_children = set(df.loc[test, "patient_id"].astype(str))
        leak = ~test & df["patient_id"].astype(str).isin(test_children)
        warnings = []
        if leak.any():
            warnings.append(f"{int(leak.sum())} training image(s) of {df.loc[leak, 'patient_id'].nunique()} child(ren) "
                            f"who also appear in the release's test folder were left out (patient leakage)")
            log.warning(warnings[-1])
        rest = df[~test & ~leak].copy()
        tr, va, _ = self.cfg.data.split
        rest["split"] = assign_splits(rest, self.group_column, (tr / (tr + va), va / (tr + va), 0.0),
                                      seed=self.cfg.seed, stratify=self.cfg.data.stratify)
        out = pd.concat([rest, df[test].assign(split="test")]).reset_index(drop=True)
        return out, warnings

    def _release_splits(self, df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
        """The release's own train / val / test folders as the splits (the report's protocol), leaks and all:
        a warning counts the children whose images sit in more than one split."""
        from medtasks.data.splits import patients_overlap

        if "source_split" not in df.columns or not set(df["source_split"]) >= {"train", "val", "test"}:
            raise ManifestError("resplit.mode=release needs a source_split column with train, val and test rows "
                                "(the release's folders); use resplit.mode=grouped")
        inside = df["source_split"].isin(["train", "val", "test"])
        out = df[inside].assign(split=df.loc[inside, "source_split"].astype(str)).reset_index(drop=True)
        warnings = []
        if not inside.all():
            warnings.append(f"resplit.mode=release: {int((~inside).sum())} image(s) outside the release's train / val "
                            f"/ test folders are not used (e.g. {df.loc[~inside, 'image'].iloc[0]})")
            log.warning(warnings[-1])
        leaks = patients_overlap(out, self.group_column)
        if leaks:
            warnings.append(f"resplit.mode=release: {len(leaks)} child(ren) have images in more than one of the "
                            f"release's folders (patient leakage; e.g. {', '.join(map(str, leaks[:3]))})")
            log.warning(warnings[-1])
        return out, warnings

    def fit_state(self, train_records: list[dict[str, Any]]) -> None:
        super().fit_state(train_records)
        c = self.cfg.loss
        if c.name == "weighted_ce":
            if c.class_weights is not None:
                self.state["class_weights"] = [float(w) for w in c.class_weights]
            else:  # sklearn's "balanced": n / (2 * n_class)
                y = np.array([float(r["label"][0]) for r in train_records])
                n_pos, n = float(y.sum()), float(len(y))
                self.state["class_weights"] = [round(n / (2 * max(n - n_pos, 1.0)), 6),
                                               round(n / (2 * max(n_pos, 1.0)), 6)]
            log.info("class weights [normal, pneumonia]: %s", self.state["class_weights"])

    # ---- builders -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        m = self.cfg.model
        net = apply_transfer(super().build_model(), m.transfer, m.freeze)
        trainable, total = trainable_fraction(net)
        log.info("%s, transfer=%s: %d of %d parameters train (%.1f%%)", m.backbone, m.transfer, trainable, total,
                 100.0 * trainable / max(total, 1))
        return net

    def build_loss(self) -> nn.Module:
        c = self.cfg.loss
        if c.name == "focal":
            return LOSSES.get("focal")(gamma=c.gamma, alpha=c.alpha)
        weights = self.state.get("class_weights") if c.name == "weighted_ce" else None
        return LOSSES.get("binary_ce")(class_weights=weights)

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        """Radiographs under ``source``: JPEG/PNG, or CR/DX DICOM (by suffix or by the DICM marker, since DICOM
        files often have no suffix); ``patient_id`` from the DICOM PatientID. Anything else is rejected."""
        rows, rejected = [], Rejected()
        for p in images.list_files(source):
            if p.suffix.lower() not in RADIOGRAPH_SUFFIXES and not is_dicom(p):
                rejected.add(p, "unknown_file", f"not an image or DICOM file ({', '.join(RADIOGRAPH_SUFFIXES)})")
                continue
            try:
                info = probe_radiograph(p)
                self.read_image(p)
            except ValueError as exc:
                rejected.add(p, getattr(exc, "reason", "unreadable"), str(exc).split(": ", 1)[-1])
                continue
            rows.append({"image": str(p.resolve()), "patient_id": info.patient_id})
        return pd.DataFrame(rows, columns=["image", "patient_id"]), rejected

    def headline(self) -> tuple[str, ...]:
        return ("accuracy", "sensitivity", "specificity", "roc_auc", "f1")

    def bundle_reader(self) -> Any:
        """The bundle reads radiographs with :func:`~medtasks.io.radiograph.read_radiograph` (``input.voi``)."""
        return {"_target_": "medtasks.io.radiograph.read_radiograph", "_mode_": "callable",
                "voi": bool(self.cfg.input.voi)}

    def bundle_files(self) -> tuple[tuple[str, ...], str, str]:
        return RADIOGRAPH_SUFFIXES, "DX", (
            f"chest radiographs ({', '.join(RADIOGRAPH_SUFFIXES)}; any folder depth): JPEG / PNG, or CR / DX DICOM "
            "with a .dcm suffix (medtasks predict also finds suffix-less DICOM files by their DICM marker; the "
            "bundle needs the suffix)")
