"""AI CUP cardiac CT index: pairing by patient id, every check's rejection reason, manifest paths."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtasks.data.cardiac import COLUMNS, index_cardiac, parse_triplet, write_cardiac_manifest
from medtasks.data.manifest import Rejected
from medtasks.synth.cardiac_ct import generate_cardiac_ct

SHAPE = (8, 8, 6)
AFFINE = np.diag([0.8, 0.8, 1.5, 1.0])


def _write(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def _label(values: tuple[int, ...] = (0, 1, 2), shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    lab = np.zeros(shape, dtype=np.uint8)
    for i, v in enumerate(values):
        lab[i, 0, 0] = v
    return lab


def _pair(root: Path, pid: int, label: np.ndarray | None = None, label_affine: np.ndarray = AFFINE) -> None:
    _write(root / "training_image" / f"patient{pid:04d}.nii.gz", np.zeros(SHAPE, dtype=np.int16))
    if label is not None:
        _write(root / "training_label" / f"patient{pid:04d}_gt.nii.gz", label, label_affine)


def _reasons(rejected: Rejected) -> dict[str, str]:
    return {Path(r["path"]).name: r["reason"] for r in rejected.rows}


def test_pairs_by_patient_id(tmp_path: Path) -> None:
    _pair(tmp_path, 1, _label((0, 1, 2)))
    _pair(tmp_path, 2, _label((0, 1, 2, 3, 3)))
    _write(tmp_path / "training_label" / "patient3_gt.nii", _label((0, 1)))  # unpadded id, .nii: still patient 3
    _write(tmp_path / "training_image" / "patient0003.nii.gz", np.zeros(SHAPE, dtype=np.int16))
    df, rejected = index_cardiac(tmp_path, progress=False)
    assert len(rejected) == 0 and list(df.columns) == list(COLUMNS)
    assert df["patient_id"].tolist() == ["patient0001", "patient0002", "patient0003"]
    assert df["labels_present"].tolist() == ["0,1,2", "0,1,2,3", "0,1"]
    assert df["n_calcium_voxels"].tolist() == [0, 2, 0] and df["has_calcium"].tolist() == [0, 1, 0]
    assert df.loc[0, "shape"] == "8x8x6" and parse_triplet(df.loc[0, "spacing"]) == (0.8, 0.8, 1.5)
    assert Path(df.loc[2, "label"]).name == "patient3_gt.nii"
    assert all(Path(p).parent.name == "training_image" for p in df["image"])


@pytest.mark.parametrize("case", ["shape", "affine", "values", "no_label"])
def test_rejections(tmp_path: Path, case: str) -> None:
    _pair(tmp_path, 1, _label())  # a good patient beside the bad one
    if case == "shape":
        _pair(tmp_path, 2, _label(shape=(8, 8, 5)))
        expected = ("patient0002.nii.gz", "shape_mismatch")
    elif case == "affine":
        shifted = AFFINE.copy()
        shifted[2, 3] = 3.0  # two slices off
        _pair(tmp_path, 2, _label(), shifted)
        expected = ("patient0002.nii.gz", "affine_mismatch")
    elif case == "values":
        _pair(tmp_path, 2, _label((0, 1, 7)))
        expected = ("patient0002_gt.nii.gz", "bad_label_values")
    else:
        _pair(tmp_path, 2, None)
        expected = ("patient0002.nii.gz", "no_label")
    df, rejected = index_cardiac(tmp_path, progress=False)
    assert df["patient_id"].tolist() == ["patient0001"]
    assert _reasons(rejected) == {expected[0]: expected[1]}
    if case == "values":
        assert "7" in rejected.rows[0]["detail"]


def test_affine_tolerance_and_unlabelled_images(tmp_path: Path) -> None:
    nudged = AFFINE.copy()
    nudged[:3, 3] += 1e-4  # float noise of another writer: the same grid
    _pair(tmp_path, 1, _label(), nudged)
    _pair(tmp_path, 2, None)
    df, rejected = index_cardiac(tmp_path, require_label=False, progress=False)
    assert len(rejected) == 0 and df["patient_id"].tolist() == ["patient0001", "patient0002"]
    assert df.loc[1, "label"] == "" and pd.isna(df.loc[1, "has_calcium"]) and df.loc[1, "labels_present"] == ""


def test_unknown_duplicate_unreadable_no_image(tmp_path: Path) -> None:
    _pair(tmp_path, 1, _label())
    (tmp_path / "training_image" / "notes.txt").write_text("x")
    _write(tmp_path / "copy" / "training_image" / "patient0001.nii.gz", np.zeros(SHAPE, dtype=np.int16))
    (tmp_path / "training_image" / "patient0002.nii.gz").write_bytes(b"not a nifti")
    _write(tmp_path / "training_label" / "patient0002_gt.nii.gz", _label())
    _write(tmp_path / "training_label" / "patient0003_gt.nii.gz", _label())
    df, rejected = index_cardiac(tmp_path, progress=False)
    assert df["patient_id"].tolist() == ["patient0001"]
    assert Path(df.loc[0, "image"]).parent.parent == tmp_path  # the canonical copy is kept
    rows = {(Path(r["path"]).relative_to(tmp_path).as_posix(), r["reason"]) for r in rejected.rows}
    assert rows == {("training_image/notes.txt", "unknown_file"),
                    ("copy/training_image/patient0001.nii.gz", "duplicate"),
                    ("training_image/patient0002.nii.gz", "unreadable"),
                    ("training_label/patient0003_gt.nii.gz", "no_image")}


def test_manifest_has_relative_paths(tmp_path: Path) -> None:
    source = generate_cardiac_ct(tmp_path / "synth", n_patients=3, shape=(32, 32, 16), spacing=(1.0, 1.0, 2.0),
                                 calcium_fraction=0.34, seed=0, progress=False)
    (source / "training_label" / "patient0002_gt.nii.gz").unlink()
    df, rejected = index_cardiac(source, progress=False)
    assert df["patient_id"].tolist() == ["patient0001", "patient0003"]
    assert df["labels_present"].str.startswith("0,1,2").all() and df["has_calcium"].sum() <= 1
    out, rej = write_cardiac_manifest(df, tmp_path / "manifests" / "cardiac.csv", rejected)
    table = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert table["image"].tolist() == ["../synth/training_image/patient0001.nii.gz",
                                       "../synth/training_image/patient0003.nii.gz"]
    assert table["label"].str.startswith("../synth/training_label/").all()
    assert rej.name == "cardiac.rejected.csv"
    assert pd.read_csv(rej, dtype=str).to_dict("records") == [
        {"path": "../synth/training_image/patient0002.nii.gz", "reason": "no_label",
         "detail": "no label patient0002_gt.nii.gz for this image"}]
    before = out.read_bytes()
    write_cardiac_manifest(df, out, rejected)
    assert out.read_bytes() == before  # idempotent
    df2, _ = index_cardiac(source, require_label=False, progress=False)
    write_cardiac_manifest(df2, out, Rejected())
    assert pd.read_csv(out, dtype=str, keep_default_na=False)["label"].tolist()[1] == ""  # empty stays empty
