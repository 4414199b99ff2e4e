"""Where and how segmentation outputs are written: one naming scheme for every segmentation task.

In a run directory (``evaluate``), an evaluation folder and a ``predict`` folder alike, a case ``<case>``
(its name: the volume's ``case_id``, or a 2-D slice's ``<patient>_<slice>`` / file stem; the ``mask`` column of
``predictions.csv`` gives the file) has::

    masks/<case>.nii.gz          label map in the input volume's own space (NIfTI input or DICOM series)
    masks/<case>.png             0/255 mask of a 2-D image input (PNG / JPG slice)
    probabilities/<case>.nii.gz  float32 probability map(s) (``--probabilities``; a 4th axis per class)
    probabilities/<case>.png     16-bit probability of a 2-D input: value / 65535 (``--probabilities``)
    seg/<case>.dcm               DICOM Segmentation referencing the source series (DICOM input only)

A NIfTI output copies the input's affine and header (so it overlays the input in any viewer); a mask is
uint8 (label values), a probability map float32 in [0, 1].

Example:
    >>> output_path("out", "masks", "sub01_1", "nifti").as_posix()
    'out/masks/sub01_1.nii.gz'
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medtasks.io.atomic import atomic_path
from medtasks.io.nifti import save_nifti_atomic

__all__ = ["MASKS", "PROBABILITIES", "DICOM_SEG", "SUFFIX", "output_path", "save_label_nifti", "save_probability_nifti",
           "save_mask_png", "save_probability_png", "read_probability_png"]

MASKS, PROBABILITIES, DICOM_SEG = "masks", "probabilities", "seg"
SUFFIX = {"nifti": ".nii.gz", "png": ".png", "dicom": ".dcm"}
PNG_SCALE = 65535


def output_path(out_dir: str | Path, kind: str, case: str, fmt: str) -> Path:
    """``<out_dir>/<kind>/<case><suffix>`` (kind: masks / probabilities / seg; fmt: nifti / png / dicom)."""
    if kind not in (MASKS, PROBABILITIES, DICOM_SEG):
        raise ValueError(f"output kind {kind!r}: use {MASKS}, {PROBABILITIES} or {DICOM_SEG}")
    return Path(out_dir) / kind / f"{case}{SUFFIX[fmt]}"


def _like(data: np.ndarray, reference: str | Path, dtype: type) -> nib.Nifti1Image:
    ref = nib.load(str(reference))
    if tuple(data.shape[:3]) != tuple(ref.shape[:3]):
        raise ValueError(f"output {data.shape[:3]} does not match the input volume {reference} {ref.shape[:3]}")
    header = ref.header.copy()
    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), ref.affine, header)
    img.set_data_dtype(dtype)
    img.header.set_slope_inter(1.0, 0.0)
    return img


def save_label_nifti(labels: np.ndarray, reference: str | Path, path: str | Path) -> Path:
    """``labels`` (``(x, y, z)`` integers) as uint8 NIfTI with ``reference``'s affine and header."""
    return save_nifti_atomic(_like(labels, reference, np.uint8), path)


def save_probability_nifti(prob: np.ndarray, reference: str | Path, path: str | Path) -> Path:
    """``prob`` (``(x, y, z)`` or ``(x, y, z, classes)`` in [0, 1]) as float32 NIfTI with ``reference``'s affine."""
    return save_nifti_atomic(_like(prob, reference, np.float32), path)


def save_mask_png(mask: np.ndarray, path: str | Path) -> Path:
    """A boolean ``(H, W)`` mask as an 8-bit 0/255 PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(mask, bool).astype(np.uint8) * 255).save(tmp, format="PNG")
    return path


def save_probability_png(prob: np.ndarray, path: str | Path) -> Path:
    """A ``(H, W)`` probability map as a 16-bit PNG, ``round(p * 65535)`` (1.5e-5 steps; viewers open it)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.rint(np.clip(np.asarray(prob, np.float64), 0.0, 1.0) * PNG_SCALE).astype(np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(values).save(tmp, format="PNG")
    return path


def read_probability_png(path: str | Path) -> np.ndarray:
    """The float32 probabilities of :func:`save_probability_png`'s file."""
    from PIL import Image

    with Image.open(path) as im:
        return (np.asarray(im, dtype=np.float64) / PNG_SCALE).astype(np.float32)
