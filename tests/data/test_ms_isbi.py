"""MS ISBI 2015 index: pairing by subject and timepoint, header/voxel checks, CSV manifests."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medtasks.data.manifest import ManifestError, read_manifest
from medtasks.data.ms_isbi import (
    COLUMNS,
    PATH_COLUMNS,
    index_ms_isbi,
    parse_isbi_name,
    read_ms_manifest,
    write_ms_manifest,
)
from medtasks.synth.ms_flair import generate_ms_flair, scan_files

SHAPE, SPACING = (32, 36, 20), (4.5, 4.5, 7.0)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_ms_flair(tmp_path_factory.mktemp("ms") / "isbi", n_subjects=2, timepoints=2, shape=SHAPE,
                             spacing=SPACING, seed=2, progress=False)


@pytest.fixture()
def broken(source: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(source, copy)
    return copy


def _save(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(data, affine), str(path))


def _reasons(rejected) -> dict[str, str]:
    return {Path(r["path"]).name: r["reason"] for r in rejected.rows}


def test_pairs_flair_with_both_raters(source: Path) -> None:
    df, rejected = index_ms_isbi(source, progress=False)
    assert list(df.columns) == list(COLUMNS) and len(rejected) == 0
    assert list(zip(df["subject_id"], df["timepoint"])) == [("training01", 1), ("training01", 2),
                                                             ("training02", 1), ("training02", 2)]
    for row in df.itertuples():
        subject = int(row.subject_id[-2:])
        files = scan_files(subject, row.timepoint)
        assert (row.flair, row.mask, row.mask2) == tuple(str(source / files[k]) for k in ("flair", "mask1", "mask2"))
        assert row.shape == "32x36x20" and row.spacing == "4.5x4.5x7"
        assert row.n_lesion_voxels == int(np.asarray(nib.load(row.mask).dataobj).sum())
    assert df["n_lesion_voxels"].dtype == np.int64 and df["timepoint"].dtype == np.int64


def test_parse_isbi_name() -> None:
    assert parse_isbi_name("test03_04_flair_pp.nii.gz") == ("test03", 4, "flair")
    assert parse_isbi_name("a/b/training05_01_mask1.nii") == ("training05", 1, "mask1")
    for name in ("training01_01_flair.nii.gz", "training01_01_mprage_pp.nii", "training01_01_mask1.png", "x.nii"):
        assert parse_isbi_name(name) is None


def test_each_failed_check_rejects_the_scan_with_its_reason(broken: Path) -> None:
    f = {(s, t): {k: broken / v for k, v in scan_files(s, t).items()} for s in (1, 2) for t in (1, 2)}
    ref = nib.load(f[(1, 1)]["mask1"], mmap=False)  # in memory: the file is rewritten below
    data, affine = np.asarray(ref.dataobj), ref.affine
    _save(f[(1, 1)]["mask1"], np.zeros((32, 36, 19), np.uint8), affine)  # one slice short
    shifted = affine.copy()
    shifted[0, 3] += 1.0  # 1 mm shift
    _save(f[(1, 2)]["mask1"], data, shifted)
    labels = np.zeros(SHAPE, np.uint8)
    labels[10:12, 10:12, 5] = 1
    labels[20, 20, 10] = 2  # a second label value
    _save(f[(2, 1)]["mask1"], labels, affine)
    f[(2, 2)]["mask1"].unlink()
    df, rejected = index_ms_isbi(broken, progress=False)
    assert df.empty and list(df.columns) == list(COLUMNS)
    reasons = _reasons(rejected)
    assert reasons == {"training01_01_mask1.nii": "shape_mismatch", "training01_02_mask1.nii": "affine_mismatch",
                       "training02_01_mask1.nii": "not_binary", "training02_02_flair_pp.nii": "no_mask"}
    details = {Path(r["path"]).name: r["detail"] for r in rejected.rows}
    assert "32x36x19" in details["training01_01_mask1.nii"] and "flair_pp" in details["training01_01_mask1.nii"]


def test_small_affine_noise_passes_and_a_bad_second_rater_only_empties_mask2(broken: Path) -> None:
    f = {k: broken / v for k, v in scan_files(1, 1).items()}
    img = nib.load(f["mask1"], mmap=False)  # in memory: the file is rewritten below
    _save(f["mask1"], np.asarray(img.dataobj), img.affine + 1e-5)  # float noise, within tolerance
    _save(f["mask2"], np.asarray(img.dataobj).astype(np.float32) * 0.5, img.affine)
    df, rejected = index_ms_isbi(broken, progress=False)
    assert len(df) == 4 and df.loc[0, "mask2"] == "" and df.loc[1, "mask2"] != ""
    assert _reasons(rejected) == {"training01_01_mask2.nii": "not_binary"}


def test_other_files_duplicates_and_orphans(broken: Path) -> None:
    sub = broken / "training" / "training01"
    flair = sub / "preprocessed" / "training01_01_flair_pp.nii"
    shutil.copy(flair, sub / "preprocessed" / "training01_01_t2_pp.nii")  # other contrast: skipped
    (sub / "orig").mkdir()
    shutil.copy(flair, sub / "orig" / "training01_01_flair.nii")  # unregistered original: skipped
    shutil.copy(flair, sub / "preprocessed" / "training01_01_flair_pp.nii.gz.bak")
    (broken / "README.txt").write_text("ISBI 2015")
    nested = broken / "backup" / "training" / "training01" / "preprocessed"
    nested.mkdir(parents=True)
    shutil.copy(flair, nested / flair.name)  # the same scan deeper down: duplicate
    masks = broken / "training" / "training03" / "masks"
    masks.mkdir(parents=True)
    shutil.copy(sub / "masks" / "training01_01_mask1.nii", masks / "training03_01_mask1.nii")
    (sub / "preprocessed" / "training01_02_flair_pp.nii").write_bytes(b"not a nifti")
    df, rejected = index_ms_isbi(broken, progress=False)
    assert list(zip(df["subject_id"], df["timepoint"])) == [("training01", 1), ("training02", 1), ("training02", 2)]
    assert df.loc[0, "flair"] == str(flair)
    by_path = {Path(r["path"]).relative_to(broken).as_posix(): r["reason"] for r in rejected.rows}
    assert by_path == {"README.txt": "unknown_file",
                       "training/training01/preprocessed/training01_01_flair_pp.nii.gz.bak": "unknown_file",
                       "backup/training/training01/preprocessed/training01_01_flair_pp.nii": "duplicate",
                       "training/training03/masks/training03_01_mask1.nii": "no_image",
                       "training/training01/preprocessed/training01_02_flair_pp.nii": "unreadable"}


def test_manifest_has_relative_paths_and_reads_back(source: Path, broken: Path, tmp_path: Path) -> None:
    (broken / "training" / "training02" / "masks" / "training02_02_mask1.nii").unlink()
    df, rejected = index_ms_isbi(broken, progress=False)
    out, rej_path = write_ms_manifest(df, tmp_path / "manifests" / "ms.csv", rejected)
    assert rej_path == tmp_path / "manifests" / "ms.rejected.csv"
    raw = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(raw.columns) == list(COLUMNS) and len(raw) == 3
    for col in PATH_COLUMNS:
        assert all(v.startswith("../broken/training/") for v in raw[col])
    back = read_manifest(out, required=COLUMNS, path_columns=PATH_COLUMNS)
    assert back["flair"].tolist() == df["flair"].tolist() and back["mask2"].tolist() == df["mask2"].tolist()
    rej = pd.read_csv(rej_path, dtype=str)
    assert rej.to_dict("records") == [{"path": "../broken/training/training02/preprocessed/training02_02_flair_pp.nii",
                                       "reason": "no_mask", "detail": rej.loc[0, "detail"]}]
    first = out.read_bytes()
    write_ms_manifest(df, out, rejected)
    assert out.read_bytes() == first  # idempotent


def test_read_plain_csv_manifest(source: Path, tmp_path: Path) -> None:
    files = [scan_files(s, t) for s in (1, 2) for t in (1, 2)]
    rel = Path("..") / source.name
    shutil.copytree(source, tmp_path / source.name)
    csv = tmp_path / "lists" / "scans.csv"
    csv.parent.mkdir()
    rows = [{"flair": (rel / f["flair"]).as_posix(), "mask": (rel / f["mask1"]).as_posix(), "subject": f"p{i // 2}"}
            for i, f in enumerate(files)]
    rows.append({"flair": (rel / files[0]["flair"]).as_posix(), "mask": "", "subject": "p9"})  # same FLAIR again
    rows.append({"flair": "missing.nii.gz", "mask": "", "subject": "p8"})
    pd.DataFrame(rows).to_csv(csv, index=False)
    df, rejected = read_ms_manifest(csv, progress=False)
    assert list(zip(df["subject_id"], df["timepoint"])) == [("p0", 1), ("p0", 2), ("p1", 1), ("p1", 2)]
    assert (df["mask2"] == "").all() and df.loc[3, "flair"] == str(tmp_path / source.name / files[3]["flair"])
    assert sorted(r["reason"] for r in rejected.rows) == ["duplicate", "unreadable"]
    pd.DataFrame({"flair": ["a.nii"], "subject": ["p"]}).to_csv(csv, index=False)
    with pytest.raises(ManifestError, match="mask"):
        read_ms_manifest(csv, progress=False)
