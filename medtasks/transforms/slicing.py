"""2-D samples for segmentation: binary mask images, and axial slices taken out of NIfTI volumes.

Slicing is a transform step (the record names the volume and the slice index), not a
preprocessing dump of PNGs: the volume is the source of truth and a change of window or
normalisation needs no re-export. Volumes are read with nibabel through a small per-process
cache, so a dataset of ~30 slices per volume reads each volume once, not 30 times.

Axes: nibabel gives ``(x, y, z)``; the axial slice ``k`` is ``data[:, :, k].T`` = ``(y, x)``
(rows = y), which is how the PHE-SICH PNGs of the same volume are laid out (and how a viewer
shows an axial plane in voxel order). Image and mask go through the same code, so they stay
aligned whatever the volume's orientation.

Example:
    >>> t = LoadAxialSliced(["image", "label"], slice_key="slice_index")
    >>> d = t({"image": "0004.nii.gz", "label": "0004_mask.nii.gz", "slice_index": 12})  # doctest: +SKIP
    >>> d["image"].shape  # (1, y, x) float32 (HU for a CT volume)  # doctest: +SKIP
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medtasks.io.images import read_grey

__all__ = ["LoadAxialSliced", "LoadMaskd", "axial_slice", "axial_stack", "brain_slices", "load_volume", "read_mask",
           "volume_stats"]

_VOLUMES: "OrderedDict[str, np.ndarray]" = OrderedDict()
_STATS: dict[tuple[str, str], tuple[float, float]] = {}
NORMALIZE = ("none", "zscore", "percentile")
_CACHE_SIZE = 4  # volumes kept per process (a shuffled epoch still hits most of the time at ~30 slices each)


def load_volume(path: str | Path) -> np.ndarray:
    """The NIfTI volume's data array ``(x, y, z)`` (3-D; a trailing singleton 4th axis dropped), cached per process."""
    return _volume(str(path))


def _volume(path: str) -> np.ndarray:
    if path in _VOLUMES:
        _VOLUMES.move_to_end(path)
        return _VOLUMES[path]
    import nibabel as nib

    try:
        data = np.asarray(nib.load(path, mmap=False).dataobj)  # no memory map: a file replaced later cannot SIGBUS us
    except Exception as exc:
        raise ValueError(f"{path}: cannot read NIfTI volume ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3-D volume, got shape {data.shape}")
    _VOLUMES[path] = data
    while len(_VOLUMES) > _CACHE_SIZE:
        _VOLUMES.popitem(last=False)
    return data


def axial_slice(path: str | Path, index: int) -> np.ndarray:
    """Axial slice ``index`` of a NIfTI volume as a ``(1, y, x)`` float32 array (raw values)."""
    data = _volume(str(path))
    if not 0 <= int(index) < data.shape[2]:
        raise ValueError(f"{path}: slice {index} is outside the volume's {data.shape[2]} axial slices")
    return np.ascontiguousarray(data[:, :, int(index)].T, dtype=np.float32)[None]


def axial_stack(path: str | Path, index: int, context: int = 0) -> np.ndarray:
    """Slices ``index - context .. index + context`` as channels ``(2 context + 1, y, x)``; indices beyond the
    volume repeat its edge slice (2.5-D input)."""
    data = _volume(str(path))
    n = data.shape[2]
    if not 0 <= int(index) < n:
        raise ValueError(f"{path}: slice {index} is outside the volume's {n} axial slices")
    ks = np.clip(np.arange(int(index) - context, int(index) + context + 1), 0, n - 1)
    return np.ascontiguousarray(np.stack([data[:, :, k].T for k in ks]), dtype=np.float32)


def volume_stats(path: str | Path, method: str) -> tuple[float, float]:
    """``(offset, scale)`` so that ``(x - offset) / scale`` normalises the volume (cached per process).

    ``zscore``: mean / std of the non-zero voxels (skull-stripped MRI: the brain); ``percentile``: the
    0.5th and 99.5th percentiles of the non-zero voxels map to 0 and 1 (values outside are clipped by
    the caller); ``none``: (0, 1). One set of statistics per volume, so every slice of it is scaled alike.
    """
    if method not in NORMALIZE:
        raise ValueError(f"input.normalize={method!r}: use one of {', '.join(NORMALIZE)}")
    key = (str(path), method)
    if key not in _STATS:
        if method == "none":
            _STATS[key] = (0.0, 1.0)
        else:
            data = _volume(str(path))
            fg = data[data != 0].astype(np.float64)
            fg = fg if fg.size else data.astype(np.float64).ravel()
            if method == "zscore":
                _STATS[key] = (float(fg.mean()), float(max(fg.std(), 1e-6)))
            else:
                lo, hi = np.percentile(fg, [0.5, 99.5])
                _STATS[key] = (float(lo), float(max(hi - lo, 1e-6)))
    return _STATS[key]


def read_mask(path: str | Path) -> np.ndarray:
    """A mask image (PNG/JPG, any non-zero pixel = lesion) as a ``(1, H, W)`` float32 0/1 array.

    JPEG masks are lossy: values are thresholded at half the range, not at > 0, so compression
    noise around the edge does not become lesion.
    """
    arr = read_grey(path)
    cut = 0.5 if Path(path).suffix.lower() in (".jpg", ".jpeg") else 0.0
    return (arr > cut).astype(np.float32)


def brain_slices(volume: np.ndarray, min_brain_fraction: float) -> list[int]:
    """Axial slices (third axis) whose share of non-zero voxels is at least ``min_brain_fraction``: the slices
    ms_segment's network sees (``MsSegment.slice_frame`` adds the slices with a truth lesion when training)."""
    brain = (volume != 0).mean(axis=(0, 1))
    return [k for k in range(volume.shape[2]) if not brain[k] < min_brain_fraction]


class LoadAxialSliced(MapTransform):
    """Replace the volume path under each key by its axial slice ``data[slice_key]``; masks
    (``mask_keys``) come out binary (> 0). Images get ``context`` neighbours per side as channels
    and the per-volume ``normalize`` (:func:`volume_stats`; ``percentile`` is clipped to [0, 1])."""

    def __init__(self, keys: KeysCollection, slice_key: str = "slice_index", mask_keys: KeysCollection = (),
                 context: int = 0, normalize: str = "none", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if normalize not in NORMALIZE:
            raise ValueError(f"input.normalize={normalize!r}: use one of {', '.join(NORMALIZE)}")
        self.slice_key = slice_key
        self.mask_keys = {mask_keys} if isinstance(mask_keys, str) else set(mask_keys)
        self.context, self.normalize = int(context), normalize

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            k = int(d[self.slice_key])
            if key in self.mask_keys:
                d[key] = (axial_slice(d[key], k) > 0).astype(np.float32)
                continue
            planes = axial_stack(d[key], k, self.context)
            offset, scale = volume_stats(d[key], self.normalize)
            planes = (planes - offset) / scale
            d[key] = np.clip(planes, 0.0, 1.0) if self.normalize == "percentile" else planes.astype(np.float32)
        return d


class LoadMaskd(MapTransform):
    """Replace the mask file path under ``keys`` by :func:`read_mask`'s ``(1, H, W)`` 0/1 array."""

    def __call__(self, data: dict) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = read_mask(d[key])
        return d
