"""Pascal VOC reading and VOC -> YOLO conversion: release-format XML, negatives, errors, exact numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from medtasks.io.voc import VocError, VocObject, parse_voc, read_voc, voc_to_yolo, write_yolo_labels

# The source notes' example file (PHE-SICH-CT-IDS), whitespace and encoding declaration included.
RELEASE_XML = """<?xml version='1.0' encoding='us-ascii'?>
<annotation>
<folder>VOC2007</folder>
<filename>0004_15.jpg</filename>
<path>C:\\Users\\MiaMia\\Desktop\\png\\set\\image4\\15.png</path>
<source>
    <database>Unknown</database>
</source>
<size>
    <width>512</width>
    <height>512</height>
    <depth>3</depth>
</size>

<segmented>0</segmented>
    <object>
    <name>a</name>
    <pose>Unspecified</pose>
    <truncated>0</truncated>
    <difficult>0</difficult>
    <bndbox>
        <xmin>164</xmin>
        <ymin>114</ymin>
        <xmax>285</xmax>
        <ymax>184</ymax>
    </bndbox>
</object>
</annotation>
"""
NEGATIVE_XML = RELEASE_XML[: RELEASE_XML.index("    <object>")] + "</annotation>\n"


def test_release_file_parses(tmp_path: Path) -> None:
    path = tmp_path / "0004_15.xml"
    path.write_bytes(RELEASE_XML.encode("ascii"))
    ann = read_voc(path)
    assert (ann.path, ann.filename, ann.width, ann.height, ann.depth) == (str(path), "0004_15.jpg", 512, 512, 3)
    assert ann.objects == (VocObject("a", 164, 114, 285, 184),)
    assert ann.boxes == [[164, 114, 285, 184]] and all(type(v) is int for v in ann.boxes[0])
    assert not ann.is_negative


def test_xml_without_object_is_a_negative() -> None:
    ann = parse_voc(NEGATIVE_XML.encode("ascii"))
    assert ann.is_negative and ann.objects == () and ann.boxes == []


def test_float_coordinates_and_missing_size() -> None:
    text = "<annotation><object><name>a</name><difficult>1</difficult><bndbox><xmin>1.5</xmin><ymin>2</ymin>" \
           "<xmax>10.25</xmax><ymax>20</ymax></bndbox></object></annotation>"
    ann = parse_voc(text)
    assert ann.width is None and ann.height is None
    assert ann.boxes == [[1.5, 2, 10.25, 20]] and ann.objects[0].difficult


@pytest.mark.parametrize("text, words", [
    (RELEASE_XML[:200], "not well-formed"),  # truncated file
    ("<annotations></annotations>", "root element"),
    ("<annotation><object><name>a</name></object></annotation>", "no <bndbox>"),
    ("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>", "no <name>"),
    (RELEASE_XML.replace("<xmax>285</xmax>", "<xmax>28S</xmax>"), "not a number"),
    (RELEASE_XML.replace("<ymin>114</ymin>", ""), "<ymin> is missing"),
    (RELEASE_XML.replace("<width>512</width>", "<width>51.2</width>"), "<width>"),
])
def test_malformed_xml_names_file_and_reason(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "bad.xml"
    path.write_text(text, encoding="ascii")
    with pytest.raises(VocError) as info:
        read_voc(path)
    assert info.value.path == str(path) and info.value.reason == "bad_xml"
    assert words in info.value.detail and str(path) in str(info.value)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(VocError) as info:
        read_voc(tmp_path / "nope.xml")
    assert info.value.reason == "unreadable"


def test_yolo_exact_on_hand_made_box() -> None:
    lines, dropped = voc_to_yolo([("a", 100, 200, 300, 260)], 512, 512, {"a": 0})
    assert dropped == []
    assert lines == ["0 0.390625 0.44921875 0.390625 0.1171875"]  # cx=200/512, cy=230/512, w=200/512, h=60/512
    cls, *vals = lines[0].split()
    assert cls == "0" and [float(v) for v in vals] == [200 / 512, 230 / 512, 200 / 512, 60 / 512]


def test_yolo_accepts_voc_objects_and_class_map() -> None:
    ann = parse_voc(RELEASE_XML)
    lines, _ = voc_to_yolo(ann.objects, 512, 512, {"b": 0, "a": 3})
    cls, cx, cy, w, h = lines[0].split()
    assert cls == "3"
    assert [float(v) for v in (cx, cy, w, h)] == pytest.approx([224.5 / 512, 149 / 512, 121 / 512, 70 / 512], abs=1e-10)


def test_yolo_clips_and_drops_with_reasons() -> None:
    boxes = [("a", -10, 500, 100, 530),   # clipped to (0, 500, 100, 512)
             ("a", 50, 50, 50, 80),       # zero width
             ("a", 80, 50, 40, 90),       # xmax < xmin
             ("a", 600, 10, 700, 40),     # right of the image
             ("b", 10, 10, 20, 20),       # unknown class
             ("a", float("nan"), 1, 2, 3)]
    lines, dropped = voc_to_yolo(boxes, 512, 512, {"a": 0})
    assert lines == ["0 0.09765625 0.98828125 0.1953125 0.0234375"]
    assert [(d.index, d.reason) for d in dropped] == [(1, "degenerate"), (2, "degenerate"), (3, "outside"),
                                                     (4, "unknown_class"), (5, "non_finite")]
    assert "'b'" in dropped[3].detail and "['a']" in dropped[3].detail
    values = [float(v) for line in lines for v in line.split()[1:]]
    assert all(0.0 <= v <= 1.0 for v in values)


def test_yolo_rejects_bad_image_size() -> None:
    with pytest.raises(ValueError, match="positive"):
        voc_to_yolo([], 0, 512, {"a": 0})


def test_label_files_atomic_and_empty_for_negatives(tmp_path: Path) -> None:
    neg = write_yolo_labels(tmp_path / "labels" / "0001_00.txt", voc_to_yolo(parse_voc(NEGATIVE_XML).objects,
                                                                              512, 512, {"a": 0})[0])
    assert neg.is_file() and neg.stat().st_size == 0
    pos = write_yolo_labels(tmp_path / "labels" / "0004_15.txt", ["0 0.5 0.5 0.25 0.25", "0 0.1 0.1 0.1 0.1"])
    assert pos.read_text() == "0 0.5 0.5 0.25 0.25\n0 0.1 0.1 0.1 0.1\n"
    assert sorted(p.name for p in (tmp_path / "labels").iterdir()) == ["0001_00.txt", "0004_15.txt"]  # no temp left
