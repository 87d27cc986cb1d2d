"""datasets/shapes is what examples/make_shapes.py makes, and its boxes and masks agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from make_shapes import CATEGORIES, SIZE, SPLITS, coco_annotations, make_split
from PIL import Image

SHAPES = Path(__file__).resolve().parents[2] / "datasets" / "shapes"


@pytest.mark.parametrize("split", list(SPLITS))
def test_shipped_files_are_what_the_generator_makes(split: str) -> None:
    samples = make_split(split)
    shipped = json.loads((SHAPES / "annotations" / f"instances_{split}.json").read_text(encoding="utf-8"))
    assert shipped == coco_annotations(split, samples)
    files = sorted(p.name for p in (SHAPES / split).iterdir())
    assert files == [f"{k:04d}.png" for k in range(len(samples))]
    for k, s in enumerate(samples):
        with Image.open(SHAPES / split / f"{k:04d}.png") as im:
            assert im.mode == "RGB" and np.array_equal(np.asarray(im), s.image), f"{split}/{k:04d}.png"
        with Image.open(SHAPES / "masks" / split / f"{k:04d}.png") as m:
            assert m.mode == "L" and np.array_equal(np.asarray(m), s.mask), f"masks/{split}/{k:04d}.png"


@pytest.mark.parametrize("split", list(SPLITS))
def test_each_box_encloses_exactly_its_shape(split: str) -> None:
    coco = json.loads((SHAPES / "annotations" / f"instances_{split}.json").read_text(encoding="utf-8"))
    assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    assert len(by_image) == len(coco["images"]) == SPLITS[split][0]  # every image has 1..3 shapes
    for im in coco["images"]:
        assert (im["width"], im["height"]) == (SIZE, SIZE)
        with Image.open(SHAPES / "masks" / split / im["file_name"]) as m:
            mask = np.asarray(m)
        anns = by_image[im["id"]]
        assert 1 <= len(anns) <= 3
        covered = np.zeros(mask.shape, bool)
        for a in anns:
            x, y, w, h = a["bbox"]
            inside = np.zeros(mask.shape, bool)
            inside[y:y + h, x:x + w] = True
            own = inside & (mask == a["category_id"])
            # the box is the tight box of its shape's pixels: each edge row/column holds one
            assert own[y].any() and own[y + h - 1].any() and own[:, x].any() and own[:, x + w - 1].any()
            assert int(own.sum()) == a["area"] and a["iscrowd"] == 0
            assert not covered[inside].any(), "boxes overlap"
            covered |= inside
        assert not (mask[~covered] != 0).any(), f"shape pixels outside every box in {im['file_name']}"


def test_labels_and_size_on_disk() -> None:
    assert (SHAPES / "labels.txt").read_text(encoding="utf-8").split() == [c["name"] for c in CATEGORIES]
    total = sum(p.stat().st_size for p in SHAPES.rglob("*") if p.is_file())
    assert total < 2_000_000
