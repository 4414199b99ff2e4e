"""Anatomy of the synthetic head-CT phantom: scalp, skull, skull base, brain and CSF spaces.

The cranial cavity is an ellipsoid (flatter dome above the widest level, longer below) cut from
below by a skull-base "floor" surface: high anteriorly (orbital roofs), lower in the middle
cranial fossae, lowest in the bowl of the posterior fossa, with bony bumps for the sella/clivus
and the petrous ridges. Below the floor lie thick base bone, then soft tissue with sinuses,
orbits and mastoid air cells. Inside the cavity: a thin layer of CSF, cortex with sulci made
from the zero band of a smooth random field, white matter, deep grey nuclei, the
interhemispheric and Sylvian fissures, basal cisterns and the ventricles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from medtasks.synth.head_ct_fields import Frame, WaveField, accumulate, paint, ramp, segment_distance, smoothstep

AIR_HU = -1000.0


@dataclass(frozen=True)
class HeadShape:
    """Patient-level anatomy; all lengths in mm, densities in HU."""

    a: float  # inner-table half width (x)
    b: float  # inner-table half length (y)
    c_top: float  # cavity height above the widest level
    c_low: float  # ellipsoid depth below it (the floor cuts it first)
    z_mid: float  # floor of the middle cranial fossa
    z_ant: float  # floor of the anterior cranial fossa (orbital roofs)
    z_post: float  # deepest point of the posterior fossa
    skull: float
    scalp: float
    atrophy: float  # 0..1, widens CSF spaces and ventricles
    white_hu: float
    grey_hu: float
    csf_hu: float
    table_hu: float
    diploe_hu: float
    base_bone_hu: float
    scalp_hu: float
    soft_hu: float
    field_seed: int


def sample_head_shape(rng: np.random.Generator) -> HeadShape:
    """Draw one patient's head anatomy."""
    a = rng.uniform(60.0, 70.0)
    z_mid = -rng.uniform(36.0, 44.0)
    white = rng.uniform(25.0, 30.0)
    return HeadShape(
        a=a, b=a * rng.uniform(1.17, 1.32), c_top=rng.uniform(70.0, 84.0), c_low=rng.uniform(100.0, 120.0),
        z_mid=z_mid, z_ant=z_mid + rng.uniform(12.0, 18.0), z_post=z_mid - rng.uniform(16.0, 22.0),
        skull=rng.uniform(4.5, 7.5), scalp=rng.uniform(3.5, 6.5), atrophy=float(rng.beta(1.3, 3.0)),
        white_hu=white, grey_hu=white + rng.uniform(5.0, 9.0), csf_hu=rng.uniform(2.0, 10.0),
        table_hu=rng.uniform(1200.0, 1400.0), diploe_hu=rng.uniform(650.0, 850.0),
        base_bone_hu=rng.uniform(1000.0, 1300.0), scalp_hu=rng.uniform(0.0, 40.0),
        soft_hu=rng.uniform(35.0, 50.0), field_seed=int(rng.integers(2**31)),
    )


def outer_half_extent(shape: HeadShape, theta: float) -> tuple[float, float]:
    """Generous half extents (mm, image x and y) of the head rotated by ``theta``, for cropping."""
    ao, bo = shape.a + shape.skull + shape.scalp + 14.0, shape.b + shape.skull + shape.scalp + 14.0
    ct, st = math.cos(theta), math.sin(theta)
    return math.hypot(ao * ct, bo * st), math.hypot(ao * st, bo * ct)


@dataclass
class HeadFields:
    """Soft tissue maps the lesion painter needs, all (P, H, W) on the frame's planes."""

    d: np.ndarray  # signed distance to the inner skull table (negative inside)
    cavity: np.ndarray  # intracranial space
    csf_sah: np.ndarray  # CSF spaces where subarachnoid blood can go
    vent_left: np.ndarray
    vent_right: np.ndarray
    vent_mid: np.ndarray  # third and fourth ventricles
    bone: np.ndarray
    head: np.ndarray
    texture: np.ndarray  # smooth unit-variance field, reused to texture lesions
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def _floor(shape: HeadShape, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, ...]:
    """Skull-base floor height, base-bone thickness, petrous-ridge and anterior-fossa weights (2-D)."""
    a, b = shape.a, shape.b
    xn, yn = X / np.float32(a), Y / np.float32(b)
    # The sphenoid ridges curve forward laterally, so the anterior fossa boundary is bent too.
    w_ant = smoothstep(-0.18, -0.42, yn + 0.3 * xn * xn)
    w_post = smoothstep(0.05, 0.40, yn)
    post = shape.z_post + 28.0 * np.minimum((xn / 0.8) ** 2, 1.0)
    # Domed orbital roofs with the olfactory groove dipping between them.
    ant = shape.z_ant + 5.0 * np.exp(-(((np.abs(xn) - 0.42) / 0.25) ** 2)) - 3.0 * np.exp(-((xn / 0.12) ** 2))
    floor = shape.z_mid + (ant - shape.z_mid) * w_ant + (post - shape.z_mid) * w_post
    sella = np.exp(-((xn / 0.16) ** 2 + ((yn + 0.12) / 0.2) ** 2))
    ridge = np.zeros_like(X)
    for side in (-1.0, 1.0):
        dist = segment_distance(X, Y, (side * 0.85 * a, 0.22 * b), (side * 0.22 * a, -0.05 * b))
        ridge = np.maximum(ridge, np.exp(-((dist / 5.0) ** 2)))
    floor = floor + 12.0 * sella + 14.0 * ridge
    base_t = 7.0 - 4.0 * w_ant + 14.0 * ridge + 8.0 * sella  # orbital roofs are thin plates
    return floor.astype(np.float32), base_t.astype(np.float32), ridge.astype(np.float32), w_ant.astype(np.float32)


def _inner_distance(shape: HeadShape, X: np.ndarray, Y: np.ndarray, Z: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the inner table: first-order ``(g - 1) / |grad g|``."""
    cz = np.where(Z >= 0, np.float32(shape.c_top), np.float32(shape.c_low))
    gx, gy = X / np.float32(shape.a), Y / np.float32(shape.b)
    gz = Z / cz
    g = np.sqrt(gx * gx + gy * gy + gz * gz)
    np.maximum(g, 1e-3, out=g)
    grad = np.sqrt((gx / shape.a) ** 2 + (gy / shape.b) ** 2 + (gz / cz) ** 2) / g
    return (g - 1.0) / grad + 1.5 * lo


def render_head(shape: HeadShape, frame: Frame, background: np.ndarray) -> tuple[np.ndarray, HeadFields]:
    """Paint the head into a (P, H, W) HU stack starting from a 2-D ``background``.

    Returns:
        The HU stack and the tissue maps (:class:`HeadFields`).
    """
    X, Y, Z, w = frame.X, frame.Y, frame.Z, frame.spacing
    frng = np.random.default_rng(shape.field_seed)
    lo = WaveField(frng, 4, (60.0, 150.0))(X, Y, Z)
    tex = WaveField(frng, 4, (20.0, 60.0))(X, Y, Z)
    sulci = WaveField(frng, 8, (18.0, 32.0), z_scale=0.35)(X, Y, Z)
    cells = WaveField(frng, 5, (4.0, 8.0))  # mastoid air cells, evaluated in their boxes only
    atr = shape.atrophy

    d = _inner_distance(shape, X, Y, Z, lo)
    floor, base_t, ridge, anterior = _floor(shape, X, Y)
    above = Z - floor  # height above the skull-base floor
    inner = ramp(-d, w)
    cavity = inner * ramp(above, w)

    # Skull thickens towards the base and behind the frontal sinus.
    frontal = 9.0 * np.exp(-((X / 22.0) ** 2 + ((Z - (shape.z_ant + 16.0)) / 14.0) ** 2))
    frontal *= smoothstep(0.0, -0.5 * shape.b, Y)
    t_bone = shape.skull * (1.0 + 0.3 * lo) + 5.0 * smoothstep(shape.z_mid + 30.0, shape.z_mid - 5.0, Z) + frontal
    u = np.clip(d / t_bone, 0.0, 1.0)
    shell_hu = shape.table_hu - (shape.table_hu - shape.diploe_hu) * 4.0 * u * (1.0 - u)
    base_hu = shape.base_bone_hu + 500.0 * ridge
    bone_hu = np.where(d > 0, shell_hu, base_hu) + 40.0 * tex

    hu = np.repeat(background[None].astype(np.float32), Z.shape[0], axis=0)
    out_depth = t_bone + shape.scalp - d  # depth below the skin surface
    head = ramp(out_depth, w)
    paint(hu, shape.scalp_hu + (45.0 - shape.scalp_hu) * ramp(1.5 - out_depth, w), head)
    bone = ramp(t_bone - d, w)
    paint(hu, bone_hu, bone)
    deep = inner * ramp(-above - base_t, w)
    # Muscle below the middle and posterior fossae; orbital and ethmoid fat under the anterior one.
    paint(hu, shape.soft_hu + (-70.0 - shape.soft_hu) * anterior + 12.0 * tex, deep)
    bone = bone * (1.0 - deep) * (1.0 - cavity)

    # Brain: cortex ribbon and sulcal walls are grey, the rest white, plus deep nuclei.
    surf = np.minimum(-d, above)
    t_csf = 0.8 + 2.2 * atr
    depth = surf - t_csf
    sul_dist = np.abs(sulci) * np.float32(4.0)  # ~ mm to the zero level (mean wavelength / 2 pi)
    sul_hw = 0.7 + 1.3 * atr
    sul_depth = 14.0
    taper = np.clip(1.0 - depth / sul_depth, 0.0, 1.0)
    sulc = ramp(sul_hw * taper - sul_dist, w) * ramp(sul_depth - depth, w)
    grey = np.maximum(ramp(3.0 - depth, w), ramp(sul_hw + 2.5 - sul_dist, w) * ramp(sul_depth + 2.5 - depth, w))
    cereb = smoothstep(shape.z_mid + 6.0, shape.z_mid - 2.0, Z) * smoothstep(0.0, 0.25 * shape.b, Y)
    accumulate(grey, cereb)
    for side in (-1.0, 1.0):
        for c, r in (((side * 18.0, -8.0, shape.z_mid + 50.0), (7.0, 14.0, 10.0)),
                     ((side * 10.0, 8.0, shape.z_mid + 44.0), (8.0, 10.0, 8.0))):
            res = frame.ellipsoid(c, r)
            if res is not None:
                accumulate(grey, res[1], res[0])
    brain_hu = shape.white_hu + (shape.grey_hu - shape.white_hu) * grey + 1.5 * tex
    paint(hu, brain_hu, cavity)

    # CSF spaces outside the ventricles (the places subarachnoid blood can fill).
    csf_sah = np.maximum(ramp(-depth, w), sulc)
    fis_hw = 1.0 + 1.5 * atr
    # Full depth above the corpus callosum (Z > 28 mm), only front and back below it.
    fis = ramp(fis_hw - np.abs(X), w)[None] * np.maximum(ramp(Z - 28.0, 3.0),
                                                         ramp(np.abs(Y) - 0.45 * shape.b, 3.0)[None])
    fis *= ramp(Z - (shape.z_mid + 12.0), 3.0) * cavity
    accumulate(csf_sah, fis)
    for side in (-1.0, 1.0):
        p0, p1 = (side * 0.95 * shape.a, -0.12 * shape.b), (side * 0.55 * shape.a, -0.22 * shape.b)
        box = frame.box(((p0[0] + p1[0]) / 2, (p0[1] + p1[1]) / 2, shape.z_mid + 29.0), 0.25 * shape.a + 20.0)
        if box is not None:
            Xb, Yb, Zb = frame.sub(box)
            wobble = 2.5 * np.sin(Yb * 0.35 + side * Xb * 0.2)  # a kinked, not ruler-straight, cleft
            band = ramp(1.3 + 1.5 * atr - segment_distance(Xb, Yb + wobble, p0, p1), w)
            z_window = ramp(Zb - (shape.z_mid + 14.0), 3.0) * ramp(shape.z_mid + 44.0 - Zb, 3.0)
            accumulate(csf_sah, band[None] * z_window, box)
    yc, zc = 0.08 * shape.b, shape.z_mid + 18.0
    box = frame.box((0.0, yc, zc), 25.0)
    if box is not None:
        Xb, Yb, Zb = frame.sub(box)
        r = np.sqrt((Xb / 11.0) ** 2 + ((Yb - yc) / 10.0) ** 2)
        ring = ramp((r - 1.0) * 10.0, w) * ramp((1.0 + (3.0 + 2.0 * atr) / 10.0 - r) * 10.0, w)
        ring *= smoothstep(yc - 8.0, yc - 2.0, Yb)  # the perimesencephalic cistern is open in front
        accumulate(csf_sah, ring[None] * ramp(8.0 - np.abs(Zb - zc), 2.0), box)
    res = frame.ellipsoid((0.0, yc - 18.0, zc - 6.0), (10.0, 7.0, 5.0))
    if res is not None:
        accumulate(csf_sah, res[1], res[0])
    csf_sah *= cavity

    # Ventricles: two curved lateral ventricles, slit-like third, small fourth.
    vs = 1.0 + 0.8 * atr
    vents = {}
    for name, side in (("vent_left", 1.0), ("vent_right", -1.0)):
        v = np.zeros_like(Z)
        yv, zv, ay = -0.05 * shape.b, shape.z_mid + 54.0, 0.38 * shape.b
        box = frame.box((side * 12.0, yv, zv), ay + 12.0)
        if box is not None:
            Xb, Yb, Zb = frame.sub(box)
            qy = (Yb - yv) / ay
            xc = Xb - side * (7.0 + 3.0 * atr + 8.0 * (qy + 1.0) * 0.5)
            zcv = Zb - zv + 10.0 * qy * qy
            q = np.sqrt((xc / (4.5 * vs)) ** 2 + (qy ** 2)[None] + (zcv / (9.0 * math.sqrt(vs))) ** 2)
            v[box] = ramp((1.0 - q) * 4.5 * vs, w) * cavity[box]
        vents[name] = v
    mid = np.zeros_like(Z)
    for c, r in (((0.0, -0.02 * shape.b, shape.z_mid + 30.0), (1.6 * vs, 12.0, 8.0)),
                 ((0.0, 0.42 * shape.b, shape.z_mid - 6.0), (6.0 * vs, 4.0 * vs, 8.0))):
        res = frame.ellipsoid(c, r)
        if res is not None:
            accumulate(mid, res[1] * cavity[res[0]], res[0])
    csf_all = np.maximum(np.maximum(csf_sah, mid), np.maximum(vents["vent_left"], vents["vent_right"]))
    paint(hu, shape.csf_hu, csf_all)
    paint(hu, 42.0, ramp(0.35 - np.abs(X), w)[None] * fis)  # falx: a faint dense line in the fissure

    _paint_skull_base(shape, frame, hu, cavity, cells)
    fields = HeadFields(d=d, cavity=cavity, csf_sah=csf_sah, vent_left=vents["vent_left"],
                        vent_right=vents["vent_right"], vent_mid=mid, bone=bone, head=head, texture=tex,
                        extras={"csf": csf_all})
    return hu, fields


def _air_with_rim(frame: Frame, hu: np.ndarray, keep: np.ndarray, center: tuple[float, float, float],
                  radii: tuple[float, float, float], fill: float = AIR_HU, rim_hu: float = 900.0) -> None:
    """An air (or ``fill``) pocket walled by thin bone, never painted over the cavity."""
    outer = frame.ellipsoid(center, tuple(r + 1.8 for r in radii))
    if outer is None:
        return
    box = outer[0]
    paint(hu, rim_hu, outer[1] * keep[box], box)
    res = frame.ellipsoid(center, radii, box)
    paint(hu, fill, res[1] * keep[box], box)


def _paint_skull_base(shape: HeadShape, frame: Frame, hu: np.ndarray, cavity: np.ndarray, cells: WaveField) -> None:
    """Sinuses, orbits, mastoid air cells and the clivus below and around the cavity floor."""
    a, b, za, zm = shape.a, shape.b, shape.z_ant, shape.z_mid
    keep = 1.0 - cavity
    res = frame.ellipsoid((0.0, 0.05 * b, zm - 25.0), (9.0, 12.0, 25.0))
    if res is not None:
        paint(hu, 750.0, res[1] * keep[res[0]], res[0])
    _air_with_rim(frame, hu, keep, (0.0, -0.22 * b, zm - 2.0), (13.0, 10.0, 9.0))
    _air_with_rim(frame, hu, keep, (0.0, -(b + shape.skull * 0.5 + 3.0), za + 16.0), (15.0, 5.0, 9.0))
    _air_with_rim(frame, hu, keep, (0.0, -0.78 * b, za - 35.0), (6.0, 20.0, 22.0))
    for side in (-1.0, 1.0):
        _air_with_rim(frame, hu, keep, (side * 0.42 * a, -0.82 * b, za - 17.0), (15.0, 19.0, 14.0), fill=-90.0)
        res = frame.ellipsoid((side * 0.42 * a, -0.90 * b, za - 17.0), (11.5, 11.5, 11.5))
        if res is not None:
            paint(hu, 15.0, res[1], res[0])
        _air_with_rim(frame, hu, keep, (side * 0.38 * a, -0.62 * b, za - 45.0), (14.0, 15.0, 16.0))
        _air_cells(frame, hu, keep, cells, (side * 0.9 * a, 0.3 * b, zm + 2.0), (13.0, 16.0, 13.0))
    _air_cells(frame, hu, keep, cells, (0.0, -0.72 * b, za - 14.0), (10.0, 16.0, 12.0), bone_hu=700.0)


def _air_cells(frame: Frame, hu: np.ndarray, keep: np.ndarray, cells: WaveField, center: tuple[float, float, float],
               radii: tuple[float, float, float], bone_hu: float = 1300.0) -> None:
    """A honeycomb of air cells with bony septa (mastoid, ethmoid)."""
    res = frame.ellipsoid(center, radii)
    if res is not None:
        box, region = res
        air = np.clip((cells(*frame.sub(box)) - 0.1) * 3.0, 0.0, 1.0)
        paint(hu, bone_hu + (AIR_HU - bone_hu) * air, region * keep[box], box)
