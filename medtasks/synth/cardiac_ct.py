"""Synthetic AI CUP 2025 cardiac CT: contrast chest CT with myocardium, aortic valve and calcium labels.

Written in the competition's layout (data-notes), so ``medtasks prepare cardiac_seg --source <out>``
runs on it as on the real files::

    <out>/training_image/patientNNNN.nii.gz      int16 HU volume, axes (x, y, z)
    <out>/training_label/patientNNNN_gt.nii.gz   uint8 labels, the image's affine:
                                                 0 background, 1 myocardium, 2 aortic valve, 3 calcification
    <out>/.complete                              the generator's parameters, written last

Patients are ``patient0001`` .. ``patient<n>``. The affine is diagonal (``aff2axcodes`` =
``('R', 'A', 'S')``: voxel axes towards the patient's right, anterior, superior) with the
spacing on the diagonal, centred in-plane, and a per-patient table height (z origin).

The phantom (HU): air -1000 outside an elliptic body (subcutaneous fat -100, soft tissue ~45),
lungs ~-850 with slow texture above a diaphragm dome (liver ~60 below), ribs / sternum /
vertebrae 450-900 with discs, a descending aorta beside the spine, and a heart in epicardial fat:
right ventricle, both atria (blood with a thin wall), the left ventricle as a truncated prolate
spheroid whose blood pool (250-380 HU, contrast) is enclosed by a myocardial shell (80-120 HU,
**label 1**), the ascending aorta leaving its base, and at the aortic root a ring (torus, ~140 HU,
**label 2**). The anatomy is drawn in units of the in-plane field of view (a cardiac
reconstruction FOV: the chest is cut at the left and right edges), so it fills any grid with
isotropic proportions; the spacing only sets the affine (the default 0.8 mm grid is a
scaled-down chest, not to scale).

Calcium (**label 3**, overwrites 2): exactly ``floor(calcium_fraction * n + 0.5)`` patients
(chosen at random) carry spots, most one, ``max(1, round(0.4 * positives))`` of them 2-3 (none
when there is a single positive). Each spot is 2-6 face-connected voxels grown on the valve ring
or one voxel beside it (never on myocardium), at 540-1100 HU before noise (far above the clinical
130 HU threshold and above the blood pool), with faint blooming into its unlabelled neighbours;
spots keep a gap of at least two voxels, so each is one connected component. Other heart voxels
stay below ~500 HU (blood <= 380 plus noise), but the blood pool is above 130 HU as in any
contrast CT: the clinical threshold alone does not find calcium.

Then a 0.5-voxel Gaussian blur (partial volume) and correlated noise (sigma 12-20 HU).
Same seed, same bytes: per-patient seeds drawn up front, gzip without name or time, so the
files do not depend on ``workers``.

Example:
    >>> root = generate_cardiac_ct("synth_cardiac", n_patients=5, progress=False)  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "training_label").iterdir())[:1]  # doctest: +SKIP
    ['patient0001_gt.nii.gz']
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medtasks.io.atomic import atomic_path, write_text_atomic
from medtasks.io.nifti import nifti_gz_bytes
from medtasks.synth.common import marker_matches, remove_stale, run_parallel

__all__ = ["LABELS", "CardiacPlan", "cardiac_files", "generate_cardiac_ct", "plan_cardiac_dataset",
           "render_cardiac"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1  # bump when the phantom or the layout changes, so that old .complete markers are redone
LABELS = {0: "background", 1: "myocardium", 2: "aortic_valve", 3: "calcification"}
IMAGE_DIR, LABEL_DIR = "training_image", "training_label"
_ZOOM = 1.3  # half field of view = 1 / _ZOOM anatomy units: a cardiac FOV, the chest cut at the sides
_DIRS6 = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])


@dataclass(frozen=True)
class CardiacPlan:
    """One patient: id, number of calcium spots (0 = calcium-free) and the seed of everything else."""

    patient_id: int
    calcium_spots: int
    seed: int


def plan_cardiac_dataset(n_patients: int, seed: int, calcium_fraction: float = 0.2) -> list[CardiacPlan]:
    """Ids 1..n, which patients carry calcium (and how many spots), per-patient seeds.

    Example:
        >>> sum(p.calcium_spots > 0 for p in plan_cardiac_dataset(50, seed=0))
        10
    """
    rng = np.random.default_rng(seed)
    n_pos = int(math.floor(calcium_fraction * n_patients + 0.5))
    positives = rng.permutation(n_patients)[:n_pos]
    n_multi = max(1, round(0.4 * n_pos)) if n_pos >= 2 else 0
    spots = np.zeros(n_patients, dtype=int)
    spots[positives] = 1
    spots[positives[:n_multi]] = rng.integers(2, 4, size=n_multi)
    seeds = rng.integers(2**31, size=n_patients)
    return [CardiacPlan(i + 1, int(spots[i]), int(seeds[i])) for i in range(n_patients)]


def cardiac_files(patient_id: int) -> tuple[str, str]:
    """Relative (POSIX) paths of one patient's image and label."""
    stem = f"patient{patient_id:04d}"
    return f"{IMAGE_DIR}/{stem}.nii.gz", f"{LABEL_DIR}/{stem}_gt.nii.gz"


def _unit(v: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


class _Grid:
    """Open coordinate grids (units of the in-plane half field of view) and shape helpers."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> None:
        self.unit_mm = min(shape[0] * spacing[0], shape[1] * spacing[1]) / 2.0 * _ZOOM
        axes = [((np.arange(n) - (n - 1) / 2.0) * s / self.unit_mm).astype(np.float32) for n, s in zip(shape, spacing)]
        self.x, self.y, self.z = np.ix_(*axes)
        self.vpu = self.unit_mm / min(spacing)  # voxels per unit along the finest axis
        self.zhalf = shape[2] * spacing[2] / 2.0 / self.unit_mm

    def ellipsoid(self, c: np.ndarray, semi: tuple[float, float, float]) -> np.ndarray:
        return (((self.x - c[0]) / semi[0]) ** 2 + ((self.y - c[1]) / semi[1]) ** 2
                + ((self.z - c[2]) / semi[2]) ** 2) <= 1.0

    def axial(self, c: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Height along ``axis`` through ``c`` and squared distance from that axis."""
        dx, dy, dz = self.x - c[0], self.y - c[1], self.z - c[2]
        h = dx * axis[0] + dy * axis[1] + dz * axis[2]
        return h, dx * dx + dy * dy + dz * dz - h * h


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean unit-variance Gaussian noise, correlated over ``sigma`` voxels."""
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    return n / np.float32(n.std() or 1.0)


def _coarse_field(rng: np.random.Generator, shape: tuple[int, int, int], cells: int = 8) -> np.ndarray:
    """Slowly varying unit field: a coarse random grid, linearly upsampled."""
    from scipy.ndimage import zoom

    coarse = rng.standard_normal(tuple(max(2, n // cells) for n in shape)).astype(np.float32)
    return zoom(coarse, [n / c for n, c in zip(shape, coarse.shape)], order=1, grid_mode=True, mode="nearest")


def _anatomy(g: _Grid, rng: np.random.Generator, shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free HU (float32) and labels 0/1/2 of one patient."""
    hu = np.full(shape, -1000.0, dtype=np.float32)
    lab = np.zeros(shape, dtype=np.uint8)
    x, y, z = g.x, g.y, g.z
    ax, ay, by = rng.uniform(0.84, 0.95), rng.uniform(0.6, 0.74), rng.uniform(-0.05, 0.05)
    r_body = (x / ax) ** 2 + ((y - by) / ay) ** 2
    body = np.broadcast_to(r_body <= 1.0, shape)
    hu[body] = -100.0  # subcutaneous fat
    inner = np.broadcast_to(r_body <= 0.86, shape)
    hu[inner] = rng.uniform(35, 55)
    bone = rng.uniform(600, 900)
    rib_ring = (r_body > 0.72) & (r_body <= 0.80) & (np.cos(2 * np.pi * (z / 0.3 + 0.6 * (y - by) / ay)) > 0.55)
    hu[rib_ring] = bone
    hu[np.broadcast_to((x / 0.08) ** 2 + ((y - by - 0.84 * ay) / 0.035) ** 2 <= 1.0, shape) & inner] = 450.0
    # Lungs: two ellipsoids inside the ribs, texture of slow variation.
    lung = (g.ellipsoid(np.array([0.4, by, 0.0]), (0.36, 0.7 * ay, 2.5))
            | g.ellipsoid(np.array([-0.44, by, 0.0]), (0.38, 0.7 * ay, 2.5)))
    lung &= np.broadcast_to(r_body <= 0.66, shape)
    hu[lung] = (-850.0 + 25.0 * _coarse_field(rng, shape))[lung]
    s = rng.uniform(0.85, 1.15)  # heart size and pose (the diaphragm follows the heart)
    c_lv = np.array([rng.uniform(-0.2, -0.06), by + rng.uniform(0.0, 0.1), g.zhalf * rng.uniform(-0.3, 0.0)])
    dome = c_lv[2] - 0.25 * s + 0.8 * (x - 0.1) ** 2 + 0.4 * (y - by) ** 2  # liver and abdomen below it
    hu[(z < dome) & np.broadcast_to(r_body <= 0.66, shape)] = rng.uniform(50, 70)
    # Spine: vertebral body (cortical rim, cancellous core, discs), canal; descending aorta beside it.
    cy = by - 0.62 * ay
    rv = (x / 0.11) ** 2 + ((y - cy) / 0.1) ** 2
    disc = ((z / 0.24 + rng.uniform()) % 1.0) < 0.18
    hu[np.broadcast_to(rv <= 1.0, shape)] = bone
    hu[np.broadcast_to(rv <= 0.6, shape)] = 280.0
    hu[(rv <= 1.0) & disc] = 80.0
    hu[np.broadcast_to((x / 0.05) ** 2 + ((y - cy + 0.17) / 0.05) ** 2 <= 1.0, shape)] = 15.0
    blood = rng.uniform(250, 380)
    hu[np.broadcast_to(((x + 0.15) / 0.065) ** 2 + ((y - cy - 0.16) / 0.065) ** 2 <= 1.0, shape)] = blood
    # Heart: chambers in epicardial fat, LV = truncated spheroid with a myocardial shell.
    a_lv = _unit(np.array([-0.55, 0.5, -0.65]) + rng.uniform(-0.15, 0.15, 3))  # base -> apex: left, anterior, down
    L, S = 0.22 * s, 0.12 * s
    t = max(0.055 * s, 2.2 / g.vpu)
    b = 0.6 * L  # base plane at this distance from the centre
    base = c_lv - b * a_lv
    hu[g.ellipsoid(c_lv + np.array([0.06, -0.02, 0.05]) * s, (0.36 * s, 0.27 * s, 0.34 * s)) & inner] = -70.0
    for off, semi, hu_blood in (((0.13, 0.12, 0.0), (0.2, 0.09, 0.19), blood * 0.9),   # right ventricle
                                ((0.2, -0.14, 0.12), (0.11, 0.1, 0.12), blood * 0.85),  # right atrium
                                ((0.0, -0.16, 0.16), (0.13, 0.09, 0.11), blood)):       # left atrium
        c = c_lv + np.array(off) * s
        hu[g.ellipsoid(c, tuple(v + 0.02 for v in semi))] = 60.0
        hu[g.ellipsoid(c, semi)] = hu_blood
    q1, rho2 = g.axial(c_lv, a_lv)
    cavity = (q1 / L) ** 2 + rho2 / S**2 <= 1.0
    outer = (q1 / (L + t)) ** 2 + rho2 / (S + t) ** 2 <= 1.0
    kept = q1 >= -b
    myo = outer & ~cavity & kept
    hu[myo] = rng.uniform(80, 120)
    hu[cavity & kept] = blood
    # Ascending aorta from the LV base (outflow tract into the cavity) up and out of the volume.
    side = _unit(np.cross(a_lv, [0.0, 0.0, 1.0]))
    side *= np.sign(side[0]) or 1.0  # towards the patient's right
    r_ao = 0.085 * s
    root = base + 0.35 * S * side
    a_ao = _unit(np.array([0.25, -0.15, 1.0]) + rng.uniform(-0.1, 0.1, 3))
    h, r2 = g.axial(root, a_ao)
    channel = (r2 <= r_ao**2) & (h >= -0.35 * L)
    hu[channel & (outer | (h >= 0))] = blood
    myo &= ~channel
    r_minor = max(0.025 * s, 1.3 / g.vpu)
    valve = (np.sqrt(r2) - r_ao) ** 2 + (h - 0.01) ** 2 <= r_minor**2
    hu[valve] = 140.0
    lab[myo] = 1
    lab[valve] = 2
    return hu, lab


def _add_calcium(rng: np.random.Generator, hu: np.ndarray, lab: np.ndarray, n_spots: int) -> int:
    """Grow ``n_spots`` separated 2-6 voxel spots on / beside the valve ring; label 3, bright HU."""
    from scipy.ndimage import binary_dilation

    ring = lab == 2
    allowed = binary_dilation(ring) & (lab != 1)
    blocked = np.zeros(lab.shape, dtype=bool)
    candidates = np.argwhere(ring)
    if not len(candidates):
        logger.warning("cardiac phantom: the valve ring is outside the volume; no calcium drawn")
        return 0
    placed = 0
    for _ in range(n_spots):
        size, cluster = int(rng.integers(2, 7)), []
        for _attempt in range(100):
            start = tuple(int(v) for v in candidates[rng.integers(len(candidates))])
            if blocked[start]:
                continue
            cluster = [start]
            for _step in range(60):
                if len(cluster) >= size:
                    break
                v = tuple(int(a) for a in np.add(cluster[rng.integers(len(cluster))], _DIRS6[rng.integers(6)]))
                if (all(0 <= a < n for a, n in zip(v, lab.shape)) and allowed[v] and not blocked[v]
                        and v not in cluster):
                    cluster.append(v)
            if len(cluster) >= 2:
                break
        if len(cluster) < 2:
            logger.warning("cardiac phantom: no room for calcium spot %d of %d on the valve ring", placed + 1, n_spots)
            continue
        idx = tuple(np.array(cluster).T)
        value = rng.uniform(600, 1100)
        halo = binary_dilation(_spot_mask(idx, lab.shape))
        halo &= lab != 3
        halo[idx] = False
        hu[halo] += np.float32(0.15) * (np.float32(value) - hu[halo])  # faint blooming, stays unlabelled
        hu[idx] = value * rng.uniform(0.9, 1.0, len(cluster))
        lab[idx] = 3
        for v in cluster:  # gap of >= 2 voxels to the next spot: separate components at any connectivity
            blocked[tuple(slice(max(0, a - 2), a + 3) for a in v)] = True
        placed += 1
    return placed


def _spot_mask(idx: tuple[np.ndarray, ...], shape: tuple[int, ...]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[idx] = True
    return m


def render_cardiac(plan: CardiacPlan, shape: tuple[int, int, int] = (96, 96, 64),
                   spacing: tuple[float, float, float] = (0.8, 0.8, 1.5),
                   noise: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One patient's ``(hu int16, labels uint8, affine 4x4)``, arrays indexed ``[x, y, z]``.

    Example:
        >>> hu, lab, affine = render_cardiac(CardiacPlan(1, 1, 7), (64, 64, 40))  # doctest: +SKIP
        >>> sorted(np.unique(lab).tolist())  # doctest: +SKIP
        [0, 1, 2, 3]
    """
    from scipy.ndimage import gaussian_filter

    shape = tuple(int(v) for v in shape)  # type: ignore[assignment]
    rng = np.random.default_rng(plan.seed)
    g = _Grid(shape, spacing)
    hu, lab = _anatomy(g, rng, shape)
    hu = gaussian_filter(hu, 0.5)
    if plan.calcium_spots:
        _add_calcium(rng, hu, lab, plan.calcium_spots)
    if noise:
        hu += np.float32(rng.uniform(12, 20)) * _smooth_noise(rng, shape, 0.6)
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:2, 3] = [-(n - 1) / 2.0 * s for n, s in zip(shape[:2], spacing[:2])]
    affine[2, 3] = -round(float(rng.uniform(150, 250)) * 2) / 2.0  # table height, 0.5 mm steps
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16), lab, affine


def _write_patient(plan: CardiacPlan, out: Path, shape: tuple[int, int, int],
                   spacing: tuple[float, float, float]) -> int:
    """Render and write one patient; return its number of calcium voxels."""
    hu, lab, affine = render_cardiac(plan, shape, spacing)
    for rel, data in zip(cardiac_files(plan.patient_id), (hu, lab)):
        with atomic_path(out / rel) as tmp:
            tmp.write_bytes(nifti_gz_bytes(data, affine))
    return int((lab == 3).sum())


def generate_cardiac_ct(out: str | Path, n_patients: int = 20, shape: tuple[int, int, int] = (96, 96, 64),
                        spacing: tuple[float, float, float] = (0.8, 0.8, 1.5), calcium_fraction: float = 0.2,
                        seed: int = 0, progress: bool = True, workers: int = 1) -> Path:
    """Write a synthetic AI CUP cardiac CT training set (layout: module docstring) and return ``out``.

    Args:
        out: Root folder (what ``prepare --source`` takes).
        n_patients: Number of patients (the competition: 50 training patients).
        shape: Voxels along (x, y, z); x, y >= 32, z >= 16.
        spacing: Voxel size in mm along (x, y, z); the z extent must be >= 0.6 of the in-plane one.
        calcium_fraction: Share of patients with calcium (the competition: 10 of 50); the count is
            ``floor(fraction * n + 0.5)``.
        seed: Seeds everything; the same seed writes byte-identical files.
        progress: Show a progress bar.
        workers: Processes rendering patients; the files do not depend on it.

    Idempotent: when ``out/.complete`` holds the same parameters the call returns at once;
    otherwise the set is (re)written, other files in the two folders are removed, and
    ``.complete`` is written last.

    Example:
        >>> root = generate_cardiac_ct("synth_cardiac", n_patients=4, shape=(64, 64, 40),
        ...                            progress=False)  # doctest: +SKIP
        >>> (root / "training_label" / "patient0004_gt.nii.gz").is_file()  # doctest: +SKIP
        True
    """
    out = Path(out)
    shape = tuple(int(v) for v in shape)  # type: ignore[assignment]
    spacing = tuple(float(v) for v in spacing)  # type: ignore[assignment]
    if len(shape) != 3 or len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"shape and spacing need three values (x, y, z) > 0; got {shape}, {spacing}")
    if n_patients < 1 or n_patients > 9999 or min(shape[:2]) < 32 or shape[2] < 16 or not 0 <= calcium_fraction <= 1:
        raise ValueError(f"need 1 <= n_patients <= 9999, shape x, y >= 32 and z >= 16, 0 <= calcium_fraction <= 1; "
                         f"got n_patients={n_patients}, shape={shape}, calcium_fraction={calcium_fraction}")
    if shape[2] * spacing[2] < 0.6 * min(shape[0] * spacing[0], shape[1] * spacing[1]):
        raise ValueError(f"z extent {shape[2] * spacing[2]:g} mm is too short for the heart: need >= 0.6 of the "
                         f"in-plane field of view ({min(shape[0] * spacing[0], shape[1] * spacing[1]):g} mm)")
    params = {"format": _FORMAT_VERSION, "n_patients": int(n_patients), "shape": list(shape),
              "spacing": list(spacing), "calcium_fraction": float(calcium_fraction), "seed": int(seed)}
    plans = plan_cardiac_dataset(n_patients, seed, calcium_fraction)
    expected = {p for plan in plans for p in cardiac_files(plan.patient_id)}
    marker = out / ".complete"
    if marker_matches(marker, params, *(out / p for p in sorted(expected))):
        logger.info("synthetic cardiac CT already complete in %s", out)
        return out
    marker.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("writing %d synthetic cardiac CT patients (%s voxels, %s mm) to %s", n_patients,
                "x".join(map(str, shape)), "x".join(f"{v:g}" for v in spacing), out)
    job = functools.partial(_write_patient, out=out, shape=shape, spacing=spacing)
    counts = run_parallel(job, plans, workers, "synthetic cardiac CT", "patient", progress)
    remove_stale(out, (IMAGE_DIR, LABEL_DIR), expected)
    write_text_atomic(marker, json.dumps(params, sort_keys=True) + "\n")
    logger.info("wrote %d patients (%d with calcium, %d calcium voxels) to %s", n_patients,
                sum(c > 0 for c in counts), sum(counts), out)
    return out
