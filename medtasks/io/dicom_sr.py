"""A classifier's result as a DICOM Comprehensive SR (TID 1500 Measurement Report), made with highdicom.

Viewers (OHIF, Weasis, a PACS's own) list the object as its own series beside the study. The document
holds one measurement group (TID 1501) per evaluated instance set and label:

* finding type: the label (coding scheme ``99MEDTASKS``, private as DICOM allows, meaning = the label);
* a numeric measurement "Probability" (DCM 122157) in UCUM unit ``1`` (no units), stored exactly;
* a qualitative evaluation: the label -> Present (SCT 52101004) or Absent (SCT 272519000), the call made
  with the threshold recorded in the algorithm parameters;
* the algorithm identification (name ``medtasks <task>``, version ``<medtasks version> run <run id>``);
* "Source" references to the SOP instance(s) the probabilities were computed on.

The document's evidence (CurrentRequestedProcedureEvidenceSequence) lists every source instance, and the
Patient and General Study modules are copied from the sources by highdicom, as DICOM requires of an
object of the same study. Nothing here logs a patient attribute.

Example:
    >>> sr = classification_sr(slices, ["epidural", "any"], probs, None, "ich_classify",
    ...                        run_id="20250101-120000-demo", thresholds=0.5)  # doctest: +SKIP
    >>> read_classification_sr(sr)[0].label  # doctest: +SKIP
    'epidural'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

__all__ = ["CODING_SCHEME", "ClassificationFinding", "classification_sr", "read_classification_sr"]

CODING_SCHEME = "99MEDTASKS"
_PROBABILITY = codes.DCM.Probability
_UNIT = codes.UCUM.NoUnits
_PRESENT, _ABSENT = codes.SCT.Present, codes.SCT.Absent
_DEFAULT_SERIES_NUMBER = 9901


@dataclass(frozen=True)
class ClassificationFinding:
    """One label's result on one set of source instances, as read back from the SR."""

    label: str
    probability: float
    call: bool | None
    sop_instance_uids: tuple[str, ...]
    tracking_id: str


def _version() -> str:
    try:
        return metadata.version("medtasks")
    except metadata.PackageNotFoundError:
        return "unknown"


def _label_code(label: str) -> hd.sr.CodedConcept:
    # CodeValue is SH (16 characters); highdicom moves a longer value to LongCodeValue.
    return hd.sr.CodedConcept(value=label, scheme_designator=CODING_SCHEME, meaning=label)


def _as_matrix(values: Any, n_rows: int | None, n_labels: int, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n_labels or (n_rows is not None and arr.shape[0] != n_rows):
        want = f"({n_rows if n_rows is not None else 'n'}, {n_labels})"
        raise ValueError(f"{what} must have shape {want} (evaluations x labels), got {tuple(np.shape(values))}")
    return arr


def _groups(evaluated_on: Sequence[Sequence[int]] | None, n_rows: int, n_sources: int) -> list[list[int]]:
    """Which source instances each probability row was computed on."""
    if evaluated_on is None:
        if n_rows == n_sources:
            return [[i] for i in range(n_sources)]
        if n_rows == 1:
            return [list(range(n_sources))]
        raise ValueError(f"{n_rows} rows of probabilities for {n_sources} source instances: give one row per "
                         "instance, one row for all, or evaluated_on (the source indices of each row)")
    groups = [list(map(int, g)) for g in evaluated_on]
    if len(groups) != n_rows:
        raise ValueError(f"evaluated_on has {len(groups)} entries for {n_rows} rows of probabilities")
    for g in groups:
        if not g or min(g) < 0 or max(g) >= n_sources:
            raise ValueError(f"evaluated_on entries must be non-empty lists of indices into the {n_sources} "
                             f"source datasets, got {g}")
    return groups


# What highdicom copies from the first evidence dataset (Patient, General Study); Type 2, so an absent one is
# written empty rather than failing on a source that omits it (many anonymised sources do).
_STUDY_KEYWORDS = ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                   "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")
_REFERENCE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")


def _study_header(ds: Dataset) -> Dataset:
    """The first source's reference and study/patient attributes, with absent Type 2 attributes empty."""
    out = Dataset()
    for keyword in _REFERENCE_KEYWORDS + _STUDY_KEYWORDS + ("Rows", "Columns", "NumberOfFrames"):
        if keyword in ds:
            setattr(out, keyword, ds.get(keyword))
        elif keyword in _STUDY_KEYWORDS and keyword != "SpecificCharacterSet":
            setattr(out, keyword, None)  # Type 2: present, empty
    return out


def _source_reference(ds: Dataset) -> hd.sr.SourceImageForMeasurementGroup:
    try:
        return hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)
    except (AttributeError, ValueError) as exc:
        raise ValueError(f"source instance {ds.get('SOPInstanceUID', '?')} cannot be referenced as an image "
                         f"(it needs SOPClassUID, SOPInstanceUID and Modality, and must not be an SR/SEG): {exc}") \
            from None


def classification_sr(source_datasets: Sequence[Dataset], labels: Sequence[str], probabilities: Any,
                      calls: Any | None, model_name: str, *, run_id: str, thresholds: float | Sequence[float] | None
                      = None, evaluated_on: Sequence[Sequence[int]] | None = None,
                      series_number: int = _DEFAULT_SERIES_NUMBER, instance_number: int = 1,
                      series_instance_uid: str | None = None, sop_instance_uid: str | None = None,
                      series_description: str | None = None, manufacturer: str = "medtasks") -> Dataset:
    """A Comprehensive SR holding a classifier's probabilities and calls for the source instances.

    Args:
        source_datasets: The instances the classifier read (headers suffice: ``stop_before_pixels``), all of
            one study; the Patient/Study modules are copied from the first.
        labels: Label names, e.g. ``("epidural", ..., "any")``.
        probabilities: Shape ``(n_evaluations, n_labels)`` (or ``(n_labels,)`` for one evaluation), in [0, 1].
        calls: Positive/negative calls of the same shape (bools), or ``None`` to derive them from ``thresholds``.
        model_name: The task name, e.g. ``"ich_classify"``; the algorithm is named ``medtasks <model_name>``.
        run_id: The run directory's id (the algorithm version names it).
        thresholds: One per label or one for all; recorded as algorithm parameters; needed when ``calls`` is None.
        evaluated_on: For each row of ``probabilities``, the indices of the source datasets it was computed
            on. Default: one row per source instance, or one row for all of them.
        series_number: SeriesNumber of the new series.
        instance_number: InstanceNumber of the document.
        series_instance_uid: New series' UID (default: a fresh UID).
        sop_instance_uid: The document's UID (default: a fresh UID).
        series_description: Default ``"medtasks <model_name> (research use)"``.
        manufacturer: Manufacturer of the equipment that made the document.

    Returns:
        The SR as a ``pydicom`` dataset (a ``highdicom.sr.ComprehensiveSR``), ready for ``dcmwrite`` or STOW-RS.

    Raises:
        ValueError: Empty sources or labels, sources from several studies, shapes that do not match,
            probabilities outside [0, 1] or not finite, neither ``calls`` nor ``thresholds``.
    """
    sources = list(source_datasets)
    labels = [str(v) for v in labels]
    if not sources:
        raise ValueError("classification_sr needs at least one source dataset")
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be non-empty and distinct, got {labels}")
    studies = {str(ds.StudyInstanceUID) for ds in sources}
    if len(studies) != 1:
        raise ValueError(f"the source datasets belong to {len(studies)} studies; an SR documents one study")
    probs = _as_matrix(probabilities, None, len(labels), "probabilities").astype(np.float64)
    if not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
        raise ValueError("probabilities must be finite and within [0, 1]")
    thr: np.ndarray | None = None
    if thresholds is not None:
        thr = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (len(labels),)).copy()
    if calls is None:
        if thr is None:
            raise ValueError("give either calls or thresholds (the calls are then probability >= threshold)")
        call_arr = probs >= thr[None, :]
    else:
        call_arr = _as_matrix(calls, probs.shape[0], len(labels), "calls").astype(bool)
    groups = _groups(evaluated_on, probs.shape[0], len(sources))

    parameters = [] if thr is None else [f"threshold {label} = {t:g}" for label, t in zip(labels, thr)]
    algorithm = hd.sr.AlgorithmIdentification(name=f"medtasks {model_name}", version=f"{_version()} run {run_id}",
                                              parameters=parameters or None)
    source_refs = [_source_reference(ds) for ds in sources]
    measurement_groups = []
    for row, members in enumerate(groups):
        for col, label in enumerate(labels):
            code = _label_code(label)
            measurement_groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{label} #{row + 1}"),
                finding_type=code,
                algorithm_id=algorithm,
                measurements=[hd.sr.Measurement(name=_PROBABILITY, value=float(probs[row, col]), unit=_UNIT,
                                                algorithm_id=algorithm)],
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(
                    name=code, value=_PRESENT if call_arr[row, col] else _ABSENT)],
                source_images=[source_refs[i] for i in members]))

    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["medtasks", model_name, run_id]), name=f"medtasks {model_name}",
        manufacturer_name=manufacturer, model_name=model_name)
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device, observer_identifying_attributes=device))
    report = hd.sr.MeasurementReport(observation_context=context, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=measurement_groups)
    sr = hd.sr.ComprehensiveSR(
        evidence=[_study_header(sources[0]), *sources[1:]], content=report[0],
        series_instance_uid=series_instance_uid or generate_uid(), series_number=series_number,
        sop_instance_uid=sop_instance_uid or generate_uid(), instance_number=instance_number,
        manufacturer=manufacturer, is_complete=True, is_final=False, is_verified=False)
    sr.SeriesDescription = (series_description or f"medtasks {model_name} (research use)")[:64]
    sr.SoftwareVersions = _version()
    sr.ManufacturerModelName = f"medtasks {model_name}"[:64]
    return sr


def read_classification_sr(sr: Dataset) -> list[ClassificationFinding]:
    """The findings of an SR made by :func:`classification_sr` (or another TID 1500 of the same shape).

    Args:
        sr: The SR dataset (e.g. ``pydicom.dcmread`` of a retrieved file).

    Raises:
        ValueError: Not a TID 1500 measurement report.
    """
    try:
        doc = hd.sr.ComprehensiveSR.from_dataset(sr, copy=True)
        report = doc.content if isinstance(doc.content, hd.sr.MeasurementReport) else \
            hd.sr.MeasurementReport.from_sequence([doc.content])
    except (AttributeError, ValueError, TypeError) as exc:
        raise ValueError(f"not a measurement report SR: {exc}") from None
    findings = []
    for group in report.get_image_measurement_groups():
        finding = group.finding_type
        label = finding.meaning if finding is not None else ""
        probs = [m for m in group.get_measurements() if m.name == _PROBABILITY]
        evals = group.get_qualitative_evaluations()
        call = None
        if evals:
            call = evals[0].value == _PRESENT if evals[0].value in (_PRESENT, _ABSENT) else None
        refs = tuple(str(img.referenced_sop_instance_uid) for img in (group.source_images or []))
        findings.append(ClassificationFinding(
            label=label, probability=float(probs[0].value) if probs else float("nan"), call=call,
            sop_instance_uids=refs, tracking_id=str(group.tracking_identifier or "")))
    return findings
