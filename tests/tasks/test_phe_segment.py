"""phe_segment end to end on the tiny synthetic release: prepare -> train (PNG and NIfTI inputs) -> evaluate
at native resolution (pooled / per-image / per-patient Dice, HD95, seg -> classification) -> report -> predict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtasks import api
from medtasks.config import ConfigError, load_config
from medtasks.tasks.phe_segment import PheSegment
from medtasks.tasks.phe_segment.config import PheSegmentConfig
from medtasks.tasks.phe_segment.task import LABEL_NOTE
from medtasks.transforms.slicing import axial_slice, read_mask

CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "phe_segment.demo.yaml"
TINY = ["train.epochs=1", "train.batch_size=8", "train.threads=1", "input.size=64", "input.norm_samples=16",
        "model.encoder=resnet18", "eval.n_boot=20", "eval.batch_size=16", "data.split=[0.5,0.25,0.25]",
        "train.steps_per_epoch=2"]


@pytest.fixture(scope="module")
def prepared(phe_release, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("manifests") / "seg.csv"
    res = api.prepare("phe_segment", phe_release, out, progress=False)
    assert res.n_rows == 48 and res.n_rejected == 0
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    return api.run("phe_segment", manifest=prepared, config=CONFIG, overrides=TINY,
                   runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_nifti_and_jpg_masks_match_the_png_masks(prepared) -> None:
    """The NIfTI axial slice k (transposed to rows = y) is the PNG slice k, pixel for pixel; the lossy JPG mask
    read with its half-range threshold is the same mask."""
    df = pd.read_csv(prepared)
    base = prepared.parent
    for _, r in df[df.mask_pixels > 0].head(3).iterrows():
        png = read_mask(base / r["mask"])[0] > 0.5
        nii = axial_slice(base / r["nifti_mask"], int(r.slice_index))[0] > 0
        jpg = read_mask(base / r["jpg_mask"])[0] > 0.5
        assert png.shape == nii.shape == jpg.shape and (png == nii).all() and (png == jpg).all()


def test_run_outputs_and_metrics_from_native_masks(trained) -> None:
    rd, metrics = trained
    p = rd.path
    saved = json.loads((p / "metrics.json").read_text())
    assert saved["kind"] == "segmentation" and LABEL_NOTE in saved["warnings"]
    preds = pd.read_csv(p / "predictions.csv", dtype={"patient_id": str})
    man = pd.read_csv(p / "manifest.csv")
    assert len(preds) == (man.split == "test").sum() == saved["n_cases"]
    # Every predicted mask is saved at the slice's native size (128), not the model's 64.
    for rel in preds["mask"]:
        with Image.open(p / rel) as im:
            assert im.size == (128, 128)
    # The pooled Dice is the ratio of the summed pixel counts of predictions.csv; pooled != per-patient in general.
    tp, fp, fn = (int(preds[c].sum()) for c in ("tp", "fp", "fn"))
    expect = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    assert saved["pooled"]["dice"]["value"] == pytest.approx(expect)
    assert saved["pixel_confusion_matrix"][1] == [fn, tp]
    assert (preds.true_lesion == (preds.n_true > 0)).all()
    assert (preds.pred_lesion == (preds.n_pred >= saved["seg_to_classification"]["min_area"])).all()
    test_masks = man.loc[man.split == "test", "jpg_mask"]             # input.source=jpg (the notes'); paths absolute
    assert preds.n_true.sum() == sum(int((read_mask(m)[0] > 0).sum()) for m in test_masks)
    html = (p / "report.html").read_text()
    assert 'id="overlap-table"' in html and "figures/confusion_matrices.png" in html
    for fig in (p / "figures").glob("extra_overlays_*.png"):
        assert f"figures/{fig.name}" in html
    assert (p / "classification_report.txt").read_text().count("lesion") >= 2


def test_predict_writes_masks_and_rejects_corrupt_files(trained, phe_release, tmp_path) -> None:
    rd, _ = trained
    src = sorted((phe_release / "SubdatasetC_PNG" / "set").rglob("*.png"))[:2]
    inp = tmp_path / "in"
    inp.mkdir()
    for f in src:
        shutil.copy(f, inp / f.name)
    (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    out = api.predict("phe_segment", rd.path, inp, out=tmp_path / "out", progress=False)
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 2 and {"pred_area_px", "pred_lesion", "mask"} <= set(preds.columns)
    for rel, area in zip(preds["mask"], preds.pred_area_px):
        m = np.asarray(Image.open(out / rel))
        assert m.shape == (128, 128) and int((m > 0).sum()) == area
    assert pd.read_csv(out / "rejected.csv").reason.tolist() == ["unreadable"]


def test_nifti_source_trains(prepared, tmp_path) -> None:
    rd, metrics = api.run("phe_segment", manifest=prepared, config=CONFIG,
                          overrides=[*TINY, "input.source=nifti", "eval.save_masks=false", "eval.overlays=0"],
                          runs_dir=tmp_path, progress=False)
    assert metrics["n_cases"] > 0 and 0.0 <= metrics["pooled"]["spec"]["value"] <= 1.0
    assert not (rd / "masks").exists()


def test_config_errors(prepared) -> None:
    with pytest.raises(ConfigError, match=r"input\.size: a U-Net"):
        load_config(CONFIG, PheSegmentConfig, ["input.size=100"])
    with pytest.raises(ConfigError, match=r"eval\.tta"):
        load_config(CONFIG, PheSegmentConfig, ["eval.tta=true"])
    task = PheSegment(load_config(CONFIG, PheSegmentConfig, ["input.source=nifti"]))
    df = pd.read_csv(prepared).assign(nifti_mask="")
    bad = prepared.with_name("bad.csv")
    df.to_csv(bad, index=False)
    with pytest.raises(Exception, match="lack nifti_volume / nifti_mask"):
        task.load_manifest(bad)
    png = PheSegment(load_config(CONFIG, PheSegmentConfig, ["input.source=png"]))
    pd.read_csv(prepared).assign(mask="").to_csv(bad, index=False)        # a copy without SubdatasetC label folder
    with pytest.raises(Exception, match=r"lack image / mask.*another input.source \(jpg, nifti\)"):
        png.load_manifest(bad)
