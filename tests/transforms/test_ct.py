"""Tests for medtasks.transforms.ct: exact windowing, channel order, the DICOM pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from pydicom.data import get_testdata_file

from medtasks.io.dicom import DicomReadError, read_hu
from medtasks.transforms.augment import build_augmentation
from medtasks.transforms.ct import CTWindowsd, LoadDicomHUd, apply_window, ct_window_pipeline

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


def test_windows_channel_order_2p5d() -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1100, 3100, size=(3, 8, 8)).astype(np.float32)  # 3 neighbouring slices
    windows = [(40, 80), (50, 130), (600, 2800)]
    out = CTWindowsd("image", windows)({"image": hu})["image"]
    assert out.shape == (9, 8, 8) and out.dtype == np.float32
    for i, (level, width) in enumerate(windows):
        for j in range(3):
            np.testing.assert_array_equal(out[i * 3 + j], apply_window(hu[j], level, width))
    # torch and MetaTensor inputs give the same values and keep their type.
    out_t = CTWindowsd("image", windows)({"image": torch.from_numpy(hu)})["image"]
    assert type(out_t) is torch.Tensor
    np.testing.assert_array_equal(out_t.numpy(), out)
    out_m = CTWindowsd("image", windows)({"image": MetaTensor(torch.from_numpy(hu))})["image"]
    assert isinstance(out_m, MetaTensor)
    np.testing.assert_array_equal(out_m.as_tensor().numpy(), out)


def test_windows_shapes_and_missing_keys() -> None:
    out = CTWindowsd("image", [(40, 80)])({"image": np.zeros((5, 6), np.float32)})["image"]
    assert out.shape == (1, 5, 6)
    with pytest.raises(ValueError):
        CTWindowsd("image", [(40, 80)])({"image": np.zeros((1, 1, 5, 6))})
    with pytest.raises(ValueError):
        CTWindowsd("image", [])
    with pytest.raises(KeyError):
        CTWindowsd("image")({"label": 1})
    assert CTWindowsd("image", allow_missing_keys=True)({"label": 1}) == {"label": 1}


def test_load_dicom_hud() -> None:
    path = get_testdata_file("CT_small.dcm")
    out = LoadDicomHUd("image")({"image": path, "label": 1})
    assert out["image"].shape == (1, 128, 128) and out["image"].dtype == np.float32
    np.testing.assert_array_equal(out["image"][0], read_hu(path))
    assert out["label"] == 1
    assert LoadDicomHUd(["image", "prior"], allow_missing_keys=True)({"image": path})["image"].shape[0] == 1
    with pytest.raises(DicomReadError) as info:
        LoadDicomHUd("image")({"image": get_testdata_file("MR_small.dcm")})
    assert info.value.reason == "wrong_modality"


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


def test_fused_window_normalise_matches_two_steps() -> None:
    from medtasks.transforms.resize import NormalizeChannelsd

    rng = np.random.default_rng(5)
    hu = rng.uniform(-1200, 3200, (3, 32, 32)).astype(np.float32)  # 2.5-D: 3 slices x 3 windows
    hu[0, 0, :4] = [10.0, 40.0, 80.0, -1000.0]  # window edges and centre
    mean = rng.uniform(0.1, 0.6, 9).tolist()
    std = rng.uniform(0.1, 0.4, 9).tolist()
    fused = CTWindowsd("image", mean=mean, std=std)({"image": hu})["image"]
    plain = CTWindowsd("image")({"image": hu})["image"]
    two_step = NormalizeChannelsd("image", mean, std)({"image": plain})["image"]
    np.testing.assert_allclose(fused, two_step, rtol=1e-5, atol=1e-5)
    as_tensor = CTWindowsd("image", mean=mean, std=std)({"image": torch.from_numpy(hu)})["image"]
    np.testing.assert_allclose(as_tensor.numpy(), two_step, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="output channels"):
        CTWindowsd("image", mean=[0.5] * 3, std=[0.25] * 3)({"image": hu})
    with pytest.raises(ValueError, match="both"):
        CTWindowsd("image", mean=[0.5] * 3)
