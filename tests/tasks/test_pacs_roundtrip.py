"""The PACS round trip against a real Orthanc (DICOMweb, authentication on): ``medtasks predict --input dicomweb:...
--store ...`` on a synthetic MS FLAIR series (-> DICOM SEG) and on synthetic head-CT slices (-> Comprehensive SR);
the stored objects are retrieved again, parse, and reference the instances they were computed on.

Skipped with the reason where Orthanc / its DICOMweb plugin is not installed (.ci/run installs them)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest

from medtasks import api, cli
from medtasks.io.dicom_seg import read_dicom_seg_labels
from medtasks.io.dicom_sr import read_classification_sr
from medtasks.io.dicomweb import retrieve
from medtasks.synth.dicom_series import FAKE_NAME, write_volume_series
from tests.orthanc import orthanc, orthanc_study  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def runs(tiny_run):
    return {"ms_segment": tiny_run("ms_segment", "postprocess.min_lesion_mm3=0"),
            "ich_classify": tiny_run("ich_classify", "eval.tta=false")}


def _stored(out: Path) -> list[str]:
    return json.loads((out / "predict.json").read_text())["stored"]["sop_instance_uids"]


def _fetch_stored(server, study_uid: str, sop_uid: str, dest: Path) -> tuple[Path, pydicom.Dataset]:
    """The stored object as the server gives it back (WADO-RS of its series, found by its SOP UID)."""
    series = server.rest("GET", f"/instances/{server.orthanc_id(sop_uid)}/tags?simplify").json()["SeriesInstanceUID"]
    (path,) = retrieve(server.study_url(study_uid, series), dest, env=server.env())
    return path, pydicom.dcmread(path)


@pytest.mark.slow
def test_ms_series_from_pacs_to_seg_and_back(runs, orthanc, tmp_path, monkeypatch, caplog) -> None:  # noqa: F811
    rd = runs["ms_segment"]
    man = pd.read_csv(rd / "manifest.csv")
    img = nib.load(man[man.split == "test"].flair.iloc[0])
    data = np.clip(np.rint(np.asarray(img.dataobj, dtype=np.float64)), 0, None)
    files = write_volume_series(data, img.affine, tmp_path / "series", "MR", patient_id="SYN-MS-1",
                                instance_numbers=list(range(data.shape[2], 0, -1)))
    for f in files:
        orthanc.upload(f)
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    study = str(src[0].StudyInstanceUID)
    for k, v in orthanc.env().items():
        monkeypatch.setenv(k, v)
    out = tmp_path / "out"
    assert cli.main(["predict", "ms_segment", "--run", str(rd.path), "--input", orthanc.study_url(study),
                     "--store", orthanc.dicomweb, "--out", str(out)]) == 0
    record = json.loads((out / "predict.json").read_text())
    assert record["input"] == orthanc.study_url(study)
    assert len(record["dicom_outputs"]) == 1 and record["dicom_outputs"][0].startswith("seg/")
    (uid,) = _stored(out)
    path, seg = _fetch_stored(orthanc, study, uid, tmp_path / "back")
    assert seg.Modality == "SEG" and seg.SOPInstanceUID == uid and seg.StudyInstanceUID == study
    refs = {r.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs == {str(d.SOPInstanceUID) for d in src}                     # the uploaded instances, all of them
    pred = pd.read_csv(out / "predictions.csv")
    mask = np.asarray(nib.load(out / pred["mask"].iloc[0]).dataobj)
    # the retrieved SEG, put on the series' own grid by highdicom, is the predicted mask
    order = sorted(range(len(src)), key=lambda k: float(src[k].ImagePositionPatient[2]))
    np.testing.assert_array_equal(read_dicom_seg_labels(path, [files[k] for k in order]), mask)
    assert FAKE_NAME not in caplog.text and orthanc.password not in caplog.text


@pytest.mark.slow
def test_head_ct_slices_from_pacs_to_sr_and_back(runs, orthanc, orthanc_study, tmp_path, monkeypatch,  # noqa: F811
                                                 caplog) -> None:
    rd = runs["ich_classify"]
    for k, v in orthanc.env().items():
        monkeypatch.setenv(k, v)
    series = next(iter(orthanc_study.series))
    url = orthanc.study_url(orthanc_study.study_uid, series)
    out = api.predict("ich_classify", rd.path, url, out=tmp_path / "out", progress=False, store=orthanc.dicomweb)
    pred = pd.read_csv(out / "predictions.csv", dtype={"sop_instance_uid": str})
    assert sorted(pred.sop_instance_uid) == sorted(orthanc_study.series[series])
    (uid,) = _stored(out)
    _, sr = _fetch_stored(orthanc, orthanc_study.study_uid, uid, tmp_path / "back")
    assert sr.Modality == "SR" and sr.StudyInstanceUID == orthanc_study.study_uid
    findings = read_classification_sr(sr)
    labels = list(api.task_from_run(rd).labels)
    assert len(findings) == len(pred) * len(labels)
    by_sop = pred.set_index("sop_instance_uid")
    for f in findings:
        (sop,) = f.sop_instance_uids
        assert f.probability == pytest.approx(float(by_sop.loc[sop, f"prob_{f.label}"]), abs=1e-7)
        assert f.call == bool(by_sop.loc[sop, f"pred_{f.label}"])
    assert FAKE_NAME not in caplog.text and orthanc_study.patient_name not in caplog.text
    assert orthanc.password not in caplog.text


def test_store_without_dicom_outputs_is_a_clear_error(runs, orthanc, tmp_path, monkeypatch) -> None:  # noqa: F811
    rd = runs["ms_segment"]
    man = pd.read_csv(rd / "manifest.csv")
    for k, v in orthanc.env().items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="made no DICOM object"):
        api.predict("ms_segment", rd.path, man.flair.iloc[0], out=tmp_path / "o", progress=False,
                    store=orthanc.dicomweb)
    with pytest.raises(ValueError, match="http"):
        api.predict("ms_segment", rd.path, man.flair.iloc[0], out=tmp_path / "o2", progress=False, store="ftp://x")
