"""``medtasks evaluate``: a trained run on another labelled manifest (tiny synthetic phe_classify and
ms_segment runs): on the run's own test rows it gives the run's own metrics exactly, the trained run is left
untouched, and bad manifests are clear errors (missing column, label out of range) or rejected rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from medtasks import api, cli
from medtasks.data.manifest import ManifestError
from medtasks.reproduce import compare_metrics

TINY = yaml.safe_load((Path(__file__).resolve().parents[1] / "tasks" / "tiny_profiles.yaml").read_text())
NOT_COMPARED = ("warnings", "external_evaluation", "best_epoch", "epochs_run", "train_time_s")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDTASKS_CACHE", str(tmp_path_factory.mktemp("cache")))
    root = tmp_path_factory.mktemp("runs")
    ms = TINY["ms_segment"] + ["postprocess.min_lesion_mm3=auto"]
    out = {t: api.run(t, overrides=o, runs_dir=root, progress=False)[0]
           for t, o in (("phe_classify", TINY["phe_classify"]), ("ms_segment", ms))}
    yield out
    mp.undo()


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
