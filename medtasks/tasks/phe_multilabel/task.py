"""phe_multilabel — IVH / IPH / SAH on a head-CT slice, several at once (PHE-SICH notes' task 4).

Source: ``seeds/phe_sich_ct_ids_notes.txt`` (task 4, "無labels資料無法實作": not implemented there
for want of labels). The notes' design: a table ``task4_labels.csv`` with ``image,IVH,IPH,SAH``;
ResNet18 with ``fc = Linear(512, 3)``; sigmoid outputs with ``BCEWithLogitsLoss`` (optional
``pos_weight``, e.g. ``[1, 1, 2]`` when SAH is weak); evaluation by per-label and micro / macro F1.

PHE-SICH-CT-IDS itself has no such labels (every patient is a basal-ganglia SICH). The synthetic
default writes ``task4_labels.csv`` beside its release (IPH on slices with haematoma, IVH / SAH
painted on some patients); real labels must come from another source (e.g. the RSNA challenge's
``intraventricular`` / ``intraparenchymal`` / ``subarachnoid`` columns, or CQ500 reads) — see
``tasks/phe_multilabel.md``. Everything else is the grey-image classifier kind's: the image pipeline, the multi-label
training, calibration (per-label thresholds), sklearn's per-label report and the report.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.data.phe_sich import MULTILABELS, index_phe_sich, read_multilabel_csv, write_phe_manifest
from medtasks.registry import LOSSES
from medtasks.tasks.contract import PrepareResult, register_task
from medtasks.tasks.kinds.grey_classifier import GreyImageClassifier
from medtasks.tasks.phe_multilabel.config import PheMultilabelConfig
from medtasks.tasks.sources.phe_sich import PheSichSource, find_images

LABEL_NOTE = ("Labels IVH / IPH / SAH come from a task4_labels.csv table (image,IVH,IPH,SAH). PHE-SICH-CT-IDS "
              "has no such labels: on the synthetic default they are painted by the generator; on real data "
              "they come from the table the user supplies.")


@register_task("phe_multilabel")
class PheMultilabel(PheSichSource, GreyImageClassifier):
    """Multi-label IVH / IPH / SAH per slice from a ``task4_labels.csv`` table (ResNet18, sigmoid)."""

    kind = "multilabel"
    labels = MULTILABELS
    Config = PheMultilabelConfig
    source_report = "phe_sich_ct_ids_notes.txt"
    summary = "PHE-SICH slices + task4_labels.csv -> IVH / IPH / SAH multi-label, ResNet18, micro/macro F1"
    required_columns = ("patient_id", "image", *MULTILABELS)
    id_columns = ("patient_id", "slice_index", "image")
    label_note = LABEL_NOTE
    phe_manifest = "manifest_multilabel.csv"     # its own file in the shared synthetic release folder

    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """PHE-SICH layout + the label table -> manifest (one row per labelled slice) + rejected.csv.

        ``labels`` defaults to ``<source>/task4_labels.csv``. Slices without a label row, label
        rows without a slice and bad rows are listed in the rejected file with the reason.
        """
        table = Path(labels) if labels is not None else Path(source) / "task4_labels.csv"
        if not table.is_file():
            raise FileNotFoundError(f"{table}: no multi-label table. PHE-SICH-CT-IDS has no IVH/IPH/SAH labels; pass "
                                    f"--labels <csv with header image,{','.join(MULTILABELS)}> "
                                    "(see tasks/phe_multilabel.md)")
        index, rejected = index_phe_sich(source, require=(), progress=progress)
        df, bad = read_multilabel_csv(table, index, MULTILABELS)
        rejected.extend(bad)
        manifest, rej_path = write_phe_manifest(df, out, rejected)
        return PrepareResult(Path(manifest), Path(rej_path), len(df), len(rejected))

    def load_manifest(self, path: str | Path) -> pd.DataFrame:
        df = read_manifest(path, self.required_columns, root=self.cfg.data.root, path_columns=("image",))
        for lab in self.labels:
            bad = ~df[lab].isin([0, 1])
            if bad.any():
                raise ManifestError(f"manifest {path}: column {lab} has {int(bad.sum())} value(s) that are not 0/1 "
                                    f"(e.g. row of {df.loc[bad, 'image'].iloc[0]}); "
                                    "fix the label table and re-run prepare")
            df[lab] = df[lab].astype(int)
        return df

    def build_loss(self):
        c = self.cfg.loss
        return LOSSES.get(c.name)(class_weights=[1.0] * len(self.labels), pos_weight=c.pos_weight,
                                  label_smoothing=c.label_smoothing)

    def headline(self) -> tuple[str, ...]:
        return ("micro_f1", "macro_f1", "weighted_f1")

    def val_metrics(self, y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
        from sklearn.metrics import f1_score

        pred = y_prob >= 0.5
        return {"micro_f1": float(f1_score(y_true, pred, average="micro", zero_division=0)),
                "macro_f1": float(f1_score(y_true, pred, average="macro", zero_division=0))}

    def predict_inputs(self, source: Path) -> tuple[pd.DataFrame, Rejected]:
        return find_images(source)
