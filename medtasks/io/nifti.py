"""NIfTI writing that never leaves a half-written file: serialise in memory, then rename into place.

nibabel picks the format from the file name, so it cannot write to ``atomic_path``'s temporary
name; :func:`save_nifti_atomic` serialises the image itself (gzip for ``.nii.gz``, with a zero
time stamp so identical volumes give identical bytes).

Example:
    >>> save_nifti_atomic(nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)), "m.nii.gz")  # doctest: +SKIP
"""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np

from medtasks.io.atomic import atomic_path

__all__ = ["nifti_gz_bytes", "save_nifti_atomic"]


def save_nifti_atomic(img: nib.Nifti1Image, path: str | Path) -> Path:
    """Write ``img`` to ``path`` (``.nii`` or ``.nii.gz``) atomically; returns ``path``."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"{path}: a NIfTI file name ends in .nii or .nii.gz")
    data = img.to_bytes()
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def nifti_gz_bytes(data: np.ndarray, affine: np.ndarray) -> bytes:
    """``data`` as gzipped NIfTI-1 bytes: mm units, sform and qform both ``affine`` (code 1), no gzip name or
    time stamp, so the same volume always gives the same bytes (the synthetic generators rely on it)."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=6, mtime=0)


def voxel_spacing(path: str | Path) -> tuple[float, float, float]:
    """Voxel size (mm) of a NIfTI volume's first three axes, from its header (the data is not read)."""
    return tuple(float(z) for z in nib.load(str(path)).header.get_zooms()[:3])  # type: ignore[return-value]


def check_axial(path: str | Path) -> None:
    """Raise ``ValueError`` unless the volume's third voxel axis runs head-foot (an axial stack), so that
    cutting along it gives axial slices."""
    codes = nib.aff2axcodes(nib.load(str(path)).affine)
    if codes[2] not in ("S", "I"):
        raise ValueError(f"{path}: its third voxel axis runs {codes[2]!r} ({''.join(codes)}), not head-foot, so its "
                         f"slices would not be axial; reorient it first (e.g. fslreorient2std, or nibabel "
                         f"as_closest_canonical)")
