"""Synthetic Kermany chest X-rays: layout, names, val quirk, leak children, DICOM extras, determinism."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

import medtasks.synth.chest_xray as chest_xray
from medtasks.io.radiograph import read_radiograph
from medtasks.synth.chest_xray import generate_chest_xray, plan_chest_xray, render_chest
from tests.synth.digest import tree_digest

SMALL = {"n_children": 12, "images_per_child": (1, 3), "size": 64, "seed": 3, "val_per_class": 2, "dicom": 4,
         "progress": False}
NAME = {"PNEUMONIA": re.compile(r"^person\d+_(bacteria|virus)_\d+\.jpeg$"),
        "NORMAL": re.compile(r"^(NORMAL2-)?IM-\d{4}-\d{4}\.jpeg$")}


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != ".complete")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_chest_xray(tmp_path_factory.mktemp("cxr"), **SMALL)


def test_layout_names_and_counts(small: Path) -> None:
    plans = plan_chest_xray(12, (1, 3), seed=3, val_per_class=2, dicom=4)
    files = _files(small)
    assert files == sorted(p.path for p in plans)
    counts: Counter[tuple[str, str]] = Counter()
    for rel in files:
        parts = rel.split("/")
        if parts[0] == "dicom":
            assert parts[1] in NAME and re.fullmatch(r"SYN-CXR-\d{4}\.dcm", parts[2])
            continue
        root, split, cls, name = parts
        assert root == "chest_xray" and split in ("train", "val", "test") and NAME[cls].match(name), rel
        counts[split, cls] += 1
        with Image.open(small / rel) as im:
            assert im.format == "JPEG" and im.width == 64 and 50 <= im.height <= 70
    assert counts["val", "NORMAL"] == counts["val", "PNEUMONIA"] == 2  # the 8 + 8 quirk, scaled
    assert all(counts[s, c] > 0 for s in ("train", "test") for c in NAME)
    per_child = Counter(p.child for p in plans)
    assert max(per_child.values()) >= 2  # several images per child: re-splits must group


def test_plan_leaks_children_across_train_and_test() -> None:
    plans = plan_chest_xray(60, seed=0, val_per_class=8, dicom=0)
    splits: dict[str, set[str]] = {}
    for p in plans:
        splits.setdefault(p.child, set()).add(p.split)
    leaked = {c for c, s in splits.items() if {"train", "test"} <= s}
    assert leaked and leaked == {p.child for p in plans if p.leak}
    assert {p.pneumonia for p in plans if p.leak} == {0, 1}
    # val images come from children that keep other images in train
    val_children = {p.child for p in plans if p.split == "val"}
    assert sum(p.split == "val" for p in plans) == 16 and any("train" in splits[c] for c in val_children)
    # Kermany counters: personN_<subtype>_K with K running per subtype
    ks = [int(p.path.rsplit("_", 1)[1].split(".")[0]) for p in plans if p.subtype == "bacteria"]
    assert sorted(ks) == list(range(1, len(ks) + 1))


def test_plan_rejects_too_few_children() -> None:
    with pytest.raises(ValueError, match="val images"):
        plan_chest_xray(4, (1, 1), val_per_class=8)


def test_dicom_extras_read_back_as_the_same_kind_of_picture(small: Path) -> None:
    kinds = set()
    for path in sorted((small / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        assert ds.Modality in ("CR", "DX") and ds.BitsStored == 12 and re.fullmatch(r"SYN-CXR-\d{4}", ds.PatientID)
        kinds.add((ds.Modality, ds.PhotometricInterpretation))
        img = read_radiograph(path)[0]
        value = np.rint(img * 4095).astype(np.int64)
        stored = ds.pixel_array.astype(np.int64)
        np.testing.assert_array_equal(stored, 4095 - value if ds.PhotometricInterpretation == "MONOCHROME1" else value)
        assert img[:4, :4].mean() < img.mean()  # air in the corner darker than the body, whatever the storage
    assert {"MONOCHROME1", "MONOCHROME2"} <= {k[1] for k in kinds} and {"CR", "DX"} <= {k[0] for k in kinds}


def test_pneumonia_adds_opacity_inside_the_body_only() -> None:
    for subtype in ("bacteria", "virus"):
        sick, well = render_chest(80, 64, 11, 12, True, subtype), render_chest(80, 64, 11, 12, False)
        diff = sick - well
        assert diff.min() >= 0 and diff.max() > 0.01
        assert diff[:6, :6].max() == 0 and diff[:, :3].max() == 0  # air at the edges untouched


def test_deterministic_for_any_worker_count_and_second_call_is_a_no_op(
        small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    two = generate_chest_xray(tmp_path / "two", workers=2, **SMALL)
    assert tree_digest(two) == tree_digest(small)

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("a complete set must not be rewritten")

    monkeypatch.setattr(chest_xray, "_write_image", fail)
    assert generate_chest_xray(two, workers=2, **SMALL) == two
    monkeypatch.undo()
    # Other parameters: rewritten, files of the old set removed.
    generate_chest_xray(two, **{**SMALL, "dicom": 0})
    assert not (two / "dicom").exists()
    assert _files(two) == sorted(p.path for p in plan_chest_xray(12, (1, 3), seed=3, val_per_class=2, dicom=0))
