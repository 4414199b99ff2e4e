"""Index the Kermany chest X-ray release (pneumonia vs normal): one row per image, the rest in ``Rejected``.

Layout (data-notes; :mod:`medtasks.synth.chest_xray` writes the same). ``source`` may be the
folder holding ``chest_xray/``, ``chest_xray/`` itself, or any folder with ``NORMAL`` /
``PNEUMONIA`` subfolders, with or without a ``train`` / ``val`` / ``test`` level above them::

    chest_xray/{train,val,test}/NORMAL/IM-0115-0001.jpeg | NORMAL2-IM-0381-0001.jpeg
    chest_xray/{train,val,test}/PNEUMONIA/person23_bacteria_76.jpeg | person19_virus_50.jpeg
    dicom/{NORMAL,PNEUMONIA}/<any name>[.dcm]           CR/DX DICOM, any depth

Files are taken from their parent folder: ``NORMAL`` -> ``pneumonia = 0``, ``PNEUMONIA`` -> 1
(any case). Columns (:data:`COLUMNS`):

* ``image``: absolute path; ``pneumonia``: 0/1 from the class folder.
* ``patient_id``: the child, so that re-splits group by it (:func:`parse_kermany_name`):
  ``personN`` from ``personN_bacteria_K`` / ``personN_virus_K``; ``IM-NNNN`` / ``NORMAL2-IM-NNNN``
  from those names with any number of trailing ``-NNNN`` image counters (``IM-0115-0001`` ->
  ``IM-0115``; the release's ``NORMAL2-IM-0530-0001-0002`` -> ``NORMAL2-IM-0530``); DICOM: the
  PatientID tag. A name matching no rule (or a DICOM without PatientID) gives the file stem,
  i.e. the image is its own child, and the count is logged: such a file cannot be grouped
  with its siblings, so a grouped split may leak it.
* ``subtype``: ``bacteria`` | ``virus`` from pneumonia names, ``normal`` for NORMAL, else
  ``unknown`` (a pneumonia DICOM, an unparsed pneumonia name). A NORMAL file with a
  ``personN_...`` name keeps ``pneumonia = 0`` (the folder is the label) and ``normal``; the
  count of such folder/name conflicts is logged.
* ``source_split``: ``train`` / ``val`` / ``test`` from the folder just above the class folder
  (``valid`` / ``validation`` read as ``val``), else empty. The release's 16-image ``val`` and
  its train/test child overlap are left as they are: re-split by ``patient_id``.
* ``format``: ``jpeg`` / ``png`` / ``bmp`` / ``tiff`` from the content (not the suffix), or ``dicom``.

Rejection reasons: ``unknown_file`` (not an image or DICOM), ``no_class`` (not directly in a
NORMAL/PNEUMONIA folder), ``unreadable`` (corrupt or truncated; DICOM also ``wrong_modality``,
``bad_shape`` for multi-frame/colour, ``no_pixel_data``, ``no_decoder``), ``duplicate`` (the
same file name in the same split and class again, e.g. the Kaggle zip's nested
``chest_xray/chest_xray/`` copy; the shortest path is kept). Hidden files (``.DS_Store``, the
``__MACOSX/._*`` resource forks) are skipped. Images are checked by
:func:`medtasks.io.radiograph.probe_radiograph` (DICOM header; JPEG decoded at 1/8 scale).

Example:
    >>> df, rejected = index_chest_xray("/data/kermany")  # doctest: +SKIP
    >>> write_chest_xray_manifest(df, "data_manifests/xray.csv", rejected)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from medtasks.data.manifest import Rejected, write_manifest_with_rejected
from medtasks.io.images import list_files
from medtasks.io.radiograph import RADIOGRAPH_SUFFIXES, RadiographError, is_dicom, probe_radiograph

__all__ = ["COLUMNS", "PATH_COLUMNS", "index_chest_xray", "parse_kermany_name", "write_chest_xray_manifest"]

log = logging.getLogger(__name__)

COLUMNS = ("image", "pneumonia", "patient_id", "subtype", "source_split", "format")
PATH_COLUMNS = ("image",)
CLASSES = {"NORMAL": 0, "PNEUMONIA": 1}
_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_PERSON_RE = re.compile(r"^person(\d+)_(bacteria|virus)(?:_\d+)*$", re.IGNORECASE)
_NORMAL_RE = re.compile(r"^((?:normal2-)?im-\d+)(?:-\d+)+$", re.IGNORECASE)


def parse_kermany_name(name: str) -> tuple[str, str] | None:
    """``(patient_id, subtype)`` from a Kermany file name or path, or ``None`` for other names.

    Example:
        >>> parse_kermany_name("person23_bacteria_76.jpeg")
        ('person23', 'bacteria')
        >>> parse_kermany_name("train/NORMAL/NORMAL2-IM-0530-0001-0002.jpeg")
        ('NORMAL2-IM-0530', 'normal')
        >>> parse_kermany_name("scan.jpeg") is None
        True
    """
    stem = re.split(r"[\\/]", str(name).strip())[-1].split(".", 1)[0]
    if m := _PERSON_RE.match(stem):
        return f"person{int(m.group(1))}", m.group(2).lower()
    if m := _NORMAL_RE.match(stem):
        return m.group(1).upper(), "normal"
    return None


def _place(path: Path) -> tuple[int | None, str]:
    """``(pneumonia, source_split)`` from the parent folder and the one above it."""
    label = CLASSES.get(path.parent.name.upper())
    split = _SPLITS.get(path.parent.parent.name.lower(), "") if label is not None else ""
    return label, split


def _row(path: Path, label: int, split: str, counts: dict[str, int]) -> dict:
    """One manifest row; raises ``ValueError`` (message starting with the path) when unusable."""
    info = probe_radiograph(path)
    parsed = None if info.format == "dicom" else parse_kermany_name(path.name)
    if info.format == "dicom":
        patient_id, subtype = info.patient_id, ("unknown" if label else "normal")
    elif parsed is not None:
        patient_id, subtype = parsed
        if (subtype == "normal") != (label == 0):
            counts["conflict"] += 1  # the folder is the label; the name still names the child
            subtype = "normal" if label == 0 else "unknown"
    else:
        patient_id, subtype = "", ("unknown" if label else "normal")
    if not patient_id:
        counts["stem"] += 1
        patient_id = path.stem
    return {"image": str(path), "pneumonia": label, "patient_id": patient_id, "subtype": subtype,
            "source_split": split, "format": info.format}


def index_chest_xray(source: str | Path, progress: bool = True) -> tuple[pd.DataFrame, Rejected]:
    """Index a Kermany-layout folder -> (one row per usable image, rejected files).

    Args:
        source: The folder holding ``chest_xray/``, ``chest_xray/`` itself, or any folder with
            ``NORMAL`` / ``PNEUMONIA`` subfolders (``train``/``val``/``test`` level optional);
            DICOM files in such class folders are indexed too.
        progress: Show a progress bar over files.

    Returns:
        ``(df, rejected)``: :data:`COLUMNS` (module docstring), sorted by ``image``.

    Raises:
        FileNotFoundError: ``source`` is not a folder.

    Example:
        >>> df, rejected = index_chest_xray("synth_cxr", progress=False)  # doctest: +SKIP
        >>> sorted(df["source_split"].unique())  # doctest: +SKIP
        ['', 'test', 'train', 'val']
    """
    from tqdm.auto import tqdm

    source = Path(source).absolute()
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such folder")
    rejected = Rejected()
    files = list_files(source)  # sorted, hidden files (._* forks, .DS_Store) skipped
    candidates: dict[tuple[str, int, str], list[Path]] = {}
    for path in files:
        if path.suffix.lower() not in RADIOGRAPH_SUFFIXES and not is_dicom(path):
            rejected.add(path, "unknown_file", f"not an image or DICOM file ({', '.join(RADIOGRAPH_SUFFIXES)})")
            continue
        label, split = _place(path)
        if label is None:
            rejected.add(path, "no_class", f"parent folder {path.parent.name!r} is not NORMAL or PNEUMONIA")
            continue
        candidates.setdefault((split, label, path.name.lower()), []).append(path)
    rows: list[dict] = []
    counts = {"conflict": 0, "stem": 0}
    chosen = []
    for paths in candidates.values():
        keep, *others = sorted(paths, key=lambda p: (len(p.parts), str(p)))  # the Kaggle zip nests a copy deeper
        chosen.append(keep)
        for other in others:
            rejected.add(other, "duplicate", f"same split, class and name as {keep}")
    for path in tqdm(sorted(chosen), desc="indexing chest X-rays", unit="image", disable=not progress, leave=False):
        label, split = _place(path)
        try:
            rows.append(_row(path, int(label), split, counts))  # type: ignore[arg-type]  # label checked above
        except ValueError as exc:
            reason = exc.reason if isinstance(exc, RadiographError) else "unreadable"
            rejected.add(path, reason, str(exc).removeprefix(f"{path}: "))
    df = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values("image", kind="stable").reset_index(drop=True)
    df["pneumonia"] = df["pneumonia"].astype("int64")
    if counts["stem"]:
        log.warning("chest X-ray: %d image(s) with no child id in the name or PatientID use their file stem "
                    "(not grouped with sibling images)", counts["stem"])
    if counts["conflict"]:
        log.warning("chest X-ray: %d image(s) whose name contradicts their class folder; the folder is the label",
                    counts["conflict"])
    log.info("chest X-ray: %d images (%d pneumonia) of %d children indexed; %d file(s) rejected", len(df),
             int(df["pneumonia"].sum()), df["patient_id"].nunique(), len(rejected))
    return df, rejected


def write_chest_xray_manifest(df: pd.DataFrame, out: str | Path, rejected: Rejected) -> tuple[Path, Path]:
    """Write ``out`` and ``<stem>.rejected.csv`` atomically, paths relative to ``out``'s folder.

    Idempotent: the same frame and rejections give the same bytes (rows in the frame's order,
    rejections sorted by reason and path).

    Example:
        >>> write_chest_xray_manifest(df, "data_manifests/xray.csv", rejected)  # doctest: +SKIP
        (PosixPath('data_manifests/xray.csv'), PosixPath('data_manifests/xray.rejected.csv'))
    """
    return write_manifest_with_rejected(df, out, rejected, PATH_COLUMNS, "chest X-ray manifest")
