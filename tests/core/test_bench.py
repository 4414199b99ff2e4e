"""``medtasks bench ms_segment``: the report's U-Net beside smp, MONAI and the report's Mask R-CNN baseline."""

from __future__ import annotations

import pytest
import torch

from medtasks.bench import bench_ms_segment, mask_rcnn


def test_ms_bench_times_all_four_networks_on_the_same_input() -> None:
    res = bench_ms_segment(size=64, batch=1, frames=1, repeats=1)
    names = list(res["fps"])
    assert len(names) == 4 and names[0].startswith("ms_unet") and "Mask R-CNN" in names[3]
    assert all(v > 0 for v in res["fps"].values())
    assert res["ratio_to_first"][names[0]] == 1.0
    for n in names[1:]:
        assert res["ratio_to_first"][n] == pytest.approx(res["fps"][n] / res["fps"][names[0]], abs=1e-3)
    # torchvision's maskrcnn_resnet50_fpn with 2 classes: 43.9 M parameters
    assert res["params_m"][names[3]] == pytest.approx(43.9, abs=0.2)


def test_mask_rcnn_adapter_takes_a_batch_and_keeps_the_size() -> None:
    net = mask_rcnn(64).eval()
    with torch.inference_mode():
        out = net(torch.rand(2, 3, 64, 64))
    assert len(out) == 2 and {"boxes", "masks", "scores"} <= set(out[0])
    assert out[0]["masks"].shape[-2:] == (64, 64)
