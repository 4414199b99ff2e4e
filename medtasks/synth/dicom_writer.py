"""Write synthetic CT slices as single-frame DICOM files shaped like the RSNA ICH release.

RSNA's anonymised files carry identifiers such as ``ID_12cadc6af`` in UID elements, which are
not valid DICOM UIDs. pydicom checks UI values when an element is created and again when
``dcmwrite`` copies the file meta (both with ``reading_validation_mode``; the writer itself uses
``writing_validation_mode``), so both modes are set to IGNORE only while one file is built and
written, and restored afterwards. Three pixel encodings occur in RSNA and are reproduced here:

* ``"int16"``: signed 16-bit, stored = HU + 1024, intercept -1024;
* ``"uint12"``: unsigned 12-bit, stored = HU + 1024 (clipped to 0..4095), intercept -1024;
* ``"wrapped"``: the RSNA quirk, unsigned 12-bit, intercept 0, stored = HU mod 4096 with HU
  clipped to [-1000, 3000]. The public fix (add 1000, subtract 4096 from values >= 4096,
  use intercept -1000) recovers the HU exactly.

Example:
    >>> import numpy as np
    >>> stored, attrs = encode_pixels(np.array([[-1000.0, 40.0]]), "wrapped")
    >>> stored.tolist(), attrs["RescaleIntercept"]
    ([[3096, 40]], 0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medtasks.io.atomic import atomic_path

__all__ = ["ENCODINGS", "SeriesHeader", "encode_pixels", "expected_hu", "format_ds", "write_ct_slice"]

ENCODINGS: tuple[str, ...] = ("int16", "uint12", "wrapped")

# Fixed so that files are byte-identical across runs (pydicom's default embeds its version).
_IMPLEMENTATION_UID = "1.2.826.0.1.3680043.8.498.90210"
_IMPLEMENTATION_NAME = "MEDTASKS_SYNTH"


def format_ds(value: float) -> str:
    """Decimal String text for ``value`` (at most 5 decimals, never over 16 characters)."""
    text = f"{round(float(value), 5):.10g}"
    return "0" if text == "-0" else text


@dataclass(frozen=True)
class SeriesHeader:
    """Patient, study and series attributes shared by every slice of one series."""

    patient_id: str
    patient_name: str
    birth_date: str
    patient_sex: str
    study_uid: str
    series_uid: str
    study_id: str
    study_date: str
    study_time: str
    series_number: int
    pixel_spacing: float
    slice_thickness: float
    xy_origin: tuple[float, float]
    encoding: str = "int16"
    window_center: float = 40.0
    window_width: float = 80.0
    multi_window: bool = False


def encode_pixels(hu: np.ndarray, encoding: str) -> tuple[np.ndarray, dict[str, int]]:
    """Stored pixel values and the matching header attributes for one of :data:`ENCODINGS`."""
    h = np.rint(np.asarray(hu, dtype=np.float64))
    if encoding == "int16":
        stored = (np.clip(h, -1024, 3071) + 1024).astype("<i2")
        attrs = {"BitsStored": 16, "HighBit": 15, "PixelRepresentation": 1, "RescaleIntercept": -1024}
    elif encoding == "uint12":
        stored = np.clip(h + 1024, 0, 4095).astype("<u2")
        attrs = {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0, "RescaleIntercept": -1024}
    elif encoding == "wrapped":
        stored = np.mod(np.clip(h, -1000, 3000), 4096).astype("<u2")
        attrs = {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0, "RescaleIntercept": 0}
    else:
        raise ValueError(f"unknown encoding {encoding!r}; valid: {ENCODINGS}")
    return stored, attrs


def expected_hu(hu: np.ndarray, encoding: str) -> np.ndarray:
    """The HU a correct reader (wrap fix included) recovers from a slice written from ``hu``."""
    h = np.rint(np.asarray(hu, dtype=np.float64))
    lo, hi = (-1000, 3000) if encoding == "wrapped" else (-1024, 3071)
    return np.clip(h, lo, hi).astype(np.float32)


@contextlib.contextmanager
def _relaxed_validation() -> Iterator[None]:
    """Accept RSNA-style ``ID_...`` strings in UI elements, only for the duration of a write."""
    settings = pydicom.config.settings
    previous = settings.reading_validation_mode, settings.writing_validation_mode
    settings.reading_validation_mode = settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = previous


def _build_dataset(stored: np.ndarray, attrs: dict[str, int], header: SeriesHeader, sop_uid: str,
                   instance_number: int, z: float) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_NAME

    ds = Dataset()
    ds.file_meta = meta
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = header.study_date
    ds.StudyTime = header.study_time
    ds.Modality = "CT"
    ds.Manufacturer = "MEDTASKS SYNTHETIC"
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.birth_date
    ds.PatientSex = header.patient_sex
    ds.SliceThickness = format_ds(header.slice_thickness)
    ds.KVP = "120"
    ds.StudyInstanceUID = header.study_uid
    ds.SeriesInstanceUID = header.series_uid
    ds.StudyID = header.study_id
    ds.SeriesNumber = header.series_number
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [format_ds(header.xy_origin[0]), format_ds(header.xy_origin[1]), format_ds(z)]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.PixelSpacing = [format_ds(header.pixel_spacing)] * 2
    ds.BitsAllocated = 16
    ds.BitsStored = attrs["BitsStored"]
    ds.HighBit = attrs["HighBit"]
    ds.PixelRepresentation = attrs["PixelRepresentation"]
    center, width = format_ds(header.window_center), format_ds(header.window_width)
    # Some RSNA files repeat the window values (a two-valued element); readers must cope.
    ds.WindowCenter = [center, center] if header.multi_window else center
    ds.WindowWidth = [width, width] if header.multi_window else width
    ds.RescaleIntercept = format_ds(attrs["RescaleIntercept"])
    ds.RescaleSlope = "1"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    return ds


def write_ct_slice(path: str | Path, hu: np.ndarray, header: SeriesHeader, sop_uid: str,
                   instance_number: int, z: float) -> None:
    """Write one axial slice atomically (temporary name, then ``os.replace``).

    Args:
        path: Destination ``.dcm`` file.
        hu: (rows, columns) Hounsfield units; rounded and clipped by the series' encoding.
        header: Series-level attributes (see :class:`SeriesHeader`).
        sop_uid: SOPInstanceUID, e.g. ``"ID_12cadc6af"``; the file should be named after it.
        instance_number: InstanceNumber (need not follow z).
        z: ImagePositionPatient z (mm).
    """
    path = Path(path)
    stored, attrs = encode_pixels(hu, header.encoding)
    with _relaxed_validation(), atomic_path(path) as tmp:
        ds = _build_dataset(stored, attrs, header, sop_uid, instance_number, z)
        ds.save_as(tmp, enforce_file_format=True)
