"""Synthetic PHE-SICH-CT-IDS: layout and quirks of data-notes, labels = oedema, realism, determinism."""

from __future__ import annotations

import csv
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medtasks.synth.phe_sich import (
    HEMORRHAGE_TYPES,
    QUIRK_PATIENT,
    brain_window,
    generate_phe_sich,
    patient_files,
    plan_phe_dataset,
)
from medtasks.synth.phe_sich_render import PatientPlan, min_lesion_pixels, render_patient
from tests.synth.digest import tree_digest

M = 128
# Seed 5: both sides, two patients with ventricular and two with subarachnoid extension.
SMALL = {"n_patients": 4, "seed": 5, "matrix": M, "slices": (10, 12), "progress": False}


def _plans() -> list[PatientPlan]:
    return plan_phe_dataset(SMALL["n_patients"], SMALL["seed"], SMALL["slices"])


def _expected_files(plans: list[PatientPlan]) -> set[str]:
    return {p for plan in plans for paths in patient_files(plan.patient_id, plan.n_slices).values() for p in paths}


def _volume(root: Path, pid: int, kind: str = "set") -> nib.Nifti1Image:
    return nib.load(root / "SubdatasetA_NIFIT" / "NIFIT" / kind / f"{pid:04d}.nii.gz")


def _boxes(xml_path: Path) -> list[tuple[int, int, int, int]]:
    root = ET.parse(xml_path).getroot()
    assert root.findtext("folder") == "VOC2007"
    assert [root.findtext(f"size/{k}") for k in ("width", "height", "depth")] == [str(M), str(M), "3"]
    out = []
    for obj in root.findall("object"):
        assert obj.findtext("name") == "a"
        out.append(tuple(int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")))
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_phe_sich(tmp_path_factory.mktemp("phe") / "a", workers=1, **SMALL)


def test_layout_follows_data_notes(dataset: Path) -> None:
    assert sorted(p.name for p in dataset.iterdir()) == [
        ".complete", "MedInfo.csv", "SubdatasetA_NIFIT", "SubdatasetB_JPG", "SubdatasetC_PNG", "task4_labels.csv"]
    ids = sorted(int(p.name[:4]) for p in (dataset / "SubdatasetA_NIFIT/NIFIT/set").glob("*.nii.gz"))
    assert [p.patient_id for p in _plans()] == ids and QUIRK_PATIENT in ids
    assert ids[-1] - ids[0] + 1 > len(ids)  # ids have gaps, like 120 patients in folders up to 167
    expected = _expected_files(_plans())
    written = {p.relative_to(dataset).as_posix() for p in dataset.rglob("*") if p.is_file() and p.parent != dataset}
    assert written == expected
    for pid in ids:
        n = _volume(dataset, pid).shape[2]
        for sub, folder, ext in (("SubdatasetB_JPG/set", "image", "jpg"), ("SubdatasetB_JPG/label", "label", "jpg"),
                                 ("SubdatasetC_PNG/set", "image", "png"), ("SubdatasetC_PNG/label", "label", "png")):
            names = sorted(p.name for p in (dataset / sub / f"{folder}{pid}").iterdir())  # folder index not padded
            assert names == [f"{pid:04d}_{k:02d}.{ext}" for k in range(n)]
        xmls = sorted(p.name for p in (dataset / f"SubdatasetC_PNG/annotation/annotation{pid}").iterdir())
        prefix = "013" if pid == 13 else f"{pid:04d}"  # the release's naming error: 013_xx, not 0013_xx
        assert xmls == [f"{prefix}_{k:02d}.xml" for k in range(n)]
    assert not list(dataset.rglob("0013_*.xml")) and not list(dataset.rglob(".*.tmp"))


def test_nifti_geometry(dataset: Path) -> None:
    for plan in _plans():
        img, lab = _volume(dataset, plan.patient_id), _volume(dataset, plan.patient_id, "label")
        assert img.shape == lab.shape == (M, M, plan.n_slices)
        assert img.get_data_dtype() == np.int16 and lab.get_data_dtype() == np.uint8
        np.testing.assert_allclose(img.header.get_zooms(), (260.0 / M, 260.0 / M, 5.0))
        np.testing.assert_array_equal(img.affine, lab.affine)
        assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
        assert int(img.header["sform_code"]) == int(img.header["qform_code"]) == 1
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1}
    assert 260.0 / 512 == 0.5078125  # the release's pixel size at the default matrix


def test_mask_is_the_oedema_not_the_haematoma(dataset: Path) -> None:
    for plan in _plans():
        vol = render_patient(plan, M, noise=False, return_tissues=True)
        mask = np.asarray(_volume(dataset, plan.patient_id, "label").dataobj).transpose(2, 1, 0)
        np.testing.assert_array_equal(mask, vol.phe)
        t = vol.tissues
        blood = np.maximum.reduce([t["hematoma"], t["ivh"], t["sah"]])
        assert mask.sum() > 0 and not mask[t["hematoma"] >= 0.5].any()  # haematoma voxels are 0
        assert (t["edema"][mask == 1] >= 0.5).all() and (blood[mask == 1] < 0.5).all()
        candidates = (t["edema"] >= 0.5) & (blood < 0.5)
        assert mask.sum() >= 0.9 * candidates.sum()  # all oedema but specks below a reader's floor
        positive = np.nonzero(mask.any(axis=(1, 2)))[0]
        assert positive[0] > 0 and positive[-1] < plan.n_slices - 1  # negatives below and above
        assert positive.size >= 2 and (np.diff(positive) == 1).all()  # one lesion over consecutive slices


def test_images_match_the_volume(dataset: Path) -> None:
    for plan in _plans():
        pid = plan.patient_id
        hu = np.asarray(_volume(dataset, pid).dataobj)
        mask = np.asarray(_volume(dataset, pid, "label").dataobj)
        files = patient_files(pid, plan.n_slices)
        assert len(files["png"]) == hu.shape[2]
        for k in range(hu.shape[2]):
            png = np.asarray(Image.open(dataset / files["png"][k]))
            assert png.shape == (M, M) and png.dtype == np.uint8
            np.testing.assert_array_equal(png, brain_window(hu[:, :, k].T))
            png_mask = np.asarray(Image.open(dataset / files["png_label"][k]))
            np.testing.assert_array_equal(png_mask, mask[:, :, k].T * 255)
            jpg = np.asarray(Image.open(dataset / files["jpg"][k])).astype(float)
            assert np.abs(jpg - png).mean() < 4.0
            jpg_mask = np.asarray(Image.open(dataset / files["jpg_label"][k])) > 127
            assert (jpg_mask != (mask[:, :, k].T == 1)).sum() <= 0.02 * max(1, mask[:, :, k].sum())


def test_voc_boxes_hold_the_mask(dataset: Path) -> None:
    margin = 1 + max(1, round(3 * M / 512))
    n_pos = n_slices = 0
    for plan in _plans():
        pid = plan.patient_id
        mask = np.asarray(_volume(dataset, pid, "label").dataobj)
        for k, xml_path in enumerate(patient_files(pid, plan.n_slices)["xml"]):
            xml_path = dataset / xml_path
            text = xml_path.read_text(encoding="ascii")
            assert text.startswith("<?xml version='1.0' encoding='us-ascii'?>\n<annotation>")
            assert f"<filename>{pid:04d}_{k:02d}.jpg</filename>" in text
            boxes, m = _boxes(xml_path), mask[:, :, k].T
            n_slices += 1
            if not m.any():
                assert boxes == [] and "<object>" not in text
                continue
            n_pos += 1
            assert 1 <= len(boxes) <= 2
            rows, cols = np.nonzero(m)
            covered = np.zeros_like(m, dtype=bool)
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 <= x1 < M and 0 <= y0 <= y1 < M
                covered[y0:y1 + 1, x0:x1 + 1] = True
                inside = m[y0:y1 + 1, x0:x1 + 1]
                r, c = np.nonzero(inside)
                # Tight to its part of the mask, up to the hand-drawn margin.
                assert r.size and r.min() <= margin and c.min() <= margin
                assert inside.shape[0] - 1 - r.max() <= margin and inside.shape[1] - 1 - c.max() <= margin
            assert covered[rows, cols].all()  # every oedema pixel lies in a box
            ux0, uy0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            ux1, uy1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
            assert ux0 <= cols.min() and uy0 <= rows.min() and ux1 >= cols.max() and uy1 >= rows.max()
    assert 0 < n_pos < n_slices


def test_hu_realism() -> None:
    plan = PatientPlan(13, 24, "left", False, False, 60, "Male", 0, head_seed=3, volume_seed=4)
    clean = render_patient(plan, M, noise=False, return_tissues=True)
    noisy = render_patient(plan, M)
    np.testing.assert_array_equal(clean.phe, noisy.phe)  # noise changes no label
    t, hu = clean.tissues, clean.hu.astype(np.float32)
    assert (noisy.hu[:, :3, :3] < -900).all()  # air around the head
    lesion = np.maximum.reduce([t["hematoma"], t["edema"], t["ivh"], t["sah"]])
    brain = hu[(t["cavity"] > 0.99) & (t["csf"] < 0.01) & (lesion < 0.01)]
    assert 20 <= brain.min() and brain.max() <= 45
    upper = slice(12, None)
    skull = hu[upper][t["bone"][upper] > 0.99]
    assert skull.size and 500 <= skull.min() and skull.max() <= 1600 and 700 <= np.median(skull) <= 1500
    core = t["hematoma"] > 0.99
    assert core.sum() > 20 and 50 <= hu[core].min() and hu[core].max() <= 90
    edema = hu[clean.phe == 1]
    assert 3.0 <= brain.mean() - np.median(edema) <= 16.0 and edema.min() > 0  # hypodense, not CSF-dark
    noisy_hu = noisy.hu.astype(np.float32)
    noisy_brain = noisy_hu[(t["cavity"] > 0.99) & (t["csf"] < 0.01) & (lesion < 0.01)].mean()
    assert 20 <= noisy_brain <= 45 and noisy_hu[clean.phe == 1].mean() < noisy_brain - 3.0
    assert 50 <= noisy_hu[core].mean() <= 90
    # The bleed is in the patient's left basal ganglia: right half of the radiological image.
    rows, cols = np.nonzero(core.any(axis=0))
    assert cols.mean() > M / 2 and abs(rows.mean() - M / 2) < M / 6


def test_same_seed_same_bytes_any_worker_count(dataset: Path, tmp_path: Path) -> None:
    generate_phe_sich(tmp_path / "b", workers=1, **SMALL)
    generate_phe_sich(tmp_path / "c", workers=2, **SMALL)
    assert tree_digest(tmp_path / "b") == tree_digest(dataset) == tree_digest(tmp_path / "c")
    other = dict(SMALL, seed=6, n_patients=2, slices=(6, 6))
    generate_phe_sich(tmp_path / "d", **other)
    assert tree_digest(tmp_path / "d") != tree_digest(dataset)


def test_idempotent_and_rewritten_when_changed(tmp_path: Path) -> None:
    params = {"n_patients": 2, "matrix": 64, "slices": (6, 6), "progress": False, "workers": 1}
    root = generate_phe_sich(tmp_path, seed=0, **params)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    start = time.perf_counter()
    assert generate_phe_sich(tmp_path, seed=0, **params) == root
    assert time.perf_counter() - start < 0.5
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    stray = root / "SubdatasetC_PNG" / "set" / "image999" / "0999_00.png"
    stray.parent.mkdir()
    stray.write_bytes(b"left over")
    generate_phe_sich(tmp_path, seed=1, **params)  # other parameters: rewritten, stale files gone
    expected = _expected_files(plan_phe_dataset(2, 1, (6, 6)))
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.parent != root} == expected
    assert not stray.parent.exists() and '"seed": 1' in (root / ".complete").read_text()
    (root / ".complete").unlink()  # an interrupted run leaves no marker: it is redone
    generate_phe_sich(tmp_path, seed=1, **params)
    assert (root / ".complete").exists()


def test_medinfo_and_patient_ids(dataset: Path) -> None:
    with open(dataset / "MedInfo.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    plans = _plans()
    assert list(rows[0]) == ["ID", "Gender", "Age", "Type Of Hemorrhage", "Hematoma Expansion"]
    assert [int(r["ID"]) for r in rows] == [p.patient_id for p in plans]
    assert {r["Type Of Hemorrhage"] for r in rows} <= set(HEMORRHAGE_TYPES.values())
    for r, plan in zip(rows, plans):  # the side named in MedInfo is where the bleed is drawn
        assert r["Type Of Hemorrhage"] == HEMORRHAGE_TYPES[plan.side]
        mask = np.asarray(_volume(dataset, plan.patient_id, "label").dataobj)  # x index runs to patient left
        left = mask[M // 2:].sum() > 0
        right = mask[: M // 2].sum() > 0
        assert (left, right) == {"left": (True, False), "right": (False, True), "both": (True, True)}[plan.side]
    big = plan_phe_dataset(120, seed=0)
    ids = [p.patient_id for p in big]
    assert len(set(ids)) == 120 and QUIRK_PATIENT in ids and max(ids) <= 167 and max(ids) > 120
    assert {p.side for p in big} >= {"left", "right"}


def test_multilabel_csv_and_blood_where_it_says(dataset: Path) -> None:
    with open(dataset / "task4_labels.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["image", "IVH", "IPH", "SAH"]
    plans = _plans()
    assert len(rows) - 1 == sum(p.n_slices for p in plans)
    by_image = {r[0]: [int(v) for v in r[1:]] for r in rows[1:]}
    assert all((dataset / name).is_file() for name in by_image)
    seen = np.zeros(3, dtype=int)
    for plan in plans:
        vol = render_patient(plan, M, noise=False, return_tissues=True)
        t, hu, min_px = vol.tissues, vol.hu.astype(np.float32), min_lesion_pixels(vol.pixel_spacing)
        lab = np.array([by_image[p] for p in patient_files(plan.patient_id, plan.n_slices)["png"]])
        np.testing.assert_array_equal(lab, vol.labels)
        seen += lab.sum(axis=0)
        assert lab[:, 1].sum() > 0  # every patient bleeds
        vent = t["ventricles"] > 0.5
        sulci = (t["csf"] > 0.5) & ~vent
        for k in range(plan.n_slices):
            ivh_blood = (vent[k] & (hu[k] >= 45)).sum()
            sah_blood = (sulci[k] & (hu[k] >= 45)).sum()
            if lab[k, 0]:
                assert ivh_blood >= min_px // 2  # blood in the ventricles
            if lab[k, 2]:
                assert sah_blood >= min_px // 2  # blood in sulci / fissures
            if not lab[k, 0]:
                assert (t["ivh"][k] > 0.5).sum() < min_px
            if not lab[k, 1]:
                assert (t["hematoma"][k] > 0.5).sum() < min_px
        if not plan.ivh:
            assert lab[:, 0].sum() == 0 and t["ivh"].max() == 0
        if not plan.sah:
            assert lab[:, 2].sum() == 0 and t["sah"].max() == 0
    assert seen[0] > 0 and seen[2] > 0  # the fixture seed draws both extensions
