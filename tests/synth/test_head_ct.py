"""Synthetic RSNA-style head CT: determinism, file and label format, anatomy, pixels round trip."""

from __future__ import annotations

import csv
import dataclasses
import re
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medtasks.synth.dicom_writer import encode_pixels, expected_hu, write_ct_slice
from medtasks.synth.head_ct import (
    SUBTYPES,
    generate_head_ct,
    make_series_volume,
    plan_dataset,
    render_series,
    slice_labels,
)
from tests.synth.digest import tree_digest

try:
    from medtasks.io.dicom import read_hu
except ImportError:  # the reader is written in parallel; fall back to a minimal inverse

    def read_hu(path: str | Path) -> np.ndarray:
        ds = pydicom.dcmread(path)
        px = ds.pixel_array.astype(np.float32)
        intercept = float(ds.RescaleIntercept)
        if ds.PixelRepresentation == 0 and ds.BitsStored == 12 and intercept > -100:
            px += 1000
            px[px >= 4096] -= 4096
            intercept = -1000.0
        return px * float(ds.RescaleSlope) + intercept


# RSNA-style "ID_..." strings in UID elements are invalid DICOM UIDs; pydicom warns on reading.
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR UI")

SMALL = {"n_patients": 3, "matrix": 128, "slices_per_series": (12, 16), "p_hemorrhage": 0.7, "progress": False}


def _read_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["ID", "Label"]
    return [tuple(r) for r in rows[1:]]


def _labels_by_sop(csv_path: Path) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for ident, label in _read_csv(csv_path):
        sop, subtype = ident.rsplit("_", 1)
        out[sop][subtype] = int(label)
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "a"
    generate_head_ct(root, seed=0, **SMALL)
    return root


def test_same_seed_same_bytes_other_seed_differs(dataset: Path, tmp_path: Path) -> None:
    generate_head_ct(tmp_path / "b", seed=0, **SMALL)
    generate_head_ct(tmp_path / "c", seed=1, **SMALL)
    assert tree_digest(tmp_path / "b") == tree_digest(dataset)
    names_a = {p.name for p in (dataset / "stage_2_train").iterdir()}
    names_c = {p.name for p in (tmp_path / "c" / "stage_2_train").iterdir()}
    assert names_a.isdisjoint(names_c)


def test_csv_matches_files_and_any_is_or(dataset: Path) -> None:
    rows = _read_csv(dataset / "stage_2_train.csv")
    files = sorted((dataset / "stage_2_train").iterdir())
    assert all(re.fullmatch(r"ID_[0-9a-f]{9}\.dcm", f.name) for f in files)
    assert len(rows) == 6 * len(files) and len({r[0] for r in rows}) == len(rows)
    for i, f in enumerate(sorted(files)):  # six rows per slice, in RSNA's subtype order
        block = rows[6 * i: 6 * i + 6]
        assert [r[0] for r in block] == [f"{f.stem}_{s}" for s in (*SUBTYPES, "any")]
        values = [int(r[1]) for r in block]
        assert set(values) <= {0, 1} and values[5] == max(values[:5])
        assert pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == f.stem
    labels = np.array([[int(r[1]) for r in rows[i: i + 6]] for i in range(0, len(rows), 6)])
    assert 0 < labels[:, 5].sum() < len(labels)  # both classes present


def test_dicom_headers_look_like_rsna(dataset: Path) -> None:
    by_series: dict[str, list[tuple[float, int]]] = defaultdict(list)
    for f in (dataset / "stage_2_train").iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.SOPClassUID == pydicom.uid.CTImageStorage and ds.Modality == "CT"
        assert re.fullmatch(r"ID_[0-9a-f]{8}", ds.PatientID)
        assert re.fullmatch(r"ID_[0-9a-f]{10}", ds.StudyInstanceUID)
        assert re.fullmatch(r"ID_[0-9a-f]{10}", ds.SeriesInstanceUID)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.Rows == ds.Columns == 128 and ds.SamplesPerPixel == 1
        assert 230.0 <= float(ds.PixelSpacing[0]) * 128 <= 250.0
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 16
        assert float(ds.RescaleSlope) == 1.0 and float(ds.SliceThickness) == 5.0
        assert str(ds.PatientName) and re.fullmatch(r"\d{8}", ds.PatientBirthDate)
        by_series[ds.SeriesInstanceUID].append((float(ds.ImagePositionPatient[2]), int(ds.InstanceNumber)))
    for slices in by_series.values():
        z = np.sort([s[0] for s in slices])
        assert 12 <= len(z) <= 16 and np.allclose(np.diff(z), 5.0, atol=1e-3)
        assert sorted(s[1] for s in slices) == list(range(1, len(slices) + 1))
    orders = []
    for plan in plan_dataset(40, seed=0):
        numbers = list(plan.instance_numbers)
        orders.append("asc" if numbers == sorted(numbers) else "desc" if numbers == sorted(numbers)[::-1] else "mixed")
    assert {"asc", "desc", "mixed"} <= set(orders)  # readers must sort by z, not InstanceNumber


def test_pixels_and_labels_come_from_the_phantom(dataset: Path) -> None:
    labels = _labels_by_sop(dataset / "stage_2_train.csv")
    plans = plan_dataset(3, seed=0, matrix=128, slices_per_series=(12, 16), p_hemorrhage=0.7)
    assert any(p.hemorrhage for p in plans)
    for plan in plans:
        hu, masks = render_series(plan, 128, 5.0)
        lab = slice_labels(masks)
        for k, sop in enumerate(plan.sop_uids):
            got = read_hu(dataset / "stage_2_train" / f"{sop}.dcm")
            np.testing.assert_array_equal(got, expected_hu(hu[k], plan.header.encoding))
            assert [labels[sop][s] for s in SUBTYPES] == lab[k].tolist()
        if not plan.hemorrhage:
            assert lab.sum() == 0


@pytest.mark.parametrize("encoding", ["int16", "uint12", "wrapped"])
def test_every_encoding_round_trips(tmp_path: Path, encoding: str) -> None:
    (plan,) = plan_dataset(1, seed=0, matrix=64, slices_per_series=(2, 2))
    header = dataclasses.replace(plan.header, encoding=encoding)
    hu = np.random.default_rng(0).uniform(-1100, 3200, size=(64, 64)).astype(np.float32)
    path = tmp_path / "ID_012345678.dcm"
    write_ct_slice(path, hu, header, "ID_012345678", 1, 12.5)
    np.testing.assert_array_equal(read_hu(path), expected_hu(hu, encoding))
    assert not list(tmp_path.glob(".*.tmp"))


def test_wrapped_series_round_trip(tmp_path: Path) -> None:
    stored, attrs = encode_pixels(np.array([[-1000.0, -1.0, 0.0, 40.4, 1500.0, 3000.0]]), "wrapped")
    assert attrs == {"BitsStored": 12, "HighBit": 11, "PixelRepresentation": 0, "RescaleIntercept": 0}
    assert stored.dtype == np.uint16 and stored.tolist() == [[3096, 4095, 0, 40, 1500, 3000]]
    params = {"n_patients": 1, "matrix": 64, "slices_per_series": (6, 6), "p_wrapped": 1.0}
    generate_head_ct(tmp_path, seed=3, progress=False, **params)
    (plan,) = plan_dataset(seed=3, **params)
    hu, _ = render_series(plan, 64, 5.0)
    for k, sop in enumerate(plan.sop_uids):
        path = tmp_path / "stage_2_train" / f"{sop}.dcm"
        ds = pydicom.dcmread(path)
        assert (ds.PixelRepresentation, ds.BitsStored, float(ds.RescaleIntercept)) == (0, 12, 0.0)
        assert ds.pixel_array.max() > 3000  # air wrapped round to ~3096
        np.testing.assert_array_equal(read_hu(path), np.clip(np.rint(hu[k]), -1000, 3000))


def test_tissue_hu_ranges_without_noise() -> None:
    hu, masks, t = make_series_volume(np.random.default_rng(5), matrix=128, n_slices=28, hemorrhage=False,
                                      noise=False, return_tissues=True)
    assert hu.shape == (28, 128, 128) and hu.dtype == np.float32
    assert all(m.max() == 0 for m in masks.values()) and slice_labels(masks).sum() == 0
    assert (hu[:, :4, :4] == -1000).all()  # air in front of the head
    upper = slice(14, None)  # above the skull base: the vault only
    bone = hu[upper][t["bone"][upper] > 0.99]
    assert bone.size and 500 <= bone.min() and bone.max() <= 1600 and np.median(bone) > 700
    brain = hu[(t["cavity"] > 0.999) & (t["csf"] < 0.001)]
    assert 20 <= brain.min() and brain.max() <= 45
    vent = hu[t["ventricles"] > 0.999]
    assert vent.size and 0 <= vent.min() and vent.max() <= 15
    base = hu[:8][t["bone"][:8] > 0.99]  # skull base: denser bone, and air cells inside the head
    inner_air = (t["head"] > 0.99) & (hu < -500)
    assert base.max() > 1500 and inner_air[:8].sum() > 20 and inner_air[16:].sum() == 0


def test_blood_where_labels_say_so() -> None:
    seen = set()
    for seed in range(6):
        hu, masks = make_series_volume(np.random.default_rng(seed), matrix=128, n_slices=20, noise=False)
        lab = slice_labels(masks)
        for j, subtype in enumerate(SUBTYPES):
            core = masks[subtype] > 0.99
            if core.any():
                assert 50 <= hu[core].min() and hu[core].max() <= 90
            for k in np.nonzero(lab[:, j])[0]:
                region = masks[subtype][k] > 0.5
                assert region.sum() >= 3 and hu[k][region].max() >= 40
                seen.add(subtype)
            for k in np.nonzero(lab[:, j] == 0)[0]:
                assert (masks[subtype][k] > 0.5).sum() < 3
    assert len(seen) >= 3


def test_generation_is_idempotent_and_redone_when_changed(tmp_path: Path) -> None:
    params = {"n_patients": 1, "matrix": 64, "slices_per_series": (5, 6), "progress": False}
    csv_path = generate_head_ct(tmp_path, seed=0, **params)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    start = time.perf_counter()
    assert generate_head_ct(tmp_path, seed=0, **params) == csv_path
    assert time.perf_counter() - start < 0.5
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps
    old = {p.name for p in (tmp_path / "stage_2_train").iterdir()}
    generate_head_ct(tmp_path, seed=1, **params)  # other parameters: rewritten, stale files gone
    new = {p.name for p in (tmp_path / "stage_2_train").iterdir()}
    assert new and old.isdisjoint(new)
    assert '"seed": 1' in (tmp_path / ".complete").read_text()
    (tmp_path / ".complete").unlink()  # an interrupted run leaves no marker: it is redone
    generate_head_ct(tmp_path, seed=1, **params)
    assert (tmp_path / ".complete").exists()


def test_parallel_rendering_writes_identical_files(tmp_path: Path) -> None:
    one = generate_head_ct(tmp_path / "w1", seed=4, workers=1, **SMALL)
    two = generate_head_ct(tmp_path / "w2", seed=4, workers=2, **SMALL)
    assert one.read_bytes() == two.read_bytes()
    files = sorted(p.name for p in (tmp_path / "w1" / "stage_2_train").glob("*.dcm"))
    assert files == sorted(p.name for p in (tmp_path / "w2" / "stage_2_train").glob("*.dcm"))
    for name in files:
        assert ((tmp_path / "w1" / "stage_2_train" / name).read_bytes()
                == (tmp_path / "w2" / "stage_2_train" / name).read_bytes())
