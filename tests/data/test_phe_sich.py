"""PHE-SICH-CT-IDS index on the synthetic release: pairing by integer id, quirks, rejections, manifests."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medtasks.data.manifest import ManifestError, Rejected, read_manifest
from medtasks.data.phe_sich import (
    PATH_COLUMNS,
    SLICE_COLUMNS,
    index_phe_sich,
    parse_slice_name,
    read_multilabel_csv,
    write_phe_manifest,
)
from medtasks.io.voc import voc_to_yolo, write_yolo_labels
from medtasks.synth.phe_sich import QUIRK_PATIENT, generate_phe_sich, plan_phe_dataset

PARAMS = {"n_patients": 5, "matrix": 128, "slices": (6, 8), "seed": 3}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_phe_sich(tmp_path_factory.mktemp("phe") / "release", progress=False, workers=1, **PARAMS)


@pytest.fixture(scope="module")
def indexed(source: Path) -> tuple[pd.DataFrame, Rejected]:
    return index_phe_sich(source, progress=False)


@pytest.fixture()
def broken(source: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "broken"
    shutil.copytree(source, copy)
    return copy


def _plans() -> dict[int, int]:
    plans = plan_phe_dataset(PARAMS["n_patients"], PARAMS["seed"], PARAMS["slices"])
    return {p.patient_id: p.n_slices for p in plans}


def _xml_boxes(path: str) -> list[list[int]]:
    root = ET.parse(path).getroot()
    return [[int(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")]


def _row(df: pd.DataFrame, pid: int, k: int) -> pd.Series:
    hit = df[(df["patient_id"] == str(pid)) & (df["slice_index"] == k)]
    assert len(hit) == 1, f"patient {pid} slice {k}: {len(hit)} rows"
    return hit.iloc[0]


def test_every_slice_indexed_with_integer_ids(indexed) -> None:
    df, rejected = indexed
    assert len(rejected) == 0, rejected.frame()
    assert list(df.columns[: len(SLICE_COLUMNS)]) == list(SLICE_COLUMNS)
    expected = {(pid, k) for pid, n in _plans().items() for k in range(n)}
    assert set(zip(df["patient_id"].astype(int), df["slice_index"])) == expected and len(df) == len(expected)
    assert all(p == str(int(p)) for p in df["patient_id"])  # "13", never "0013" / "013"
    ids = [int(p) for p in df["patient_id"].unique()]
    assert ids == sorted(ids) and ids[-1] - ids[0] + 1 > len(ids)  # sorted numerically, ids with gaps
    for col in PATH_COLUMNS:
        assert all(Path(p).is_file() for p in df[col]), col
    assert (df["warning"] == "").all() and (df["width"] == PARAMS["matrix"]).all()


def test_quirk_patient_013_xml_is_paired(indexed) -> None:
    df, _ = indexed
    rows = df[df["patient_id"] == str(QUIRK_PATIENT)]
    assert len(rows) == _plans()[QUIRK_PATIENT]
    assert all(Path(x).name == f"013_{k:02d}.xml" for x, k in zip(rows["xml"], rows["slice_index"]))
    assert all(Path(p).name == f"0013_{k:02d}.png" for p, k in zip(rows["image"], rows["slice_index"]))
    assert rows["nifti_volume"].map(lambda p: Path(p).name).unique().tolist() == ["0013.nii.gz"]


def test_has_phe_matches_mask_and_boxes_match_xml(indexed) -> None:
    df, _ = indexed
    assert 0 < df["has_phe"].sum() < len(df)  # both classes present
    for row in df.itertuples():
        mask_pixels = int(np.count_nonzero(np.asarray(Image.open(row.mask))))
        assert row.mask_pixels == mask_pixels
        assert row.has_phe == int(mask_pixels > 0) == int(row.n_boxes > 0)
        assert json.loads(row.boxes) == _xml_boxes(row.xml) and row.n_boxes == len(_xml_boxes(row.xml))


def test_medinfo_joined_by_patient(indexed, source: Path) -> None:
    df, _ = indexed
    medinfo = pd.read_csv(source / "MedInfo.csv", dtype=str).set_index("ID")
    for pid, types in df.groupby("patient_id")["hemorrhage_type"]:
        assert types.unique().tolist() == [medinfo.loc[pid, "Type Of Hemorrhage"]]
    for pid, sex in df.groupby("patient_id")["sex"]:
        assert sex.unique().tolist() == [medinfo.loc[pid, "Gender"]]
    assert "ID" not in df.columns and {"age", "sex", "hematoma_expansion"} <= set(df.columns)


def test_yolo_labels_from_index(indexed, tmp_path: Path) -> None:
    df, _ = indexed
    pos = df[df["has_phe"] == 1].iloc[0]
    neg = df[df["has_phe"] == 0].iloc[0]
    lines, dropped = voc_to_yolo([("a", *b) for b in json.loads(pos.boxes)], pos.width, pos.height, {"a": 0})
    assert len(lines) == pos.n_boxes and dropped == []
    x1, y1, x2, y2 = json.loads(pos.boxes)[0]
    cx, cy, w, h = (float(v) for v in lines[0].split()[1:])
    assert (cx * pos.width, cy * pos.height, w * pos.width, h * pos.height) == pytest.approx(
        ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), abs=1e-7)
    label = write_yolo_labels(tmp_path / "neg.txt", voc_to_yolo(json.loads(neg.boxes), neg.width, neg.height,
                                                                {"a": 0})[0])
    assert neg.boxes == "[]" and label.stat().st_size == 0


def test_broken_copy_rejects_each_fault_and_keeps_the_rest(broken: Path) -> None:
    ids = sorted(_plans())
    a, b = ids[0], ids[1]
    png, xml = broken / "SubdatasetC_PNG" / "set", broken / "SubdatasetC_PNG" / "annotation"
    (xml / f"annotation{a}" / f"{a:04d}_01.xml").unlink()                                      # deleted XML
    (xml / f"annotation{b}" / f"{b:04d}_02.xml").write_text("<annotation><object><name>a</name>")  # corrupt XML
    shutil.copy(png / f"image{a}" / f"{a:04d}_00.png", png / f"image{a}" / f"{a:04d}_99.png")   # stray PNG
    shutil.copy(png / "image13" / "0013_02.png", png / "image13" / "013_02.png")               # duplicate name
    shutil.copy(png / f"image{a}" / f"{a:04d}_03.png", png / f"image{b}" / f"{a:04d}_03.png")   # wrong folder
    (xml / f"annotation{b}" / f"{b:04d}_50.xml").write_text("<annotation/>")                  # XML without PNG
    (png / f"image{b}" / "notes.txt").write_text("x")

    df, rejected = index_phe_sich(broken, progress=False)
    got = sorted((r["reason"], Path(r["path"]).relative_to(broken).as_posix()) for r in rejected.rows)
    assert got == sorted([
        ("no_annotation", f"SubdatasetC_PNG/set/image{a}/{a:04d}_01.png"),
        ("bad_xml", f"SubdatasetC_PNG/annotation/annotation{b}/{b:04d}_02.xml"),
        ("no_annotation", f"SubdatasetC_PNG/set/image{b}/{b:04d}_02.png"),
        ("no_annotation", f"SubdatasetC_PNG/set/image{a}/{a:04d}_99.png"),
        ("duplicate", "SubdatasetC_PNG/set/image13/013_02.png"),
        ("id_mismatch", f"SubdatasetC_PNG/set/image{b}/{a:04d}_03.png"),
        ("no_image", f"SubdatasetC_PNG/annotation/annotation{b}/{b:04d}_50.xml"),
        ("unknown_file", f"SubdatasetC_PNG/set/image{b}/notes.txt"),
    ])
    details = {Path(r["path"]).name: r["detail"] for r in rejected.rows}
    assert "dropped with it" in details[f"{a:04d}_01.png"] and "identical bytes" in details["013_02.png"]
    assert len(df) == sum(_plans().values()) - 2  # only the two slices without a usable XML are gone
    assert Path(_row(df, 13, 2)["image"]).name == "0013_02.png"  # the canonical name is kept
    with pytest.raises(AssertionError):
        _row(df, a, 1)


def test_relaxed_require_keeps_slices_with_warnings(broken: Path) -> None:
    ids = sorted(_plans())
    a = ids[0]
    (broken / "SubdatasetC_PNG" / "annotation" / f"annotation{a}" / f"{a:04d}_01.xml").unlink()
    df0, _ = index_phe_sich(broken, require=(), progress=False)
    pos = df0[(df0["has_phe"] == 1)].iloc[0]
    Image.fromarray(np.zeros((PARAMS["matrix"],) * 2, np.uint8)).save(pos["mask"])  # blank a positive mask
    (broken / "SubdatasetC_PNG" / "label" / f"label{a}" / f"{a:04d}_02.png").unlink()

    df, rejected = index_phe_sich(broken, require=("mask",), progress=False)
    assert [r["path"].endswith(f"{a:04d}_02.png") and r["reason"] == "no_mask" for r in rejected.rows] == [True]
    kept = _row(df, a, 1)
    assert (kept["xml"], kept["boxes"], kept["warning"]) == ("", "", "no_annotation")
    assert pd.isna(kept["n_boxes"]) and kept["has_phe"] == int(kept["mask_pixels"] > 0)
    flipped = _row(df, int(pos["patient_id"]), int(pos["slice_index"]))
    assert (flipped["has_phe"], flipped["mask_pixels"], flipped["warning"]) == (1, 0, "mask_disagrees")

    df_any, rejected_any = index_phe_sich(broken, require=(), progress=False)
    assert len(rejected_any) == 0 and _row(df_any, a, 2)["warning"] == "no_mask"
    with pytest.raises(ValueError, match="choose from"):
        index_phe_sich(broken, require=("boxes",))


def test_manifest_written_relative_and_idempotent(indexed, source: Path) -> None:
    df, rejected = indexed
    out = source.parent / "manifests" / "phe.csv"  # beside the release: paths are ../release/...
    first = write_phe_manifest(df, out, rejected)
    data = [p.read_bytes() for p in first]
    again = index_phe_sich(source, progress=False)
    second = write_phe_manifest(*again[:1], out, again[1])
    assert first == second == (out, out.with_name("phe.rejected.csv"))
    assert [p.read_bytes() for p in second] == data
    text = data[0].decode()
    assert str(source.parent) not in text and "../release/SubdatasetC_PNG/set/image13/0013_00.png" in text
    back = read_manifest(out, required=("patient_id", "image", "has_phe"), path_columns=("image", "xml"))
    assert back["patient_id"].tolist() == df["patient_id"].tolist()
    assert [Path(p) for p in back["image"]] == [Path(p).resolve() for p in df["image"]]
    assert first[1].read_text() == "path,reason,detail\n"


def test_multilabel_csv(indexed, source: Path, tmp_path: Path) -> None:
    df, _ = indexed
    labelled, rejected = read_multilabel_csv(source / "task4_labels.csv", df)
    assert len(rejected) == 0 and len(labelled) == len(df)
    truth = pd.read_csv(source / "task4_labels.csv")
    assert labelled[["IVH", "IPH", "SAH"]].to_numpy().tolist() == truth[["IVH", "IPH", "SAH"]].to_numpy().tolist()

    lines = ["image,IVH,IPH,SAH", "0013_00.jpg,1,0,0", "13_00.png,0,0,0", "013_01.png,2,0,0",
             "0999_00.png,0,1,0", "ct1.png,0,0,1", f"sub/{int(df.patient_id.iloc[0]):04d}_01.png,0,1,1"]
    (tmp_path / "t4.csv").write_text("\n".join(lines) + "\n")
    labelled, rejected = read_multilabel_csv(tmp_path / "t4.csv", df)
    assert sorted(zip(labelled["patient_id"], labelled["slice_index"], labelled["SAH"])) == sorted(
        [("13", 0, 0), (df.patient_id.iloc[0], 1, 1)])
    reasons = [(Path(r["path"]).name, r["reason"]) for r in rejected.rows if r["reason"] != "no_label"]
    assert reasons == [("13_00.png", "duplicate"), ("013_01.png", "bad_label"), ("0999_00.png", "no_image"),
                       ("ct1.png", "bad_name")]
    assert sum(r["reason"] == "no_label" for r in rejected.rows) == len(df) - 2
    (tmp_path / "t5.csv").write_text("image,IVH,IPH\nx_1.png,0,1\n")
    with pytest.raises(ManifestError, match="SAH"):
        read_multilabel_csv(tmp_path / "t5.csv", df)


def test_names_and_layout_errors(tmp_path: Path) -> None:
    assert (parse_slice_name("13_2.png") == parse_slice_name("0013_02") == parse_slice_name(r"C:\x\013_02.jpg")
            == (13, 2))
    assert parse_slice_name("ct1.png") is None
    (tmp_path / "SubdatasetA_NIFIT").mkdir()
    with pytest.raises(FileNotFoundError, match="SubdatasetC_PNG"):
        index_phe_sich(tmp_path, progress=False)


def test_unreadable_files_and_medinfo_xlsx(broken: Path) -> None:
    a, b = sorted(_plans())[:2]
    png, label = broken / "SubdatasetC_PNG" / "set", broken / "SubdatasetC_PNG" / "label"
    (png / f"image{a}" / f"{a:04d}_00.png").write_bytes(b"\x89PNG not really")                # corrupt image
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(label / f"label{b}" / f"{b:04d}_00.png")  # wrong mask size
    (broken / "SubdatasetA_NIFIT" / "NIFIT" / "label" / f"{a:04d}.nii.gz").write_bytes(b"garbage")
    (broken / "MedInfo.csv").rename(broken / "MedInfo.xlsx")  # no Excel reader installed -> a clear hint
    df, rejected = index_phe_sich(broken, progress=False)
    got = {Path(r["path"]).name: (r["reason"], r["detail"]) for r in rejected.rows}
    assert got[f"{a:04d}_00.png"][0] == "unreadable" and "dropped with it" in got[f"{a:04d}_00.png"][1]
    assert [r["reason"] for r in rejected.rows if r["path"].endswith(f"{b:04d}_00.png")] == ["bad_shape", "no_mask"]
    assert got[f"{a:04d}.nii.gz"][0] == "unreadable"
    assert (df.loc[df["patient_id"] == str(a), "nifti_mask"] == "").all()
    assert (df.loc[df["patient_id"] == str(a), "nifti_volume"] != "").all()
    assert got["MedInfo.xlsx"][0] == "unreadable"  # a CSV renamed .xlsx is no workbook, with or without openpyxl
    assert "openpyxl" in got["MedInfo.xlsx"][1] or "ImportError" not in got["MedInfo.xlsx"][1]
    assert "hemorrhage_type" not in df.columns and len(df) == sum(_plans().values()) - 2


def test_medinfo_xlsx_is_read(source: Path, tmp_path: Path) -> None:
    """The real release ships MedInfo.xlsx (openpyxl is a dependency): its rows join like the CSV's."""
    import shutil

    copy = tmp_path / "release"
    shutil.copytree(source, copy)
    table = pd.read_csv(copy / "MedInfo.csv", dtype=str)
    (copy / "MedInfo.csv").unlink()
    table.to_excel(copy / "MedInfo.xlsx", index=False)
    df, rejected = index_phe_sich(copy, require=("xml",), progress=False)
    assert not [r for r in rejected.rows if "MedInfo" in r["path"]]
    want = table.set_index("ID")["Type Of Hemorrhage"]
    for pid, types in df.groupby("patient_id")["hemorrhage_type"]:
        assert types.unique().tolist() == [want[pid]]


def test_medinfo_identifiers_never_enter_the_manifest(source: Path, tmp_path: Path) -> None:
    """Only sex / age / hemorrhage type / expansion are kept: a name, a birth date or a hospital number in
    MedInfo never reaches the manifest (for `medtasks evaluate --by sex` and the like)."""
    import shutil

    copy = tmp_path / "release"
    shutil.copytree(source, copy)
    table = pd.read_csv(copy / "MedInfo.csv", dtype=str)
    table["Patient Name"], table["Date of Birth"], table["Hospital No."] = "DOE^JANE", "19500101", "H-123456"
    table.to_csv(copy / "MedInfo.csv", index=False)
    df, _ = index_phe_sich(copy, require=("xml",), progress=False)
    assert {"sex", "age", "hemorrhage_type", "hematoma_expansion"} <= set(df.columns)
    assert not {"Patient Name", "Date of Birth", "Hospital No."} & set(df.columns)
    out, _ = write_phe_manifest(df, tmp_path / "m.csv", Rejected())
    text = Path(out).read_text()
    assert "DOE^JANE" not in text and "19500101" not in text and "H-123456" not in text
