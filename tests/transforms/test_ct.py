"""Tests for medtasks.transforms.ct: exact windowing (against MONAI's ScaleIntensityRange), the DICOM pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import ScaleIntensityRange
from pydicom.data import get_testdata_file

from medtasks.io.dicom import read_hu
from medtasks.transforms.augment import build_augmentation
from medtasks.transforms.ct import apply_window, ct_window_pipeline

# (level, width) -> {HU: expected value}; all chosen to be exact in float32.
EXACT = {
    (40, 80): {0: 0.0, 40: 0.5, 80: 1.0, -1000: 0.0, 3000: 1.0, 60: 0.75, 20: 0.25},
    (50, 130): {-15: 0.0, 50: 0.5, 115: 1.0, -1000: 0.0, 3000: 1.0, 82.5: 0.75, 17.5: 0.25},
    (600, 2800): {-800: 0.0, 600: 0.5, 2000: 1.0, -1024: 0.0, 3071: 1.0, 1300: 0.75, -100: 0.25},
}


@pytest.mark.parametrize("window", list(EXACT))
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_apply_window_exact(window: tuple[int, int], kind: str) -> None:
    hu_values, expected = zip(*EXACT[window].items())
    hu = np.array(hu_values, dtype=np.float32)
    out = apply_window(torch.from_numpy(hu) if kind == "torch" else hu, *window)
    if kind == "torch":
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        out = out.numpy()
    else:
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))


def test_apply_window_dtypes_and_validation() -> None:
    assert apply_window(np.array([40], dtype=np.int16), 40, 80).dtype == np.float32
    assert apply_window(np.array([40.0]), 40, 80).dtype == np.float32
    assert apply_window(torch.tensor([40], dtype=torch.int16), 40, 80).dtype == torch.float32
    assert apply_window(torch.tensor([40.0], dtype=torch.float64), 40, 80).dtype == torch.float32
    hu = np.array([[0.0, 40.0]], dtype=np.float32)
    apply_window(hu, 40, 80)
    np.testing.assert_array_equal(hu, [[0.0, 40.0]])  # input not modified
    with pytest.raises(ValueError):
        apply_window(hu, 40, 0)


def test_apply_window_equals_monai_scale_intensity_range() -> None:
    """The same float32 values as MONAI's ScaleIntensityRange(low, high, 0, 1, clip=True), for integer and
    fractional windows, float32 and int16 HU."""
    rng = np.random.default_rng(0)
    for hu in (rng.uniform(-1100, 3100, (64, 64)).astype(np.float32), rng.integers(-1100, 3100, (64, 64), np.int16)):
        for level, width in [*EXACT, (40.3, 80.7)]:
            ref = ScaleIntensityRange(level - width / 2, level + width / 2, 0.0, 1.0, clip=True)(hu)
            np.testing.assert_array_equal(apply_window(hu, level, width), np.asarray(ref))
            np.testing.assert_array_equal(apply_window(torch.from_numpy(hu), level, width).numpy(), np.asarray(ref))


def test_pipeline_j2k_twin_identical() -> None:
    pipe = ct_window_pipeline(size=224, mean=(0.2, 0.3, 0.4), std=(0.3, 0.3, 0.2))
    out_u = pipe({"image": get_testdata_file("693_UNCR.dcm")})["image"]
    out_j = pipe({"image": get_testdata_file("693_J2KR.dcm")})["image"]
    assert type(out_u) is torch.Tensor and out_u.dtype == torch.float32
    assert tuple(out_u.shape) == (3, 224, 224)
    assert torch.equal(out_u, out_j)


def test_pipeline_values_native_size() -> None:
    path = get_testdata_file("CT_small.dcm")
    windowed = ct_window_pipeline(size=None)({"image": path})["image"]
    assert tuple(windowed.shape) == (3, 128, 128)
    hu = read_hu(path)
    for c, window in enumerate([(40, 80), (50, 130), (600, 2800)]):
        np.testing.assert_array_equal(windowed[c].numpy(), apply_window(hu, *window))
    mean, std = (0.5, 0.25, 0.1), (0.5, 0.25, 0.2)
    normed = ct_window_pipeline(size=None, mean=mean, std=std)({"image": path})["image"]
    expected = (windowed - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(normed, expected)


def test_pipeline_resize_and_arguments() -> None:
    path = get_testdata_file("CT_small.dcm")
    out = ct_window_pipeline(windows=[(40, 80)], size=64)({"image": path})["image"]
    assert tuple(out.shape) == (1, 64, 64) and 0.0 <= float(out.min()) <= float(out.max()) <= 1.0
    with pytest.raises(ValueError):
        ct_window_pipeline(mean=(0.5,) * 3)
    with pytest.raises(ValueError):
        ct_window_pipeline(mean=(0.5,) * 3, std=(0.5,) * 2)


def test_pipeline_with_seeded_augmentation() -> None:
    path = get_testdata_file("CT_small.dcm")
    cfg = {"hflip": 0.5, "rotate_deg": 10, "contrast": 0.1, "noise_std": 0.05}

    def run(seed: int) -> torch.Tensor:
        pipe = ct_window_pipeline(size=64, augment=build_augmentation(["image"], cfg, 64))
        pipe.set_random_state(seed=seed)
        return pipe({"image": path})["image"]

    first = run(3)
    assert type(first) is torch.Tensor and tuple(first.shape) == (3, 64, 64) and first.dtype == torch.float32
    assert torch.equal(first, run(3))
