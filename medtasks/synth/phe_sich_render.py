"""Pixels of one synthetic PHE-SICH-CT-IDS patient: head CT, basal-ganglia haematoma, oedema rim.

The head anatomy is the head-CT phantom's (:func:`medtasks.synth.head_ct_anatomy.render_head`);
this module adds what the PHE data set is about: one (rarely two) spontaneous haematomas in
the basal ganglia, each wrapped in an irregular hypodense perihaematomal oedema (PHE) rim, and
optionally blood in the ventricles (IVH) or in the sulci / Sylvian fissure (SAH), painted with
the phantom's own lesion painter (:func:`medtasks.synth.head_ct_lesions.render_lesions`).

The slab of ``n_slices`` 5 mm slices is placed so that the whole lesion lies inside it with at
least one lesion-free slice below and above (the lesion is shrunk when a short slab demands it).
Each slice averages two thin planes (through-plane partial volume); the PHE mask of a slice is
where the averaged oedema fraction is at least one half and no blood dominates.

Example:
    >>> vol = render_patient(PatientPlan(13, 8, "left", False, False, 60, "Male", 0, 1, 2), matrix=64)
    >>> vol.hu.shape, vol.phe.dtype.name, vol.labels.shape
    ((8, 64, 64), 'uint8', (8, 3))
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage

from medtasks.synth.head_ct import slice_labels
from medtasks.synth.head_ct_anatomy import AIR_HU, HeadShape, outer_half_extent, render_head, sample_head_shape
from medtasks.synth.head_ct_fields import Frame, Pose, WaveField, paint, ramp
from medtasks.synth.head_ct_lesions import SUBTYPES, LesionSpec, render_lesions

__all__ = ["FOV_MM", "LABELS", "SLICE_THICKNESS", "PatientPlan", "PatientVolume", "min_lesion_pixels",
           "render_patient"]

SLICE_THICKNESS = 5.0
FOV_MM = 260.0  # 260 / 512 = 0.5078125 mm, the release's pixel size (case 0001: 0.5078125 x 0.5078125 x 5)
LABELS = ("IVH", "IPH", "SAH")
MIN_LESION_MM2 = 12.0  # a reader's visibility floor (as in head_ct): specks below it are not labelled
_SUBSAMPLES = 2


@dataclass(frozen=True)
class PatientPlan:
    """Everything about one patient except the pixels (drawn by :func:`plan_phe_dataset`)."""

    patient_id: int
    n_slices: int
    side: str  # "left", "right" or "both": the haematoma's basal ganglia (patient's side)
    ivh: bool  # blood extends into the ventricles
    sah: bool  # blood in the subarachnoid space (sulci / Sylvian fissure) near the lesion
    age: int
    sex: str
    expansion: int  # "Hematoma Expansion" column of MedInfo (invented, 0/1)
    head_seed: int
    volume_seed: int


@dataclass(frozen=True)
class _Bleed:
    center: tuple[float, float, float]  # head frame (mm): x to the patient's left, y posterior, z cranial
    radii: tuple[float, float, float]
    rim: float  # mean oedema thickness (mm)
    drop: float  # oedema HU below the local brain value
    blood_hu: float
    seed: int


@dataclass
class PatientVolume:
    """One rendered patient; every (n, m, m) array has slice 0 lowest (most caudal), rows anterior
    to posterior and columns from the patient's right to left (radiological display)."""

    hu: np.ndarray  # int16 HU
    phe: np.ndarray  # uint8 0/1 oedema mask (the label of the data set)
    phe_parts: list[np.ndarray]  # bool oedema mask of each haematoma (one box each per slice)
    labels: np.ndarray  # (n, 3) uint8 in LABELS order, from the blood actually drawn
    pixel_spacing: float
    z0: float  # height (mm) of slice 0
    tissues: dict[str, np.ndarray] = field(default_factory=dict)  # slice-level fractions, if asked


def min_lesion_pixels(pixel_spacing: float) -> int:
    """Smallest labelled area per slice, in pixels."""
    return max(3, int(math.ceil(MIN_LESION_MM2 / pixel_spacing**2)))


def _sample_bleed(rng: np.random.Generator, shape: HeadShape, side: float, scale: float) -> _Bleed:
    """A basal-ganglia haematoma: ovoid, longer front to back, lateral to the internal capsule."""
    r0 = rng.uniform(10.0, 17.0) * scale
    return _Bleed(
        center=(side * rng.uniform(24.0, 30.0), rng.uniform(-12.0, 8.0), shape.z_mid + rng.uniform(40.0, 52.0)),
        radii=(r0 * rng.uniform(0.65, 0.9), r0 * rng.uniform(1.0, 1.4), r0 * rng.uniform(0.55, 0.8)),
        rim=rng.uniform(2.5, 7.0), drop=rng.uniform(5.0, 15.0), blood_hu=rng.uniform(58.0, 85.0),
        seed=int(rng.integers(2**31)))


def _extent(b: _Bleed, tan_pitch: float) -> tuple[float, float]:
    """Conservative range of slice heights the bleed and its rim can reach (irregularity included)."""
    reach_z = 1.45 * b.radii[2] + 1.4 * b.rim + 1.0
    reach_xy = 1.45 * max(b.radii[:2]) + 1.4 * b.rim
    zc = b.center[2] - tan_pitch * b.center[1]  # a voxel's head-frame Z is its plane height + tan(pitch) Y
    half = reach_z + abs(tan_pitch) * reach_xy
    return zc - half, zc + half


def _fit_slab(rng: np.random.Generator, shape: HeadShape, bleeds: list[_Bleed], n: int,
              tan_pitch: float) -> tuple[list[_Bleed], float]:
    """Shrink the bleeds until they fit the slab with a clear slice on each side; pick its start."""
    length = (n - 1) * SLICE_THICKNESS
    for _ in range(40):
        lo = min(_extent(b, tan_pitch)[0] for b in bleeds)
        hi = max(_extent(b, tan_pitch)[1] for b in bleeds)
        if hi - lo + 2.0 * SLICE_THICKNESS <= length:
            break
        bleeds = [replace(b, radii=tuple(0.9 * r for r in b.radii), rim=max(1.0, 0.9 * b.rim)) for b in bleeds]
    first, last = hi + SLICE_THICKNESS - length, lo - SLICE_THICKNESS  # allowed range of the slab start
    if first > last:
        first = last = 0.5 * (first + last)
    # Anatomy: a long slab runs from the vertex down; a short one sits anywhere it still holds the lesion.
    z_top = shape.c_top + shape.skull + rng.uniform(-4.0, 4.0)
    a, b = max(first, shape.z_mid - 60.0), min(last, z_top - length)
    start = rng.uniform(a, b) if a <= b else float(np.clip(z_top - length, first, last))
    return bleeds, float(start)


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian noise with about a pixel of in-plane correlation, scaled to ``sigma`` HU."""
    white = rng.standard_normal(shape, dtype=np.float32)
    delta = np.zeros((1, 9, 9), dtype=np.float32)
    delta[0, 4, 4] = 1.0
    gain = float(np.sqrt((ndimage.gaussian_filter(delta, (0, 0.6, 0.6)) ** 2).sum()))
    return ndimage.gaussian_filter(white, (0, 0.6, 0.6)) * np.float32(sigma / gain)


def _drop_specks(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """Remove 8-connected components smaller than ``min_pixels`` from each slice of a bool mask."""
    out = mask.copy()
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        lab, n = ndimage.label(mask[k], structure=np.ones((3, 3), dtype=bool))
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        small = sizes < min_pixels
        small[0] = False
        out[k][small[lab]] = False
    return out


def render_patient(plan: PatientPlan, matrix: int, noise: bool = True, return_tissues: bool = False) -> PatientVolume:
    """Render one planned patient (deterministic given the plan and the matrix).

    Args:
        plan: The patient's plan.
        matrix: Rows = columns; the pixel size is ``FOV_MM / matrix``.
        noise: Add correlated Gaussian noise (sigma 3-6 HU); off gives clean values for tests.
        return_tissues: Keep slice-level fractions ``ventricles``, ``csf`` (all CSF spaces),
            ``cavity``, ``bone``, ``hematoma``, ``edema``, ``ivh`` and ``sah`` in ``tissues``.
    """
    rng = np.random.default_rng(plan.volume_seed)
    shape = sample_head_shape(np.random.default_rng(plan.head_seed))
    spacing = FOV_MM / matrix
    pose = Pose(cx=rng.uniform(-6.0, 6.0), cy=rng.uniform(-8.0, 4.0), theta=math.radians(rng.uniform(-8.0, 8.0)),
                pitch=math.radians(rng.uniform(-4.0, 8.0)))
    sides = {"left": (1.0,), "right": (-1.0,), "both": (1.0, -1.0)}[plan.side]
    bleeds = [_sample_bleed(rng, shape, s, 1.0 if len(sides) == 1 else 0.75) for s in sides]
    bleeds, start = _fit_slab(rng, shape, bleeds, plan.n_slices, math.tan(pose.pitch))
    n = plan.n_slices
    z_centers = start + SLICE_THICKNESS * np.arange(n)
    offsets = SLICE_THICKNESS * ((np.arange(_SUBSAMPLES) + 0.5) / _SUBSAMPLES - 0.5)
    z_planes = (z_centers[:, None] + offsets[None, :]).ravel()

    # Render only the box around the head (as head_ct does); the rest of the image is air.
    half, (reach_x, reach_y) = (matrix - 1) / 2.0, outer_half_extent(shape, pose.theta)
    j0 = max(0, int(math.floor((pose.cx - reach_x) / spacing + half)))
    j1 = min(matrix, int(math.ceil((pose.cx + reach_x) / spacing + half)) + 1)
    i0 = max(0, int(math.floor((pose.cy - reach_y) / spacing + half)))
    i1 = min(matrix, int(math.ceil((pose.cy + reach_y) / spacing + half)) + 1)
    frame = Frame.build(pose, (j0 - half) * spacing, (i0 - half) * spacing, (i1 - i0, j1 - j0), spacing, z_planes)
    hu, fields = render_head(shape, frame, np.full((i1 - i0, j1 - j0), AIR_HU, dtype=np.float32))
    parenchyma = fields.cavity * (1.0 - fields.extras["csf"])

    hem = np.zeros_like(hu)
    edemas = []
    for b in bleeds:
        box = frame.box(b.center, 1.5 * max(b.radii) + 1.5 * b.rim + 2.0)
        X, Y, Z = frame.sub(box)
        brng = np.random.default_rng(b.seed)
        irregular = WaveField(brng, 3, (8.0, 20.0))(X, Y, Z)
        rim_field = WaveField(brng, 4, (10.0, 28.0))(X, Y, Z)
        q = np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip((X, Y, Z), b.center, b.radii)))
        dist = (1.0 - q * (1.0 + 0.12 * irregular)) * min(b.radii)  # ~ mm inside the blob's surface
        blood = ramp(dist, spacing) * parenchyma[box]
        rim = b.rim * np.clip(1.0 + 0.45 * rim_field, 0.4, 1.4)  # thick here, thin there
        oedema = np.clip(ramp(dist + rim, spacing) * parenchyma[box] - blood, 0.0, 1.0)
        hu[box] -= np.float32(b.drop) * oedema  # hypodense, keeping the grey/white texture below it
        paint(hu, np.clip(b.blood_hu + 2.5 * fields.texture[box], 50.0, 90.0), blood, box)
        np.maximum(hem[box], blood, out=hem[box])
        full = np.zeros_like(hu)
        full[box] = oedema
        edemas.append(full)

    specs = []
    if plan.ivh:  # rupture into the ipsilateral (sometimes also the other) lateral ventricle
        vents = tuple("vent_left" if s > 0 else "vent_right" for s in sides)
        if len(vents) == 1 and rng.random() < 0.3:
            vents = ("vent_left", "vent_right")
        specs.append(LesionSpec("intraventricular", blood_hu=rng.uniform(55.0, 80.0),
                                fill=rng.uniform(0.3, 0.75), sides=vents, seed=int(rng.integers(2**31))))
    if plan.sah:  # Sylvian fissure or the convexity sulci on the bleeding side, near the lesion's level
        s, zc = sides[0], bleeds[0].center[2]
        if rng.random() < 0.5:
            center = (s * 0.65 * shape.a, -0.2 * shape.b, min(zc, shape.z_mid + 38.0))
        else:
            phi = (0.0 if s > 0 else math.pi) + rng.uniform(-0.8, 0.8)
            cz = zc + rng.uniform(-8.0, 8.0)
            c = shape.c_top if cz >= 0 else shape.c_low
            sec = 0.93 * math.sqrt(max(1.0 - (cz / c) ** 2, 0.05))
            center = (shape.a * sec * math.cos(phi), shape.b * sec * math.sin(phi), cz)
        r = rng.uniform(18.0, 30.0)
        specs.append(LesionSpec("subarachnoid", center, (r, r, r), blood_hu=rng.uniform(60.0, 85.0),
                                seed=int(rng.integers(2**31))))
    extra = render_lesions(specs, frame, fields, hu)

    def slab(crop: np.ndarray, fill: float = 0.0) -> np.ndarray:
        out = np.full((n, matrix, matrix), fill, dtype=np.float32)
        out[:, i0:i1, j0:j1] = crop.reshape(n, _SUBSAMPLES, i1 - i0, j1 - j0).mean(axis=1)
        return out

    hu_s = slab(hu, AIR_HU)
    if noise:
        hu_s += _noise(rng, hu_s.shape, rng.uniform(3.0, 6.0))
    hem_s, ivh_s, sah_s = slab(hem), slab(extra["intraventricular"]), slab(extra["subarachnoid"])
    blood_s = np.maximum(np.maximum(hem_s, ivh_s), sah_s)
    min_px = min_lesion_pixels(spacing)
    parts = [(slab(e) >= 0.5) & (blood_s < 0.5) for e in edemas]
    phe = _drop_specks(np.logical_or.reduce(parts), min_px)
    parts = [p & phe for p in parts]
    masks = {s: np.zeros((n, 1, 1), dtype=np.float32) for s in SUBTYPES}
    masks.update(intraparenchymal=hem_s, intraventricular=ivh_s, subarachnoid=sah_s)
    sub = slice_labels(masks, pixel_spacing=spacing, min_area_mm2=MIN_LESION_MM2)
    labels = sub[:, [SUBTYPES.index(s) for s in ("intraventricular", "intraparenchymal", "subarachnoid")]]
    tissues = {}
    if return_tissues:
        vent = np.maximum(np.maximum(fields.vent_left, fields.vent_right), fields.vent_mid)
        tissues = {"ventricles": slab(vent), "csf": slab(fields.extras["csf"]), "cavity": slab(fields.cavity),
                   "bone": slab(fields.bone), "hematoma": hem_s, "edema": slab(np.maximum.reduce(edemas)),
                   "ivh": ivh_s, "sah": sah_s}
    return PatientVolume(hu=np.clip(np.rint(hu_s), -1024, 3071).astype(np.int16), phe=phe.astype(np.uint8),
                         phe_parts=parts, labels=np.ascontiguousarray(labels, dtype=np.uint8),
                         pixel_spacing=spacing, z0=float(z_centers[0]), tissues=tissues)
