"""Calibration, training and evaluation data sources.

Anything a user already keeps data in becomes a :class:`DataSource`:

- :class:`ImageFolder`: a folder with class subfolders (labels) or flat (no labels),
  read and preprocessed one image at a time by ``edgeq_device``'s one implementation;
- :class:`ArraySource`: NumPy arrays, ``.npy`` or ``.npz`` files, a dict of arrays keyed
  by input name for multi-input models;
- :class:`TFDataSource`: a ``tf.data.Dataset`` (batched or not; ``(x, y)`` or ``x``);
- :class:`IterableSource`: any iterable, or a function returning a fresh iterator.

:func:`as_source` picks one from what it is given. A source yields
:class:`Sample` objects one at a time, so memory stays flat however large it is,
and takes a seeded sample of N when asked.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.run.images import FolderListing, iter_images, list_image_folder

from edgeq.errors import DataError, InvalidArgumentError, LabelMismatchError

__all__ = [
    "ArraySource",
    "DataSource",
    "ImageFolder",
    "IterableSource",
    "Sample",
    "TFDataSource",
    "as_source",
    "check_label_range",
    "class_labels",
]

Inputs = Union[np.ndarray, dict[str, np.ndarray], list[np.ndarray]]


@dataclass(frozen=True)
class Sample:
    """One sample without batch dimension: inputs (one array, a list or a dict by name) and a label.

    ``index`` is the sample's place in its source (the row of an array) where the source
    reads a subset out of order; ``None`` means its place in the order samples are yielded.
    """

    inputs: Inputs
    label: int | None = None
    index: int | None = None


class DataSource:
    """Base class of the data sources: iterate samples, optionally a seeded subset."""

    description: str = "data"
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:  # pragma: no cover - overridden where known
        raise TypeError(f"{type(self).__name__} has no known length")

    def known_length(self) -> int | None:
        """The number of samples, where it is known without reading them."""
        try:
            return len(self)
        except TypeError:
            return None

    def samples(self, limit: int | None = None, seed: int = 0) -> Iterator[Sample]:
        """Yield up to ``limit`` samples; sources that know their length sample with ``seed``."""
        raise NotImplementedError

    @property
    def has_labels(self) -> bool:
        """Whether the samples carry labels."""
        return False

    def with_preprocess(self, preprocess: Preprocess) -> DataSource:
        """A copy that uses ``preprocess`` (meaningful for image folders only)."""
        return self


class ImageFolder(DataSource):
    """An image folder: class subfolders or flat.

    Every subfolder is a class, empty ones included (with a warning). Without ``labels``,
    integer names are their class (folder ``k`` = class ``k``) and other names are numbered
    in ``sorted()`` order, as Keras' ``image_dataset_from_directory`` does; with ``labels``
    a folder is the class of its name (see :mod:`edgeq_device.run.images`).

    Args:
        root: the folder.
        preprocess: how an image becomes model input; None lets ``convert`` derive it
            from the model's input shape (size, channels; pixels scaled to [0, 1]).
        labels: class names in index order (a model's outputs).
        argument: the parameter named in errors and warnings (e.g. ``calibration``).
        skipped: unreadable files found while reading are appended here.
    """

    def __init__(self, root: str | os.PathLike[str], preprocess: Preprocess | None = None,
                 labels: Sequence[str] | None = None, *, argument: str = "data") -> None:
        self.root = Path(root)
        self.preprocess = preprocess
        self.labels = None if labels is None else tuple(labels)
        self.listing: FolderListing = list_image_folder(self.root, labels=self.labels, argument=argument)
        self.class_names = self.listing.class_names
        self.description = str(self.root)
        self.skipped: list[Path] = []

    def __len__(self) -> int:
        return len(self.listing)

    @property
    def has_labels(self) -> bool:
        return self.listing.labels is not None

    def with_preprocess(self, preprocess: Preprocess) -> ImageFolder:
        clone = ImageFolder.__new__(ImageFolder)
        clone.__dict__.update(self.__dict__)
        clone.preprocess = preprocess
        clone.skipped = []
        return clone

    def samples(self, limit: int | None = None, seed: int = 0) -> Iterator[Sample]:
        if self.preprocess is None:
            raise InvalidArgumentError(
                "an image folder needs preprocessing to become model input", argument="preprocess",
                received=None, fix="pass preprocess=edgeq.Preprocess(size=(W, H), color='rgb'|'l', ...)")
        listing = self.listing.sample(limit, seed)
        for arr, label in iter_images(listing, self.preprocess, self.skipped):
            yield Sample(arr, label)


def _load_array_file(path: Path) -> Any:
    if not path.exists():
        raise DataError("file not found", argument="data", received=str(path),
                        fix="give an existing .npy/.npz file or image folder")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read NumPy file: {exc}", argument="data", received=str(path),
                        fix="save arrays with numpy.save / numpy.savez") from exc


class ArraySource(DataSource):
    """NumPy data: ``x`` is an array ``[N, ...]``, a list of arrays or a dict by input name.

    ``y`` holds integer labels ``[N]`` (or one-hot ``[N, C]``). An ``.npz`` file may hold
    ``x``/``y`` (or ``labels``), or one array per input name.
    """

    def __init__(self, x: Any, y: Any = None, name: str = "arrays") -> None:
        if isinstance(x, (str, os.PathLike)):
            name = str(x)
            loaded = _load_array_file(Path(x))
            if isinstance(loaded, dict):
                y = loaded.pop("y", loaded.pop("labels", y))
                x = loaded.pop("x") if "x" in loaded else loaded
            else:
                x = loaded
        if isinstance(x, Mapping):
            self.x: dict[str, np.ndarray] | list[np.ndarray] | np.ndarray = {
                str(k): np.asarray(v) for k, v in x.items()}
            lengths = {len(v) for v in self.x.values()}
        elif isinstance(x, (list, tuple)):
            self.x = [np.asarray(v) for v in x]
            lengths = {len(v) for v in self.x}
        else:
            self.x = np.asarray(x)
            if self.x.ndim == 0:
                raise DataError("expected an array with a sample dimension", argument="data",
                                received=f"scalar {self.x!r}", fix="give an array shaped [N, ...]")
            lengths = {len(self.x)}
        if len(lengths) != 1:
            raise DataError("arrays have different numbers of samples", argument="data",
                            received=sorted(lengths), fix="give every input the same first dimension")
        self._n = lengths.pop()
        if self._n == 0:
            raise DataError("no samples", argument="data", received=name, fix="give at least one sample")
        self.y = None
        if y is not None:
            y = np.asarray(y)
            if y.ndim == 2:
                y = y.argmax(axis=1)
            if len(y) != self._n:
                raise DataError("labels and samples differ in number", argument="y",
                                received=f"{len(y)} labels for {self._n} samples", fix="give one label per sample")
            self.y = y.astype(np.int64)
            self.class_names = tuple(str(i) for i in range(int(self.y.max()) + 1))
        self.description = name

    def __len__(self) -> int:
        return self._n

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def _take(self, i: int) -> Inputs:
        if isinstance(self.x, dict):
            return {k: v[i] for k, v in self.x.items()}
        if isinstance(self.x, list):
            return [v[i] for v in self.x]
        return self.x[i]

    def samples(self, limit: int | None = None, seed: int = 0) -> Iterator[Sample]:
        order = list(range(self._n))
        if limit is not None and limit < self._n:
            random.Random(seed).shuffle(order)
            order = order[:limit]
        for i in order:
            yield Sample(self._take(i), None if self.y is None else int(self.y[i]), index=i)


def _to_numpy(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _to_numpy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_numpy(v) for v in x]
    return np.asarray(x.numpy() if hasattr(x, "numpy") else x)


def _split_element(el: Any) -> tuple[Any, Any]:
    """An element is ``x`` or ``(x, y)`` (or ``(x, y, weights)``)."""
    if isinstance(el, tuple) and len(el) in (2, 3):
        return el[0], el[1]
    return el, None


class IterableSource(DataSource):
    """Any iterable or generator of ``x`` or ``(x, y)`` elements, batched or not.

    Pass a callable returning a fresh iterator to allow more than one pass.
    ``batched=None`` guesses: an element whose arrays have one more dimension than
    the model input is a batch (decided when the model is known, see ``unbatch``).
    """

    def __init__(self, iterable: Iterable[Any] | Callable[[], Iterable[Any]],
                 batched: bool | None = False, name: str = "iterable") -> None:
        self._factory = iterable if callable(iterable) and not isinstance(iterable, Iterable) else None
        self._iterable = None if self._factory else iterable
        self._used = False
        self.batched = batched
        self.description = name
        self._labels_seen: bool | None = None

    def _elements(self) -> Iterator[Any]:
        if self._factory is not None:
            return iter(self._factory())  # type: ignore[operator]
        if self._used and isinstance(self._iterable, Iterator):
            raise DataError("this iterator was already consumed", argument="data",
                            received=type(self._iterable).__name__,
                            fix="pass a list, a tf.data.Dataset or a function returning a new generator")
        self._used = True
        return iter(self._iterable)  # type: ignore[arg-type]

    @property
    def has_labels(self) -> bool:
        if self._labels_seen is None:
            for s in self.samples(limit=1):
                return s.label is not None
            return False
        return self._labels_seen

    def samples(self, limit: int | None = None, seed: int = 0) -> Iterator[Sample]:
        count = 0
        for el in self._elements():
            x, y = _split_element(el)
            x, y = _to_numpy(x), None if y is None else _to_numpy(y)
            if self.batched:
                n = len(next(iter(x.values())) if isinstance(x, dict) else x[0] if isinstance(x, list) else x)
                for i in range(n):
                    xi = ({k: v[i] for k, v in x.items()} if isinstance(x, dict)
                          else [v[i] for v in x] if isinstance(x, list) else x[i])
                    yield Sample(xi, _label(y, i))
                    count += 1
                    if limit is not None and count >= limit:
                        return
            else:
                yield Sample(x, _label(y, None))
                count += 1
            self._labels_seen = y is not None
            if limit is not None and count >= limit:
                return


def _label(y: Any, i: int | None) -> int | None:
    if y is None:
        return None
    v = np.asarray(y if i is None else y[i])
    return int(v.argmax()) if v.ndim >= 1 and v.size > 1 else int(v.reshape(-1)[0])


class TFDataSource(IterableSource):
    """A ``tf.data.Dataset`` of ``x`` or ``(x, y)``; batched datasets are detected and unbatched."""

    def __init__(self, dataset: Any, name: str = "tf.data") -> None:
        batched = _looks_batched(dataset)
        super().__init__(lambda: dataset.as_numpy_iterator(), batched=batched, name=name)
        self.dataset = dataset
        card = int(dataset.cardinality()) if hasattr(dataset, "cardinality") else -1
        self._n = card if card >= 0 and not batched else None

    def __len__(self) -> int:
        if self._n is None:
            raise TypeError("unknown length")
        return self._n


def _looks_batched(dataset: Any) -> bool:
    """A dataset made by ``.batch()`` has a leading unknown (None) dimension in its element spec."""
    spec = getattr(dataset, "element_spec", None)
    if isinstance(spec, tuple) and len(spec) in (2, 3):
        spec = spec[0]
    first = next(iter(spec.values())) if isinstance(spec, Mapping) else (
        spec[0] if isinstance(spec, (list, tuple)) else spec)
    shape = getattr(first, "shape", None)
    return shape is not None and shape.rank is not None and shape.rank > 0 and shape[0] is None


def class_labels(source: DataSource, outputs: int, argument: str = "data") -> tuple[str, ...] | None:
    """The names of a model's ``outputs`` classes as ``source``'s labels number them, or None.

    An image folder's class folders are checked against the outputs (see
    :meth:`edgeq_device.run.images.FolderListing.fit_outputs`); integer labels (arrays) that all
    fit name the outputs ``"0"..``; other sources have no class names.

    Raises:
        LabelMismatchError: a class folder is not one of the outputs, or sorted folder names
            do not number them.
    """
    if isinstance(source, ImageFolder):
        if source.listing.labels is None:
            return None
        return source.listing.fit_outputs(outputs, argument).class_names
    names = source.class_names
    if names and all(n.isdigit() for n in names) and len(names) <= outputs:
        return tuple(str(i) for i in range(outputs))
    return None


def check_label_range(y: np.ndarray, outputs: int, argument: str, where: str) -> None:
    """Refuse integer labels that are not one of a model's ``outputs`` outputs.

    Raises:
        LabelMismatchError: a label below 0 or at least ``outputs``.
    """
    y = np.asarray(y)
    if y.size == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= outputs:
        raise LabelMismatchError(
            f"label {high if high >= outputs else low} is not an output of the model (outputs 0..{outputs - 1})",
            argument=argument, received=where, fix=f"give labels 0..{outputs - 1}, the index of each sample's "
                                                   "class among the model's outputs")


def as_source(data: Any, preprocess: Preprocess | None = None, *, argument: str = "calibration",
              labels: Sequence[str] | None = None) -> DataSource:
    """Turn what the user has into a :class:`DataSource`.

    Accepts a DataSource, a folder path (image folder), a ``.npy``/``.npz`` path, a NumPy array,
    a ``(x, y)`` tuple of arrays, a dict of arrays, a ``tf.data.Dataset``, or any iterable /
    generator function.

    Raises:
        DataError: a path that does not exist, or a folder with no image.
        InvalidArgumentError: something that is none of the above.
    """
    if isinstance(data, DataSource):
        # A source's own preprocessing wins over one derived from the model.
        if preprocess is not None and getattr(data, "preprocess", None) is None:
            return data.with_preprocess(preprocess)
        return data
    if isinstance(data, (str, os.PathLike)):
        p = Path(data)
        if p.is_dir():
            try:
                return ImageFolder(p, preprocess, labels, argument=argument)
            except DataError as exc:
                raise type(exc)(exc.message, argument=argument, received=exc.received, fix=exc.fix) from None
        if p.suffix in (".npy", ".npz"):
            return ArraySource(p)
        raise DataError("not found or not a data source", argument=argument, received=str(p),
                        fix="give an image folder, a .npy/.npz file, arrays or a tf.data.Dataset")
    if isinstance(data, np.ndarray) or isinstance(data, Mapping):
        return ArraySource(data)
    if isinstance(data, tuple) and len(data) == 2 and all(isinstance(d, np.ndarray) for d in data):
        return ArraySource(data[0], data[1])
    mod = type(data).__module__ or ""
    if mod.startswith("tensorflow") and hasattr(data, "as_numpy_iterator"):
        return TFDataSource(data)
    if isinstance(data, Iterable) or callable(data):
        return IterableSource(data)
    raise InvalidArgumentError("not a data source", argument=argument, received=type(data).__name__,
                               fix="give an image folder, arrays, a tf.data.Dataset or an iterable")
