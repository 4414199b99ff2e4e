"""NSD and ASSD (MONAI) against hand-computed shapes and an independent scipy distance-transform computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from medtasks.metrics.surface import assd, nsd


def _lines() -> tuple[np.ndarray, np.ndarray]:
    """Rows 2 and 5 of an 8x8 image: every edge pixel is 3 rows from the other line."""
    a = np.zeros((8, 8), bool)
    b = np.zeros((8, 8), bool)
    a[2] = True
    b[5] = True
    return a, b


def _square_in_ring() -> tuple[np.ndarray, np.ndarray]:
    """Truth a 4x4 square (12 edge px), prediction the 6x6 square around it (20 edge px)."""
    t = np.zeros((10, 10), bool)
    p = np.zeros((10, 10), bool)
    t[2:6, 2:6] = True
    p[1:7, 1:7] = True
    return p, t


def _scipy_distances(p: np.ndarray, t: np.ndarray, spacing) -> tuple[np.ndarray, np.ndarray]:
    """Independent surface distances: edges = mask minus its erosion (face connectivity), distances from the
    exact euclidean distance transform of the other mask's edge complement, in mm."""
    ep, et = p & ~ndimage.binary_erosion(p), t & ~ndimage.binary_erosion(t)
    d_pt = ndimage.distance_transform_edt(~et, sampling=spacing)[ep]
    d_tp = ndimage.distance_transform_edt(~ep, sampling=spacing)[et]
    return d_pt, d_tp


def test_parallel_lines_by_hand_and_spacing() -> None:
    a, b = _lines()
    assert assd(a, b) == pytest.approx(3.0)
    assert assd(a, b, spacing=(2.0, 1.0)) == pytest.approx(6.0)   # along the shift: scales
    assert assd(a, b, spacing=(1.0, 0.5)) == pytest.approx(3.0)   # across it: no change
    assert assd(a, b, spacing=0.5) == pytest.approx(1.5)
    assert nsd(a, b, 3.0) == 1.0 and nsd(a, b, 2.99) == 0.0
    # The tolerance is in the spacing's unit (mm), not pixels: 6 mm apart at 2 mm rows.
    assert nsd(a, b, 6.0, spacing=(2.0, 1.0)) == 1.0 and nsd(a, b, 5.9, spacing=(2.0, 1.0)) == 0.0


def test_square_in_ring_by_hand() -> None:
    p, t = _square_in_ring()
    # Ring -> square: 16 side px at 1, 4 corners at sqrt(2); square -> ring: all 12 at 1.
    assert assd(p, t) == pytest.approx((16 + 4 * math.sqrt(2) + 12) / 32)
    assert assd(t, p) == pytest.approx(assd(p, t))                       # symmetric
    assert nsd(p, t, 1.0) == pytest.approx(28 / 32) and nsd(p, t, 1.5) == 1.0
    # Rows 1 mm, columns 2 mm: ring top/bottom 8 px at 1, left/right 8 at 2, corners sqrt(1 + 4);
    # square top/bottom rows 8 px at 1, the 4 left/right non-corner px at 2.
    sp = (1.0, 2.0)
    assert assd(p, t, spacing=sp) == pytest.approx((8 + 16 + 4 * math.sqrt(5) + 8 + 8) / 32)
    assert nsd(p, t, 1.0, spacing=sp) == pytest.approx(16 / 32)
    assert nsd(p, t, 2.0, spacing=sp) == pytest.approx(28 / 32)
    assert nsd(p, t, 2.3, spacing=sp) == 1.0


@pytest.mark.parametrize("shape,spacing", [((40, 48), (0.508, 0.7)), ((12, 20, 24), (5.0, 0.5, 0.8))])
def test_matches_scipy_distance_transforms(shape, spacing) -> None:
    rng = np.random.default_rng(3)
    for _ in range(3):
        t = ndimage.binary_opening(ndimage.gaussian_filter(rng.random(shape), 2) > 0.52)
        p = ndimage.binary_dilation(t, iterations=1) ^ (rng.random(shape) > 0.97)
        assert t.any() and p.any()
        d_pt, d_tp = _scipy_distances(p, t, spacing)
        both = np.concatenate([d_pt, d_tp])
        assert assd(p, t, spacing) == pytest.approx(both.mean(), rel=1e-6)
        for tol in (0.0, 0.6, 1.5, 4.0):
            assert nsd(p, t, tol, spacing) == pytest.approx((both <= tol).mean(), rel=1e-6)


def test_empty_masks() -> None:
    z = np.zeros((6, 6), bool)
    one = z.copy()
    one[2:4, 2:4] = True
    assert math.isnan(assd(one, z)) and math.isnan(assd(z, one)) and math.isnan(assd(z, z))
    assert nsd(one, z, 2.0) == 0.0 and nsd(z, one, 2.0) == 0.0          # a miss / a false alarm: nothing matched
    assert math.isnan(nsd(z, z, 2.0)) and nsd(z, z, 2.0, empty_value=1.0) == 1.0
    assert assd(one, one) == 0.0 and nsd(one, one, 0.0) == 1.0


def test_validation() -> None:
    a, b = _lines()
    with pytest.raises(ValueError, match="spacing has 3 values"):
        assd(a, b, spacing=(1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="tolerance_mm"):
        nsd(a, b, -1.0)
    with pytest.raises(ValueError, match="shape mismatch"):
        nsd(a, b[:4], 1.0)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        assd(a[0], b[0])
