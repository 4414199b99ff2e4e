"""``medtasks bench <task>``: throughput figures measured in one run.

``ms_segment``: inference frames per second of the report's network (:mod:`medtasks.models.ms_unet`,
paper widths 64-1024) against segmentation-models-pytorch's ``Unet`` (resnet34 encoder),
MONAI's ``BasicUNet`` (its default features) and the report's Mask R-CNN baseline (torchvision's
``maskrcnn_resnet50_fpn``, two classes, its internal resize pinned to the input size so that every
model sees the same pixels), at the same input size and batch, eval mode, no gradients, on the
device training would use; each model's best of ``repeats`` timed passes after a warm-up, and the
ratios to the report's network (the report: 13.79 FPS for its U-Net vs 3.5 for "UNet" and 5 for
Mask R-CNN, on a T4). Weights are random (nothing is downloaded): the speed of a convolution does not
depend on its weights, but Mask R-CNN's post-processing does on how many boxes pass its score
threshold, so its figure is for up to ``box_detections_per_img`` (100) detections per image.

For ``ich_classify`` the pipeline is the task's own deterministic transform chain (DICOM -> stored
pixels with the wrapped-pixel fix -> resize -> HU map, 3 windows and channel normalisation in one
pass -> tensor, :class:`~medtasks.transforms.ct_load.LoadCTWindowsd`), against two baselines over the
same files: ``pydicom.dcmread(path).pixel_array`` (the bare decode: no transform can beat it by much) and
the same steps in MONAI's own transforms (:func:`monai_ct_chain`: ``LoadImaged`` with the pydicom reader
(HU) -> ``Resized`` -> one ``ScaleIntensityRanged`` per window -> ``ConcatItemsd`` -> ``NormalizeIntensityd``),
what the fused transform replaces and the reason it exists. All three run alternately, ``repeats``
times, after one warm-up pass (page cache), and the best time of each is kept. With
``cache_epochs_n`` it also times that many epochs of the training pipeline (augmentation included) with no
cache and with ``data.cache=disk`` (MONAI ``PersistentDataset``: epoch 1 transforms and writes, later
epochs read the cached tensors), :func:`cache_epochs`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

log = logging.getLogger(__name__)


def _rate(fn: Callable[[str], Any], paths: Sequence[str]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        fn(p)
    return len(paths) / (time.perf_counter() - t0)


def compare_rates(pipeline: Callable[[str], Any], baselines: Mapping[str, Callable[[str], Any]], paths: Sequence[str],
                  repeats: int = 3) -> dict[str, Any]:
    """Best-of-``repeats`` items/s of ``pipeline`` and of each baseline over ``paths`` (timed in turn, each
    repeat), and ``pipeline / baseline`` for each."""
    for p in paths[: min(20, len(paths))]:  # warm-up: file cache, lazy imports
        for fn in (*baselines.values(), pipeline):
            fn(p)
    pipe, base = 0.0, dict.fromkeys(baselines, 0.0)
    for _ in range(repeats):
        for name, fn in baselines.items():
            base[name] = max(base[name], _rate(fn, paths))
        pipe = max(pipe, _rate(pipeline, paths))
    return {"files": len(paths), "pipeline_per_s": round(pipe, 1),
            "baselines_per_s": {k: round(v, 1) for k, v in base.items()},
            "ratios": {k: round(pipe / v, 3) for k, v in base.items()}}


def monai_ct_chain(windows: Sequence[Sequence[float]], size: int | None, mean: Sequence[float],
                   std: Sequence[float], key: str = "image") -> Any:
    """DICOM path -> ``len(windows)`` normalised channels, step by step in MONAI's own transforms (the
    baseline of ``bench ich_classify``).

    ``LoadImaged`` (MONAI's ``PydicomReader``: HU through RescaleSlope/Intercept, rows and columns kept in
    the file's order) -> ``Resized`` to ``size`` (``area``) -> a copy of the image per window, each through
    ``ScaleIntensityRanged(level - width/2, level + width/2, 0, 1, clip=True)`` -> ``ConcatItemsd`` (window
    order) -> ``NormalizeIntensityd(mean, std, channel_wise=True)`` -> plain float32 tensor. At the native size
    it gives :class:`~medtasks.transforms.ct_load.LoadCTWindowsd`'s values (a test checks it); resized, the
    two differ by the resampling (MONAI's ``area`` is adaptive average pooling, medtasks' a box reduction
    then bilinear), and it has no RSNA wrapped-pixel fix.
    """
    import warnings

    import numpy as np
    import torch
    from monai.data import PydicomReader
    from monai.transforms import (
        Compose,
        ConcatItemsd,
        CopyItemsd,
        EnsureTyped,
        LoadImaged,
        NormalizeIntensityd,
        Resized,
        ScaleIntensityRanged,
    )

    names = [f"{key}_window{i}" for i in range(len(windows))]
    with warnings.catch_warnings():  # LoadImage builds every reader it knows; one warns that nvImageCodec is absent
        warnings.simplefilter("ignore", UserWarning)
        steps: list[Any] = [LoadImaged(key, reader=PydicomReader(swap_ij=False), ensure_channel_first=True,
                                       image_only=True, dtype=np.float32)]
    if size is not None:
        steps.append(Resized(key, (size, size), mode="area"))
    steps.append(CopyItemsd(key, times=len(windows), names=names))
    steps += [ScaleIntensityRanged(name, level - width / 2, level + width / 2, 0.0, 1.0, clip=True)
              for name, (level, width) in zip(names, windows)]
    steps += [ConcatItemsd(names, key), NormalizeIntensityd(key, subtrahend=mean, divisor=std, channel_wise=True),
              EnsureTyped(key, data_type="tensor", dtype=torch.float32, track_meta=False)]
    return Compose(steps)


def model_fps(models: dict[str, Any], size: int = 256, batch: int = 4, frames: int = 16, repeats: int = 3,
              device: str = "auto", in_channels: int = 3) -> dict[str, Any]:
    """Inference frames/s of each ``name -> nn.Module`` on ``frames`` random ``(in_channels, size, size)`` inputs
    in batches of ``batch`` (best of ``repeats`` after one warm-up batch), and each one's ratio to the first."""
    import torch

    from medtasks.engine.runtime import select_device

    dev = select_device(device)
    x = torch.randn(batch, in_channels, size, size, device=dev)
    n_batches = max(1, frames // batch)
    out: dict[str, Any] = {"device": str(dev), "size": size, "batch": batch, "frames": n_batches * batch,
                           "threads": torch.get_num_threads(), "fps": {}}
    for name, net in models.items():
        net = net.to(dev).eval()
        with torch.inference_mode():
            net(x)  # warm-up (allocations, cuDNN autotune)
            best = float("inf")
            for _ in range(repeats):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(n_batches):
                    net(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t0)
        out["fps"][name] = round(n_batches * batch / best, 2)
        log.info("bench %s: %.2f frames/s", name, out["fps"][name])
        net.cpu()
    first = next(iter(out["fps"].values()))
    out["ratio_to_first"] = {k: round(v / first, 3) for k, v in out["fps"].items()}
    return out


class _BatchAsList:
    """A detection model (list of ``(C, H, W)`` images in) behind the ``(B, C, H, W)`` batch interface of
    :func:`model_fps`."""

    def __init__(self, net: Any) -> None:
        self.net = net

    def to(self, device: Any) -> _BatchAsList:
        self.net.to(device)
        return self

    def eval(self) -> _BatchAsList:
        self.net.eval()
        return self

    def cpu(self) -> _BatchAsList:
        self.net.cpu()
        return self

    def parameters(self) -> Any:
        return self.net.parameters()

    def __call__(self, x: Any) -> Any:
        return self.net(list(x))


def mask_rcnn(size: int) -> _BatchAsList:
    """torchvision's ``maskrcnn_resnet50_fpn`` (random weights, background + lesion), resizing to ``size``."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    return _BatchAsList(maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2,
                                              min_size=size, max_size=size))


def bench_ms_segment(size: int = 256, batch: int = 4, frames: int = 16, repeats: int = 3,
                     mask_rcnn_baseline: bool = True) -> dict[str, Any]:
    """The report's network (paper config) vs smp ``Unet``, MONAI ``BasicUNet`` and Mask R-CNN, see the module
    docstring."""
    import segmentation_models_pytorch as smp
    from monai.networks.nets import BasicUNet

    from medtasks.models.ms_unet import MsUNet

    models = {"ms_unet (report: LeakyReLU, 64-1024)": MsUNet(in_channels=3, max_channels=1024),
              "smp Unet (resnet34)": smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=1),
              "MONAI BasicUNet": BasicUNet(spatial_dims=2, in_channels=3, out_channels=1)}
    if mask_rcnn_baseline:
        models["torchvision Mask R-CNN (resnet50-FPN; report's baseline)"] = mask_rcnn(size)
    res = model_fps(models, size=size, batch=batch, frames=frames, repeats=repeats)
    res["params_m"] = {k: round(sum(p.numel() for p in m.parameters()) / 1e6, 2) for k, m in models.items()}
    res["task"] = "ms_segment"
    return res


def cache_epochs(records: Sequence[dict[str, Any]], transform: Any, cache: str, cache_dir: str | Path | None,
                 epochs: int = 3, batch_size: int = 32) -> dict[str, Any]:
    """Items/s of each of ``epochs`` passes of a shuffling training loader over ``records`` with ``data.cache=cache``
    (:func:`~medtasks.data.datasets.build_dataset`), and epochs 2+ against epoch 1: what a disk cache buys."""
    from monai.data import DataLoader

    from medtasks.data.datasets import build_dataset

    ds = build_dataset(records, transform, cache=cache, cache_dir=cache_dir, progress=False)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0)
    rates = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for _batch in loader:
            pass
        rates.append(round(len(records) / (time.perf_counter() - t0), 1))
    later = rates[1:] or rates
    return {"cache": cache, "epoch_items_per_s": rates,
            "epochs_2plus_over_1": round(float(sum(later) / len(later)) / rates[0], 2)}


def bench(task_name: str, input_path: str | Path | None = None, n: int = 200, repeats: int = 3,
          size: int = 256, batch: int = 4, cache_epochs_n: int = 0) -> dict[str, Any]:
    """Run the benchmark of ``task_name`` (``ich_classify``: input pipeline; ``ms_segment``: network FPS,
    ``n`` frames of ``size`` px in batches of ``batch``)."""
    if task_name == "ms_segment":
        return bench_ms_segment(size=size, batch=batch, frames=n, repeats=repeats)
    if task_name != "ich_classify":
        raise ValueError(f"no benchmark for {task_name!r}; available: ich_classify, ms_segment")
    import numpy as np
    import pydicom
    import torch

    from medtasks.api import get_task_class
    from medtasks.config import load_config
    from medtasks.data.dicom_index import find_dicoms

    torch.set_num_threads(1)  # every side single-threaded: the comparison is per core
    cls = get_task_class(task_name)
    task = cls(load_config(None, cls.Config))
    with tempfile.TemporaryDirectory() as tmp:
        if input_path is None:
            from medtasks.synth.head_ct import generate_head_ct

            n_patients = max(1, int(np.ceil(n / 24)))
            generate_head_ct(Path(tmp) / "synth", n_patients=n_patients, matrix=512, seed=0, progress=False)
            input_path = Path(tmp) / "synth"
        paths = find_dicoms(Path(input_path))[:n]
        if not paths:
            raise FileNotFoundError(f"{input_path}: no .dcm files")
        mean, std = [0.5] * 3, [0.25] * 3
        task.state = {"norm_mean": mean, "norm_std": std}
        transform = task.build_transforms("test")
        chain = monai_ct_chain(task.cfg.input.windows, task.cfg.input.size, mean, std)
        label = np.zeros(6, np.float32)
        result = compare_rates(lambda p: transform({"image": p, "label": label}),
                               {"pydicom_decode": lambda p: pydicom.dcmread(p).pixel_array,
                                "monai_chain": lambda p: chain({"image": p, "label": label})}, paths, repeats)
        if cache_epochs_n:  # the training pipeline (random augmentation included) over the same files, per epoch
            records = [{"image": p, "label": np.zeros(6, np.float32), "z": np.float32(0.5)} for p in paths]
            train_tf = task.build_transforms("train")
            result["epochs"] = [cache_epochs(records, train_tf, c, Path(tmp) / "cache", cache_epochs_n)
                                for c in ("none", "disk")]
    result.update(task=task_name, size=task.cfg.input.size,
                  pipeline="DICOM -> stored pixels -> resize -> HU map folded into 3 windows + normalisation -> tensor "
                           "(LoadCTWindowsd)",
                  baselines={"pydicom_decode": "pydicom.dcmread(path).pixel_array",
                             "monai_chain": "LoadImaged (PydicomReader, HU) -> Resized (area) -> ScaleIntensityRanged "
                                            "per window -> ConcatItemsd -> NormalizeIntensityd (monai_ct_chain)"},
                  threads=torch.get_num_threads())
    log.info("bench %s: %s", task_name, result)
    return result
