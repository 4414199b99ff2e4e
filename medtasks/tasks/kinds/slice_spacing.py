"""Pixel spacing of each 2-D segmentation case, so that HD95 / ASSD / NSD come in mm and one run never mixes units.

A case's spacing is a :class:`CaseSpacing`: ``(row_mm, col_mm)`` of its native grid (the grid the
metrics are computed at), where it came from, and, when known, the ``(rows, cols)`` grid it belongs to
so the evaluation can refuse a slice whose pixels are not that grid's (a resized export would put
the header's millimetres on the wrong pixels).

:func:`axial_slice_spacing` reads it from a NIfTI header: nibabel's ``get_zooms()`` are per array axis
``(x, y, z)``, and :func:`medtasks.transforms.slicing.axial_slice` returns ``data[:, :, k].T`` (rows = y,
columns = x), so the slice's spacing is ``(zooms[1], zooms[0])`` and its grid ``(shape[1], shape[0])``.

:func:`resolve_units` makes the run's unit one: mm when every case has a spacing, else pixels for all
cases, with a note saying why (a summary over a mixture of mm and pixels would mean nothing).

Example:
    >>> resolve_units([CaseSpacing((0.5, 0.5), "config"), None])[1], resolve_units([None])
    ('px', ([None], 'px', None))
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import NamedTuple

__all__ = ["CaseSpacing", "axial_slice_spacing", "resolve_units", "UNIT_TO_MM"]

UNIT_TO_MM = {"mm": 1.0, "meter": 1000.0, "micron": 1e-3, "unknown": 1.0}   # NIfTI xyzt units; unknown = mm


class CaseSpacing(NamedTuple):
    """``mm``: (row, col) pixel size in mm; ``source``: ``"nifti_header"`` or ``"config"``; ``grid``: the
    ``(rows, cols)`` the spacing belongs to, or None when any grid is meant (a configured spacing)."""

    mm: tuple[float, float]
    source: str
    grid: tuple[int, int] | None = None


def axial_slice_spacing(path: str | Path) -> CaseSpacing | None:
    """In-plane spacing of the axial slices of the NIfTI volume at ``path`` from its header (cached per file;
    only the header is read), or None when the file is missing or its spacing is not a positive size."""
    return _header_spacing(str(path))


@functools.lru_cache(maxsize=1024)
def _header_spacing(path: str) -> CaseSpacing | None:
    import nibabel as nib

    if not path or not Path(path).is_file():
        return None
    try:
        img = nib.load(path)
        zooms, shape = img.header.get_zooms(), img.shape
        scale = UNIT_TO_MM.get(img.header.get_xyzt_units()[0], None)
    except Exception:   # an unreadable header: the caller falls back to the configured spacing
        return None
    if scale is None or len(zooms) < 3 or len(shape) < 3:
        return None
    # Headers store float32 (0.508 reads 0.50800002); 1e-6 mm rounding gives back the written value.
    row_mm, col_mm = round(float(zooms[1]) * scale, 6), round(float(zooms[0]) * scale, 6)
    if not all(math.isfinite(v) and v > 0 for v in (row_mm, col_mm)):
        return None
    return CaseSpacing((row_mm, col_mm), "nifti_header", (int(shape[1]), int(shape[0])))


def resolve_units(spacings: list[CaseSpacing | None]) -> tuple[list[CaseSpacing | None], str, str | None]:
    """``(spacings, unit, note)``: unchanged with unit ``"mm"`` when every case has one; otherwise all None
    (pixels, ``"px"``) with a note when only some had one (None when none had: plain pixels)."""
    have = sum(s is not None for s in spacings)
    if spacings and have == len(spacings):
        return spacings, "mm", None
    note = None
    if have:
        note = (f"pixel spacing known for {have} of {len(spacings)} cases: HD95 / ASSD in pixels for all "
                "(set eval.pixel_spacing_mm for the rest)")
    return [None] * len(spacings), "px", note
