"""Index MS lesion data (ISBI 2015 longitudinal layout, or any CSV of flair/mask/subject): one row per scan.

Layout (data-notes; :mod:`medtasks.synth.ms_flair` writes the same), files at any depth under ``source``::

    trainingNN/preprocessed/trainingNN_MM_flair_pp.nii[.gz]   FLAIR (the image)
    trainingNN/masks/trainingNN_MM_mask1.nii[.gz]             rater 1 (the label, required)
    trainingNN/masks/trainingNN_MM_mask2.nii[.gz]             rater 2 (optional)

A scan is ``(subject_id, timepoint)`` = (``trainingNN``, int ``MM``) of the name (any subject
prefix, e.g. ``test03``). The release's other files (``*_{mprage,pd,t2}_pp``, the unregistered
``orig/`` volumes, names without ``_pp``) are skipped and counted in the log, not rejected.

Columns (:data:`COLUMNS`): ``subject_id``, ``timepoint``, ``flair``, ``mask`` (rater 1), ``mask2``
(``""`` if none or rejected), ``shape`` (``"181x217x181"``), ``spacing`` (mm, ``"1x1x1"``),
``n_lesion_voxels`` (rater-1 voxels equal to 1). Rows sorted by subject and timepoint.

Checks per scan: FLAIR header (3-D), each mask's header and voxels: same shape as the FLAIR,
affine equal within :data:`AFFINE_ATOL` mm, values 0/1 only. Rejection reasons: ``unreadable``
(missing file, bad header or data), ``not_3d``, ``shape_mismatch``, ``affine_mismatch``,
``not_binary``, ``no_mask`` (a FLAIR without a usable rater-1 mask), ``no_image`` (a mask without
its FLAIR), ``duplicate`` (a second file of one scan and role, e.g. ``.nii`` and ``.nii.gz``; the
shorter path is kept), ``unknown_file`` (not a NIfTI of the layout). A failed rater-1 mask drops
the scan and is reported once, by the mask; a failed rater-2 mask only empties ``mask2``.

Example:
    >>> df, rejected = index_ms_isbi("/data/isbi2015/training", progress=False)  # doctest: +SKIP
    >>> write_ms_manifest(df, "data_manifests/ms.csv", rejected)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from medtasks.data.manifest import ManifestError, Rejected, write_manifest_with_rejected
from medtasks.io.images import list_files

__all__ = ["AFFINE_ATOL", "COLUMNS", "PATH_COLUMNS", "index_ms_isbi", "parse_isbi_name", "read_ms_manifest",
           "write_ms_manifest"]

log = logging.getLogger(__name__)

COLUMNS = ("subject_id", "timepoint", "flair", "mask", "mask2", "shape", "spacing", "n_lesion_voxels")
PATH_COLUMNS = ("flair", "mask", "mask2")
AFFINE_ATOL = 1e-3  # mm
_NIFTI_RE = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
_ROLE_RE = re.compile(r"^(?P<subject>.+?)_(?P<tp>\d+)_(?:(?P<flair>flair_pp)|mask(?P<rater>[12]))$", re.IGNORECASE)
_OTHER_RE = re.compile(r"^.+?_\d+_(?:mprage|pd|t2|flair|t1)(?:_pp)?$", re.IGNORECASE)


def parse_isbi_name(name: str | Path) -> tuple[str, int, str] | None:
    """``(subject_id, timepoint, role)`` of an ISBI 2015 file name, role ``flair`` / ``mask1`` / ``mask2``.

    Example:
        >>> parse_isbi_name("training/training01/masks/training01_03_mask2.nii")
        ('training01', 3, 'mask2')
        >>> parse_isbi_name("training01_01_t2_pp.nii") is None
        True
    """
    base = re.split(r"[\\/]", str(name).strip())[-1]
    m = _ROLE_RE.match(_NIFTI_RE.sub("", base))
    if not _NIFTI_RE.search(base) or not m:
        return None
    return m.group("subject"), int(m.group("tp")), "flair" if m.group("flair") else f"mask{m.group('rater')}"


class _Bad(Exception):
    """A file that fails a check: ``args = (reason, detail)``."""


def _header(path: Path) -> tuple[object, tuple[int, ...]]:
    """``(image, 3-D shape)``; trailing singleton dimensions are dropped."""
    import nibabel as nib

    if not path.is_file():
        raise _Bad("unreadable", "no such file")
    try:
        img = nib.load(str(path), mmap=False)  # no memory map: a file rewritten meanwhile cannot crash us
        shape = tuple(int(n) for n in img.shape)
    except Exception as exc:  # any nibabel / OS error: the file, not the run, is bad
        raise _Bad("unreadable", f"{type(exc).__name__}: {exc}") from None
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise _Bad("not_3d", f"shape {'x'.join(map(str, shape))}")
    return img, shape


def _check_mask(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> int:
    """Rater-mask checks against the FLAIR; returns the voxels equal to 1."""
    img, mshape = _header(path)
    if mshape != shape:
        raise _Bad("shape_mismatch", f"mask {'x'.join(map(str, mshape))}, FLAIR {'x'.join(map(str, shape))}")
    if not np.allclose(img.affine, affine, rtol=0.0, atol=AFFINE_ATOL):
        diff = float(np.abs(np.asarray(img.affine) - affine).max())
        raise _Bad("affine_mismatch", f"affines differ by up to {diff:.4g} (tolerance {AFFINE_ATOL:g} mm)")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:
        raise _Bad("unreadable", f"{type(exc).__name__}: {exc}") from None
    ones = data == 1
    bad = ~(ones | (data == 0))
    if bad.any():
        values = np.unique(data[bad])[:5]
        raise _Bad("not_binary", f"{int(bad.sum())} voxel(s) not 0/1, e.g. {', '.join(f'{v:g}' for v in values)}")
    return int(ones.sum())


def _scan_row(subject: str, tp: int, files: dict[str, Path], rejected: Rejected) -> dict | None:
    """Check one scan; ``None`` (and the reason) when it is dropped."""
    flair = files.get("flair")
    if flair is None:
        for role in ("mask1", "mask2"):
            if role in files:
                rejected.add(files[role], "no_image", f"no FLAIR of {subject} timepoint {tp}")
        return None
    try:
        img, shape = _header(flair)
    except _Bad as exc:
        masks = ", ".join(str(files[r]) for r in ("mask1", "mask2") if r in files)
        rejected.add(flair, exc.args[0], exc.args[1] + (f"; dropped with it: {masks}" if masks else ""))
        return None
    affine = np.asarray(img.affine)
    if "mask1" not in files:
        rejected.add(flair, "no_mask", f"no {subject}_{tp:02d}_mask1 beside it" +
                     (" (only mask2; rater 1 is the label)" if "mask2" in files else ""))
        return None
    try:
        n_lesion = _check_mask(files["mask1"], shape, affine)
    except _Bad as exc:
        rejected.add(files["mask1"], exc.args[0], f"{exc.args[1]}; FLAIR {flair} dropped with it")
        return None
    mask2 = ""
    if "mask2" in files:
        try:
            _check_mask(files["mask2"], shape, affine)
            mask2 = str(files["mask2"])
        except _Bad as exc:
            rejected.add(files["mask2"], exc.args[0], f"{exc.args[1]}; the scan is kept without rater 2")
    zooms = img.header.get_zooms()[:3]
    return {"subject_id": subject, "timepoint": tp, "flair": str(flair), "mask": str(files["mask1"]), "mask2": mask2,
            "shape": "x".join(map(str, shape)), "spacing": "x".join(f"{round(float(z), 4):g}" for z in zooms),
            "n_lesion_voxels": n_lesion}


def _frame(scans: dict[tuple[str, int], dict[str, Path]], rejected: Rejected, progress: bool,
           what: str) -> pd.DataFrame:
    """Check every scan (subject, timepoint order) -> the :data:`COLUMNS` frame."""
    from tqdm.auto import tqdm

    rows = []
    for (subject, tp), files in tqdm(sorted(scans.items()), desc=f"checking {what}", unit="scan",
                                     disable=not progress, leave=False):
        row = _scan_row(subject, tp, files, rejected)
        if row is not None:
            rows.append(row)
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df = df.astype({"timepoint": "int64", "n_lesion_voxels": "int64"}).reset_index(drop=True)
    log.info("%s: %d scans of %d subjects indexed (%d with rater 2); %d file(s) rejected", what, len(df),
             df["subject_id"].nunique(), int((df["mask2"] != "").sum()), len(rejected))
    return df


def index_ms_isbi(source: str | Path, progress: bool = True) -> tuple[pd.DataFrame, Rejected]:
    """Index an ISBI-2015-layout folder -> (one row per usable scan, rejected files).

    Args:
        source: Any folder above the ``*_flair_pp`` / ``*_mask{1,2}`` files (e.g. the release's
            ``training``, or the folder holding it); searched recursively, hidden files skipped.
        progress: Show a progress bar over scans.

    Returns:
        ``(df, rejected)``: :data:`COLUMNS` (module docstring), absolute paths.

    Raises:
        FileNotFoundError: ``source`` is not a folder.

    Example:
        >>> df, rejected = index_ms_isbi("synth_ms", progress=False)  # doctest: +SKIP
        >>> df[["subject_id", "timepoint", "shape"]].iloc[0].tolist()  # doctest: +SKIP
        ['training01', 1, '96x112x64']
    """
    source = Path(source).absolute()
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder")
    rejected = Rejected()
    found: dict[tuple[str, int, str], list[Path]] = defaultdict(list)
    skipped = 0
    for path in list_files(source):
        parsed = parse_isbi_name(path.name)
        if parsed is not None:
            found[parsed].append(path)
        elif _NIFTI_RE.search(path.name) and _OTHER_RE.match(_NIFTI_RE.sub("", path.name)):
            skipped += 1  # the release's other contrasts and orig/ volumes
        else:
            rejected.add(path, "unknown_file", "not a <subject>_<MM>_flair_pp / _mask1 / _mask2 .nii[.gz] file")
    scans: dict[tuple[str, int], dict[str, Path]] = defaultdict(dict)
    for (subject, tp, role), paths in sorted(found.items()):
        keep, *others = sorted(paths, key=lambda p: (len(p.parts), len(str(p)), str(p)))
        scans[(subject, tp)][role] = keep
        for other in others:
            rejected.add(other, "duplicate", f"{subject} timepoint {tp} {role} again; {keep} is kept")
    if skipped:
        log.info("MS ISBI: %d other-contrast / orig file(s) skipped (only FLAIR and masks are used)", skipped)
    return _frame(scans, rejected, progress, "MS ISBI"), rejected


def read_ms_manifest(csv: str | Path, progress: bool = True) -> tuple[pd.DataFrame, Rejected]:
    """Check a plain CSV of scans -> (the :data:`COLUMNS` frame, rejected), like :func:`index_ms_isbi`.

    Columns: ``flair``, ``mask`` (rater 1; may be empty -> ``no_mask``), ``subject`` (or
    ``subject_id``); optional ``mask2`` and ``timepoint``. Without ``timepoint`` it is read from an
    ISBI name, else numbered 1.. per subject in row order. Relative paths start at the CSV's folder.
    A second row of one (subject, timepoint) or one FLAIR is ``duplicate`` (the first is kept).

    Raises:
        ManifestError: the file is missing or lacks a required column.

    Example:
        >>> df, rejected = read_ms_manifest("my_scans.csv", progress=False)  # doctest: +SKIP
    """
    csv = Path(csv)
    if not csv.is_file():
        raise ManifestError(f"MS manifest {csv} does not exist")
    table = pd.read_csv(csv, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table.columns = [str(c).strip().lower() for c in table.columns]
    if "subject" not in table.columns and "subject_id" in table.columns:
        table = table.rename(columns={"subject_id": "subject"})
    missing = [c for c in ("flair", "mask", "subject") if c not in table.columns]
    if missing:
        raise ManifestError(f"{csv} lacks column(s) {missing}; it has {list(table.columns)}. "
                            f"Expected a header like: flair,mask,subject[,mask2,timepoint]")
    base = csv.resolve().parent
    rejected = Rejected()
    scans: dict[tuple[str, int], dict[str, Path]] = {}
    seen: set[Path] = set()
    counter: dict[str, int] = defaultdict(int)

    def where(cell: str) -> Path:
        return Path(cell) if os.path.isabs(cell) else (base / cell).resolve()

    for line, rec in enumerate(table.to_dict("records"), start=2):
        subject, flair = str(rec["subject"]).strip(), str(rec["flair"]).strip()
        if not flair or not subject:
            rejected.add(csv, "no_image" if subject else "unreadable", f"line {line}: empty flair or subject")
            continue
        counter[subject] += 1
        tp_cell, parsed = str(rec.get("timepoint", "")).strip(), parse_isbi_name(flair)
        if re.fullmatch(r"\d+(\.0*)?", tp_cell):
            tp = int(float(tp_cell))
        else:
            tp = parsed[1] if parsed else counter[subject]
        path = where(flair)
        if (subject, tp) in scans or path in seen:
            rejected.add(path, "duplicate", f"{csv.name} line {line}: {subject} timepoint {tp} / this FLAIR again")
            continue
        seen.add(path)
        files = {"flair": path}
        for col, role in (("mask", "mask1"), ("mask2", "mask2")):
            if str(rec.get(col, "")).strip():
                files[role] = where(str(rec[col]).strip())
        scans[(subject, tp)] = files
    return _frame(scans, rejected, progress, f"MS manifest {csv.name}"), rejected


def write_ms_manifest(df: pd.DataFrame, out: str | Path, rejected: Rejected) -> tuple[Path, Path]:
    """Write ``out`` and ``<stem>.rejected.csv`` atomically, paths relative to ``out``'s folder.

    Idempotent: the same frame and rejections give the same bytes.

    Example:
        >>> write_ms_manifest(df, "data_manifests/ms.csv", rejected)  # doctest: +SKIP
        (PosixPath('data_manifests/ms.csv'), PosixPath('data_manifests/ms.rejected.csv'))
    """
    return write_manifest_with_rejected(df, out, rejected, PATH_COLUMNS, "MS manifest")
