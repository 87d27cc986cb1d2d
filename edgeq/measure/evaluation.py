"""Host evaluation: the evaluation arrays, the Keras model's outputs on them, top-k accuracy, label matching.

The samples come from an :mod:`edgeq.inputs.data` source, preprocessed once by
``edgeq_device``; the Keras model and every ``.tflite`` then see the very same arrays
(the ``.tflite`` files through ``edgeq_device``'s one evaluation loop,
:func:`edgeq_device.tasks.evaluation.predict_arrays`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
from edgeq_device.run.images import describe_classes, list_image_folder
from edgeq_device.tasks.evaluation import read_labels, top_k_hits

from edgeq.errors import DataError, InvalidArgumentError, LabelMismatchError
from edgeq.inputs.data import DataSource, ImageFolder, check_label_range, class_labels
from edgeq.inputs.models import LoadedModel
from edgeq.progress import task_progress

__all__ = ["keras_outputs", "load_eval_arrays", "match_labels", "top_k_accuracy"]


def top_k_accuracy(outputs: np.ndarray, labels: np.ndarray | None, k: int) -> float | None:
    """Share of samples whose label is among the ``k`` highest outputs (None without labels).

    ``k`` is capped at the number of outputs.
    """
    if labels is None:
        return None
    return float(np.mean(top_k_hits(outputs, labels, min(k, outputs.shape[1]))))


def load_eval_arrays(source: DataSource, limit: int | None, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The evaluation samples of ``source`` stacked into one float32 array, and their labels.

    Takes a seeded subset of ``limit`` samples (all with None). The labels are None unless
    every sample has one.

    Raises:
        InvalidArgumentError: a sample has several inputs (single-input models only).
        DataError: the source gave no sample.
    """
    xs, ys = [], []
    total = limit if limit is not None else source.known_length()
    with task_progress("reading evaluation data", total) as tick:
        for s in source.samples(limit=limit, seed=seed):
            x = s.inputs
            if isinstance(x, (dict, list)):
                raise InvalidArgumentError("compare takes single-input models", argument="evaluation",
                                           received=type(x).__name__, fix="evaluate multi-input models with evaluate()")
            xs.append(np.asarray(x, np.float32))
            ys.append(s.label)
            tick()
    if not xs:
        raise DataError("the evaluation source gave no sample", argument="evaluation",
                        received=source.description, fix="give a labeled image folder or arrays with labels")
    labels = None if any(y is None for y in ys) else np.asarray(ys, np.int64)
    return np.stack(xs), labels


def keras_outputs(loaded: LoadedModel, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """The Keras model's outputs on ``x``, in batches, flattened to one row per sample (float32)."""
    outs = [loaded.predict([x[i:i + batch]])[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).reshape(len(x), -1).astype(np.float32)


def match_labels(given: Sequence[str] | str | os.PathLike[str] | None, calib: DataSource, eval_src: DataSource,
                 y: np.ndarray | None, outputs: int) -> tuple[tuple[str, ...] | None, np.ndarray | None, str]:
    """The model's class names and the evaluation labels renumbered to them, with a note saying how.

    Names: ``given`` (a sequence, or a text file with one per line), else the calibration
    folder's classes, else the evaluation folder's. The evaluation folder's class folders
    are then the outputs of their names.

    Raises:
        LabelMismatchError: the names are not one per model output, or an evaluation label
            is out of range.
    """
    if isinstance(given, (str, os.PathLike)):
        names: tuple[str, ...] | None = read_labels(given)
        where = "labels"
    elif given is not None:
        names, where = tuple(str(n) for n in given), "labels"
    else:
        names, where = class_labels(calib, outputs, "calibration"), "the calibration folder"
        if names is None:
            names, where = class_labels(eval_src, outputs, "evaluation"), "the evaluation folder"
    if names is not None and len(names) != outputs:
        raise LabelMismatchError(f"{len(names)} labels for a model with {outputs} outputs", argument="labels",
                                 received=len(names), fix=f"give exactly {outputs} labels, one per model output")
    if not isinstance(eval_src, ImageFolder) or eval_src.listing.labels is None:
        if y is not None:
            check_label_range(y, outputs, "evaluation", eval_src.description)
        return names, y, ""
    listing = eval_src.listing
    if names is not None:
        with warnings.catch_warnings():  # the empty folders were named when the folder was first listed
            warnings.simplefilter("ignore", UserWarning)
            listing = list_image_folder(listing.root, labels=names, argument="evaluation")
    listing = listing.fit_outputs(outputs, "evaluation")
    if y is not None:
        renumber = np.arange(max(outputs, int(y.max()) + 1))
        new = dict(listing.folders)
        for folder, old in eval_src.listing.folders:
            renumber[old] = new[folder]
        y = renumber[y]
    return names, y, (f"labels from {where}; evaluation folders: "
                      f"{describe_classes(listing.class_order, listing.folders)}")
