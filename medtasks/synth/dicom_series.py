"""Write a volume (NIfTI axis order, RAS affine) as a single-frame DICOM series, CT or MR.

The synthetic NIfTI phantoms (MS FLAIR, PHE head CT, cardiac CT) become the DICOM series a scanner
would send, so that ``predict`` on DICOM input, the DICOM Segmentation output and the DICOMweb round
trip run on the real file format. The geometry is the inverse of :mod:`medtasks.io.dicom_series`:
frame ``k`` holds ``volume[:, :, k].T`` (rows = the array's second axis), ImageOrientationPatient is
the affine's first two columns in LPS, ImagePositionPatient the affine applied to ``(0, 0, k)`` in LPS,
PixelSpacing ``[row spacing, column spacing]``. Every file carries valid UIDs, a FrameOfReferenceUID
and the General Equipment / Image Plane / Image Pixel modules that DICOM and highdicom require, and a
fake PatientName / BirthDate (``SYNTHETIC^PATIENT``) so tests can prove those never reach an output.

Example:
    >>> import numpy as np
    >>> files = write_volume_series(np.zeros((8, 6, 3)), np.diag([1.0, 1.0, 2.0, 1.0]), "dcm", "MR")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medtasks.io.atomic import atomic_path
from medtasks.synth.dicom_writer import format_ds

__all__ = ["write_volume_series", "FAKE_NAME", "FAKE_BIRTH_DATE"]

FAKE_NAME = "SYNTHETIC^PATIENT"       # never to be found in any medtasks output (tests grep for it)
FAKE_BIRTH_DATE = "19010101"
_LPS = np.diag([-1.0, -1.0, 1.0])


def _uid(seed_text: str | None) -> str:
    return generate_uid(entropy_srcs=[seed_text]) if seed_text else generate_uid()


def _encode(plane: np.ndarray, modality: str) -> tuple[np.ndarray, dict[str, str | int]]:
    if modality == "CT":   # signed 16-bit, HU = stored - 1024
        stored = (np.clip(np.rint(plane), -1024, 31743) + 1024).astype("<u2")
        return stored, {"PixelRepresentation": 0, "RescaleIntercept": "-1024", "RescaleSlope": "1"}
    stored = np.clip(np.rint(plane), 0, 65535).astype("<u2")   # MR: the values as stored, no rescale
    return stored, {"PixelRepresentation": 0}


def write_volume_series(volume: np.ndarray, affine: np.ndarray, folder: str | Path, modality: str = "CT",
                        patient_id: str = "SYN-0001", study_uid: str | None = None, series_number: int = 1,
                        series_description: str = "synthetic", uid_seed: str | None = None,
                        instance_numbers: Sequence[int] | None = None) -> list[Path]:
    """Write ``volume`` (``(x, y, z)``; CT in HU, MR as non-negative values) as one DICOM file per slice.

    Args:
        volume: ``(columns, rows, slices)`` values, the NIfTI axis order of :mod:`medtasks.io.dicom_series`.
        affine: 4x4 voxel -> RAS (mm) matrix (a NIfTI affine).
        folder: Output folder (created); files are ``<k>.dcm``.
        modality: ``"CT"`` (CT Image Storage, stored = HU + 1024) or ``"MR"`` (MR Image Storage, rounded values).
        patient_id: PatientID of the series (synthetic).
        study_uid: StudyInstanceUID (default: a new one); pass the same one to put several series in one study.
        series_number: SeriesNumber.
        series_description: SeriesDescription.
        uid_seed: Text the UIDs are derived from (same text, same UIDs); None: random UIDs.
        instance_numbers: InstanceNumber per slice (default ``1..n`` in position order).

    Returns:
        The written files, in slice (``k``) order.
    """
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality {modality!r}: use CT or MR")
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError(f"volume must be 3-D (x, y, z), got shape {vol.shape}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    a = np.asarray(affine, dtype=np.float64)
    m = _LPS @ a[:3, :3]
    col_sp, row_sp = float(np.linalg.norm(m[:, 0])), float(np.linalg.norm(m[:, 1]))
    iop = [*(m[:, 0] / col_sp), *(m[:, 1] / row_sp)]
    thickness = float(np.linalg.norm(m[:, 2]))
    seed = uid_seed
    study = study_uid or _uid(f"{seed}-study" if seed else None)
    series = _uid(f"{seed}-series" if seed else None)
    frame_of_ref = _uid(f"{seed}-for" if seed else None)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, vol.shape[2] + 1))
    out = []
    for k in range(vol.shape[2]):
        sop = _uid(f"{seed}-sop-{k}" if seed else None)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame_of_ref
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = FAKE_NAME, patient_id, FAKE_BIRTH_DATE, "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.SeriesDate, ds.SeriesTime = "20260101", "120000"
        ds.Modality, ds.Manufacturer = modality, "MEDTASKS SYNTHETIC"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = series_number, int(numbers[k]), series_description
        ds.PositionReferenceIndicator, ds.PatientPosition, ds.Laterality = "", "HFS", ""
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if modality == "CT" else ["ORIGINAL", "PRIMARY"]
        if modality == "CT":
            ds.KVP = "120"
        else:
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
            ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = "100", "9000", 1
        ds.SliceThickness = format_ds(thickness)
        ds.PixelSpacing = [format_ds(row_sp), format_ds(col_sp)]
        ds.ImageOrientationPatient = [format_ds(v) for v in iop]
        ds.ImagePositionPatient = [format_ds(v) for v in _LPS @ (a[:3, :3] @ np.array([0.0, 0.0, k]) + a[:3, 3])]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        plane = vol[:, :, k].T
        stored, attrs = _encode(plane, modality)
        ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        for key, value in attrs.items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        path = folder / f"{k}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        out.append(path)
    return out
