"""index_chest_xray on the synthetic Kermany layout: child ids, splits, leak children, rejected files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtasks.data.chest_xray import COLUMNS, index_chest_xray, parse_kermany_name, write_chest_xray_manifest
from medtasks.synth.chest_xray import generate_chest_xray, plan_chest_xray

SMALL = {"n_children": 12, "images_per_child": (1, 3), "size": 64, "seed": 3, "val_per_class": 2, "dicom": 4}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_chest_xray(tmp_path_factory.mktemp("cxr_src"), progress=False, **SMALL)


@pytest.fixture()
def source(generated: Path, tmp_path: Path) -> Path:
    """A private copy: tests add files to it."""
    return Path(shutil.copytree(generated, tmp_path / "kermany"))


@pytest.mark.parametrize("name, expected", [
    ("person23_bacteria_76.jpeg", ("person23", "bacteria")),
    ("person19_virus_50.jpeg", ("person19", "virus")),
    ("PERSON007_Bacteria_1.JPEG", ("person7", "bacteria")),
    ("IM-0115-0001.jpeg", ("IM-0115", "normal")),
    ("NORMAL2-IM-0381-0001.jpeg", ("NORMAL2-IM-0381", "normal")),
    ("NORMAL2-IM-0530-0001-0002.jpeg", ("NORMAL2-IM-0530", "normal")),
    ("chest_xray/test/NORMAL/IM-0001-0003.jpeg", ("IM-0001", "normal")),
    ("scan_0001.jpeg", None),
    ("IM-0115.jpeg", None),
])
def test_parse_kermany_names(name: str, expected: tuple[str, str] | None) -> None:
    assert parse_kermany_name(name) == expected


def test_index_generated_set(generated: Path) -> None:
    df, rejected = index_chest_xray(generated, progress=False)
    plans = plan_chest_xray(**{k: v for k, v in SMALL.items() if k != "size"})
    assert len(rejected) == 0 and list(df.columns) == list(COLUMNS)
    assert len(df) == len(plans) and df["image"].map(lambda p: Path(p).is_absolute()).all()
    truth = {str((generated / p.path).absolute()): p for p in plans}
    for row in df.itertuples():
        plan = truth[row.image]
        assert (row.pneumonia, row.patient_id, row.source_split) == (plan.pneumonia, plan.child, plan.split)
        assert row.subtype == (plan.subtype if plan.dicom < 0 else ("unknown" if plan.pneumonia else "normal"))
        assert row.format == ("dicom" if plan.dicom >= 0 else "jpeg")
    # the release's leak: some children in both train and test, exactly the generator's leak children
    splits = df.groupby("patient_id")["source_split"].agg(set)
    both = set(splits[splits.map(lambda s: {"train", "test"} <= s)].index)
    assert both and both == {p.child for p in plans if p.leak}
    assert (df.loc[df["format"] == "dicom", "patient_id"].str.match(r"^SYN-CXR-\d{4}$")).all()


def test_source_may_be_chest_xray_a_split_or_a_flat_class_folder(generated: Path, tmp_path: Path) -> None:
    whole, _ = index_chest_xray(generated, progress=False)
    inner, rej = index_chest_xray(generated / "chest_xray", progress=False)
    assert len(rej) == 0 and inner["image"].tolist() == whole.loc[whole["format"] == "jpeg", "image"].tolist()
    train, _ = index_chest_xray(generated / "chest_xray" / "train", progress=False)
    assert train["image"].tolist() == whole.loc[whole["source_split"] == "train", "image"].tolist()
    assert set(train["source_split"]) == {"train"}  # the split folder itself still names the split
    flat = tmp_path / "flat"
    for cls in ("NORMAL", "PNEUMONIA"):
        shutil.copytree(generated / "chest_xray" / "test" / cls, flat / cls)
    df, _ = index_chest_xray(flat, progress=False)
    assert set(df["source_split"]) == {""} and set(df["pneumonia"]) == {0, 1}


def test_bad_files_land_in_rejected(source: Path) -> None:
    train = source / "chest_xray" / "train"
    (source / "chest_xray" / "README.txt").write_text("notes\n")
    (train / "PNEUMONIA" / "person999_bacteria_9999.jpeg").write_bytes(b"\xff\xd8 corrupt jpeg" * 10)
    good = next(iter(sorted((train / "NORMAL").glob("*.jpeg"))))
    (train / "NORMAL" / "IM-0999-0001.jpeg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    shutil.copy(good, train / "stray.jpeg")  # not in a class folder
    nested = source / "chest_xray" / "chest_xray" / "train" / "NORMAL"  # the Kaggle zip's nested copy
    nested.mkdir(parents=True)
    shutil.copy(good, nested / good.name)
    (train / "NORMAL" / ".DS_Store").write_bytes(b"\0")  # hidden: skipped silently
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(train / "NORMAL" / "scan.png")  # no Kermany name

    df, rejected = index_chest_xray(source, progress=False)
    rej = rejected.frame().assign(name=lambda f: f["path"].map(lambda p: Path(p).name)).set_index("name")
    assert rej.loc["README.txt", "reason"] == "unknown_file"
    assert rej.loc["person999_bacteria_9999.jpeg", "reason"] == "unreadable"
    assert rej.loc["IM-0999-0001.jpeg", "reason"] == "unreadable"
    assert rej.loc["stray.jpeg", "reason"] == "no_class"
    assert rej.loc[good.name, "reason"] == "duplicate" and "/chest_xray/chest_xray/" in rej.loc[good.name, "path"]
    assert len(rejected) == 5
    assert not rej["detail"].str.startswith(str(source)).any()  # the path is not repeated in the detail
    scan = df[df["image"].str.endswith("scan.png")].iloc[0]
    assert (scan["patient_id"], scan["subtype"], scan["format"]) == ("scan", "normal", "png")
    assert df["image"].str.contains("/chest_xray/chest_xray/").sum() == 0


def test_wrong_modality_dicom_is_rejected(source: Path) -> None:
    import pydicom

    path = next(iter(sorted((source / "dicom" / "NORMAL").glob("*.dcm"))))
    ds = pydicom.dcmread(path)
    ds.Modality = "CT"
    ds.save_as(path)
    df, rejected = index_chest_xray(source, progress=False)
    assert rejected.frame()[["path", "reason"]].values.tolist() == [[str(path), "wrong_modality"]]
    assert str(path) not in set(df["image"])


def test_manifest_is_relative_and_idempotent(generated: Path, tmp_path: Path) -> None:
    df, rejected = index_chest_xray(generated, progress=False)
    rejected.add(generated / "x.txt", "unknown_file", "demo")
    out, rej_path = write_chest_xray_manifest(df, tmp_path / "m" / "xray.csv", rejected)
    first = out.read_bytes(), rej_path.read_bytes()
    assert rej_path.name == "xray.rejected.csv"
    back = pd.read_csv(out, dtype={"patient_id": str}, keep_default_na=False)
    assert list(back.columns) == list(COLUMNS) and not back["image"].str.startswith("/").any()
    assert [str((out.parent / p).resolve()) for p in back["image"]] == [str(Path(p).resolve()) for p in df["image"]]
    rel = pd.read_csv(rej_path)["path"].tolist()
    assert len(rel) == 1 and not rel[0].startswith("/")
    assert (out.parent / rel[0]).resolve() == (generated / "x.txt").resolve()
    write_chest_xray_manifest(df, out, rejected)
    assert (out.read_bytes(), rej_path.read_bytes()) == first
