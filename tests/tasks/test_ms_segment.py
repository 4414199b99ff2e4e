"""ms_segment end to end on tiny synthetic FLAIR volumes: prepare -> train -> volume evaluation (lesion-wise,
ISBI, raters) -> report -> predict on NIfTI and on a DICOM series; the network's shape under every switch."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medtasks import api
from medtasks.models.ms_unet import MsUNet
from medtasks.synth.ms_flair import generate_ms_flair

CONFIG = Path(__file__).resolve().parents[2] / "medtasks" / "configs" / "ms_segment.demo.yaml"
TINY = ["train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=8", "input.size=32", "model.base_channels=8",
        "model.max_channels=512", "eval.n_boot=20", "eval.batch_size=16", "data.split=[0.4,0.2,0.4]", "eval.overlays=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    src = generate_ms_flair(tmp_path_factory.mktemp("ms") / "isbi", n_subjects=5, timepoints=1, shape=(32, 48, 16),
                            spacing=(2.0, 2.0, 3.0), seed=3, progress=False)
    out = tmp_path_factory.mktemp("m") / "ms.csv"
    res = api.prepare("ms_segment", src, out, progress=False)
    assert res.n_rows == 5 and res.n_rejected == 0
    rd, metrics = api.run("ms_segment", manifest=out, config=CONFIG, overrides=TINY,
                          runs_dir=tmp_path_factory.mktemp("runs"), progress=False)
    return src, rd, metrics


@pytest.mark.parametrize("kw", [dict(), dict(activation="relu"), dict(activation="sigmoid"), dict(activation="tanh"),
                                dict(order="act_bn"), dict(convs_per_block=3), dict(convs_per_block=4),
                                dict(max_channels=512), dict(softmax_head=True)])
def test_every_switch_gives_one_logit_map(kw) -> None:
    net = MsUNet(in_channels=3, base_channels=8, **kw)
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 1, 32, 32)
    if kw.get("softmax_head"):
        assert torch.allclose(out, torch.ones_like(out))             # softmax over one channel: a constant, no mask
    n_conv = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    levels = 4 if kw.get("max_channels") == 512 else 5
    assert n_conv == kw.get("convs_per_block", 2) * (2 * levels - 1) + 1


def test_paper_loss_is_the_posters_bce_dice_by_hand() -> None:
    """configs/ms_segment.yaml trains with the poster code's BCEDiceLoss: 0.5 x BCE + (1 - mean per-image Dice)."""
    from medtasks.config import load_config
    from medtasks.losses.segmentation import bce_dice
    from medtasks.tasks.ms_segment.config import MsSegmentConfig

    c = load_config(CONFIG.with_name("ms_segment.yaml"), MsSegmentConfig).loss
    assert (c.name, c.bce_weight, c.dice_weight, c.batch_dice) == ("bce_dice", 0.5, 1.0, False)
    loss = bce_dice(bce_weight=c.bce_weight, dice_weight=c.dice_weight, batch_dice=c.batch_dice)
    logits = torch.zeros(2, 1, 2, 2)                   # p = 0.5 everywhere: BCE = ln 2 at every pixel
    y = torch.zeros(2, 1, 2, 2)
    y[0, 0, 0] = 1                                     # image 1: 2 lesion pixels of 4; image 2: empty
    eps = 1e-5
    dice1 = (2 * 1.0 + eps) / (2.0 + 2.0 + eps)        # intersection 0.5 x 2, sum p 2, sum y 2
    dice2 = (0.0 + eps) / (2.0 + 0.0 + eps)
    assert float(loss(logits, y)) == pytest.approx(0.5 * np.log(2) + 1 - (dice1 + dice2) / 2, abs=1e-6)
    batch = bce_dice(bce_weight=0.5, batch_dice=True)   # the previous choice: one Dice over the batch (1/3)
    assert float(batch(logits, y)) == pytest.approx(0.5 * np.log(2) + 1 - (2 + eps) / (6 + eps), abs=1e-6)


@pytest.mark.slow
def test_split_by_subject_and_volume_outputs(trained) -> None:
    src, rd, metrics = trained
    man = pd.read_csv(rd / "manifest.csv", dtype={"subject_id": str})
    assert man.groupby("subject_id").split.nunique().max() == 1
    saved = json.loads((rd / "metrics.json").read_text())
    assert (saved["layout"] == "volumes"
            and {"volume_dice", "pooled_dice", "lesion_f1", "isbi_raw"} <= set(saved["headline"]))
    assert "raters" in saved and saved["raters"]["per_volume"]["dice"]["value"] > 0.5   # two synthetic raters agree
    preds = pd.read_csv(rd / "predictions.csv", dtype={"patient_id": str})
    test = man[man.split == "test"]
    assert len(preds) == len(test) == saved["n"]
    assert (preds.n_true == preds.tp + preds.fn).all() and {"assd", "nsd"} <= set(preds.columns)
    assert saved["nsd"]["n"] == int(preds.nsd.notna().sum()) and saved["assd"]["n"] == int(preds.assd.notna().sum())
    for r in test.itertuples():                                       # masks in each FLAIR's own space
        ref, got = nib.load(r.flair), nib.load(rd / "masks" / f"{r.subject_id}_{r.timepoint}.nii.gz")
        assert got.shape == ref.shape and np.allclose(got.affine, ref.affine)
        assert set(np.unique(np.asarray(got.dataobj))) <= {0, 1}
    # both lesion matching rules; the minimum lesion size chosen on validation (demo: auto) and used
    rules = saved["lesion_rules"]
    assert rules["iou_threshold"] == 0.5 and {"overlap", "iou"} <= set(rules)
    assert rules["overlap"]["per_volume"]["lesion_f1"] == saved["per_volume"]["lesion_f1"]
    assert saved["headline"]["lesion_f1_iou"] == rules["iou"]["per_volume"]["lesion_f1"]
    post = saved["postprocess"]
    assert post["mode"] == "auto" and post["connectivity"] == 2
    assert [r["min_lesion_mm3"] for r in post["validation_curve"]] == [0, 3, 5, 10, 20, 50]
    best = max(r["lesion_f1"] for r in post["validation_curve"] if r["lesion_f1"] == r["lesion_f1"])
    assert post["min_lesion_mm3"] == min(r["min_lesion_mm3"] for r in post["validation_curve"]
                                         if r["lesion_f1"] == best)
    state = json.loads((rd / "checkpoints" / "task_state.json").read_text())
    assert state["postprocess"]["min_lesion_mm3"] == post["min_lesion_mm3"]
    # the per-lesion table agrees with the per-volume counts under each rule
    les = pd.read_csv(rd / "lesions.csv", dtype={"case_id": str})
    tru, prd = les[les.kind == "true"], les[les.kind == "pred"]
    assert len(tru) == preds.n_true_lesions.sum() and len(prd) == preds.n_pred_lesions.sum()
    assert (tru.status_overlap == "detected").sum() == preds.n_detected.sum()
    assert (tru.status_iou == "detected").sum() == preds.iou_n_detected.sum()
    assert (prd.status_iou == "false_positive").sum() == preds.iou_n_false_pos.sum()
    assert saved["lesion_table"]["n_true"] == len(tru) and set(les.case_id) <= set(preds.case_id)
    vox = np.prod(nib.load(test.flair.iloc[0]).header.get_zooms()[:3])
    assert np.allclose(les.volume_mm3, les.voxels * vox)
    html = (rd / "report.html").read_text()
    assert 'id="volume-table"' in html and 'id="lesion-table"' in html and 'id="rater-table"' in html
    assert (rd / "slice_metrics.csv").is_file()


@pytest.mark.slow
def test_predict_nifti_and_dicom_series(trained, tmp_path) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    src, rd, _ = trained
    flair = sorted(src.rglob("*_flair_pp.nii"))[0]
    out = api.predict("ms_segment", rd.path, flair, out=tmp_path / "o1", progress=False)
    p = pd.read_csv(out / "predictions.csv")
    mask = nib.load(out / p["mask"][0])
    assert mask.shape == nib.load(flair).shape and np.allclose(mask.affine, nib.load(flair).affine)
    assert list((out / "overlays").glob("*.png"))
    # a 4-slice MR series written with pydicom
    series = tmp_path / "dicom" / "series1"
    series.mkdir(parents=True)
    vol = np.asarray(nib.load(flair).dataobj)[:, :, 6:10]
    uid = generate_uid()
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(series / f"{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.SeriesInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID, uid
        ds.StudyInstanceUID, ds.Modality, ds.PatientID = generate_uid(), "MR", "SYN-MS"
        ds.Rows, ds.Columns = vol.shape[1], vol.shape[0]
        ds.PixelSpacing, ds.SliceThickness = [2.0, 2.0], 3.0
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 3.0 * k], [1, 0, 0, 0, 1, 0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.InstanceNumber = vol.shape[2] - k      # against position, as after re-export: order comes from IPP
        ds.PixelData = np.clip(vol[:, :, k].T * 100, 0, 65535).astype(np.uint16).tobytes()
        ds.save_as(series / f"{k}.dcm", enforce_file_format=True)
        if k < 2:  # a second series in the same folder, two slices at one position: rejected with its reason
            ds.SeriesInstanceUID, ds.SOPInstanceUID = uid + ".9", generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.ImagePositionPatient = [0.0, 0.0, 0.0]
            ds.save_as(series / f"dup{k}.dcm", enforce_file_format=True)
    (tmp_path / "dicom" / "readme.txt").write_text("x")
    out2 = api.predict("ms_segment", rd.path, tmp_path / "dicom", out=tmp_path / "o2", progress=False)
    p2 = pd.read_csv(out2 / "predictions.csv")
    assert len(p2) == 1 and nib.load(out2 / p2["mask"][0]).shape[2] == 4
    stacked = np.asarray(nib.load(p2["input"][0]).dataobj)   # the series as read: slices in position order
    assert np.array_equal(stacked, np.clip(vol * 100, 0, 65535).astype(np.uint16).astype(np.float32))
    assert sorted(pd.read_csv(out2 / "rejected.csv").reason) == ["duplicate_position", "unknown_file"]
