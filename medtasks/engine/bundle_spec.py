"""The parts of a MONAI bundle (``medtasks export --format bundle``, :mod:`medtasks.engine.bundle`) that a task
declares (:class:`BundleSpec`), and the parts kinds share: the 2-D image inputs and grey pipeline, a classifier's
temperature / sigmoid / thresholds into ``predictions.csv``, a 2-D segmenter's PNG masks. Each part is MONAI config
(``_target_`` components, ``$`` expressions, ``@`` references) naming MONAI's components, plus the medtasks ones
MONAI's cannot stand in for, each listed with the reason in ``medtasks_components``.

Example:
    >>> classification_outputs(("phe",), 1.5, {"phe": 0.4})["params"]["thresholds"]
    [0.4]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BundleSpec", "merge_parts", "image_files_datalist", "grey_preprocessing", "GREY_COMPONENTS",
           "classification_outputs", "png_mask_outputs"]


@dataclass
class BundleSpec:
    """A task's parts of the bundle: inputs (``datalist``: a config expression over ``@dataset_dir``),
    preprocessing, how batches reach the network, postprocessing and writers, and what the README says."""

    datalist: str
    preprocessing: list[dict[str, Any]]
    postprocessing: list[dict[str, Any]]
    writers: list[dict[str, Any]]
    data_type: str                      # metadata "data_type": dicom / png / nibabel ...
    modality: str
    inputs_doc: str                     # README: what dataset_dir holds
    outputs_doc: str                    # README: what output_dir gets
    output_format: str                  # "classes" or "segmentation" (network_data_format.outputs.pred.format)
    batch_size: int = 1
    prepare_batch: dict[str, Any] | None = None
    inferer: dict[str, Any] = field(default_factory=lambda: {"_target_": "SimpleInferer"})
    network_wrapper: dict[str, Any] | None = None   # a module around the traced network (``network`` = it)
    finalize: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)          # top-level values the parts refer to (@name)
    medtasks_components: dict[str, str] = field(default_factory=dict)   # component -> why MONAI's own cannot
    packages: tuple[str, ...] = ()                                # distributions the parts import
    notes: list[str] = field(default_factory=list)                # README bullets (limits, equivalences)


def merge_parts(*parts: dict[str, Any]) -> BundleSpec:
    """One :class:`BundleSpec` from parts (dicts of its fields): lists and tuples concatenate, dicts merge, a
    scalar field given twice is an error."""
    merged: dict[str, Any] = {}
    for part in parts:
        for k, v in part.items():
            if k not in merged:
                merged[k] = v
            elif isinstance(v, list):
                merged[k] = [*merged[k], *v]
            elif isinstance(v, tuple):
                merged[k] = (*merged[k], *v)
            elif isinstance(v, dict):
                merged[k] = {**merged[k], **v}
            else:
                raise ValueError(f"bundle part {k!r} given twice")
    return BundleSpec(**merged)


# ---- parts the kinds share ----------------------------------------------------------------------
def image_files_datalist(suffixes: tuple[str, ...]) -> str:
    """The 2-D image files under ``@dataset_dir`` (recursive, hidden files skipped, ``medtasks predict``'s order
    and absolute ``case_id``), each record with the ``image_meta_dict`` MONAI's writers name outputs after."""
    return ("$[{'image': p, 'case_id': p, 'image_meta_dict': {'filename_or_obj': p}} for p in "
            "[str(f.resolve()) for f in sorted(pathlib.Path(@dataset_dir).rglob('*')) if f.is_file() and "
            f"not f.name.startswith('.') and f.suffix.lower() in {tuple(suffixes)!r}]]")


def grey_preprocessing(reader: Any, size: int, channels: int, mean: list[float] | None, std: list[float] | None,
                       native_shape: bool = False) -> list[dict[str, Any]]:
    """The grey 2-D pipeline of ``medtasks predict`` (:func:`medtasks.transforms.grey.grey_pipeline`): medtasks'
    reader and area resize, then MONAI's channel replication, channel-wise normalisation and typing.
    ``native_shape``: record the decoded ``(H, W)`` under ``native_shape`` (segmentation maps go back to it)."""
    steps: list[dict[str, Any]] = [{"_target_": "medtasks.transforms.grey.LoadGreyImaged", "keys": "image",
                                    "reader": reader}]
    if native_shape:
        steps.append({"_target_": "Lambdad", "keys": "image", "overwrite": "native_shape",
                      "func": "$lambda x: numpy.asarray(x.shape[-2:])"})
    steps.append({"_target_": "medtasks.transforms.resize.ResizeImaged", "keys": "image", "size": int(size),
                  "mode": "area"})
    if channels > 1:
        steps.append({"_target_": "RepeatChanneld", "keys": "image", "repeats": int(channels)})
    if mean is not None and std is not None:
        steps.append({"_target_": "NormalizeIntensityd", "keys": "image", "subtrahend": [float(v) for v in mean],
                      "divisor": [float(v) for v in std], "channel_wise": True})
    steps.append({"_target_": "EnsureTyped", "keys": "image", "data_type": "tensor", "dtype": "$torch.float32",
                  "track_meta": False})
    return steps


GREY_COMPONENTS = {
    "medtasks.transforms.grey.LoadGreyImaged": "decodes the file as medtasks does (8-bit / 255, 16-bit / 65535, "
                                               "colour -> grey; radiographs: DICOM MONOCHROME1 inverted, full bit "
                                               "depth); MONAI's PILReader transposes and does not scale by the bit "
                                               "depth",
    "medtasks.transforms.resize.ResizeImaged": "medtasks' anti-aliased area resize (integer box reduction, then "
                                               "bilinear); MONAI's Resized(mode='area') is adaptive average pooling, "
                                               "which differs when the size ratio is not an integer (512 -> 224)",
}


def classification_outputs(labels: tuple[str, ...], temperature: float, thresholds: dict[str, float]
                           ) -> dict[str, Any]:
    """Postprocessing and writer of a (multi-label) classifier: ``sigmoid(logits / temperature)`` and
    ``probability >= threshold[label]`` per label, one row per input in ``predictions.csv`` (``case_id``,
    ``prob_<label>``, ``pred_<label>``: ``medtasks predict``'s columns) by MONAI's ``ClassificationSaver``
    (headerless) and a header written at ``finalize``."""
    columns = ["case_id", *(f"prob_{lab}" for lab in labels), *(f"pred_{lab}" for lab in labels)]
    return dict(
        params={"labels": list(labels), "temperature": float(temperature),
                "thresholds": [float(thresholds[lab]) for lab in labels], "csv_columns": columns,
                "call_dtypes": {f"pred_{lab}": "int" for lab in labels}},
        postprocessing=[
            {"_target_": "Activationsd", "keys": "pred", "other": "$functools.partial(torch.div, other=@temperature)"},
            {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
            {"_target_": "CopyItemsd", "keys": "pred", "names": "call"},
            {"_target_": "AsDiscreted", "keys": "call", "threshold": ["$torch.tensor(@thresholds, device=@device)"]},
            {"_target_": "ConcatItemsd", "keys": ["pred", "call"], "name": "row", "dim": 0}],
        writers=[{"_target_": "ClassificationSaver", "output_dir": "@output_dir", "filename": "predictions_raw.csv",
                  "batch_transform": "$lambda batch: [{'filename_or_obj': item['case_id']} for item in batch]",
                  "output_transform": "$monai.handlers.from_engine(['row'])"}],
        finalize=["$pandas.read_csv(os.path.join(@output_dir, 'predictions_raw.csv'), header=None, "
                  "names=@csv_columns, dtype={'case_id': str}).astype(@call_dtypes).to_csv("
                  "os.path.join(@output_dir, 'predictions.csv'), index=False)",
                  "$os.remove(os.path.join(@output_dir, 'predictions_raw.csv'))"],
        output_format="classes",
        outputs_doc=(f"`predictions.csv`: one row per input, `case_id`, then `prob_<label>` = sigmoid(logit / "
                     f"temperature) and `pred_<label>` = prob >= the label's threshold, for the labels "
                     f"{', '.join(labels)} (medtasks predict's columns; its id columns are not repeated)"),
        packages=("pandas",))


def png_mask_outputs(threshold: float) -> dict[str, Any]:
    """Postprocessing and writer of a 2-D segmenter: sigmoid, the map resized to the slice's native size
    (:class:`~medtasks.transforms.bundle.ResizeToShaped`), ``>= threshold``, ``masks/<image stem>.png`` (0/255)
    by MONAI's ``SaveImaged`` (PILWriter; MONAI writes arrays as (W, H), hence the transpose; a plain tensor, so
    that SaveImaged names the file after ``image_meta_dict`` and not the MetaTensor's own, empty, metadata)."""
    return dict(
        params={"threshold": float(threshold)},
        postprocessing=[
            {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
            {"_target_": "medtasks.transforms.bundle.ResizeToShaped", "keys": "pred", "shape_key": "native_shape"},
            {"_target_": "AsDiscreted", "keys": "pred", "threshold": "@threshold"},
            {"_target_": "Transposed", "keys": "pred", "indices": [0, 2, 1]},
            {"_target_": "EnsureTyped", "keys": "pred", "data_type": "tensor", "track_meta": False},
            {"_target_": "SaveImaged", "keys": "pred", "meta_keys": "image_meta_dict",
             "output_dir": "$os.path.join(@output_dir, 'masks')", "output_ext": ".png",
             "output_dtype": "$numpy.uint8", "scale": 255, "resample": False, "separate_folder": False,
             "output_postfix": "", "writer": "PILWriter", "print_log": False}],
        writers=[], output_format="segmentation",
        outputs_doc="`masks/<image stem>.png`: the predicted mask at the image's own size, 0 / 255 (8-bit)",
        medtasks_components={"medtasks.transforms.bundle.ResizeToShaped": (
            "the probability map back to each image's own size, bilinear as predict: MONAI's Resized takes one size "
            "for every image, and Invertd of the area resize interpolates with mode 'area' (up to 0.035 off at "
            "64 -> 512 px)")})

