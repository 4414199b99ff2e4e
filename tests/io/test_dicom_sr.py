"""The classifier's DICOM Comprehensive SR: round trip, highdicom reading, exact values and references, dciodvfy."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from medtasks.io.dicom_sr import CODING_SCHEME, classification_sr, read_classification_sr
from tests.dicom_checks import dciodvfy_errors
from tests.orthanc import write_study

LABELS = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural", "any")


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return write_study(tmp_path_factory.mktemp("sr-study"), slices=(4,), matrix=32)


def _headers(study) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(study.files[sop], stop_before_pixels=True) for sop in study.sop_uids]


def _probabilities(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = rng.random((n, len(LABELS)))
    p[0, 0], p[1, 1] = 0.5, 1.0 / 3.0   # a value on the threshold; one no 16-character decimal string holds
    return p


def _texts(ds: pydicom.Dataset) -> dict[str, set[str]]:
    """TEXT content items anywhere in the SR tree: concept code value -> values."""
    out: dict[str, set[str]] = {}
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "TEXT":
            out.setdefault(item.ConceptNameCodeSequence[0].CodeValue, set()).add(str(item.TextValue))
        for code, values in _texts(item).items():
            out.setdefault(code, set()).update(values)
    return out


def test_sr_round_trip_values_and_references(study, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    sources = _headers(study)
    probs = _probabilities(len(sources))
    sr = classification_sr(sources, LABELS, probs, None, "ich_classify", run_id="20250101-120000-demo",
                           thresholds=0.5)
    path = tmp_path / "sr.dcm"
    pydicom.dcmwrite(path, sr, enforce_file_format=True)
    back = pydicom.dcmread(path)

    # a new series in the sources' study, an SR a viewer lists beside it
    assert back.Modality == "SR" and back.SOPClassUID == pydicom.uid.ComprehensiveSRStorage
    assert back.StudyInstanceUID == study.study_uid
    assert back.SeriesInstanceUID not in study.series and back.SOPInstanceUID not in study.sop_uids
    assert back.SeriesDescription == "medtasks ich_classify (research use)"
    assert back.PatientName == sources[0].PatientName and back.PatientID == sources[0].PatientID
    evidence = {ref.ReferencedSOPInstanceUID for s in back.CurrentRequestedProcedureEvidenceSequence
                for se in s.ReferencedSeriesSequence for ref in se.ReferencedSOPSequence}
    assert evidence == set(study.sop_uids)

    # highdicom reads it as a TID 1500 measurement report
    doc = hd.sr.srread(path)
    assert isinstance(doc, hd.sr.ComprehensiveSR) and isinstance(doc.content, hd.sr.MeasurementReport)
    texts = _texts(back)
    assert texts["111001"] == {"medtasks ich_classify"}                                # Algorithm Name
    assert len(texts["111003"]) == 1 and texts["111003"].pop().endswith("run 20250101-120000-demo")  # Version
    assert "threshold any = 0.5" in texts["111002"]                                   # Algorithm Parameters

    findings = read_classification_sr(back)
    assert len(findings) == len(sources) * len(LABELS)
    for k, finding in enumerate(findings):
        row, col = divmod(k, len(LABELS))
        assert finding.label == LABELS[col]
        assert finding.probability == probs[row, col]          # exact, not a rounded decimal string
        assert finding.call == bool(probs[row, col] >= 0.5)
        assert finding.sop_instance_uids == (study.sop_uids[row],)
    # nothing logged a patient attribute
    assert study.patient_name not in caplog.text and str(sources[0].PatientBirthDate) not in caplog.text


def test_sr_explicit_calls_and_one_evaluation_for_all(study):
    sources = _headers(study)
    sr = classification_sr(sources, ["normal", "pneumonia"], [0.2, 0.8], [False, True], "xray_classify",
                           run_id="r1")
    findings = read_classification_sr(sr)
    assert [(f.label, f.probability, f.call) for f in findings] == [("normal", 0.2, False), ("pneumonia", 0.8, True)]
    assert all(f.sop_instance_uids == tuple(study.sop_uids) for f in findings)
    codes = {item.ConceptCodeSequence[0].CodingSchemeDesignator for item in sr.ContentSequence
             if "ConceptCodeSequence" in item}
    assert codes  # procedure reported, etc.
    assert CODING_SCHEME == "99MEDTASKS"


def test_sr_evaluated_on_groups(study):
    sources = _headers(study)
    sr = classification_sr(sources, ["x"], [[0.1], [0.9]], None, "t", run_id="r", thresholds=[0.5],
                           evaluated_on=[[0, 1], [2, 3]])
    refs = [f.sop_instance_uids for f in read_classification_sr(sr)]
    assert refs == [tuple(study.sop_uids[:2]), tuple(study.sop_uids[2:])]


@pytest.mark.parametrize("kwargs, message", [
    ({"probabilities": [[0.1, 0.2]]}, "shape"),
    ({"probabilities": [[1.5] * len(LABELS)] * 4}, r"within \[0, 1\]"),
    ({"thresholds": None}, "either calls or thresholds"),
    ({"evaluated_on": [[0], [1], [2], [9]]}, "indices"),
])
def test_sr_bad_arguments(study, kwargs, message):
    sources = _headers(study)
    args = {"probabilities": _probabilities(len(sources)), "thresholds": 0.5} | kwargs
    with pytest.raises(ValueError, match=message):
        classification_sr(sources, LABELS, args.pop("probabilities"), None, "ich_classify", run_id="r", **args)


def test_sr_refuses_sources_of_two_studies(study, tmp_path):
    other = write_study(tmp_path, slices=(1,), matrix=32)
    sources = _headers(study)[:1] + _headers(other)
    with pytest.raises(ValueError, match="2 studies"):
        classification_sr(sources, ["x"], [0.5], None, "t", run_id="r", thresholds=0.5)


def test_sr_passes_dciodvfy(study, tmp_path):
    sources = _headers(study)
    sr = classification_sr(sources, LABELS, _probabilities(len(sources)), None, "ich_classify", run_id="r",
                           thresholds=[0.5, 0.4, 0.3, 0.2, 0.1, 0.5])
    path = tmp_path / "sr.dcm"
    pydicom.dcmwrite(path, sr, enforce_file_format=True)
    errors = dciodvfy_errors(path)
    assert not errors, "dciodvfy reports errors:\n" + "\n".join(errors)
    # the only warnings expected are about our private coding scheme (allowed: '99' prefix)
    proc = subprocess.run([shutil.which("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    warnings = {re.sub(r"<[^>]*>", "<>", line) for line in (proc.stdout + proc.stderr).splitlines()
                if line.startswith("Warning")}
    assert warnings <= {"Warning - Unrecognized defined term <> for value 1 of attribute <>"}, warnings


def test_sr_from_sources_without_optional_study_attributes(tmp_path):
    """Anonymised sources often drop Type 2 attributes (AccessionNumber, PatientID...): written empty, still valid."""
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = pydicom.uid.CTImageStorage, pydicom.uid.generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.Modality, ds.Rows, ds.Columns = "CT", 2, 2
    ds.SpecificCharacterSet, ds.PatientName = "ISO_IR 192", "Müller^Jürgen"
    sr = classification_sr([ds], ["a"], [0.25], None, "t", run_id="r", thresholds=0.5)
    path = tmp_path / "sr.dcm"
    pydicom.dcmwrite(path, sr, enforce_file_format=True)
    back = pydicom.dcmread(path)
    assert back.PatientName == "Müller^Jürgen" and back.AccessionNumber == "" and back.PatientID == ""
    assert [(f.probability, f.call) for f in read_classification_sr(back)] == [(0.25, False)]
    assert not dciodvfy_errors(path)
    del ds.Modality
    with pytest.raises(ValueError, match="cannot be referenced as an image"):
        classification_sr([ds], ["a"], [0.25], None, "t", run_id="r", thresholds=0.5)
