"""A fake but complete run directory, built from random predictions (no training).

The numbers in metrics.json are computed from the fake predictions with scikit-learn so the
report's tables and the curves it recomputes from predictions.csv agree, as they do for a
real run. One label (``epidural``) has no positives in the test split, as a rare class
often does on a small split, so the "single class, not plotted" paths are exercised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import average_precision_score, f1_score, log_loss, precision_recall_fscore_support, roc_auc_score

LABELS = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any"]
SLICES_PER_PATIENT = 20
SPLIT_PATIENTS = {"test": 3, "val": 1, "train": 4}
N_BINS = 10


def _fake_predictions(rng: np.random.Generator, labels: list[str]) -> pd.DataFrame:
    rows = []
    pid = 0
    for split in ("test", "val"):
        for _ in range(SPLIT_PATIENTS[split]):
            for s in range(SLICES_PER_PATIENT):
                rows.append({"case_id": f"P{pid:03d}_S{s:02d}", "patient_id": f"P{pid:03d}", "split": split})
            pid += 1
    df = pd.DataFrame(rows)
    n = len(df)
    truth = {}
    for i, label in enumerate(labels):
        if label == "any":
            continue
        prevalence = 0.0 if label == "epidural" else 0.15 + 0.06 * i
        truth[label] = (rng.random(n) < prevalence).astype(int)
    if "any" in labels:
        stacked = np.stack(list(truth.values()), axis=1) if truth else np.zeros((n, 1), int)
        truth["any"] = stacked.max(axis=1)
    for label in labels:
        y = truth[label]
        logit = 1.3 * (2 * y - 1) - 0.4 + rng.normal(0, 1.3, n)
        prob = 1 / (1 + np.exp(-logit))
        df[f"true_{label}"] = y
        df[f"prob_{label}"] = np.round(prob, 6)
        df[f"pred_{label}"] = (prob >= 0.5).astype(int)
    return df


def _bootstrap(rng: np.random.Generator, df: pd.DataFrame, fn: Callable[[pd.DataFrame], float],
               n_boot: int = 60) -> tuple[float, float]:
    groups = {p: g for p, g in df.groupby("patient_id")}
    keys = list(groups)
    values = []
    for _ in range(n_boot):
        sample = pd.concat([groups[k] for k in rng.choice(keys, size=len(keys), replace=True)])
        try:
            values.append(fn(sample))
        except ValueError:
            continue
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def _fake_metrics(rng: np.random.Generator, df: pd.DataFrame, labels: list[str], kind: str,
                  synthetic: bool, warnings: list[str]) -> dict:
    test = df[df["split"] == "test"]
    y = test[[f"true_{x}" for x in labels]].to_numpy()
    p = test[[f"prob_{x}" for x in labels]].to_numpy()
    yhat = test[[f"pred_{x}" for x in labels]].to_numpy()
    per_class = {}
    for j, label in enumerate(labels):
        prec, rec, f1, _ = precision_recall_fscore_support(y[:, j], yhat[:, j], average="binary", zero_division=0)
        both = len(np.unique(y[:, j])) == 2
        tp = int(((y[:, j] == 1) & (yhat[:, j] == 1)).sum())
        fp = int(((y[:, j] == 0) & (yhat[:, j] == 1)).sum())
        fn = int(((y[:, j] == 1) & (yhat[:, j] == 0)).sum())
        per_class[label] = {
            "precision": prec, "recall": rec, "f1": f1,
            "roc_auc": roc_auc_score(y[:, j], p[:, j]) if both else None,
            "pr_auc": average_precision_score(y[:, j], p[:, j]) if both else None,
            "log_loss": log_loss(y[:, j], p[:, j], labels=[0, 1]), "support": int(y[:, j].sum()),
            "tp": tp, "fp": fp, "fn": fn, "tn": len(y) - tp - fp - fn, "threshold": 0.5,
        }
    averages = {}
    for avg in ("macro", "weighted", "micro"):
        prec, rec, f1, _ = precision_recall_fscore_support(y, yhat, average=avg, zero_division=0)
        averages[avg] = {"precision": prec, "recall": rec, "f1": f1}

    flat_y, flat_p = y.ravel(), p.ravel()
    edges = np.linspace(0, 1, N_BINS + 1)
    idx = np.clip(np.searchsorted(edges[1:-1], flat_p, side="right"), 0, N_BINS - 1)
    count = np.bincount(idx, minlength=N_BINS)
    mean_pred = [float(flat_p[idx == b].mean()) if count[b] else None for b in range(N_BINS)]
    frac_pos = [float(flat_y[idx == b].mean()) if count[b] else None for b in range(N_BINS)]
    ece = float(sum(count[b] / len(flat_p) * abs(mean_pred[b] - frac_pos[b]) for b in range(N_BINS) if count[b]))

    weights = np.array([2.0 if x == "any" else 1.0 for x in labels])
    eps = 1e-7
    pc = np.clip(p, eps, 1 - eps)
    rsna = float(np.mean(-(weights * (y * np.log(pc) + (1 - y) * np.log(1 - pc))).sum(1) / weights.sum()))

    key = labels[-1]

    def wf1(d: pd.DataFrame) -> float:
        true, pred = d[[f"true_{x}" for x in labels]], d[[f"pred_{x}" for x in labels]]
        return float(f1_score(true.to_numpy(), pred.to_numpy(), average="weighted", zero_division=0))

    def auc(d: pd.DataFrame) -> float:
        return float(roc_auc_score(d[f"true_{key}"], d[f"prob_{key}"]))

    lo, hi = _bootstrap(rng, test, wf1)
    alo, ahi = _bootstrap(rng, test, auc)
    n_pat = int(test["patient_id"].nunique())
    method = "percentile, resampled by patient"
    return {
        "task": "ich_classify", "kind": kind, "synthetic": synthetic, "config_hash": "ab12cd34", "split": "test",
        "labels": labels, "thresholds": {x: 0.5 for x in labels}, "per_class": per_class, **averages,
        "n": len(test), "n_patients": n_pat, "rsna_weighted_log_loss": rsna,
        "calibration": {"ece": ece, "brier": float(np.mean((flat_p - flat_y) ** 2))},
        "reliability": {"bin_lower": edges[:-1].tolist(), "bin_upper": edges[1:].tolist(),
                        "mean_pred": mean_pred, "frac_pos": frac_pos, "count": count.tolist()},
        "headline": {
            "weighted_f1": {"value": wf1(test), "ci_low": lo, "ci_high": hi, "n_boot": 60,
                            "n_groups": n_pat, "method": method},
            f"{key}_auc": {"value": auc(test), "ci_low": alo, "ci_high": ahi, "n_boot": 60,
                           "n_groups": n_pat, "method": method},
            "rsna_weighted_log_loss": {"value": rsna, "ci_low": None, "ci_high": None, "n_boot": 0,
                                       "n_groups": n_pat, "method": method,
                                       "reason": "fixture: bootstrap deliberately skipped"},
        },
        "best_epoch": 2, "train_time_s": 12.5, "warnings": warnings,
    }


def make_run_dir(root: Path, *, synthetic: bool = True, kind: str = "multilabel",
                 labels: list[str] | None = None, seed: int = 0,
                 warnings: list[str] | None = None, run_id: str = "20240101-120000-demo") -> Path:
    """Write a complete fake run directory under ``root/ich_classify/<run_id>`` and return it."""
    labels = list(LABELS if labels is None else labels)
    rng = np.random.default_rng(seed)
    run = root / "ich_classify" / run_id
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        (run / "checkpoints" / name).write_bytes(b"not a checkpoint")

    config = {"task": "ich_classify", "kind": kind, "labels": labels, "seed": seed,
              "data": {"synthetic": synthetic, "image_size": 64},
              "model": {"backbone": "resnet18", "pretrained": None},
              "train": {"epochs": 3, "lr": 1e-3, "batch_size": 8}}
    (run / "config.resolved.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {"python": "3.11.2", "packages": {"torch": "2.4.0", "monai": "1.4.0", "numpy": "2.1.0"},
           "git_sha": "0123abc", "seed": seed, "device": "cpu",
           "command": "medtasks run ich_classify --config medtasks/configs/ich_classify.demo.yaml",
           "started": "2024-01-01T12:00:00"}
    (run / "env.json").write_text(json.dumps(env, indent=2))

    preds = _fake_predictions(rng, labels)
    preds.to_csv(run / "predictions.csv", index=False)
    manifest = preds[["case_id", "patient_id", "split"]].copy()
    first_train = manifest["patient_id"].nunique()
    train = [{"case_id": f"P{p:03d}_S{s:02d}", "patient_id": f"P{p:03d}", "split": "train"}
             for p in range(first_train, first_train + SPLIT_PATIENTS["train"]) for s in range(SLICES_PER_PATIENT)]
    manifest = pd.concat([pd.DataFrame(train), manifest], ignore_index=True)
    manifest["path"] = "dicom/" + manifest["case_id"] + ".dcm"
    manifest.to_csv(run / "manifest.csv", index=False)

    pd.DataFrame({"path": ["dicom/bad_001.dcm", "dicom/bad_002.dcm"],
                  "reason": ["unreadable_dicom", "missing_label"],
                  "detail": ["InvalidDicomError: no DICM preamble", "SOPInstanceUID not in labels CSV"]}
                 ).to_csv(run / "rejected.csv", index=False)
    pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.62, 0.41, 0.33], "val_loss": [0.55, 0.39, 0.41],
                  "lr": [1e-3, 5e-4, 1e-4], "time_s": [4.1, 4.0, 4.2],
                  "val_weighted_f1": [0.51, 0.66, 0.64], "val_rsna_weighted_log_loss": [0.48, 0.35, 0.37]}
                 ).to_csv(run / "history.csv", index=False)
    metrics = _fake_metrics(rng, preds, labels, kind, synthetic, warnings or [])
    (run / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return run


@pytest.fixture
def run_dir_factory(tmp_path: Path) -> Callable[..., Path]:
    """``factory(**make_run_dir kwargs)`` -> a fresh fake run directory in this test's tmp dir."""
    counter = iter(range(1000))

    def factory(**kwargs: object) -> Path:
        return make_run_dir(tmp_path / f"r{next(counter)}", **kwargs)  # type: ignore[arg-type]

    return factory


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic multilabel run directory rendered once per module; returns report.html."""
    from medtasks.report import render_report

    run = make_run_dir(tmp_path_factory.mktemp("rendered"),
                       warnings=["Split is slice-level: slices of one patient may appear in train and test."])
    return render_report(run)
