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

from pathlib import Path

import pandas as pd

from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.tasks.contract import register_task
from medtasks.tasks.kinds.grey_classifier import GreyImageClassifier
from medtasks.tasks.phe_classify.config import PheClassifyConfig
from medtasks.tasks.sources.phe_sich import PHE_LABEL_NOTE, PheSichSource, find_images

LABEL = "phe"


@register_task("phe_classify")
class PheClassify(PheSichSource, GreyImageClassifier):
    """Slice-level PHE present / absent on PHE-SICH-CT-IDS PNG slices (ResNet18)."""

    kind = "binary"
    labels = (LABEL,)
    Config = PheClassifyConfig
    source_report = "phe_sich_ct_ids_notes.txt"
    summary = "PHE-SICH PNG slices -> perihematomal edema present? ResNet18 binary, Grad-CAM"
    required_columns = ("patient_id", "image", "has_phe")
    id_columns = ("patient_id", "slice_index", "image")
    class_names = ("no PHE", "PHE")
    label_note = PHE_LABEL_NOTE

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

