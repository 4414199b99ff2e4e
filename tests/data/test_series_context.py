"""2.5-D neighbours: order by z within each series, edges repeat, rows keep their order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medtasks.data.series import neighbour_paths


def test_neighbours_by_z_with_repeated_edges_and_row_order() -> None:
    df = pd.DataFrame({"series_instance_uid": ["a", "b", "a", "a", "b", "c"],
                       "Z": [10.0, 5.0, 0.0, 5.0, -5.0, 1.0],
                       "path": ["a10", "b5", "a0", "a5", "b-5", "c1"]}, index=[7, 3, 9, 1, 4, 2])
    out = neighbour_paths(df, 1)
    assert out == [["a5", "a10", "a10"], ["b-5", "b5", "b5"], ["a0", "a0", "a5"], ["a0", "a5", "a10"],
                   ["b-5", "b-5", "b5"], ["c1", "c1", "c1"]]
    wide = neighbour_paths(df, 2)
    assert wide[3] == ["a0", "a0", "a5", "a10", "a10"]
    assert neighbour_paths(df, 0) == [[p] for p in df.path]
    with pytest.raises(ValueError):
        neighbour_paths(df, -1)


def test_load_dicom_hu_stacks_a_list_of_slices(tmp_path) -> None:
    from monai.transforms import ScaleIntensityRange
    from pydicom.data import get_testdata_file

    from medtasks.io.dicom import DicomReadError, read_hu
    from medtasks.transforms.ct_load import DEFAULT_WINDOWS, LoadCTWindowsd

    ct = get_testdata_file("CT_small.dcm")
    out = LoadCTWindowsd("image", as_tensor=False)({"image": [ct, ct, ct]})["image"]
    assert out.shape == (9, 128, 128)   # window-major: 3 windows x 3 slices
    level, width = DEFAULT_WINDOWS[1]
    want = np.asarray(ScaleIntensityRange(level - width / 2, level + width / 2, 0.0, 1.0, clip=True)(read_hu(ct)))
    for j in range(3):
        np.testing.assert_array_equal(out[3 + j], want)
    other = get_testdata_file("693_UNCR.dcm")
    with pytest.raises(DicomReadError) as info:
        LoadCTWindowsd("image", modality=None)({"image": [ct, other]})
    assert info.value.reason == "bad_shape"
