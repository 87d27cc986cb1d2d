"""Image folders: listing (labeled or flat), seeded sampling and streamed loading.

A labeled folder has one subfolder per class; class indices are the sorted
subfolder names unless a labels list says otherwise. A flat folder holds
images directly and has no labels. Images are read one at a time so memory
stays flat however large the folder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .errors import DataError, LabelMismatchError
from .preprocess import Preprocess, load_image

__all__ = ["IMAGE_SUFFIXES", "FolderListing", "iter_images", "list_image_folder"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})


@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder and, for a labeled folder, their class indices."""

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, n: int | None, seed: int = 0) -> FolderListing:
        """A seeded random subset of ``n`` files (all of them, shuffled, when ``n`` is None or larger)."""
        order = list(range(len(self.paths)))
        random.Random(seed).shuffle(order)
        if n is not None:
            order = order[:n]
        return FolderListing(
            root=self.root,
            paths=tuple(self.paths[i] for i in order),
            labels=None if self.labels is None else tuple(self.labels[i] for i in order),
            class_names=self.class_names,
        )


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def list_image_folder(
    root: str | Path, labels: Sequence[str] | None = None, argument: str = "data"
) -> FolderListing:
    """List a labeled (class subfolders) or flat image folder.

    Args:
        root: the folder.
        labels: class names in index order; when given, every subfolder must be one of them.
        argument: the parameter name used in error messages.

    Raises:
        DataError: the folder does not exist or holds no image.
        LabelMismatchError: a subfolder is not among ``labels``.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("image folder not found", argument=argument, received=str(root),
                        fix="give an existing folder of images or of class subfolders")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs = [d for d in subdirs if _images_in(d)]
    if class_dirs:
        names = [d.name for d in class_dirs]
        if labels is not None:
            index = {name: i for i, name in enumerate(labels)}
            unknown = [n for n in names if n not in index]
            if unknown:
                raise LabelMismatchError(
                    f"class folders not in the labels: {', '.join(unknown[:5])}",
                    argument=argument, received=str(root),
                    fix=f"labels are {list(labels)[:10]}; rename the folders or pass matching labels",
                )
            class_names = tuple(labels)
        else:
            index = {name: i for i, name in enumerate(names)}
            class_names = tuple(names)
        paths: list[Path] = []
        idx: list[int] = []
        for d in class_dirs:
            files = _images_in(d)
            paths.extend(files)
            idx.extend([index[d.name]] * len(files))
        return FolderListing(root, tuple(paths), tuple(idx), class_names)
    files = _images_in(root)
    if not files:
        raise DataError("no image files in folder", argument=argument, received=str(root),
                        fix=f"put images ({', '.join(sorted(IMAGE_SUFFIXES)[:5])}, ...) in it "
                            "or in one subfolder per class")
    return FolderListing(root, tuple(files), None, ())


def iter_images(
    listing: FolderListing, preprocess: Preprocess, skipped: list[Path] | None = None
) -> Iterator[tuple[np.ndarray, int | None]]:
    """Yield ``(sample, label)`` for each readable image; unreadable files go to ``skipped``.

    Raises:
        DataError: every file was unreadable.
    """
    yielded = 0
    bad: list[Path] = []
    for i, path in enumerate(listing.paths):
        try:
            arr = load_image(path, preprocess)
        except DataError:
            bad.append(path)
            if skipped is not None:
                skipped.append(path)
            continue
        yielded += 1
        yield arr, (None if listing.labels is None else listing.labels[i])
    if yielded == 0 and bad:
        raise DataError(f"none of the {len(bad)} image files could be read", argument="data",
                        received=str(listing.root), fix="check that the files are images Pillow can open")
