"""``medtasks evaluate``: a trained run on another labelled manifest (tiny synthetic phe_classify and
ms_segment runs): on the run's own test rows it gives the run's own metrics exactly, the trained run is left
untouched, and bad manifests are clear errors (missing column, label out of range) or rejected rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from medtasks import api, cli
from medtasks.data.manifest import ManifestError
from medtasks.reproduce import compare_metrics

NOT_COMPARED = ("warnings", "external_evaluation", "best_epoch", "epochs_run", "train_time_s")


@pytest.fixture(scope="module")
def runs(tiny_run):
    return {"phe_classify": tiny_run("phe_classify"),
            "ms_segment": tiny_run("ms_segment", "postprocess.min_lesion_mm3=auto")}


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and "evaluate" not in p.parts}


@pytest.mark.parametrize("task", ["phe_classify", "ms_segment"])
def test_evaluate_on_the_runs_own_test_rows_gives_its_metrics(runs, task, capsys) -> None:
    rd = runs[task]
    before = _digest(rd.path)
    rc = cli.main(["evaluate", task, "--run", str(rd.path), "--manifest", str(rd / "manifest.csv"),
                   "--split", "test"])
    assert rc == 0
    out = capsys.readouterr().out
    (folder,) = list((rd / "evaluate").iterdir())
    assert str((folder / "report.html").resolve()) in out
    for name in ("predictions.csv", "metrics.json", "report.html", "manifest.csv", "rejected.csv", "env.json",
                 "config.resolved.yaml", "run.log"):
        assert (folder / name).is_file(), name
    assert _digest(rd.path) == before                        # the trained run is not touched
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (rd.path, folder))
    ext = b["external_evaluation"]
    assert ext["manifest"] == str((rd / "manifest.csv").resolve()) and ext["split"] == "test"
    assert any(w.startswith("EXTERNAL EVALUATION") for w in b["warnings"])
    assert "EXTERNAL EVALUATION" in (folder / "report.html").read_text()
    for m in (a, b):
        for k in NOT_COMPARED:
            m.pop(k, None)
    if task == "ms_segment":   # chosen on the run's validation volumes; reused here (no val rows)
        assert b["postprocess"]["min_lesion_mm3"] == a["postprocess"]["min_lesion_mm3"]
        assert "the size the trained run chose" in b["postprocess"]["note"]
        a.pop("postprocess"), b.pop("postprocess")
    res = compare_metrics(a, b, 0.0)
    assert res["ok"], res["differences"][:5]
    assert res["compared"] > 50
    pa = pd.read_csv(rd / "predictions.csv").drop(columns=["split"], errors="ignore")
    pb = pd.read_csv(folder / "predictions.csv").drop(columns=["split"], errors="ignore")
    pd.testing.assert_frame_equal(pa, pb)


def test_bad_manifests_are_clear_errors_or_rejected_rows(runs, tmp_path, capsys) -> None:
    rd = runs["phe_classify"]
    df = pd.read_csv(rd / "manifest.csv", dtype={"patient_id": str})
    df = df[df.split == "test"].reset_index(drop=True)
    df.drop(columns=["has_phe"]).to_csv(tmp_path / "nocol.csv", index=False)
    assert cli.main(["evaluate", "phe_classify", "--run", str(rd.path), "--manifest", str(tmp_path / "nocol.csv")]) == 2
    assert "has_phe" in capsys.readouterr().err
    bad = df.copy()
    bad.loc[3, "has_phe"] = 2
    bad.to_csv(tmp_path / "range.csv", index=False)
    with pytest.raises(ManifestError, match="has_phe") as err:      # the task's own schema check names the row
        api.evaluate("phe_classify", rd.path, tmp_path / "range.csv")
    assert Path(bad.loc[3, "image"]).name in str(err.value) and "range.csv" in str(err.value)
    gone = df.copy()
    gone.loc[0, "image"] = str(tmp_path / "missing.png")
    gone.to_csv(tmp_path / "gone.csv", index=False)
    folder, metrics = api.evaluate("phe_classify", rd.path, tmp_path / "gone.csv", out=tmp_path / "ev")
    rej = pd.read_csv(folder / "rejected.csv")
    assert len(rej) == 1 and rej.iloc[0]["reason"] == "missing_file" and "missing.png" in rej.iloc[0]["path"]
    assert metrics["external_evaluation"]["n_rows"] == len(df) - 1
    assert len(pd.read_csv(folder / "predictions.csv")) == len(df) - 1
    with pytest.raises(FileExistsError):
        api.evaluate("phe_classify", rd.path, tmp_path / "gone.csv", out=tmp_path / "ev")


def test_subgroup_tables_by_sex_and_age_checked_by_hand(runs, tmp_path, capsys) -> None:
    """--by sex --by age on phe_classify's own test rows (sex / age come from the release's MedInfo through
    prepare): each subgroup's F1 is sklearn's on that subgroup's rows; the difference is the subgroup's minus
    the rest's; age (many values) is cut into quantile bands; every evaluated case is in exactly one group."""
    from sklearn.metrics import f1_score, roc_auc_score

    rd = runs["phe_classify"]
    man = pd.read_csv(rd / "manifest.csv", dtype={"patient_id": str})
    assert {"sex", "age"} <= set(man.columns)
    # every row of the run's manifest (all its patients: both sexes), as another hospital's manifest would be
    assert cli.main(["evaluate", "phe_classify", "--run", str(rd.path), "--manifest", str(rd / "manifest.csv"),
                     "--by", "sex", "--by", "age", "--out", str(tmp_path / "ev")]) == 0
    folder = tmp_path / "ev"
    table = pd.read_csv(folder / "subgroups.csv", dtype={"group": str})
    preds = pd.read_csv(folder / "predictions.csv", dtype={"patient_id": str})
    sex = man.drop_duplicates("image").set_index("image")["sex"]
    preds["sex"] = preds["case_id"].map(sex)
    assert preds["sex"].notna().all() and preds["sex"].nunique() == 2
    for g, rows in preds.groupby("sex"):
        rest = preds[preds.sex != g]
        got = table[(table.by == "sex") & (table.group == g)].set_index("metric")
        want = f1_score(rows.true_phe, rows.pred_phe, zero_division=0)
        assert got.loc["f1", "value"] == pytest.approx(want, abs=1e-12)
        assert got.loc["f1", "n_cases"] == len(rows) and got.loc["f1", "n_patients"] == rows.patient_id.nunique()
        assert got.loc["f1", "diff"] == pytest.approx(want - f1_score(rest.true_phe, rest.pred_phe, zero_division=0),
                                                      abs=1e-12)
        if rows.true_phe.nunique() == 2:
            assert got.loc["roc_auc", "value"] == pytest.approx(roc_auc_score(rows.true_phe, rows.prob_phe), abs=1e-9)
        assert got.loc["f1", "ci_low"] <= got.loc["f1", "value"] <= got.loc["f1", "ci_high"]
    ages = table[table.by == "age"]
    assert (ages.banded == (man.age.nunique() > 8)).all() and ages.drop_duplicates("group").n_cases.sum() == len(preds)
    saved = json.loads((folder / "metrics.json").read_text())
    assert set(saved["subgroups"]) == {"sex", "age"}
    assert sum(v["n_cases"] for v in saved["subgroups"]["sex"].values()) == len(preds)
    html = (folder / "report.html").read_text()
    assert 'id="subgroups"' in html and (folder / "figures" / "subgroups_sex.png").is_file()
    # a column the manifest lacks fails before any inference, naming it
    with pytest.raises(ValueError, match="no column 'scanner'"):
        api.evaluate("phe_classify", rd.path, rd / "manifest.csv", split="test", by=["scanner"], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_subgroups_of_a_segmentation_run_and_a_column_not_constant_within_a_case(runs, tmp_path) -> None:
    rd = runs["ms_segment"]
    man = pd.read_csv(rd / "manifest.csv", dtype={"subject_id": str})
    test = man[man.split == "test"].copy()
    test["site"] = ["A" if i % 2 == 0 else "B" for i in range(len(test))]
    test.to_csv(tmp_path / "sites.csv", index=False)
    folder, metrics = api.evaluate("ms_segment", rd.path, tmp_path / "sites.csv", by=["site"], out=tmp_path / "ev")
    table = pd.read_csv(folder / "subgroups.csv")
    preds = pd.read_csv(folder / "predictions.csv")
    site = dict(zip(test.subject_id.astype(str) + "_" + test.timepoint.astype(str), test.site))
    preds["site"] = preds.case_id.map(site)
    for g, rows in preds.groupby("site"):
        got = table[(table.by == "site") & (table.group == g)].set_index("metric")
        tp, fp, fn = rows.tp.sum(), rows.fp.sum(), rows.fn.sum()
        assert got.loc["pooled_dice", "value"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    twice = pd.concat([test, test.assign(site="C")])     # the same volume under two sites
    twice.to_csv(tmp_path / "twice.csv", index=False)
    with pytest.raises(ValueError, match="different 'site' values"):
        api.evaluate("ms_segment", rd.path, tmp_path / "twice.csv", by=["site"], out=tmp_path / "ev2")


def test_numeric_columns_with_many_values_are_banded_and_blanks_are_a_group() -> None:
    from medtasks.subgroups import MISSING, _band

    ages = pd.Series([20, 30, 40, 50, 60, 70, 80, 21, 31, 41, 51, 61, None, 71, 81, 22])
    groups, banded = _band(ages)
    assert banded and groups.iloc[12] == MISSING and groups[groups != MISSING].nunique() == 4
    assert groups.iloc[0] == "20-30" and groups.iloc[14].endswith("-81")   # each band named by its values' range
    few, banded = _band(pd.Series(["F", "M", "", "F"]))
    assert not banded and few.tolist() == ["F", "M", MISSING, "F"]
