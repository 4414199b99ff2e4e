"""Index AI CUP 2025 cardiac CT (image + label NIfTI per patient): one row per patient, the rest in ``Rejected``.

Layout (data-notes; :mod:`medtasks.synth.cardiac_ct` writes the same)::

    training_image/patientNNNN.nii.gz      CT volume (HU)
    training_label/patientNNNN_gt.nii.gz   0 background, 1 myocardium, 2 aortic valve, 3 calcification

Files are found at any depth under ``source`` (hidden files skipped), so the folder above
``training_image`` or a copy with test images in another folder works too. A file is a *label*
when its name ends in ``_gt`` or a folder between ``source`` and it has ``label`` in its name,
else an *image*; ``.nii`` and ``.nii.gz`` both count. Pairing is by the INTEGER id of the name
(``patient1`` = ``patient0001``). Two files of one role for a patient: the canonical one is kept
(``patientNNNN[_gt].nii.gz`` in ``training_image`` / ``training_label``, then the shortest path),
the others are ``duplicate``.

Columns (:data:`COLUMNS`): ``patient_id`` (``patientNNNN``), ``image`` and ``label`` (absolute;
``label`` empty for an unlabelled image kept with ``require_label=False``), ``shape`` (``XxYxZ``
voxels, e.g. ``96x96x64``), ``spacing`` (``XxYxZ`` mm from the header, e.g. ``0.8x0.8x1.5``; read
both with :func:`parse_triplet`), ``n_calcium_voxels``, ``has_calcium`` (0/1) and
``labels_present`` (sorted values in the label, e.g. ``0,1,2``); the last three are empty without
a label.

Checks, and the rejection reasons (one row per dropped patient, naming the files dropped with
it): ``unknown_file`` (not ``patientNNNN[_gt].nii[.gz]``), ``duplicate``, ``no_label`` (image
without a label while one is required), ``no_image`` (label without an image), ``unreadable``
(header or label voxels do not load, or not a 3-D volume; the file at fault), ``shape_mismatch``
(label grid size is not the image's), ``affine_mismatch`` (the two grids place some volume corner
more than ``affine_tol`` voxels apart), ``bad_label_values`` (a label value outside {0, 1, 2, 3}
or not an integer). Image voxels are not decoded (only the header is read); label voxels are.

Example:
    >>> df, rejected = index_cardiac("/data/aicup2025")  # doctest: +SKIP
    >>> write_cardiac_manifest(df, "data_manifests/cardiac.csv", rejected)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medtasks.data.manifest import Rejected, write_manifest_with_rejected
from medtasks.io.images import list_files

__all__ = ["COLUMNS", "LABEL_VALUES", "PATH_COLUMNS", "index_cardiac", "parse_triplet", "write_cardiac_manifest"]

log = logging.getLogger(__name__)

COLUMNS = ("patient_id", "image", "label", "shape", "spacing", "n_calcium_voxels", "has_calcium", "labels_present")
PATH_COLUMNS = ("image", "label")
LABEL_VALUES = (0, 1, 2, 3)  # background, myocardium, aortic valve, calcification
CALCIUM = 3
_NAME_RE = re.compile(r"^patient_?(\d+)(_gt)?\.nii(\.gz)?$", re.IGNORECASE)
_CANONICAL_DIRS = {"image": "training_image", "label": "training_label"}


def parse_triplet(text: str) -> tuple[float, float, float]:
    """``"0.8x0.8x1.5"`` (a ``shape`` / ``spacing`` cell) -> ``(0.8, 0.8, 1.5)``.

    Example:
        >>> parse_triplet("96x96x64")
        (96.0, 96.0, 64.0)
    """
    values = tuple(float(v) for v in str(text).lower().split("x"))
    if len(values) != 3:
        raise ValueError(f"{text!r} is not three 'x'-separated numbers")
    return values  # type: ignore[return-value]


def _fmt(values: tuple[float, ...]) -> str:
    return "x".join(f"{float(v):.6g}" for v in values)


def _classify(path: Path, source: Path) -> tuple[str, int] | None:
    """``(role, patient)`` of a patient NIfTI file, ``None`` for anything else."""
    m = _NAME_RE.match(path.name)
    if not m:
        return None
    in_label_dir = any("label" in part.lower() for part in path.relative_to(source).parts[:-1])
    return ("label" if m.group(2) or in_label_dir else "image"), int(m.group(1))


def _preference(path: Path, role: str, pid: int) -> tuple[bool, bool, int, str]:
    """Sort key: canonical name, canonical folder, shallow, then by name (smallest is kept)."""
    canonical = f"patient{pid:04d}{'_gt' if role == 'label' else ''}.nii.gz"
    return (path.name != canonical, path.parent.name != _CANONICAL_DIRS[role], len(path.parts), str(path))


def _scan(source: Path, rejected: Rejected) -> dict[int, dict[str, Path]]:
    """All files under ``source`` -> ``{patient: {"image": path, "label": path}}`` (unknown / duplicate rejected)."""
    found: dict[tuple[int, str], list[Path]] = {}
    for path in list_files(source):
        key = _classify(path, source)
        if key is None:
            rejected.add(path, "unknown_file", "not patientNNNN.nii[.gz] (image) or patientNNNN_gt.nii[.gz] (label)")
            continue
        found.setdefault((key[1], key[0]), []).append(path)
    patients: dict[int, dict[str, Path]] = {}
    for (pid, role), paths in sorted(found.items()):
        keep, *others = sorted(paths, key=lambda p: _preference(p, role, pid))
        for other in others:
            rejected.add(other, "duplicate", f"another {role} of patient{pid:04d}: {keep} is kept")
        patients.setdefault(pid, {})[role] = keep
    return patients


class _Drop(Exception):
    """A patient that cannot be used: ``args = (path at fault, reason, detail)``."""


def _load(path: Path, other: Path | None) -> Any:
    """The NIfTI image object with a 3-D grid; raises :class:`_Drop` (``unreadable``)."""
    import nibabel as nib

    with_it = f"; dropped with it: {other}" if other else ""
    try:
        img = nib.load(str(path))
        shape = tuple(int(v) for v in img.shape)
    except Exception as exc:  # any reader error: the file, not the run, is bad
        raise _Drop(path, "unreadable", f"{type(exc).__name__}: {exc}{with_it}") from exc
    if len(shape) < 3 or any(v != 1 for v in shape[3:]):
        raise _Drop(path, "unreadable", f"not a 3-D volume: shape {shape}{with_it}")
    return img


def _corner_offset(a: np.ndarray, b: np.ndarray, shape: tuple[int, ...]) -> float:
    """Largest distance (mm) between the positions two affines give the corners of a grid."""
    corners = np.array([[*c, 1.0] for c in itertools.product(*[(0, n - 1) for n in shape[:3]])]).T
    return float(np.linalg.norm((a @ corners - b @ corners)[:3], axis=0).max())


def _label_stats(data: np.ndarray) -> tuple[list[int], list[float], int]:
    """``(valid values present, invalid values, calcium voxels)`` of a label array."""
    values = np.unique(data)
    integral = np.isfinite(values) & (np.round(values) == values) if values.dtype.kind == "f" else \
        np.ones(values.shape, dtype=bool)
    valid = integral & np.isin(values, LABEL_VALUES)
    return ([int(v) for v in values[valid]], [float(v) for v in values[~valid]],
            int(np.count_nonzero(data == CALCIUM)))


def _row(pid: int, image: Path, label: Path | None, affine_tol: float) -> dict:
    """One manifest row; raises :class:`_Drop` when the pair is unusable."""
    img = _load(image, label)
    shape = tuple(int(v) for v in img.shape[:3])
    spacing = tuple(float(v) for v in img.header.get_zooms()[:3])
    row = {"patient_id": f"patient{pid:04d}", "image": str(image), "label": "", "shape": _fmt(shape),
           "spacing": _fmt(spacing), "n_calcium_voxels": None, "has_calcium": None, "labels_present": ""}
    if label is None:
        return row
    lab = _load(label, image)
    lab_shape = tuple(int(v) for v in lab.shape[:3])
    if lab_shape != shape:
        raise _Drop(image, "shape_mismatch", f"image {_fmt(shape)} voxels, label {_fmt(lab_shape)}; "
                                             f"dropped with it: {label}")
    offset = _corner_offset(img.affine, lab.affine, shape)
    voxel = min(spacing) if min(spacing) > 0 else 1.0
    if offset > affine_tol * voxel:
        raise _Drop(image, "affine_mismatch", f"label grid {label} is up to {offset:.4g} mm ({offset / voxel:.3g} "
                                              f"voxels) off the image's (tolerance {affine_tol:g} voxels); dropped "
                                              f"with it: {label}")
    try:
        data = np.asanyarray(lab.dataobj)
    except Exception as exc:
        raise _Drop(label, "unreadable", f"{type(exc).__name__}: {exc}; dropped with it: {image}") from exc
    present, invalid, n_calcium = _label_stats(data)
    if invalid:
        shown = ", ".join(f"{v:g}" for v in invalid[:8]) + (", ..." if len(invalid) > 8 else "")
        raise _Drop(label, "bad_label_values", f"values {shown} outside {{0, 1, 2, 3}}; dropped with it: {image}")
    row.update(label=str(label), n_calcium_voxels=n_calcium, has_calcium=int(n_calcium > 0),
               labels_present=",".join(map(str, present)))
    return row


def index_cardiac(source: str | Path, require_label: bool = True, affine_tol: float = 0.01,
                  progress: bool = True) -> tuple[pd.DataFrame, Rejected]:
    """Index an AI CUP cardiac CT folder -> (one row per usable patient, rejected files).

    Args:
        source: The folder holding ``training_image/`` and ``training_label/`` (or any folder
            with ``patientNNNN.nii.gz`` / ``patientNNNN_gt.nii.gz`` files below it).
        require_label: Reject images without a label (``no_label``); ``False`` keeps them with
            an empty ``label`` (test / predict sets). A label that fails a check drops its
            patient either way.
        affine_tol: Largest distance, in voxels of the image's finest spacing, that the image and
            label grids may place any corner of the volume apart.
        progress: Show a progress bar over patients.

    Returns:
        ``(df, rejected)``: :data:`COLUMNS` (module docstring), sorted by patient id.

    Raises:
        FileNotFoundError: ``source`` is not a folder.

    Example:
        >>> df, rejected = index_cardiac("synth_cardiac", progress=False)  # doctest: +SKIP
        >>> df.loc[0, ["patient_id", "labels_present"]].tolist()  # doctest: +SKIP
        ['patient0001', '0,1,2']
    """
    from tqdm.auto import tqdm

    source = Path(source).absolute()
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder")
    rejected = Rejected()
    patients = _scan(source, rejected)
    rows: list[dict] = []
    for pid, files in tqdm(sorted(patients.items()), desc="indexing cardiac CT", unit="patient",
                           disable=not progress, leave=False):
        image, label = files.get("image"), files.get("label")
        if image is None:
            assert label is not None  # a patient exists because one of its files does
            rejected.add(label, "no_image", f"no image patient{pid:04d}.nii.gz for this label")
            continue
        if label is None and require_label:
            rejected.add(image, "no_label", f"no label patient{pid:04d}_gt.nii.gz for this image")
            continue
        try:
            rows.append(_row(pid, image, label, affine_tol))
        except _Drop as exc:
            rejected.add(*exc.args)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    for col in ("n_calcium_voxels", "has_calcium"):
        df[col] = df[col].astype("Int64")
    labelled = df["label"] != ""
    log.info("cardiac CT: %d patients indexed (%d labelled, %d with calcium); %d file(s) rejected", len(df),
             int(labelled.sum()), int(df["has_calcium"].fillna(0).sum()), len(rejected))
    return df, rejected


def write_cardiac_manifest(df: pd.DataFrame, out: str | Path, rejected: Rejected) -> tuple[Path, Path]:
    """Write ``out`` and ``<stem>.rejected.csv`` atomically, paths relative to ``out``'s folder.

    Idempotent: the same frame and rejections give the same bytes (rows in the frame's order,
    rejections sorted by reason and path). Empty ``label`` cells stay empty.

    Example:
        >>> write_cardiac_manifest(df, "data_manifests/cardiac.csv", rejected)  # doctest: +SKIP
        (PosixPath('data_manifests/cardiac.csv'), PosixPath('data_manifests/cardiac.rejected.csv'))
    """
    return write_manifest_with_rejected(df, out, rejected, PATH_COLUMNS, "cardiac CT manifest")
