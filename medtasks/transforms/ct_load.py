"""DICOM slice(s) -> resampled, windowed (and normalised) channels in one transform: the CT input hot path.

:class:`LoadCTWindowsd` gives the values of the step-by-step chain ``read_hu -> ResizeImaged -> one MONAI
ScaleIntensityRange per window -> NormalizeIntensity`` (a test checks agreement to float32 rounding) in one
step, doing less work (``medtasks bench ich_classify`` measures it against that chain in MONAI's transforms):

- the stored pixels are resampled, and the HU map ``HU = stored * slope + intercept`` is folded
  into the windowing arithmetic afterwards, so no full-size float pass converts to HU first
  (resampling is linear, so applying the affine map before or after it gives the same values);
- every window of every slice is one ``x * a + b`` then a clip to per-channel bounds, with the
  channel normalisation ``(w - mean) / std`` folded into ``a``, ``b`` and the bounds;
- one transform instead of four: MONAI's ``Compose`` costs tens of microseconds per step, which
  matters next to a decode of ~0.3 ms.

Example:
    >>> from pydicom.data import get_testdata_file
    >>> out = LoadCTWindowsd("image", size=64)({"image": get_testdata_file("CT_small.dcm")})
    >>> tuple(out["image"].shape), out["image"].dtype
    ((3, 64, 64), torch.float32)
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medtasks.io.dicom import DicomReadError, read_stored
from medtasks.transforms.resize import RESIZE_MODES, resize_2d

__all__ = ["DEFAULT_WINDOWS", "LoadCTWindowsd"]

# (level, width): brain, subdural, bone, the usual RSNA ICH trio.
DEFAULT_WINDOWS: tuple[tuple[float, float], ...] = ((40, 80), (50, 130), (600, 2800))


def check_same_size(planes: Sequence[np.ndarray], paths: Sequence[Any]) -> None:
    """Neighbouring slices (2.5-D input) must share one matrix; DicomReadError ``bad_shape`` otherwise."""
    shapes = {pl.shape for pl in planes}
    if len(shapes) != 1:
        raise DicomReadError(str(paths[len(paths) // 2]), "bad_shape",
                             f"neighbouring slices differ in size {sorted(shapes)}; "
                             "use input.context=0 for this series")


class LoadCTWindowsd(MapTransform):
    """Replace each DICOM path (or list of neighbouring slice paths) under ``keys`` with its windows.

    Output channels are window-major: for ``k`` slices (2.5-D input, in the given order) and windows
    ``w0, w1, ...``, channel ``i * k + j`` is window ``i`` of slice ``j``; ``k * len(windows)`` channels in all.

    Args:
        keys: Keys holding a DICOM path, or a list of paths (2.5-D input, in channel order).
        windows: ``(level, width)`` pairs in HU.
        size: Output side (int) or ``(height, width)``; ``None`` keeps the native size.
        mean / std: Per-output-channel normalisation (given together), or ``None`` for windows in [0, 1].
        modality: Required Modality; ``None`` accepts any.
        resize_mode: ``"area"`` (anti-aliased, default) or ``"bilinear"``
            (see :func:`~medtasks.transforms.resize.resize_2d`).
        as_tensor: Return plain float32 ``torch.Tensor`` (else numpy).

    Raises:
        DicomReadError: a file cannot be read (reason code attached), or neighbouring slices differ in size.
    """

    def __init__(self, keys: KeysCollection, windows: Sequence[tuple[float, float]] = DEFAULT_WINDOWS,
                 size: int | Sequence[int] | None = None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, *, modality: str | None = "CT", resize_mode: str = "area",
                 as_tensor: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not windows:
            raise ValueError("LoadCTWindowsd needs at least one (level, width) window")
        if any(not float(w) > 0 for _, w in windows):
            raise ValueError(f"window widths must be > 0, got {[w for _, w in windows]}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        if std is not None and (len(mean) != len(std) or any(not s > 0 for s in std)):
            raise ValueError(f"mean and std need the same length and std > 0, got {list(mean)}, {list(std)}")
        if resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
        levels = np.array([float(lv) for lv, _ in windows])
        self.widths = np.array([float(w) for _, w in windows])
        self.lows = levels - self.widths / 2.0
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.size = size
        self.modality = modality
        self.resize_mode = resize_mode
        self.as_tensor = as_tensor
        self._cache: dict[tuple, tuple[np.ndarray, ...]] = {}   # (slope, intercept) per slice -> coefficients

    def _coefficients(self, maps: list[tuple[float, float]]) -> tuple[np.ndarray, ...]:
        """``a, b, lo, hi`` of shape ``(n_windows, k, 1, 1)``: out = clip(stored * a + b, lo, hi)."""
        nw, k = len(self.widths), len(maps)
        slope = np.array([m[0] for m in maps]).reshape(1, k)
        intercept = np.array([m[1] for m in maps]).reshape(1, k)
        width, low = self.widths.reshape(nw, 1), self.lows.reshape(nw, 1)
        a = slope / width                                  # window of HU: (slope * x + intercept - low) / width
        b = (intercept - low) / width
        lo, hi = np.zeros((nw, k)), np.ones((nw, k))
        if self.mean is not None:
            if self.mean.size != nw * k:
                raise ValueError(f"{nw * k} output channels but {self.mean.size} mean/std values")
            m, s = self.mean.reshape(nw, k), self.std.reshape(nw, k)
            a, b, lo, hi = a / s, (b - m) / s, (lo - m) / s, (hi - m) / s
        return tuple(v.reshape(nw, k, 1, 1).astype(np.float32) for v in (a, b, lo, hi))

    def _windows(self, src: np.ndarray, maps: list[tuple[float, float]]) -> np.ndarray:
        """Windows in [0, 1] as ``(stored * slope + (intercept - low)) / width``: the same float32 values as
        :func:`~medtasks.transforms.ct.apply_window` on :func:`~medtasks.io.dicom.read_hu` whenever the HU
        values and window bounds are integers (the usual CT case), since every step but the division is exact."""
        k = len(maps)
        slopes = np.array([m[0] for m in maps], dtype=np.float32).reshape(k, 1, 1)
        if (slopes != 1).any():
            src = src * slopes
        shift = (np.array([m[1] for m in maps]).reshape(1, k) - self.lows.reshape(-1, 1)).astype(np.float32)
        out = np.add(src[None], shift.reshape(len(self.lows), k, 1, 1))
        np.divide(out, self.widths.astype(np.float32).reshape(-1, 1, 1, 1), out=out)
        np.clip(out, 0.0, 1.0, out=out)
        return out

    def load(self, value: Any) -> np.ndarray:
        """Windows of one path (or list of paths): ``(n_windows * k, H, W)`` float32."""
        paths = list(value) if isinstance(value, (list, tuple)) else [value]
        planes, maps = [], []
        for p in paths:
            pixels, slope, intercept = read_stored(p, modality=self.modality)
            planes.append(pixels)
            maps.append((slope, intercept))
        check_same_size(planes, paths)
        src = planes[0][None].astype(np.float32) if len(planes) == 1 else np.stack(planes).astype(np.float32)
        if self.size is not None:
            src = resize_2d(src, self.size, self.resize_mode)
        if self.mean is None:
            out = self._windows(src, maps)
        else:
            key = tuple(maps)
            if key not in self._cache:  # a dataset has a handful of distinct (slope, intercept) pairs
                if len(self._cache) > 1024:
                    self._cache.clear()
                self._cache[key] = self._coefficients(maps)
            a, b, lo, hi = self._cache[key]
            out = np.multiply(src[None], a)                # (n_windows, k, H, W)
            out += b
            np.clip(out, lo, hi, out=out)                  # one pass (maximum then minimum take two)
        return out.reshape(-1, *src.shape[1:])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            out = self.load(d[key])
            d[key] = torch.from_numpy(out) if self.as_tensor else out
        return d
