"""Synthetic PHE-SICH-CT-IDS: basal-ganglia haemorrhage CT written in the release's own layout.

So that ``medtasks prepare phe_<task> --source <folder>`` runs on real files, this writes what
``data-notes.md`` describes, quirks included (``N`` = patient id without zero padding,
``NNNN`` = the same id with four digits, ``SS`` = slice index with two digits)::

    <out>/SubdatasetA_NIFIT/NIFIT/set/NNNN.nii.gz          int16 HU volume ("NIFIT" sic)
    <out>/SubdatasetA_NIFIT/NIFIT/label/NNNN.nii.gz        uint8 0/1 PHE mask, same affine
    <out>/SubdatasetB_JPG/set/imageN/NNNN_SS.jpg           brain window, 8-bit
    <out>/SubdatasetB_JPG/label/labelN/NNNN_SS.jpg         PHE mask 0/255 (JPEG: not exactly binary)
    <out>/SubdatasetC_PNG/set/imageN/NNNN_SS.png           brain window, 8-bit
    <out>/SubdatasetC_PNG/label/labelN/NNNN_SS.png         PHE mask 0/255
    <out>/SubdatasetC_PNG/annotation/annotationN/NNNN_SS.xml   Pascal VOC, class "a"
    <out>/MedInfo.csv                                      per patient (the release has MedInfo.xlsx)
    <out>/task4_labels.csv                                 image,IVH,IPH,SAH (synthetic only)
    <out>/.complete                                        the generator's parameters, written last

What follows data-notes (and the source notes in ``seeds/``) literally: the folder and file
names above, the labels mark perihaematomal oedema (PHE), never the haematoma; every patient
has a haemorrhage, and slices without oedema still get an image, a blank mask and a VOC XML
without ``<object>``; patient ids are not contiguous (drawn from 1..~1.4 n like the release's
1..167 for 120) and always include patient 13, whose XML files are named ``013_SS.xml`` (the
release's naming error: a lookup of ``0013_SS`` fails); the XML declares
``encoding='us-ascii'``, ``<folder>VOC2007``, a ``<filename>`` ending in ``.jpg`` although it
sits with the PNGs, a Windows ``<path>``, ``<depth>3`` and the whitespace of the release's files.

Where data-notes is silent, the choices (prepare code must not depend on more than this):

* The ``label`` folders of subsets B and C: the source report's segmentation scripts read mask
  images with the same names as the slices from ``<subset>/label/label<N>/`` next to ``set``;
  the notes write ``SubdatasetB_JPG/set/.../`` and we use ``set/image<N>/`` as in subset C.
* Slice ``SS`` is NIfTI index ``k = SS`` along the third axis, slice 00 the most caudal.
  NIfTI voxel axes run to the patient's left, posterior and superior (``aff2axcodes`` =
  ``('L', 'P', 'S')``, i.e. DICOM order), so PNG ``[row, col]`` = NIfTI ``[col, row, k]``
  (``png = volume[:, :, k].T``) in radiological display (patient left on the image right).
  Pixels are ``260 / matrix`` mm (0.5078125 at 512, the release's value), slices 5 mm.
* Images are the brain window (level 40, width 80 HU) mapped to 0..255, single channel ("L");
  the release's XML says ``depth 3`` and readers should convert to RGB themselves.
* VOC boxes: one ``<object>`` per haematoma (two only in the rare bilateral case) on each slice
  with its oedema, 0-based inclusive pixel indices, 0-3 px (at 512) looser than the mask like a
  hand-drawn box. ``<path>`` is ``C:\\Users\\annotator\\Desktop\\png\\set\\image<N>\\<S>.png``.
  The ``013_SS.xml`` quirk renames the file only; its ``<filename>`` stays ``0013_SS.jpg``.
* MedInfo: the release ships ``MedInfo.xlsx`` (column ``Type Of Hemorrhage``; ``prepare`` reads it
  with openpyxl, tested); the synthetic set writes ``MedInfo.csv`` (UTF-8) instead because an
  .xlsx carries time stamps and the generator writes byte-identical files, with columns
  ``ID, Gender, Age, Type Of Hemorrhage, Hematoma Expansion``; only the type
  column and its three values come from the notes, the other columns are invented.
* ``task4_labels.csv`` (the notes' task 4 format ``image,IVH,IPH,SAH``, one row per slice,
  ``image`` relative to ``<out>``) has no counterpart in PHE-SICH-CT-IDS, which holds
  basal-ganglia haemorrhage only: real multi-label training needs labels from another source
  (e.g. RSNA, CQ500). Here IPH = 1 on every slice showing haematoma, and the IVH / SAH columns
  come from blood actually drawn in the ventricles / sulci of some patients.

Same seed, same bytes: gzip without name or time, PNG without time chunks, fixed XML text,
per-patient seeds drawn up front, so the files do not depend on the number of workers.

Example:
    >>> root = generate_phe_sich("synth_phe", n_patients=4, matrix=128, slices=(10, 12),
    ...                          progress=False)  # doctest: +SKIP
    >>> sorted(p.name for p in root.iterdir())  # doctest: +SKIP
    ['MedInfo.csv', 'SubdatasetA_NIFIT', 'SubdatasetB_JPG', 'SubdatasetC_PNG', 'task4_labels.csv']
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from medtasks.io.atomic import atomic_path, write_text_atomic
from medtasks.io.nifti import nifti_gz_bytes
from medtasks.synth.common import marker_matches, remove_stale, run_parallel
from medtasks.synth.phe_sich_render import LABELS, SLICE_THICKNESS, PatientPlan, PatientVolume, render_patient

__all__ = ["HEMORRHAGE_TYPES", "LABELS", "QUIRK_PATIENT", "PatientPlan", "brain_window", "generate_phe_sich",
           "nifti_affine", "patient_files", "plan_phe_dataset", "voc_boxes"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1  # bump when the phantom or the layout changes, so that old .complete markers are redone
SUBSETS = ("SubdatasetA_NIFIT", "SubdatasetB_JPG", "SubdatasetC_PNG")
QUIRK_PATIENT = 13
WINDOW = (40.0, 80.0)  # level, width (HU)
HEMORRHAGE_TYPES = {"left": "left basal ganglia", "right": "right basal ganglia region",
                    "both": "right basal ganglia region\u3001left basal ganglia"}
_SIDE_P = (0.49, 0.48, 0.03)  # the release: 60 left, 59 right, 1 both
_MEDINFO_COLUMNS = ("ID", "Gender", "Age", "Type Of Hemorrhage", "Hematoma Expansion")
_XML_HEAD = """<?xml version='1.0' encoding='us-ascii'?>
<annotation>
<folder>VOC2007</folder>
<filename>{stem}.jpg</filename>
<path>C:\\Users\\annotator\\Desktop\\png\\set\\image{pid}\\{slice}.png</path>
<source>
    <database>Unknown</database>
</source>
<size>
    <width>{width}</width>
    <height>{height}</height>
    <depth>3</depth>
</size>

<segmented>0</segmented>
"""
_XML_OBJECT = """    <object>
    <name>a</name>
    <pose>Unspecified</pose>
    <truncated>0</truncated>
    <difficult>0</difficult>
    <bndbox>
        <xmin>{0}</xmin>
        <ymin>{1}</ymin>
        <xmax>{2}</xmax>
        <ymax>{3}</ymax>
    </bndbox>
</object>
"""


def _patient_ids(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` sorted ids from 1..~1.4 n with gaps, always holding :data:`QUIRK_PATIENT`."""
    if n == 1:
        return [QUIRK_PATIENT]
    top = max(round(n * 167 / 120), n + 1, QUIRK_PATIENT + 1)
    pool = np.array([i for i in range(1, top + 1) if i != QUIRK_PATIENT])
    while True:
        ids = sorted([QUIRK_PATIENT, *(int(v) for v in rng.choice(pool, n - 1, replace=False))])
        if ids[-1] - ids[0] + 1 > n:  # at least one gap inside the range
            return ids


def plan_phe_dataset(n_patients: int, seed: int, slices: tuple[int, int] = (26, 32)) -> list[PatientPlan]:
    """Ids, slice counts, lesion sides, extensions, demographics and seeds, all from ``default_rng(seed)``.

    Example:
        >>> QUIRK_PATIENT in [p.patient_id for p in plan_phe_dataset(3, seed=0, slices=(8, 8))]
        True
    """
    rng = np.random.default_rng(seed)
    plans = []
    for pid in _patient_ids(rng, n_patients):
        side = ("left", "right", "both")[int(rng.choice(3, p=_SIDE_P))]
        plans.append(PatientPlan(
            patient_id=pid, n_slices=int(rng.integers(slices[0], slices[1] + 1)), side=side,
            ivh=bool(rng.random() < 0.3), sah=bool(rng.random() < 0.25), age=int(rng.integers(35, 86)),
            sex="Male" if rng.random() < 0.65 else "Female", expansion=int(rng.random() < 0.25),
            head_seed=int(rng.integers(2**31)), volume_seed=int(rng.integers(2**31))))
    return plans


def patient_files(patient_id: int, n_slices: int) -> dict[str, list[str]]:
    """Relative paths (POSIX) of one patient's files, by kind; slice lists are in slice order."""
    n, nnnn = str(patient_id), f"{patient_id:04d}"
    stems = [f"{nnnn}_{k:02d}" for k in range(n_slices)]
    xml_prefix = f"{patient_id:03d}" if patient_id == QUIRK_PATIENT else nnnn
    return {
        "nifti": [f"SubdatasetA_NIFIT/NIFIT/set/{nnnn}.nii.gz"],
        "nifti_label": [f"SubdatasetA_NIFIT/NIFIT/label/{nnnn}.nii.gz"],
        "jpg": [f"SubdatasetB_JPG/set/image{n}/{s}.jpg" for s in stems],
        "jpg_label": [f"SubdatasetB_JPG/label/label{n}/{s}.jpg" for s in stems],
        "png": [f"SubdatasetC_PNG/set/image{n}/{s}.png" for s in stems],
        "png_label": [f"SubdatasetC_PNG/label/label{n}/{s}.png" for s in stems],
        "xml": [f"SubdatasetC_PNG/annotation/annotation{n}/{xml_prefix}_{k:02d}.xml" for k in range(n_slices)],
    }


def brain_window(hu: np.ndarray, level: float = WINDOW[0], width: float = WINDOW[1]) -> np.ndarray:
    """HU -> uint8 with ``level - width / 2`` at 0 and ``level + width / 2`` at 255."""
    v = (np.asarray(hu, dtype=np.float32) - np.float32(level - width / 2.0)) * np.float32(255.0 / width)
    return np.rint(np.clip(v, 0.0, 255.0)).astype(np.uint8)


def nifti_affine(matrix: int, pixel_spacing: float, z0: float) -> np.ndarray:
    """RAS affine of voxel axes to the patient's left, posterior and superior, centred in-plane."""
    c = (matrix - 1) / 2.0 * pixel_spacing
    return np.array([[-pixel_spacing, 0.0, 0.0, c], [0.0, -pixel_spacing, 0.0, c],
                     [0.0, 0.0, SLICE_THICKNESS, round(z0, 3)], [0.0, 0.0, 0.0, 1.0]])


def voc_boxes(vol: PatientVolume, rng: np.random.Generator, matrix: int) -> list[list[tuple[int, int, int, int]]]:
    """Per slice, one (xmin, ymin, xmax, ymax) per haematoma with oedema there, a few pixels loose."""
    max_margin = max(1, round(3 * matrix / 512))
    out: list[list[tuple[int, int, int, int]]] = []
    for k in range(vol.phe.shape[0]):
        boxes = []
        for part in vol.phe_parts:
            rows, cols = np.nonzero(part[k])
            if rows.size:
                m = rng.integers(0, max_margin + 1, size=4)
                boxes.append((max(0, int(cols.min() - m[0])), max(0, int(rows.min() - m[1])),
                              min(matrix - 1, int(cols.max() + m[2])), min(matrix - 1, int(rows.max() + m[3]))))
        out.append(boxes)
    return out


def _voc_xml(patient_id: int, k: int, matrix: int, boxes: list[tuple[int, int, int, int]]) -> str:
    head = _XML_HEAD.format(stem=f"{patient_id:04d}_{k:02d}", pid=patient_id, slice=k, width=matrix, height=matrix)
    return head + "".join(_XML_OBJECT.format(*b) for b in boxes) + "</annotation>\n"


def _image_bytes(pixels: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt == "JPEG" else {"compress_level": 6}
    Image.fromarray(pixels).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _write_patient(plan: PatientPlan, out: Path, matrix: int) -> list[str]:
    """Render and write one patient; return its ``task4_labels.csv`` rows."""
    vol = render_patient(plan, matrix)
    files = patient_files(plan.patient_id, plan.n_slices)
    affine = nifti_affine(matrix, vol.pixel_spacing, vol.z0)
    _write_bytes(out / files["nifti"][0], nifti_gz_bytes(vol.hu.transpose(2, 1, 0), affine))
    _write_bytes(out / files["nifti_label"][0], nifti_gz_bytes(vol.phe.transpose(2, 1, 0), affine))
    boxes = voc_boxes(vol, np.random.default_rng([plan.volume_seed, 1]), matrix)
    rows = []
    for k in range(plan.n_slices):
        image, mask = brain_window(vol.hu[k]), vol.phe[k] * np.uint8(255)
        _write_bytes(out / files["jpg"][k], _image_bytes(image, "JPEG"))
        _write_bytes(out / files["jpg_label"][k], _image_bytes(mask, "JPEG"))
        _write_bytes(out / files["png"][k], _image_bytes(image, "PNG"))
        _write_bytes(out / files["png_label"][k], _image_bytes(mask, "PNG"))
        _write_bytes(out / files["xml"][k], _voc_xml(plan.patient_id, k, matrix, boxes[k]).encode("ascii"))
        rows.append(",".join([files["png"][k], *(str(int(v)) for v in vol.labels[k])]))
    return rows


def _csv_text(header: tuple[str, ...], rows: list[list[object]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _default_workers(matrix: int, max_slices: int) -> int:
    """All cores, but no more processes than free memory holds (~1.5 GB per 512 x 512 x 32 patient)."""
    cores = os.cpu_count() or 1
    try:
        import psutil

        available = psutil.virtual_memory().available
    except (ImportError, OSError, RuntimeError):  # no psutil or no /proc: trust the core count
        return cores
    per_worker = 1.6e9 * (matrix / 512) ** 2 * max(max_slices, 8) / 32
    return max(1, min(cores, int(available // per_worker)))


def generate_phe_sich(out: str | Path, n_patients: int = 20, seed: int = 0, matrix: int = 512,
                      slices: tuple[int, int] = (26, 32), progress: bool = True, workers: int | None = None) -> Path:
    """Write a synthetic PHE-SICH-CT-IDS release (layout: module docstring) and return its root.

    Args:
        out: Root folder (what ``prepare --source`` takes).
        n_patients: Number of patients (the release has 120).
        seed: Seeds everything; the same seed writes byte-identical files.
        matrix: Rows = columns of every slice (the release: 512); pixels are ``260 / matrix`` mm.
        slices: Inclusive range of the number of 5 mm slices per patient (the release: ~29 on average).
        progress: Show a progress bar.
        workers: Processes rendering patients (default: all cores, fewer if free memory is short);
            the files do not depend on it.

    Idempotent: when ``out/.complete`` holds the same parameters the call returns at once;
    otherwise the set is (re)written, files of other parameters are removed from the three
    subsets, and ``.complete`` is written last.

    Example:
        >>> root = generate_phe_sich("synth_phe", n_patients=6, matrix=256, slices=(8, 8),
        ...                          progress=False)  # doctest: +SKIP
        >>> (root / "SubdatasetA_NIFIT" / "NIFIT" / "label" / "0013.nii.gz").is_file()  # doctest: +SKIP
        True
    """
    out = Path(out)
    lo, hi = (int(v) for v in slices)
    if n_patients < 1 or not 4 <= lo <= hi <= 100 or matrix < 64:
        raise ValueError(f"need n_patients >= 1, 4 <= slices[0] <= slices[1] <= 100 (two-digit slice names) "
                         f"and matrix >= 64; got n_patients={n_patients}, slices={slices}, matrix={matrix}")
    params = {"format": _FORMAT_VERSION, "n_patients": int(n_patients), "seed": int(seed), "matrix": int(matrix),
              "slices": [lo, hi]}
    marker, labels_csv, medinfo = out / ".complete", out / "task4_labels.csv", out / "MedInfo.csv"
    if marker_matches(marker, params, labels_csv, medinfo):
        logger.info("synthetic PHE-SICH-CT-IDS already complete in %s", out)
        return out
    marker.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_phe_dataset(n_patients, seed, (lo, hi))
    logger.info("writing %d synthetic PHE-SICH-CT-IDS patients (%d slices, %dx%d) to %s",
                len(plans), sum(p.n_slices for p in plans), matrix, matrix, out)
    job = functools.partial(_write_patient, out=out, matrix=matrix)
    # Patients are independent and fully determined by their plan: same files for any worker count.
    rows: list[str] = [row for patient_rows in run_parallel(
        job, plans, workers or _default_workers(matrix, hi), "synthetic PHE-SICH", "patient", progress)
        for row in patient_rows]
    expected = {p for plan in plans for paths in patient_files(plan.patient_id, plan.n_slices).values() for p in paths}
    remove_stale(out, SUBSETS, expected)
    write_text_atomic(labels_csv, "image," + ",".join(LABELS) + "\n" + "".join(r + "\n" for r in rows))
    write_text_atomic(medinfo, _csv_text(_MEDINFO_COLUMNS, [
        [p.patient_id, p.sex, p.age, HEMORRHAGE_TYPES[p.side], p.expansion] for p in plans]))
    write_text_atomic(marker, json.dumps(params, sort_keys=True) + "\n")
    n_pos = sum(1 for r in rows if r.split(",")[2] == "1")
    logger.info("wrote %d slices (%d with haematoma) to %s", len(rows), n_pos, out)
    return out
