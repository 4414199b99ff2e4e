"""Synthetic longitudinal MS lesion data in the ISBI 2015 training layout: FLAIR plus two raters' masks.

Layout (data-notes, ``ms_segment``; :mod:`medtasks.data.ms_isbi` reads it)::

    <out>/training/trainingNN/preprocessed/trainingNN_MM_flair_pp.nii   float32 FLAIR, skull-stripped
    <out>/training/trainingNN/masks/trainingNN_MM_mask1.nii             uint8 0/1, rater 1
    <out>/training/trainingNN/masks/trainingNN_MM_mask2.nii             uint8 0/1, rater 2
    <out>/.complete                                                     the parameters, written last

``NN`` = subject, ``MM`` = timepoint, from 01. Only FLAIR is written (the release also holds MPRAGE,
PD, T2 and ``orig/``). Uncompressed ``.nii``; RAS affine, volume centred on the origin, s/qform code 1.

Phantom (all in millimetres; the brain fills ~80 % of the field of view along each axis, so any
shape works; the default is 96 x 112 x 64 at 1.5 x 1.5 x 2.25 mm, both in-plane sizes divisible
by 16). Anatomy per subject (:data:`TISSUES`): ellipsoidal brain with a wavy surface, cortex
(FLAIR-brighter grey matter) with a folded grey/white boundary and CSF-dark sulci, the
interhemispheric fissure, deep grey nuclei, lateral ventricles tilted into the coronal
"butterfly" with occipital horns plus a third ventricle (dark: CSF is suppressed). Lesions:
0-15 per subject (about a fifth of subjects get 0-2), 3/4 periventricular (within ~10 mm of
the ventricles), the rest deep white matter; volumes log-uniform from 3 to ~250 voxels, about
one in seven a confluent chain of 3-5 blobs along the ventricle; always inside white matter,
1.45-1.9x its brightness with soft edges. Timepoints share the anatomy; lesions grow or shrink
a little and some appear at a later timepoint. Each scan gets its own smooth multiplicative
bias field (about +-12 %), intensity scale, partial-volume blur and Rician noise (sigma ~3.5 %
of white matter); outside the brain is exactly 0.

Raters outline the same lesions at slightly different borders (radius +-5 % rater 1, -15..+12 %
rater 2, per lesion and scan); a lesion under 25 voxels is missed by one rater (mostly 2) one time
in four: inter-rater Dice about 0.8-0.9. Same seed, same bytes, whatever ``workers``.

Example:
    >>> root = generate_ms_flair("synth_ms", n_subjects=4, progress=False)  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "training" / "training01" / "masks").iterdir())  # doctest: +SKIP
    ['training01_01_mask1.nii', 'training01_01_mask2.nii', 'training01_02_mask1.nii', 'training01_02_mask2.nii']
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
from medtasks.synth.common import marker_matches, run_parallel

__all__ = ["TISSUES", "SubjectPlan", "SubjectVolumes", "generate_ms_flair", "ms_affine", "plan_ms_dataset",
           "render_subject", "scan_files"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1  # bump when the phantom or the layout changes, so that old .complete markers are redone
TISSUES = {"background": 0, "csf": 1, "gm": 2, "wm": 3, "deep_gm": 4}
_FLAIR = np.array([0.0, 0.12, 1.22, 1.0, 1.12], dtype=np.float32)  # relative FLAIR level per tissue label
_WM = TISSUES["wm"]


@dataclass(frozen=True)
class SubjectPlan:
    """One subject: its number (``trainingNN``), timepoint count, lesion count and seed."""

    subject: int
    n_timepoints: int
    n_lesions: int
    seed: int


@dataclass
class SubjectVolumes:
    """A rendered subject, arrays indexed ``[x, y, z]`` (RAS voxel axes) like the files."""

    tissue: np.ndarray  # uint8 labels of TISSUES, shared by the timepoints
    ventricles: np.ndarray  # bool
    flair: list[np.ndarray]  # float32 per timepoint
    mask1: list[np.ndarray]  # uint8 0/1 per timepoint
    mask2: list[np.ndarray]


@dataclass
class _Lesion:
    centres: np.ndarray  # (k, 3) mm, one row per blob (k > 1: confluent)
    radii: np.ndarray  # (k, 3) mm
    rot: np.ndarray  # (k, 3, 3), columns = the blob's axes
    level: float  # relative FLAIR level
    scale: np.ndarray  # (n_tp,) radius factor per timepoint, 0 = not (yet) there
    delta: np.ndarray  # (n_tp, 2) relative border offset of each rater
    missed: np.ndarray  # (n_tp, 2) bool


def scan_files(subject: int, timepoint: int) -> dict[str, str]:
    """Relative POSIX paths of one scan's files: ``flair``, ``mask1``, ``mask2``.

    Example:
        >>> scan_files(3, 1)["mask1"]
        'training/training03/masks/training03_01_mask1.nii'
    """
    sid = f"training{subject:02d}"
    stem = f"{sid}_{timepoint:02d}"
    return {"flair": f"training/{sid}/preprocessed/{stem}_flair_pp.nii",
            "mask1": f"training/{sid}/masks/{stem}_mask1.nii", "mask2": f"training/{sid}/masks/{stem}_mask2.nii"}


def ms_affine(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """RAS voxel-to-world affine with the given spacing, the volume's centre at the origin.

    Example:
        >>> ms_affine((3, 3, 3), (1.0, 1.0, 2.0))[:3, 3].tolist()
        [-1.0, -1.0, -2.0]
    """
    aff = np.diag([*(float(s) for s in spacing), 1.0])
    aff[:3, 3] = [-(n - 1) / 2.0 * float(s) for n, s in zip(shape, spacing)]
    return aff


def plan_ms_dataset(n_subjects: int, seed: int, timepoints: tuple[int, int] = (2, 2)) -> list[SubjectPlan]:
    """Timepoint and lesion counts and seeds of every subject, all from ``default_rng(seed)``.

    With 4 or more subjects at least one has "very few" (0-2) lesions.

    Example:
        >>> [p.n_timepoints for p in plan_ms_dataset(3, seed=0, timepoints=(2, 2))]
        [2, 2, 2]
    """
    rng = np.random.default_rng(seed)
    plans, few = [], []
    for s in range(1, n_subjects + 1):
        n_tp = int(rng.integers(timepoints[0], timepoints[1] + 1))
        few.append(bool(rng.random() < 0.2))
        n_les = int(rng.integers(0, 3)) if few[-1] else int(rng.integers(3, 16))
        plans.append(SubjectPlan(s, n_tp, n_les, int(rng.integers(2**31))))
    if n_subjects >= 4 and not any(few):
        k = int(rng.integers(n_subjects))
        p = plans[k]
        plans[k] = SubjectPlan(p.subject, p.n_timepoints, int(rng.integers(0, 3)), p.seed)
    return plans


def _grid(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[np.ndarray]:
    """Open (broadcastable) millimetre coordinates of the voxel centres, origin at the volume centre."""
    return [((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(s)).reshape([-1 if a == i else 1
                                                                                        for i in range(3)])
            for a, (n, s) in enumerate(zip(shape, spacing))]


def _waves(rng: np.random.Generator, grid: list[np.ndarray], n_modes: int, wavelength: float) -> np.ndarray:
    """Smooth random field (sum of plane waves of about ``wavelength`` mm), zero mean, unit std."""
    out = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)), dtype=np.float32)
    for _ in range(n_modes):
        d = rng.normal(size=3)
        d *= 2.0 * math.pi / (wavelength * rng.uniform(0.7, 1.4) * np.linalg.norm(d))
        phase = np.float32(rng.uniform(0.0, 2.0 * math.pi))
        out += np.cos(grid[0] * np.float32(d[0]) + grid[1] * np.float32(d[1]) + grid[2] * np.float32(d[2]) + phase)
    return out * np.float32(math.sqrt(2.0 / n_modes))


def _anatomy(rng: np.random.Generator, shape: tuple[int, int, int],
             spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Tissue labels and the ventricle mask of one subject."""
    grid = _grid(shape, spacing)
    fov = np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float)
    semi = fov * np.array([0.40, 0.42, 0.40]) * rng.uniform(0.92, 1.0, 3)
    centre = rng.normal(0.0, 0.01, 3) * fov
    x, y, z = ((g - np.float32(c)) / np.float32(a) for g, c, a in zip(grid, centre, semi))
    rho = np.sqrt(x * x + y * y + z * z)
    brain = rho < 1.0 + 0.035 * _waves(rng, grid, 8, 80.0)
    wm = rho < 0.84 + 0.06 * _waves(rng, grid, 24, 28.0)
    sulci = _waves(rng, grid, 24, 14.0) > 1.2
    tissue = np.zeros(shape, dtype=np.uint8)
    tissue[brain] = TISSUES["gm"]
    tissue[brain & wm] = _WM
    fissure = (np.abs(grid[0] - np.float32(centre[0])) < 0.5 * spacing[0] + 0.6) & (z > -0.1) & (rho > 0.3)
    tissue[brain & ((~wm & sulci) | fissure)] = TISSUES["csf"]
    for side in (-1.0, 1.0):  # deep grey nuclei (basal ganglia / thalamus)
        tissue[brain & (((x - side * 0.22) / 0.11) ** 2 + ((y + 0.02) / 0.2) ** 2 + ((z + 0.1) / 0.12) ** 2 < 1)] = \
            TISSUES["deep_gm"]
    enlarge = rng.uniform(0.85, 1.4)  # atrophy widens the ventricles
    vent = np.zeros(shape, dtype=bool)
    theta = math.radians(rng.uniform(28.0, 40.0))
    for side in (-1.0, 1.0):  # lateral ventricles: tilted wings in the coronal plane ("butterfly")
        back = np.clip(-y, 0.0, None) / 0.4  # 0 at the centre, 1 at the occipital horn
        u = x - side * (0.1 + 0.06 * back)
        v = z - (0.1 - 0.2 * back * back)
        along = u * (side * math.sin(theta)) + v * math.cos(theta)
        across = u * math.cos(theta) - v * (side * math.sin(theta))
        vent |= (across / (0.065 * enlarge)) ** 2 + (along / 0.19) ** 2 + (y / 0.42) ** 2 < 1.0
    vent &= np.abs(x) > 0.012  # septum pellucidum
    vent |= (np.abs(x) < 0.014 * enlarge) & (np.abs(y) < 0.12) & (z > -0.22) & (z < 0.04)  # third ventricle
    vent &= brain
    tissue[vent] = TISSUES["csf"]
    return tissue, vent


def _plan_lesions(rng: np.random.Generator, plan: SubjectPlan, tissue: np.ndarray, vent: np.ndarray,
                  spacing: tuple[float, float, float]) -> list[_Lesion]:
    from scipy.ndimage import distance_transform_edt

    sp = np.asarray(spacing, dtype=float)
    voxvol = float(np.prod(sp))
    wm = tissue == _WM
    dist = distance_transform_edt(~vent, sampling=sp) if vent.any() else np.full(tissue.shape, np.inf)
    band = 10.0 + 2.0 * sp.max()
    peri = np.flatnonzero(wm & (dist >= 0.5 * sp.max()) & (dist <= band))
    deep = np.flatnonzero(wm & (dist > band))
    origin = (np.asarray(tissue.shape) - 1) / 2.0
    n_tp = plan.n_timepoints
    lesions = []
    for _ in range(plan.n_lesions):
        periventricular = deep.size == 0 or (peri.size > 0 and rng.random() < 0.75)
        pool = peri if periventricular else deep
        if pool.size == 0:
            break
        idx = np.array(np.unravel_index(int(pool[rng.integers(pool.size)]), tissue.shape), dtype=float)
        centre = (idx - origin + rng.uniform(-0.4, 0.4, 3)) * sp
        n_blobs = int(rng.integers(3, 6)) if periventricular and rng.random() < 0.15 else 1
        vols = np.exp(rng.uniform(math.log(60), math.log(400), n_blobs) if n_blobs > 1
                      else rng.uniform(math.log(3), math.log(250), 1))
        r_eq = (3.0 * vols * voxvol / (4.0 * math.pi)) ** (1.0 / 3.0)
        aspect = np.exp(rng.normal(0.0, 0.25, (n_blobs, 3)))
        aspect /= np.prod(aspect, axis=1, keepdims=True) ** (1.0 / 3.0)
        direction = np.array([rng.normal(0.0, 0.3), 1.0, rng.normal(0.0, 0.3)])  # along the ventricle
        direction /= np.linalg.norm(direction)
        offsets = np.cumsum(np.r_[0.0, 1.1 * (r_eq[:-1] + r_eq[1:]) / 2.0])
        centres = centre + offsets[:, None] * direction[None, :]
        scale = np.exp(np.cumsum(rng.normal(0.02, 0.06, n_tp)))
        scale /= scale[0]
        if n_tp > 1 and rng.random() < 0.15:
            scale[: int(rng.integers(1, n_tp))] = 0.0  # a new lesion at a later timepoint
        delta = np.stack([rng.uniform(-0.05, 0.05, n_tp), rng.uniform(-0.15, 0.12, n_tp)], axis=1)
        missed = np.zeros((n_tp, 2), dtype=bool)
        for t in range(n_tp):  # a small lesion is missed by one rater (mostly rater 2) one scan in four
            if vols.sum() < 25 and rng.random() < 0.25:
                missed[t, int(rng.random() < 0.7)] = True
        lesions.append(_Lesion(centres, r_eq[:, None] * aspect, np.linalg.qr(rng.normal(size=(n_blobs, 3, 3)))[0],
                               float(rng.uniform(1.45, 1.9)), scale, delta, missed))
    return lesions


def _rasterise(lesions: list[_Lesion], t: int, tissue: np.ndarray, grid: list[np.ndarray],
               spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Soft lesion fraction, lesion FLAIR level and the two raters' masks of timepoint ``t``."""
    sp, mid = np.asarray(spacing, dtype=float), (np.asarray(tissue.shape) - 1) / 2.0
    frac = np.zeros(tissue.shape, dtype=np.float32)
    level = np.zeros(tissue.shape, dtype=np.float32)
    masks = [np.zeros(tissue.shape, dtype=bool), np.zeros(tissue.shape, dtype=bool)]
    for les in lesions:
        s = float(les.scale[t])
        if s == 0.0:
            continue
        reach = les.radii.max() * s * 1.4 + sp  # voxels beyond 1.4 radii are not lesion
        lo = np.floor((les.centres.min(axis=0) - reach) / sp + mid).astype(int)
        hi = np.ceil((les.centres.max(axis=0) + reach) / sp + mid).astype(int) + 1
        box = tuple(slice(max(0, int(a)), min(n, int(b))) for a, b, n in zip(lo, hi, tissue.shape))
        if any(b.stop <= b.start for b in box):
            continue
        pts = [g[tuple(box[i] if i == a else slice(None) for i in range(3))] for a, g in enumerate(grid)]
        q = np.full(tuple(b.stop - b.start for b in box), np.inf, dtype=np.float32)
        for c, r, rot in zip(les.centres, les.radii, les.rot):
            d = [sum((pts[i] - np.float32(c[i])) * np.float32(rot[i, k]) for i in range(3)) / np.float32(r[k] * s)
                 for k in range(3)]
            np.minimum(q, d[0] ** 2 + d[1] ** 2 + d[2] ** 2, out=q)
        wm = tissue[box] == _WM
        soft = np.clip((1.69 - q) / (1.69 - 0.5625), 0.0, 1.0) * wm  # 1 inside 0.75 r, 0 beyond 1.3 r
        here = soft > frac[box]
        level[box][here] = les.level
        np.maximum(frac[box], soft, out=frac[box])
        for rater in range(2):
            if les.missed[t, rater]:
                continue
            m = (q < (1.0 + les.delta[t, rater]) ** 2) & wm
            if m.sum() < 3:  # a lesion is at least 3 voxels: the 3 nearest white-matter voxels
                order = np.argsort(np.where(wm, q, np.inf), axis=None, kind="stable")[:3]
                m.flat[order[np.isfinite(q.flat[order]) & wm.flat[order]]] = True
            masks[rater][box] |= m
    return frac, level, masks


def _flair(rng: np.random.Generator, tissue: np.ndarray, frac: np.ndarray, level: np.ndarray,
           grid: list[np.ndarray]) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    img = _FLAIR[tissue] * (np.float32(1.0) - frac) + level * frac
    img = gaussian_filter(img, sigma=0.6)  # partial volume
    img *= np.exp(np.float32(0.12) * _waves(rng, grid, 6, 250.0))  # bias field
    scale = np.float32(rng.uniform(250.0, 400.0))
    img *= scale
    sigma = np.float32(0.035) * scale
    real = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(img.shape, dtype=np.float32)
    out = np.sqrt(real * real + imag * imag)  # Rician magnitude
    out[tissue == TISSUES["background"]] = 0.0  # skull-stripped
    return out.astype(np.float32)


def render_subject(plan: SubjectPlan, shape: tuple[int, int, int] = (96, 112, 64),
                   spacing: tuple[float, float, float] = (1.5, 1.5, 2.25)) -> SubjectVolumes:
    """Anatomy, lesions, FLAIR and both raters' masks of every timepoint of one subject.

    Example:
        >>> vol = render_subject(plan_ms_dataset(1, seed=0)[0], (48, 56, 32), (3.0, 3.0, 4.5))
        >>> vol.flair[0].shape, bool((vol.tissue[vol.mask1[0] == 1] == TISSUES["wm"]).all())
        ((48, 56, 32), True)
    """
    tissue, vent = _anatomy(np.random.default_rng([plan.seed, 0]), shape, spacing)
    lesions = _plan_lesions(np.random.default_rng([plan.seed, 1]), plan, tissue, vent, spacing)
    grid = _grid(shape, spacing)
    out = SubjectVolumes(tissue, vent, [], [], [])
    for t in range(plan.n_timepoints):
        frac, level, masks = _rasterise(lesions, t, tissue, grid, spacing)
        out.flair.append(_flair(np.random.default_rng([plan.seed, 2, t]), tissue, frac, level, grid))
        out.mask1.append(masks[0].astype(np.uint8))
        out.mask2.append(masks[1].astype(np.uint8))
    return out


def _write_subject(plan: SubjectPlan, out: Path, shape: tuple[int, int, int],
                   spacing: tuple[float, float, float]) -> list[int]:
    """Render and write one subject; return its rater-1 lesion voxels per timepoint."""
    import nibabel as nib

    vol = render_subject(plan, shape, spacing)
    affine = ms_affine(shape, spacing)
    for t in range(plan.n_timepoints):
        files = scan_files(plan.subject, t + 1)
        for key, data in (("flair", vol.flair[t]), ("mask1", vol.mask1[t]), ("mask2", vol.mask2[t])):
            img = nib.Nifti1Image(data, affine)
            img.header.set_xyzt_units("mm", "sec")
            img.set_qform(affine, code=1)
            img.set_sform(affine, code=1)
            with atomic_path(out / files[key]) as tmp:
                tmp.write_bytes(img.to_bytes())  # no time stamps: same bytes every run
    return [int(m.sum()) for m in vol.mask1]


def generate_ms_flair(out: str | Path, n_subjects: int = 12, timepoints: int | tuple[int, int] = 2,
                      shape: tuple[int, int, int] = (96, 112, 64),
                      spacing: tuple[float, float, float] = (1.5, 1.5, 2.25), seed: int = 0,
                      progress: bool = True, workers: int = 1) -> Path:
    """Write a synthetic ISBI-2015-layout MS lesion set (module docstring) and return its root.

    Args:
        out: Root folder (what ``prepare --source`` takes); files go to ``out/training/``.
        n_subjects: Number of subjects, 1-99 (the release: 5 training, 14 test).
        timepoints: Scans per subject: an int, or an inclusive ``(lo, hi)`` range drawn per
            subject (the release: 4-6); 1-99.
        shape: Voxels along x (left-right), y (posterior-anterior), z (inferior-superior).
        spacing: Voxel size in mm (written into the affine and the header).
        seed: Seeds everything; the same seed writes byte-identical files.
        progress: Show a progress bar.
        workers: Processes rendering subjects; the files do not depend on it.

    Idempotent: when ``out/.complete`` holds the same parameters the call returns at once;
    otherwise the set is (re)written, files of other parameters under ``out/training`` are
    removed, and ``.complete`` is written last.

    Example:
        >>> root = generate_ms_flair("synth_ms", n_subjects=2, timepoints=(1, 3),
        ...                          shape=(48, 56, 32), spacing=(3.0, 3.0, 4.5), progress=False)  # doctest: +SKIP
        >>> sorted(p.name for p in (root / "training").iterdir())  # doctest: +SKIP
        ['training01', 'training02']
    """
    out = Path(out)
    lo, hi = (timepoints, timepoints) if isinstance(timepoints, int) else (int(v) for v in timepoints)
    shape = tuple(int(v) for v in shape)  # type: ignore[assignment]
    spacing = tuple(float(v) for v in spacing)  # type: ignore[assignment]
    if not (1 <= n_subjects <= 99 and 1 <= lo <= hi <= 99 and len(shape) == 3 and min(shape) >= 16
            and len(spacing) == 3 and min(spacing) > 0):
        raise ValueError(f"need 1 <= n_subjects, timepoints <= 99 (two-digit names), a 3-D shape of >= 16 voxels "
                         f"per axis and positive spacing; got n_subjects={n_subjects}, timepoints={timepoints}, "
                         f"shape={shape}, spacing={spacing}")
    params = {"format": _FORMAT_VERSION, "n_subjects": int(n_subjects), "timepoints": [lo, hi],
              "shape": list(shape), "spacing": list(spacing), "seed": int(seed)}
    marker = out / ".complete"
    plans = plan_ms_dataset(n_subjects, seed, (lo, hi))
    expected = {p for plan in plans for t in range(1, plan.n_timepoints + 1)
                for p in scan_files(plan.subject, t).values()}
    if marker_matches(marker, params, *(out / p for p in sorted(expected))):
        logger.info("synthetic MS FLAIR set already complete in %s", out)
        return out
    marker.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("writing %d synthetic MS subjects (%d scans, %s voxels of %s mm) to %s", len(plans),
                sum(p.n_timepoints for p in plans), "x".join(map(str, shape)), "x".join(f"{s:g}" for s in spacing), out)
    job = functools.partial(_write_subject, out=out, shape=shape, spacing=spacing)
    voxels = run_parallel(job, plans, workers, "synthetic MS FLAIR", "subject", progress)
    for path in sorted((out / "training").rglob("*"), reverse=True):  # stale files, then empty folders
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
        elif path.is_file() and path.relative_to(out).as_posix() not in expected:
            path.unlink()
    write_text_atomic(marker, json.dumps(params, sort_keys=True) + "\n")
    flat = [v for subject in voxels for v in subject]
    logger.info("wrote %d scans (%d with lesions, median %d lesion voxels) to %s", len(flat),
                sum(v > 0 for v in flat), int(np.median(flat)), out)
    return out
