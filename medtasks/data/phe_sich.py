"""Index PHE-SICH-CT-IDS in its own layout: one row per slice, every unusable file in ``Rejected``.

Layout (data-notes; :mod:`medtasks.synth.phe_sich` writes the same). Folders ``Subdataset{A,B,C}*``
in ``source`` or one level below, files at any depth in them; a file is a mask when a folder
between its subset and itself starts with ``label`` or ``mask``::

    SubdatasetA_NIFIT/NIFIT/{set,label}/NNNN.nii.gz           per patient: nifti_volume / nifti_mask
    SubdatasetB_JPG/{set,label}/{image,label}N/NNNN_SS.jpg    jpg / jpg_mask
    SubdatasetC_PNG/{set,label}/{image,label}N/NNNN_SS.png    image / mask
    SubdatasetC_PNG/annotation/annotationN/NNNN_SS.xml        xml (VOC, class "a" = PHE)
    MedInfo.csv | MedInfo.xlsx                                per patient (CSV preferred)

Pairing is by the INTEGER patient id and slice index of the file name: ``0013_02``, ``013_02``
and ``13_02`` are one slice (the release's ``013_xx.xml`` quirk pairs). Two files of one kind for
a slice: the canonical name (``0013_02``) is kept, else the first sorted; the other is
``duplicate``. A numbered folder (``image13``) naming another patient than its file: ``id_mismatch``.

Row columns: :data:`SLICE_COLUMNS`, then MedInfo's per-patient fields joined by patient id, under
canonical names (:data:`MEDINFO_FIELDS`: ``sex``, ``age``, ``hemorrhage_type``, ``hematoma_expansion``, for
``medtasks evaluate --by``). Only those are kept: any other MedInfo column (a name, a birth date, a hospital
number ...) never enters a manifest; the names of the columns left out are logged.

``has_phe`` = 1 when the XML has >= 1 ``<object>`` (the notes' label); without XML
it comes from the mask, without both it is empty. ``boxes`` = JSON ``[[xmin,ymin,xmax,ymax],..]``
(``"[]"`` negative, ``""`` no XML). ``mask_pixels`` = non-zero mask pixels (masks are decoded,
images only opened for their header). ``warning`` = ``;``-joined tokens of a kept row:
``mask_disagrees`` (XML and mask disagree on PHE present; has_phe follows the XML),
``size_mismatch`` (XML ``<size>`` is not the PNG's), ``no_annotation`` / ``no_mask`` (not required).

Rejection reasons: ``no_image`` (nothing in SubdatasetC_PNG/set to pair with), ``no_annotation`` /
``no_mask`` (no usable XML / mask and it is required), ``bad_xml``, ``unreadable``, ``bad_shape``
(mask size is not the image's), ``duplicate``, ``bad_name``, ``id_mismatch``, ``unknown_file``;
:func:`read_multilabel_csv` adds ``bad_label`` and ``no_label``. A dropped slice is reported once,
by its image, naming the files dropped with it.

Example:
    >>> df, rejected = index_phe_sich("/data/PHE-SICH-CT-IDS", require=("xml",))  # doctest: +SKIP
    >>> write_phe_manifest(df, "data_manifests/phe.csv", rejected)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from medtasks.data.manifest import ManifestError, Rejected, write_manifest_with_rejected
from medtasks.io.voc import VocError, read_voc

__all__ = ["MULTILABELS", "PATH_COLUMNS", "SLICE_COLUMNS", "index_phe_sich", "parse_slice_name",
           "read_multilabel_csv", "write_phe_manifest"]

log = logging.getLogger(__name__)

SLICE_COLUMNS = ("patient_id", "slice_index", "image", "mask", "xml", "has_phe", "n_boxes", "boxes", "mask_pixels",
                 "width", "height", "jpg", "jpg_mask", "nifti_volume", "nifti_mask", "warning")
PATH_COLUMNS = ("image", "mask", "xml", "jpg", "jpg_mask", "nifti_volume", "nifti_mask")
MULTILABELS = ("IVH", "IPH", "SAH")
_SUBSET_ROLES = {"A": ((".nii.gz", ".nii"), "nifti_volume", "nifti_mask"),
                 "B": ((".jpg", ".jpeg"), "jpg", "jpg_mask"), "C": ((".png",), "image", "mask")}
_SLICE_RE = re.compile(r"^(\d+)_(\d+)$")
_NAME_RE = re.compile(r"^(\d+)(?:_(\d+))?$")
_FOLDER_RE = re.compile(r"^(?:image|label|annotation|mask)s?_?(\d+)$", re.IGNORECASE)
_MEDINFO_ID = ("id", "patientid", "patient", "caseid", "case", "no", "number")
# MedInfo columns kept in the manifest (canonical name: accepted headers, letters only, lower case)
MEDINFO_FIELDS = {"sex": ("sex", "gender"), "age": ("age", "ageyears", "ageyear"),
                  "hemorrhage_type": ("typeofhemorrhage", "hemorrhagetype", "typeofhaemorrhage", "haemorrhagetype"),
                  "hematoma_expansion": ("hematomaexpansion", "haematomaexpansion", "expansion")}


def parse_slice_name(name: str) -> tuple[int, int] | None:
    """``(patient, slice)`` from a file name or path like ``0013_02.png`` / ``013_02`` (else ``None``)."""
    base = re.split(r"[\\/]", str(name).strip())[-1]
    m = _SLICE_RE.match(base.split(".", 1)[0])
    return (int(m.group(1)), int(m.group(2))) if m else None


def _subsets(source: Path) -> dict[str, Path]:
    """``{"A": folder, ...}``: ``Subdataset<X>*`` folders in ``source`` or one level below (first wins)."""
    found: dict[str, Path] = {}
    for sub in (d for parent in [source, *sorted(p for p in source.iterdir() if p.is_dir())]
                for d in sorted(parent.iterdir()) if d.is_dir()):
        if m := re.match(r"subdataset([abc])", sub.name, re.IGNORECASE):
            found.setdefault(m.group(1).upper(), sub)
    return found


class _Skip(Exception):
    """A file that is not part of any slice: ``args = (reason, detail)``."""


def _classify(path: Path, subset: str, root: Path) -> tuple[str, int, int | None]:
    """``(role, patient, slice)`` of one file; raises :class:`_Skip` otherwise."""
    exts, set_role, label_role = _SUBSET_ROLES[subset]
    ext = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix.lower()
    folders = [p.lower() for p in path.relative_to(root).parts[:-1]]
    if subset == "C" and ext == ".xml":
        role = "xml"
    elif ext in exts:
        role = label_role if any(f.startswith(("label", "mask")) for f in folders) else set_role
    else:
        raise _Skip("unknown_file", f"not a {'/'.join(exts)} file of Subdataset{subset}")
    m = _NAME_RE.match(path.name[: len(path.name) - len(ext)])
    if not m or (m.group(2) is None) != (subset == "A"):
        raise _Skip("bad_name", "expected <patient>.nii.gz" if subset == "A" else "expected <patient>_<slice>.<ext>")
    pid, k = int(m.group(1)), None if m.group(2) is None else int(m.group(2))
    folder = _FOLDER_RE.match(path.parent.name)
    if folder and int(folder.group(1)) != pid:
        raise _Skip("id_mismatch", f"file names patient {pid} but its folder {path.parent.name} another")
    return role, pid, k


def _pick(paths: list[Path], pid: int, k: int | None, rejected: Rejected, rel) -> Path:
    """Keep the canonical name (else the first sorted); the others are ``duplicate``."""
    canonical = f"{pid:04d}" if k is None else f"{pid:04d}_{k:02d}"
    keep = next((p for p in paths if p.name.split(".", 1)[0] == canonical), paths[0])
    for p in (p for p in paths if p != keep):
        same = p.stat().st_size == keep.stat().st_size and p.read_bytes() == keep.read_bytes()
        rejected.add(p, "duplicate", f"same patient {pid} slice {k} as {rel(keep)} "
                                     f"({'identical bytes' if same else 'different content'}); that one is kept")
    return keep


def _scan(source: Path, rejected: Rejected, rel) -> tuple[dict, dict]:
    """All files of the three subsets -> ``{pid: {k: {role: path}}}`` and ``{pid: {role: path}}``."""
    subsets = _subsets(source)
    if "C" not in subsets:
        raise FileNotFoundError(f"{source}: no SubdatasetC_PNG folder (PNG slices + VOC annotations) here or one "
                                f"level below; pass the folder that holds SubdatasetA_NIFIT/B_JPG/C_PNG")
    found: dict[tuple, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for subset, root in sorted(subsets.items()):
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                role, pid, k = _classify(path, subset, root)
            except _Skip as exc:
                rejected.add(path, *exc.args)
                continue
            found[(pid, k)][role].append(path)
    slices: dict[int, dict[int, dict[str, Path]]] = defaultdict(dict)
    patients: dict[int, dict[str, Path]] = defaultdict(dict)
    for (pid, k), roles in sorted(found.items(), key=lambda kv: (kv[0][0], -1 if kv[0][1] is None else kv[0][1])):
        chosen = {role: _pick(paths, pid, k, rejected, rel) for role, paths in sorted(roles.items())}
        (patients[pid] if k is None else slices[pid].setdefault(k, {})).update(chosen)
    return slices, patients


def _png(path: Path, decode: bool) -> tuple[tuple[int, int], int | None]:
    """``((width, height), non-zero pixels)``; only the header is read unless ``decode``."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im) if decode else None
        return im.size, (int(np.count_nonzero(arr[..., 0] if arr.ndim == 3 else arr)) if decode else None)


def _slice_row(pid: int, k: int, files: dict[str, Path], require: Sequence[str], rejected: Rejected,
               rel) -> dict | None:
    """Read one slice's XML, mask and image header; ``None`` (and a reason) when it is dropped."""
    image, ann, mask_pixels, missing = files["image"], None, None, {}
    others = ", ".join(rel(files[r]) for r in ("mask", "xml") if r in files)
    dropped_with = f"; dropped with it: {others}" if others else ""
    try:
        size = _png(image, decode=False)[0]
    except Exception as exc:  # any decoder error: the file, not the run, is bad
        rejected.add(image, "unreadable", f"{type(exc).__name__}: {exc}{dropped_with}")
        return None
    try:
        ann = read_voc(files["xml"]) if "xml" in files else None
    except VocError as exc:
        rejected.add(files["xml"], exc.reason, exc.detail)
    try:
        mask_size, mask_pixels = _png(files["mask"], decode=True) if "mask" in files else (size, None)
        if mask_size != size:
            rejected.add(files["mask"], "bad_shape", f"mask {mask_size[0]}x{mask_size[1]}, image {size[0]}x{size[1]}")
            mask_pixels = None
    except Exception as exc:
        rejected.add(files["mask"], "unreadable", f"{type(exc).__name__}: {exc}")
    for role, ok, reason, where in (("xml", ann is not None, "no_annotation", "SubdatasetC_PNG/annotation"),
                                    ("mask", mask_pixels is not None, "no_mask", "SubdatasetC_PNG/label")):
        if not ok:
            missing[reason] = f"its {role} {rel(files[role])} was rejected" if role in files else f"none in {where}"
            if role in require:
                rejected.add(image, reason, missing[reason] + dropped_with)
                return None
    warnings = list(missing)
    n_boxes = len(ann.objects) if ann is not None else None
    if n_boxes is not None and mask_pixels is not None and (n_boxes > 0) != (mask_pixels > 0):
        warnings.append("mask_disagrees")
    if ann is not None and ann.width and ann.height and (ann.width, ann.height) != size:
        warnings.append("size_mismatch")
    has_phe = n_boxes if n_boxes is not None else mask_pixels
    return {"patient_id": str(pid), "slice_index": k, "image": str(image),
            "mask": str(files["mask"]) if mask_pixels is not None else "", "xml": str(files["xml"]) if ann else "",
            "has_phe": None if has_phe is None else int(has_phe > 0), "n_boxes": n_boxes,
            "boxes": json.dumps(ann.boxes, separators=(",", ":")) if ann else "", "mask_pixels": mask_pixels,
            "width": size[0], "height": size[1], "jpg": str(files.get("jpg", "")),
            "jpg_mask": str(files.get("jpg_mask", "")), "warning": ";".join(warnings)}


def _nifti_ok(path: Path, rejected: Rejected) -> bool:
    """Whether the NIfTI header reads (the voxels are left to the task that uses them)."""
    import nibabel as nib

    try:
        return bool(nib.load(str(path)).header.get_data_shape())
    except Exception as exc:
        rejected.add(path, "unreadable", f"{type(exc).__name__}: {exc}")
        return False


def _int_id(value: object) -> int | None:
    try:
        f = float(str(value).strip())
    except ValueError:
        return None
    return int(f) if f.is_integer() and f >= 0 else None


def _read_medinfo(source: Path, subsets_parent: Path, rejected: Rejected) -> pd.DataFrame | None:
    """MedInfo as ``patient_id`` (int string) + its other columns, or ``None`` when absent/unreadable."""
    candidates = sorted({p for d in (source, subsets_parent) for p in d.iterdir()
                         if p.is_file() and p.stem.lower() == "medinfo"
                         and p.suffix.lower() in (".csv", ".xlsx", ".xls")},
                        key=lambda p: (p.suffix.lower() != ".csv", str(p)))  # CSV first: needs no Excel reader
    if not candidates:
        return None
    path = candidates[0]
    try:
        table = (pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
                 if path.suffix.lower() == ".csv" else pd.read_excel(path, dtype=str).fillna(""))
    except Exception as exc:  # ImportError without openpyxl: say how to proceed
        hint = (f"; `pip install openpyxl`, or save it as {path.stem}.csv beside it"
                if isinstance(exc, ImportError) else "")
        rejected.add(path, "unreadable", f"{type(exc).__name__}: {exc}{hint}")
        return None
    table.columns = [str(c).strip() for c in table.columns]
    norm = [re.sub(r"[^a-z]", "", c.lower()) for c in table.columns]
    id_col = table.columns[next((i for i, n in enumerate(norm) if n in _MEDINFO_ID), 0)]
    ids = pd.Series([_int_id(v) for v in table[id_col]], index=table.index, dtype=object)
    for line, v in table.loc[ids.isna(), id_col].items():
        rejected.add(path, "bad_name", f"row {line + 2}: {id_col} = {v!r} is not an integer patient id")
    keep = {}
    for col, n in zip(table.columns, norm):
        field = next((f for f, names in MEDINFO_FIELDS.items() if n in names), None)
        if field is not None and field not in keep.values() and col != id_col:
            keep[col] = field
    dropped = [c for c in table.columns if c not in keep and c != id_col]
    if dropped:
        log.info("MedInfo: column(s) %s not kept (only %s enter the manifest)", dropped, ", ".join(MEDINFO_FIELDS))
    table = table[list(keep)].rename(columns=keep).assign(patient_id=ids.map(str))[ids.notna()]
    for pid in table.loc[table["patient_id"].duplicated(), "patient_id"]:
        rejected.add(path, "duplicate", f"MedInfo has more than one row of patient {pid}; the first is used")
    return table.drop_duplicates("patient_id")


def index_phe_sich(source: str | Path, require: Sequence[str] = ("xml", "mask"),
                   progress: bool = True) -> tuple[pd.DataFrame, Rejected]:
    """Index a PHE-SICH-CT-IDS folder -> (one row per usable PNG slice, rejected files).

    Args:
        source: The folder holding ``SubdatasetA_NIFIT``/``B_JPG``/``C_PNG`` (or their parent).
        require: Annotations a slice must have: any of ``"xml"``, ``"mask"`` (default both, the
            fully annotated set); a missing one not required is ``""`` and noted in ``warning``.
        progress: Show a progress bar over patients.

    Returns:
        ``(df, rejected)``: module-docstring columns, absolute paths, by integer patient and slice.
    """
    from tqdm.auto import tqdm

    source = Path(source).absolute()
    bad = sorted(set(require) - {"xml", "mask"})
    if bad:
        raise ValueError(f"require={list(require)}: {bad} unknown; choose from ['mask', 'xml']")
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder")

    def rel(p: Path) -> str:  # short names for details
        return p.relative_to(source).as_posix() if p.is_relative_to(source) else str(p)

    rejected = Rejected()
    slices, patients = _scan(source, rejected, rel)
    rows: list[dict] = []
    for pid in tqdm(sorted(set(slices) | set(patients)), desc="indexing PHE-SICH patients", unit="patient",
                    disable=not progress, leave=False):
        n_before = len(rows)
        for k, files in sorted(slices.get(pid, {}).items()):
            if "image" not in files:
                for path in files.values():
                    rejected.add(path, "no_image", f"no SubdatasetC_PNG image for patient {pid} slice {k}")
            elif (row := _slice_row(pid, k, files, require, rejected, rel)) is not None:
                rows.append(row)
        if len(rows) == n_before:
            for path in patients.get(pid, {}).values():
                rejected.add(path, "no_image", f"no indexed PNG slice of patient {pid}")
            continue
        nifti = {r: str(p) for r, p in patients.get(pid, {}).items() if _nifti_ok(p, rejected)}
        for row in rows[n_before:]:
            row.update(nifti_volume=nifti.get("nifti_volume", ""), nifti_mask=nifti.get("nifti_mask", ""))
    df = pd.DataFrame(rows, columns=list(SLICE_COLUMNS))
    for col in ("has_phe", "n_boxes", "mask_pixels"):
        df[col] = df[col].astype("Int64")
    medinfo = _read_medinfo(source, _subsets(source)["C"].parent, rejected)
    if medinfo is not None:
        unknown = sorted(set(df["patient_id"]) - set(medinfo["patient_id"]), key=int)
        if unknown:
            log.warning("PHE-SICH: %d patient(s) without a MedInfo row: %s", len(unknown), ", ".join(unknown))
        df = df.merge(medinfo, on="patient_id", how="left").fillna({c: "" for c in medinfo.columns})
    log.info("PHE-SICH: %d slices of %d patients indexed, %d with warnings; %d file(s) rejected", len(df),
             df["patient_id"].nunique(), int((df["warning"] != "").sum()), len(rejected))
    return df.reset_index(drop=True), rejected


def read_multilabel_csv(path: str | Path, index: pd.DataFrame,
                        labels: Sequence[str] = MULTILABELS) -> tuple[pd.DataFrame, Rejected]:
    """The notes' task-4 table ``image,IVH,IPH,SAH`` joined onto ``index`` by (patient, slice).

    ``image`` is any path/name ending in ``<patient>_<slice>.<ext>`` (``ct/013_02.jpg``); values
    0/1. Returns the matched index rows (index order) with int label columns, and the rejected:
    CSV rows (named by ``image`` resolved against the CSV's folder) ``bad_name``, ``bad_label``,
    ``duplicate`` (first kept), ``no_image`` (slice not in the index); unlabelled slices ``no_label``.

    Raises:
        ManifestError: the file is missing or lacks the ``image`` / label columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"multi-label file {path} does not exist")
    table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in ("image", *labels) if c not in table.columns]
    if missing:
        raise ManifestError(f"{path} lacks column(s) {missing}; it has {list(table.columns)}. "
                            f"Expected a header like: image,{','.join(labels)}")
    rejected = Rejected()
    keys = {(int(p), int(k)): i for i, (p, k) in enumerate(zip(index["patient_id"], index["slice_index"]))}
    found: dict[int, list[int]] = {}
    for line, rec in enumerate(table.to_dict("records"), start=2):
        name = str(rec["image"]).strip()
        where, key = path.parent / name, parse_slice_name(name)
        values = {c: _int_id(rec[c]) for c in labels}
        if key is None:
            rejected.add(where, "bad_name",
                         f"{path.name} line {line}: {name!r} does not end in <patient>_<slice>.<ext>")
        elif any(v not in (0, 1) for v in values.values()):
            rejected.add(where, "bad_label", f"{path.name} line {line}: {[rec[c] for c in labels]} are not all 0/1")
        elif key not in keys:
            rejected.add(where, "no_image", f"{path.name} line {line}: patient {key[0]} slice {key[1]} is not indexed")
        elif keys[key] in found:
            rejected.add(where, "duplicate",
                         f"{path.name} line {line}: patient {key[0]} slice {key[1]} already labelled")
        else:
            found[keys[key]] = [values[c] for c in labels]
    for i in sorted(set(range(len(index))) - set(found)):
        rejected.add(index["image"].iloc[i], "no_label", f"slice not in {path.name}")
    rows = sorted(found)
    out = index.iloc[rows].reset_index(drop=True)
    lab = np.array([found[i] for i in rows], dtype=np.int64).reshape(len(rows), len(labels))
    return out.assign(**{c: lab[:, j] for j, c in enumerate(labels)}), rejected


def write_phe_manifest(df: pd.DataFrame, out: str | Path, rejected: Rejected) -> tuple[Path, Path]:
    """Write ``out`` and ``<stem>.rejected.csv`` atomically, paths relative to ``out``'s folder.

    Idempotent: the same frame and rejections give the same bytes (rows in the frame's order,
    rejections sorted by reason and path).
    """
    return write_manifest_with_rejected(df, out, rejected, PATH_COLUMNS, "PHE-SICH manifest")
