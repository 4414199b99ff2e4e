"""Pascal VOC XML annotations and their YOLO text labels.

Reading: :func:`read_voc` / :func:`parse_voc` return a :class:`VocAnnotation` (``filename``,
``size`` and one :class:`VocObject` per ``<object>`` with its ``<name>`` and ``<bndbox>``). An
annotation without ``<object>`` is a valid *negative* (the slice was annotated and holds
nothing). Anything that cannot be parsed raises :class:`VocError`, which carries the file
(``path``), a machine-readable ``reason`` (``bad_xml`` or ``unreadable``) and a ``detail`` for
``rejected.csv``. ``<size>`` is optional (many VOC writers omit it); missing values are ``None``.

Coordinates are kept as written (``int`` when integral, else ``float``) and used as continuous
pixel-edge coordinates: a box is ``[xmin, xmax] x [ymin, ymax]`` with width ``xmax - xmin``.
That is what the source notes' VOC -> YOLO conversion and most converters do; no 1-based shift
is applied (VOC2007's own files are 1-based, PHE-SICH-CT-IDS's are not documented either way,
and the difference is one pixel in 512).

Writing: :func:`voc_to_yolo` turns boxes into YOLO lines ``class cx cy w h`` normalised by the
image size, clipped to the image; boxes that are degenerate, outside the image, non-finite or
of an unknown class are dropped and returned with the reason. :func:`write_yolo_labels` writes
one label file atomically (an empty file for a negative image, as ultralytics expects).

Example:
    >>> ann = read_voc("SubdatasetC_PNG/annotation/annotation4/0004_15.xml")  # doctest: +SKIP
    >>> lines, dropped = voc_to_yolo(ann.objects, 512, 512, {"a": 0})  # doctest: +SKIP
    >>> write_yolo_labels("labels/train/0004_15.txt", lines)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple, Sequence, Union

from medtasks.io.atomic import write_text_atomic

__all__ = ["DroppedBox", "VocAnnotation", "VocError", "VocObject", "parse_voc", "read_voc", "voc_to_yolo",
           "write_yolo_labels", "yolo_label_text"]

Number = Union[int, float]
_COORDS = ("xmin", "ymin", "xmax", "ymax")


class VocError(ValueError):
    """A VOC file that cannot be used; ``reason`` is ``bad_xml`` (content) or ``unreadable`` (I/O)."""

    def __init__(self, path: str | Path, detail: str, reason: str = "bad_xml") -> None:
        self.path, self.detail, self.reason = str(path), detail, reason
        super().__init__(f"{path}: {detail} [{reason}]")


@dataclass(frozen=True)
class VocObject:
    """One ``<object>``: class name and box corners (pixels, as written)."""

    name: str
    xmin: Number
    ymin: Number
    xmax: Number
    ymax: Number
    difficult: bool = False
    truncated: bool = False

    @property
    def box(self) -> list[Number]:
        return [self.xmin, self.ymin, self.xmax, self.ymax]


@dataclass(frozen=True)
class VocAnnotation:
    """One parsed VOC file; ``objects`` is empty for a negative image."""

    path: str
    filename: str
    width: int | None
    height: int | None
    depth: int | None
    objects: tuple[VocObject, ...]

    @property
    def boxes(self) -> list[list[Number]]:
        """``[[xmin, ymin, xmax, ymax], ...]`` in file order."""
        return [o.box for o in self.objects]

    @property
    def is_negative(self) -> bool:
        return not self.objects


class DroppedBox(NamedTuple):
    """A box :func:`voc_to_yolo` did not convert: its position in the input, a reason token, details."""

    index: int
    reason: str  # unknown_class | non_finite | degenerate | outside
    detail: str


def _number(text: str | None, what: str, path: str) -> Number:
    if text is None or not text.strip():
        raise VocError(path, f"{what} is missing or empty")
    try:
        value = float(text)
    except ValueError:
        raise VocError(path, f"{what} = {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise VocError(path, f"{what} = {text.strip()!r} is not finite")
    return int(value) if value.is_integer() else value


def _size(root: ET.Element, key: str, path: str) -> int | None:
    text = root.findtext(f"size/{key}")
    if text is None or not text.strip():
        return None
    value = _number(text, f"<size><{key}>", path)
    if not float(value).is_integer() or value < 0:
        raise VocError(path, f"<size><{key}> = {text.strip()!r} is not a non-negative integer")
    return int(value)


def _flag(obj: ET.Element, key: str) -> bool:
    return (obj.findtext(key) or "0").strip() not in ("0", "", "false", "False")


def parse_voc(data: bytes | str, path: str | Path = "<memory>") -> VocAnnotation:
    """Parse VOC XML text/bytes; ``path`` only labels errors and the result.

    Raises:
        VocError: not well-formed XML, root other than ``<annotation>``, an ``<object>`` without
            ``<name>`` or ``<bndbox>``, or a coordinate/size that is missing or not a number.
    """
    path = str(path)
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise VocError(path, f"not well-formed XML ({exc})") from None
    if root.tag != "annotation":
        raise VocError(path, f"root element is <{root.tag}>, expected <annotation>")
    objects = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise VocError(path, f"<object> #{i} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise VocError(path, f"<object> #{i} ({name!r}) has no <bndbox>")
        coords = [_number(bndbox.findtext(k), f"<object> #{i} <{k}>", path) for k in _COORDS]
        objects.append(VocObject(name, *coords, difficult=_flag(obj, "difficult"), truncated=_flag(obj, "truncated")))
    return VocAnnotation(path=path, filename=(root.findtext("filename") or "").strip(),
                         width=_size(root, "width", path), height=_size(root, "height", path),
                         depth=_size(root, "depth", path), objects=tuple(objects))


def read_voc(path: str | Path) -> VocAnnotation:
    """Read and parse one VOC XML file (see :func:`parse_voc`); I/O errors are ``VocError('unreadable')``."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise VocError(path, f"cannot read file ({exc.strerror or exc})", reason="unreadable") from None
    return parse_voc(data, path)


def _fmt(value: float) -> str:
    """Up to 10 decimals without trailing zeros: exact for k / 1024 (any 512-pixel box), stable bytes."""
    text = f"{value:.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def voc_to_yolo(boxes: Iterable[VocObject | Sequence], width: int, height: int,
                class_map: Mapping[str, int]) -> tuple[list[str], list[DroppedBox]]:
    """VOC boxes -> YOLO lines ``"<class> <cx> <cy> <w> <h>"`` normalised to [0, 1].

    Args:
        boxes: :class:`VocObject` s or ``(name, xmin, ymin, xmax, ymax)`` tuples, pixels.
        width, height: Image size in pixels (the image's own, not necessarily the XML's).
        class_map: VOC class name -> YOLO class index, e.g. ``{"a": 0}``.

    Returns:
        ``(lines, dropped)``. Boxes are clipped to the image first; a box with ``xmax <= xmin`` or
        ``ymax <= ymin`` is ``degenerate``, one with no area left after clipping is ``outside``.

    Example:
        >>> voc_to_yolo([("a", 100, 200, 300, 260)], 512, 512, {"a": 0})[0]
        ['0 0.390625 0.44921875 0.390625 0.1171875']
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got width={width}, height={height}")
    lines: list[str] = []
    dropped: list[DroppedBox] = []
    for i, box in enumerate(boxes):
        name, x1, y1, x2, y2 = (box.name, *box.box) if isinstance(box, VocObject) else tuple(box)
        if name not in class_map:
            dropped.append(DroppedBox(i, "unknown_class", f"class {name!r} not in {sorted(class_map)}"))
            continue
        x1, y1, x2, y2 = (float(v) for v in (x1, y1, x2, y2))
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            dropped.append(DroppedBox(i, "non_finite", f"box {[x1, y1, x2, y2]}"))
            continue
        if x2 <= x1 or y2 <= y1:
            dropped.append(DroppedBox(i, "degenerate", f"box {[x1, y1, x2, y2]} has no area"))
            continue
        cx1, cx2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        cy1, cy2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        if cx2 <= cx1 or cy2 <= cy1:
            dropped.append(DroppedBox(i, "outside", f"box {[x1, y1, x2, y2]} lies outside the {width}x{height} image"))
            continue
        values = ((cx1 + cx2) / 2 / width, (cy1 + cy2) / 2 / height, (cx2 - cx1) / width, (cy2 - cy1) / height)
        lines.append(" ".join([str(int(class_map[name])), *(_fmt(v) for v in values)]))
    return lines, dropped


def yolo_label_text(lines: Sequence[str]) -> str:
    """The text of a YOLO label file: one line each, ``\\n``-terminated; empty for a negative image."""
    return "".join(f"{line}\n" for line in lines)


def write_yolo_labels(path: str | Path, lines: Sequence[str]) -> Path:
    """Write one YOLO label file atomically (zero bytes when ``lines`` is empty)."""
    return write_text_atomic(path, yolo_label_text(lines))

def parse_boxes(value: Any) -> list[list[float]]:
    """A manifest's ``boxes`` cell (JSON ``[[xmin, ymin, xmax, ymax], ...]``, written by ``prepare`` from the VOC
    XML) as lists of floats; empty for none."""
    if isinstance(value, str) and value.strip():
        return [list(map(float, b)) for b in json.loads(value)]
    return []
