"""Segmentation outputs a viewer opens, for every segmentation task (tiny synthetic runs): NIfTI in -> NIfTI out in
the input's space, a DICOM series in -> the same mask plus a DICOM SEG whose frames reference the source slices
(read back with highdicom, valid for dciodvfy), PNG in -> PNG out, ``--probabilities`` maps, one naming scheme."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from medtasks import api, cli
from medtasks.io.dicom_seg import read_dicom_seg_labels
from medtasks.io.seg_outputs import read_probability_png
from medtasks.synth.dicom_series import FAKE_BIRTH_DATE, FAKE_NAME, write_volume_series
from tests.dicom_checks import dciodvfy_errors


@pytest.fixture(scope="module")
def runs(tiny_run):
    return {"ms_segment": tiny_run("ms_segment", "postprocess.min_lesion_mm3=0"),
            "phe_segment": tiny_run("phe_segment"), "cardiac_seg": tiny_run("cardiac_seg")}


def _as_dicom(volume_path: str, folder: Path, modality: str) -> tuple[Path, np.ndarray]:
    """The NIfTI volume as a DICOM series (values rounded, InstanceNumbers against position) and as the rounded
    NIfTI beside it, so both inputs hold the same numbers."""
    img = nib.load(volume_path)
    data = np.rint(np.asarray(img.dataobj, dtype=np.float64))
    if modality == "MR":
        data = np.clip(data, 0, None)
    n = data.shape[2]
    write_volume_series(data, img.affine, folder / "dicom" / "series1", modality, uid_seed=folder.name,
                        instance_numbers=list(range(n, 0, -1)))
    nib.save(nib.Nifti1Image(data.astype(np.float32), img.affine), folder / "vol.nii.gz")
    return folder / "dicom", data


def _check_seg(out: Path, case: str, row: pd.Series, mask: np.ndarray, n_segments: int) -> None:
    seg = out / row["dicom_seg"]
    assert row["dicom_seg"] == f"seg/{case}.dcm" and seg.is_file()
    series = out.parent / "in" / "dicom" / "series1"     # the source series, in its slice (position) order
    files = sorted(series.glob("*.dcm"), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True)
                                                             .ImagePositionPatient[2]))
    assert len(files) == mask.shape[2]
    ds = pydicom.dcmread(seg)
    assert ds.Modality == "SEG" and len(ds.SegmentSequence) == n_segments
    source_uids = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    refs = {i.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for i in ds.PerFrameFunctionalGroupsSequence}
    assert refs <= source_uids
    np.testing.assert_array_equal(read_dicom_seg_labels(seg, files), mask)   # segment numbers = label values here
    assert dciodvfy_errors(seg) == []


def _no_identifiers(out: Path) -> None:
    for p in out.rglob("*"):
        if p.suffix in (".csv", ".json", ".log", ".html"):
            text = p.read_text(errors="ignore")
            assert FAKE_NAME not in text and FAKE_BIRTH_DATE not in text, p


@pytest.mark.slow
def test_ms_segment_nifti_and_dicom_outputs(runs, tmp_path) -> None:
    rd = runs["ms_segment"]
    man = pd.read_csv(rd / "manifest.csv")
    flair = man[man.split == "test"].flair.iloc[0]
    inputs, _ = _as_dicom(flair, tmp_path / "in", "MR")
    assert cli.main(["predict", "ms_segment", "--run", str(rd.path), "--input", str(tmp_path / "in"),
                     "--out", str(tmp_path / "out"), "--probabilities"]) == 0
    out = tmp_path / "out"
    p = pd.read_csv(out / "predictions.csv")
    assert sorted(p.case_id) == ["series1", "vol"]
    thr = api.task_from_run(rd).cfg.eval.threshold
    masks = {}
    for _, r in p.iterrows():
        assert r["mask"] == f"masks/{r['case_id']}.nii.gz"
        assert r["probabilities"] == f"probabilities/{r['case_id']}.nii.gz"
        ref, m, prob = nib.load(r["input"]), nib.load(out / r["mask"]), nib.load(out / r["probabilities"])
        assert m.shape == ref.shape == prob.shape and np.allclose(m.affine, ref.affine, atol=1e-5)
        assert m.get_data_dtype() == np.uint8 and prob.get_data_dtype() == np.float32
        pv = np.asarray(prob.dataobj)
        assert 0.0 <= pv.min() and pv.max() <= 1.0
        masks[r["case_id"]] = np.asarray(m.dataobj)
        np.testing.assert_array_equal(masks[r["case_id"]], (pv >= thr).astype(np.uint8))   # no size filter here
    np.testing.assert_array_equal(masks["series1"], masks["vol"])   # the series reads as the volume it came from
    p = p.set_index("case_id")
    assert pd.isna(p.loc["vol", "dicom_seg"])   # NIfTI in: no SEG
    _check_seg(out, "series1", p.loc["series1"], masks["series1"], 1)
    _no_identifiers(out)


@pytest.mark.slow
def test_phe_segment_png_nifti_and_dicom(runs, tmp_path) -> None:
    rd = runs["phe_segment"]
    man = pd.read_csv(rd / "manifest.csv")
    row = man[man.split == "test"].iloc[0]
    src = tmp_path / "in"
    _as_dicom(row["nifti_volume"], src, "CT")
    (src / "png").mkdir()
    (src / "png" / Path(row["image"]).name).write_bytes(Path(row["image"]).read_bytes())
    (src / "notes.txt").write_text("not an image")
    out = api.predict("phe_segment", rd.path, src, out=tmp_path / "out", progress=False, probabilities=True)
    p = pd.read_csv(out / "predictions.csv").set_index("case_id")
    assert len(p) == 3 and {"series1", "vol"} <= set(p.index)
    two_d = p[p["mask"].str.endswith(".png")]
    assert len(two_d) == 1
    case = two_d.index[0]
    assert two_d.loc[case, "mask"] == f"masks/{case}.png"
    assert two_d.loc[case, "probabilities"] == f"probabilities/{case}.png"
    prob = read_probability_png(out / two_d.loc[case, "probabilities"])
    from PIL import Image
    mask = np.asarray(Image.open(out / two_d.loc[case, "mask"])) > 0
    thr = api.task_from_run(rd).cfg.eval.threshold
    assert prob.shape == mask.shape and (mask == (prob >= thr)).mean() > 0.999   # 16-bit rounding at the threshold
    masks = {c: np.asarray(nib.load(out / p.loc[c, "mask"]).dataobj) for c in ("series1", "vol")}
    np.testing.assert_array_equal(masks["series1"], masks["vol"])
    assert nib.load(out / p.loc["vol", "probabilities"]).shape == nib.load(p.loc["vol", "input"]).shape
    _check_seg(out, "series1", p.loc["series1"], masks["series1"], 1)
    assert pd.read_csv(out / "rejected.csv").path.str.endswith("notes.txt").tolist() == [True]
    _no_identifiers(out)


@pytest.mark.slow
def test_cardiac_nifti_and_dicom_with_three_segments(runs, tmp_path) -> None:
    rd = runs["cardiac_seg"]
    man = pd.read_csv(rd / "manifest.csv")
    image = man[man.split == "test"].image.iloc[0]
    _as_dicom(image, tmp_path / "in", "CT")
    out = api.predict("cardiac_seg", rd.path, tmp_path / "in", out=tmp_path / "out", progress=False,
                      probabilities=True)
    p = pd.read_csv(out / "predictions.csv").set_index("case_id")
    assert sorted(p.index) == ["series1", "vol"]
    masks = {}
    for c in p.index:
        m, prob = nib.load(out / p.loc[c, "mask"]), nib.load(out / p.loc[c, "probabilities"])
        assert p.loc[c, "mask"] == f"masks/{c}.nii.gz" and prob.shape == (*m.shape, 3)
        masks[c] = np.asarray(m.dataobj)
        assert set(np.unique(masks[c])) <= {0, 1, 2, 3}
    np.testing.assert_array_equal(masks["series1"], masks["vol"])
    _check_seg(out, "series1", p.loc["series1"], masks["series1"], 3)
    # evaluate writes masks under the same scheme
    assert all((rd.path / f"masks/{pid}.nii.gz").is_file() for pid in man[man.split == "test"].patient_id)


def test_probabilities_refused_for_a_classifier(tmp_path) -> None:
    from medtasks.rundir import RunDir

    rd = RunDir.create(tmp_path, "phe_classify", "x")
    (rd.path / "config.resolved.yaml").write_text("task: phe_classify\n")
    with pytest.raises(ValueError, match="already puts its probabilities in predictions.csv"):
        api.predict("phe_classify", rd.path, tmp_path, probabilities=True)


@pytest.mark.slow
def test_compare_scores_cardiac_runs_per_class(runs, tmp_path) -> None:
    """`medtasks compare` reads cardiac_seg's per-class layout (metrics.json layout: cardiac): the run against its
    own re-evaluation is paired, with every per-class Dice difference 0."""
    rd = runs["cardiac_seg"]
    folder, _ = api.evaluate("cardiac_seg", rd.path, rd / "manifest.csv", split="test", out=tmp_path / "ev")
    page = api.compare([rd.path, folder], out=tmp_path / "cmp", n_boot=20, progress=False)
    pairs = pd.read_csv(page.parent / "compare_pairs.csv")
    assert set(pairs.pairing) == {"paired"} and {"dice", "gate_accuracy"} <= set(pairs.metric)
    assert np.allclose(pairs["diff"].dropna(), 0.0)


def test_dicom_outputs_are_this_predictions_own(tmp_path) -> None:
    """--store sends the SEGs named in this prediction's rows, never one left in a reused --out folder."""
    from medtasks.rundir import RunDir

    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "old_case.dcm").write_bytes(b"left from an earlier predict")
    task = api.get_task_class("ms_segment")(api.get_task_class("ms_segment").Config())
    frame = pd.DataFrame({"case_id": ["new", "nifti"], "dicom_seg": ["seg/new.dcm", None]})
    got = task.write_dicom_outputs(RunDir(tmp_path), pd.DataFrame(), frame, tmp_path)
    assert got == [tmp_path / "seg" / "new.dcm"]
