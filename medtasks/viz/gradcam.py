"""Grad-CAM heatmaps (MONAI ``monai.visualize.GradCAM``) and overlay grids for 2-D classifiers.

:func:`gradcam_maps` returns one map per image, upsampled to the image size and scaled to
[0, 1] per image with 1 = the strongest evidence for the target logit. (MONAI's own default
post-processing maps (min, max) to (1, 0), i.e. it inverts the map; we pass a non-inverting
min-max scaling instead, and a constant map - no positive evidence anywhere - becomes all 0.)
:func:`gradcam_grid` draws the maps over the images and writes one PNG.

This module runs the network (forward + backward on a handful of images) but never trains; a
task calls it after evaluation and the report shows the PNG it wrote.

Example:
    >>> grid = gradcam_grid(model, batch, "backbone.layer4", ["TP p=0.93", "FN p=0.12"],
    ...                     "runs/x/figures/extra_gradcam_tp.png")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["gradcam_maps", "gradcam_grid", "minmax_normalizer"]

logger = logging.getLogger(__name__)


def minmax_normalizer(x: torch.Tensor) -> torch.Tensor:
    """Scale each map of a ``(B, 1, ...)`` tensor to [0, 1] (max -> 1); constant maps -> 0."""
    flat = x.detach().reshape(x.shape[0], -1).float()
    lo, hi = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    span = hi - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return out.reshape(x.shape)


def gradcam_maps(model: nn.Module, images: torch.Tensor, target_layer: str, class_idx: int = 0) -> np.ndarray:
    """Grad-CAM of logit ``class_idx`` at ``target_layer`` for a batch of network inputs.

    Args:
        model: The classifier (put in eval mode by MONAI for the pass, its mode restored after).
        images: ``(N, C, H, W)`` network inputs (already normalised like the evaluation inputs).
        target_layer: Module name as in ``model.named_modules()`` (e.g. ``"backbone.layer4"``).
        class_idx: Which output logit to explain (0 for a one-logit binary classifier).

    Returns:
        ``(N, H, W)`` float32 maps in [0, 1], one per image, at the images' size.

    Raises:
        ValueError: ``target_layer`` is not a module of ``model`` (the message lists candidates).
    """
    from monai.visualize import GradCAM

    names = [n for n, _ in model.named_modules()]
    if target_layer not in names:
        convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Sequential)) and n][-5:]
        raise ValueError(f"target layer {target_layer!r} is not a module of {type(model).__name__}; "
                         f"last candidates: {convs}")
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    device = next(model.parameters()).device
    # In-place activations (torchvision VGG's ReLU(inplace=True) right after the hooked conv) modify the
    # hooked output, which autograd forbids; switch them off for the pass and restore them after.
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in inplace:
        m.inplace = False
    cam = GradCAM(nn_module=model, target_layers=target_layer, postprocessing=minmax_normalizer)
    with torch.enable_grad():  # callers often sit inside torch.no_grad()
        # An input that requires grad keeps the full backward hook firing on the target layer even
        # when it is the first layer (torch warns otherwise).
        try:
            maps = cam(x=images.to(device).float().requires_grad_(True), class_idx=class_idx)
        finally:
            for m in inplace:
                m.inplace = True
    return maps[:, 0].detach().cpu().numpy().astype(np.float32)


def gradcam_grid(model: nn.Module, images: torch.Tensor, target_layer: str, titles: Sequence[str],
                 path: str | Path, backgrounds: np.ndarray | None = None, suptitle: str | None = None,
                 alpha: float = 0.45, ncols: int = 4, class_idx: int = 0) -> Path:
    """Grad-CAM overlays of ``images`` in one grid PNG at ``path``.

    Args:
        model: The classifier.
        images: ``(N, C, H, W)`` network inputs.
        target_layer: Module name of the layer to explain (e.g. ``"backbone.layer4"``).
        titles: One title per image (truth, probability, id).
        path: PNG to write (atomically).
        backgrounds: ``(N, H, W)`` images to draw under the maps (e.g. the grey slice in [0, 1]);
            default: channel 0 of ``images``, min-max scaled per image.
        suptitle: Figure title.
        alpha: Heatmap opacity.
        ncols: Images per row.
        class_idx: Logit to explain.

    Returns:
        ``path``.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from medtasks.viz.canvas import _new_figure, _style, save_figure

    n = int(images.shape[0])
    if n == 0 or len(titles) != n:
        raise ValueError(f"need >= 1 image and one title per image; got {n} images, {len(titles)} titles")
    maps = gradcam_maps(model, images, target_layer, class_idx)
    if backgrounds is None:
        base = images[:, 0].detach().cpu().float().numpy()
        lo, hi = base.min(axis=(1, 2), keepdims=True), base.max(axis=(1, 2), keepdims=True)
        backgrounds = (base - lo) / np.maximum(hi - lo, 1e-12)
    backgrounds = np.asarray(backgrounds, dtype=np.float32)
    if backgrounds.shape != maps.shape:
        raise ValueError(f"backgrounds must be {maps.shape} (N, H, W), got {backgrounds.shape}")
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    with _style():
        fig, axes = _new_figure(2.9 * ncols, 3.1 * nrows + (0.4 if suptitle else 0.0), nrows, ncols)
        for i, ax in enumerate(axes.ravel()):
            ax.set_axis_off()
            if i >= n:
                continue
            ax.imshow(backgrounds[i], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            # Opacity grows with the map: no evidence leaves the slice visible, not tinted blue.
            ax.imshow(maps[i], cmap="jet", vmin=0.0, vmax=1.0, alpha=alpha * np.clip(2.0 * maps[i], 0.0, 1.0),
                      interpolation="bilinear")
            ax.set_title(titles[i], fontsize=9)
        scale = ScalarMappable(norm=Normalize(0.0, 1.0), cmap="jet")
        fig.colorbar(scale, ax=axes.ravel().tolist(), shrink=0.8, label="Grad-CAM (1 = strongest evidence)")
        if suptitle:
            fig.suptitle(suptitle, fontsize=11)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_figure(fig, path)
    logger.info("wrote Grad-CAM grid %s (%d images, layer %s)", path, n, target_layer)
    return path
