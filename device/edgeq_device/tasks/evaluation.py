"""``edgeq-device eval``: accuracy of a ``.tflite`` classifier on a labeled image folder.

:func:`evaluate` builds top-1/top-5, per-class accuracy and the confusion
matrix on :func:`~edgeq_device.run.inference_pool.predict`, the one evaluation
loop of edgeq (re-exported here with :func:`predict_arrays`), which streams a
folder's images through a pool of interpreters. This module also finds a
model's preprocessing (:func:`model_preprocess`) and class count and reads
label files; the result record is in :mod:`edgeq_device.tasks.eval_result`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from .._version import __version__
from ..errors import DataError, LabelMismatchError
from ..measure.sysinfo import board_info
from ..model.flatbuffer import ModelSource, load_model_bytes, read_flat_model
from ..model.metadata import read_metadata
from ..model.preprocess import ColorMode, Preprocess
from ..model.preprocess_choice import PreprocessChoice, as_choice, choose_preprocess
from ..model.tflite_metadata import read_tflite_metadata
from ..run.images import FolderListing, list_image_folder
from ..run.inference_pool import (
    output_size,
    predict,
    predict_arrays,
    progress_callback,
    resolve_workers,
)
from ..run.runtime import Runtime, resolve_runtime
from .eval_options import EvalKeywords, EvalOptions
from .eval_result import ClassScore, EvalResult, format_eval

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "ClassScore",
    "EvalResult",
    "evaluate",
    "format_eval",
    "model_preprocess",
    "output_classes",
    "predict",
    "predict_arrays",
    "read_labels",
    "top_k_hits",
]

LabelsLike = Union[str, "os.PathLike[str]", Sequence[str]]


def output_classes(model: ModelSource) -> int:
    """How many values a classifier's first output gives per sample: its number of classes."""
    return output_size(read_flat_model(model))


def model_preprocess(
    model: ModelSource,
    *,
    size: tuple[int, int] | None = None,
    color: str | ColorMode | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    resize: str | None = None,
) -> Preprocess:
    """The preprocessing of a model: the arguments given, else its edgeq metadata's, else its TFLite metadata's, else its input's.

    Without metadata, ``size`` and ``color`` come from the input shape (``[1, H, W, C]``,
    C = 1 grayscale, 3 RGB); an integer input is fed its raw pixels (uint8 as is, int8 as
    ``pixel - 128``), a float input pixels in ``[0, 1]`` (``mean=0, std=255``). Any argument
    given replaces the corresponding field (float input = ``(pixel - mean) / std``).
    :func:`edgeq_device.model.preprocess_choice.choose_preprocess` also says where each part came from.
    """
    return choose_preprocess(model, size=size, color=color, mean=mean, std=std, resize=resize,
                             warn=False).preprocess


def read_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Class labels from a text file, one per line in class-index order (trailing blank lines ignored).

    Raises:
        DataError: the file cannot be read or holds no label.
    """
    p = Path(path)
    try:
        lines = [line.strip() for line in p.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read labels file: {exc}", argument="labels", received=str(p),
                        fix="give a UTF-8 text file with one label per line") from exc
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError("labels file is empty", argument="labels", received=str(p),
                        fix="write one label per line, in the order of the model's outputs")
    return tuple(lines)


def top_k_hits(outputs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """True where the true class ranks among the first ``k``.

    Ties rank by class index, as a stable ``argsort`` and ``argmax`` do: quantized outputs
    often tie (many exact zeros), and a tie must not count as a hit for every tied class.
    """
    idx = np.arange(len(labels))
    true_scores = outputs[idx, labels][:, None]
    lower_index = np.arange(outputs.shape[1])[None, :] < labels[:, None]
    rank = (outputs > true_scores).sum(axis=1) + ((outputs == true_scores) & lower_index).sum(axis=1)
    return rank < k


def evaluate(
    model: ModelSource,
    data: str | os.PathLike[str] | FolderListing,
    *,
    preprocess: Preprocess | PreprocessChoice | None = None,
    labels: LabelsLike | None = None,
    skip_unreadable: bool = False,
    keep_predictions: bool = False,
    options: EvalOptions | None = None,
    **keywords: Unpack[EvalKeywords],
) -> EvalResult:
    """Top-1/top-5 accuracy, per-class accuracy and confusion matrix on a labeled image folder.

    Args:
        model: path or bytes of the ``.tflite``.
        data: a folder with one subfolder of images per class (or a labeled FolderListing).
        preprocess: default: the model's edgeq metadata, else its TFLite metadata, else
            inferred from its input (see :func:`model_preprocess`); a
            :class:`~edgeq_device.model.preprocess_choice.PreprocessChoice` also says where it came from.
        labels: class names in output order, or a file with one per line; default: the
            model's edgeq metadata, else its TFLite metadata's labels. A folder is the output of its name among them; without
            labels, integer folder names are their output (folder ``k`` = output ``k``), other
            names are numbered in ``sorted()`` order as Keras' ``image_dataset_from_directory``
            does (see :mod:`edgeq_device.run.images`). Empty class folders count.
        skip_unreadable: as for :func:`predict`.
        keep_predictions: also return each image's predicted class and file.
        options, keywords: the evaluation keywords (``limit``, ``seed``, ``workers``, ``runtime``,
            ``threads``, ``xnnpack``, ``delegate``, ``delegate_options``, ``progress``), as keywords or one
            :class:`~edgeq_device.tasks.eval_options.EvalOptions` (see :mod:`edgeq_device.tasks.eval_options`).

    Top-1 is the arg-max; top-5 counts an image when fewer than 5 classes score strictly
    higher than its true class (ties, common with quantized outputs, count as hits).

    Raises:
        DataError, LabelMismatchError, ModelFileError, DelegateError, InvalidArgumentError.
    """
    opts = EvalOptions.of(options, **keywords)
    limit, seed, progress = opts.limit, opts.seed, opts.progress
    workers, runtime, threads, delegate = opts.workers, opts.runtime, opts.threads, opts.delegate
    xnnpack, delegate_options = opts.xnnpack, opts.delegate_options
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_bytes = load_model_bytes(model)
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    meta = read_metadata(model_bytes)
    flat = read_flat_model(model_bytes)
    n_out = output_size(flat)

    if labels is None:
        names = meta.labels if meta is not None and meta.labels else None
        labels_from = "metadata" if names else "folders"
        std_meta = read_tflite_metadata(flat, strict=False) if names is None else None
        std_names = std_meta.class_names(n_out) if std_meta is not None else None
        if std_names:
            names, labels_from = std_names, "TFLite metadata"
    elif isinstance(labels, (str, os.PathLike)):
        names, labels_from = read_labels(labels), "labels"
    else:
        names, labels_from = tuple(str(x) for x in labels), "labels"
    if names is not None and len(names) != n_out:
        if labels_from in ("metadata", "TFLite metadata"):
            raise LabelMismatchError(
                f"the model's metadata holds {len(names)} labels for its {n_out} outputs", argument="model",
                received=len(names), fix=f"give --labels FILE (labels=) with the {n_out} class names in output "
                                         "order, or convert the model again")
        raise LabelMismatchError(f"{len(names)} labels for a model with {n_out} outputs",
                                 argument="labels", received=len(names),
                                 fix=f"give exactly {n_out} labels, one per model output")

    if isinstance(data, FolderListing):
        listing = data
    else:
        listing = list_image_folder(Path(os.fspath(data)), labels=names)
    if listing.labels is None:
        raise DataError("evaluation needs a labeled folder (one subfolder of images per class)",
                        argument="data", received=str(listing.root),
                        fix="sort the images into one subfolder per class")
    listing = listing.fit_outputs(n_out, argument="data")
    if limit is not None:  # a positive integer (EvalOptions)
        listing = listing.sample(limit, seed)
    choice = as_choice(flat, preprocess)
    pre = choice.preprocess
    rt = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
    n_workers = resolve_workers(workers, len(listing), delegate)

    skipped: list[Path] = []
    t0 = time.perf_counter()
    with progress_callback(progress, len(listing), "evaluating") as callback:
        outputs, y = predict(model_bytes, listing, pre, workers=n_workers, runtime=rt, threads=threads,
                             xnnpack=xnnpack, delegate=delegate, delegate_options=delegate_options,
                             skip_unreadable=skip_unreadable, skipped=skipped, progress=callback)
    seconds = time.perf_counter() - t0
    assert y is not None
    pred = outputs.argmax(axis=1)
    k = min(5, n_out)
    confusion = np.zeros((n_out, n_out), np.int64)
    np.add.at(confusion, (y, pred), 1)
    classes = tuple(listing.class_names)
    per_class = []
    for c in range(n_out):
        count, correct = int(confusion[c].sum()), int(confusion[c, c])
        per_class.append(ClassScore(classes[c], count, correct, correct / count if count else None))
    n = len(y)
    unread = set(skipped)
    kept = [p for p in listing.paths if p not in unread]
    return EvalResult(
        model=path,
        model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        mode=meta.mode if meta is not None else None,
        data=str(listing.root),
        images=n,
        skipped=tuple(str(p) for p in skipped),
        classes=classes,
        labels_from=labels_from,
        top1=float((pred == y).mean()) if n else 0.0,
        top5=float(top_k_hits(outputs, y, k).mean()) if n else 0.0,
        top_k=k,
        per_class=tuple(per_class),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        seconds=seconds,
        images_per_second=n / seconds if seconds > 0 else 0.0,
        workers=n_workers,
        threads=threads if threads is not None else (1 if n_workers > 1 else None),
        runtime=rt.name,
        runtime_version=rt.version,
        delegate=delegate,
        preprocess=pre,
        preprocessing=choice.summary,
        preprocess_sources=dict(choice.sources),
        limit=limit,
        seed=seed,
        board=board_info(),
        started=started,
        edgeq_device_version=__version__,
        predictions=tuple(int(v) for v in pred) if keep_predictions else None,
        files=tuple(str(p) for p in kept) if keep_predictions else None,
        class_order=listing.class_order,
        class_folders=dict(listing.folders),
        empty_folders=listing.empty,
    )
