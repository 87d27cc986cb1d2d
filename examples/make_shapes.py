"""Write ``datasets/shapes``: circles, squares and triangles on textured backgrounds, for detection and segmentation.

``python examples/make_shapes.py [--out datasets/shapes]``. Seeded and deterministic:
every coordinate is made with ``+ - * /`` and ``sqrt`` (IEEE-exact everywhere) from
NumPy's PCG64 stream, so the files are the same on any machine, and a test checks
that the shipped files are what :func:`make_split` makes.

Each 96x96 RGB image holds 1 to 3 shapes (category 1 circle, 2 square, 3 triangle,
any size from 20 to 44 pixels across, squares and triangles turned at any angle) in
one solid colour on a gradient, striped, checkered or blotchy background with sparse
speckle noise. Shapes do not touch (their boxes are at least 2 pixels apart), and no
two shapes' centres fall in the same cell of a 6x6 grid (16 pixels), so every box
encloses exactly its shape's pixels and a one-box-per-cell detector can find them all.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CATEGORIES", "GRID", "SIZE", "SPLITS", "Sample", "make_sample", "make_split", "write_dataset"]

SIZE = 96
GRID = 6  # centres of two shapes never share a cell of this grid
CATEGORIES: tuple[dict[str, Any], ...] = ({"id": 1, "name": "circle"}, {"id": 2, "name": "square"}, {"id": 3, "name": "triangle"})
#: split name -> (images, seed)
SPLITS: dict[str, tuple[int, int]] = {"train": (256, 12), "val": (64, 13)}
_SQRT3_2 = float(np.sqrt(3.0)) / 2.0


@dataclass(frozen=True)
class Sample:
    """One generated image, its class-index mask and its boxes."""

    image: np.ndarray  # [SIZE, SIZE, 3] uint8
    mask: np.ndarray  # [SIZE, SIZE] uint8, 0 background, 1..3 the category
    boxes: tuple[tuple[int, int, int, int, int, int], ...]  # (category, x, y, w, h, area) per shape


def _unit(rng: np.random.Generator) -> tuple[float, float]:
    """A direction (cos, sin) without trigonometric functions."""
    while True:
        u, v = rng.uniform(-1.0, 1.0, 2)
        n = u * u + v * v
        if 0.01 < n <= 1.0:
            r = float(np.sqrt(n))
            return float(u) / r, float(v) / r


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float64)


def _background(rng: np.random.Generator) -> np.ndarray:
    """A [SIZE, SIZE, 3] float background: gradient, stripes, checks or blotches, then speckles."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    a, b = _colour(rng), _colour(rng)
    kind = int(rng.integers(0, 4))
    if kind == 0:  # linear gradient at any angle
        c, s = _unit(rng)
        t = ((xx - SIZE / 2) * c + (yy - SIZE / 2) * s) / SIZE + 0.5
        t = np.clip(t, 0.0, 1.0)[..., None]
    elif kind == 1:  # stripes at any angle, period 6..16
        c, s = _unit(rng)
        period = float(rng.integers(6, 17))
        t = (np.floor((xx * c + yy * s) / (period / 2)) % 2)[..., None]
        b = np.clip(a + rng.uniform(-70, 70, 3), 0, 255)
    elif kind == 2:  # checks, cell 4..12
        cell = int(rng.integers(4, 13))
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2)[..., None]
        b = np.clip(a + rng.uniform(-70, 70, 3), 0, 255)
    else:  # blotches: a 4x4 grid of colours, blended bilinearly
        grid = rng.integers(0, 256, (4, 4, 3)).astype(np.float64)
        gy, gx = yy / SIZE * 3.0, xx / SIZE * 3.0
        y0, x0 = np.minimum(np.floor(gy), 2).astype(int), np.minimum(np.floor(gx), 2).astype(int)
        fy, fx = (gy - y0)[..., None], (gx - x0)[..., None]
        top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
        bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
        return _speckle(rng, top * (1 - fy) + bottom * fy)
    return _speckle(rng, a * (1 - t) + b * t)


def _speckle(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """About 1% of pixels set to random colours."""
    n = int(SIZE * SIZE * 0.01)
    ys, xs = rng.integers(0, SIZE, n), rng.integers(0, SIZE, n)
    img = img.copy()
    img[ys, xs] = rng.integers(0, 256, (n, 3)).astype(np.float64)
    return img


def _shape_mask(rng: np.random.Generator, category: int) -> np.ndarray:
    """A [SIZE, SIZE] bool mask of one shape of ``category`` placed anywhere it fits."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64) + 0.5
    r = rng.uniform(10.0, 22.0)  # half the size across
    cx, cy = rng.uniform(r, SIZE - r, 2)
    dx, dy = xx - cx, yy - cy
    if category == 1:
        return np.asarray(dx * dx + dy * dy <= r * r)
    c, s = _unit(rng)
    u, v = dx * c + dy * s, -dx * s + dy * c  # coordinates turned by the shape's angle
    if category == 2:
        half = r / float(np.sqrt(2.0)) * 1.15  # a square about as large as the circle
        return np.asarray((np.abs(u) <= half) & (np.abs(v) <= half))
    # an equilateral triangle with vertices at distance r*1.15 from its centre
    inside = np.ones((SIZE, SIZE), bool)
    nx, ny = 1.0, 0.0  # outward normal of one edge, turned by 120 degrees for the next
    for _ in range(3):
        inside &= u * nx + v * ny <= r * 1.15 / 2
        nx, ny = nx * -0.5 - ny * _SQRT3_2, nx * _SQRT3_2 + ny * -0.5
    return inside


def _box(m: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(m)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _far_enough(box: tuple[int, int, int, int], taken: list[tuple[int, int, int, int]]) -> bool:
    x0, y0, x1, y1 = box
    return all(x1 + 2 <= a0 or a1 + 2 <= x0 or y1 + 2 <= b0 or b1 + 2 <= y0 for a0, b0, a1, b1 in taken)


def make_sample(rng: np.random.Generator) -> Sample:
    """One image with 1-3 shapes; draws from ``rng``."""
    img = _background(rng)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    want = int(rng.integers(1, 4))
    taken: list[tuple[int, int, int, int]] = []
    cells: set[tuple[int, int]] = set()
    boxes: list[tuple[int, int, int, int, int, int]] = []
    for _ in range(40):  # tries
        if len(boxes) == want:
            break
        category = int(rng.integers(1, 4))
        m = _shape_mask(rng, category)
        box = _box(m)
        cell = ((box[1] + box[3]) * GRID // (2 * SIZE), (box[0] + box[2]) * GRID // (2 * SIZE))
        if not _far_enough(box, taken) or cell in cells:
            continue
        under = img[m].mean(axis=0)
        colour = _colour(rng)
        while float(np.abs(colour - under).sum()) < 150.0:  # stands out from what is under it
            colour = _colour(rng)
        img[m] = colour
        mask[m] = category
        taken.append(box)
        cells.add(cell)
        x0, y0, x1, y1 = box
        boxes.append((category, x0, y0, x1 - x0, y1 - y0, int(m.sum())))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Sample(image, mask, tuple(boxes))


def make_split(split: str) -> list[Sample]:
    """Every sample of ``split`` (``"train"`` or ``"val"``), in file order."""
    n, seed = SPLITS[split]
    rng = np.random.default_rng(seed)
    return [make_sample(rng) for _ in range(n)]


def coco_annotations(split: str, samples: list[Sample]) -> dict[str, Any]:
    """The COCO ``instances_<split>.json`` of a split's samples."""
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    for k, s in enumerate(samples):
        images.append({"id": k + 1, "file_name": f"{k:04d}.png", "width": SIZE, "height": SIZE})
        for category, x, y, w, h, area in s.boxes:
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": category,
                         "bbox": [x, y, w, h], "area": area, "iscrowd": 0})
    return {"info": {"description": f"edgeq shapes, {split} split (examples/make_shapes.py)"},
            "images": images, "annotations": anns, "categories": [dict(c) for c in CATEGORIES]}


def write_dataset(out: Path) -> None:
    """Write images, masks, COCO annotations and labels under ``out``."""
    from PIL import Image

    (out / "annotations").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        samples = make_split(split)
        (out / split).mkdir(exist_ok=True)
        (out / "masks" / split).mkdir(parents=True, exist_ok=True)
        for k, s in enumerate(samples):
            Image.fromarray(s.image).save(out / split / f"{k:04d}.png", optimize=True)
            Image.fromarray(s.mask).save(out / "masks" / split / f"{k:04d}.png", optimize=True)
        text = json.dumps(coco_annotations(split, samples), separators=(",", ":")) + "\n"
        (out / "annotations" / f"instances_{split}.json").write_text(text, encoding="utf-8")
    (out / "labels.txt").write_text("".join(c["name"] + "\n" for c in CATEGORIES), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Write the dataset; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python examples/make_shapes.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "datasets" / "shapes"))
    args = parser.parse_args(argv)
    write_dataset(Path(args.out))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
