"""Synthetic head-CT phantoms with intracranial haemorrhage, written like the RSNA ICH release.

Each series is a 3-D HU volume (anatomy in :mod:`medtasks.synth.head_ct_anatomy`, bleeds in
:mod:`medtasks.synth.head_ct_lesions`) cut into thick axial slices; each slice is the average
of ``subsamples`` thin planes so that through-plane partial volume looks like real 5 mm CT.
Slice labels come from the lesion voxels actually present in the slice.

Example:
    >>> import numpy as np
    >>> hu, masks = make_series_volume(np.random.default_rng(0), matrix=64, n_slices=6)
    >>> hu.shape, sorted(masks) == sorted(SUBTYPES)
    ((6, 64, 64), True)
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medtasks.io.atomic import write_text_atomic
from medtasks.synth.common import marker_matches, run_parallel
from medtasks.synth.dicom_writer import SeriesHeader, format_ds, write_ct_slice
from medtasks.synth.head_ct_anatomy import AIR_HU, HeadShape, outer_half_extent, render_head, sample_head_shape
from medtasks.synth.head_ct_fields import Frame, Pose, ramp, smoothstep
from medtasks.synth.head_ct_lesions import SUBTYPES, render_lesions, sample_lesions

__all__ = ["SUBTYPES", "SeriesPlan", "generate_head_ct", "make_series_volume", "plan_dataset",
           "render_series", "slice_labels"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 2  # bump when the phantom changes, so that old .complete markers are redone
_SURNAMES = ("Phantom", "Voxel", "Hounsfield", "Radon", "Fourier", "Gauss", "Laplace", "Sinogram")
_GIVEN = ("Alex", "Sam", "Robin", "Kim", "Jo", "Chris", "Pat", "Lee", "Noa", "Eli")
_WINDOWS = ((40.0, 80.0), (40.0, 150.0), (35.0, 80.0), (30.0, 80.0), (36.0, 80.0))


def _background(rng: np.random.Generator, matrix: int, spacing: float, pose: Pose, shape: HeadShape) -> np.ndarray:
    """Air with, in most series, a curved plastic head holder and the table behind the head."""
    has_holder = rng.random() < 0.7
    gap, thick, holder_hu = rng.uniform(4.0, 14.0), rng.uniform(2.0, 4.0), rng.uniform(80.0, 250.0)
    table_off, table_hu = rng.uniform(6.0, 20.0), rng.uniform(150.0, 350.0)
    bg = np.full((matrix, matrix), AIR_HU, dtype=np.float32)
    if not has_holder:
        return bg
    c = (np.arange(matrix, dtype=np.float32) - (matrix - 1) / 2.0) * spacing
    x, y = c[None, :], c[:, None]
    radius = shape.b + shape.skull + shape.scalp + gap
    ccy = pose.cy + 0.08 * shape.b
    r = np.hypot(x - pose.cx, y - ccy)
    holder = ramp(thick / 2.0 - np.abs(r - radius), spacing) * smoothstep(0.15 * radius, 0.45 * radius, y - ccy)
    bg += (holder_hu - bg) * holder
    for offset in (0.0, 12.0):  # carbon-fibre table: two thin skins
        line = ramp(1.0 - np.abs(y - (ccy + radius + table_off + offset)), spacing)
        bg += (table_hu - bg) * np.broadcast_to(line, bg.shape)
    return bg


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian noise with about one pixel of in-plane correlation, like reconstructed CT."""
    kernel_sigma = (0.0, 0.6, 0.6)
    white = rng.standard_normal(shape, dtype=np.float32)
    delta = np.zeros((1, 9, 9), dtype=np.float32)
    delta[0, 4, 4] = 1.0
    gain = float(np.sqrt((ndimage.gaussian_filter(delta, kernel_sigma) ** 2).sum()))
    return ndimage.gaussian_filter(white, kernel_sigma) * np.float32(sigma / gain)


def make_series_volume(
    rng: np.random.Generator,
    matrix: int = 256,
    n_slices: int = 28,
    slice_thickness: float = 5.0,
    pixel_spacing: float | None = None,
    hemorrhage: bool = True,
    head_seed: int | None = None,
    subsamples: int = 2,
    noise: bool = True,
    return_tissues: bool = False,
) -> tuple[np.ndarray, dict[str, np.ndarray]] | tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Render one CT series of a synthetic head.

    Args:
        rng: Source of all randomness of the series (pose, coverage, lesions, noise).
        matrix: Rows = columns of each slice.
        n_slices: Number of axial slices; slice k lies ``k * slice_thickness`` above slice 0.
        slice_thickness: Slice thickness = spacing (mm).
        pixel_spacing: In-plane pixel size (mm); drawn for a 230-250 mm field of view if None.
        hemorrhage: Whether the head has 1-4 bleeds (they may still miss the scanned range).
        head_seed: Seeds the anatomy alone, so two series of one patient share the head.
        subsamples: Thin planes averaged per slice (through-plane partial volume).
        noise: Add Gaussian noise (sigma 5-10 HU); off gives clean tissue values for tests.
        return_tissues: Also return soft tissue maps ``head``, ``bone`` (skull and base, before
            sinuses and air cells are carved out), ``cavity``, ``csf`` (all CSF spaces) and
            ``ventricles``.

    Returns:
        ``hu`` (n_slices, matrix, matrix) float32 in HU, slice 0 lowest (most caudal), rows
        anterior to posterior, columns patient right to left; ``masks`` mapping each of
        :data:`SUBTYPES` to its (n_slices, matrix, matrix) lesion fraction in [0, 1]; and the
        tissue maps if asked for.

    Example:
        >>> hu, masks = make_series_volume(np.random.default_rng(1), matrix=64, n_slices=4, hemorrhage=False)
        >>> float(max(m.max() for m in masks.values()))
        0.0
    """
    if pixel_spacing is None:
        pixel_spacing = float(format_ds(rng.uniform(230.0, 250.0) / matrix))
    shape = sample_head_shape(np.random.default_rng(head_seed) if head_seed is not None else rng)
    pose = Pose(cx=rng.uniform(-10.0, 10.0), cy=rng.uniform(-12.0, 6.0),
                theta=math.radians(rng.uniform(-12.0, 12.0)), pitch=math.radians(rng.uniform(-8.0, 12.0)))
    # Slices end near the vertex; a series too short to reach the skull base covers the lower part.
    z_top = shape.c_top + shape.skull + rng.uniform(-6.0, 6.0)
    z_bottom = z_top - (n_slices - 1) * slice_thickness
    if z_bottom > shape.z_mid + 5.0:
        z_bottom = shape.z_mid - rng.uniform(0.0, 10.0)
    z_centers = z_bottom + slice_thickness * np.arange(n_slices)
    offsets = slice_thickness * ((np.arange(subsamples) + 0.5) / subsamples - 0.5)
    z_planes = (z_centers[:, None] + offsets[None, :]).ravel()

    # Render only the box around the head; the rest of the image is background.
    half, (reach_x, reach_y) = (matrix - 1) / 2.0, outer_half_extent(shape, pose.theta)
    j0, j1 = (max(0, int(math.floor((pose.cx - reach_x) / pixel_spacing + half))),
              min(matrix, int(math.ceil((pose.cx + reach_x) / pixel_spacing + half)) + 1))
    i0, i1 = (max(0, int(math.floor((pose.cy - reach_y) / pixel_spacing + half))),
              min(matrix, int(math.ceil((pose.cy + reach_y) / pixel_spacing + half)) + 1))
    frame = Frame.build(pose, (j0 - half) * pixel_spacing, (i0 - half) * pixel_spacing,
                        (i1 - i0, j1 - j0), pixel_spacing, z_planes)
    background = _background(rng, matrix, pixel_spacing, pose, shape)
    hu_crop, fields = render_head(shape, frame, background[i0:i1, j0:j1])
    specs = sample_lesions(rng, shape, (float(z_centers[0]), float(z_centers[-1]))) if hemorrhage else []
    mask_crop = render_lesions(specs, frame, fields, hu_crop)

    def slab(crop: np.ndarray, fill: np.ndarray | float) -> np.ndarray:
        out = np.empty((n_slices, matrix, matrix), dtype=np.float32)
        out[:] = fill
        out[:, i0:i1, j0:j1] = crop.reshape(n_slices, subsamples, i1 - i0, j1 - j0).mean(axis=1)
        return out

    hu = slab(hu_crop, background)
    masks = {name: slab(m, 0.0) for name, m in mask_crop.items()}
    sigma = rng.uniform(5.0, 10.0)
    if noise:
        hu += _noise(rng, hu.shape, sigma)
    if not return_tissues:
        return hu, masks
    ventricles = np.maximum(np.maximum(fields.vent_left, fields.vent_right), fields.vent_mid)
    tissues = {"head": slab(fields.head, 0.0), "bone": slab(fields.bone, 0.0), "cavity": slab(fields.cavity, 0.0),
               "csf": slab(fields.extras["csf"], 0.0), "ventricles": slab(ventricles, 0.0)}
    return hu, masks, tissues


def slice_labels(masks: dict[str, np.ndarray], min_fraction: float = 0.5, min_pixels: int = 3,
                 pixel_spacing: float | None = None, min_area_mm2: float = 0.0) -> np.ndarray:
    """Per-slice labels: subtype present iff enough pixels exceed ``min_fraction`` blood.

    "Enough" is ``min_pixels`` pixels and, when ``pixel_spacing`` (mm) is given, an area of at
    least ``min_area_mm2``: the visibility floor of a reader, who does not label a speck of a
    few voxels at the tip of a bleed (the synthetic default is 12 mm^2, about a 3.5 x 3.5 mm spot).

    Returns:
        (n_slices, len(SUBTYPES)) uint8 array in :data:`SUBTYPES` order (``any`` = row max).
    """
    if pixel_spacing is not None and min_area_mm2 > 0:
        min_pixels = max(min_pixels, int(math.ceil(min_area_mm2 / pixel_spacing**2)))
    cols = [((masks[s] > min_fraction).sum(axis=(1, 2)) >= min_pixels) for s in SUBTYPES]
    return np.stack(cols, axis=1).astype(np.uint8)


@dataclass(frozen=True)
class SeriesPlan:
    """Everything about one series except its pixels; slice k of each tuple is the k-th in z."""

    header: SeriesHeader
    sop_uids: tuple[str, ...]
    instance_numbers: tuple[int, ...]
    z_positions: tuple[float, ...]
    head_seed: int
    volume_seed: int
    hemorrhage: bool


def _hex_id(rng: np.random.Generator, digits: int, used: set[str]) -> str:
    while True:
        uid = f"ID_{int(rng.integers(0, 16**digits)):0{digits}x}"
        if uid not in used:
            used.add(uid)
            return uid


def plan_dataset(n_patients: int, seed: int, matrix: int = 256, slices_per_series: tuple[int, int] = (24, 32),
                 slice_thickness: float = 5.0, p_hemorrhage: float = 0.6, p_wrapped: float = 0.1) -> list[SeriesPlan]:
    """Identifiers, headers and seeds of every series, all drawn from ``default_rng(seed)``.

    About 15% of patients get a second study (same head, new pose and bleeds).

    Example:
        >>> plans = plan_dataset(2, seed=0, matrix=64, slices_per_series=(4, 4))
        >>> plans[0].sop_uids[0].startswith("ID_"), len(plans[0].sop_uids)
        (True, 4)
    """
    rng = np.random.default_rng(seed)
    used: set[str] = set()
    plans: list[SeriesPlan] = []
    for _ in range(n_patients):
        patient_id = _hex_id(rng, 8, used)
        name = f"{_SURNAMES[rng.integers(len(_SURNAMES))]}^{_GIVEN[rng.integers(len(_GIVEN))]}"
        birth = f"{rng.integers(1930, 2001)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
        sex = "MF"[int(rng.integers(2))]
        bleeds = bool(rng.random() < p_hemorrhage)
        head_seed = int(rng.integers(2**31))
        for _study in range(2 if rng.random() < 0.15 else 1):
            study_uid, series_uid = _hex_id(rng, 10, used), _hex_id(rng, 10, used)
            n = int(rng.integers(slices_per_series[0], slices_per_series[1] + 1))
            z0 = round(float(rng.uniform(-200.0, 200.0)), 1)
            z_positions = tuple(round(z0 + k * slice_thickness, 4) for k in range(n))
            sops = tuple(_hex_id(rng, 9, used) for _ in range(n))
            order, numbers = rng.random(), np.arange(1, n + 1)
            # Instance numbers do not always follow z: readers must sort by ImagePositionPatient.
            if order < 0.3:
                numbers = numbers[::-1]
            elif order < 0.5:
                numbers = rng.permutation(numbers)
            spacing = float(format_ds(rng.uniform(230.0, 250.0) / matrix))
            encoding = "wrapped" if rng.random() < p_wrapped else ("uint12" if rng.random() < 0.25 else "int16")
            center, width = _WINDOWS[int(rng.integers(len(_WINDOWS)))]
            header = SeriesHeader(
                patient_id=patient_id, patient_name=name, birth_date=birth, patient_sex=sex,
                study_uid=study_uid, series_uid=series_uid, study_id=str(int(rng.integers(1000, 99999))),
                study_date=f"{rng.integers(2010, 2020)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}",
                study_time=f"{rng.integers(0, 24):02d}{rng.integers(0, 60):02d}{rng.integers(0, 60):02d}",
                series_number=int(rng.integers(2, 7)), pixel_spacing=spacing, slice_thickness=slice_thickness,
                xy_origin=(round(-(matrix - 1) / 2.0 * spacing + float(rng.uniform(-5, 5)), 2),
                           round(-(matrix - 1) / 2.0 * spacing + float(rng.uniform(-5, 5)), 2)),
                encoding=encoding, window_center=center, window_width=width,
                multi_window=bool(rng.random() < 0.2))
            plans.append(SeriesPlan(header, sops, tuple(int(v) for v in numbers), z_positions, head_seed,
                                    int(rng.integers(2**31)), bleeds))
    return plans


def render_series(plan: SeriesPlan, matrix: int, slice_thickness: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Pixels and lesion masks of a planned series (deterministic given the plan)."""
    return make_series_volume(np.random.default_rng(plan.volume_seed), matrix=matrix, n_slices=len(plan.sop_uids),
                              slice_thickness=slice_thickness, pixel_spacing=plan.header.pixel_spacing,
                              hemorrhage=plan.hemorrhage, head_seed=plan.head_seed)



def _write_series(plan: SeriesPlan, images: Path, matrix: int, slice_thickness: float,
                  min_lesion_mm2: float) -> list[tuple[str, list[str]]]:
    """Render one planned series, write its slices, return its label rows."""
    hu, masks = render_series(plan, matrix, slice_thickness)
    labels = slice_labels(masks, pixel_spacing=plan.header.pixel_spacing, min_area_mm2=min_lesion_mm2)
    rows = []
    for k, sop in enumerate(plan.sop_uids):
        write_ct_slice(images / f"{sop}.dcm", hu[k], plan.header, sop, plan.instance_numbers[k], plan.z_positions[k])
        lines = [f"{sop}_{s},{int(v)}" for s, v in zip(SUBTYPES, labels[k])]
        rows.append((sop, lines + [f"{sop}_any,{int(labels[k].max())}"]))
    return rows


def generate_head_ct(out: str | Path, n_patients: int = 40, seed: int = 0, matrix: int = 256,
                     slices_per_series: tuple[int, int] = (24, 32), slice_thickness: float = 5.0,
                     p_hemorrhage: float = 0.6, p_wrapped: float = 0.1, min_lesion_mm2: float = 12.0,
                     progress: bool = True, workers: int | None = None) -> Path:
    """Write an RSNA-style data set: ``out/stage_2_train/ID_<sop>.dcm`` and ``out/stage_2_train.csv``.

    The CSV has header ``ID,Label`` and six rows per slice, ``ID_<sop>_<subtype>`` for the five
    :data:`SUBTYPES` then ``any``. A fixed seed gives byte-identical files. Idempotent: when
    ``out/.complete`` holds the same parameters the call returns at once; otherwise the set is
    (re)written, files of other parameters are removed, and ``.complete`` is written last.
    Series are rendered by ``workers`` processes (default: all cores); the files do not depend on it.

    Returns:
        Path of the label CSV.

    Example:
        >>> csv = generate_head_ct("synth_ich", n_patients=2, matrix=64,
        ...                        slices_per_series=(6, 8), progress=False)  # doctest: +SKIP
        >>> csv.name  # doctest: +SKIP
        'stage_2_train.csv'
    """
    out = Path(out)
    images, csv_path, marker = out / "stage_2_train", out / "stage_2_train.csv", out / ".complete"
    lo, hi = (int(v) for v in slices_per_series)
    if n_patients < 1 or not 1 <= lo <= hi or matrix < 32 or slice_thickness <= 0:
        raise ValueError("need n_patients >= 1, 1 <= slices_per_series[0] <= [1], matrix >= 32, thickness > 0")
    if not (0.0 <= p_hemorrhage <= 1.0 and 0.0 <= p_wrapped <= 1.0):
        raise ValueError("p_hemorrhage and p_wrapped must lie in [0, 1]")
    params = {"format": _FORMAT_VERSION, "n_patients": int(n_patients), "seed": int(seed), "matrix": int(matrix),
              "slices_per_series": [lo, hi], "slice_thickness": float(slice_thickness),
              "p_hemorrhage": float(p_hemorrhage), "p_wrapped": float(p_wrapped),
              "min_lesion_mm2": float(min_lesion_mm2)}
    if marker_matches(marker, params, csv_path):
        logger.info("synthetic head CT already complete in %s", out)
        return csv_path
    marker.unlink(missing_ok=True)
    images.mkdir(parents=True, exist_ok=True)
    plans = plan_dataset(n_patients, seed, matrix, (lo, hi), slice_thickness, p_hemorrhage, p_wrapped)
    logger.info("writing %d series (%d slices) of synthetic head CT to %s",
                len(plans), sum(len(p.sop_uids) for p in plans), images)
    job = functools.partial(_write_series, images=images, matrix=matrix, slice_thickness=slice_thickness,
                            min_lesion_mm2=min_lesion_mm2)
    # Series are independent and fully determined by their plan: same files for any worker count.
    rows: list[tuple[str, list[str]]] = [row for series_rows in run_parallel(
        job, plans, workers or os.cpu_count() or 1, "synthetic head CT", "series", progress, chunksize=4)
        for row in series_rows]
    expected = {f"{sop}.dcm" for sop, _ in rows}
    for path in images.iterdir():  # leftovers of other parameters or of an interrupted run
        if (path.name.startswith("ID_") and path.suffix == ".dcm" and path.name not in expected) or (
                path.name.startswith(".ID_") and path.name.endswith(".tmp")):
            path.unlink()
    rows.sort(key=lambda r: r[0])  # file order carries no z information, as in RSNA's CSV
    write_text_atomic(csv_path, "ID,Label\n" + "".join(line + "\n" for _, lines in rows for line in lines))
    write_text_atomic(marker, json.dumps(params, sort_keys=True) + "\n")
    n_pos = sum(int(lines[-1][-1]) for _, lines in rows)
    logger.info("wrote %d slices (%d with haemorrhage) and %s", len(rows), n_pos, csv_path)
    return csv_path
