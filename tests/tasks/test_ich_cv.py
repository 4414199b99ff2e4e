"""Cross-validation of ich_classify end to end on a tiny synthetic set: folds, OOF, selection, ensemble."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medtasks import api
from medtasks.synth.head_ct import generate_head_ct

CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "ich_classify.demo.yaml"
TINY = ["train.epochs=1", "train.batch_size=8", "input.size=48", "eval.n_boot=20", "eval.batch_size=32",
        "input.norm_samples=16", "data.split=[0.6,0.2,0.2]", "cv.folds=3", "eval.tta=false",
        "input.context=0"]  # the 2-D case; seq_run below is the 2.5-D one


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    out = tmp_path_factory.mktemp("rsna_cv")
    labels = generate_head_ct(out, n_patients=10, matrix=64, slices_per_series=(5, 6), seed=11, progress=False)
    res = api.prepare("ich_classify", out, out / "m.csv", labels=labels, workers=1, progress=False)
    return res.manifest


@pytest.fixture(scope="module")
def cv_run(manifest, tmp_path_factory):
    return api.run("ich_classify", manifest=manifest, config=CONFIG, overrides=TINY,
                   runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_folds_by_patient_and_oof_covers_every_training_row(cv_run):
    rd, metrics = cv_run
    man = pd.read_csv(rd / "manifest.csv")
    assert set(man.fold) == {-1, 0, 1, 2}
    assert (man.loc[man.split == "test", "fold"] == -1).all() and set(man.split) == {"train", "test"}
    assert man.groupby("patient_id").fold.nunique().max() == 1          # no patient in two folds
    oof = pd.read_csv(rd / "oof_predictions.csv")
    pool = man[man.fold >= 0]
    assert len(oof) == len(pool) and sorted(oof.case_id) == sorted(pool.sop_instance_uid)
    assert (oof.set_index("case_id").fold == pool.set_index("sop_instance_uid").fold.loc[oof.case_id]).all()
    for i in range(3):
        assert (rd / f"fold_{i}" / "checkpoints" / "best.pt").is_file()
        assert (rd / f"fold_{i}" / "history.csv").is_file()


def test_cv_json_summary_selection_and_calibration(cv_run):
    rd, metrics = cv_run
    cv = json.loads((rd / "cv.json").read_text())
    scores = [f["best_val_loss"] for f in cv["per_fold"]]
    assert cv["selected_fold"] == int(np.argmin(scores))
    assert cv["mean"]["weighted_f1"] == pytest.approx(np.mean([f["weighted_f1"] for f in cv["per_fold"]]))
    assert cv["sd"]["weighted_f1"] == pytest.approx(np.std([f["weighted_f1"] for f in cv["per_fold"]], ddof=1))
    best = rd / f"fold_{cv['selected_fold']}" / "checkpoints" / "best.pt"
    assert (rd / "checkpoints" / "best.pt").read_bytes() == best.read_bytes()
    assert metrics["cv"]["selected_fold"] == cv["selected_fold"]
    state = json.loads((rd / "checkpoints" / "task_state.json").read_text())
    assert "temperature" in state and set(state["thresholds"]) >= {"any", "subdural"}
    assert "cv-table" in (rd / "report.html").read_text()


def test_ensemble_averages_fold_models(cv_run):
    import torch

    from medtasks.api import task_from_run
    from medtasks.models.ensemble import EnsembleModel

    rd, _ = cv_run
    task = task_from_run(rd)
    task.cfg.cv.select = "ensemble"
    model = task.load_model(rd, "best")
    assert isinstance(model, EnsembleModel) and len(model.members) == 3
    x, z = torch.randn(2, 3, 48, 48), torch.rand(2)
    with torch.no_grad():
        expected = torch.stack([m(x, z) for m in model.members]).mean(0)
        assert torch.allclose(model(x, z), expected)


@pytest.fixture(scope="module")
def seq_run(manifest, tmp_path_factory):
    """2.5-D input (3 slices x 3 windows) + the series sequence head on 2-fold CV."""
    overrides = [o for o in TINY if not o.startswith("cv.folds")] + [
        "cv.folds=2", "input.context=1", "sequence.enabled=true", "sequence.epochs=3", "sequence.hidden=8"]
    return api.run("ich_classify", manifest=manifest, config=CONFIG, overrides=overrides,
                   runs_dir=tmp_path_factory.mktemp("runs_seq"), progress=False)


def test_context_input_has_nine_channels(seq_run):
    from medtasks.api import task_from_run

    rd, _ = seq_run
    task = task_from_run(rd)
    assert len(task.state["norm_mean"]) == 9
    conv = task.build_model().backbone.conv1
    assert conv.in_channels == 9


def test_sequence_head_trained_out_of_fold_and_applied(seq_run):
    from medtasks.api import task_from_run
    from medtasks.metrics.tuning import sigmoid
    from medtasks.tasks.ich_classify.sequence import load_sequence_head, refine

    rd, metrics = seq_run
    for k in range(2):
        assert (rd / "sequence" / f"fold_{k}" / "checkpoints" / "best.pt").is_file()
    state = json.loads((rd / "checkpoints" / "task_state.json").read_text())
    assert state["sequence"]["folds"] == 2 and "stage1" in state["sequence"]
    assert {"oof_weighted_f1_stage1", "oof_weighted_f1_stage2"} <= set(metrics["sequence"])
    # predictions.csv = stage 2 applied to the stage-1 logits of the test rows, then temperature.
    task = task_from_run(rd)
    man = pd.read_csv(rd / "manifest.csv", dtype={"sop_instance_uid": str})
    test = man[man.split == "test"].reset_index(drop=True)
    model = task.load_model(rd, "best")
    head = load_sequence_head(task, rd)
    assert head is not None
    stage1 = task.infer_logits(model, test, "test")          # no run: the network alone
    np.testing.assert_allclose(task.infer_logits(model, test, "test", run=rd), refine(head, test, stage1))
    expected = sigmoid(refine(head, test, stage1) / state["temperature"])
    preds = pd.read_csv(rd / "predictions.csv", dtype={"case_id": str}).set_index("case_id").loc[test.sop_instance_uid]
    np.testing.assert_allclose(preds[[f"prob_{lab}" for lab in task.labels]].to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_sequence_head_needs_cv():
    from medtasks.config import ConfigError, load_config
    from medtasks.tasks.ich_classify.config import IchConfig

    with pytest.raises(ConfigError, match="cv.folds"):
        load_config(CONFIG, IchConfig, ["sequence.enabled=true"])


def test_predict_with_context_and_sequence_head(seq_run, manifest, tmp_path):
    """predict on a raw DICOM folder rebuilds series, neighbours and the stage-2 head."""
    import shutil

    rd, _ = seq_run
    man = pd.read_csv(manifest)
    series = man.series_instance_uid.iloc[0]
    folder = tmp_path / "study"
    folder.mkdir()
    rows = man[man.series_instance_uid == series]
    for p in rows.path:
        shutil.copy(Path(manifest).parent / p, folder / Path(p).name)
    out = api.predict("ich_classify", rd.path, folder, tmp_path / "pred", progress=False)
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == len(rows) and preds.prob_any.between(0, 1).all()
    sub = pd.read_csv(out / "submission.csv")
    assert len(sub) == 6 * len(rows)
