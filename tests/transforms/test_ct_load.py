"""LoadCTWindowsd (the one-step CT input path) against the step-by-step chain in MONAI's transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import NormalizeIntensity, ScaleIntensityRange
from pydicom.data import get_testdata_file

from medtasks.io.dicom import DicomReadError, read_hu
from medtasks.transforms.ct_load import LoadCTWindowsd
from medtasks.transforms.resize import ResizeImaged
from tests.io.test_dicom import write_ct

WINDOWS = [(40, 80), (50, 130), (600, 2800)]


def _chain(value, size, mean=None, std=None):
    """The reference: HU first (read_hu), resample in HU, one MONAI ScaleIntensityRange per window (window-major:
    window i of every slice, then window i + 1), then MONAI NormalizeIntensity per channel."""
    paths = value if isinstance(value, list) else [value]
    hu = np.stack([read_hu(p) for p in paths])
    if size is not None:
        hu = ResizeImaged("image", size)({"image": hu})["image"]
    out = np.concatenate([np.asarray(ScaleIntensityRange(level - width / 2, level + width / 2, 0.0, 1.0,
                                                         clip=True)(hu)) for level, width in WINDOWS])
    if mean is not None:
        out = np.asarray(NormalizeIntensity(subtrahend=mean, divisor=std, channel_wise=True)(out))
    return out


def _files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    signed = rng.integers(-1100, 2500, (40, 48)).astype(np.int16)
    wrapped = rng.integers(0, 4096, (40, 48)).astype(np.uint16)
    return {
        "slope 2, signed": write_ct(tmp_path / "s.dcm", signed, RescaleSlope=2, RescaleIntercept=-1024),
        "slope 0.5": write_ct(tmp_path / "h.dcm", signed, RescaleSlope=0.5, RescaleIntercept=-20),
        "RSNA wrapped": write_ct(tmp_path / "w.dcm", wrapped, BitsStored=12, HighBit=11, RescaleIntercept=0),
        "CT_small": Path(get_testdata_file("CT_small.dcm")),
    }


def test_native_size_without_normalisation_is_exactly_the_window_of_read_hu(tmp_path: Path) -> None:
    for name, path in _files(tmp_path).items():
        out = LoadCTWindowsd("image", WINDOWS)({"image": path})["image"]
        assert type(out) is torch.Tensor and out.dtype == torch.float32, name
        ref = _chain(path, None)
        if name == "slope 0.5":   # non-integer HU: equal to float32 rounding only
            np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)
        else:
            np.testing.assert_array_equal(out.numpy(), ref, err_msg=name)


@pytest.mark.parametrize("size", [32, (20, 24), 64])
def test_resampled_and_normalised_matches_the_four_step_chain(tmp_path: Path, size) -> None:
    rng = np.random.default_rng(1)
    mean, std = rng.uniform(0.1, 0.6, 3).tolist(), rng.uniform(0.1, 0.4, 3).tolist()
    for name, path in _files(tmp_path).items():
        fused = LoadCTWindowsd("image", WINDOWS, size, mean, std)({"image": path})["image"].numpy()
        np.testing.assert_allclose(fused, _chain(path, size, mean, std), rtol=1e-5, atol=2e-5, err_msg=name)
        plain = LoadCTWindowsd("image", WINDOWS, size, as_tensor=False)({"image": path})["image"]
        assert isinstance(plain, np.ndarray) and plain.min() >= 0 and plain.max() <= 1
        np.testing.assert_allclose(plain, _chain(path, size), atol=2e-6, err_msg=name)


def test_neighbouring_slices_are_window_major_with_their_own_hu_maps(tmp_path: Path) -> None:
    files = _files(tmp_path)
    trio = [files["slope 2, signed"], files["RSNA wrapped"], files["slope 0.5"]]   # three different HU maps
    mean, std = [0.3] * 9, [0.2] * 9
    out = LoadCTWindowsd("image", WINDOWS, 24, mean, std)({"image": trio})["image"].numpy()
    assert out.shape == (9, 24, 24)
    np.testing.assert_allclose(out, _chain(trio, 24, mean, std), rtol=1e-5, atol=2e-5)
    # channel i * 3 + j is window i of slice j
    single = LoadCTWindowsd("image", WINDOWS, 24, [0.3] * 3, [0.2] * 3)({"image": trio[1]})["image"].numpy()
    np.testing.assert_allclose(out[[1, 4, 7]], single, rtol=1e-6, atol=1e-6)


def test_errors_name_the_problem(tmp_path: Path) -> None:
    files = _files(tmp_path)
    with pytest.raises(DicomReadError, match="neighbouring slices differ in size"):
        LoadCTWindowsd("image", WINDOWS)({"image": [files["CT_small"], files["RSNA wrapped"]]})
    with pytest.raises(ValueError, match="9 output channels but 3"):
        LoadCTWindowsd("image", WINDOWS, mean=[0.5] * 3, std=[0.2] * 3)({"image": [files["CT_small"]] * 3})
    with pytest.raises(ValueError, match="both"):
        LoadCTWindowsd("image", WINDOWS, mean=[0.5] * 3)
    with pytest.raises(ValueError, match="widths must be > 0"):
        LoadCTWindowsd("image", [(40, 0)])
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"not a dicom file")
    with pytest.raises(DicomReadError) as info:
        LoadCTWindowsd("image", WINDOWS)({"image": corrupt})
    assert info.value.reason == "unreadable"
