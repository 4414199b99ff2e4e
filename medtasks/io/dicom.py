"""Single-slice DICOM reading for CT: header checks and Hounsfield units.

Every failure is raised per file as :class:`DicomReadError` with a short ``reason``
code, so that dataset preparation can write the file to ``rejected.csv`` and go on
instead of aborting a run over one corrupt slice (RSNA ships at least one).

Example:
    >>> from pydicom.data import get_testdata_file
    >>> hdr = read_header(get_testdata_file("CT_small.dcm"))
    >>> hdr["modality"], hdr["rows"]
    ('CT', 128)
    >>> read_hu(get_testdata_file("CT_small.dcm")).dtype
    dtype('float32')
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, TypeVar

import numpy as np
import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder

from medtasks.io.dicom_geometry import slice_normal, slice_position
from medtasks.io.dicom_pixels import native_pixels as _native_pixels
from medtasks.io.hu import fix_wrapped_pixels, hu_map, stored_to_hu

_F = TypeVar("_F", bound=Callable[..., Any])


def _lenient(fn: _F) -> _F:
    """Read with pydicom's value validation off: RSNA's anonymised files put ``ID_...`` strings in
    UI elements, which pydicom would otherwise warn about once per element per file."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = pydicom.config.settings
        mode = settings.reading_validation_mode
        settings.reading_validation_mode = pydicom.config.IGNORE
        try:
            return fn(*args, **kwargs)
        finally:
            settings.reading_validation_mode = mode

    return wrapper  # type: ignore[return-value]


logger = logging.getLogger(__name__)

__all__ = ["DicomReadError", "REASONS", "age_years", "read_header", "read_hu", "read_stored", "stored_to_hu",
           "fix_wrapped_pixels"]

# Suggested remedy per reason code; appended to str(error) so a log line is actionable.
_FIXES: dict[str, str] = {
    "unreadable": "the file is corrupt, truncated or not DICOM; re-download it or leave it rejected",
    "no_pixel_data": "the file holds no image; it cannot be used for training or inference",
    "wrong_modality": "only the expected modality is accepted; pass modality=None to skip the check",
    "no_decoder": "install a pixel-data decoder for this transfer syntax",
    "missing_tag": "a required DICOM tag is absent; the file cannot be placed in its series",
    "bad_shape": "only 2-D single-frame, single-sample images are supported",
}
REASONS: tuple[str, ...] = tuple(_FIXES)

# Which pip package decodes which compressed transfer syntax (pydicom alone decodes
# only native, deflated and RLE data).
_J2K = "pylibjpeg + pylibjpeg-openjpeg (or python-gdcm)"
_LJPEG = "pylibjpeg + pylibjpeg-libjpeg (or python-gdcm)"
_DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.90": _J2K,
    "1.2.840.10008.1.2.4.91": _J2K,
    "1.2.840.10008.1.2.4.201": _J2K,
    "1.2.840.10008.1.2.4.202": _J2K,
    "1.2.840.10008.1.2.4.203": _J2K,
    "1.2.840.10008.1.2.4.50": "pillow or " + _LJPEG,
    "1.2.840.10008.1.2.4.51": _LJPEG,
    "1.2.840.10008.1.2.4.57": _LJPEG,
    "1.2.840.10008.1.2.4.70": _LJPEG,
    "1.2.840.10008.1.2.4.80": _LJPEG,
    "1.2.840.10008.1.2.4.81": _LJPEG,
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (pydicom's own RLE decoder needs only numpy)",
}


class DicomReadError(Exception):
    """One file could not be used.

    Attributes:
        path: The offending file (or ``"<dataset>"`` for an in-memory dataset).
        reason: Short code for ``rejected.csv``, one of :data:`REASONS`.
        detail: What exactly went wrong.

    Example:
        >>> err = DicomReadError("a.dcm", "unreadable", "not a DICOM file")
        >>> err.reason
        'unreadable'
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str) -> None:
        if reason not in _FIXES:
            raise ValueError(f"unknown DicomReadError reason {reason!r}; valid: {REASONS}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {detail} [{reason}]; fix: {_FIXES[reason]}")

    def __reduce__(self) -> tuple[Any, ...]:
        # DataLoader workers pickle exceptions; the default would call __init__ with one arg.
        return (type(self), (self.path, self.reason, self.detail))


def _dcmread(path: str | os.PathLike[str], **kwargs: Any) -> Dataset:
    try:
        ds = pydicom.dcmread(path, **kwargs)
    except FileNotFoundError as exc:
        raise DicomReadError(path, "unreadable", f"file not found ({exc})") from exc
    except InvalidDicomError as exc:
        raise DicomReadError(path, "unreadable", f"not a DICOM file ({exc})") from exc
    except Exception as exc:  # pydicom raises many types on garbage (EOFError, ValueError, ...)
        raise DicomReadError(path, "unreadable", f"{type(exc).__name__}: {exc}") from exc
    # Garbage after a valid "DICM" preamble parses into a few nonsense elements.
    if not any(keyword in ds for keyword in ("SOPClassUID", "Modality", "PixelData")):
        raise DicomReadError(path, "unreadable", "no recognisable DICOM elements (SOPClassUID, Modality, PixelData)")
    return ds


_TEXT_VRS = frozenset({"UI", "CS", "DS", "IS", "LO", "SH"})


def _fast_get(ds: Dataset, keyword: str) -> Any:
    """``ds.get(keyword)`` from the raw element when that is plain (the header fields of :func:`read_header`,
    the rescale tags of :func:`read_hu`): ASCII text VRs (multi-values split on backslash) and 2-byte US.
    Measured on 3,000 RSNA-like headers: pydicom's per-element conversion was ~45% of ``read_header`` (0.72
    of 1.58 s). Anything else (other VRs, non-ASCII text that needs the character set, odd lengths) goes
    through pydicom unchanged."""
    elem = ds.get_item(keyword, keep_deferred=True)
    if elem is None:
        return None
    raw = getattr(elem, "value", None)
    if not isinstance(raw, bytes):
        return ds.get(keyword)
    vr = getattr(elem, "VR", None) or dictionary_VR(elem.tag)  # RawDataElement.VR: None for implicit VR
    if vr in _TEXT_VRS and raw.isascii():
        parts = [v.strip(" \x00") for v in raw.decode("ascii").split("\\")]
        return parts[0] if len(parts) == 1 else parts
    if vr == "US" and len(raw) == 2:
        return int.from_bytes(raw, "little" if ds.is_little_endian in (True, None) else "big")
    return ds.get(keyword)


def _floats(value: Any) -> list[float] | None:
    try:
        return None if value is None else [float(v) for v in ([value] if isinstance(value, str) else value)]
    except (TypeError, ValueError):
        return None


def _check_modality(ds: Dataset, modality: str | None, path: str) -> str:
    found = str(_fast_get(ds, "Modality") or "").strip().upper()
    if modality is None:
        return found
    if not found:
        raise DicomReadError(path, "missing_tag", f"no Modality tag, expected {modality}")
    if found != modality.upper():
        raise DicomReadError(path, "wrong_modality", f"Modality is {found}, expected {modality}")
    return found


def _decoder_problem(ds: Dataset) -> str | None:
    """Describe why the transfer syntax cannot be decoded here, or None if it can."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        return None  # cannot judge; pixel decoding will report the real problem
    package = _DECODER_PACKAGES.get(str(tsyntax), "python-gdcm")
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        return f"pydicom has no decoder for transfer syntax {tsyntax} ({tsyntax.name}); try {package}"
    if decoder.is_available:
        return None
    missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
    return (
        f"no installed decoder for transfer syntax {tsyntax} ({tsyntax.name}): "
        f"pip install {package} [pydicom reports: {missing}]"
    )


def _check_frame(ds: Dataset, path: str) -> None:
    frames = _fast_get(ds, "NumberOfFrames") or 1
    samples = _fast_get(ds, "SamplesPerPixel") or 1
    try:
        frames, samples = int(frames or 1), int(samples or 1)
    except (TypeError, ValueError) as exc:
        raise DicomReadError(path, "bad_shape", f"unparseable frame/sample counts ({exc})") from exc
    if frames != 1 or samples != 1:
        raise DicomReadError(path, "bad_shape", f"{frames} frame(s) x {samples} sample(s) per pixel")


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _slice_z(position: Any, orientation: Any) -> float | None:
    """Position along the slice normal (:mod:`medtasks.io.dicom_geometry`); ``IPP[2]`` when IOP is absent or
    unusable; ``None`` without a usable IPP."""
    if position is None or len(position) < 3:
        return None
    if orientation is not None:
        try:
            return slice_position(slice_normal(orientation), position)
        except ValueError:
            pass  # unusable IOP: the axial assumption is all that is left
    return _float_or_none(position[2])


@_lenient
def read_header(
    path: str | os.PathLike[str], modality: str | None = "CT", require_position: bool = True
) -> dict[str, Any]:
    """Read and validate a DICOM header without decoding the pixels.

    Native pixel data is deferred (seeked over, not loaded) so that indexing hundreds
    of thousands of slices stays I/O-light; encapsulated (compressed) data of undefined
    length is scanned for its end but not decoded. Identifying fields such as
    PatientName or PatientBirthDate are never returned; ``patient_id`` is kept because
    the manifests group by it.

    Args:
        path: DICOM file.
        modality: Required Modality (case-insensitive); ``None`` accepts any.
        require_position: Raise ``missing_tag`` when ImagePositionPatient is absent
            (needed to order slices by z); otherwise ``z`` is ``None``.

    ``z`` is the slice position (mm) along the plane normal ``cross(row, column cosine)`` of
    ImageOrientationPatient, ``dot(normal, ImagePositionPatient)``: the same number as ``IPP[2]`` for an
    axial series, and the right slice order for an oblique (gantry-tilted) one, where ``IPP[2]`` is not.
    Without a usable ImageOrientationPatient it falls back to ``IPP[2]``.

    Returns:
        Dict with keys ``path, sop_instance_uid, series_instance_uid,
        study_instance_uid, patient_id, modality, z, rows, columns,
        pixel_spacing_row, pixel_spacing_col, transfer_syntax``, and for subgroup tables
        ``manufacturer, manufacturer_model, sex, age`` (:func:`age_years`; ``""`` where absent).

    Raises:
        DicomReadError: reason ``unreadable``, ``no_pixel_data``, ``wrong_modality``,
            ``no_decoder``, ``missing_tag`` or ``bad_shape``.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> read_header(get_testdata_file("CT_small.dcm"))["z"]
        -75.699997
    """
    spath = str(path)
    # defer_size keeps big values (the pixels) on disk; the file is still walked to the
    # end, so an absent PixelData element is seen, unlike with stop_before_pixels.
    ds = _dcmread(path, defer_size=1024)
    if "PixelData" not in ds:
        raise DicomReadError(spath, "no_pixel_data", "no (7FE0,0010) PixelData element")
    # keep_deferred: a plain get_item would load the deferred pixels from disk.
    pixel_elem = ds.get_item("PixelData", keep_deferred=True)
    value_tell = getattr(pixel_elem, "value_tell", None)
    length = getattr(pixel_elem, "length", None)
    if value_tell is not None and length not in (None, 0xFFFFFFFF):
        # A deferred read would not notice a truncated download; the size check is free.
        if value_tell + length > os.path.getsize(path):
            raise DicomReadError(spath, "unreadable", "file is truncated inside PixelData")
    found = _check_modality(ds, modality, spath)
    _check_frame(ds, spath)
    if (problem := _decoder_problem(ds)) is not None:
        raise DicomReadError(spath, "no_decoder", problem)

    rows, cols = _fast_get(ds, "Rows"), _fast_get(ds, "Columns")
    if rows is None or cols is None:
        raise DicomReadError(spath, "missing_tag", "no Rows/Columns")
    z = _slice_z(_floats(_fast_get(ds, "ImagePositionPatient")), _floats(_fast_get(ds, "ImageOrientationPatient")))
    if z is None and require_position:
        raise DicomReadError(spath, "missing_tag", "no usable ImagePositionPatient (needed for slice order)")
    spacing = _floats(_fast_get(ds, "PixelSpacing"))
    has_spacing = spacing is not None and len(spacing) >= 2
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)

    def text(keyword: str) -> str:
        value = _fast_get(ds, keyword)
        return "" if value is None else str(value)

    return {
        "path": spath,
        "sop_instance_uid": text("SOPInstanceUID"),
        "series_instance_uid": text("SeriesInstanceUID"),
        "study_instance_uid": text("StudyInstanceUID"),
        "patient_id": text("PatientID"),
        "modality": found,
        "z": z,
        "rows": int(rows),
        "columns": int(cols),
        "pixel_spacing_row": _float_or_none(spacing[0]) if has_spacing else None,
        "pixel_spacing_col": _float_or_none(spacing[1]) if has_spacing else None,
        "transfer_syntax": str(tsyntax) if tsyntax is not None else "",
        # subgroup columns (medtasks evaluate --by): scanner, and demographics that identify no one
        "manufacturer": text("Manufacturer").strip(),
        "manufacturer_model": text("ManufacturerModelName").strip(),
        "sex": text("PatientSex").strip().upper(),
        "age": age_years(text("PatientAge")),
    }


def age_years(value: str) -> str:
    """DICOM PatientAge (``045Y``, ``006M``, ``010W``, ``003D``) in whole years, ``"90+"`` from 90 on (HIPAA Safe
    Harbor: an older age identifies), ``""`` when absent or malformed. Example:
        >>> [age_years(v) for v in ("045Y", "018M", "093Y", "", "4OY")]
        ['45', '1', '90+', '', '']
    """
    v = str(value).strip().upper()
    if len(v) != 4 or not v[:3].isdigit() or v[3] not in "DWMY":
        return ""
    years = int(v[:3]) / {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0}[v[3]]
    return "90+" if years >= 90 else str(int(years))


@_lenient
def read_stored(path_or_ds: str | os.PathLike[str] | Dataset,
                modality: str | None = "CT") -> tuple[np.ndarray, float, float]:
    """Read one 2-D slice as stored values and the linear map to HU: ``HU = pixels * slope + intercept``.

    The RSNA wrap-around is already undone where it is that quirk (CT, slope 1; :func:`fix_wrapped_pixels`:
    the returned pixels are then int32 and the intercept -1000); a Modality LUT Sequence (no rescale tags)
    is applied with pydicom's ``apply_modality_lut`` (float32 HU, slope 1, intercept 0). Pipelines that
    resample before windowing use this to apply the HU map after resampling, on the smaller image
    (resampling is linear, so the order does not change the values beyond float32 rounding);
    :func:`read_hu` applies it directly.

    Raises:
        DicomReadError: with the reason code of the failure.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> px, slope, intercept = read_stored(get_testdata_file("CT_small.dcm"))
        >>> px.dtype, slope, intercept
        (dtype('int16'), 1.0, -1024.0)
    """
    if isinstance(path_or_ds, Dataset):
        ds = path_or_ds
        path = str(getattr(ds, "filename", None) or "<dataset>")
    else:
        path = str(path_or_ds)
        ds = _dcmread(path_or_ds)
    if "PixelData" not in ds:
        raise DicomReadError(path, "no_pixel_data", "no (7FE0,0010) PixelData element")
    _check_modality(ds, modality, path)
    try:
        pixels = _native_pixels(ds)
        if pixels is None:
            pixels = ds.pixel_array
    except Exception as exc:
        # Classify after the fact so the common path pays nothing for the check.
        problem = _decoder_problem(ds)
        if problem is not None:
            raise DicomReadError(path, "no_decoder", problem) from exc
        raise DicomReadError(path, "unreadable", f"pixel data cannot be decoded: {type(exc).__name__}: {exc}") from exc
    if pixels.ndim != 2:
        raise DicomReadError(path, "bad_shape", f"decoded pixel array has shape {pixels.shape}, expected (rows, cols)")

    return hu_map(ds, pixels, _float_or_none(_fast_get(ds, "RescaleSlope")),
                  _float_or_none(_fast_get(ds, "RescaleIntercept")), str(_fast_get(ds, "Modality") or ""))


def read_hu(path_or_ds: str | os.PathLike[str] | Dataset, modality: str | None = "CT") -> np.ndarray:
    """Read one 2-D slice as Hounsfield units.

    One ``dcmread``, one decode (:func:`read_stored`), then one float32 pass: this sits in the
    training data path, so it must stay close to the speed of a bare decode.

    Args:
        path_or_ds: DICOM file or an already read :class:`pydicom.dataset.Dataset`.
        modality: Required Modality; ``None`` accepts any.

    Returns:
        float32 array ``(rows, cols)``: ``pixel * RescaleSlope + RescaleIntercept``
        after :func:`fix_wrapped_pixels` (slope defaults to 1, intercept to 0).

    Raises:
        DicomReadError: with the reason code of the failure.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> hu = read_hu(get_testdata_file("CT_small.dcm"))
        >>> hu.shape, hu.dtype
        ((128, 128), dtype('float32'))
    """
    pixels, slope, intercept = read_stored(path_or_ds, modality)
    return stored_to_hu(pixels, slope, intercept)
