"""Pixel data of uncompressed slices straight from the file's buffer (the hot path of CT reading).

``pydicom``'s ``Dataset.pixel_array`` spends more time in its per-call option handling than a
512x512 uncompressed slice takes to copy; :func:`native_pixels` returns the same array (a test
checks bit-identity on every encoding the synthetic writer and pydicom's test files use) and
``None`` for anything else (compressed, big endian, multi-frame, colour), where pydicom decodes.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

__all__ = ["native_pixels"]

# Uncompressed little-endian transfer syntaxes: the pixel buffer is the array.
_NATIVE_LE = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"})
_PIXEL_MODULE = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation")


def _raw_us(ds: Dataset, keyword: str, default: int | None = None) -> int:
    """An unsigned-short (US) tag's value read from its raw little-endian bytes (~1 us instead of
    pydicom's ~15 us conversion); ``default`` when absent, TypeError when absent without one."""
    elem = ds.get_item(keyword, keep_deferred=True)
    if elem is None:
        if default is None:
            raise TypeError(f"{keyword} missing")
        return default
    value = elem.value
    if isinstance(value, bytes):
        if len(value) != 2:
            raise ValueError(f"{keyword}: {len(value)} bytes, expected 2")
        return int.from_bytes(value, "little")
    return int(value)


def native_pixels(ds: Dataset) -> np.ndarray | None:
    """The pixel array of an uncompressed little-endian, single-frame, single-sample 8/16-bit
    slice straight from its buffer, or None where pydicom's decoder framework must be used.

    Same values as ``ds.pixel_array`` (pydicom's default ``correct_unused_bits`` included: bits
    above BitsStored are cleared, or sign-extended for signed data), without its per-call
    option handling, which costs more than the decode of a 512x512 slice (a test checks the
    equality on every encoding the synthetic writer and pydicom's test files use).
    """
    meta = getattr(ds, "file_meta", None)
    tsyntax = None if meta is None else meta.get("TransferSyntaxUID")
    if tsyntax is None or str(tsyntax) not in _NATIVE_LE:
        return None
    try:
        rows, cols, allocated, stored, pixrep = (_raw_us(ds, k) for k in _PIXEL_MODULE)
        samples, frames = _raw_us(ds, "SamplesPerPixel", 1), ds.get("NumberOfFrames", 1)
        if samples != 1 or int(frames or 1) != 1 or pixrep not in (0, 1):
            return None
    except (TypeError, ValueError):
        return None
    signed = pixrep == 1
    if allocated not in (8, 16) or not 0 < stored <= allocated:
        return None
    buf = ds.PixelData
    n = rows * cols * (allocated // 8)
    if not isinstance(buf, (bytes, bytearray)) or len(buf) not in (n, n + 1):
        return None  # short or odd buffer: let pydicom raise its own error
    dtype = np.dtype(("<i" if signed else "<u") + str(allocated // 8))
    view = np.frombuffer(buf, dtype=dtype, count=rows * cols).reshape(rows, cols)
    shift = allocated - stored
    if not shift:
        return view.copy()
    if not signed:  # clear the unused high bits: one pass, and it makes the writeable copy
        return np.bitwise_and(view, dtype.type((1 << stored) - 1))
    arr = np.left_shift(view, shift)  # sign-extend from bit ``stored - 1``
    return np.right_shift(arr, shift, out=arr)
