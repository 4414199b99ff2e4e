"""End to end on synthetic DICOM: prepare -> train (1 epoch, tiny) -> evaluate -> predict -> report."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtasks import api
from medtasks.cli import main
from medtasks.synth.head_ct import generate_head_ct

TINY = ["train.epochs=1", "train.batch_size=8", "input.size=64", "eval.n_boot=50", "eval.batch_size=16",
        "input.norm_samples=16", "data.split=[0.5,0.25,0.25]"]
CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "ich_classify.demo.yaml"


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("rsna")
    labels = generate_head_ct(out, n_patients=8, matrix=96, slices_per_series=(8, 10), seed=5, progress=False)
    return out, labels


@pytest.fixture(scope="module")
def prepared(synth, tmp_path_factory):
    src, labels = synth
    out = tmp_path_factory.mktemp("manifests") / "rsna.csv"
    assert main(["prepare", "ich_classify", "--source", str(src), "--labels", str(labels), "--out", str(out),
                 "--workers", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    rd, metrics = api.run("ich_classify", manifest=prepared, config=CONFIG, overrides=TINY, runs_dir=runs,
                          progress=False)
    return rd, metrics


def test_prepare_manifest(prepared, synth):
    df = pd.read_csv(prepared)
    assert list(df.columns) == ["patient_id", "study_instance_uid", "series_instance_uid", "sop_instance_uid", "Z",
                                "any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid",
                                "subdural", "z_normalized", "path"]
    assert df.patient_id.nunique() == 8
    assert (df.groupby("series_instance_uid").z_normalized.agg(["min", "max"]).values == [0.0, 1.0]).all()
    for _, g in df.groupby("series_instance_uid"):
        assert g.Z.is_monotonic_increasing
    assert not Path(df.path[0]).is_absolute()                     # relative to the manifest
    assert (prepared.parent / df.path[0]).resolve().is_file()
    sub = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
    assert (df["any"] == df[sub].max(axis=1)).all()
    rejected = pd.read_csv(prepared.with_name("rsna.rejected.csv"))
    assert rejected.empty


def test_prepare_is_idempotent(prepared, synth):
    before = prepared.read_bytes()
    src, labels = synth
    api.prepare("ich_classify", src, prepared, labels=labels, workers=1, progress=False)
    assert prepared.read_bytes() == before


def test_run_directory_and_metrics(trained):
    rd, metrics = trained
    p = rd.path
    for name in ("config.resolved.yaml", "env.json", "manifest.csv", "rejected.csv", "history.csv",
                 "predictions.csv", "metrics.json", "report.html", "checkpoints/best.pt", "checkpoints/last.pt",
                 "checkpoints/task_state.json"):
        assert (p / name).is_file(), name
    man = pd.read_csv(p / "manifest.csv")
    assert man.groupby("patient_id").split.nunique().max() == 1
    preds = pd.read_csv(p / "predictions.csv")
    test_rows = man[man.split == "test"]
    assert len(preds) == len(test_rows) and set(preds.patient_id) == set(test_rows.patient_id)
    assert {"prob_any", "true_any", "pred_any", "case_id"} <= set(preds.columns)
    m = json.loads((p / "metrics.json").read_text())
    assert m["synthetic"] is False and m["labels"][-1] == "any"
    for k in ("weighted_f1", "any_auc", "rsna_weighted_log_loss"):
        assert k in m["headline"]
    env = json.loads((p / "env.json").read_text())
    assert env["packages"]["monai"] and env["seed"] == 42
    assert env["torch_threads"] >= 1 and isinstance(env["cpu_native_bf16"], bool)
    state = json.loads((p / "checkpoints" / "task_state.json").read_text())
    assert len(state["norm_mean"]) == 9   # 3 windows x 3 slices: the demo profile is 2.5-D (input.context=1)
    html = (p / "report.html").read_text()
    assert "ich_classify" in html


def test_temperature_and_thresholds_fitted_on_val_and_used(trained):
    """ich_classify.yaml turns on the report's temperature scaling and threshold search: both are
    fitted on validation, saved with the model, and the evaluation applies them."""
    from medtasks.metrics.tuning import search_thresholds

    rd, _ = trained
    p = rd.path
    state = json.loads((p / "checkpoints" / "task_state.json").read_text())
    assert 0.6 <= state["temperature"] <= 3.0
    assert set(state["thresholds"]) == {"epidural", "intraparenchymal", "intraventricular", "subarachnoid",
                                        "subdural", "any"}
    assert all(0.05 <= t <= 0.95 for t in state["thresholds"].values())
    m = json.loads((p / "metrics.json").read_text())
    assert m["temperature"] == state["temperature"] and m["thresholds"] == state["thresholds"]
    before = m["before_temperature"]
    assert before["temperature"] == 1.0 and {"ece", "brier", "weighted_log_loss", "reliability"} <= set(before)
    preds = pd.read_csv(p / "predictions.csv")
    for lab, t in state["thresholds"].items():
        assert (preds[f"pred_{lab}"] == (preds[f"prob_{lab}"] >= t).astype(int)).all()
    assert (p / "figures" / "reliability_before.png").is_file()
    assert "temperature-table" in (p / "report.html").read_text()
    # The thresholds are the F1-optimal ones of the validation split's calibrated probabilities.
    from medtasks.api import task_from_run

    task = task_from_run(rd)
    man = pd.read_csv(p / "manifest.csv")
    val = man[man.split == "val"].reset_index(drop=True)
    probs = task.infer(task.load_model(rd, "best"), val, "val")
    labels = list(state["thresholds"])
    expected = search_thresholds(val[labels].astype(int).values, probs, np.round(np.arange(0.05, 0.955, 0.01), 4))
    assert expected == pytest.approx([state["thresholds"][k] for k in labels])


def test_predict_folder_kaggle_format(trained, synth, tmp_path):
    rd, _ = trained
    src, _ = synth
    folder = tmp_path / "new_study"
    folder.mkdir()
    files = sorted((src / "stage_2_train").glob("*.dcm"))[:5]
    for f in files:
        shutil.copy(f, folder / f.name)
    (folder / "ID_corrupt.dcm").write_bytes(b"not a dicom file at all" * 10)
    out = api.predict("ich_classify", rd.path, folder, tmp_path / "pred", progress=False)
    sub = pd.read_csv(out / "submission.csv")
    assert list(sub.columns) == ["ID", "Label"] and len(sub) == 5 * 6
    assert sub.ID.str.match(
        r"^ID_[0-9a-f]+_(epidural|intraparenchymal|intraventricular|subarachnoid|subdural|any)$").all()
    assert sub.Label.between(0, 1).all()
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 5 and {"pred_any", "prob_any"} <= set(preds.columns)
    rej = pd.read_csv(out / "rejected.csv")
    assert rej.path.str.endswith("ID_corrupt.dcm").tolist() == [True] and rej.reason[0] == "unreadable"


def test_report_rerenders(trained):
    rd, _ = trained
    (rd.path / "report.html").unlink()
    assert main(["report", str(rd.path)]) == 0
    assert (rd.path / "report.html").is_file()


def test_resume_extends_run(trained):
    rd, _ = trained
    text = (rd.path / "config.resolved.yaml").read_text()
    assert "  epochs: 1\n" in text
    (rd.path / "config.resolved.yaml").write_text(text.replace("  epochs: 1\n", "  epochs: 2\n"))
    rd2, _ = api.run("ich_classify", resume=rd.path, progress=False)
    hist = pd.read_csv(rd2.path / "history.csv")
    assert hist.epoch.tolist() == [1, 2]


def test_prepare_rejects_corrupt_and_continues(synth, tmp_path):
    src, labels = synth
    folder = tmp_path / "mixed"
    shutil.copytree(src / "stage_2_train", folder / "stage_2_train")
    good = sorted((folder / "stage_2_train").glob("*.dcm"))
    (folder / "stage_2_train" / "ID_6431af929.dcm").write_bytes(good[0].read_bytes()[:300])   # truncated
    res = api.prepare("ich_classify", folder, tmp_path / "m.csv", labels=labels, workers=2, progress=False)
    rej = pd.read_csv(res.rejected)
    assert rej.path.str.endswith("ID_6431af929.dcm").any()
    assert rej.loc[rej.path.str.endswith("ID_6431af929.dcm"), "reason"].item() in ("unreadable", "no_pixel_data")
    assert res.n_rows == len(good)


def test_real_ct_slice_uncompressed_and_j2k_predict_identically(trained, tmp_path):
    from pydicom.data import get_testdata_file

    rd, _ = trained
    outs = []
    for name in ("693_UNCR.dcm", "693_J2KR.dcm"):
        folder = tmp_path / name.split(".")[0]
        folder.mkdir()
        shutil.copy(get_testdata_file(name), folder / name)
        out = api.predict("ich_classify", rd.path, folder, folder / "out", progress=False)
        outs.append(pd.read_csv(out / "predictions.csv"))
        assert pd.read_csv(out / "rejected.csv").empty
    a, b = outs
    cols = [c for c in a.columns if c.startswith("prob_")]
    assert np.array_equal(a[cols].to_numpy(), b[cols].to_numpy())
    assert a.z_normalized.item() == 0.5


def test_patient_name_and_birth_date_never_leave_the_reader(trained, synth, tmp_path):
    import pydicom

    rd, _ = trained
    src, _ = synth
    names, births = set(), set()
    for f in sorted((src / "stage_2_train").glob("*.dcm")):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        names.add(str(ds.PatientName))
        births.add(str(ds.PatientBirthDate))
    assert names and births
    api.predict("ich_classify", rd.path, src / "stage_2_train", tmp_path / "p", progress=False)
    texts = [p.read_text(errors="ignore") for root in (rd.path, tmp_path / "p")
             for p in root.rglob("*") if p.suffix in (".csv", ".json", ".yaml", ".html")]
    for t in texts:
        for secret in names | births:
            assert secret not in t
