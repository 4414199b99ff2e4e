"""Geometry helpers shared by the head-CT phantom: coordinate frame, soft masks, smooth noise.

Everything is in millimetres. The *image frame* is DICOM patient x (towards the patient's
left) and y (posterior) of each pixel; the *head frame* (X, Y, Z) is the head's own frame,
rotated in-plane and tilted (pitch) against the image frame, with Z cranial and the origin at
the level of the widest axial section. Masks are soft fractions in [0, 1] whose edges ramp over
about one pixel, so that structures smaller than a pixel get partial-volume values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple[slice, slice, slice]


def ramp(v: np.ndarray | float, width: float) -> np.ndarray:
    """Soft indicator of ``v > 0``: 0.5 at ``v == 0``, linear over ``width`` millimetres."""
    t = np.multiply(v, np.float32(1.0 / width), dtype=np.float32)
    t += np.float32(0.5)
    return np.clip(t, 0.0, 1.0, out=t)


def smoothstep(e0: float, e1: float, x: np.ndarray | float) -> np.ndarray:
    """Cubic step from 0 at ``e0`` to 1 at ``e1`` (``e1 < e0`` gives a falling step)."""
    t = np.subtract(x, np.float32(e0), dtype=np.float32)
    t *= np.float32(1.0 / (e1 - e0))
    np.clip(t, 0.0, 1.0, out=t)
    return t * t * (np.float32(3.0) - np.float32(2.0) * t)


def segment_distance(x: np.ndarray, y: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    """Distance (mm) of 2-D points to the segment ``p0``-``p1``."""
    vx, vy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * vx + (y - p0[1]) * vy) / (vx * vx + vy * vy), 0.0, 1.0)
    return np.hypot(x - (p0[0] + t * vx), y - (p0[1] + t * vy)).astype(np.float32)


@dataclass(frozen=True)
class Pose:
    """Placement of the head in the image: centre offset (mm), in-plane rotation and pitch (rad)."""

    cx: float
    cy: float
    theta: float
    pitch: float


@dataclass
class Frame:
    """Head-frame coordinates of every voxel of a (cropped) stack of evaluation planes.

    Attributes:
        X, Y: (H, W) head-frame in-plane coordinates of each pixel.
        Z: (P, H, W) head-frame height of each voxel (plane height plus pitch * Y).
        z_planes: (P,) sorted plane heights before pitch.
        y_img: (H, W) image-frame y; gravity points along +y for a supine patient.
        x0, y0: image-frame coordinates of pixel (0, 0) of the crop.
        spacing: pixel size (mm), also the width of the soft edges.
        pose: the head's placement.
    """

    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    z_planes: np.ndarray
    y_img: np.ndarray
    x0: float
    y0: float
    spacing: float
    pose: Pose

    @classmethod
    def build(cls, pose: Pose, x0: float, y0: float, shape: tuple[int, int], spacing: float,
              z_planes: np.ndarray) -> Frame:
        """Frame for a crop of ``shape`` pixels whose first pixel sits at image (x0, y0)."""
        h, w = shape
        x = (x0 + spacing * np.arange(w, dtype=np.float64))[None, :]
        y = (y0 + spacing * np.arange(h, dtype=np.float64))[:, None]
        dx, dy = x - pose.cx, y - pose.cy
        ct, st = math.cos(pose.theta), math.sin(pose.theta)
        X = (ct * dx + st * dy).astype(np.float32)
        Y = (-st * dx + ct * dy).astype(np.float32)
        z = np.asarray(z_planes, dtype=np.float32)
        Z = z[:, None, None] + np.float32(math.tan(pose.pitch)) * Y[None]
        y_img = np.broadcast_to(y, (h, w)).astype(np.float32)
        return cls(X, Y, Z, z, y_img, x0, y0, spacing, pose)

    def box(self, center: tuple[float, float, float], radius: float) -> Box | None:
        """Index box of the voxels within ``radius`` mm of a head-frame point (None if empty)."""
        cx, cy, cz = center
        ct, st = math.cos(self.pose.theta), math.sin(self.pose.theta)
        xi = self.pose.cx + ct * cx - st * cy
        yi = self.pose.cy + st * cx + ct * cy
        h, w = self.X.shape
        j0 = max(0, int(math.floor((xi - radius - self.x0) / self.spacing)))
        j1 = min(w, int(math.ceil((xi + radius - self.x0) / self.spacing)) + 1)
        i0 = max(0, int(math.floor((yi - radius - self.y0) / self.spacing)))
        i1 = min(h, int(math.ceil((yi + radius - self.y0) / self.spacing)) + 1)
        zr = radius + abs(math.tan(self.pose.pitch)) * (abs(cy) + radius)
        k0 = int(np.searchsorted(self.z_planes, cz - zr, "left"))
        k1 = int(np.searchsorted(self.z_planes, cz + zr, "right"))
        if j1 <= j0 or i1 <= i0 or k1 <= k0:
            return None
        return (slice(k0, k1), slice(i0, i1), slice(j0, j1))

    def sub(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """X, Y (2-D) and Z (3-D) restricted to ``box``."""
        return self.X[box[1:]], self.Y[box[1:]], self.Z[box]

    def ellipsoid(self, center: tuple[float, float, float], radii: tuple[float, float, float],
                  box: Box | None = None) -> tuple[Box, np.ndarray] | None:
        """Soft axis-aligned (head-frame) ellipsoid, evaluated in its own box."""
        if box is None:
            box = self.box(center, max(radii) + 2.0 * self.spacing)
        if box is None:
            return None
        X, Y, Z = self.sub(box)
        q = np.sqrt(((X - center[0]) / radii[0]) ** 2 + ((Y - center[1]) / radii[1]) ** 2
                    + ((Z - center[2]) / radii[2]) ** 2)
        return box, ramp((1.0 - q) * min(radii), self.spacing)


class WaveField:
    """Smooth random field: a sum of random 3-D plane waves with unit variance.

    The waves are drawn once, so the same field can be evaluated on any sub-box and a second
    scan of the same head shows the same folds.
    """

    def __init__(self, rng: np.random.Generator, n_waves: int, wavelength: tuple[float, float],
                 z_scale: float = 1.0) -> None:
        v = rng.normal(size=(n_waves, 3))
        v[:, 2] *= z_scale  # < 1 tilts the wave fronts towards vertical sheets
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        k = 2.0 * np.pi / rng.uniform(wavelength[0], wavelength[1], size=n_waves)
        self.k = (v * k[:, None]).astype(np.float32)
        self.phase = rng.uniform(0.0, 2.0 * np.pi, size=n_waves).astype(np.float32)
        self.scale = np.float32(math.sqrt(2.0 / n_waves))

    def __call__(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(X.shape, Z.shape), dtype=np.float32)
        for (kx, ky, kz), ph in zip(self.k, self.phase):
            out += np.cos((kx * X + ky * Y + ph) + kz * Z)
        out *= self.scale
        return out


def paint(hu: np.ndarray, value: np.ndarray | float, frac: np.ndarray, box: Box | None = None) -> None:
    """Blend ``value`` into ``hu`` (in place) with weight ``frac``, optionally inside ``box``."""
    target = hu if box is None else hu[box]
    target += (value - target) * frac


def accumulate(acc: np.ndarray, frac: np.ndarray, box: Box | None = None) -> None:
    """Union of soft masks (voxelwise max), in place."""
    if box is None:
        np.maximum(acc, frac, out=acc)
    else:
        np.maximum(acc[box], frac, out=acc[box])
