"""What the task evaluations read: input samples (``.npy``, ``.npz`` or images), reference outputs, labels.

A :class:`Samples` gives sample ``i`` as one array per model input (batch of 1),
loaded when a worker takes it. Keys of an ``.npz`` name the model's inputs or
outputs by signature name where the model has one signature, else by tensor
name, or by index (``"0"``, ``"1"``, ...).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import DataError
from ..model.flatbuffer import FlatModel
from ..model.preprocess import Preprocess, load_image
from ..run.images import IMAGE_SUFFIXES, list_image_folder
from .task_loop import input_keys, output_keys

__all__ = ["Samples", "load_array_file", "load_labels_npy", "load_reference", "load_samples", "match_keys",
           "sample_indices"]


@dataclass(frozen=True)
class Samples:
    """``n`` samples; ``load(i)`` gives sample ``i`` as one ``[1, ...]`` array per model input."""

    n: int
    load: Callable[[int], list[np.ndarray]]
    source: str
    files: tuple[str, ...] | None = None


def load_array_file(path: str | os.PathLike[str], argument: str) -> dict[str, np.ndarray]:
    """The arrays of a ``.npy`` (key ``"0"``) or ``.npz`` file, read without pickles."""
    p = Path(path)
    if not p.is_file():
        raise DataError("no such file", argument=argument, received=str(p),
                        fix="give an existing .npy or .npz file")
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in z.files}
        return {"0": np.asarray(np.load(p, allow_pickle=False))}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read arrays: {exc}", argument=argument, received=str(p),
                        fix="write it with numpy.save (.npy) or numpy.savez (.npz)") from exc


def match_keys(arrays: dict[str, np.ndarray], names: Sequence[str], what: str, argument: str,
               received: str) -> list[np.ndarray]:
    """Order ``arrays`` as ``names`` (a key is a name or its index); every name needs one, no key is left over."""
    out: list[np.ndarray] = []
    used: set[str] = set()
    for i, name in enumerate(names):
        key = name if name in arrays else str(i) if str(i) in arrays else None
        if key is None:
            raise DataError(f"no array for the model's {what} {name!r}", argument=argument, received=received,
                            fix=f"name the arrays after the model's {what}s {list(names)} or their indices "
                                f"{[str(j) for j in range(len(names))]}")
        used.add(key)
        out.append(arrays[key])
    extra = sorted(set(arrays) - used)
    if extra:
        raise DataError(f"array(s) {extra} match no {what} of the model", argument=argument, received=received,
                        fix=f"the model's {what}s are {list(names)} (or indices "
                            f"{[str(j) for j in range(len(names))]})")
    return out


def sample_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """All of ``range(n)``, or a seeded random sample of ``limit`` of them in order."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def load_samples(path: str | os.PathLike[str], flat: FlatModel, preprocess: Preprocess,
                 argument: str = "inputs") -> Samples:
    """Samples from a ``.npy`` (a one-input model), an ``.npz`` (one array per input) or an image folder."""
    p = Path(path)
    if p.is_dir():
        listing = list_image_folder(p)
        if len(flat.main.inputs) != 1:
            raise DataError(f"images feed a one-input model; this one has {len(flat.main.inputs)}",
                            argument=argument, received=str(p), fix="give an .npz with one array per input")
        paths = listing.paths
        return Samples(len(paths), lambda i: [load_image(paths[i], preprocess)[None]], str(p),
                       tuple(str(q) for q in paths))
    if p.suffix.lower() not in (".npy", ".npz") and p.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError("expected a folder of images, or a .npy/.npz of arrays", argument=argument,
                        received=str(p), fix="put the images in a folder")
    names = input_keys(flat)
    arrays = match_keys(load_array_file(p, argument), names, "input", argument, str(p))
    counts = {len(a) if a.ndim else 0 for a in arrays}
    if len(counts) != 1 or 0 in counts:
        raise DataError(f"the input arrays hold different numbers of samples: "
                        f"{[a.shape for a in arrays]}", argument=argument, received=str(p),
                        fix="give every input array the same first (sample) dimension")
    for name, a, i in zip(names, arrays, flat.main.inputs):
        t = flat.main.tensors[i]
        want = tuple(int(d) for d in t.shape_signature[1:])
        got = tuple(a.shape[1:])
        if len(want) != len(got) or any(w >= 0 and w != g for w, g in zip(want, got)):
            raise DataError(f"input {name!r} takes samples of shape {want}, the arrays are {got}",
                            argument=argument, received=str(p),
                            fix="save arrays shaped [samples, *input shape without the batch]")
    return Samples(counts.pop(), lambda i: [a[i:i + 1] for a in arrays], str(p))


def load_reference(path: str | os.PathLike[str], flat: FlatModel, samples: int) -> list[np.ndarray]:
    """The expected outputs of an ``.npz`` (keys: output names or indices), one array per output, in order."""
    p = Path(path)
    names = output_keys(flat)
    arrays = match_keys(load_array_file(p, "reference"), names, "output", "reference", str(p))
    for name, a, i in zip(names, arrays, flat.io_order("outputs")):
        t = flat.main.tensors[i]
        want = tuple(int(d) for d in t.shape_signature[1:])
        if a.ndim == 0 or len(a) != samples:
            raise DataError(f"reference {name!r} holds {len(a) if a.ndim else 0} samples, the inputs "
                            f"{samples}", argument="reference", received=str(p),
                            fix="give one reference row per input sample, in the same order")
        got = tuple(a.shape[1:])
        if len(want) != len(got) or any(w >= 0 and w != g for w, g in zip(want, got)):
            raise DataError(f"output {name!r} gives samples of shape {want}, the reference {got}",
                            argument="reference", received=str(p),
                            fix="save reference arrays shaped [samples, *output shape without the batch]")
    return [np.asarray(a, np.float64) for a in arrays]


def load_labels_npy(path: str | os.PathLike[str], samples: int, classes: int) -> np.ndarray:
    """Integer class labels ``[N]`` from a ``.npy``, checked against the samples and the model's classes."""
    p = Path(path)
    labels = load_array_file(p, "labels-npy")
    y = next(iter(labels.values())).reshape(-1) if len(labels) == 1 else None
    if y is None or y.dtype.kind not in "iu":
        raise DataError("expected one array of integer class indices", argument="labels-npy", received=str(p),
                        fix="numpy.save an int array [samples] of class indices")
    if len(y) != samples:
        raise DataError(f"{len(y)} labels for {samples} samples", argument="labels-npy", received=str(p),
                        fix="give one label per input sample, in the same order")
    if len(y) and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"labels span {int(y.min())}..{int(y.max())}, the model has {classes} classes",
                        argument="labels-npy", received=str(p), fix=f"labels must be in 0..{classes - 1}")
    return y.astype(np.int64)
