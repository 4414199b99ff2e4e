"""phe_segment end to end on the tiny synthetic release: prepare -> train (PNG and NIfTI inputs) -> evaluate
at native resolution (pooled / per-image / per-patient Dice, HD95 / ASSD / NSD in mm from the NIfTI headers,
seg -> classification) -> report -> predict."""

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
from medtasks.metrics.segmentation import hd95
from medtasks.metrics.surface import assd, nsd
from medtasks.rundir import RunDir
from medtasks.tasks.kinds.slice_spacing import CaseSpacing, axial_slice_spacing
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


def test_boundary_metrics_in_mm_from_the_nifti_headers(trained) -> None:
    """input.source=jpg, yet HD95 / ASSD / NSD are in mm from each row's NIfTI header (synthetic: 260 mm over
    128 px), per case and in metrics.json; each per-case value is recomputed from the saved mask and the truth."""
    rd, _ = trained
    saved = json.loads((rd.path / "metrics.json").read_text())
    preds = pd.read_csv(rd.path / "predictions.csv")
    mm = 260 / 128
    assert saved["distance_unit"] == "mm" and saved["pixel_spacing_mm"] == [[mm, mm]]
    assert saved["spacing_sources"] == {"nifti_header": len(preds)} and saved["nsd_tolerance_mm"] == 2.0
    assert (preds.distance_unit == "mm").all() and (preds.spacing_source == "nifti_header").all()
    assert (preds.spacing_row_mm == mm).all() and (preds.spacing_col_mm == mm).all()
    truth = pd.read_csv(rd.path / "manifest.csv").set_index("image")["jpg_mask"]
    for _, r in preds.iterrows():
        pred = np.asarray(Image.open(rd.path / r["mask"])) > 0
        true = read_mask(truth[r["case_id"]])[0] > 0.5
        both = pred.any() and true.any()
        assert r["hd95"] == pytest.approx(hd95(pred, true) * mm if both else np.nan, nan_ok=True)  # px x mm/px
        assert r["assd"] == pytest.approx(assd(pred, true, (mm, mm)) if both else np.nan, nan_ok=True)
        assert r["nsd"] == pytest.approx(nsd(pred, true, 2.0, (mm, mm)), nan_ok=True)
    lesion = preds[preds.n_true > 0]
    assert saved["nsd"]["n"] == lesion.nsd.notna().sum() == len(lesion)
    assert saved["assd"]["n"] == saved["hd95"]["n"] == int(((preds.n_true > 0) & (preds.n_pred > 0)).sum())
    if saved["nsd"]["n"]:
        assert saved["nsd"]["median"] == pytest.approx(float(lesion.nsd.median()))


def test_partial_headers_fall_back_to_pixels_for_all(trained, tmp_path) -> None:
    """Half the test rows without a NIfTI and no configured spacing: the whole run is in pixels (never a mix), the
    HD95s are the mm run's divided by the spacing, NSD is left out, and a warning says why."""
    rd, _ = trained
    copy = RunDir.open(shutil.copytree(rd.path, tmp_path / "run"))
    task = api.task_from_run(copy)
    task.cfg.eval.pixel_spacing_mm, task.cfg.eval.save_masks, task.cfg.eval.overlays = None, False, 0
    df = task.load_manifest(copy / "manifest.csv")
    test = df.index[df.split == "test"]
    df.loc[test[::2], "nifti_volume"] = ""
    metrics = task.evaluate(copy, df)
    assert metrics["distance_unit"] == "px" and metrics["pixel_spacing_mm"] is None
    assert metrics["spacing_sources"] == {"none": len(test)} and metrics["nsd"] == {"n": 0}
    assert any(f"known for {len(test[1::2])} of {len(test)} cases" in w for w in metrics["warnings"])
    px = pd.read_csv(copy / "predictions.csv")
    mm = pd.read_csv(rd.path / "predictions.csv")
    assert (px.distance_unit == "px").all() and px.nsd.isna().all()
    np.testing.assert_allclose(px.hd95, mm.hd95 / (260 / 128), rtol=1e-6)
    # A header whose grid is not the slice's is refused rather than put on the wrong pixels.
    odd = tmp_path / "odd.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((64, 64, 8), np.int16), np.diag([1.0, 1.0, 5.0, 1.0])), odd)
    df.loc[test, "nifti_volume"] = str(odd)
    with pytest.raises(ValueError, match=r"spacing is for a \(64, 64\) grid, the slice is \(128, 128\)"):
        task.evaluate(copy, df)


def test_case_spacing_from_header_config_or_none(prepared, tmp_path) -> None:
    """Header zooms are per array axis (x, y); the axial slice is data[:, :, k].T, so (rows, cols) = (y, x)."""
    import nibabel as nib

    path = tmp_path / "aniso.nii.gz"
    img = nib.Nifti1Image(np.zeros((6, 4, 3), np.int16), np.diag([0.4, 0.7, 5.0, 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, path)
    assert axial_slice(path, 1).shape == (1, 4, 6)
    assert axial_slice_spacing(path) == CaseSpacing((0.7, 0.4), "nifti_header", (4, 6))
    img.header.set_xyzt_units("meter")
    nib.save(img, tmp_path / "metres.nii.gz")
    assert axial_slice_spacing(tmp_path / "metres.nii.gz").mm == pytest.approx((700.0, 400.0))
    row = pd.read_csv(prepared).iloc[0]
    row["nifti_volume"] = str(prepared.parent / row["nifti_volume"])
    task = PheSegment(load_config(CONFIG, PheSegmentConfig))
    assert task.case_spacing(row) == CaseSpacing((260 / 128, 260 / 128), "nifti_header", (128, 128))
    assert task.case_spacing(row.drop("nifti_volume")) == CaseSpacing((1.016, 1.016), "config")
    assert task.case_spacing(row.copy().replace({row["nifti_volume"]: np.nan})) == CaseSpacing((1.016, 1.016),
                                                                                               "config")
    off = PheSegment(load_config(CONFIG, PheSegmentConfig, ["eval.spacing_from_header=false"]))
    assert off.case_spacing(row).source == "config"
    none = PheSegment(load_config(CONFIG, PheSegmentConfig, ["eval.pixel_spacing_mm=null"]))
    assert none.case_spacing(row.drop("nifti_volume")) is None


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
    with pytest.raises(ConfigError, match=r"eval\.nsd_tolerance_mm"):
        load_config(CONFIG, PheSegmentConfig, ["eval.nsd_tolerance_mm=-1"])
    with pytest.raises(ConfigError, match=r"eval\.pixel_spacing_mm"):
        load_config(CONFIG, PheSegmentConfig, ["eval.pixel_spacing_mm=0"])
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
