"""2-D image files (PNG / JPEG / BMP / TIFF) as grey float arrays, and finding them in a folder.

Used by every 2-D task (PHE-SICH slices, chest radiographs). 8-bit files are divided by 255,
16-bit ones by 65535; colour is converted to grey. No windowing: PHE-SICH PNGs are already
brain-windowed, radiograph JPEGs are display images.

Example:
    >>> read_grey("0004_15.png").shape  # doctest: +SKIP
    (1, 512, 512)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def read_grey(path: str | Path) -> np.ndarray:
    """A 2-D image file as a ``(1, H, W)`` float32 array in [0, 1]; ``ValueError`` naming the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "I;16", "I;16B", "I;16L"):
                im = im.convert("L")
            arr = np.asarray(im)
    except Exception as exc:  # any decoder error: name the file
        raise ValueError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {arr.shape}")
    scale = 255.0 if arr.dtype == np.uint8 else 65535.0
    return (arr.astype(np.float32) / scale)[None]


def list_files(source: str | Path) -> list[Path]:
    """``source`` itself when it is a file, else every non-hidden file under it (recursive, sorted)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file or folder")
    if source.is_file():
        return [source]
    return sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))


def find_images(source: str | Path, reader: Callable[[Path], np.ndarray] = read_grey,
                suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> tuple[list[Path], list[dict[str, str]]]:
    """Files under ``source`` that ``reader`` decodes, and a ``{path, reason, detail}`` row (the
    ``rejected.csv`` columns; ``Rejected.extend`` takes them) for every other file."""
    found: list[Path] = []
    rejected: list[dict[str, str]] = []
    for p in list_files(source):
        if p.suffix.lower() not in suffixes:
            rejected.append({"path": str(p), "reason": "unknown_file",
                             "detail": f"not an image file ({', '.join(suffixes)})"})
            continue
        try:
            reader(p)
        except ValueError as exc:
            rejected.append({"path": str(p), "reason": "unreadable", "detail": str(exc).split(": ", 1)[-1]})
            continue
        found.append(p.resolve())
    return found, rejected
