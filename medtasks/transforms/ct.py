"""CT transforms: DICOM loading in HU, multi-window stacking and the standard 2-D pipeline.

Typical use (RSNA intracranial haemorrhage, 3 windows -> 3 channels)::

    pipeline = ct_window_pipeline(size=224, mean=(0.5,) * 3, std=(0.25,) * 3)
    sample = pipeline({"image": "ID_0001.dcm"})   # sample["image"]: (3, 224, 224) float32 tensor

Example:
    >>> import numpy as np
    >>> apply_window(np.array([0.0, 40.0, 80.0]), level=40, width=80).tolist()
    [0.0, 0.5, 1.0]
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, EnsureTyped, MapTransform, Transform

from medtasks.io.dicom import read_hu
from medtasks.transforms.ct_load import DEFAULT_WINDOWS, LoadCTWindowsd, check_same_size
from medtasks.transforms.resize import NormalizeChannelsd

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_WINDOWS", "apply_window", "LoadDicomHUd", "CTWindowsd", "ct_window_pipeline"]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)



def _window_bounds(level: float, width: float) -> tuple[float, float]:
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    return level - width / 2.0, float(width)


def _window_into(hu: ArrayT, low: float, width: float, out: ArrayT) -> ArrayT:
    # Divide (not multiply by 1/width) so that e.g. level -> exactly 0.5 in float32.
    if isinstance(out, torch.Tensor):
        torch.sub(hu, low, out=out)
        out.div_(width).clamp_(0.0, 1.0)
    else:
        np.subtract(hu, np.float32(low), out=out, dtype=np.float32, casting="unsafe")
        np.divide(out, np.float32(width), out=out)
        np.clip(out, 0.0, 1.0, out=out)
    return out


def apply_window(hu: ArrayT, level: float, width: float) -> ArrayT:
    """Clip HU to ``[level - width/2, level + width/2]`` and map it linearly to [0, 1].

    Args:
        hu: HU values, numpy array or torch tensor of any shape.
        level: Window centre in HU.
        width: Window width in HU (> 0).

    Returns:
        float32 array/tensor of the same type and shape.

    Example:
        >>> apply_window(np.array([-1000.0, 60.0, 3000.0]), 40, 80).tolist()
        [0.0, 0.75, 1.0]
    """
    low, width = _window_bounds(level, width)
    if isinstance(hu, torch.Tensor):
        hu32 = hu if hu.dtype == torch.float32 else hu.float()
        return _window_into(hu32, low, width, torch.empty_like(hu32))
    arr = np.asarray(hu)
    return _window_into(arr, low, width, np.empty(arr.shape, dtype=np.float32))


class LoadDicomHUd(MapTransform):
    """Replace each DICOM path under ``keys`` with its HU image, shape ``(1, H, W)`` float32.

    A list of paths (2.5-D input: a slice and its neighbours) gives ``(k, H, W)`` in list order.

    Errors surface as :class:`medtasks.io.dicom.DicomReadError` (reason code attached).

    Args:
        keys: Keys whose values are DICOM paths (or pydicom Datasets).
        modality: Required Modality; ``None`` accepts any.
        allow_missing_keys: Skip absent keys instead of raising.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> LoadDicomHUd("image")({"image": get_testdata_file("CT_small.dcm")})["image"].shape
        (1, 128, 128)
    """

    def __init__(self, keys: KeysCollection, modality: str | None = "CT", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.modality = modality

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            value = d[key]
            if isinstance(value, (list, tuple)):  # 2.5-D: neighbouring slices as channels, in the given order
                slices = [read_hu(v, modality=self.modality) for v in value]
                check_same_size(slices, value)
                d[key] = np.stack(slices)
            else:
                d[key] = read_hu(value, modality=self.modality)[None]
        return d


class CTWindowsd(MapTransform):
    """Stack several CT windows of an HU image as channels in [0, 1].

    Channel order: window-major. For an input with ``k`` channels (``k`` neighbouring
    slices for 2.5-D input, ordered as given) and windows ``w0, w1, ...`` the output is
    ``[w0(s0), ..., w0(s_{k-1}), w1(s0), ..., w1(s_{k-1}), ...]``, i.e. channel
    ``i * k + j`` is window ``i`` of slice ``j``; ``k * len(windows)`` channels in all.

    Args:
        keys: Keys holding HU images of shape ``(H, W)`` or ``(k, H, W)``.
        windows: ``(level, width)`` pairs in HU.
        mean: Optional per-output-channel mean: the windows come out channel-normalised,
            ``(window - mean[c]) / std[c]``, computed in the same pass (for pipelines with no
            augmentation between windowing and normalisation; a test checks it matches the
            two steps done apart).
        std: Per-output-channel std (> 0), given together with ``mean``.
        allow_missing_keys: Skip absent keys instead of raising.

    Example:
        >>> out = CTWindowsd("image", windows=[(40, 80), (600, 2800)])({"image": np.zeros((1, 4, 4))})
        >>> out["image"].shape, out["image"].dtype
        ((2, 4, 4), dtype('float32'))
    """

    def __init__(
        self,
        keys: KeysCollection,
        windows: Sequence[tuple[float, float]] = DEFAULT_WINDOWS,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        if self.std is not None and (self.std.shape != self.mean.shape or not (self.std > 0).all()):
            raise ValueError(f"mean and std need the same length and std > 0, got {list(mean)}, {list(std)}")
        if len(windows) == 0:
            raise ValueError("CTWindowsd needs at least one (level, width) window")
        self.windows = [(float(level), float(width)) for level, width in windows]
        self._bounds = [_window_bounds(level, width) for level, width in self.windows]
        self._lows = np.array([b[0] for b in self._bounds], dtype=np.float32).reshape(-1, 1, 1, 1)
        self._widths = np.array([b[1] for b in self._bounds], dtype=np.float32).reshape(-1, 1, 1, 1)

    def window(self, hu: ArrayT) -> ArrayT:
        """Window one image; see the class docstring for the channel order."""
        if hu.ndim == 2:
            hu = hu[None]
        if hu.ndim != 3:
            raise ValueError(f"CTWindowsd expects (H, W) or (k, H, W), got shape {tuple(hu.shape)}")
        k = hu.shape[0]
        n_out = k * len(self._bounds)
        # Write every window straight into one preallocated block: no concatenation copy.
        if isinstance(hu, torch.Tensor):
            # Plain tensors for the arithmetic: MetaTensor dispatch costs more than the maths.
            plain = hu.as_tensor() if isinstance(hu, MetaTensor) else hu
            src = plain if plain.dtype == torch.float32 else plain.float()
            out = torch.empty((n_out, *src.shape[1:]), dtype=torch.float32, device=src.device)
        else:
            src = np.asarray(hu, dtype=np.float32)
            if self.mean is not None:
                return self._window_normalise(src)
            # numpy: all windows in three whole-block operations (broadcast over the windows).
            out = np.empty((len(self._bounds), *src.shape), dtype=np.float32)
            np.subtract(src[None], self._lows, out=out)
            np.divide(out, self._widths, out=out)
            np.clip(out, 0.0, 1.0, out=out)
            return out.reshape(n_out, *src.shape[1:])
        for i, (low, width) in enumerate(self._bounds):
            _window_into(src, low, width, out[i * k : (i + 1) * k])
        if self.mean is not None:
            out.sub_(torch.as_tensor(self.mean, dtype=torch.float32, device=out.device).view(-1, 1, 1))
            out.div_(torch.as_tensor(self.std, dtype=torch.float32, device=out.device).view(-1, 1, 1))
        if isinstance(hu, MetaTensor):
            return MetaTensor(out, meta=hu.meta, applied_operations=hu.applied_operations)
        return out

    def _window_normalise(self, src: np.ndarray) -> np.ndarray:
        # (clip((x - low) / w, 0, 1) - m) / s == clip(x * a + b, -m / s, (1 - m) / s) with a = 1 / (w s),
        # b = -(low / w + m) / s, because s > 0: four passes over the block instead of five.
        nw, k = len(self._bounds), src.shape[0]
        if self.mean.size != nw * k:
            raise ValueError(f"{nw * k} output channels but {self.mean.size} mean/std values")
        m, s = self.mean.reshape(nw, k, 1, 1), self.std.reshape(nw, k, 1, 1)
        low, width = self._lows.astype(np.float64), self._widths.astype(np.float64)
        out = np.multiply(src[None], (1.0 / (width * s)).astype(np.float32))
        out += (-(low / width + m) / s).astype(np.float32)
        np.maximum(out, (-m / s).astype(np.float32), out=out)
        np.minimum(out, ((1.0 - m) / s).astype(np.float32), out=out)
        return out.reshape(nw * k, *src.shape[1:])

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d


def ct_window_pipeline(
    keys: KeysCollection = ("image",),
    windows: Sequence[tuple[float, float]] = DEFAULT_WINDOWS,
    size: int | None = 224,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    *,
    augment: Sequence[Transform] | None = None,
    modality: str | None = "CT",
    resize_mode: str = "area",
) -> Compose:
    """DICOM path -> windowed, resized, normalised float32 tensor.

    Steps (the values of :class:`LoadDicomHUd` -> :class:`~medtasks.transforms.resize.ResizeImaged`
    -> :class:`CTWindowsd` -> normalisation, computed by one
    :class:`~medtasks.transforms.ct_load.LoadCTWindowsd`): read the slice, resample to
    ``(size, size)`` with ``resize_mode`` (default ``"area"``: integer box reduction then bilinear,
    anti-aliased when shrinking 512 -> 224; ``"bilinear"`` aliases when shrinking by 2x or more),
    window -> ``augment`` (if given; they see [0, 1] windowed images, see
    :func:`medtasks.transforms.augment.build_augmentation`) -> channel-wise normalisation with
    ``mean``/``std`` -> plain ``torch.Tensor`` (no MetaTensor, so batches collate cheaply).

    Args:
        keys: Keys holding DICOM paths.
        windows: ``(level, width)`` pairs; one output channel per window (per slice).
        size: Output side length; ``None`` keeps the native size.
        mean: Per-channel mean subtracted after windowing; ``None`` skips normalisation.
        std: Per-channel std; must be given together with ``mean``.
        augment: Random transforms inserted between resizing and normalisation.
        modality: Required Modality; ``None`` accepts any.
        resize_mode: ``"area"``, ``"bilinear"`` or ``"nearest"`` (see :mod:`medtasks.transforms.resize`).

    Returns:
        A MONAI ``Compose``; call ``.set_random_state(seed)`` for reproducible augmentation.

    Example:
        >>> from pydicom.data import get_testdata_file
        >>> out = ct_window_pipeline(size=64)({"image": get_testdata_file("CT_small.dcm")})
        >>> tuple(out["image"].shape), out["image"].dtype
        ((3, 64, 64), torch.float32)
    """
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is not None and std is not None:
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std values must be > 0, got {list(std)}")
    # One transform reads, resamples (one channel per slice, not one per window) and windows;
    # with nothing in between it normalises too and ends as a plain tensor (LoadCTWindowsd).
    if mean is not None and std is not None and not augment:
        return Compose([LoadCTWindowsd(keys, windows, size, mean, std, modality=modality, resize_mode=resize_mode)])
    steps: list[Transform] = [LoadCTWindowsd(keys, windows, size, modality=modality, resize_mode=resize_mode,
                                             as_tensor=False)]
    steps.extend(augment or [])
    if mean is not None and std is not None:
        steps.append(NormalizeChannelsd(keys, mean, std, as_tensor=True))  # ends as a plain tensor
    else:
        steps.append(EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False))
    return Compose(steps)
