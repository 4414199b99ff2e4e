"""xray_classify end to end on a tiny synthetic Kermany release (+ DICOM): prepare -> grouped re-split -> train
-> evaluate (accuracy / sensitivity / specificity / ROC-AUC with CIs, Grad-CAM) -> predict; transfer modes,
losses, the official-test re-split and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from medtasks import api
from medtasks.config import ConfigError, load_config
from medtasks.models.transfer import TransferModel, trainable_fraction
from medtasks.synth.chest_xray import generate_chest_xray
from medtasks.tasks.xray_classify import XrayClassify
from medtasks.tasks.xray_classify.config import XrayClassifyConfig

CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "xray_classify.demo.yaml"
TINY = ["train.epochs=1", "train.batch_size=8", "train.threads=1", "input.size=64", "input.norm_samples=16",
        "eval.n_boot=20", "eval.batch_size=16", "gradcam.per_kind=2"]


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    return generate_chest_xray(tmp_path_factory.mktemp("cxr") / "release", n_children=30, size=96, seed=1,
                               val_per_class=2, dicom=4, progress=False)


@pytest.fixture(scope="module")
def prepared(release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "cxr.csv"
    res = api.prepare("xray_classify", release, out, progress=False)
    assert res.n_rows > 40 and res.n_rejected == 0
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    return api.run("xray_classify", manifest=prepared, config=CONFIG, overrides=TINY,
                   runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_grouped_split_keeps_children_together(prepared) -> None:
    task = XrayClassify(load_config(CONFIG, XrayClassifyConfig, []))
    df, warnings = task.make_splits(task.load_manifest(prepared))
    assert df.groupby("patient_id").split.nunique().max() == 1 and not warnings
    assert set(df.split) == {"train", "val", "test"} and (df.format == "dicom").sum() == 4


def test_official_test_drops_leaking_children(prepared) -> None:
    task = XrayClassify(load_config(CONFIG, XrayClassifyConfig, ["resplit.mode=official_test"]))
    raw = task.load_manifest(prepared)
    df, warnings = task.make_splits(raw)
    test_children = set(raw.loc[raw.source_split == "test", "patient_id"])
    assert (df.split == "test").sum() == (raw.source_split == "test").sum()
    assert not set(df.loc[df.split != "test", "patient_id"]) & test_children         # no leak left
    leaked = (raw.source_split != "test") & raw.patient_id.isin(test_children)
    assert leaked.any() and warnings and f"{int(leaked.sum())} training image(s)" in warnings[0]


def test_release_mode_keeps_the_folders_as_they_are(prepared) -> None:
    """The report's protocol: the release's own train / val / test folders, leaks counted, extras listed."""
    task = XrayClassify(load_config(CONFIG, XrayClassifyConfig, ["resplit.mode=release"]))
    raw = task.load_manifest(prepared)
    df, warnings = task.make_splits(raw)
    inside = raw[raw.source_split.isin(["train", "val", "test"])]
    assert len(df) == len(inside) and (df.split == df.source_split).all()
    assert (df.split == "val").sum() == (raw.source_split == "val").sum() == 4          # 2 per class
    shared = inside.groupby("patient_id").source_split.nunique()
    assert any(f"{int((shared > 1).sum())} child(ren)" in w for w in warnings)
    if len(inside) < len(raw):   # the DICOM extras sit outside the folders: named, not dropped silently
        assert any(f"{len(raw) - len(inside)} image(s) outside" in w for w in warnings)


def test_run_metrics_and_report(trained) -> None:
    rd, metrics = trained
    saved = json.loads((rd / "metrics.json").read_text())
    preds = pd.read_csv(rd / "predictions.csv")
    y, p = preds.true_pneumonia.to_numpy(), preds.prob_pneumonia.to_numpy()
    assert saved["headline"]["accuracy"]["value"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert saved["headline"]["roc_auc"]["value"] == pytest.approx(roc_auc_score(y, p))
    tn, fp = ((y == 0) & (p < 0.5)).sum(), ((y == 0) & (p >= 0.5)).sum()
    assert saved["headline"]["specificity"]["value"] == pytest.approx(tn / (tn + fp))
    assert set(saved["classification_report"]) >= {"NORMAL", "PNEUMONIA"}
    html = (rd / "report.html").read_text()
    assert "figures/confusion_matrices.png" in html and "figures/roc_curves.png" in html
    assert sum(v for v in saved["gradcam"].values() if isinstance(v, int)) > 0


def test_predict_dicom_and_jpeg(trained, release, tmp_path) -> None:
    rd, _ = trained
    import shutil

    inp = tmp_path / "in"
    shutil.copytree(release / "dicom", inp)
    first = sorted(inp.rglob("*.dcm"))[0]
    shutil.copy(first, inp / "IMG0001")                                      # DICOM without a suffix
    (inp / "notes.txt").write_text("not an image")
    out = api.predict("xray_classify", rd.path, inp, out=tmp_path / "o", progress=False)
    preds = pd.read_csv(out / "predictions.csv", dtype={"patient_id": str})
    assert len(preds) == 5 and preds.prob_pneumonia.between(0, 1).all()
    assert preds.patient_id.str.startswith("SYN-CXR-").all()                 # from the PatientID tag
    assert pd.read_csv(out / "rejected.csv").reason.tolist() == ["unknown_file"]


@pytest.mark.parametrize("backbone,mode,freeze,expect", [
    ("resnet18", "linear_probe", [], 513),
    ("vgg16", "partial", ["backbone.features.1-30"], None),
    ("resnet18", "finetune", [], None)])
def test_transfer_modes(backbone, mode, freeze, expect) -> None:
    cfg = load_config(CONFIG, XrayClassifyConfig, [f"model.backbone={backbone}", f"model.transfer={mode}",
                                                   f"model.freeze={json.dumps(freeze)}", "input.size=64"])
    net = XrayClassify(cfg).build_model()
    trainable, total = trainable_fraction(net)
    if mode == "linear_probe":
        assert trainable == expect                                           # Linear(512, 1) only
    elif mode == "partial":                                                  # features.0 + the classifier train
        inner = net.model.backbone
        assert all(p.requires_grad for p in inner.features[0].parameters())
        assert not any(p.requires_grad for p in inner.features[2].parameters())
        assert all(p.requires_grad for p in inner.classifier.parameters())
    else:
        assert trainable == total and not isinstance(net, TransferModel)
    net.train()
    if isinstance(net, TransferModel):                                       # frozen BN stays in eval mode
        assert not any(m.training for n, m in net.model.named_modules() if n in net.frozen)
        before = [t.clone() for t in net.state_dict().values()]
        net(torch.randn(2, 3, 64, 64)).sum().backward()
        frozen_keys = [k for k in net.state_dict() if any(k.startswith(f"model.{f}.") for f in net.frozen)]
        for (k, v), b in zip(net.state_dict().items(), before):
            if k in frozen_keys:
                assert torch.equal(v, b), k                                  # running stats untouched


def test_losses_and_class_weights(prepared) -> None:
    task = XrayClassify(load_config(CONFIG, XrayClassifyConfig, ["loss.name=weighted_ce"]))
    df = task.load_manifest(prepared)
    task.fit_state(task.records(df))
    y = df.pneumonia.to_numpy()
    n = len(y)
    assert task.state["class_weights"] == pytest.approx([n / (2 * (n - y.sum())), n / (2 * y.sum())], rel=1e-5)
    z, t = torch.tensor([[1.0], [-0.5]]), torch.tensor([[1.0], [0.0]])
    w = task.state["class_weights"]
    ce = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32))
    assert torch.isclose(task.build_loss()(z, t), ce(torch.cat([torch.zeros_like(z), z], 1), t[:, 0].long()))
    focal = XrayClassify(load_config(CONFIG, XrayClassifyConfig, ["loss.name=focal", "loss.gamma=2",
                                                                  "loss.alpha=0.25"])).build_loss()
    pt = torch.sigmoid(torch.tensor([1.0, 0.5]))                         # p_t of (z=1, y=1) and (z=-0.5, y=0)
    by_hand = -(0.25 * (1 - pt[0]) ** 2 * torch.log(pt[0]) + 0.75 * (1 - pt[1]) ** 2 * torch.log(pt[1])) / 2
    assert torch.isclose(focal(z, t), by_hand)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"model\.freeze: transfer=partial needs"):
        load_config(CONFIG, XrayClassifyConfig, ["model.transfer=partial"])
    with pytest.raises(ConfigError, match=r"loss\.alpha"):
        load_config(CONFIG, XrayClassifyConfig, ["loss.alpha=1.5"])
    cfg = load_config(CONFIG, XrayClassifyConfig, ["model.transfer=partial", "model.freeze=[backbone.layer9]"])
    with pytest.raises(ValueError, match="no module 'backbone.layer9'"):
        XrayClassify(cfg).build_model()


def test_gradcam_on_vgg16_with_inplace_relu() -> None:
    """torchvision VGG16 puts ReLU(inplace=True) after every conv: Grad-CAM on its last conv must still work
    (and leave the ReLUs in-place afterwards)."""
    from medtasks.models.classifier import ImageClassifier
    from medtasks.tasks.kinds.grey_classifier import GreyImageClassifier
    from medtasks.viz.gradcam import gradcam_maps

    net = ImageClassifier("vgg16", 1).eval()
    layer = GreyImageClassifier.gradcam_layer(net, "auto")
    assert layer == "backbone.features.28"
    maps = gradcam_maps(net, torch.randn(2, 3, 64, 64), layer)
    assert maps.shape == (2, 64, 64) and np.isfinite(maps).all()
    assert net.backbone.features[29].inplace is True
