"""Acute intracranial haemorrhage for the head-CT phantom, one shape and place per subtype.

* epidural: biconvex lens against the inner table, small bounded extent;
* subdural: long thin crescent along the inner table, stops at the midline (falx);
* subarachnoid: fills the CSF of sulci, fissures or basal cisterns inside a blob;
* intraparenchymal: irregular blob in the brain, optionally with a hypodense oedema rim;
* intraventricular: dependent (posterior, the patient is supine) layer in the ventricles.

Each lesion is painted as a soft fraction so that small or thin bleeds are faint, and the
same fraction is returned as the lesion mask from which slice labels are derived.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medtasks.synth.head_ct_anatomy import HeadFields, HeadShape
from medtasks.synth.head_ct_fields import Frame, WaveField, accumulate, paint, ramp

SUBTYPES: tuple[str, ...] = ("epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural")

# Epidural is rarer, as in RSNA, but every subtype keeps enough support for a ~40-patient set.
_WEIGHTS = np.array([0.14, 0.22, 0.20, 0.22, 0.22])


@dataclass(frozen=True)
class LesionSpec:
    """One bleed in head-frame millimetres; fields a subtype does not use stay at defaults."""

    subtype: str
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radii: tuple[float, float, float] = (1.0, 1.0, 1.0)
    thickness: float = 0.0  # epidural / subdural maximum thickness
    blood_hu: float = 70.0
    rim: float = 0.0  # oedema rim (mm) around an intraparenchymal bleed
    edema_hu: float = 18.0
    fill: float = 0.5  # fraction of each bleeding ventricle filled from the dependent side
    sides: tuple[str, ...] = ()
    seed: int = 0


def _section_scale(shape: HeadShape, z: float) -> float:
    c = shape.c_top if z >= 0 else shape.c_low
    return math.sqrt(max(1.0 - (z / c) ** 2, 0.05))


def _pick_z(rng: np.random.Generator, lo: float, hi: float, z_range: tuple[float, float]) -> float:
    """Height within the anatomical range, kept inside the scanned range where possible."""
    lo2, hi2 = max(lo, z_range[0] + 6.0), min(hi, z_range[1] - 6.0)
    if lo2 > hi2:
        return float(np.clip((lo + hi) / 2.0, z_range[0], z_range[1]))
    return float(rng.uniform(lo2, hi2))


def _surface_point(shape: HeadShape, phi: float, z: float, frac: float = 1.0) -> tuple[float, float, float]:
    s = _section_scale(shape, z) * frac
    return (shape.a * s * math.cos(phi), shape.b * s * math.sin(phi), z)


def sample_lesions(rng: np.random.Generator, shape: HeadShape, z_range: tuple[float, float]) -> list[LesionSpec]:
    """Draw 1-4 bleeds (subtypes may repeat or co-occur) for a haemorrhage patient."""
    specs: list[LesionSpec] = []
    n = 1 + int(rng.binomial(3, 0.45))
    for _ in range(n):
        subtype = SUBTYPES[int(rng.choice(len(SUBTYPES), p=_WEIGHTS))]
        specs.append(_sample_one(rng, shape, z_range, subtype))
    deep_iph = any(s.subtype == "intraparenchymal" and abs(s.center[0]) < 30 for s in specs)
    if deep_iph and rng.random() < 0.3:
        specs.append(_sample_one(rng, shape, z_range, "intraventricular"))
    return specs


def _sample_one(rng: np.random.Generator, shape: HeadShape, zr: tuple[float, float], subtype: str) -> LesionSpec:
    a, b, zm, ct = shape.a, shape.b, shape.z_mid, shape.c_top
    seed = int(rng.integers(2**31))
    if subtype == "epidural":
        phi = (0.0 if rng.random() < 0.5 else math.pi) + rng.uniform(-1.0, 1.0)
        rxy = rng.uniform(15.0, 32.0)
        return LesionSpec(subtype, _surface_point(shape, phi, _pick_z(rng, zm + 22.0, ct - 22.0, zr)),
                          (rxy, rxy, rng.uniform(12.0, 26.0)), min(rng.uniform(7.0, 18.0), 0.5 * rxy),
                          rng.uniform(55.0, 88.0), seed=seed)
    if subtype == "subdural":
        thick = rng.uniform(3.0, 5.0) if rng.random() < 0.1 else rng.uniform(5.0, 14.0)
        rxy = rng.uniform(35.0, 75.0)
        center = _surface_point(shape, rng.uniform(0, 2 * math.pi), _pick_z(rng, zm + 18.0, ct - 15.0, zr))
        return LesionSpec(subtype, center, (rxy, rxy, rng.uniform(25.0, 50.0)), thick, rng.uniform(52.0, 85.0),
                          seed=seed)
    if subtype == "intraparenchymal":
        if rng.random() < 0.4:  # deep: basal ganglia / thalamus
            center = (float(rng.choice([-1.0, 1.0])) * rng.uniform(14.0, 28.0), rng.uniform(-15.0, 12.0),
                      _pick_z(rng, zm + 40.0, zm + 60.0, zr))
        else:  # lobar
            center = _surface_point(shape, rng.uniform(0, 2 * math.pi), _pick_z(rng, zm + 25.0, ct - 20.0, zr),
                                    rng.uniform(0.3, 0.72))
        r0 = rng.uniform(3.0, 6.0) if rng.random() < 0.15 else rng.uniform(7.0, 24.0)
        radii = tuple(float(r0 * rng.uniform(0.75, 1.25)) for _ in range(3))
        rim = rng.uniform(2.0, 6.0) if rng.random() < 0.5 else 0.0
        return LesionSpec(subtype, center, radii, blood_hu=rng.uniform(58.0, 88.0), rim=rim,
                          edema_hu=rng.uniform(14.0, 22.0), seed=seed)
    if subtype == "intraventricular":
        sides = (("vent_left",), ("vent_right",), ("vent_left", "vent_right"))[int(rng.integers(3))]
        if rng.random() < 0.3:
            sides = sides + ("vent_mid",)
        fill = 1.0 if rng.random() < 0.15 else rng.uniform(0.3, 0.8)
        return LesionSpec(subtype, blood_hu=rng.uniform(50.0, 80.0), fill=fill, sides=sides, seed=seed)
    kind = int(rng.choice(4, p=[0.3, 0.3, 0.2, 0.2]))  # subarachnoid: sylvian, convexity, fissure, basal
    side = float(rng.choice([-1.0, 1.0]))
    if kind == 0:
        center = (side * 0.65 * a, -0.2 * b, zm + 29.0)
    elif kind == 1:
        center = _surface_point(shape, rng.uniform(0, 2 * math.pi), _pick_z(rng, zm + 25.0, ct - 15.0, zr), 0.93)
    elif kind == 2:
        center = (0.0, rng.uniform(-0.6, 0.6) * b, _pick_z(rng, zm + 40.0, ct - 15.0, zr))
    else:
        center = (0.0, 0.05 * b, zm + 16.0)
    r = rng.uniform(18.0, 40.0)
    return LesionSpec(subtype, center, (r, r, r), blood_hu=rng.uniform(60.0, 88.0), seed=seed)


Box = tuple[slice, slice, slice]


def _extra_axial(spec: LesionSpec, frame: Frame, fields: HeadFields) -> tuple[Box, np.ndarray] | None:
    box = frame.box(spec.center, max(spec.radii) + 2.0)
    if box is None:
        return None
    X, Y, Z = frame.sub(box)
    cx, cy, cz = spec.center
    q2 = ((X - cx) ** 2 + (Y - cy) ** 2) / spec.radii[0] ** 2 + ((Z - cz) / spec.radii[2]) ** 2
    inside = np.clip(1.0 - q2, 0.0, 1.0)
    # Lens (sqrt profile) for epidural, tapering crescent for subdural.
    t = spec.thickness * (np.sqrt(inside) if spec.subtype == "epidural" else inside ** 0.8)
    w = frame.spacing
    f = ramp(fields.d[box] + t, w) * np.clip(t / w, 0.0, 1.0) * fields.cavity[box]
    if spec.subtype == "subdural":  # the falx stops a subdural at the midline
        f *= ramp((1.0 if cx >= 0 else -1.0) * X - 1.0, w)
    return box, f


def _parenchymal_distance(spec: LesionSpec, frame: Frame) -> tuple[Box, np.ndarray] | None:
    """Box and approximate distance (mm, positive inside) to an irregular blob's surface."""
    box = frame.box(spec.center, 1.2 * max(spec.radii) + spec.rim + 2.0)
    if box is None:
        return None
    X, Y, Z = frame.sub(box)
    irregular = WaveField(np.random.default_rng(spec.seed), 3, (8.0, 20.0))(X, Y, Z)
    q = np.sqrt(sum(((c - m) / r) ** 2 for c, m, r in zip((X, Y, Z), spec.center, spec.radii)))
    return box, (1.0 - q * (1.0 + 0.12 * irregular)) * min(spec.radii)


def _ventricular(spec: LesionSpec, frame: Frame, fields: HeadFields, shape: tuple[int, ...]) -> tuple[Box, np.ndarray]:
    f = np.zeros(shape, dtype=np.float32)
    for name in spec.sides:
        vent = getattr(fields, name)
        inside = vent > 0.5
        if not inside.any():
            continue
        if spec.fill >= 1.0:  # cast: the whole ventricle
            accumulate(f, vent)
            continue
        fill = 0.5 if name == "vent_mid" else spec.fill
        y = np.broadcast_to(frame.y_img, shape)[inside]
        level = float(np.quantile(y, 1.0 - fill))  # gravity is +y: blood settles posteriorly
        accumulate(f, vent * ramp(frame.y_img - level, frame.spacing)[None])
    return (slice(None),) * 3, f


def _subarachnoid(spec: LesionSpec, frame: Frame, fields: HeadFields) -> tuple[Box, np.ndarray] | None:
    r = spec.radii[0]
    box = frame.box(spec.center, r + 4.0)
    if box is None:
        return None
    X, Y, Z = frame.sub(box)
    q = np.sqrt((X - spec.center[0]) ** 2 + (Y - spec.center[1]) ** 2 + (Z - spec.center[2]) ** 2) / r
    # Blood distends the sulci it fills: widen the CSF spaces by about a millimetre.
    grow = 1 + 2 * int(1.2 / frame.spacing)
    csf = ndimage.grey_dilation(fields.csf_sah[box], size=(1, grow, grow)) if grow > 1 else fields.csf_sah[box]
    return box, csf * fields.cavity[box] * ramp((1.0 - q) * r, 4.0)


def render_lesions(specs: list[LesionSpec], frame: Frame, fields: HeadFields, hu: np.ndarray) -> dict[str, np.ndarray]:
    """Paint the bleeds into ``hu`` in place; return each subtype's soft mask (P, H, W).

    Oedema rims go in first so that no rim ever covers another lesion's blood.
    """
    masks = {s: np.zeros_like(hu) for s in SUBTYPES}
    for spec in specs:
        if spec.subtype == "intraparenchymal" and spec.rim > 0:
            res = _parenchymal_distance(spec, frame)
            if res is not None:
                box, dist = res
                paint(hu, spec.edema_hu, ramp(dist + spec.rim, frame.spacing) * fields.cavity[box], box)
    for spec in specs:
        if spec.subtype in ("epidural", "subdural"):
            res = _extra_axial(spec, frame, fields)
        elif spec.subtype == "intraparenchymal":
            res = _parenchymal_distance(spec, frame)
            if res is not None:
                res = (res[0], ramp(res[1], frame.spacing) * fields.cavity[res[0]])
        elif spec.subtype == "intraventricular":
            res = _ventricular(spec, frame, fields, hu.shape)
        else:
            res = _subarachnoid(spec, frame, fields)
        if res is None:
            continue
        box, f = res
        # Acute blood stays within 50-90 HU; the texture only mottles it.
        paint(hu, np.clip(spec.blood_hu + 2.0 * fields.texture[box], 50.0, 90.0), f, box)
        accumulate(masks[spec.subtype], f, box)
    return masks
