"""phe_classify end to end on a tiny synthetic PHE-SICH-CT-IDS: prepare -> train 1 epoch -> evaluate
(metrics with CIs, Grad-CAM) -> report -> predict; plus the Grad-CAM helper, the PNG reader and config errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from medtasks import api
from medtasks.config import ConfigError, load_config
from medtasks.data.phe_sich import SLICE_COLUMNS
from medtasks.data.splits import LEAKY_WARNING
from medtasks.io.images import read_grey
from medtasks.report.text import per_class_table
from medtasks.tasks.phe_classify import PheClassify
from medtasks.tasks.phe_classify.config import PheClassifyConfig
from medtasks.tasks.sources.phe_sich import PHE_LABEL_NOTE as LABEL_NOTE
from medtasks.viz.gradcam import gradcam_grid, gradcam_maps

CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "phe_classify.demo.yaml"
TINY = ["train.epochs=1", "train.batch_size=8", "train.threads=1", "input.size=64", "input.norm_samples=16",
        "eval.n_boot=20", "eval.batch_size=16", "data.split=[0.5,0.25,0.25]"]


@pytest.fixture(scope="module")
def synth(phe_release) -> Path:
    return phe_release


@pytest.fixture(scope="module")
def prepared(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifests") / "phe.csv"
    res = api.prepare("phe_classify", synth, out, progress=False)
    assert res.manifest == out and res.n_rejected == 0
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    # Every patient has PHE and non-PHE slices, so the test split holds both classes: each positive
    # is a TP or an FN, hence at least one Grad-CAM grid must be written.
    df = pd.read_csv(prepared, dtype={"patient_id": str})
    assert (df.groupby("patient_id").has_phe.agg(["min", "max"]).values == [0, 1]).all()
    rd, metrics = api.run("phe_classify", manifest=prepared, config=CONFIG, overrides=TINY,
                          runs_dir=tmp_path_factory.mktemp("runs"), progress=False)
    return rd, metrics


def test_registered() -> None:
    task = {t["name"]: t for t in api.list_tasks()}["phe_classify"]
    assert task["kind"] == "binary" and task["source"] == "phe_sich_ct_ids_notes.txt"


def test_prepare_manifest(prepared) -> None:
    df = pd.read_csv(prepared, dtype={"patient_id": str})
    assert list(df.columns[: len(SLICE_COLUMNS)]) == list(SLICE_COLUMNS)
    assert len(df) == 48 and df.patient_id.nunique() == 6
    assert "13" in set(df.patient_id)                              # the 013_xx.xml quirk still pairs
    assert set(df.has_phe) == {0, 1}
    assert not Path(df.image[0]).is_absolute() and (prepared.parent / df.image[0]).is_file()
    assert pd.read_csv(prepared.with_name("phe.rejected.csv")).empty


def test_run_directory_metrics_and_report(trained) -> None:
    rd, metrics = trained
    p = rd.path
    for name in ("config.resolved.yaml", "env.json", "manifest.csv", "rejected.csv", "history.csv", "predictions.csv",
                 "metrics.json", "report.html", "classification_report.txt", "checkpoints/best.pt",
                 "checkpoints/task_state.json"):
        assert (p / name).is_file(), name
    saved = json.loads((p / "metrics.json").read_text())
    assert saved["kind"] == "binary" and saved["labels"] == ["phe"]
    for name in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert name in saved, name
        h = saved["headline"][name]
        assert h["ci_low"] <= h["value"] <= h["ci_high"], name
    assert {"tp", "fp", "fn", "tn", "specificity"} <= set(saved)
    pc = saved["per_class"]["phe"]                                     # the PHE class's numbers, not class 0's
    assert [pc[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn", "tn")] == \
        [saved[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn", "tn")]
    assert pc["support"] == saved["n_pos"] == pc["tp"] + pc["fn"] > 0
    assert saved["macro"] == saved["weighted"] == {k: pc[k] for k in ("precision", "recall", "f1")}
    assert per_class_table(saved).splitlines()[1].split()[0] == "phe"      # the end-of-run table of the CLI
    assert set(saved["classification_report"]) >= {"no PHE", "PHE", "accuracy"}
    man = pd.read_csv(p / "manifest.csv", dtype={"patient_id": str})
    assert man.groupby("patient_id").split.nunique().max() == 1     # split by patient
    preds = pd.read_csv(p / "predictions.csv", dtype={"patient_id": str})
    assert {"image", "patient_id", "true_phe", "prob_phe", "pred_phe"} <= set(preds.columns)
    assert len(preds) == (man.split == "test").sum() and preds.prob_phe.between(0, 1).all()
    cams = sorted((p / "figures").glob("*gradcam_*.png"))
    assert cams and sum(saved["gradcam"].values()) > 0
    assert saved["gradcam"]["tp"] + saved["gradcam"]["fn"] > 0
    html = (p / "report.html").read_text()
    for cam in cams:
        assert f"figures/{cam.name}" in html                         # shown in the report
    for fig in ("loss_curves.png", "confusion_matrices.png", "roc_curves.png", "reliability.png"):
        assert (p / "figures" / fig).is_file() and f"figures/{fig}" in html, fig
    assert "differ from metrics.json" not in html                    # confusion counts agree
    assert "perihematomal edema (PHE)" in html and LABEL_NOTE in saved["warnings"]


def test_gradcam_skips_kinds_without_slices(trained, caplog) -> None:
    rd, _ = trained
    task = api.task_from_run(rd)
    preds = pd.read_csv(rd / "predictions.csv", dtype={"patient_id": str})
    only_fn = preds[preds.true_phe == 1].assign(pred_phe=0)              # no TP, no FP
    with caplog.at_level("INFO", logger="medtasks.tasks.kinds.grey_classifier"):
        assert task.write_gradcam(rd, only_fn) == {"tp": 0, "fp": 0, "fn": min(4, len(only_fn))}
        assert [p.name for p in (rd / "figures").glob("extra_gradcam_*.png")] == ["extra_gradcam_fn.png"]
        assert task.write_gradcam(rd, preds[preds.true_phe == 0].assign(pred_phe=0)) == \
            {"tp": 0, "fp": 0, "fn": 0}
    assert "no true positives" in caplog.text and "no false positives" in caplog.text
    assert "no grid written" in caplog.text and not list((rd / "figures").glob("extra_gradcam_*.png"))


def test_predict_folder_with_a_corrupt_png(trained, synth, tmp_path) -> None:
    rd, _ = trained
    src = sorted((synth / "SubdatasetC_PNG" / "set").rglob("*.png"))[:3]
    inp = tmp_path / "new"
    inp.mkdir()
    for f in src:
        shutil.copy(f, inp / f.name)
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    out = api.predict("phe_classify", rd.path, inp, out=tmp_path / "out", progress=False)
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 3 and {"image", "prob_phe", "pred_phe"} <= set(preds.columns)
    assert sorted(Path(x).name for x in preds.image) == sorted(f.name for f in src)
    assert preds.prob_phe.between(0, 1).all() and set(preds.pred_phe) <= {0, 1}
    rejected = pd.read_csv(out / "rejected.csv")
    assert len(rejected) == 1 and rejected.reason[0] == "unreadable" and rejected.path[0].endswith("broken.png")
    single = api.predict("phe_classify", rd.path, inp / src[0].name, out=tmp_path / "one", progress=False)
    assert len(pd.read_csv(single / "predictions.csv")) == 1


def test_slice_level_split_is_flagged(prepared) -> None:
    task = PheClassify(load_config(CONFIG, PheClassifyConfig, ["data.split_level=slice"]))
    df, warnings = task.make_splits(task.load_manifest(prepared))
    assert df.groupby("patient_id").split.nunique().max() > 1 and LEAKY_WARNING in warnings


class _Toy(nn.Module):
    """Sum-of-pixels CNN: logit = mean ReLU(conv(x)), so the evidence is where the image is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.ReLU())
        self.fc = nn.Linear(4, 1, bias=False)
        with torch.no_grad():
            self.features[0].weight.fill_(1.0 / 9)
            self.fc.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_gradcam_maps_on_a_toy_cnn(tmp_path) -> None:
    x = torch.zeros(2, 1, 32, 24)
    x[0, 0, 4:10, 14:20] = 1.0
    x[1, 0, 20:28, 2:8] = 1.0
    maps = gradcam_maps(_Toy(), x, "features")
    assert maps.shape == (2, 32, 24) and maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isclose(maps.max(axis=(1, 2)), 1.0).all()             # not inverted: the bright square is 1
    for i, (r, c) in enumerate([(7, 17), (24, 5)]):
        rr, cc = np.unravel_index(maps[i].argmax(), maps[i].shape)
        assert abs(rr - r) <= 3 and abs(cc - c) <= 3
    path = gradcam_grid(_Toy(), x, "features", ["a", "b"], tmp_path / "grid.png")
    assert Image.open(path).size[0] > 100
    with pytest.raises(ValueError, match="not a module"):
        gradcam_maps(_Toy(), x, "layer4")


def test_read_grey_modes(tmp_path) -> None:
    rgb = np.zeros((5, 7, 3), np.uint8)
    rgb[..., :] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((5, 7), 65535, np.uint16)).save(tmp_path / "g16.png")
    for name in ("rgb.png", "g16.png"):
        arr = read_grey(tmp_path / name)
        assert arr.shape == (1, 5, 7) and arr.dtype == np.float32 and np.allclose(arr, 1.0), name
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="bad.png"):
        read_grey(tmp_path / "bad.png")


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"model\.bakbone: unknown key.*backbone"):
        load_config(CONFIG, PheClassifyConfig, ["model.bakbone=resnet18"])
    with pytest.raises(ConfigError, match=r"gradcam\.per_kid"):
        load_config(CONFIG, PheClassifyConfig, ["gradcam.per_kid=2"])
    with pytest.raises(ConfigError, match=r"model\.backbone: unknown backbone 'resnet19'"):
        load_config(CONFIG, PheClassifyConfig, ["model.backbone=resnet19"])
    with pytest.raises(ConfigError, match=r"input\.normalize"):
        load_config(CONFIG, PheClassifyConfig, ["input.normalize=zscore"])
    cfg = load_config(CONFIG.with_name("phe_classify.yaml"), PheClassifyConfig)
    assert cfg.model.backbone == "resnet18" and cfg.model.pretrained == "imagenet" and cfg.augment.hflip == 0.5
