"""Radiographs (chest X-ray) as ``(1, H, W)`` float32 arrays in [0, 1], from DICOM or image files.

DICOM (a ``.dcm`` suffix or the ``DICM`` preamble at byte 128) is read with pydicom: Modality must
be CR, DX or DR; one frame, one sample (MONOCHROME1/2) only. Pixels stay at full bit depth as float
(RescaleSlope/Intercept, or a Modality LUT Sequence, applied) until the single normalisation step:

* Default: the stored bit range. Unsigned ``BitsStored = B`` data span ``0 .. 2**B - 1``, signed
  ``-2**(B-1) .. 2**(B-1) - 1``; both ends go through the rescale and become 0 and 1. Why this
  and not per-image min/max or the window: it is a fixed, lossless, header-only map, so the same
  detector value gives the same input on every image of a device (min/max would stretch a film
  with little contrast, and a noisy maximum would move every pixel), and it works on files
  without a window preset (many CR exports have none, others several). Its cost: raw CR data
  often fill only part of the range, so images look flat; intensity augmentation or a
  per-image standardisation transform downstream handles that.
* ``voi=True``: the file's own VOI LUT Sequence or first WindowCenter/WindowWidth (LINEAR,
  LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2) mapped onto [0, 1]: what a viewer shows, and closer
  to display JPEGs such as Kermany's. Files without one fall back to the bit range. Use the same
  setting in training and inference.

MONOCHROME1 (minimum = white) is inverted after normalisation (``1 - v``), so that air is dark
and bone bright as in MONOCHROME2 and in JPEG exports: a 12-bit MONOCHROME1 pixel ``v`` reads as
``(4095 - v) / 4095``. Other files go to :func:`medtasks.io.images.read_grey` (``/255`` or
``/65535``). Every failure is a ``ValueError`` whose message starts with the path
(:class:`RadiographError` for DICOM, with a ``reason`` code for ``rejected.csv``). Patient names
are never read into messages or logs; only PatientID is returned (manifests group by it).

Example:
    >>> read_radiograph("IM-0115-0001.jpeg").shape  # doctest: +SKIP
    (1, 1858, 2090)
    >>> probe_radiograph("cr_chest.dcm").modality  # doctest: +SKIP
    'CR'
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from medtasks.io.dicom import _decoder_problem, _lenient  # lenient: exporters write odd values
from medtasks.io.dicom_pixels import native_pixels
from medtasks.io.images import IMAGE_SUFFIXES, read_grey

__all__ = ["RADIOGRAPH_MODALITIES", "RADIOGRAPH_SUFFIXES", "REASONS", "RadiographError", "RadiographInfo",
           "is_dicom", "probe_radiograph", "read_radiograph"]

logger = logging.getLogger(__name__)

RADIOGRAPH_SUFFIXES: tuple[str, ...] = (*IMAGE_SUFFIXES, ".dcm")
RADIOGRAPH_MODALITIES: tuple[str, ...] = ("CR", "DX", "DR")  # DR is not a DICOM code, but some exporters write it
REASONS: tuple[str, ...] = ("unreadable", "wrong_modality", "bad_shape", "no_pixel_data", "no_decoder")
_PIL_FORMATS = {"JPEG": "jpeg", "PNG": "png", "BMP": "bmp", "TIFF": "tiff", "MPO": "jpeg"}  # MPO: camera JPEG



class RadiographError(ValueError):
    """One DICOM radiograph that cannot be used; ``str(err)`` starts with the path.

    Example:
        >>> err = RadiographError("a.dcm", "wrong_modality", "Modality is CT, expected one of CR, DX, DR")
        >>> str(err), err.reason
        ('a.dcm: Modality is CT, expected one of CR, DX, DR', 'wrong_modality')
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str) -> None:
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{self.path}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        # DataLoader workers pickle exceptions; the default would call __init__ with one argument.
        return (type(self), (self.path, self.reason, self.detail))


@dataclass(frozen=True)
class RadiographInfo:
    """What :func:`probe_radiograph` learns without a full-resolution decode."""

    path: str
    format: str  # jpeg | png | bmp | tiff | dicom (from the content, not the suffix)
    width: int
    height: int
    modality: str = ""
    patient_id: str = ""
    photometric: str = ""
    bits_stored: int = 8


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """``.dcm`` / ``.dicom`` suffix, or the ``DICM`` magic at byte 128 (DICOM often has no suffix)."""
    if os.fspath(path).lower().endswith((".dcm", ".dicom")):
        return True
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _dcmread(path: str, header_only: bool) -> Dataset:
    try:
        # defer_size keeps the pixels on disk but still walks to the end of the file, so a
        # missing PixelData element is seen (stop_before_pixels would not see it).
        ds = pydicom.dcmread(path, defer_size=1024 if header_only else None)
    except Exception as exc:  # pydicom raises many types on garbage (EOFError, ValueError, ...)
        raise RadiographError(path, "unreadable", f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    if not any(k in ds for k in ("SOPClassUID", "Modality", "PixelData")):
        raise RadiographError(path, "unreadable", "no recognisable DICOM elements (SOPClassUID, Modality, PixelData)")
    return ds


def _check(ds: Dataset, path: str) -> tuple[str, str]:
    """Modality, pixel data, frame/sample checks; returns ``(modality, photometric)``."""
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality not in RADIOGRAPH_MODALITIES:
        raise RadiographError(path, "wrong_modality", f"Modality is {modality or '(absent)'}, expected one of "
                                                      f"{', '.join(RADIOGRAPH_MODALITIES)}")
    if "PixelData" not in ds:
        raise RadiographError(path, "no_pixel_data", "no (7FE0,0010) PixelData element")
    try:
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as exc:
        raise RadiographError(path, "bad_shape", f"unparseable frame/sample counts ({exc})") from None
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if frames != 1:
        raise RadiographError(path, "bad_shape", f"{frames} frames; only single-frame radiographs are supported")
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise RadiographError(path, "bad_shape", f"colour image ({samples} samples per pixel, "
                                                 f"{photometric or 'no'} PhotometricInterpretation); "
                                                 "expected MONOCHROME1/MONOCHROME2")
    if (problem := _decoder_problem(ds)) is not None:
        raise RadiographError(path, "no_decoder", problem)
    return modality, photometric


@_lenient
def _probe_dicom(path: str) -> RadiographInfo:
    ds = _dcmread(path, header_only=True)
    modality, photometric = _check(ds, path)
    elem = ds.get_item("PixelData", keep_deferred=True)
    tell, length = getattr(elem, "value_tell", None), getattr(elem, "length", None)
    if tell is not None and length not in (None, 0xFFFFFFFF) and tell + length > os.path.getsize(path):
        raise RadiographError(path, "unreadable", "file is truncated inside PixelData")  # free check, no decode
    return RadiographInfo(path=path, format="dicom", width=int(ds.get("Columns", 0) or 0),
                          height=int(ds.get("Rows", 0) or 0), modality=modality,
                          patient_id=str(ds.get("PatientID", "") or "").strip(), photometric=photometric,
                          bits_stored=int(ds.get("BitsStored", 0) or 0))


def _probe_image(path: str) -> RadiographInfo:
    from PIL import Image

    try:
        with Image.open(path) as im:
            fmt = _PIL_FORMATS.get(im.format or "")
            if fmt is None:
                raise ValueError(f"{im.format} is not a radiograph image format")
            width, height = im.size
            if fmt == "jpeg":
                # DCT-domain 1/8 scale: the whole entropy-coded stream is still read (a truncated
                # or corrupt file fails here) at a fraction of a full decode's cost.
                im.draft("L", (max(1, width // 8), max(1, height // 8)))
            im.load()
    except Exception as exc:  # any decoder error: name the file
        raise ValueError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    return RadiographInfo(path=path, format=fmt, width=width, height=height,
                          bits_stored=16 if im.mode.startswith("I;16") else 8)


def probe_radiograph(path: str | os.PathLike[str]) -> RadiographInfo:
    """Check that ``path`` is a usable radiograph without a full-resolution decode.

    DICOM: header only (pixels deferred), with every check of :func:`read_radiograph` except the
    decode itself (a truncated PixelData is caught by its length). Image files: opened and, for
    JPEG, decoded at 1/8 scale, so corrupt and truncated files fail.

    Raises:
        ValueError: message starting with the path (:class:`RadiographError` for DICOM).

    Example:
        >>> probe_radiograph("person1_bacteria_1.jpeg").format  # doctest: +SKIP
        'jpeg'
    """
    spath = os.fspath(path)
    return _probe_dicom(spath) if is_dicom(spath) else _probe_image(spath)


def _stored_range(ds: Dataset, bits: int) -> tuple[float, float]:
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0 ** bits - 1


def _float(value: Any, default: float) -> float:
    try:
        return default if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return default


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple, MultiValue)) else value


def _window(x: np.ndarray, ds: Dataset, path: str) -> np.ndarray:
    """First WindowCenter/Width onto [0, 1]: pydicom's ``apply_windowing`` (PS3.3 C.11.2.1.2: LINEAR,
    LINEAR_EXACT, SIGMOID).

    pydicom maps the window onto the output range of the stored bits (after the rescale); it is given a
    header of only the window and a 1-bit unsigned range (``0 .. 1``), so its output is already [0, 1]
    and the file's own header is neither read for the range nor modified.
    """
    from pydicom.pixels import apply_windowing

    center, width = _float(_first(ds.get("WindowCenter")), np.nan), _float(_first(ds.get("WindowWidth")), np.nan)
    if not np.isfinite(center) or not np.isfinite(width):
        raise RadiographError(path, "unreadable", f"unusable window center/width {center}/{width}")
    window = Dataset()
    window.PhotometricInterpretation, window.BitsStored, window.PixelRepresentation = "MONOCHROME2", 1, 0
    window.WindowCenter, window.WindowWidth = center, width
    window.VOILUTFunction = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    try:
        with np.errstate(over="ignore"):  # SIGMOID far below the center: exp overflows to inf, the output to 0
            return apply_windowing(x, window).astype(np.float32)
    except ValueError as exc:  # width out of range for the function, or an unknown function
        raise RadiographError(path, "unreadable", f"VOI window center/width {center}/{width}: {exc}; read the file "
                                                  "without voi=True (the stored bit range)") from None


@_lenient
def _read_dicom(path: str, voi: bool) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi

    ds = _dcmread(path, header_only=False)
    _, photometric = _check(ds, path)
    try:
        pixels = native_pixels(ds)  # fast path for uncompressed data, same values as pixel_array
        if pixels is None:
            pixels = ds.pixel_array
    except Exception as exc:
        raise RadiographError(path, "unreadable",
                              f"pixel data cannot be decoded: {type(exc).__name__}: {exc}") from None
    if pixels.ndim != 2:
        raise RadiographError(path, "bad_shape", f"decoded pixel array has shape {pixels.shape}, expected (rows, cols)")
    bits = int(ds.get("BitsStored", 0) or 0) or pixels.dtype.itemsize * 8
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds and ds.get("ModalityLUTSequence"):
        x = apply_modality_lut(pixels, ds).astype(np.float32)
        lo, hi = 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1  # the LUT's output range
    else:
        slope, intercept = _float(ds.get("RescaleSlope"), 1.0), _float(ds.get("RescaleIntercept"), 0.0)
        x = pixels.astype(np.float32)  # exact: stored values have at most 16 bits
        if slope != 1.0:
            x *= np.float32(slope)
        if intercept != 0.0:
            x += np.float32(intercept)
        ends = [v * slope + intercept for v in _stored_range(ds, bits)]
        lo, hi = min(ends), max(ends)
    if voi and ds.get("VOILUTSequence"):
        out = apply_voi(np.rint(x).astype(np.int64), ds).astype(np.float32)
        out /= np.float32(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        np.clip(out, 0.0, 1.0, out=out)
    elif voi and "WindowCenter" in ds and "WindowWidth" in ds:
        out = _window(x, ds, path)
    else:
        if hi <= lo:
            raise RadiographError(path, "unreadable", f"empty value range {lo}..{hi} (BitsStored {bits})")
        # One division of exact operands: a 12-bit MONOCHROME1 value v gives exactly float32((4095 - v) / 4095).
        num = np.float32(hi) - x if photometric == "MONOCHROME1" else x - np.float32(lo)
        return np.clip(num / np.float32(hi - lo), 0.0, 1.0)[None]
    if photometric == "MONOCHROME1":
        out = np.float32(1.0) - out
    return out[None]


def read_radiograph(path: str | os.PathLike[str], voi: bool = False) -> np.ndarray:
    """A radiograph as a ``(1, H, W)`` float32 array in [0, 1] (air dark, bone bright).

    Args:
        path: DICOM (``.dcm`` or ``DICM`` preamble; CR/DX/DR) or a PNG/JPEG/BMP/TIFF file.
        voi: DICOM only: use the file's VOI LUT / window instead of the stored bit range (module
            docstring: why the bit range is the default).

    Raises:
        ValueError: message starting with the path (:class:`RadiographError` with ``reason``
            for DICOM: wrong modality, multi-frame or colour, undecodable, ...).

    Example:
        >>> read_radiograph("mono1_12bit.dcm")[0, 0, 0]  # doctest: +SKIP
        1.0
    """
    spath = os.fspath(path)
    if is_dicom(spath):
        return _read_dicom(spath, voi)
    return read_grey(spath)
