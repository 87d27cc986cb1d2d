"""Image folders: listing (labeled or flat), seeded sampling and streamed loading.

A labeled folder has one subfolder per class, and every subfolder is a class,
empty ones included (with a warning): a class index never depends on which
folders happen to hold images. Folder names become class indices by the
first rule that applies:

1. a labels list (the model's metadata or ``--labels``) names the outputs in
   order: a folder is the output of its name;
2. every name is an integer: folder ``k`` is output ``k`` (the CIFAR/MNIST
   convention, ``10`` comes after ``9``);
3. otherwise the names in ``sorted()`` order are 0..N-1, as Keras'
   ``image_dataset_from_directory`` numbers them, so a model trained with it
   lines up.

:meth:`FolderListing.fit_outputs` then checks the indices against a model's
outputs. A flat folder holds images directly and has no labels. Images are
read one at a time so memory stays flat however large the folder.
"""

from __future__ import annotations

import random
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..errors import DataError, EmptyClassFolderWarning, LabelMismatchError
from ..model.preprocess import Preprocess, load_image

__all__ = [
    "CLASS_ORDERS",
    "IMAGE_SUFFIXES",
    "FolderListing",
    "describe_classes",
    "folder_pairs",
    "iter_images",
    "list_image_folder",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})

#: How a labeled folder's names became class indices (:attr:`FolderListing.class_order`).
CLASS_ORDERS = {
    "names": "folders named after the labels",
    "integers": "integer names: folder k = output k",
    "sorted": "sorted names, as Keras' image_dataset_from_directory",
}
_INTEGER = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder and, for a labeled folder, their class indices.

    ``class_names`` names the class indices in order; ``class_order`` says how folder names
    became indices (a key of :data:`CLASS_ORDERS`, ``""`` for a flat folder); ``folders``
    gives each class folder, in name order, with its index; ``empty`` the class folders
    without an image (they are classes all the same).
    """

    root: Path
    paths: tuple[Path, ...]
    labels: tuple[int, ...] | None
    class_names: tuple[str, ...]
    class_order: str = ""
    folders: tuple[tuple[str, int], ...] = ()
    empty: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, n: int | None, seed: int = 0) -> FolderListing:
        """A seeded random subset of ``n`` files (all of them, shuffled, when ``n`` is None or larger)."""
        order = list(range(len(self.paths)))
        random.Random(seed).shuffle(order)
        if n is not None:
            order = order[:n]
        return replace(
            self,
            paths=tuple(self.paths[i] for i in order),
            labels=None if self.labels is None else tuple(self.labels[i] for i in order),
        )

    def fit_outputs(self, outputs: int, argument: str = "data") -> FolderListing:
        """Check the class indices against a model with ``outputs`` outputs; name every output.

        Integer-named folders are outputs ``0..outputs-1`` (missing ones are simply absent
        classes); sorted names must be exactly one folder per output, since their order alone
        cannot say which output a missing folder would have been. The indices never change:
        only ``class_names`` is completed to one name per output.

        Raises:
            LabelMismatchError: a folder is not one of the outputs, or the labels or sorted
                folder names do not number the outputs.
        """
        if self.labels is None:
            return self
        n = len(self.class_names)
        if self.class_order == "integers":
            over = [name for name, i in self.folders if i >= outputs]
            if over:
                raise LabelMismatchError(
                    f"class folder {over[0]!r} is output {int(over[0])}, but the model has {outputs} "
                    f"outputs (0..{outputs - 1})", argument=argument, received=str(self.root / over[0]),
                    fix="remove or rename that folder, or give --labels FILE (labels=) naming the model's "
                        f"{outputs} outputs in order and name the folders after them")
            if n == outputs:
                return self
            names = self.class_names[:outputs] + tuple(str(i) for i in range(n, outputs))
            return replace(self, class_names=names)
        if n == outputs:
            return self
        if self.class_order == "sorted":
            if n > outputs:
                raise LabelMismatchError(
                    f"{n} class folders but the model has {outputs} outputs", argument=argument,
                    received=str(self.root),
                    fix="remove the extra class folders, or give --labels FILE (labels=) naming the model's "
                        f"{outputs} outputs in order")
            raise LabelMismatchError(
                f"{n} class folders but the model has {outputs} outputs: sorted folder names cannot say "
                "which output each one is", argument=argument, received=str(self.root),
                fix=f"give --labels FILE (labels=) naming the model's {outputs} outputs in order (the folder "
                    f"names among them), add the missing class folders (empty ones count), or name the "
                    f"folders 0..{outputs - 1} after the outputs")
        raise LabelMismatchError(f"{n} labels for a model with {outputs} outputs", argument="labels",
                                 received=n, fix=f"give exactly {outputs} labels, one per model output")


def describe_classes(order: str, folders: Sequence[tuple[str, int]], shown: int = 5) -> str:
    """``<how names became indices>: <the first folders>→<their index>, …``."""
    return f"{CLASS_ORDERS.get(order, order)}: {folder_pairs(folders, shown)}"


def folder_pairs(folders: Sequence[tuple[str, int]], shown: int = 5) -> str:
    """``0→0, 1→1, … (10 folders)``: the first ``shown`` class folders and their indices."""
    pairs = ", ".join(f"{name}→{i}" for name, i in folders[:shown])
    return pairs + (f", … ({len(folders)} folders)" if len(folders) > shown else "")


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _is_integer(name: str) -> bool:
    return _INTEGER.fullmatch(name) is not None


def list_image_folder(
    root: str | Path, labels: Sequence[str] | None = None, argument: str = "data"
) -> FolderListing:
    """List a labeled (class subfolders) or flat image folder.

    When any subfolder holds images, every subfolder not starting with ``.`` is a class, empty
    ones included (a ``UserWarning`` names them). Names become class indices by the rules of
    this module: ``labels`` first, then integer names (folder ``k`` = class ``k``), then the
    ``sorted()`` names, as Keras' ``image_dataset_from_directory`` does.

    Args:
        root: the folder.
        labels: class names in index order (a model's outputs); a folder is the class of its
            name, or, when no name is among them and all are integers, of its number.
        argument: the parameter name used in error messages.

    Raises:
        DataError: the folder does not exist or holds no image.
        LabelMismatchError: a subfolder is not among ``labels``, or two integer names are the
            same number.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("image folder not found", argument=argument, received=str(root),
                        fix="give an existing folder of images or of class subfolders")
    subdirs = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files_of = {name: _images_in(root / name) for name in subdirs}
    if any(files_of.values()):
        return _labeled(root, subdirs, files_of, labels, argument)
    files = _images_in(root)
    if not files:
        raise DataError("no image files in folder", argument=argument, received=str(root),
                        fix=f"put images ({', '.join(sorted(IMAGE_SUFFIXES)[:5])}, ...) in it "
                            "or in one subfolder per class")
    return FolderListing(root, tuple(files), None, ())


def _labeled(root: Path, names: list[str], files_of: dict[str, list[Path]],
             labels: Sequence[str] | None, argument: str) -> FolderListing:
    integers = all(_is_integer(n) for n in names)
    if labels is not None and (all(n in labels for n in names) or not integers):
        position: dict[str, int] = {}
        for i, label in enumerate(labels):
            position.setdefault(str(label), i)
        unknown = [n for n in names if n not in position]
        if unknown:
            raise LabelMismatchError(
                f"class folders not in the labels: {', '.join(unknown[:5])}",
                argument=argument, received=str(root),
                fix=f"labels are {list(labels)[:10]}; rename the folders or pass matching labels")
        index, order, class_names = position, "names", tuple(str(x) for x in labels)
    elif integers:
        index = {n: int(n) for n in names}
        if len(set(index.values())) < len(index):
            same = sorted((n for n in names if sum(int(m) == int(n) for m in names) > 1), key=int)
            raise LabelMismatchError(
                f"class folders {', '.join(same)} are the same integer", argument=argument,
                received=str(root), fix="keep one folder per class number (folder k holds class k)")
        order = "integers"
        top = max(index.values()) + 1
        class_names = tuple(str(x) for x in labels) if labels is not None else tuple(str(i) for i in range(top))
        if labels is not None and top > len(labels):
            over = max(names, key=int)
            raise LabelMismatchError(
                f"class folder {over!r} is output {int(over)}, but there are {len(labels)} labels",
                argument=argument, received=str(root / over),
                fix="remove or rename that folder, or give --labels FILE (labels=) naming all the "
                    "outputs in order")
    else:
        index, order, class_names = {n: i for i, n in enumerate(names)}, "sorted", tuple(names)
    empty = tuple(n for n in names if not files_of[n])
    if empty:
        warnings.warn(f"{argument}: class folder(s) with no image, still counted as classes: "
                      f"{', '.join(empty[:10])}{' …' if len(empty) > 10 else ''} (in {root})",
                      EmptyClassFolderWarning, stacklevel=3)
    paths: list[Path] = []
    idx: list[int] = []
    for n in names:
        paths.extend(files_of[n])
        idx.extend([index[n]] * len(files_of[n]))
    folders = tuple(sorted(((n, index[n]) for n in names), key=lambda p: (p[1], p[0])))
    return FolderListing(root, tuple(paths), tuple(idx), class_names, order, folders, empty)


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
