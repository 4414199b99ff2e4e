"""Synthetic AI CUP cardiac CT: layout, labels, calcium (fraction, size, brightness), shell, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from medtasks.synth.cardiac_ct import cardiac_files, generate_cardiac_ct, plan_cardiac_dataset, render_cardiac
from tests.synth.digest import tree_digest

SHAPE, SPACING = (48, 48, 32), (1.6, 1.6, 2.4)
# Seed 3: patients 3 (one spot) and 5 (two spots) carry calcium.
SMALL = {"n_patients": 5, "shape": SHAPE, "spacing": SPACING, "calcium_fraction": 0.4, "seed": 3, "progress": False}


def _load(root: Path, pid: int) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    image, label = cardiac_files(pid)
    return nib.load(root / image), nib.load(root / label)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cardiac_ct(tmp_path_factory.mktemp("cardiac") / "a", workers=1, **SMALL)


def test_layout_and_geometry(dataset: Path) -> None:
    names = {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file()}
    expected = {f"training_image/patient{i:04d}.nii.gz" for i in range(1, 6)}
    expected |= {f"training_label/patient{i:04d}_gt.nii.gz" for i in range(1, 6)}
    assert names == expected | {".complete"}
    assert json.loads((dataset / ".complete").read_text())["n_patients"] == 5
    for pid in range(1, 6):
        img, lab = _load(dataset, pid)
        assert img.shape == lab.shape == SHAPE
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        np.testing.assert_array_equal(img.affine, lab.affine)
        np.testing.assert_allclose(img.header.get_zooms(), SPACING, rtol=1e-6)
        np.testing.assert_allclose(np.diag(img.affine)[:3], SPACING, rtol=1e-6)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 1


def test_labels_and_hu(dataset: Path) -> None:
    plans = plan_cardiac_dataset(5, seed=3, calcium_fraction=0.4)
    assert [p.calcium_spots for p in plans] == [0, 0, 1, 0, 2]
    for plan in plans:
        img, lab = _load(dataset, plan.patient_id)
        hu, label = np.asarray(img.dataobj), np.asarray(lab.dataobj)
        assert set(np.unique(label)) == ({0, 1, 2, 3} if plan.calcium_spots else {0, 1, 2})
        assert (label == 1).sum() > 200 and (label == 2).sum() > 20
        assert hu.min() >= -1024 and np.median(hu[0, 0]) < -900  # air in the corner
        assert (hu < -700).mean() > 0.1 and (hu > 400).any()  # lungs and bone
        assert 60 < hu[label == 1].mean() < 140 and 100 < hu[label == 2].mean() < 200


def test_calcium_spots(dataset: Path) -> None:
    plans = plan_cardiac_dataset(5, seed=3, calcium_fraction=0.4)
    for plan in plans:
        img, lab = _load(dataset, plan.patient_id)
        hu, label = np.asarray(img.dataobj), np.asarray(lab.dataobj)
        calcium = label == 3
        components, n = ndi.label(calcium, np.ones((3, 3, 3)))  # 26-connected: spots are apart
        assert n == plan.calcium_spots
        assert all(2 <= size <= 6 for size in np.bincount(components.ravel())[1:])
        if n:
            assert (ndi.label(calcium)[1]) == n  # each spot face-connected
            assert hu[calcium].min() >= 500  # far above the clinical 130 HU threshold
            for spot in range(1, n + 1):  # on the valve ring (which the spot partly replaced)
                assert (ndi.binary_dilation(components == spot, iterations=2) & (label == 2)).any()
        heart = ndi.binary_dilation(label > 0, iterations=3) & ~calcium
        assert hu[heart].max() < (hu[calcium].min() if n else 500)  # calcium is the brightest thing there


def test_calcium_fraction_rule() -> None:
    for n, fraction, positives in ((50, 0.2, 10), (20, 0.2, 4), (7, 0.0, 0), (3, 1.0, 3), (2, 0.2, 0)):
        plans = plan_cardiac_dataset(n, seed=1, calcium_fraction=fraction)
        assert [p.patient_id for p in plans] == list(range(1, n + 1))
        spots = [p.calcium_spots for p in plans]
        assert sum(s > 0 for s in spots) == positives and max(spots) <= 3
        if positives >= 2:
            assert 1 <= sum(s >= 2 for s in spots) < positives  # a couple with 2-3 spots, most with one


def test_myocardium_is_a_shell_around_the_blood_pool(dataset: Path) -> None:
    for pid in range(1, 6):
        img, lab = _load(dataset, pid)
        hu, myo = np.asarray(img.dataobj).astype(float), np.asarray(lab.dataobj) == 1
        inside = np.zeros_like(myo)
        for k in range(myo.shape[2]):  # axial rings: the slice's filled holes
            inside[:, :, k] = ndi.binary_fill_holes(myo[:, :, k]) & ~myo[:, :, k]
        assert inside.sum() > 10
        assert (hu[inside] > 200).mean() > 0.9 and hu[inside].mean() > hu[myo].mean() + 120
        lv = np.argwhere(myo).mean(axis=0)
        assert lv[0] < SHAPE[0] / 2 and lv[1] > SHAPE[1] * 0.4  # patient's left (x < centre), anterior


def test_workers_seed_and_no_op(dataset: Path, tmp_path: Path) -> None:
    marker = dataset / ".complete"
    stamps = {p: p.stat().st_mtime_ns for p in dataset.rglob("*") if p.is_file()}
    assert generate_cardiac_ct(dataset, workers=1, **SMALL) == dataset  # second call: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*") if p.is_file()} == stamps
    other = generate_cardiac_ct(tmp_path / "b", workers=2, **SMALL)
    assert tree_digest(other) == tree_digest(dataset)
    smaller = generate_cardiac_ct(tmp_path / "b", workers=1, **{**SMALL, "n_patients": 2})  # stale files removed
    assert sorted(p.name for p in (smaller / "training_label").iterdir()) == ["patient0001_gt.nii.gz",
                                                                              "patient0002_gt.nii.gz"]
    assert marker.is_file() and json.loads((smaller / ".complete").read_text())["n_patients"] == 2
    hu_a, lab_a, _ = render_cardiac(plan_cardiac_dataset(1, seed=4)[0], SHAPE, SPACING)
    hu_b, lab_b, _ = render_cardiac(plan_cardiac_dataset(1, seed=5)[0], SHAPE, SPACING)
    assert not np.array_equal(lab_a, lab_b)  # anatomy varies with the seed


def test_rejects_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="z extent"):
        generate_cardiac_ct(tmp_path, n_patients=1, shape=(64, 64, 16), spacing=(1.0, 1.0, 1.0), progress=False)
    with pytest.raises(ValueError, match="calcium_fraction"):
        generate_cardiac_ct(tmp_path, n_patients=1, calcium_fraction=1.5, progress=False)
