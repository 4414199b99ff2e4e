"""Classification tables and summaries, checked against scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from medtasks.metrics.classification import (
    binary_table,
    multilabel_table,
    resolve_thresholds,
    rsna_weighted_log_loss,
)
from medtasks.metrics.summary import _prf_from_counts, binary_summary, multilabel_summary

LABELS = ["any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
RSNA_W = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0]


@pytest.fixture()
def ml_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 6)) < [0.4, 0.05, 0.15, 0.1, 0.1, 0.15]).astype(int)
    p = np.clip(0.35 * y + 0.65 * rng.random((300, 6)), 0.0, 1.0)
    return y, p


def test_rsna_log_loss_by_hand() -> None:
    y = np.array([[1, 0, 1], [0, 0, 0]])
    p = np.array([[0.9, 0.2, 0.6], [0.3, 0.1, 0.5]])
    w = [2.0, 1.0, 1.0]
    s1 = (2 * -math.log(0.9) - math.log(0.8) - math.log(0.6)) / 4
    s2 = (2 * -math.log(0.7) - math.log(0.9) - math.log(0.5)) / 4
    assert rsna_weighted_log_loss(y, p, w) == pytest.approx((s1 + s2) / 2, rel=1e-12)


def test_rsna_log_loss_matches_sklearn_sample_weight(ml_data) -> None:
    y, p = ml_data
    # Each sample carries the same total weight, so pooled weighted log loss is identical.
    ref = log_loss(y.ravel(), p.ravel(), sample_weight=np.tile(RSNA_W, len(y)), labels=[0, 1])
    assert rsna_weighted_log_loss(y, p, RSNA_W) == pytest.approx(ref, rel=1e-9)


def test_rsna_log_loss_clips_at_kaggle_eps_on_saturated_float32() -> None:
    """Saturated float32 sigmoids (exactly 0/1) cost -log(1e-15) per wrong entry, as Kaggle's scorer."""
    import torch

    logits = torch.tensor([[40.0, -40.0, 2.0], [-30.0, 25.0, 0.0]])
    p = torch.sigmoid(logits).numpy()  # float32: 1.0, 0.0, ... exactly
    assert p.dtype == np.float32 and p[0, 0] == 1.0 and p[1, 1] == 1.0 and p[0, 1] < 1e-15
    y = np.array([[0, 1, 1], [0, 0, 1]])
    w = [2.0, 1.0, 1.0]
    eps = 1e-15
    sat = -math.log1p(-(1 - eps))  # p = 1 clipped to 1 - eps (in float64: 1 - 9.992e-16)
    hand = [
        [sat, -math.log(eps), -math.log(1 / (1 + math.exp(-2.0)))],
        [-math.log(1 - float(p[1, 0])), sat, -math.log(0.5)],
    ]
    expected = np.mean([(2 * r[0] + r[1] + r[2]) / 4 for r in hand])
    assert rsna_weighted_log_loss(y, p, w) == pytest.approx(expected, rel=1e-9)
    # the old clip (1e-7) gave a much smaller figure on the same input
    assert rsna_weighted_log_loss(y, p, w, eps=1e-7) < 0.5 * expected


def test_rsna_log_loss_clips_and_validates() -> None:
    y = np.array([[1, 0]])
    p = np.array([[0.0, 1.0]])  # confidently wrong: finite thanks to eps
    assert rsna_weighted_log_loss(y, p, [1, 1], eps=1e-7) == pytest.approx(-math.log(1e-7))
    with pytest.raises(ValueError):
        rsna_weighted_log_loss(y, p, [1, 1, 1])
    with pytest.raises(ValueError):
        rsna_weighted_log_loss(y, np.array([[0.5, 1.5]]), [1, 1])


def test_multilabel_table_matches_sklearn(ml_data) -> None:
    y, p = ml_data
    thr = [0.5, 0.4, 0.6, 0.5, 0.55, 0.45]
    t = multilabel_table(y, p, LABELS, thr)
    pred = (p >= np.array(thr)).astype(int)
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, average=None, zero_division=0)
    for j, lab in enumerate(LABELS):
        c = t["per_class"][lab]
        assert c["precision"] == pytest.approx(prec[j])
        assert c["recall"] == pytest.approx(rec[j])
        assert c["f1"] == pytest.approx(f1[j])
        assert c["support"] == sup[j] == c["tp"] + c["fn"]
        assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == len(y)
        assert c["roc_auc"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]))
        assert c["pr_auc"] == pytest.approx(average_precision_score(y[:, j], p[:, j]))
        assert c["log_loss"] == pytest.approx(log_loss(y[:, j], p[:, j], labels=[0, 1]))
        assert c["threshold"] == thr[j]
    for avg in ("macro", "weighted", "micro"):
        ref = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        got = t[avg]
        assert (got["precision"], got["recall"], got["f1"]) == pytest.approx(ref[:3])
    assert t["n"] == len(y)


def test_thresholds_float_list_dict_agree(ml_data) -> None:
    y, p = ml_data
    a = multilabel_table(y, p, LABELS, 0.3)
    b = multilabel_table(y, p, LABELS, [0.3] * 6)
    c = multilabel_table(y, p, LABELS, {lab: 0.3 for lab in LABELS})
    assert a == b == c
    d = multilabel_table(y, p, LABELS, {**{lab: 0.3 for lab in LABELS}, "any": 0.9})
    assert d["per_class"]["any"]["threshold"] == 0.9
    assert d["per_class"]["any"]["tp"] <= a["per_class"]["any"]["tp"]
    with pytest.raises(ValueError, match="lacks"):
        resolve_thresholds({"any": 0.5}, LABELS)
    with pytest.raises(ValueError):
        resolve_thresholds([0.5, 0.5], LABELS)


def test_single_class_column_gives_none_auc(ml_data) -> None:
    y, p = ml_data
    y = y.copy()
    y[:, 1] = 0  # no positives at all for this class
    t = multilabel_table(y, p, LABELS)
    c = t["per_class"]["epidural"]
    assert c["roc_auc"] is None and c["pr_auc"] is None
    assert c["recall"] == 0.0 and c["support"] == 0
    assert math.isfinite(c["log_loss"])
    json.dumps(t, allow_nan=False)


def test_binary_table_matches_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random(200) < 0.3).astype(int)
    p = np.clip(0.4 * y + 0.6 * rng.random(200), 0, 1)
    t = binary_table(y, p, threshold=0.45)
    pred = (p >= 0.45).astype(int)
    pr, rc, f1, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    spec = precision_recall_fscore_support(y, pred, average="binary", pos_label=0)[1]
    assert t["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert (t["precision"], t["recall"], t["f1"]) == pytest.approx((pr, rc, f1))
    assert t["sensitivity"] == t["recall"]
    assert t["specificity"] == pytest.approx(spec)
    assert t["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert t["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert t["log_loss"] == pytest.approx(log_loss(y, p))
    assert t["tp"] + t["fp"] + t["fn"] + t["tn"] == t["n"] == 200
    assert t["n_pos"] == y.sum()


def test_binary_table_all_negative() -> None:
    t = binary_table(np.zeros(5, int), np.array([0.1, 0.2, 0.7, 0.3, 0.4]))
    assert t["roc_auc"] is None and t["pr_auc"] is None
    assert t["precision"] == 0.0 and t["recall"] == 0.0 and t["specificity"] == 0.8


def test_fast_prf_matches_sklearn(ml_data) -> None:
    y, p = ml_data
    pred = (p >= 0.5).astype(int)
    tp = ((y == 1) & (pred == 1)).sum(0)
    fp = ((y == 0) & (pred == 1)).sum(0)
    fn = ((y == 1) & (pred == 0)).sum(0)
    for avg in ("macro", "weighted", "micro"):
        ref = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)[:3]
        assert _prf_from_counts(tp, fp, fn, avg) == pytest.approx(ref)
    z = np.zeros(3, int)
    assert _prf_from_counts(z, np.array([5, 0, 0]), z, "weighted") == (0.0, 0.0, 0.0)


def test_multilabel_summary(ml_data) -> None:
    y, p = ml_data
    groups = np.repeat(np.arange(60), 5)
    s = multilabel_summary(
        y, p, LABELS, groups, thresholds=0.5,
        class_weights=dict(zip(LABELS, RSNA_W)),
        headline=("weighted_f1", "any_auc", "rsna_weighted_log_loss", "ece", "brier"),
        n_boot=60, seed=3,
    )
    json.dumps(s, allow_nan=False)  # plain Python types, no NaN
    assert s["n_patients"] == 60 and s["n"] == 300
    assert s["rsna_weighted_log_loss"] == pytest.approx(rsna_weighted_log_loss(y, p, RSNA_W))
    h = s["headline"]
    assert h["weighted_f1"]["value"] == pytest.approx(s["weighted"]["f1"])
    assert h["any_auc"]["value"] == pytest.approx(s["per_class"]["any"]["roc_auc"])
    assert h["rsna_weighted_log_loss"]["value"] == pytest.approx(s["rsna_weighted_log_loss"])
    assert h["ece"]["value"] == pytest.approx(s["calibration"]["ece"])
    for r in h.values():
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
        assert r["n_groups"] == 60
    assert len(s["reliability"]["count"]) == 15
    assert sum(s["reliability"]["count"]) == y.size


def test_multilabel_summary_degenerate_and_unknown(ml_data) -> None:
    y, p = ml_data
    y = y.copy()
    y[:, 1] = 0
    groups = np.arange(300) // 10
    s = multilabel_summary(y, p, LABELS, groups, headline=("epidural_auc",), n_boot=10)
    assert s["headline"]["epidural_auc"]["value"] is None
    assert s["headline"]["epidural_auc"]["reason"]
    with pytest.raises(ValueError, match="valid names"):
        multilabel_summary(y, p, LABELS, groups, headline=("no_such_metric",), n_boot=10)


def test_binary_summary() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(200) < 0.4).astype(int)
    p = np.clip(0.4 * y + 0.6 * rng.random(200), 0, 1)
    groups = np.arange(200) // 4
    s = binary_summary(
        y, p, groups, headline=("accuracy", "roc_auc", "f1", "specificity", "pr_auc"), n_boot=60
    )
    json.dumps(s, allow_nan=False)
    assert s["n_patients"] == 50
    for name in ("accuracy", "roc_auc", "f1", "specificity", "pr_auc"):
        r = s["headline"][name]
        assert r["value"] == pytest.approx(s[name])
        assert r["ci_low"] <= r["value"] <= r["ci_high"]
    with pytest.raises(ValueError, match="valid names"):
        binary_summary(y, p, groups, headline=("auc",), n_boot=5)


def test_one_label_table_is_that_label_not_class_zero() -> None:
    """An (N, 1) target is one label (binary tasks), not a two-class problem: the per-class row and
    every average are the positive class's figures (sklearn average='binary')."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(7)
    y = (rng.random((80, 1)) < 0.3).astype(int)
    p = np.clip(0.35 * y + rng.random((80, 1)) * 0.7, 0, 1)
    t = multilabel_table(y, p, ["phe"], 0.5)
    pred = (p[:, 0] >= 0.5).astype(int)
    prec, rec, f1, _ = precision_recall_fscore_support(y[:, 0], pred, average="binary", zero_division=0)
    tn, fp, fn, tp = confusion_matrix(y[:, 0], pred, labels=[0, 1]).ravel()
    row = t["per_class"]["phe"]
    assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((prec, rec, f1))
    assert (row["tp"], row["fp"], row["fn"], row["tn"], row["support"]) == (tp, fp, fn, tn, int(y.sum()))
    for avg in ("macro", "weighted", "micro"):
        assert (t[avg]["precision"], t[avg]["recall"], t[avg]["f1"]) == pytest.approx((prec, rec, f1))
