"""DICOM series folders -> checked 3-D volumes (float32 array + RAS affine), ordered by position.

MONAI's ``PydicomReader`` stacks slices by InstanceNumber and measures the slice spacing as the mean
``|delta IPP[2]|``. After anonymisation or re-export InstanceNumber often does not follow position, and
the volume comes back scrambled, with a wrong affine, and nothing fails. Here:

- files are grouped by SeriesInstanceUID: a folder holding several series gives several volumes;
- slices are ordered by their position along the plane normal (:mod:`medtasks.io.dicom_geometry`), and
  the slice spacing comes from those sorted positions;
- a series whose geometry cannot make one regular grid is rejected with a :class:`SeriesError` reason
  instead of being read (the tolerances are the module constants below);
- values are the rescaled ones of :func:`medtasks.io.dicom.read_hu` (any modality), as float32.

The array has MONAI's ``PydicomReader`` axis order (its default ``swap_ij=True``): ``(i, j, k)`` =
(column index, row index, slice), so ``nib.Nifti1Image(volume.array, volume.affine)`` is right. Affine
columns (LPS, then x and y negated for RAS): row cosine * column spacing, column cosine * row spacing,
normal * slice spacing; origin the IPP of the first sorted slice.

Example:
    >>> volumes, rejected = read_series_folder("dicom/subject01")  # doctest: +SKIP
    >>> for v in volumes:  # doctest: +SKIP
    ...     save_series_nifti(v, f"out/{v.name}.nii.gz")
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import nibabel as nib
import numpy as np

from medtasks.io.dicom import DicomReadError, _dcmread, _lenient, read_hu
from medtasks.io.dicom_geometry import orientation_axes, slice_position
from medtasks.io.nifti import save_nifti_atomic
from medtasks.io.radiograph import is_dicom

__all__ = ["ORIENTATION_TOL", "SPACING_ABS_TOL", "SPACING_REL_TOL", "SHEAR_TOL_PIXELS", "REASONS", "SeriesError",
           "SeriesVolume", "read_series", "read_series_files", "read_series_folder", "save_series_nifti"]

# Largest difference of any ImageOrientationPatient component between slices of one series (~0.06 degrees):
# scanners repeat the same IOP to 6+ decimals; a localizer or a second stack differs by far more.
ORIENTATION_TOL = 1e-3
# A gap between neighbouring slices may differ from the median gap by max(SPACING_ABS_TOL mm,
# SPACING_REL_TOL * median gap). 1% keeps the accumulated error of a 100-slice stack under one slice;
# 0.01 mm absorbs IPP rounding (written to 0.001 mm or finer) for thin slices. Gaps under
# SPACING_ABS_TOL are duplicate positions.
SPACING_ABS_TOL = 0.01
SPACING_REL_TOL = 0.01
# Slice origins may drift within the slice plane by at most this fraction of the smaller pixel spacing
# (a gantry-tilted stack drifts by spacing * tan(tilt) per slice and cannot be written without a shear).
SHEAR_TOL_PIXELS = 0.1
# Pixel spacings of the slices of one series may differ by this much (mm).
PIXEL_SPACING_TOL = 1e-3

_FIXES: dict[str, str] = {
    "unreadable": "the file is not readable DICOM or its pixels cannot be decoded; re-export or remove it",
    "no_pixel_data": "the file is not an image (report, presentation state, DICOMDIR); it is skipped",
    "multi_frame": "multi-frame (enhanced) DICOM is not supported; convert the series with dcm2niix",
    "missing_tag": "the series lacks a tag needed to place its slices; re-export it with full headers",
    "mixed_series": "pass the files of one SeriesInstanceUID, or use read_series_files to split them",
    "mixed_shape": "the slices differ in Rows/Columns or PixelSpacing; export each acquisition as its own series",
    "mixed_orientation": "the series mixes slice orientations (e.g. localizers stored with it); "
                         "remove the odd slices or re-export the series",
    "single_slice": "a volume needs at least two slices; add the missing slices or leave the series out",
    "duplicate_position": "two slices lie at the same position (a repeat or a copied file); remove one",
    "uneven_spacing": "the gaps between slices differ (a slice missing, or variable spacing); re-export the "
                      "complete series, or resample it (e.g. dcm2niix) if the spacing really varies",
    "sheared": "slice origins drift within the slice plane (gantry tilt); convert with dcm2niix, which "
               "corrects the tilt",
}
REASONS: tuple[str, ...] = tuple(_FIXES)


class SeriesError(Exception):
    """A series (or one of its files) cannot be made into a volume.

    Attributes:
        path: The folder of the series, or the offending file.
        reason: Short code for ``rejected.csv``, one of :data:`REASONS`.
        detail: What went wrong, naming the files or positions concerned.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str, detail: str) -> None:
        if reason not in _FIXES:
            raise ValueError(f"unknown SeriesError reason {reason!r}; valid: {REASONS}")
        self.path, self.reason, self.detail = str(path), reason, detail
        super().__init__(f"{self.path}: {detail} [{reason}]; fix: {_FIXES[reason]}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.reason, self.detail))

    def as_row(self) -> tuple[str, str, str]:
        """``(path, reason, detail)`` for ``rejected.csv``."""
        return (self.path, self.reason, f"{self.detail}; fix: {_FIXES[self.reason]}")


@dataclass
class SeriesVolume:
    """One series as a volume.

    Attributes:
        series_instance_uid: The series' SeriesInstanceUID.
        name: Short file-system-safe name (SeriesNumber and SeriesDescription), unique within one read.
        array: float32 ``(columns, rows, slices)`` rescaled values.
        affine: 4x4 voxel -> RAS (mm) matrix.
        files: Slice files in array (``k``) order.
        positions: Slice positions (mm) along the normal, ascending.
        meta: Non-identifying header values (no patient fields).
    """

    series_instance_uid: str
    name: str
    array: np.ndarray
    affine: np.ndarray
    files: tuple[str, ...]
    positions: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along ``i, j, k``: column spacing, row spacing, slice spacing."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def to_nifti(self) -> nib.Nifti1Image:
        """NIfTI-1 image, mm units, sform and qform both the affine (code 1, scanner)."""
        img = nib.Nifti1Image(self.array, self.affine)
        img.header.set_xyzt_units("mm", "sec")
        img.set_qform(self.affine, code=1)
        img.set_sform(self.affine, code=1)
        return img


@dataclass
class _Slice:
    path: str
    series_uid: str
    header: dict[str, Any]


_META_TAGS = ("StudyInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "ProtocolName")


@_lenient
def _read_slice_header(path: str) -> _Slice:
    """The geometry tags of one file (pixels deferred, not decoded); ``SeriesError`` for non-image files."""
    try:
        ds = _dcmread(path, defer_size=1024)
    except DicomReadError as exc:
        raise SeriesError(path, "unreadable", exc.detail) from exc
    if "PixelData" not in ds:
        raise SeriesError(path, "no_pixel_data", f"no PixelData ({ds.get('SOPClassUID', 'unknown SOP class')})")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 0
    if frames != 1:
        raise SeriesError(path, "multi_frame", f"NumberOfFrames is {ds.get('NumberOfFrames')!r}")
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if not uid:
        raise SeriesError(path, "missing_tag", "no SeriesInstanceUID, so the file cannot be put in a series")
    hdr = {k: ds.get(k) for k in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows",
                                  "Columns", "InstanceNumber")}
    hdr.update({k: str(ds.get(k, "") or "") for k in _META_TAGS})
    return _Slice(path, uid, hdr)


def _names(paths: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(os.path.basename(p) for p in paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _folder(paths: Sequence[str]) -> str:
    return os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])


def _finite(values: Any, n: int) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"not numeric: {values!r}") from exc
    if len(out) != n or not np.isfinite(out).all():
        raise ValueError(f"needs {n} finite numbers: {values!r}")
    return out


def _geometry(slices: list[_Slice], where: str) -> tuple[list[_Slice], np.ndarray, np.ndarray, tuple[int, int]]:
    """Sorted slices, their positions and the LPS affine; ``SeriesError`` when they make no regular grid."""
    missing: list[str] = []
    axes, ipp, spacing = [], [], []
    for s in slices:
        h = s.header
        try:
            a = orientation_axes(h["ImageOrientationPatient"] or ())
            p, sp = _finite(h["ImagePositionPatient"], 3), _finite(h["PixelSpacing"], 2)
            if min(sp) <= 0 or h["Rows"] is None or h["Columns"] is None:
                raise ValueError("no Rows/Columns or a PixelSpacing <= 0")
        except ValueError:
            missing.append(s.path)
            continue
        axes.append(a)
        ipp.append(p)
        spacing.append(sp)
    if missing:
        raise SeriesError(where, "missing_tag", f"no usable ImageOrientationPatient / ImagePositionPatient / "
                                                f"PixelSpacing / Rows / Columns in {_names(missing)}")
    shapes = sorted({(int(s.header["Rows"]), int(s.header["Columns"])) for s in slices})
    spacing_arr = np.asarray(spacing)
    if len(shapes) > 1 or np.ptp(spacing_arr, axis=0).max() > PIXEL_SPACING_TOL:
        odd = [s.path for s, sp in zip(slices, spacing_arr) if (int(s.header["Rows"]), int(s.header["Columns"]))
               != shapes[0] or np.abs(sp - spacing_arr[0]).max() > PIXEL_SPACING_TOL]
        raise SeriesError(where, "mixed_shape", f"Rows x Columns {shapes}, PixelSpacing from "
                                                f"{spacing_arr.min(0).tolist()} to {spacing_arr.max(0).tolist()}; "
                                                f"e.g. {_names(odd or [s.path for s in slices])}")
    iop = np.asarray([a[0] + a[1] for a in axes])
    odd = [s.path for s, v in zip(slices, iop) if np.abs(v - iop[0]).max() > ORIENTATION_TOL]
    if odd:
        raise SeriesError(where, "mixed_orientation", f"{len(odd)} of {len(slices)} slices differ from "
                                                      f"ImageOrientationPatient {iop[0].round(4).tolist()} of "
                                                      f"{os.path.basename(slices[0].path)} by more than "
                                                      f"{ORIENTATION_TOL}: {_names(odd)}")
    if len(slices) < 2:
        raise SeriesError(where, "single_slice", f"only {_names([s.path for s in slices])}")
    row, col, normal = (np.asarray(v) for v in axes[0])
    pos = np.asarray([slice_position(axes[0][2], p) for p in ipp])
    order = np.argsort(pos, kind="stable")
    slices, pos, ipp_arr = [slices[i] for i in order], pos[order], np.asarray(ipp)[order]
    gaps = np.diff(pos)
    dup = np.flatnonzero(gaps < SPACING_ABS_TOL)
    if dup.size:
        pairs = "; ".join(f"{os.path.basename(slices[i].path)} and {os.path.basename(slices[i + 1].path)} at "
                          f"{pos[i]:.3f} mm" for i in dup[:4])
        raise SeriesError(where, "duplicate_position", f"{dup.size} pair(s) of slices share a position along the "
                                                       f"normal: {pairs}")
    median = float(np.median(gaps))
    tol = max(SPACING_ABS_TOL, SPACING_REL_TOL * median)
    bad = np.flatnonzero(np.abs(gaps - median) > tol)
    if bad.size:
        where_gaps = "; ".join(f"{gaps[i]:.3f} mm between {os.path.basename(slices[i].path)} ({pos[i]:.3f}) and "
                               f"{os.path.basename(slices[i + 1].path)} ({pos[i + 1]:.3f})" for i in bad[:4])
        raise SeriesError(where, "uneven_spacing", f"median gap {median:.3f} mm (tolerance {tol:.3f} mm), but "
                                                   f"{where_gaps}")
    offsets = ipp_arr - ipp_arr[0]
    drift = np.linalg.norm(offsets - np.outer(offsets @ normal, normal), axis=1)
    shear_tol = SHEAR_TOL_PIXELS * float(spacing_arr[0].min())
    if drift.max() > shear_tol:
        k = int(np.argmax(drift))
        raise SeriesError(where, "sheared", f"slice origins drift {drift.max():.3f} mm within the slice plane "
                                            f"(tolerance {shear_tol:.3f} mm), e.g. {os.path.basename(slices[k].path)}")
    slice_spacing = (pos[-1] - pos[0]) / (len(pos) - 1)
    row_spacing, col_spacing = spacing_arr[0]
    affine = np.eye(4)
    affine[:3, 0] = row * col_spacing
    affine[:3, 1] = col * row_spacing
    affine[:3, 2] = normal * slice_spacing
    affine[:3, 3] = ipp_arr[0]
    return slices, pos, affine, shapes[0]


def _series_name(header: dict[str, Any], uid: str) -> str:
    parts = [header.get("SeriesNumber", ""), header.get("SeriesDescription", "") or header.get("ProtocolName", "")]
    name = re.sub(r"[^A-Za-z0-9.-]+", "_", "_".join(p for p in parts if p)).strip("_.")[:48]
    return name or f"series_{uid.rsplit('.', 1)[-1][-8:]}"


def _read_volume(slices: list[_Slice], where: str) -> SeriesVolume:
    slices, pos, affine_lps, (rows, cols) = _geometry(slices, where)
    array = np.empty((cols, rows, len(slices)), np.float32)
    for k, s in enumerate(slices):
        try:
            values = read_hu(s.path, modality=None)
        except DicomReadError as exc:
            raise SeriesError(where, "unreadable", f"slice {exc}") from exc
        if values.shape != (rows, cols):
            raise SeriesError(where, "mixed_shape", f"{s.path} decodes to {values.shape}, not {(rows, cols)}")
        array[:, :, k] = values.T
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps  # LPS -> RAS
    h = slices[0].header
    number = h["SeriesNumber"]
    meta = {"series_instance_uid": slices[0].series_uid, "study_instance_uid": h["StudyInstanceUID"],
            "modality": h["Modality"], "series_number": int(number) if number.lstrip("-").isdigit() else None,
            "series_description": h["SeriesDescription"], "n_slices": len(slices)}
    return SeriesVolume(slices[0].series_uid, _series_name(h, slices[0].series_uid), array, affine,
                        tuple(s.path for s in slices), pos, meta)


def read_series(files: Iterable[str | os.PathLike[str]]) -> SeriesVolume:
    """The files of ONE series as a volume.

    Raises:
        SeriesError: any file unusable, the files span several SeriesInstanceUIDs (``mixed_series``), or the
            geometry checks fail (see :data:`REASONS`).
    """
    paths = [os.fspath(p) for p in files]
    if not paths:
        raise ValueError("read_series: no files given; pass the DICOM files of one series")
    slices = [_read_slice_header(p) for p in paths]
    where = _folder(paths)
    uids = sorted({s.series_uid for s in slices})
    if len(uids) > 1:
        raise SeriesError(where, "mixed_series", f"{len(uids)} SeriesInstanceUIDs: {', '.join(uids[:4])}")
    return _read_volume(slices, where)


def read_series_files(files: Iterable[str | os.PathLike[str]]
                      ) -> tuple[list[SeriesVolume], list[tuple[str, str, str]]]:
    """Group ``files`` by SeriesInstanceUID and read each series; problems are returned, not raised.

    Returns:
        ``(volumes, rejected)``: the good series ordered by (SeriesNumber, UID), with unique ``name``s; and
        one ``(path, reason, detail)`` row per unusable file or rejected series (``path`` the series'
        folder; ``detail`` names the SeriesInstanceUID), for ``rejected.csv``.
    """
    groups: dict[str, list[_Slice]] = {}
    rejected: list[tuple[str, str, str]] = []
    for p in sorted(os.fspath(f) for f in files):
        try:
            s = _read_slice_header(p)
        except SeriesError as exc:
            rejected.append(exc.as_row())
            continue
        groups.setdefault(s.series_uid, []).append(s)
    volumes: list[SeriesVolume] = []
    for uid, slices in groups.items():
        where = _folder([s.path for s in slices])
        try:
            volumes.append(_read_volume(slices, where))
        except SeriesError as exc:
            label = slices[0].header["SeriesDescription"] or slices[0].header["SeriesNumber"]
            rejected.append(SeriesError(exc.path, exc.reason, f"series {uid} ({label}): {exc.detail}").as_row())
    volumes.sort(key=lambda v: (v.meta["series_number"] is None, v.meta["series_number"] or 0, v.series_instance_uid))
    seen: set[str] = set()
    for v in volumes:
        if v.name in seen:
            v.name = f"{v.name}_{v.series_instance_uid.rsplit('.', 1)[-1][-8:]}"
        seen.add(v.name)
    return volumes, rejected


def read_series_folder(folder: str | os.PathLike[str]) -> tuple[list[SeriesVolume], list[tuple[str, str, str]]]:
    """Every series among the DICOM files directly inside ``folder`` (:func:`read_series_files`).

    Files that are not DICOM (no ``.dcm``/``.dicom`` suffix and no ``DICM`` magic) and ``DICOMDIR`` are
    skipped silently: they are no series' slices.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; pass the folder that holds the DICOM files of a series")
    files = [p for p in root.iterdir() if p.is_file() and p.name.upper() != "DICOMDIR" and is_dicom(p)]
    return read_series_files(files)


def save_series_nifti(volume: SeriesVolume, path: str | os.PathLike[str]) -> Path:
    """Write ``volume`` as NIfTI (``.nii`` / ``.nii.gz``) atomically (:func:`medtasks.io.nifti.save_nifti_atomic`)."""
    return save_nifti_atomic(volume.to_nifti(), Path(path))
