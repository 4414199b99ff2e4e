"""medtasks.io.dicom_series against SimpleITK (GDCM, sorts by position) on small synthetic series whose
InstanceNumbers and file names do not follow position; and the rejection reasons."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medtasks.io.dicom_series import (
    REASONS,
    SeriesError,
    read_series,
    read_series_files,
    read_series_folder,
    save_series_nifti,
)

ROWS, COLS = 12, 16
PIXEL_SPACING = (0.8, 0.5)  # (row spacing, column spacing), deliberately non-square
SLICE_SPACING = 2.5
N_SLICES = 7


def rotation(ax_deg: float, ay_deg: float) -> np.ndarray:
    """Rotation about x by ``ax_deg`` then about y by ``ay_deg``; columns are row, column, normal (LPS)."""
    a, b = math.radians(ax_deg), math.radians(ay_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    return ry @ rx


OBLIQUE = rotation(20.0, 20.0)
AXIAL = np.eye(3)


def slice_pixels(k: int) -> np.ndarray:
    """Distinct stored values per slice and per pixel, so order and axis swaps show."""
    r, c = np.mgrid[:ROWS, :COLS]
    return (1000 * (k + 1) + 20 * r + c).astype(np.uint16)


def write_series(folder: Path, rot: np.ndarray = OBLIQUE, n: int = N_SLICES, *, seed: int = 0,
                 instance_follows_position: bool = False, series_uid: str | None = None, description: str = "flair",
                 series_number: int = 3, origin: tuple[float, float, float] = (-40.0, 25.0, -12.0),
                 skip: tuple[int, ...] = (), overrides: dict[int, dict[str, object]] | None = None) -> list[Path]:
    """Write an MR series of ``n`` slices (slice k at origin + k * SLICE_SPACING * normal) into ``folder``.

    File names and (unless ``instance_follows_position``) InstanceNumbers are shuffled. ``skip`` leaves slices
    out; ``overrides[k]`` sets tags of slice k (value None deletes). Returns the paths in position order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names, numbers = rng.permutation(n), rng.permutation(n) + 1
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    paths = []
    for k in range(n):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.PatientID, ds.PatientName, ds.PatientBirthDate = "ID_x", "Doe^Jane", "19700101"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "MR", series_number, description
        ds.InstanceNumber = k + 1 if instance_follows_position else int(numbers[k])
        ds.ImageOrientationPatient = [round(float(v), 10) for v in (*rot[:, 0], *rot[:, 1])]
        ds.ImagePositionPatient = [round(float(v), 6) for v in np.asarray(origin) + k * SLICE_SPACING * rot[:, 2]]
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.SliceThickness = SLICE_SPACING
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 2, -10
        for key, value in (overrides or {}).get(k, {}).items():
            if value is None:
                delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.PixelData = slice_pixels(k).tobytes()
        path = folder / f"img{names[k]:03d}_{series_uid[-4:]}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def expected_array(n: int = N_SLICES) -> np.ndarray:
    """Rescaled values in (column i, row j, slice k) order, by hand."""
    return np.stack([slice_pixels(k).T.astype(np.float32) * 2 - 10 for k in range(n)], axis=-1)


def sitk_volume(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's array in (i, j, k) order and its affine converted from LPS to RAS."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    img = reader.Execute()
    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)).astype(np.float32)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.GetDirection()).reshape(3, 3) @ np.diag(img.GetSpacing())
    lps[:3, 3] = img.GetOrigin()
    return arr, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def monai_volume(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The old path (ms_segment's ``_dicom_to_nifti``): MONAI's PydicomReader."""
    from monai.transforms import LoadImage

    img = LoadImage(reader="PydicomReader", image_only=True, ensure_channel_first=False)(str(folder))
    return np.asarray(img, dtype=np.float32), np.asarray(img.affine, dtype=np.float64)


def by_hand_affine(rot: np.ndarray, origin=(-40.0, 25.0, -12.0)) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, 0] = rot[:, 0] * PIXEL_SPACING[1]
    lps[:3, 1] = rot[:, 1] * PIXEL_SPACING[0]
    lps[:3, 2] = rot[:, 2] * SLICE_SPACING
    lps[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.mark.parametrize("rot", [OBLIQUE, AXIAL], ids=["oblique", "axial"])
def test_shuffled_series_matches_simpleitk(tmp_path: Path, rot: np.ndarray) -> None:
    write_series(tmp_path, rot)
    (vol,), rejected = read_series_folder(tmp_path)
    assert rejected == []
    ref_arr, ref_affine = sitk_volume(tmp_path)
    assert vol.array.dtype == np.float32 and vol.array.shape == (COLS, ROWS, N_SLICES)
    np.testing.assert_array_equal(vol.array, ref_arr)
    np.testing.assert_allclose(vol.affine, ref_affine, atol=1e-5)
    np.testing.assert_array_equal(vol.array, expected_array())
    np.testing.assert_allclose(vol.affine, by_hand_affine(rot), atol=1e-5)
    assert vol.spacing == pytest.approx((PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_SPACING))
    np.testing.assert_allclose(np.diff(vol.positions), SLICE_SPACING, atol=1e-5)
    # The old path stacks by InstanceNumber: on the same files its slices are out of order.
    old_arr, old_affine = monai_volume(tmp_path)
    assert old_arr.shape == vol.array.shape
    old_order = [int(round((old_arr[0, 0, k] + 10) / 2)) // 1000 - 1 for k in range(N_SLICES)]
    assert old_order != list(range(N_SLICES))
    assert not np.array_equal(old_arr, ref_arr)
    assert np.abs(old_affine - ref_affine).max() > 1.0  # mm: its third column and origin come from the wrong slices


@pytest.mark.parametrize("rot", [OBLIQUE, AXIAL], ids=["oblique", "axial"])
def test_same_as_monai_when_instance_numbers_follow_position(tmp_path: Path, rot: np.ndarray) -> None:
    """Where MONAI is right (InstanceNumber = position order), the axis order and affine are MONAI's."""
    write_series(tmp_path, rot, instance_follows_position=True)
    (vol,), _ = read_series_folder(tmp_path)
    old_arr, old_affine = monai_volume(tmp_path)
    np.testing.assert_array_equal(vol.array, old_arr)
    np.testing.assert_allclose(vol.affine, old_affine, atol=1e-5)


def test_save_series_nifti_round_trip(tmp_path: Path) -> None:
    write_series(tmp_path / "dcm")
    (vol,), _ = read_series_folder(tmp_path / "dcm")
    out = save_series_nifti(vol, tmp_path / "out" / f"{vol.name}.nii.gz")
    assert out.name == "3_flair.nii.gz" and sorted(p.name for p in out.parent.iterdir()) == [out.name]
    img = nib.load(str(out))
    np.testing.assert_array_equal(np.asarray(img.dataobj), expected_array())
    np.testing.assert_allclose(img.affine, by_hand_affine(OBLIQUE), atol=1e-5)
    assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(sitk_volume(tmp_path / "dcm")[1])


def test_no_patient_fields_in_metadata(tmp_path: Path) -> None:
    write_series(tmp_path)
    (vol,), _ = read_series_folder(tmp_path)
    text = repr(vol.meta) + vol.name
    assert "Doe" not in text and "19700101" not in text and "ID_x" not in text
    assert vol.meta["modality"] == "MR" and vol.meta["series_number"] == 3 and vol.meta["n_slices"] == N_SLICES


def test_two_series_in_one_folder(tmp_path: Path) -> None:
    a = write_series(tmp_path, OBLIQUE, n=6, seed=1, description="t2 flair", series_number=4)
    b = write_series(tmp_path, AXIAL, n=8, seed=2, description="t1", series_number=2, origin=(0.0, 0.0, 50.0))
    volumes, rejected = read_series_folder(tmp_path)
    assert rejected == []
    assert [v.name for v in volumes] == ["2_t1", "4_t2_flair"]  # ordered by SeriesNumber
    t1, flair = volumes
    assert t1.files == tuple(map(str, b)) and flair.files == tuple(map(str, a))
    np.testing.assert_array_equal(t1.array, expected_array(8))
    np.testing.assert_array_equal(flair.array, expected_array(6))
    np.testing.assert_allclose(flair.affine, by_hand_affine(OBLIQUE), atol=1e-5)
    with pytest.raises(SeriesError) as info:
        read_series(a + b)
    assert info.value.reason == "mixed_series"


def _rejected_reason(folder: Path) -> tuple[str, str]:
    volumes, rejected = read_series_folder(folder)
    assert volumes == [] and len(rejected) == 1
    path, reason, detail = rejected[0]
    assert reason in REASONS and path == str(folder) and "fix:" in detail
    return reason, detail


def test_duplicate_position(tmp_path: Path) -> None:
    paths = write_series(tmp_path)
    shutil.copy(paths[3], tmp_path / "copy_of_slice.dcm")
    reason, detail = _rejected_reason(tmp_path)
    assert reason == "duplicate_position"
    assert "copy_of_slice.dcm" in detail and paths[3].name in detail


def test_uneven_spacing_one_slice_missing(tmp_path: Path) -> None:
    paths = write_series(tmp_path, skip=(4,))
    reason, detail = _rejected_reason(tmp_path)
    assert reason == "uneven_spacing"
    assert f"{2 * SLICE_SPACING:.3f} mm between {paths[3].name}" in detail


def test_mixed_orientation(tmp_path: Path) -> None:
    other = rotation(20.0, 25.0)  # a 5 degree different stack
    paths = write_series(tmp_path, overrides={2: {"ImageOrientationPatient": [*other[:, 0], *other[:, 1]]}})
    reason, detail = _rejected_reason(tmp_path)
    assert reason == "mixed_orientation" and paths[2].name in detail and "1 of 7" in detail


def test_missing_tag_and_mixed_shape(tmp_path: Path) -> None:
    paths = write_series(tmp_path / "a", overrides={5: {"PixelSpacing": None}})
    reason, detail = _rejected_reason(tmp_path / "a")
    assert reason == "missing_tag" and paths[5].name in detail
    paths = write_series(tmp_path / "b", overrides={1: {"PixelSpacing": [0.8, 0.6]}})
    reason, detail = _rejected_reason(tmp_path / "b")
    assert reason == "mixed_shape" and paths[1].name in detail


def test_gantry_tilt_is_rejected_as_sheared(tmp_path: Path) -> None:
    """Slices stacked along z while the planes are tilted 10 degrees: the affine would need a shear."""
    tilt = rotation(10.0, 0.0)
    overrides = {k: {"ImagePositionPatient": [0.0, 0.0, 3.0 * k]} for k in range(N_SLICES)}
    write_series(tmp_path, tilt, overrides=overrides)
    reason, _ = _rejected_reason(tmp_path)
    assert reason == "sheared"


def test_good_and_bad_series_together(tmp_path: Path) -> None:
    write_series(tmp_path, series_number=1, description="good")
    write_series(tmp_path, series_number=2, description="bad", skip=(2,))
    (tmp_path / "notes.txt").write_text("not dicom")
    volumes, rejected = read_series_folder(tmp_path)
    assert [v.name for v in volumes] == ["1_good"]
    assert [(r[0], r[1]) for r in rejected] == [(str(tmp_path), "uneven_spacing")] and "(bad)" in rejected[0][2]


def test_read_series_files_reports_unreadable_files(tmp_path: Path) -> None:
    paths = write_series(tmp_path)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"\0" * 128 + b"DICM" + b"\x01" * 50)
    volumes, rejected = read_series_files([*paths, junk])
    assert len(volumes) == 1 and [(r[0], r[1]) for r in rejected] == [(str(junk), "unreadable")]


def test_series_error_pickles_and_rejects_unknown_reason() -> None:
    import pickle

    err = pickle.loads(pickle.dumps(SeriesError("d", "uneven_spacing", "gap")))
    assert (err.path, err.reason, err.detail) == ("d", "uneven_spacing", "gap") and "fix:" in str(err)
    with pytest.raises(ValueError):
        SeriesError("d", "nope", "x")
