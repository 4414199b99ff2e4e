"""phe_multilabel — IVH / IPH / SAH on a head-CT slice, several at once (PHE-SICH notes' task 4).

Source: ``seeds/phe_sich_ct_ids_notes.txt`` (task 4, "無labels資料無法實作": not implemented there
for want of labels). The notes' design: a table ``task4_labels.csv`` with ``image,IVH,IPH,SAH``;
ResNet18 with ``fc = Linear(512, 3)``; sigmoid outputs with ``BCEWithLogitsLoss`` (optional
``pos_weight``, e.g. ``[1, 1, 2]`` when SAH is weak); evaluation by per-label and micro / macro F1.

PHE-SICH-CT-IDS itself has no such labels (every patient is a basal-ganglia SICH). The synthetic
default writes ``task4_labels.csv`` beside its release (IPH on slices with haematoma, IVH / SAH
painted on some patients); real labels must come from another source (e.g. the RSNA challenge's
``intraventricular`` / ``intraparenchymal`` / ``subarachnoid`` columns, or CQ500 reads) — see
``tasks/phe_multilabel.md``. Everything else is :class:`~medtasks.tasks.phe_classify.PheClassify`'s
image pipeline and the multi-label kind's training, calibration (per-label thresholds) and report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from medtasks.config import ConfigError
from medtasks.data.manifest import ManifestError, read_manifest
from medtasks.data.phe_sich import MULTILABELS
from medtasks.io.atomic import write_text_atomic
from medtasks.registry import LOSSES, TASKS
from medtasks.rundir import write_json_atomic
from medtasks.tasks.base import PrepareResult
from medtasks.tasks.classification import ClassificationTask
from medtasks.tasks.phe_classify import PheClassify
from medtasks.tasks.phe_config import PheClassifyConfig

log = logging.getLogger(__name__)

LABEL_NOTE = ("Labels IVH / IPH / SAH come from a task4_labels.csv table (image,IVH,IPH,SAH). PHE-SICH-CT-IDS "
              "has no such labels: on the synthetic default they are painted by the generator; on real data "
              "they come from the table the user supplies.")


@dataclass
class MultiLossConfig:
    name: str = "weighted_bce"
    pos_weight: Optional[list[float]] = None   # one per label (notes: [1.0, 1.0, 2.0] when SAH is weak)
    label_smoothing: float = 0.0

    def validate(self) -> None:
        if self.pos_weight is not None and (len(self.pos_weight) != len(MULTILABELS)
                                            or not all(w > 0 for w in self.pos_weight)):
            raise ConfigError(f"pos_weight: expected {len(MULTILABELS)} positive numbers ({', '.join(MULTILABELS)}) "
                              f"or null, got {self.pos_weight}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing}")


@dataclass
class PheMultilabelConfig(PheClassifyConfig):
    task: str = "phe_multilabel"
    loss: MultiLossConfig = field(default_factory=MultiLossConfig)


@TASKS.register("phe_multilabel")
class PheMultilabel(PheClassify):
    """Multi-label IVH / IPH / SAH per slice from a ``task4_labels.csv`` table (ResNet18, sigmoid)."""

    name = "phe_multilabel"
    kind = "multilabel"
    labels = MULTILABELS
    Config = PheMultilabelConfig
    summary = "PHE-SICH slices + task4_labels.csv -> IVH / IPH / SAH multi-label, ResNet18, micro/macro F1"
    required_columns = ("patient_id", "image", *MULTILABELS)
    phe_manifest = "manifest_multilabel.csv"     # its own file in the shared synthetic release folder

    def prepare(self, source: Path, out: Path, workers: int | None = None, labels: Path | None = None,
                progress: bool = True) -> PrepareResult:
        """PHE-SICH layout + the label table -> manifest (one row per labelled slice) + rejected.csv.

        ``labels`` defaults to ``<source>/task4_labels.csv``. Slices without a label row, label
        rows without a slice and bad rows are listed in the rejected file with the reason.
        """
        from medtasks.data.phe_sich import index_phe_sich, read_multilabel_csv, write_phe_manifest

        table = Path(labels) if labels is not None else Path(source) / "task4_labels.csv"
        if not table.is_file():
            raise FileNotFoundError(f"{table}: no multi-label table. PHE-SICH-CT-IDS has no IVH/IPH/SAH labels; pass "
                                    f"--labels <csv with header image,{','.join(MULTILABELS)}> (see tasks/phe_multilabel.md)")
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
                                    f"(e.g. row of {df.loc[bad, 'image'].iloc[0]}); fix the label table and re-run prepare")
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

    def evaluate(self, run, df: pd.DataFrame, fit_result=None, warnings: list[str] | None = None) -> dict[str, Any]:
        """The multi-label kind's evaluation plus sklearn's per-label report (the notes' printout)."""
        from sklearn.metrics import classification_report

        metrics = ClassificationTask.evaluate(self, run, df, fit_result, [*(warnings or []), LABEL_NOTE])
        preds = pd.read_csv(run / "predictions.csv", dtype={"patient_id": str})
        y = preds[[f"true_{lab}" for lab in self.labels]].to_numpy(int)
        p = preds[[f"pred_{lab}" for lab in self.labels]].to_numpy(int)
        kw = dict(target_names=list(self.labels), zero_division=0)
        metrics["classification_report"] = classification_report(y, p, output_dict=True, **kw)
        write_text_atomic(run / "classification_report.txt", classification_report(y, p, digits=4, **kw))
        write_json_atomic(run / "metrics.json", metrics)
        log.info("phe_multilabel %s: micro F1 %.4f macro F1 %.4f", metrics["split"],
                 metrics["headline"]["micro_f1"]["value"], metrics["headline"]["macro_f1"]["value"])
        return metrics
