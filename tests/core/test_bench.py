"""``medtasks bench``: ms_segment's U-Net beside smp, MONAI and the report's Mask R-CNN baseline; ich_classify's fused
CT input transform beside the bare decode and the same steps in MONAI's own transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from medtasks.bench import bench, bench_ms_segment, compare_rates, mask_rcnn, monai_ct_chain
from medtasks.transforms.ct_load import DEFAULT_WINDOWS, LoadCTWindowsd
from tests.io.test_dicom import write_ct


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


def test_monai_chain_computes_what_the_fused_transform_computes(tmp_path: Path) -> None:
    """The bench's MONAI baseline does the same work: at the native size its values are LoadCTWindowsd's (HU from
    slope / intercept, 3 windows, per-channel normalisation); resized, only the resampling differs."""
    rng = np.random.default_rng(0)
    files = [Path(get_testdata_file("CT_small.dcm")),
             write_ct(tmp_path / "s.dcm", rng.integers(-1100, 2500, (40, 48)).astype(np.int16), RescaleSlope=2,
                      RescaleIntercept=-1024)]
    mean, std = [0.2, 0.3, 0.4], [0.3, 0.25, 0.2]
    for path in files:
        got = monai_ct_chain(DEFAULT_WINDOWS, None, mean, std)({"image": str(path)})["image"]
        want = LoadCTWindowsd("image", DEFAULT_WINDOWS, None, mean, std)({"image": path})["image"]
        assert type(got) is torch.Tensor and got.dtype == torch.float32 and got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
        resized = monai_ct_chain(DEFAULT_WINDOWS, 32, mean, std)({"image": str(path)})["image"]
        assert resized.shape == (3, 32, 32)


def test_compare_rates_times_every_baseline() -> None:
    baselines = {"slow": lambda p: sum(range(20000)), "fast": lambda p: sum(range(200))}
    res = compare_rates(lambda p: sum(range(2000)), baselines, ["a"] * 50, repeats=2)
    assert res["files"] == 50 and set(res["baselines_per_s"]) == set(res["ratios"]) == {"slow", "fast"}
    for name, rate in res["baselines_per_s"].items():
        # ratios are rounded to 3 decimals, rates to 0.1: a small ratio carries that rounding
        assert res["ratios"][name] == pytest.approx(res["pipeline_per_s"] / rate, rel=0.01, abs=6e-4)
    assert res["ratios"]["slow"] > 1 > res["ratios"]["fast"]


@pytest.mark.slow
def test_ich_bench_reports_both_baselines() -> None:
    res = bench("ich_classify", n=24, repeats=1)
    assert res["files"] == 24 and res["threads"] == 1 and res["size"] == 224
    assert set(res["ratios"]) == {"pydicom_decode", "monai_chain"} == set(res["baselines"])
    assert res["ratios"]["monai_chain"] > 1      # the fused transform beats the step-by-step MONAI chain
