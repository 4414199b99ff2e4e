"""read_radiograph / probe_radiograph: DICOM bit depth, MONOCHROME1 inversion, rejections naming the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import medtasks.io.radiograph as radiograph
from medtasks.io.images import read_grey
from medtasks.io.radiograph import (
    RADIOGRAPH_SUFFIXES,
    RadiographError,
    is_dicom,
    probe_radiograph,
    read_radiograph,
)

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
# Known 12-bit values, a bit above the range set in one of them (cleared by a correct reader).
VALUES = np.array([[0, 1, 2048], [4000, 4095, 123]], dtype=np.uint16)


def write_dicom(path: Path, pixels: np.ndarray, modality: str = "CR", photometric: str = "MONOCHROME1",
                bits: int = 12, **attrs: object) -> Path:
    """A minimal single-frame DICOM; colour when ``pixels`` is (rows, cols, 3)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CR_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CR_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.PatientName = modality, "SYN-TEST-0001", "Secret^Person"
    ds.Rows, ds.Columns = pixels.shape[:2]
    colour = pixels.ndim == 3
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3, "RGB") if colour else (1, photometric)
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_monochrome1_12bit_is_inverted_over_the_stored_bit_range(tmp_path: Path) -> None:
    stored = VALUES.copy()
    stored[0, 2] |= 0x3000  # garbage above BitsStored must not count
    path = write_dicom(tmp_path / "mono1.dcm", stored)
    out = read_radiograph(path)
    assert out.shape == (1, 2, 3) and out.dtype == np.float32
    expected = (np.float32(4095) - VALUES.astype(np.float32)) / np.float32(4095)
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_allclose(out[0], (4095 - VALUES.astype(np.float64)) / 4095, rtol=0, atol=1e-7)
    assert out[0, 0, 0] == 1.0 and out[0, 1, 1] == 0.0


def test_monochrome2_is_not_inverted_and_rescale_is_applied(tmp_path: Path) -> None:
    plain = read_radiograph(write_dicom(tmp_path / "mono2.dcm", VALUES, photometric="MONOCHROME2", modality="DX"))
    np.testing.assert_array_equal(plain[0], VALUES.astype(np.float32) / np.float32(4095))
    # The range ends go through the same rescale, so slope/intercept do not change the picture.
    rescaled = read_radiograph(write_dicom(tmp_path / "rescaled.dcm", VALUES, photometric="MONOCHROME2",
                                           RescaleSlope="2", RescaleIntercept="-100"))
    np.testing.assert_allclose(rescaled, plain, atol=1e-6)


def test_16bit_keeps_full_depth(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535]], dtype=np.uint16)  # 257/65535 would be lost by an 8-bit step
    out = read_radiograph(write_dicom(tmp_path / "dx16.dcm", values, modality="DX", photometric="MONOCHROME2",
                                      bits=16))
    np.testing.assert_allclose(out[0], values / 65535.0, atol=1e-7)


def test_voi_window_is_optional(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "win.dcm", VALUES, WindowCenter="2048", WindowWidth="1025")
    default, windowed = read_radiograph(path), read_radiograph(path, voi=True)
    np.testing.assert_array_equal(default[0], (np.float32(4095) - VALUES) / np.float32(4095))
    # DICOM LINEAR window ((v - (c - 0.5)) / (w - 1) + 0.5, clipped) on stored values, then MONOCHROME1 inversion.
    middle = 1 - ((2048 - 2047.5) / 1024 + 0.5)
    np.testing.assert_allclose(windowed[0], [[1.0, 1.0, middle], [0.0, 0.0, 1.0]], atol=1e-6)


def _voi_by_hand(x: np.ndarray, center: float, width: float, func: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 / C.11.2.1.3 in float64, onto [0, 1]."""
    if func == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if func == "LINEAR":
        center, width = center - 0.5, width - 1.0
    return np.where(x <= center - width / 2, 0.0, np.where(x > center + width / 2, 1.0, (x - center) / width + 0.5))


@pytest.mark.parametrize("func", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_voi_window_functions_equal_the_standard_by_hand(tmp_path: Path, func: str) -> None:
    """Every 12-bit value (rescaled to -1024 .. 1023.5) through a brain window: pydicom's apply_windowing onto
    [0, 1] equals the standard's formula within float32 rounding (half an ulp at 1: 6e-8)."""
    stored = np.arange(4096, dtype=np.uint16).reshape(64, 64)
    path = write_dicom(tmp_path / f"{func}.dcm", stored, modality="DX", photometric="MONOCHROME2", RescaleSlope="0.5",
                       RescaleIntercept="-1024", WindowCenter=["40.3", "400"], WindowWidth=["80.7", "2000"],
                       VOILUTFunction=func)
    with np.errstate(over="ignore"):
        want = _voi_by_hand(stored * 0.5 - 1024, 40.3, 80.7, func)   # the first of the two windows
    got = read_radiograph(path, voi=True)[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=6e-8)
    assert got.min() < 1e-6 and got.max() > 1 - 1e-6                   # the ramp crosses the whole window
    mono1 = read_radiograph(write_dicom(tmp_path / f"{func}-1.dcm", stored, RescaleSlope="0.5",
                                        RescaleIntercept="-1024", WindowCenter="40.3", WindowWidth="80.7",
                                        VOILUTFunction=func), voi=True)[0]
    np.testing.assert_array_equal(mono1, np.float32(1) - got)          # MONOCHROME1: inverted after the window


@pytest.mark.parametrize(("func", "width"), [("LINEAR", "0.5"), ("LINEAR_EXACT", "0"), ("GAMMA", "100")])
def test_unusable_voi_window_names_the_file_and_the_fix(tmp_path: Path, func: str, width: str) -> None:
    path = write_dicom(tmp_path / "bad.dcm", VALUES, WindowCenter="100", WindowWidth=width, VOILUTFunction=func)
    with pytest.raises(RadiographError, match="without voi=True") as info:
        read_radiograph(path, voi=True)
    assert str(info.value).startswith(f"{path}: ") and info.value.reason == "unreadable"
    assert read_radiograph(path).shape == (1, 2, 3)                    # the bit range still reads it


def test_dicom_without_suffix_is_detected_by_its_preamble(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "IMG0001", VALUES, photometric="MONOCHROME2")
    assert is_dicom(path)
    assert read_radiograph(path).shape == (1, 2, 3)


@pytest.mark.parametrize("kind", ["ct", "colour", "multiframe", "garbage", "no_pixels"])
def test_unusable_dicom_raises_value_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.dcm"
    if kind == "ct":
        write_dicom(path, VALUES, modality="CT", photometric="MONOCHROME2")
    elif kind == "colour":
        write_dicom(path, np.zeros((2, 3, 3), np.uint8), bits=8)
    elif kind == "multiframe":
        write_dicom(path, np.zeros((4, 3), np.uint16), photometric="MONOCHROME2", NumberOfFrames=2)
    elif kind == "no_pixels":
        write_dicom(path, VALUES, photometric="MONOCHROME2")
        import pydicom

        ds = pydicom.dcmread(path)
        del ds.PixelData
        ds.save_as(path)
    else:
        path.write_bytes(b"\0" * 128 + b"DICM" + b"\x07\x00garbage" * 10)
    reasons = {"ct": "wrong_modality", "colour": "bad_shape", "multiframe": "bad_shape", "garbage": "unreadable",
               "no_pixels": "no_pixel_data"}
    for fn in (read_radiograph, probe_radiograph):
        with pytest.raises(ValueError) as info:
            fn(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ")
        assert isinstance(info.value, RadiographError) and info.value.reason == reasons[kind]
        assert "Secret" not in message  # patient names never reach messages
    if kind == "ct":
        assert "CT" in message
    if kind == "colour":
        assert "colour" in message


def test_image_files_go_through_read_grey(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "IM-0001-0001.jpeg"
    Image.fromarray(np.tile(np.arange(0, 256, 8, dtype=np.uint8), (16, 1))).save(path, quality=95)
    calls: list[str] = []

    def spy(p: str) -> np.ndarray:
        calls.append(p)
        return read_grey(p)

    monkeypatch.setattr(radiograph, "read_grey", spy)
    out = read_radiograph(path)
    assert calls == [str(path)]
    np.testing.assert_array_equal(out, read_grey(path))
    assert probe_radiograph(path).format == "jpeg"
    assert ".dcm" in RADIOGRAPH_SUFFIXES and ".jpeg" in RADIOGRAPH_SUFFIXES


def test_corrupt_and_truncated_images_fail_with_the_path(tmp_path: Path) -> None:
    good = tmp_path / "good.jpeg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(good, quality=90)
    truncated, garbage = tmp_path / "truncated.jpeg", tmp_path / "garbage.jpeg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    garbage.write_bytes(b"not an image at all" * 20)
    for path in (truncated, garbage):
        with pytest.raises(ValueError, match=r"^" + str(path).replace(".", r"\.") + ": "):
            probe_radiograph(path)
    with pytest.raises(ValueError, match=str(garbage).replace(".", r"\.")):
        read_radiograph(garbage)


def test_probe_reads_the_header_only(tmp_path: Path) -> None:
    info = probe_radiograph(write_dicom(tmp_path / "a.dcm", VALUES))
    assert (info.format, info.modality, info.patient_id, info.photometric, info.bits_stored) == (
        "dicom", "CR", "SYN-TEST-0001", "MONOCHROME1", 12)
    assert (info.width, info.height) == (3, 2)


def test_real_monochrome1_chest_cr_reads_with_dark_lungs() -> None:
    """pydicom-data's RG1_UNCR.dcm: a real 15-bit MONOCHROME1 chest CR (data-notes)."""
    from pydicom.data import get_testdata_file

    try:
        path = get_testdata_file("RG1_UNCR.dcm", download=False)
    except Exception:  # pydicom-data missing or not downloadable
        path = None
    if path is None:
        pytest.skip("pydicom-data's RG1_UNCR.dcm is not installed")
    img = read_radiograph(path)[0]
    h, w = img.shape
    lung = img[int(0.3 * h):int(0.4 * h), int(0.25 * w):int(0.35 * w)].mean()
    spine = img[int(0.3 * h):int(0.4 * h), int(0.47 * w):int(0.53 * w)].mean()
    assert 0.0 <= img.min() and img.max() <= 1.0 and lung < spine - 0.1
