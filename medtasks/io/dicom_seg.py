"""Predicted masks as DICOM Segmentation objects (highdicom) that reference their source series.

A viewer (OHIF, 3D Slicer, a PACS) shows a DICOM SEG on top of the images it was made from because each
frame names its source instance (ReferencedSOPInstanceUID in the frame's derivation) and lies in the
source's frame of reference. :func:`write_dicom_seg` takes the source series' files in the order of the
mask's slice axis — :class:`medtasks.io.dicom_series.SeriesVolume` ``files``, whose ``k`` order is the
NIfTI volume's third axis — and a label map in that volume's ``(x, y, z)`` axis order, and writes one
BINARY Segmentation with one segment per label value. Frame ``k`` is ``labels[:, :, k].T`` (rows x columns,
the DICOM pixel order of :mod:`medtasks.io.dicom_series`).

Segments are described with SNOMED CT codes from pydicom's code dictionary (:class:`SegmentSpec` names
them by keyword, e.g. ``("MorphologicallyAbnormalStructure", "Lesion")``), and the algorithm that made them
(medtasks, the task, the run) is in each segment's Segment Algorithm Identification. The object copies the
patient and study modules from the sources, as DICOM requires; nothing of them is logged.

Example:
    >>> spec = SegmentSpec(1, "MS lesion", "MorphologicallyAbnormalStructure", "Lesion")
    >>> write_dicom_seg(volume.files, mask, [spec], "out/seg/case.dcm", algorithm="medtasks ms_segment",
    ...                 version="0.1.0")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from medtasks.io.atomic import atomic_path

__all__ = ["SegmentSpec", "SegSourceError", "write_dicom_seg", "read_dicom_seg_labels"]

log = logging.getLogger(__name__)


class SegSourceError(ValueError):
    """The source series lacks what a DICOM SEG must reference (the message names the file and the attributes)."""


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: the label value in the mask, a label, and the SNOMED CT keywords (pydicom's ``codes.SCT``)
    of its property category and type."""

    value: int
    label: str
    category: str
    type: str

    def codes(self) -> tuple[object, object]:
        from pydicom.sr.codedict import codes

        try:
            return getattr(codes.SCT, self.category), getattr(codes.SCT, self.type)
        except AttributeError as exc:
            raise ValueError(f"segment {self.label!r}: {exc}; use a keyword of pydicom.sr.codedict.codes.SCT") from None


def _read_sources(files: Sequence[str | Path]) -> list[pydicom.Dataset]:
    out = []
    for f in files:
        ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        missing = [k for k in ("FrameOfReferenceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                               "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if k not in ds]
        if missing:
            raise SegSourceError(f"{f}: a DICOM SEG needs {', '.join(missing)} in its source images (this file has "
                                 "none); re-export the series with full headers, or use the NIfTI mask")
        out.append(ds)
    return out


def write_dicom_seg(source_files: Sequence[str | Path], labels: np.ndarray, segments: Sequence[SegmentSpec],
                    path: str | Path, algorithm: str, version: str, series_description: str = "",
                    series_number: int = 900) -> Path:
    """Write the label map ``labels`` as a DICOM Segmentation referencing ``source_files``.

    Args:
        source_files: The source series' single-frame files, in the order of ``labels``' third axis.
        labels: Integer label map ``(x, y, z)`` (columns, rows, slices); 0 is background, every other value
            must be one of ``segments``' values.
        segments: The segments to write (a value absent from ``labels`` still gets its empty segment).
        path: The ``.dcm`` to write (atomically).
        algorithm: Algorithm name, e.g. ``"medtasks ms_segment"``.
        version: Algorithm version (the medtasks version and run id).
        series_description: SeriesDescription of the new series.
        series_number: SeriesNumber of the new series.

    Returns:
        ``path``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    lab = np.asarray(labels)
    if lab.ndim != 3 or lab.shape[2] != len(source_files):
        raise ValueError(f"label map {lab.shape} does not match {len(source_files)} source slices (x, y, z expected)")
    values = {s.value for s in segments}
    extra = sorted(set(np.unique(lab).tolist()) - values - {0})
    if extra:
        raise ValueError(f"label values {extra} have no segment description (segments: {sorted(values)})")
    sources = _read_sources(source_files)
    if (int(sources[0].Rows), int(sources[0].Columns)) != (lab.shape[1], lab.shape[0]):
        raise ValueError(f"label map slices {lab.shape[1]}x{lab.shape[0]} (rows x columns) differ from the source "
                         f"images' {sources[0].Rows}x{sources[0].Columns}")
    ident = hd.AlgorithmIdentificationSequence(name=algorithm, version=version,
                                               family=codes.cid7162.ArtificialIntelligence)
    descriptions = []
    remap = np.zeros(max(values) + 1, dtype=np.uint16)
    for number, s in enumerate(sorted(segments, key=lambda s: s.value), start=1):
        category, prop = s.codes()
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=s.label, segmented_property_category=category,
            segmented_property_type=prop, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ident))
        remap[s.value] = number
    frames = np.ascontiguousarray(remap[lab.astype(np.int64)].transpose(2, 1, 0))   # (slices, rows, columns)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=int(series_number),
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="medtasks", manufacturer_model_name=algorithm,
        software_versions=version, device_serial_number="0", content_label="MEDTASKS",
        content_description=f"{algorithm} (research use, not for diagnosis)"[:64],
        series_description=(series_description or f"{algorithm} segmentation")[:64],
        omit_empty_frames=bool(frames.any()))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path


def read_dicom_seg_labels(path: str | Path, source_files: Sequence[str | Path]) -> np.ndarray:
    """The label map ``(x, y, z)`` of a DICOM SEG on the grid of ``source_files`` (their order): highdicom places
    each frame on the source instance its derivation names; values are the segment numbers. For users who want
    the SEG back as an array, and for the tests."""
    import highdicom as hd

    seg = hd.seg.segread(str(path))
    uids = [pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID for f in source_files]
    labels = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    return np.ascontiguousarray(np.asarray(labels).transpose(2, 1, 0)).astype(np.uint16)
