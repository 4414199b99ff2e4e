"""Stored DICOM pixel values -> Hounsfield units: the rescale (or Modality LUT) and the RSNA wrap fix.

:func:`hu_map` decides, for one slice, the linear map ``HU = pixels * slope + intercept`` that
:mod:`medtasks.io.dicom` returns with the stored pixels (pipelines that resample first apply it after
resampling); :func:`stored_to_hu` applies it.

Example:
    >>> px, b = fix_wrapped_pixels(np.array([3096, 40], np.uint16), 0, 12, 0.0)
    >>> stored_to_hu(px, 1.0, b).tolist()
    [-1000.0, 40.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fix_wrapped_pixels", "hu_map", "stored_to_hu"]


def hu_map(ds: Any, pixels: np.ndarray, slope: float | None, intercept: float | None,
           modality: str) -> tuple[np.ndarray, float, float]:
    """``(pixels, slope, intercept)`` of one slice from its RescaleSlope / RescaleIntercept (None = absent).

    - No rescale tags but a Modality LUT Sequence: pydicom's ``apply_modality_lut`` (float32 HU, slope 1,
      intercept 0).
    - Missing slope / intercept default to 1 / 0.
    - The RSNA wrap-around (:func:`fix_wrapped_pixels`) is undone only where it is that quirk: CT, slope 1,
      unsigned 12-bit with an intercept near 0; an MR slice with another slope, say, stays as stored.
    """
    if slope is None and intercept is None and "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(pixels, ds), dtype=np.float32), 1.0, 0.0
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    # Intercept first: the other tags are only looked up for candidate files.
    if (intercept > -100 and slope == 1.0 and modality.strip().upper() == "CT"
            and _needs_wrap_fix(ds.get("PixelRepresentation"), ds.get("BitsStored"), intercept)):
        pixels, intercept = fix_wrapped_pixels(pixels, 0, 12, intercept)
    return pixels, slope, intercept


def _needs_wrap_fix(pixel_representation: int | None, bits_stored: int | None, intercept: float) -> bool:
    return pixel_representation == 0 and bits_stored == 12 and intercept > -100


def _unwrap_inplace(pixels: np.ndarray) -> None:
    pixels += 1000
    # Multiplying by the boolean mask is ~20x faster than masked assignment p[p >= 4096] -= 4096.
    pixels -= (pixels >= 4096) * pixels.dtype.type(4096)


def fix_wrapped_pixels(
    pixels: np.ndarray, pixel_representation: int, bits_stored: int, intercept: float
) -> tuple[np.ndarray, float]:
    """Undo the RSNA ICH wrap-around of unsigned 12-bit pixels.

    Some RSNA slices store signed values as unsigned 12-bit with an intercept near 0,
    so air wraps to ~3096. The widely used public fix: when PixelRepresentation is 0,
    BitsStored is 12 and RescaleIntercept > -100, add 1000, subtract 4096 from values
    >= 4096 and use intercept -1000. Other files are returned unchanged.

    Args:
        pixels: Stored pixel values (not modified).
        pixel_representation: DICOM PixelRepresentation (0 unsigned, 1 signed).
        bits_stored: DICOM BitsStored.
        intercept: DICOM RescaleIntercept.

    Returns:
        ``(pixels, intercept)`` to use for ``HU = pixels * slope + intercept``. Fixed
        integer input comes back as int32 (no overflow), float input keeps its dtype.

    Example:
        >>> px, b = fix_wrapped_pixels(np.array([3096, 40], np.uint16), 0, 12, 0.0)
        >>> (px + int(b)).tolist()
        [-1000, 40]
    """
    if not _needs_wrap_fix(pixel_representation, bits_stored, intercept):
        return pixels, intercept
    out = pixels.astype(np.int32 if np.issubdtype(pixels.dtype, np.integer) else pixels.dtype)
    _unwrap_inplace(out)
    return out, -1000.0


def stored_to_hu(pixels: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    """``pixels * slope + intercept`` as float32, the conversion fused with the first arithmetic step."""
    if slope != 1.0:
        hu = np.multiply(pixels, np.float32(slope), dtype=np.float32)
        if intercept != 0.0:
            hu += np.float32(intercept)
        return hu
    if intercept != 0.0:
        return np.add(pixels, np.float32(intercept), dtype=np.float32)
    return pixels.astype(np.float32)
