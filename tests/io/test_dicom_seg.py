"""DICOM Segmentation output (highdicom): every frame on the right source slice, labels read back exactly
through highdicom and pydicom, a valid object (dciodvfy), clear errors on unusable input."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medtasks.io.dicom_seg import SegmentSpec, SegSourceError, read_dicom_seg_labels, write_dicom_seg
from medtasks.io.dicom_series import read_series_folder
from medtasks.synth.dicom_series import FAKE_NAME, write_volume_series
from tests.dicom_checks import dciodvfy_errors

SPECS = [SegmentSpec(1, "lesion", "MorphologicallyAbnormalStructure", "Lesion"),
         SegmentSpec(3, "valve", "AnatomicalStructure", "AorticValve")]


@pytest.fixture
def series(tmp_path):
    """An oblique CT series, InstanceNumbers against position; the volume as the series reader gives it."""
    rng = np.random.default_rng(0)
    th = np.deg2rad(15)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3], aff[:3, 3] = rot @ np.diag([0.7, 0.8, 2.0]), [5.0, -12.0, 40.0]
    write_volume_series(rng.integers(-100, 100, (20, 14, 6)).astype(float), aff, tmp_path / "ct", "CT",
                        instance_numbers=[6, 5, 4, 3, 2, 1])
    (vol,), bad = read_series_folder(tmp_path / "ct")
    assert not bad
    return vol


def test_each_frame_references_the_slice_it_was_cut_from(series, tmp_path) -> None:
    labels = np.zeros(series.array.shape, np.uint8)
    labels[2:6, 3:5, 1] = 1          # segment 1 on slice 1 only
    labels[10:13, 8:12, 4] = 3       # segment 3 on slice 4 only
    labels[0, 0, 4] = 1
    path = write_dicom_seg(series.files, labels, SPECS, tmp_path / "seg" / "case.dcm", "medtasks test", "0.1.0")
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SEG" and ds.SegmentationType == "BINARY" and ds.NumberOfFrames == 3  # empty frames left out
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["lesion", "valve"]
    assert ds.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "34202007"   # SCT aortic valve
    src = {pydicom.dcmread(f).SOPInstanceUID: (k, pydicom.dcmread(f)) for k, f in enumerate(series.files)}
    assert ds.FrameOfReferenceUID == next(iter(src.values()))[1].FrameOfReferenceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_instance_uid
    frames = ds.pixel_array
    for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ref = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k, source = src[ref]
        # the frame lies where its source slice lies, and holds that slice's mask of its segment
        ipp = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        np.testing.assert_allclose(ipp, np.array(source.ImagePositionPatient, float), atol=1e-4)
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        value = SPECS[number - 1].value
        np.testing.assert_array_equal(frames[i] > 0, labels[:, :, k].T == value)
    assert sorted((src[i.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID][0],
                   int(i.SegmentIdentificationSequence[0].ReferencedSegmentNumber))
                  for i in ds.PerFrameFunctionalGroupsSequence) == [(1, 1), (4, 1), (4, 2)]
    # highdicom reads it back, frame by frame onto the source grid
    back = read_dicom_seg_labels(path, series.files)
    np.testing.assert_array_equal(back, np.select([labels == 1, labels == 3], [1, 2], 0))
    assert dciodvfy_errors(path) == []
    assert str(ds.PatientName) == FAKE_NAME     # copied from the source, as DICOM requires (never logged)


def test_an_empty_mask_still_gives_a_valid_seg(series, tmp_path) -> None:
    path = write_dicom_seg(series.files, np.zeros(series.array.shape, np.uint8), SPECS[:1], tmp_path / "e.dcm",
                           "medtasks test", "0.1.0")
    ds = pydicom.dcmread(path)
    assert ds.NumberOfFrames == len(series.files) and not ds.pixel_array.any()
    assert dciodvfy_errors(path) == []


def test_bad_inputs_are_clear_errors(series, tmp_path) -> None:
    labels = np.zeros(series.array.shape, np.uint8)
    with pytest.raises(ValueError, match=r"label map \(20, 14, 6\) does not match 5 source slices"):
        write_dicom_seg(series.files[:5], labels, SPECS, tmp_path / "a.dcm", "t", "1")
    labels[0, 0, 0] = 7
    with pytest.raises(ValueError, match=r"label values \[7\] have no segment description"):
        write_dicom_seg(series.files, labels, SPECS, tmp_path / "b.dcm", "t", "1")
    with pytest.raises(ValueError, match="keyword of pydicom.sr.codedict"):
        write_dicom_seg(series.files, labels * 0, [SegmentSpec(1, "x", "NoSuchCategory", "Lesion")],
                        tmp_path / "c.dcm", "t", "1")
    ds = pydicom.dcmread(series.files[0])
    del ds.FrameOfReferenceUID
    ds.save_as(series.files[0])
    with pytest.raises(SegSourceError, match="FrameOfReferenceUID"):
        write_dicom_seg(series.files, labels * 0, SPECS, tmp_path / "d.dcm", "t", "1")
    assert not list(tmp_path.glob("*.dcm"))            # nothing half-written
