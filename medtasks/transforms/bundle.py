"""The few medtasks pieces a MONAI bundle of a medtasks run names (``medtasks export --format bundle``).

A bundle's ``configs/inference.json`` is run by MONAI (``python -m monai.bundle run``): MONAI's datasets,
``SupervisedEvaluator``, ``CheckpointLoader``, ``ClassificationSaver`` / ``SaveImaged`` and its transforms do the
work. What is here is what MONAI's own components cannot reproduce to float tolerance, each with the measured
reason (2-core Xeon, MONAI 1.6.1, 2026-12); a bundle that names one of them needs medtasks installed:

* :func:`ct_series_datalist` — the ich_classify inputs: every DICOM slice of a folder with its slice-position
  input ``z``, which depends on the slice's *series* (its rank in the series' ImagePositionPatient z range), not on
  the slice alone, so no per-item transform can compute it; and the 2.5-D neighbour paths, same reason.
* :class:`ResizeToShaped` — a 2-D probability map back to its slice's native size with OpenCV's bilinear
  interpolation, as ``medtasks predict`` does. MONAI's ``Resized`` takes one ``spatial_size`` for every item (slices
  of a folder differ, and the size must come from the item), and ``Invertd`` of the forward resize interpolates
  with the forward's mode, ``area``, not bilinear: on a smooth 64 -> 512 px map the inverse differs from predict's
  probabilities by up to 0.035 (:func:`monai_resize_gap` measures it), enough to flip mask pixels at the
  threshold. (MONAI's bilinear ``Resize`` itself agrees with OpenCV's to 1.2e-7; it is the per-item size.)
* :class:`BrainSliceStackd` / :class:`SliceProbabilitiesToVolumed` — ms_segment's volume <-> slice steps: only the
  brain slices of a FLAIR volume (``input.min_brain_fraction``) go through the 2-D network, each with the volume's
  own normalisation (:func:`~medtasks.transforms.slicing.volume_stats`: statistics over the non-zero voxels applied
  to *every* voxel; MONAI's ``NormalizeIntensity(nonzero=True)`` leaves the zero voxels at 0, 4.0 to 5.0 z-units
  from medtasks' value on the synthetic FLAIRs), resized as in training; and back: each slice's probability resized
  to the volume's grid, stacked, thresholded and cleaned of lesions below the run's minimum size
  (:func:`~medtasks.transforms.postprocess.remove_small_lesions`: connectivity and mm^3 of the lesion metric).

The decode and resize steps of the 2-D tasks are medtasks' existing transforms (``LoadCTWindowsd``,
``LoadGreyImaged`` with the task's reader, ``ResizeImaged``), named directly by the config.

Example:
    >>> import numpy as np
    >>> out = ResizeToShaped("pred", "native_shape")({"pred": np.ones((1, 2, 2), np.float32),
    ...                                               "native_shape": np.array([4, 3])})
    >>> tuple(out["pred"].shape)
    (1, 4, 3)
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from medtasks.transforms.postprocess import remove_small_lesions
from medtasks.transforms.resize import resize_2d
from medtasks.transforms.slicing import LoadAxialSliced, brain_slices, load_volume

__all__ = ["ct_series_datalist", "ResizeToShaped", "BrainSliceStackd", "SliceProbabilitiesToVolumed",
           "monai_resize_gap"]

log = logging.getLogger(__name__)


def ct_series_datalist(folder: str | Path, context: int = 0, workers: int | None = None) -> list[dict[str, Any]]:
    """The records of every CT DICOM slice under ``folder``, in ``medtasks predict``'s order (series, then z).

    Each record: ``image`` (the path; with ``context`` > 0 the ``2 context + 1`` neighbouring paths of its series
    in z order, edges repeated), ``z`` (float32: ``(Z - min Z) / (max Z - min Z)`` over its series, 0.5 for one
    slice) and ``case_id`` (the SOPInstanceUID, predict's ``case_id``). Files predict would reject (not CT, no
    position, duplicates, unreadable) are left out with one log line each.
    """
    from medtasks.data.dicom_index import index_dicoms
    from medtasks.data.series import neighbour_paths

    df, rejected = index_dicoms(Path(folder), workers=workers, progress=False)
    for row in rejected.rows:
        log.warning("left out %s: %s (%s)", row["path"], row["reason"], row.get("detail", ""))
    images = neighbour_paths(df, context) if context else df["path"].astype(str).tolist()
    return [{"image": p, "z": np.float32(z), "case_id": str(sop)}
            for p, z, sop in zip(images, df["z_normalized"], df["sop_instance_uid"])]


class ResizeToShaped(MapTransform):
    """Resize the ``(C, h, w)`` map under ``keys`` to the ``(H, W)`` held under ``shape_key`` (bilinear, OpenCV:
    the arithmetic of ``medtasks predict``'s segmentation output; see the module docstring for why not MONAI's)."""

    def __init__(self, keys: KeysCollection, shape_key: str = "native_shape", allow_missing_keys: bool = False
                 ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.shape_key = shape_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        h, w = (int(v) for v in np.asarray(d[self.shape_key]).reshape(-1)[:2])
        for key in self.key_iterator(d):
            x = d[key]
            arr = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float32)
            if arr.shape[-2:] != (h, w):
                arr = np.stack([cv2.resize(np.ascontiguousarray(c), (w, h), interpolation=cv2.INTER_LINEAR)
                                for c in arr])
            d[key] = torch.from_numpy(arr)
        return d


class BrainSliceStackd(MapTransform):
    """The FLAIR volume at ``path_key`` -> its brain slices as a ``(C, size, size, N)`` float32 tensor under
    ``keys`` (the layout MONAI's ``SliceInferer(spatial_dim=2)`` runs a 2-D network over), the slice indices
    under ``slice_key`` and the slice grid ``(y, x)`` under ``shape_key``.

    Each slice is what ``medtasks predict`` feeds the network: :class:`~medtasks.transforms.slicing.LoadAxialSliced`
    (``context`` neighbours, per-volume ``normalize``) -> area resize to ``size`` -> grey replicated to
    ``replicate`` channels (0: not). A volume without brain slices gives one zero slice and no index (its mask is
    empty, as predict's).
    """

    def __init__(self, keys: KeysCollection, path_key: str, size: int, context: int = 0, normalize: str = "zscore",
                 replicate: int = 0, min_brain_fraction: float = 0.02, slice_key: str = "slice_index",
                 shape_key: str = "native_shape", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.path_key, self.size, self.replicate = path_key, int(size), int(replicate)
        self.min_brain_fraction = float(min_brain_fraction)
        self.slice_key, self.shape_key = slice_key, shape_key
        self.load = LoadAxialSliced(["image"], "slice_index", context=context, normalize=normalize)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from medtasks.io.nifti import check_axial

        d = dict(data)
        path = str(d[self.path_key])
        check_axial(path)
        vol = load_volume(path)
        ks = brain_slices(vol, self.min_brain_fraction)
        planes = []
        for k in ks:
            x = resize_2d(self.load({"image": path, "slice_index": k})["image"], self.size, "area")
            planes.append(np.repeat(x, self.replicate, axis=0) if self.replicate > 1 else x)
        if not planes:
            channels = self.replicate if self.replicate > 1 else 2 * self.load.context + 1
            planes = [np.zeros((channels, self.size, self.size), np.float32)]
        stack = torch.from_numpy(np.ascontiguousarray(np.stack(planes, axis=-1), dtype=np.float32))
        for key in self.key_iterator(d):
            d[key] = stack
        d[self.slice_key] = np.asarray(ks, dtype=np.int64)
        d[self.shape_key] = np.asarray(vol.shape[:3], dtype=np.int64)
        return d


class SliceProbabilitiesToVolumed(MapTransform):
    """The ``(1, size, size, N)`` slice probabilities under ``keys`` -> the ``(1, X, Y, Z)`` uint8 lesion mask in the
    FLAIR's voxel grid, as ``medtasks predict`` makes it: each slice resized (bilinear, OpenCV) to its ``(y, x)``
    grid and put back at its index, ``>= threshold``, then lesions below ``min_lesion_mm3`` (with the volume's voxel
    size from the header at ``path_key``; ``connectivity`` of the lesion metric) removed."""

    def __init__(self, keys: KeysCollection, path_key: str, threshold: float = 0.5, min_lesion_mm3: float = 0.0,
                 connectivity: int = 2, slice_key: str = "slice_index", shape_key: str = "native_shape",
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.path_key, self.threshold = path_key, float(threshold)
        self.min_lesion_mm3, self.connectivity = float(min_lesion_mm3), int(connectivity)
        self.slice_key, self.shape_key = slice_key, shape_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from medtasks.io.nifti import voxel_spacing

        d = dict(data)
        shape = tuple(int(v) for v in np.asarray(d[self.shape_key]).reshape(-1)[:3])
        ks = [int(k) for k in np.asarray(d[self.slice_key]).reshape(-1)]
        for key in self.key_iterator(d):
            x = d[key]
            probs = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float32)
            prob = np.zeros(shape, np.float32)
            for i, k in enumerate(ks):
                p = probs[0, :, :, i]
                if p.shape != (shape[1], shape[0]):
                    p = cv2.resize(np.ascontiguousarray(p), (shape[0], shape[1]), interpolation=cv2.INTER_LINEAR)
                prob[:, :, k] = p.T
            mask = remove_small_lesions(prob >= self.threshold, self.min_lesion_mm3,
                                        voxel_spacing(str(d[self.path_key])), self.connectivity)
            d[key] = torch.from_numpy(mask.astype(np.uint8)[None])
        return d


def monai_resize_gap(native: Sequence[int] = (512, 512), size: int = 64, seed: int = 0) -> float:
    """Max |diff| between predict's probability map resized back to ``native`` (OpenCV bilinear) and what MONAI's
    ``Invertd`` of the forward area resize gives (``Resize`` with mode ``area``), on a smooth random map: the
    measured reason for :class:`ResizeToShaped` (0.035 at 64 -> 512 px)."""
    from monai.transforms import Resize

    rng = np.random.default_rng(seed)
    small = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), 2.0)[None]
    ours = cv2.resize(small[0], (native[1], native[0]), interpolation=cv2.INTER_LINEAR)
    inverse = Resize(tuple(native), mode="area")(torch.from_numpy(small))
    return float(np.abs(np.asarray(inverse)[0] - ours).max())
