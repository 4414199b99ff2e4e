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

import logging
from pathlib import Path

import pandas as pd

from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.io import images
from medtasks.registry import TASKS
from medtasks.tasks.grey_classifier import GreyImageClassifier
from medtasks.tasks.phe_source import PheSichSource
from medtasks.tasks.phe_config import PheClassifyConfig

log = logging.getLogger(__name__)

LABEL = "phe"
LABEL_NOTE = ("Label = perihematomal edema (PHE): phe = 1 when the slice's annotation has a PHE box. The dataset "
              "marks the edema, not the hematoma, and every patient has a hemorrhage: this is not "
              "hemorrhage-vs-normal classification (the source notes call it 'Hemorrhage vs Non-Hemorrhage').")


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
class PheClassify(PheSichSource, GreyImageClassifier):
    """Slice-level PHE present / absent on PHE-SICH-CT-IDS PNG slices (ResNet18)."""

    name = "phe_classify"
    kind = "binary"
    labels = (LABEL,)
    Config = PheClassifyConfig
    source_report = "phe_sich_ct_ids_notes.txt"
    summary = "PHE-SICH PNG slices -> perihematomal edema present? ResNet18 binary, Grad-CAM"
    required_columns = ("patient_id", "image", "has_phe")
    id_columns = ("patient_id", "slice_index", "image")
    class_names = ("no PHE", "PHE")
    label_note = LABEL_NOTE

    # ---- data ---------------------------------------------------------------------------------
    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        """The manifest with absolute ``image`` paths and the label column ``phe`` (= ``has_phe``)."""
        df = read_manifest(path, self.required_columns, root=self.cfg.data.root, path_columns=("image",))
        bad = df["has_phe"].isna() | ~df["has_phe"].isin([0, 1])
        if bad.any():
            raise ManifestError(f"manifest {path}: {int(bad.sum())} row(s) have no 0/1 has_phe (e.g. "
                                f"{df.loc[bad, 'image'].iloc[0]}); re-run `medtasks prepare phe_classify` "
                                f"(it requires the VOC XML of every slice) or drop those rows")
        return df.assign(**{LABEL: df["has_phe"].astype(int)})

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        return find_images(source)

