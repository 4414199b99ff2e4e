"""Kind-level base for (multi-label) classification: train, evaluate and predict once for all tasks.

The concrete task supplies records/transforms/model/loss (:class:`~medtasks.tasks.kinds.network.NetworkTask`);
this class builds the datasets and loaders, hands training to :func:`medtasks.engine.trainer.fit`, evaluates the best
checkpoint on the held-out split (``predictions.csv`` + ``metrics.json`` with patient-bootstrap CIs) and runs
inference for ``predict``. Binary tasks are the one-label case.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from medtasks.engine.inference import run_inference
from medtasks.engine.mixup import MixUpBatch
from medtasks.engine.trainer import FitResult, fit
from medtasks.engine.tta import TTAWrapper
from medtasks.io.atomic import write_csv_atomic, write_json_atomic
from medtasks.metrics.tuning import sigmoid
from medtasks.models.ensemble import EnsembleModel
from medtasks.rundir import RunDir
from medtasks.tasks.kinds.cross_validation import train_cv
from medtasks.tasks.kinds.network import NetworkTask

log = logging.getLogger(__name__)

TTA_NOTE = "test-time augmentation"   # how the export contract names TTA in `not_in_the_file`


class ClassificationTask(NetworkTask):
    """Multi-label (sigmoid per label) classification; see the module docstring."""

    kind = "multilabel"
    id_columns: tuple[str, ...] = ("patient_id",)      # copied into predictions.csv
    case_column: str = "path"                          # the case id column of predictions.csv

    # ---- hooks with defaults ----------------------------------------------------------------
    def val_metrics(self, y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
        """Epoch-level validation metrics (added to history.csv as val_<name>)."""
        from sklearn.metrics import f1_score

        return {"weighted_f1": float(f1_score(y_true, y_prob >= 0.5, average="weighted", zero_division=0))}

    def thresholds(self) -> dict[str, float]:
        saved = self.state.get("thresholds") or {}
        return {lab: float(saved.get(lab, self.cfg.eval.threshold)) for lab in self.labels}

    def headline(self) -> tuple[str, ...]:
        if self.kind == "binary":
            return ("accuracy", "precision", "recall", "f1", "roc_auc")
        return ("weighted_f1", "macro_f1")

    def class_weights(self) -> list[float] | None:
        return None

    def mixup_alpha(self) -> float:
        """MixUp alpha of the training batches (0 = off)."""
        return 0.0

    # ---- flows ------------------------------------------------------------------------------
    def train(self, run: RunDir, df: pd.DataFrame, resume: bool = False, progress: bool = True) -> FitResult:
        """Train on ``split == train`` with validation on ``split == val``, then calibrate.

        With ``cv.folds >= 2`` the cross-validation runs instead (:mod:`~medtasks.tasks.kinds.cross_validation`):
        it trains each fold through :meth:`fit_split` and calibrates on the out-of-fold outputs of all folds.
        """
        if self.cfg.cv.folds >= 2:
            return train_cv(self, run, df, resume=resume, progress=progress)
        train_df, val_df = self.split_train_val(df)
        if self.cfg.sampling.scope == "train_val":  # the pool balanced as a whole, each row keeping its split
            both = self.balance_training(run, pd.concat([train_df, val_df]))
            train_df, val_df = both[both.split == "train"], both[both.split == "val"].reset_index(drop=True)
        else:
            train_df = self.balance_training(run, train_df)
        if not resume:
            self.fit_state(self.records(train_df))
        result = self.fit_split(run, train_df, val_df, resume=resume, progress=progress)
        self.calibrate(run, val_df)
        return result

    def fit_split(self, run: RunDir, train_df: pd.DataFrame, val_df: pd.DataFrame, resume: bool = False,
                  progress: bool = True) -> FitResult:
        """One network trained on ``train_df`` and validated on ``val_df`` into ``run`` (the state as it is);
        the single training path of a run and of each cross-validation fold."""
        self.save_state(run)
        model, loss = self.build_model(), self.build_loss()
        log.info("training %s on %d slices (%d val), device %s", self.name, len(train_df), len(val_df), self.device())
        t = self.cfg.train
        spec = self.training_spec(run.path, model, loss, self.loader(train_df, "train", True, t.batch_size),
                                  self.loader(val_df, "val", False, self.cfg.eval.batch_size), resume, progress,
                                  score_fn=lambda logits, y: self.val_metrics(y.numpy(), sigmoid(logits.numpy())),
                                  prepare_batch=self.prepare_batch(), train_prepare_batch=self.train_prepare_batch())
        return fit(spec)

    def sampling_labels(self) -> tuple[str, ...]:
        """Labels that ``sampling.per_class`` balances (all by default)."""
        return tuple(self.labels)

    def balance_training(self, run: RunDir, train_df: pd.DataFrame) -> pd.DataFrame:
        """Apply ``sampling`` to ``train_df`` (the training split, or training + validation with
        ``sampling.scope: train_val``); record what was drawn in ``sampling.json``."""
        from medtasks.data.sampling import balance_rows

        s = self.cfg.sampling
        if not s.enabled:
            return train_df
        out, info = balance_rows(train_df, self.sampling_labels(), s.per_class, s.normal, s.normal_ratio,
                                 s.replace, seed=self.cfg.seed)
        write_json_atomic(run / "sampling.json", {**info, "scope": s.scope})
        log.info("balanced training split: %d -> %d rows; positives/normals %s -> %s",
                 info["rows_before"], info["rows_after"], info["before"], info["after"])
        return out

    def sample_eval_rows(self, run: RunDir, test_df: pd.DataFrame) -> pd.DataFrame:
        """``sampling.eval_per_class`` / ``eval_normal``: the evaluated rows drawn class-balanced (without
        replacement), as a report that tested on a balanced sample did; recorded in ``eval_sampling.json``."""
        from medtasks.data.sampling import balance_rows

        s = self.cfg.sampling
        if s.eval_per_class is None and s.eval_normal is None:
            return test_df
        out, info = balance_rows(test_df, self.sampling_labels(), s.eval_per_class, s.eval_normal, None, False,
                                 seed=self.cfg.seed)
        write_json_atomic(run / "eval_sampling.json", {**info, "split": self.cfg.eval.split})
        log.info("balanced evaluation sample of %s: %d -> %d rows", self.cfg.eval.split, len(test_df), len(out))
        return out.reset_index(drop=True)

    def train_prepare_batch(self) -> Any:
        """The training batches' prepare_batch: the task's own, wrapped in MixUp when it is on."""
        alpha = self.mixup_alpha()
        return MixUpBatch(self.prepare_batch(), alpha, seed=self.cfg.seed) if alpha > 0 else None

    def calibrate(self, run: RunDir, val_df: pd.DataFrame) -> None:
        """Fit ``calibration.temperature`` / ``calibration.thresholds`` on the validation split
        with the best checkpoint and save them in ``task_state.json`` (used by evaluate and predict)."""
        c = self.cfg.calibration
        if c.temperature or c.thresholds:
            val_df = val_df.reset_index(drop=True)
            logits = self.infer_logits(self.load_model(run, "best"), val_df, "val", run=run)
            self.fit_calibration(logits, val_df[list(self.labels)].astype(int).values)
        else:
            self.fit_calibration(None, None)
        self.save_state(run)

    def fit_calibration(self, logits: np.ndarray | None, y: np.ndarray | None) -> None:
        """Fit the configured temperature / thresholds on held-out ``logits`` into ``self.state``."""
        from medtasks.metrics.tuning import fit_temperature, search_thresholds

        c = self.cfg.calibration
        self.state.pop("temperature", None)
        self.state.pop("thresholds", None)
        if logits is None or y is None or not (c.temperature or c.thresholds):
            return
        temperature = 1.0
        if c.temperature:
            temperature = fit_temperature(logits, y, self.class_weights(), c.method, tuple(c.temperature_range))
            self.state["temperature"] = temperature
            if min(abs(temperature - b) for b in c.temperature_range) < 1e-9:
                log.warning("temperature %.3g is at the end of calibration.temperature_range %s: the best T may lie "
                            "outside it; widen the range to check", temperature, list(c.temperature_range))
        if c.thresholds:
            lo, hi = c.threshold_range
            grid = np.round(np.arange(lo, hi + c.threshold_step / 2, c.threshold_step), 4)
            thr = search_thresholds(y, sigmoid(logits / temperature), grid, self.cfg.eval.threshold)
            self.state["thresholds"] = dict(zip(self.labels, thr))
        log.info("calibrated on %d held-out rows: temperature %s, thresholds %s", len(y),
                 self.state.get("temperature", 1.0), self.state.get("thresholds", "eval.threshold"))

    def load_model(self, run: RunDir, which: str = "best") -> torch.nn.Module:
        """The network of ``checkpoints/<which>.pt`` (with ``cv.select: ensemble``, the mean of the fold models)."""
        cv = self.cfg.cv
        if which == "best" and cv.folds >= 2 and cv.select == "ensemble" and (run / "fold_0").is_dir():
            members = [self.restore(self.build_model(), run / f"fold_{i}" / "checkpoints" / "best.pt")
                       for i in range(cv.folds)]
            return EnsembleModel(members).eval()
        return self.restore(self.build_model(), run / "checkpoints" / f"{which}.pt")

    def infer_logits(self, model: torch.nn.Module, df: pd.DataFrame, split: str = "test",
                     progress: bool = False, run: RunDir | None = None) -> np.ndarray:
        """Logits (N, n_labels) for the rows of ``df`` in order; with ``run``, refined by
        :meth:`postprocess_logits` (what that run trained after the network, e.g. a sequence head)."""
        loader = self.loader(df, split, False, self.cfg.eval.batch_size)
        if self.cfg.eval.tta:
            model = TTAWrapper(model, self.cfg.eval.tta_views, self.cfg.eval.tta_average).eval()
        t = self.cfg.train
        logits = run_inference(model, loader, self.device(), self.prepare_batch(), amp=t.amp, cpu_bf16=t.cpu_bf16,
                               channels_last=t.channels_last, progress=progress).reshape(len(df), -1)
        return logits if run is None else self.postprocess_logits(run, df, logits)

    def postprocess_logits(self, run: RunDir, df: pd.DataFrame, logits: np.ndarray) -> np.ndarray:
        """Hook after inference with ``run``'s model (e.g. a second stage over the rows' series); identity."""
        return logits

    def temperature(self) -> float:
        return float(self.state.get("temperature", 1.0))

    def infer(self, model: torch.nn.Module, df: pd.DataFrame, split: str = "test", progress: bool = False,
              run: RunDir | None = None) -> np.ndarray:
        """Probabilities (N, n_labels) for the rows of ``df`` in order, temperature-scaled when fitted."""
        return sigmoid(self.infer_logits(model, df, split, progress, run=run) / self.temperature())

    def prediction_frame(self, df: pd.DataFrame, probs: np.ndarray, with_truth: bool = True) -> pd.DataFrame:
        thr = self.thresholds()
        out = pd.DataFrame({"case_id": df[self.case_column].astype(str).values})
        for col in self.id_columns:
            if col in df.columns:
                out[col] = df[col].values
        if "split" in df.columns:
            out["split"] = df["split"].values
        for j, lab in enumerate(self.labels):
            if with_truth:
                out[f"true_{lab}"] = df[lab].astype(int).values
            out[f"prob_{lab}"] = probs[:, j]
            out[f"pred_{lab}"] = (probs[:, j] >= thr[lab]).astype(int)
        return out

    def evaluate(self, run: RunDir, df: pd.DataFrame, fit_result: FitResult | None = None,
                 warnings: list[str] | None = None) -> dict[str, Any]:
        from medtasks.metrics.summary import multilabel_summary

        split = self.cfg.eval.split
        test_df = self.sample_eval_rows(run, self.eval_rows(df))
        model = self.load_model(run, "best")
        logits = self.infer_logits(model, test_df, split, progress=True, run=run)
        probs = sigmoid(logits / self.temperature())
        preds = self.prediction_frame(test_df, probs)
        write_csv_atomic(preds, run / "predictions.csv")
        y = test_df[list(self.labels)].astype(int).values
        thr = self.thresholds()
        groups = test_df[self.group_column].astype(str).values
        binary = self.kind == "binary" and len(self.labels) == 1
        summary = multilabel_summary(y, probs, list(self.labels), groups, thresholds=thr,
                                     class_weights=self.class_weights(), headline=() if binary else self.headline(),
                                     n_boot=self.cfg.eval.n_boot, seed=self.cfg.seed,
                                     n_bins=self.cfg.eval.calibration_bins)
        if binary:  # accuracy / precision / recall / F1 / ROC-AUC (+ specificity, counts) with patient-bootstrap CIs
            from medtasks.metrics.summary import binary_summary

            extra = binary_summary(y[:, 0], probs[:, 0], groups, threshold=thr[self.labels[0]],
                                   headline=self.headline(), n_boot=self.cfg.eval.n_boot, seed=self.cfg.seed,
                                   n_bins=self.cfg.eval.calibration_bins)
            extra.pop("calibration", None), extra.pop("reliability", None)  # the same numbers as above
            summary.update(extra)
        metrics = self.metrics_header(warnings, thresholds=thr, temperature=self.temperature(), **summary)
        if "temperature" in self.state:
            metrics["before_temperature"] = self._calibration_view(y, sigmoid(logits))
            metrics["temperature_range"] = list(self.cfg.calibration.temperature_range)
        for key, name in (("cv", "cv.json"), ("training_sampling", "sampling.json"), ("sequence", "sequence.json"),
                          ("eval_sampling", "eval_sampling.json")):
            if (run / name).is_file():  # what training recorded: folds, balanced sampling, stage 2
                metrics[key] = json.loads((run / name).read_text(encoding="utf-8"))
        self.add_fit_result(metrics, fit_result)
        write_json_atomic(run / "metrics.json", metrics)
        return metrics

    def _calibration_view(self, y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        """ECE, Brier, weighted log loss and reliability bins of ``probs`` (the before-scaling view)."""
        from medtasks.metrics.calibration import brier_score, expected_calibration_error, reliability_bins
        from medtasks.metrics.classification import rsna_weighted_log_loss

        bins = self.cfg.eval.calibration_bins
        return {"temperature": 1.0, "ece": expected_calibration_error(y, probs, n_bins=bins),
                "brier": brier_score(y, probs),
                "weighted_log_loss": rsna_weighted_log_loss(y, probs, self.class_weights() or [1.0] * len(self.labels)),
                "reliability": reliability_bins(y, probs, n_bins=bins)}

    def export_contract(self, run: RunDir) -> dict[str, Any]:
        out = super().export_contract(run)
        e = self.cfg.eval
        not_in = [f"{TTA_NOTE} ({e.tta_views} views, {e.tta_average} of probabilities): medtasks' "
                  "evaluate and predict apply it around the network"] if e.tta else []
        out.update(output={"logits": f"(batch, {len(self.labels)}): one logit per label, in `labels` order",
                           "probability": "sigmoid(logits / temperature)",
                           "predicted": "probability >= thresholds[label]"},
                   temperature=self.temperature(), thresholds=self.thresholds(), not_in_the_file=not_in)
        return out

    def write_dicom_outputs(self, run: RunDir, df: pd.DataFrame, frame: pd.DataFrame, out_dir: Path) -> list[Path]:
        """One Comprehensive SR per study of DICOM input (:mod:`medtasks.tasks.kinds.dicom_report`)."""
        from medtasks.tasks.kinds.dicom_report import classification_reports

        return classification_reports(self, run, df, frame, out_dir)

    def bundle_spec(self, run: RunDir, df: pd.DataFrame) -> Any:
        """MONAI bundle parts: the task's inputs (:meth:`bundle_inputs`), then temperature, sigmoid and per-label
        thresholds into ``predictions.csv``. With ``eval.tta`` the traced network runs inside the same
        :class:`~medtasks.engine.tta.TTAWrapper` predict uses (a medtasks component of ``inference.json``: a batch's
        rotations fill with its per-channel minimum, which a trace would freeze into a constant). Refused, with the
        reason, when this run's predictions need more than the network (the export contract's ``not_in_the_file``
        besides TTA: a stage-2 sequence head): its temperature and thresholds were fitted on those outputs, so a
        bundle without them would not give ``medtasks predict``'s probabilities or calls."""
        from medtasks.engine.bundle_spec import classification_outputs, merge_parts

        missing = [m for m in self.export_contract(run).get("not_in_the_file") or [] if not m.startswith(TTA_NOTE)]
        if missing:
            raise ValueError(f"--format bundle: this {self.name} run's predictions need more than its network: "
                             f"{'; '.join(missing)}. A MONAI bundle runs the network alone, so its outputs would not "
                             f"be medtasks predict's (the temperature and thresholds were fitted with them). Export "
                             f"the network with --format torchscript or onnx (the sidecar lists what is not in the "
                             f"file), or bundle a run trained with sequence.enabled=false")
        e = self.cfg.eval
        tta = ({"network_wrapper": {"_target_": "medtasks.engine.tta.TTAWrapper", "views": list(e.tta_views),
                                    "average": e.tta_average},
                "medtasks_components": {"medtasks.engine.tta.TTAWrapper": (
                    f"test-time augmentation as medtasks predict runs it ({', '.join(e.tta_views)}, mean of the "
                    f"{e.tta_average}s): MONAI has no classifier TTA that averages fixed views, and the rotations' "
                    "fill is each batch's channel minimum, which a TorchScript trace would freeze")},
                "notes": [f"Test-time augmentation: the original plus {', '.join(e.tta_views)}, mean of the "
                          f"{e.tta_average}s; the temperature and thresholds were fitted on those outputs."]}
               if e.tta else {})
        return merge_parts(self.bundle_inputs(run),
                           classification_outputs(self.labels, self.temperature(), self.thresholds()), tta)

    def predict_frame(self, run: RunDir, df: pd.DataFrame, progress: bool = True, out_dir=None,
                      probabilities: bool = False) -> pd.DataFrame:
        """Predictions for unlabelled rows (``predict``): ids, prob_*, pred_* (``out_dir``: unused here)."""
        model = self.load_model(run, "best")
        probs = self.infer(model, df.assign(split="predict"), "predict", progress=progress, run=run)
        return self.prediction_frame(df, probs, with_truth=False)
