"""NIfTI axial slicing as a transform: orientation, 2.5-D context with edge repeat, per-volume normalisation."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from medtasks.transforms.slicing import LoadAxialSliced, axial_slice, axial_stack, volume_stats


@pytest.fixture()
def volume(tmp_path):
    data = np.zeros((6, 5, 4), np.float32)                     # (x, y, z)
    for k in range(4):
        data[1:5, 1:4, k] = 10.0 * (k + 1)
    data[2, 1, 0] = 99.0                                        # x=2, y=1 on slice 0
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 3.0, 1.0])), path)
    mask = (data > 15).astype(np.uint8)
    mpath = tmp_path / "m.nii.gz"
    nib.save(nib.Nifti1Image(mask, np.diag([1.0, 1.0, 3.0, 1.0])), mpath)
    return path, mpath, data


def test_orientation_and_context(volume) -> None:
    path, _, data = volume
    s0 = axial_slice(path, 0)
    assert s0.shape == (1, 5, 6) and s0[0, 1, 2] == 99.0       # rows = y, columns = x
    st = axial_stack(path, 0, context=1)                       # slices -1 (edge: 0), 0, 1
    assert st.shape == (3, 5, 6)
    assert np.array_equal(st[0], st[1]) and st[2, 2, 2] == 20.0
    with pytest.raises(ValueError, match="outside"):
        axial_slice(path, 4)


def test_per_volume_normalisation(volume) -> None:
    path, mpath, data = volume
    fg = data[data != 0]
    off, scale = volume_stats(path, "zscore")
    assert off == pytest.approx(fg.mean()) and scale == pytest.approx(fg.std())
    out = LoadAxialSliced(["image", "label"], mask_keys=["label"], context=1, normalize="zscore")(
        {"image": str(path), "label": str(mpath), "slice_index": 2})
    assert out["image"].shape == (3, 5, 6) and out["label"].shape == (1, 5, 6)
    assert out["image"][1, 2, 2] == pytest.approx((30.0 - fg.mean()) / fg.std())
    assert set(np.unique(out["label"])) == {0.0, 1.0}
    pct = LoadAxialSliced(["image"], normalize="percentile")({"image": str(path), "slice_index": 0})["image"]
    assert pct.min() >= 0.0 and pct.max() <= 1.0
    with pytest.raises(ValueError, match="normalize"):
        LoadAxialSliced(["image"], normalize="minmax")
