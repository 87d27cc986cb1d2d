"""Segmentation masks as people store them: palette PNGs, label IDs mapped to train IDs, several ignore values.

- Pascal VOC ``SegmentationClass`` masks are palette PNGs (mode ``"P"``): a pixel's value is its
  class index (the palette only colours it) and ``255`` marks the void boundary. They read as
  they are, as do 8- and 16-bit grayscale masks (``L``, ``I;16``, ``I``).
- Cityscapes ``*_gtFine_labelIds.png`` hold the 34 label IDs; models are trained on 19 train
  IDs, every other label ignored. ``label_map="cityscapes"`` is that mapping
  (:data:`CITYSCAPES_TRAIN_IDS`, from cityscapesScripts' ``labels.py``; the ignored labels become
  255), with :data:`CITYSCAPES_CLASSES` the train IDs' names. A mapping of one's own is a JSON
  object (``{"7": 0, "8": 1}``), a JSON list of pairs, or a CSV of ``value,class`` rows (a header
  row is skipped). Values a mapping does not list keep their value.
- Ignore values: one (``255``), several (``"255,254"``), ranges (``"250-255"``), or none
  (``"none"``): :func:`parse_ignore`.
- Which images: Pascal VOC keeps every image in ``JPEGImages`` and lists those with masks in
  ``ImageSets/Segmentation/val.txt`` (one name a line, no extension): :func:`read_image_list`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from ..errors import DataError, InvalidArgumentError

__all__ = ["CITYSCAPES_CLASSES", "CITYSCAPES_TRAIN_IDS", "IgnoreLike", "LabelMap", "LabelMapLike",
           "counted_pixels", "load_label_map", "parse_ignore", "read_image_list", "read_mask"]

#: Cityscapes label ID -> train ID (cityscapesScripts ``labels.py``); labels not trained on -> 255.
CITYSCAPES_TRAIN_IDS: dict[int, int] = {
    **dict.fromkeys((0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30), 255),
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
    27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
#: The names of Cityscapes' 19 train IDs, in train ID order.
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
_BUILT_IN = {"cityscapes": (CITYSCAPES_TRAIN_IDS, CITYSCAPES_CLASSES)}
_MASK_MODES = ("L", "P", "I", "I;16")

IgnoreLike = Union[int, str, Sequence[int], None]


def parse_ignore(value: IgnoreLike, argument: str = "ignore_index") -> tuple[int, ...]:
    """Mask values that count nowhere, sorted: ``255``, ``"255,254"``, ``"250-255"``, ``[254, 255]``;
    ``None`` or ``"none"`` for none.

    Raises:
        InvalidArgumentError: a value that is not an integer >= 0 or a range ``LOW-HIGH`` with LOW <= HIGH.
    """
    fix = "give a value, several (255,254) or a range (250-255); none for no ignored value"
    if value is None:
        return ()
    if isinstance(value, bool):
        raise InvalidArgumentError("expected mask values", argument=argument, received=value, fix=fix)
    if isinstance(value, int):
        items: list[str] = [str(value)]
    elif isinstance(value, str):
        if value.strip().lower() in ("none", ""):
            return ()
        items = [p.strip() for p in value.split(",")]
    else:
        items = [str(v) for v in value]
    out: set[int] = set()
    for item in items:
        low, sep, high = item.partition("-") if not item.startswith("-") else (item, "", "")
        try:
            lo, hi = int(low), int(high if sep else low)
        except ValueError:
            raise InvalidArgumentError(f"{item!r} is not a mask value or a range", argument=argument,
                                       received=value, fix=fix) from None
        if lo < 0 or hi < lo:
            raise InvalidArgumentError(f"{item!r} is not a mask value >= 0 or a range LOW-HIGH", argument=argument,
                                       received=value, fix=fix)
        out.update(range(lo, hi + 1))
    return tuple(sorted(out))


@dataclass(frozen=True)
class LabelMap:
    """Mask value -> class, applied to every mask before it is counted (values not listed stay)."""

    name: str
    table: Mapping[int, int]
    #: the classes' names, where the mapping knows them (Cityscapes' train IDs)
    class_names: tuple[str, ...] | None = None

    def apply(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` with every listed value replaced by its class."""
        values, inverse = np.unique(np.asarray(mask, np.int64), return_inverse=True)
        mapped = np.array([self.table.get(int(v), int(v)) for v in values], np.int64)
        return mapped[inverse].reshape(np.shape(mask))


LabelMapLike = Union[str, "os.PathLike[str]", Mapping[int, int], LabelMap, None]


def _pairs_from_text(text: str, path: Path) -> list[tuple[str, str]]:
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict):
            return [(str(k), str(v)) for k, v in data.items()]
        if isinstance(data, list) and all(isinstance(p, list) and len(p) == 2 for p in data):
            return [(str(a), str(b)) for a, b in data]
        raise ValueError("a JSON mapping is an object {\"7\": 0, ...} or a list of [value, class] pairs")
    rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and not rows[0][0].strip().lstrip("-").isdigit():
        rows = rows[1:]  # a header
    if any(len(r) < 2 for r in rows):
        raise ValueError("each CSV row is value,class")
    return [(r[0].strip(), r[1].strip()) for r in rows]


def load_label_map(spec: LabelMapLike, argument: str = "label_map") -> LabelMap | None:
    """A :class:`LabelMap` from a built-in name (``"cityscapes"``), a JSON/CSV file or a dict; None for None.

    Raises:
        InvalidArgumentError: an unknown name, a file that does not exist.
        DataError: a file that is not such a mapping.
    """
    if spec is None or isinstance(spec, LabelMap):
        return spec
    if isinstance(spec, Mapping):
        try:
            return LabelMap("given", {int(k): int(v) for k, v in spec.items()})
        except (TypeError, ValueError):
            raise InvalidArgumentError("a label map maps integer mask values to integer classes",
                                       argument=argument, received=dict(spec), fix="give e.g. {7: 0, 8: 1}") from None
    text = os.fspath(spec)
    if text.lower() in _BUILT_IN:
        table, names = _BUILT_IN[text.lower()]
        return LabelMap(text.lower(), table, names)
    path = Path(text)
    if not path.is_file():
        raise InvalidArgumentError("no such label map", argument=argument, received=text,
                                   fix=f"give {', '.join(_BUILT_IN)} or a .json/.csv file of value -> class")
    try:
        pairs = _pairs_from_text(path.read_text(encoding="utf-8"), path)
        table = {int(a): int(b) for a, b in pairs}
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"not a label map: {exc}", argument=argument, received=text,
                        fix='give a JSON object {"7": 0, "8": 1} or CSV rows value,class of integers') from None
    if not table:
        raise DataError("the label map is empty", argument=argument, received=text,
                        fix="list one value,class pair a row")
    return LabelMap(str(path), table)


def read_mask(path: str | os.PathLike[str], label_map: LabelMap | None = None) -> np.ndarray:
    """A mask's class per pixel ``[H, W]`` (int64): a palette (``P``) or grayscale PNG/BMP, mapped by ``label_map``.

    Raises:
        DataError: the file cannot be read, or it is a colour (RGB) image rather than one index per pixel.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in _MASK_MODES:
                raise DataError(f"a mask holds one class index per pixel; this one is {im.mode}", argument="masks",
                                received=str(path),
                                fix="save masks as 8-bit single-channel (L) or palette (P, as Pascal VOC's) images")
            mask = np.asarray(im, np.int64)
    except OSError as exc:
        raise DataError(f"cannot read mask: {exc}", argument="masks", received=str(path),
                        fix="give PNG or BMP class-index images") from exc
    return label_map.apply(mask) if label_map is not None else mask


def read_image_list(path: str | os.PathLike[str], argument: str = "image_list") -> tuple[str, ...]:
    """The image names of a list file (one a line, with or without extension; blank lines skipped), as stems.

    Raises:
        DataError: the file cannot be read or lists nothing.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the image list: {exc}", argument=argument, received=str(path),
                        fix="give a text file of image names, one a line (VOC's ImageSets/Segmentation/val.txt)") \
            from None
    names = tuple(Path(line.strip()).stem for line in lines if line.strip())
    if not names:
        raise DataError("the image list is empty", argument=argument, received=str(path),
                        fix="list one image name a line")
    return names


def counted_pixels(mask: np.ndarray, ignore: Sequence[int]) -> np.ndarray:
    """Boolean ``mask``-shaped: True where the pixel counts (its value is not one of ``ignore``)."""
    m = np.asarray(mask)
    if not len(ignore):
        return np.ones(m.shape, bool)
    return ~np.isin(m, np.asarray(ignore, np.int64))
