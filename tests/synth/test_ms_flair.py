"""Synthetic ISBI 2015 MS set: layout, geometry, lesions in white matter, raters, timepoints, determinism."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy.ndimage import distance_transform_edt, label

from medtasks.synth.ms_flair import TISSUES, generate_ms_flair, ms_affine, plan_ms_dataset, render_subject, scan_files
from tests.synth.digest import tree_digest

SHAPE, SPACING = (48, 56, 32), (3.0, 3.0, 4.5)
SMALL = {"n_subjects": 3, "timepoints": 2, "shape": SHAPE, "spacing": SPACING, "seed": 4, "progress": False}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_ms_flair(tmp_path_factory.mktemp("ms") / "a", workers=1, **SMALL)


@pytest.fixture(scope="module")
def rendered() -> list:
    return [render_subject(p, SHAPE, SPACING) for p in plan_ms_dataset(3, 4, (2, 2))]


def test_layout_follows_data_notes(dataset: Path) -> None:
    expected = {p for s in (1, 2, 3) for t in (1, 2) for p in scan_files(s, t).values()}
    written = {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file()}
    assert written == expected | {".complete"}
    assert "training/training02/preprocessed/training02_01_flair_pp.nii" in expected
    assert "training/training02/masks/training02_02_mask2.nii" in expected
    assert not list(dataset.rglob(".*.tmp"))


def test_nifti_geometry(dataset: Path) -> None:
    for s in (1, 2, 3):
        for t in (1, 2):
            imgs = {k: nib.load(dataset / p) for k, p in scan_files(s, t).items()}
            for key, img in imgs.items():
                assert img.shape == SHAPE
                np.testing.assert_allclose(img.header.get_zooms(), SPACING)
                np.testing.assert_allclose(img.affine, ms_affine(SHAPE, SPACING))
                assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
                assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 1
                assert img.get_data_dtype() == (np.float32 if key == "flair" else np.uint8)
            np.testing.assert_allclose(nib.affines.apply_affine(imgs["flair"].affine, (np.array(SHAPE) - 1) / 2),
                                       0.0, atol=1e-6)  # centred on the origin
            flair = np.asarray(imgs["flair"].dataobj)
            brain = flair > 0
            assert 0.15 < brain.mean() < 0.5 and not brain[0].any() and not brain[:, :, -1].any()  # skull-stripped


def test_files_are_the_rendered_subjects(dataset: Path, rendered: list) -> None:
    for s, vol in enumerate(rendered, start=1):
        for t in (1, 2):
            files = scan_files(s, t)
            np.testing.assert_array_equal(np.asarray(nib.load(dataset / files["mask1"]).dataobj), vol.mask1[t - 1])
            np.testing.assert_array_equal(np.asarray(nib.load(dataset / files["mask2"]).dataobj), vol.mask2[t - 1])
            np.testing.assert_array_equal(np.asarray(nib.load(dataset / files["flair"]).dataobj), vol.flair[t - 1])


def test_lesions_are_bright_periventricular_white_matter(rendered: list) -> None:
    near = total = 0
    for vol in rendered:
        wm = vol.tissue == TISSUES["wm"]
        dist = distance_transform_edt(~vol.ventricles, sampling=SPACING)
        for t in range(2):
            for mask in (vol.mask1[t], vol.mask2[t]):
                assert set(np.unique(mask)) <= {0, 1}
                assert wm[mask == 1].all()  # inside white matter, never in CSF or grey matter
            lesion = vol.mask1[t] == 1
            if lesion.sum() >= 20:
                flair = vol.flair[t]
                assert np.median(flair[lesion]) > 1.25 * np.median(flair[wm & ~lesion])
                assert np.median(flair[vol.ventricles]) < 0.6 * np.median(flair[wm])  # dark CSF (blurred at 3 mm)
            near += int((lesion & (dist <= 20.0)).sum())
            total += int(lesion.sum())
    assert total > 0 and near > 0.5 * total  # mostly periventricular


def test_lesion_counts_and_sizes_vary() -> None:
    plans = plan_ms_dataset(12, seed=0, timepoints=(2, 2))
    counts = [p.n_lesions for p in plans]
    assert min(counts) <= 2 and max(counts) >= 9 and all(0 <= c <= 15 for c in counts)
    sizes = []
    for plan in [p for p in plans if p.n_lesions >= 9][:2]:
        vol = render_subject(plan, SHAPE, SPACING)
        lab, n = label(vol.mask1[0], structure=np.ones((3, 3, 3)))
        sizes += np.bincount(lab.ravel())[1:].tolist()
    assert min(sizes) <= 8 and max(sizes) >= 80  # from a few voxels to large (confluent) lesions


def test_raters_differ_but_overlap(rendered: list) -> None:
    differ = 0
    for vol in rendered:
        for m1, m2 in zip(vol.mask1, vol.mask2):
            a, b = m1 == 1, m2 == 1
            if a.sum() + b.sum() >= 50:
                assert 0.7 < _dice(a, b) < 1.0
            differ += int((a != b).any())
    assert differ >= 3


def test_timepoints_share_anatomy(rendered: list) -> None:
    for vol in rendered:
        f1, f2 = vol.flair
        brain = vol.tissue > 0
        np.testing.assert_array_equal(f1 > 0, f2 > 0)
        assert np.corrcoef(f1[brain], f2[brain])[0, 1] > 0.6
        a, b = vol.mask1[0] == 1, vol.mask1[1] == 1
        if a.sum() >= 50:
            assert 0.5 < _dice(a, b) and (a != b).any()  # the same lesions, a little changed


def test_same_bytes_for_any_worker_count_and_second_call_is_a_no_op(dataset: Path, tmp_path: Path) -> None:
    other = generate_ms_flair(tmp_path / "b", workers=2, **SMALL)
    assert tree_digest(other) == tree_digest(dataset)
    stamp = (other / ".complete").stat().st_mtime_ns
    flair = other / scan_files(1, 1)["flair"]
    os.utime(flair, ns=(1, 1))
    generate_ms_flair(other, workers=1, **SMALL)
    assert (other / ".complete").stat().st_mtime_ns == stamp and flair.stat().st_mtime_ns == 1  # nothing rewritten
    generate_ms_flair(other, workers=1, **{**SMALL, "n_subjects": 2})  # new parameters: rewritten, stale removed
    assert not (other / "training" / "training03").exists()
    assert tree_digest(other / "training" / "training01") == tree_digest(dataset / "training" / "training01")


def test_timepoint_range_and_bad_arguments(tmp_path: Path) -> None:
    tps = [p.n_timepoints for p in plan_ms_dataset(20, seed=1, timepoints=(1, 3))]
    assert set(tps) == {1, 2, 3}
    with pytest.raises(ValueError):
        generate_ms_flair(tmp_path / "x", n_subjects=0, progress=False)
    with pytest.raises(ValueError):
        generate_ms_flair(tmp_path / "x", shape=(8, 8, 8), progress=False)
