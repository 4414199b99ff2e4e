"""Synthetic paediatric chest X-rays in the Kermany release's layout (pneumonia vs normal).

So that ``medtasks prepare xray_classify --source <folder>`` runs on real files, this writes what
``data-notes.md`` describes, quirks included::

    <out>/chest_xray/{train,val,test}/NORMAL/IM-NNNN-KKKK.jpeg | NORMAL2-IM-NNNN-KKKK.jpeg
    <out>/chest_xray/{train,val,test}/PNEUMONIA/personN_bacteria_K.jpeg | personN_virus_K.jpeg
    <out>/dicom/{NORMAL,PNEUMONIA}/SYN-CXR-NNNN.dcm     extra CR/DX radiographs (12-bit)
    <out>/.complete                                     the generator's parameters, written last

Quirks reproduced: several images per child (the child is in the name: ``personN`` / ``IM-NNNN`` /
``NORMAL2-IM-NNNN``; ``K`` of pneumonia names is a running counter per subtype, ``KKKK`` of normal
names counts the child's images), so a re-split must group by child; ``val`` holds only
``val_per_class`` images per class, taken from children whose other images stay in ``train``; a
few children per class ("leak" children, about 5 %) have images in both ``train`` and ``test``.
Some JPEGs are stored as RGB (as in the release) and the size varies: width ``size``, height
``size * U(0.82, 1.08)`` (the release's images vary too, so tasks must resize).

Images: radiograph-like anatomy in a child-specific shape (images of one child are follow-ups:
same anatomy, new positioning and exposure): body and neck soft tissue, dark lung fields, heart
and spine brighter, faint posterior and anterior ribs, clavicles, hila with vessel markings, lung
texture, film markers, exposure / gamma / heel-effect changes, blur and noise. Pneumonia adds
patchy opacities confined to the lungs: bacterial = one or two larger consolidations, viral =
two to four fainter perihilar patches on both sides; contrast runs from subtle (about the lung
texture's) to dense: learnable, not trivial. DICOM files hold ``round(v * 4095)`` (12-bit);
MONOCHROME1 ones store ``4095 - that``, so a reader that inverts sees the same picture. PatientIDs
are synthetic (``SYN-CXR-0001``), the name ``ANONYMOUS^SYNTHETIC``.

Same seed, same bytes: per-image seeds are drawn up front (files do not depend on ``workers``),
JPEGs carry no time stamps, DICOM UIDs derive from the seeds.

Example:
    >>> root = generate_chest_xray("synth_cxr", n_children=20, size=128, val_per_class=2,
    ...                            progress=False)  # doctest: +SKIP
    >>> sorted(p.name for p in (root / "chest_xray").iterdir())  # doctest: +SKIP
    ['test', 'train', 'val']
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from medtasks.io.atomic import atomic_path, write_text_atomic
from medtasks.synth.common import marker_matches, remove_stale, run_parallel

__all__ = ["ImagePlan", "generate_chest_xray", "plan_chest_xray", "render_chest"]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 2  # bump when the phantom or the layout changes, so that old .complete markers are redone
ROOTS = ("chest_xray", "dicom")
_BACTERIA_P = 0.65  # the release: 2,530 bacterial vs 1,345 viral images
_LEAK_FRACTION = 0.05
_CR, _DX = "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1"  # CR / DX-for-presentation storage


@dataclass(frozen=True)
class ImagePlan:
    """One file to write; ``child`` is the id the indexer parses from its name (or PatientID)."""

    path: str  # POSIX, relative to ``out``
    child: str
    pneumonia: int
    subtype: str  # bacteria | virus | normal
    split: str  # train | val | test | "" (DICOM extras)
    child_seed: int  # anatomy, shared by the child's images
    seed: int  # positioning, exposure, pathology of this image
    leak: bool = False  # the child has images in train and test
    dicom: int = -1  # index of a DICOM extra, -1 for a JPEG


def _ids(rng: np.random.Generator, n: int) -> list[int]:
    """``n`` sorted ids from 1..2n+1 with gaps, like the release's numbering."""
    return sorted(int(v) for v in rng.choice(np.arange(1, 2 * n + 2), n, replace=False)) if n else []


def plan_chest_xray(n_children: int, images_per_child: tuple[int, int] = (1, 3), pneumonia_fraction: float = 0.6,
                    seed: int = 0, val_per_class: int = 8, test_fraction: float = 0.2,
                    dicom: int = 4) -> list[ImagePlan]:
    """Every file of the set (names, classes, splits, seeds), all from ``default_rng(seed)``.

    Raises:
        ValueError: too few children or images per class for test, val and train.

    Example:
        >>> plans = plan_chest_xray(20, val_per_class=2, dicom=0)
        >>> sum(p.split == "val" for p in plans)
        4
    """
    lo, hi = (int(v) for v in images_per_child)
    if n_children < 2 or not 1 <= lo <= hi or not 0 <= test_fraction < 1 or val_per_class < 0 or dicom < 0:
        raise ValueError(f"need n_children >= 2, 1 <= images_per_child[0] <= [1], 0 <= test_fraction < 1, "
                         f"val_per_class >= 0, dicom >= 0; got {n_children}, {images_per_child}, "
                         f"{test_fraction}, {val_per_class}, {dicom}")
    rng = np.random.default_rng(seed)
    n_pneu = min(max(round(n_children * pneumonia_fraction), 1), n_children - 1)
    # (label, subtype, name prefix, child id, n_images, child_seed)
    kids: list[tuple[int, str, str, str, int, int]] = []
    for pid in _ids(rng, n_pneu):
        subtype = "bacteria" if rng.random() < _BACTERIA_P else "virus"
        kids.append((1, subtype, "", f"person{pid}", int(rng.integers(lo, hi + 1)), int(rng.integers(2**31))))
    n_norm2 = int((rng.random(n_children - n_pneu) < 0.5).sum())
    for prefix, ids in (("IM", _ids(rng, n_children - n_pneu - n_norm2)), ("NORMAL2-IM", _ids(rng, n_norm2))):
        for nid in ids:
            child = f"{prefix}-{nid:04d}"
            kids.append((0, "normal", child, child, int(rng.integers(lo, hi + 1)), int(rng.integers(2**31))))
    splits: dict[str, list[str]] = {}
    leaks: set[str] = set()
    for label in (0, 1):
        group = [kids[i] for i in rng.permutation(len(kids)) if kids[i][0] == label]
        n_test = round(len(group) * test_fraction)
        n_leak = min(n_test, max(1, round(len(group) * _LEAK_FRACTION))) if n_test else 0
        for j, (_, _, _, child, n, _) in enumerate(group):
            if j < n_leak:  # leak child: first half of its images in train, the rest in test
                n = max(n, 2)
                splits[child] = ["train"] * (n // 2) + ["test"] * (n - n // 2)
                leaks.add(child)
            else:
                splits[child] = [("test" if j < n_test else "train")] * n
        # val: one image per train child (its last), then second-last images, ... (the release's
        # 8 + 8 val images come from children that also have train images)
        train = [k[3] for k in group[n_test:]]
        depth = max((len(splits[c]) for c in train), default=0)
        order = [(c, len(splits[c]) - 1 - r) for r in range(depth) for c in train if len(splits[c]) > r]
        if len(order) <= val_per_class:
            raise ValueError(f"{'PNEUMONIA' if label else 'NORMAL'}: {len(order)} train image(s) cannot give "
                             f"{val_per_class} val images and keep one in train; raise n_children")
        for c, i in order[:val_per_class]:
            splits[c][i] = "val"
    counters = {"bacteria": 0, "virus": 0}
    plans = []
    for label, subtype, prefix, child, _, child_seed in kids:
        for i, split in enumerate(splits[child]):
            if label:
                counters[subtype] += 1
                name = f"{child}_{subtype}_{counters[subtype]}.jpeg"
            else:
                name = f"{prefix}-{i + 1:04d}.jpeg"
            folder = "PNEUMONIA" if label else "NORMAL"
            plans.append(ImagePlan(f"chest_xray/{split}/{folder}/{name}", child, label, subtype, split, child_seed,
                                   int(rng.integers(2**31)), child in leaks))
    for i in range(dicom):
        label = (i // 2) % 2  # modality and photometric alternate within a class: no shortcut
        child = f"SYN-CXR-{i + 1:04d}"
        subtype = ("bacteria" if rng.random() < _BACTERIA_P else "virus") if label else "normal"
        plans.append(ImagePlan(f"dicom/{'PNEUMONIA' if label else 'NORMAL'}/{child}.dcm", child, label, subtype, "",
                               int(rng.integers(2**31)), int(rng.integers(2**31)), dicom=i))
    return plans


def _band(d: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-((d / width) ** 2))


def _segment_distance(x: np.ndarray, y: np.ndarray, p: tuple[float, float], q: tuple[float, float]) -> np.ndarray:
    dx, dy = q[0] - p[0], q[1] - p[1]
    t = np.clip(((x - p[0]) * dx + (y - p[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - p[0] - t * dx, y - p[1] - t * dy)


def _in_lung(x: float, y: float, lungs: list[tuple[float, float, float, float]]) -> bool:
    return any(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 0.8 for cx, cy, rx, ry in lungs)


def render_chest(height: int, width: int, child_seed: int, seed: int, pneumonia: bool,
                 subtype: str = "normal") -> np.ndarray:
    """A frontal chest radiograph as float32 ``(height, width)`` in [0, 1], air dark, bone bright.

    Anatomy coordinates are in units of the image width, origin mid-chest, +x = image right,
    +y = down; a child's anatomy comes from ``child_seed``, the rest from ``seed``.

    Example:
        >>> render_chest(64, 64, 1, 2, pneumonia=True, subtype="virus").shape
        (64, 64)
    """
    ca, rng = np.random.default_rng(child_seed), np.random.default_rng(seed)
    lw, lh, heart_w = ca.uniform(0.9, 1.08), ca.uniform(0.9, 1.08), ca.uniform(0.85, 1.15)
    scale = ca.uniform(0.88, 1.04) * rng.uniform(0.97, 1.03)
    angle, cx0, cy0 = rng.normal(0.0, 0.03), rng.normal(0.0, 0.015), rng.normal(0.0, 0.02)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (cols + 0.5) / width - 0.5 - cx0
    v = (rows + 0.5 - height / 2) / width - cy0
    cos, sin = float(np.cos(angle)), float(np.sin(angle))  # Python floats keep the grids float32
    x = (u * cos + v * sin) / scale
    y = (-u * sin + v * cos) / scale
    px = 1.0 / (width * scale)  # one pixel in anatomy units
    blur = functools.partial(gaussian_filter, mode="nearest")

    def box(points: list[tuple[float, float]], margin: float) -> tuple[slice, slice]:
        """Pixel window holding anatomy ``points`` +- ``margin`` (small structures: no full-image pass)."""
        ax, ay = np.array(points, dtype=np.float64).T
        c = (scale * (ax * cos - ay * sin) + 0.5 + cx0) * width - 0.5
        r = (scale * (ax * sin + ay * cos) + cy0) * width + height / 2 - 0.5
        m = margin / px + 2
        return (slice(max(0, int(r.min() - m)), max(0, int(r.max() + m) + 1)),
                slice(max(0, int(c.min() - m)), max(0, int(c.max() + m) + 1)))

    # Trunk, shoulders and neck.
    body = ((x / (0.46 * lw)) ** 2 + ((y - 0.12) / 0.62) ** 2 < 1) | ((x / 0.11) ** 2 + ((y + 0.45) / 0.13) ** 2 < 1)
    body |= (x / (0.52 * lw)) ** 2 + ((y + 0.18) / 0.22) ** 2 < 1
    body = body.astype(np.float32)
    lungs = [(s * 0.21 * lw, -0.04 - 0.01 * (s < 0), 0.15 * lw, (0.29 + 0.01 * (s > 0)) * lh) for s in (-1, 1)]
    lung = np.zeros_like(x)
    for cx, cy, rx, ry in lungs:
        # Boxier below the centre: lateral costophrenic angles instead of a round base.
        ax = np.abs((x - cx) / rx)
        lung = np.maximum(lung, (np.where(y > cy, ax**3, ax * ax) + ((y - cy) / ry) ** 2 < 1).astype(np.float32))
    lung = blur(lung, 0.01 / px)
    heart = blur(((((x - 0.05) / (0.15 * heart_w)) ** 2 + ((y - 0.13) / 0.12) ** 2) < 1).astype(np.float32), 0.012 / px)
    img = 0.05 + 0.42 * blur(body, 0.006 / px) - 0.30 * lung * (1 - heart) + 0.03 * heart
    spine = _band(x, 0.035) * (0.8 + 0.2 * np.cos(2 * np.pi * y / 0.055)) * body
    img += 0.12 * spine
    # Ribs: equally spaced curves, one pass via the distance to the nearest rib of the family.
    t = np.maximum(np.abs(x) - 0.04, 0.0)
    for offset, slope, curve, amp, lateral in ((-0.33, 0.25, 0.35, 0.065, (0.04, 0.45)),
                                               (-0.27, -0.35, 0.5, 0.03, (0.12, 0.40))):
        phase = (y - offset - slope * t - curve * t * t) / 0.058
        near = np.abs(phase - np.round(phase)) * 0.058
        mask = (np.abs(x) > lateral[0]) & (np.abs(x) < lateral[1]) & ((phase > -0.5) & (phase < 9.5))
        img += amp * _band(near, 0.007) * mask * body * (0.35 + 0.65 * lung) * (y < 0.3)  # seen best in lungs
    clav = _band(y + 0.36 + 0.12 * (np.abs(x) - 0.05), 0.013) * ((np.abs(x) > 0.05) & (np.abs(x) < 0.33))
    img += 0.08 * clav
    # Hila and vessel markings fanning out into the lungs: normal structure a model must not call disease.
    for s in (-1, 1):
        hx, hy = s * 0.1, -0.02 + rng.normal(0, 0.01)
        img += 0.07 * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / (2 * 0.035**2))
        for _ in range(6):
            a, length = rng.uniform(-1.2, 1.2), rng.uniform(0.1, 0.24)
            dx, dy = s * float(np.cos(a)), float(np.sin(a))
            p0, q = (hx + 0.03 * dx, hy + 0.03 * dy), (hx + length * dx, hy + length * dy)  # not all through one dot
            win = box([p0, q], 0.02)
            xs, ys = x[win], y[win]
            fade = 1 - np.clip(np.hypot(xs - hx, ys - hy) / length, 0, 1)
            img[win] += 0.035 * _band(_segment_distance(xs, ys, p0, q), 0.005) * fade * lung[win]
    texture = blur(rng.normal(size=x.shape).astype(np.float32), 0.02 / px)
    img += 0.02 * texture / (texture.std() + 1e-6) * lung
    if pneumonia:
        prng = np.random.default_rng([seed, 1])  # own stream: the rest of the image is as without disease
        patch = blur(prng.normal(size=x.shape).astype(np.float32), 0.012 / px)
        patch = np.clip(0.5 + 0.3 * patch / (patch.std() + 1e-6), 0.0, 1.0)
        viral = subtype == "virus"
        n_blobs = int(prng.integers(2, 5)) if viral else 1 + int(prng.random() < 0.3)
        side = int(prng.choice([-1, 1]))
        for _ in range(n_blobs):
            while True:  # rejection-sample a centre well inside a lung (viral: perihilar)
                s = int(prng.choice([-1, 1])) if viral else side
                bx = s * (prng.uniform(0.1, 0.22) if viral else prng.uniform(0.08, 0.34) * lw)
                by = prng.uniform(-0.12, 0.12) if viral else prng.uniform(-0.28, 0.2) * lh
                if _in_lung(bx, by, lungs):
                    break
            r = prng.uniform(0.045, 0.09) if viral else prng.uniform(0.06, 0.12)
            contrast = prng.uniform(0.10, 0.28) if viral else prng.uniform(0.14, 0.40)
            aspect = prng.uniform(0.7, 1.4)
            env = np.exp(-(((x - bx) / (r * aspect)) ** 2 + ((y - by) * aspect / r) ** 2) / 2)
            img += contrast * env * (0.3 + 0.7 * patch if viral else 0.6 + 0.4 * patch) * lung
    # Exposure: heel effect, gain/offset, gamma; then detector blur and noise.
    g = rng.uniform(-0.04, 0.04)
    img = img + g * (x if rng.random() < 0.5 else y)
    img = np.clip(rng.uniform(-0.04, 0.06) + rng.uniform(0.85, 1.2) * img, 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    img = blur(img, 0.7) + rng.normal(0.0, rng.uniform(0.008, 0.025), size=img.shape)
    if rng.random() < 0.6:  # radio-opaque side marker in a top corner, independent of the class
        mh, mw = max(2, height // 28), max(2, width // 36)
        r0, c0 = int(rng.integers(4, max(5, height // 10))), int(rng.integers(4, max(5, width // 8)))
        if rng.random() < 0.5:
            c0 = width - c0 - mw
        img[r0:r0 + mh, c0:c0 + mw] = rng.uniform(0.85, 1.0)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _write_dicom(path: Path, img: np.ndarray, plan: ImagePlan) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from medtasks.synth.dicom_writer import _IMPLEMENTATION_NAME, _IMPLEMENTATION_UID, format_ds

    i = plan.dicom
    modality, mono1 = ("CR", "DX")[i % 2], (i // 2 + i) % 2 == 1
    value = np.rint(img * 4095).astype("<u2")
    stored = (4095 - value).astype("<u2") if mono1 else value  # inverted storage, same picture once read

    def uid(tag: str) -> str:  # deterministic: derived from the plan, not from time or randomness
        return generate_uid(entropy_srcs=[str(plan.seed), plan.child, tag])

    sop_class = _CR if modality == "CR" else _DX
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, uid("sop")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID, meta.ImplementationVersionName = _IMPLEMENTATION_UID, _IMPLEMENTATION_NAME
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "20180101", "120000"
    ds.Modality, ds.Manufacturer = modality, "MEDTASKS SYNTHETIC"
    ds.PatientName, ds.PatientID, ds.PatientSex = "ANONYMOUS^SYNTHETIC", plan.child, "O"
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "AP"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid("study"), uid("series")
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.PixelSpacing = [format_ds(350.0 / stored.shape[1])] * 2  # ~35 cm field
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    lo, hi = np.percentile(stored, [1, 99])
    ds.WindowCenter, ds.WindowWidth = format_ds((lo + hi) / 2), format_ds(max(hi - lo, 2.0))
    if modality == "DX":  # CR files often lack the rescale; DX ones carry the identity
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.PixelData = stored.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _write_image(plan: ImagePlan, out: Path, size: int) -> None:
    """Render and write one file (atomic); everything comes from the plan's seeds."""
    rng = np.random.default_rng([plan.seed, 7])
    height = int(round(size * rng.uniform(0.82, 1.08)))
    img = render_chest(height, size, plan.child_seed, plan.seed, bool(plan.pneumonia), plan.subtype)
    path = out / plan.path
    if plan.dicom >= 0:
        _write_dicom(path, img, plan)
        return
    from PIL import Image

    im = Image.fromarray(np.rint(img * 255).astype(np.uint8))
    with atomic_path(path) as tmp:  # PIL writes no time stamp: same bytes every run
        (im.convert("RGB") if rng.random() < 0.08 else im).save(tmp, format="JPEG", quality=90)


def generate_chest_xray(out: str | Path, n_children: int = 150, images_per_child: tuple[int, int] = (1, 3),
                        pneumonia_fraction: float = 0.6, size: int = 256, seed: int = 0, val_per_class: int = 8,
                        test_fraction: float = 0.2, dicom: int = 4, progress: bool = True,
                        workers: int = 1) -> Path:
    """Write a synthetic Kermany chest X-ray release (layout: module docstring) and return ``out``.

    Args:
        out: Root folder (what ``prepare --source`` takes); holds ``chest_xray/`` and ``dicom/``.
        n_children: Children (the release: ~5,856 images of a few thousand children).
        images_per_child: Inclusive range of images per child (leak children get at least 2).
        pneumonia_fraction: Share of pneumonia children (the release: ~73 % of images).
        size: Image width in pixels (>= 64); heights vary (module docstring).
        seed: Seeds everything; the same seed writes byte-identical files.
        val_per_class: Images per class in the original-style ``val`` folder (the release: 8).
        test_fraction: Share of children per class in ``test`` (leak children included).
        dicom: Extra DICOM radiographs in ``dicom/{NORMAL,PNEUMONIA}/``.
        progress: Show a progress bar.
        workers: Processes rendering images; the files do not depend on it.

    Idempotent: when ``out/.complete`` holds the same parameters and every file exists the call
    returns at once; otherwise the set is (re)written, stale files under ``chest_xray/`` and
    ``dicom/`` removed, and ``.complete`` written last.

    Example:
        >>> generate_chest_xray("synth_cxr", n_children=30, size=128, progress=False)  # doctest: +SKIP
        PosixPath('synth_cxr')
    """
    out = Path(out)
    if size < 64:
        raise ValueError(f"size must be >= 64, got {size}")
    plans = plan_chest_xray(n_children, images_per_child, pneumonia_fraction, seed, val_per_class, test_fraction, dicom)
    params = {"format": _FORMAT_VERSION, "n_children": int(n_children), "images_per_child": [int(v) for v in
              images_per_child], "pneumonia_fraction": float(pneumonia_fraction), "size": int(size), "seed": int(seed),
              "val_per_class": int(val_per_class), "test_fraction": float(test_fraction), "dicom": int(dicom)}
    marker = out / ".complete"
    if marker_matches(marker, params, *(out / p.path for p in plans)):
        logger.info("synthetic chest X-ray set already complete in %s", out)
        return out
    marker.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    logger.info("writing %d synthetic chest X-ray files (%d children) to %s", len(plans), n_children, out)
    # Images are independent and fully determined by their plan: same files for any worker count.
    run_parallel(functools.partial(_write_image, out=out, size=size), plans, workers, "synthetic chest X-ray",
                 "image", progress, chunksize=8)
    remove_stale(out, ROOTS, {p.path for p in plans}, drop_empty_roots=True)
    write_text_atomic(marker, json.dumps(params, sort_keys=True) + "\n")
    logger.info("wrote %s JPEGs (%d leak children) and %d DICOM to %s", {s: sum(p.split == s for p in plans) for s in
                ("train", "val", "test")}, len({p.child for p in plans if p.leak}), dicom, out)
    return out
