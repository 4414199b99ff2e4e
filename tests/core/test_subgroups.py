"""Subgroup tables checked by hand on a tiny evaluation folder (predictions.csv written here): per-subgroup F1 and
ROC-AUC of a binary task and pooled Dice of a segmentation task by hand, the difference to the rest, the CI around
the value, and the report section with its forest plot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtasks.report import render_report
from medtasks.subgroups import subgroup_analysis, subgroup_values


class _Task:
    """What subgroup_values needs of a task: the case id of each manifest row."""

    def case_ids(self, df: pd.DataFrame) -> pd.Series:
        return df["image"].astype(str)


def _folder(tmp_path: Path, kind: str, labels: list[str], preds: pd.DataFrame) -> Path:
    folder = tmp_path / "ev"
    (folder / "figures").mkdir(parents=True)
    (folder / "config.resolved.yaml").write_text(yaml.safe_dump({"task": "t", "kind": kind, "labels": labels}))
    (folder / "metrics.json").write_text(json.dumps({"task": "t", "kind": kind, "split": "test", "labels": labels,
                                                     "headline": {}}))
    preds.assign(split="test").to_csv(folder / "predictions.csv", index=False)
    return folder


def test_binary_subgroups_by_hand(tmp_path) -> None:
    # 6 patients x 2 slices; sex F: patients 1-3, M: patients 4-6
    truth = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1]
    prob = [.9, .2, .4, .8, .6, .1, .7, .3, .2, .9, .4, .8]
    pred = [int(p >= .5) for p in prob]
    preds = pd.DataFrame({"case_id": [f"s{i}" for i in range(12)], "patient_id": [str(i // 2 + 1) for i in range(12)],
                          "true_x": truth, "prob_x": prob, "pred_x": pred})
    manifest = pd.DataFrame({"image": preds.case_id, "sex": ["F"] * 6 + ["M"] * 6})
    folder = _folder(tmp_path, "binary", ["x"], preds)
    block = subgroup_analysis(folder, subgroup_values(_Task(), manifest, ["sex"]), n_boot=200, seed=0)
    table = pd.read_csv(folder / "subgroups.csv").set_index(["group", "metric"])
    # F rows: truth 1 0 1 1 0 0, pred 1 0 0 1 1 0 -> tp 2, fp 1, fn 1 -> F1 = 4 / 6
    # M rows: truth 1 0 1 1 0 1, pred 1 0 0 1 0 1 -> tp 3, fp 0, fn 1 -> F1 = 6 / 7
    assert table.loc[("F", "f1"), "value"] == pytest.approx(4 / 6, abs=1e-12)
    assert table.loc[("M", "f1"), "value"] == pytest.approx(6 / 7, abs=1e-12)
    assert table.loc[("F", "f1"), "diff"] == pytest.approx(4 / 6 - 6 / 7, abs=1e-12)
    assert table.loc[("M", "f1"), "rest_value"] == pytest.approx(4 / 6, abs=1e-12)
    # ROC-AUC of F: positives .9 .4 .8 vs negatives .2 .6 .1 -> 8 of 9 pairs ordered -> 8/9
    assert table.loc[("F", "roc_auc"), "value"] == pytest.approx(8 / 9, abs=1e-12)
    # M: positives .7 .2 .9 .8 vs negatives .3 .4 -> (2 + 0 + 2 + 2) / 8
    assert table.loc[("M", "roc_auc"), "value"] == pytest.approx(6 / 8, abs=1e-12)
    for g in ("F", "M"):
        r = table.loc[(g, "f1")]
        assert r.n_cases == 6 and r.n_patients == 3 and r.shared_patients == 0
        assert r.ci_low <= r.value <= r.ci_high and r.diff_ci_low <= r["diff"] <= r.diff_ci_high
    assert block["sex"]["F"]["metrics"]["f1/x"]["value"] == pytest.approx(4 / 6)
    assert block["sex"]["M"]["n_cases"] == 6
    html = render_report(folder).read_text()
    assert 'id="subgroups"' in html and 'id="subgroups-sex"' in html
    assert (folder / "figures" / "subgroups_sex.png").stat().st_size > 5000


def test_segmentation_subgroups_pool_the_pixel_counts(tmp_path) -> None:
    preds = pd.DataFrame({"case_id": ["a", "b", "c", "d"], "patient_id": ["1", "2", "3", "4"],
                          "dice": [0.8, 0.5, 1.0, 0.0], "n_true": [10, 10, 0, 4],
                          "tp": [8, 5, 0, 0], "fp": [2, 5, 0, 3], "fn": [2, 5, 0, 4], "tn": [100] * 4})
    manifest = pd.DataFrame({"image": ["a", "b", "c", "d"], "site": ["X", "X", "Y", "Y"]})
    folder = _folder(tmp_path, "segmentation", ["lesion"], preds)
    subgroup_analysis(folder, subgroup_values(_Task(), manifest, ["site"]), n_boot=100, seed=0)
    t = pd.read_csv(folder / "subgroups.csv").set_index(["group", "metric"])
    assert t.loc[("X", "pooled_dice"), "value"] == pytest.approx(2 * 13 / (2 * 13 + 7 + 7))
    assert t.loc[("Y", "pooled_dice"), "value"] == pytest.approx(0.0)   # d only: no tp
    assert t.loc[("Y", "per_image_dice"), "value"] == pytest.approx(0.0)  # c has no truth lesion: left out
    assert t.loc[("X", "pooled_dice"), "diff"] == pytest.approx(26 / 40)
