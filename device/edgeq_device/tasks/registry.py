"""The evaluation tasks by name, and :func:`evaluate_task`, which runs the one a model or its caller asks for.

``classification`` (top-1/top-5 on a labeled image folder, or ``.npy``/``.npz`` samples with
a ``.npy`` of labels), ``detection`` (COCO mAP), ``segmentation`` (mIoU) and ``fidelity``
(SQNR and more against reference outputs). A model whose edgeq metadata records its
task (and settings such as ``class_offset``) is evaluated as that task without flags;
arguments given override it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .._version import __version__
from ..errors import DataError, InvalidArgumentError
from ..measure.sysinfo import board_info
from ..model.flatbuffer import ModelSource, load_model_bytes, read_flat_model
from ..model.metadata import read_metadata
from ..model.preprocess import Preprocess
from ..model.preprocess_choice import PreprocessChoice
from ..model.tflite_metadata import read_tflite_metadata
from ..results.report_json import JsonResult
from ..run.inference_pool import predict_arrays, resolve_workers
from ..run.runtime import Runtime, resolve_runtime
from .detection_eval import DetectionResult, evaluate_detection
from .eval_options import EvalKeywords, EvalOptions
from .eval_result import ClassScore, EvalResult
from .evaluation import LabelsLike, evaluate, output_classes, read_labels, top_k_hits
from .fidelity import FidelityResult, evaluate_fidelity
from .masks import IgnoreLike, LabelMapLike
from .segmentation import SegmentationResult, evaluate_segmentation
from .task_inputs import load_labels_npy, load_samples, sample_indices
from .task_loop import progress_callback

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["TASKS", "TASK_RESULTS", "evaluate_arrays", "evaluate_task", "resolve_task"]

#: Every task ``edgeq-device eval`` knows, with what it needs.
TASKS: dict[str, str] = {
    "classification": "DATA: a folder of class subfolders; or --inputs X.npy/.npz with --labels-npy Y.npy",
    "detection": "DATA: a folder of images and --annotations instances.json (COCO)",
    "segmentation": "DATA: a folder of images and --masks DIR of class-index PNG/BMP",
    "fidelity": "--inputs X (.npy, .npz or image folder) and --reference Y.npz of expected outputs",
}
#: The result record of each task.
TASK_RESULTS: dict[str, type[JsonResult]] = {
    "classification": EvalResult, "detection": DetectionResult, "segmentation": SegmentationResult,
    "fidelity": FidelityResult,
}


def resolve_task(task: str | None, recorded: str | None, *, reference: object = None) -> str:
    """The task to run: the one asked, else fidelity where a reference is given, else the model's, else classification."""
    name = task or ("fidelity" if reference is not None else None) or recorded or "classification"
    if name not in TASKS:
        raise InvalidArgumentError("unknown task", argument="task", received=name,
                                   fix=f"give one of {', '.join(TASKS)}")
    return name


def evaluate_arrays(
    model: ModelSource,
    inputs: str | os.PathLike[str],
    labels_npy: str | os.PathLike[str],
    *,
    options: EvalOptions | None = None,
    **keywords: Unpack[EvalKeywords],
) -> EvalResult:
    """Top-1/top-5 of a classifier on preprocessed samples (``.npy``/``.npz``, one input) and a ``.npy`` of labels.

    For models whose input is not an image (keyword spotting, sensors). The labels are
    integer class indices, one per sample.

    Args:
        options, keywords: the evaluation keywords (``limit``, ``seed``, ``workers``, ``runtime``,
            ``threads``, ``xnnpack``, ``delegate``, ``delegate_options``, ``progress``), as keywords or one
            :class:`~edgeq_device.tasks.eval_options.EvalOptions` (see :mod:`edgeq_device.tasks.eval_options`).
    """
    opts = EvalOptions.of(options, **keywords)
    limit, seed, progress = opts.limit, opts.seed, opts.progress
    workers, runtime, threads, delegate = opts.workers, opts.runtime, opts.threads, opts.delegate
    xnnpack, delegate_options = opts.xnnpack, opts.delegate_options
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_bytes = load_model_bytes(model)
    flat = read_flat_model(model_bytes)
    meta = read_metadata(model_bytes)
    n_out = output_classes(model_bytes)
    samples = load_samples(inputs, flat, Preprocess(), argument="inputs")
    if samples.files is not None or len(flat.main.inputs) != 1:
        raise DataError("classification of arrays takes a .npy/.npz for a one-input model", argument="inputs",
                        received=str(inputs), fix="give image folders as DATA, without --labels-npy")
    y_all = load_labels_npy(labels_npy, samples.n, n_out)
    idx = sample_indices(samples.n, limit, seed)
    x = np.concatenate([samples.load(int(i))[0] for i in idx])
    rt = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
    n_workers = resolve_workers(workers, len(idx), delegate)
    t0 = time.perf_counter()
    with progress_callback(progress, len(idx), "evaluating") as callback:
        outputs = predict_arrays(model_bytes, x, workers=n_workers, runtime=rt, threads=threads, xnnpack=xnnpack,
                                 delegate=delegate, delegate_options=delegate_options, progress=callback)
    seconds = time.perf_counter() - t0
    y = y_all[idx]
    pred = outputs.argmax(axis=1)
    confusion = np.zeros((n_out, n_out), np.int64)
    np.add.at(confusion, (y, pred), 1)
    names = meta.labels if meta is not None and meta.labels and len(meta.labels) == n_out else \
        tuple(str(c) for c in range(n_out))
    per_class = tuple(ClassScore(names[c], int(confusion[c].sum()), int(confusion[c, c]),
                                 int(confusion[c, c]) / int(confusion[c].sum()) if confusion[c].sum() else None)
                      for c in range(n_out))
    k = min(5, n_out)
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    return EvalResult(
        model=path, model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        mode=meta.mode if meta is not None else None, data=str(inputs), images=len(y), skipped=(),
        classes=names, labels_from=f"labels-npy {labels_npy}", top1=float((pred == y).mean()),
        top5=float(top_k_hits(outputs, y, k).mean()), top_k=k, per_class=per_class,
        confusion=tuple(tuple(int(v) for v in row) for row in confusion), seconds=seconds,
        images_per_second=len(y) / seconds if seconds > 0 else 0.0, workers=n_workers,
        threads=threads if threads is not None else (1 if n_workers > 1 else None), runtime=rt.name,
        runtime_version=rt.version, delegate=delegate, preprocess=Preprocess(), limit=limit, seed=seed,
        preprocessing="none (arrays fed as they are)",
        board=board_info(), started=started, edgeq_device_version=__version__)


def _segmentation_labels(model_bytes: bytes) -> tuple[str, ...] | None:
    """A segmenter's class names from its standard TFLite metadata, where they name its classes.

    One label per channel of a ``[1, H, W, C]`` scores output, or at least two for a class map
    (a class map's labels are also its class count).
    """
    flat = read_flat_model(model_bytes)
    std_meta = read_tflite_metadata(flat, strict=False)
    if std_meta is None or not std_meta.outputs:
        return None
    first = std_meta.outputs[0]
    labels = first.labels or first.value_labels
    shape = flat.main.tensors[flat.io_order("outputs")[0]].shape
    if not labels:
        return None
    if len(shape) == 4 and shape[-1] > 1:
        return labels if len(labels) == shape[-1] else None
    return labels if len(labels) >= 2 else None


def _need(value: object, argument: str, task: str) -> None:
    if value is None:
        raise InvalidArgumentError(f"the {task} task needs {argument}", argument=argument,
                                   fix=f"give {TASKS[task]}")


def evaluate_task(
    model: ModelSource,
    data: str | os.PathLike[str] | None = None,
    *,
    task: str | None = None,
    inputs: str | os.PathLike[str] | None = None,
    reference: str | os.PathLike[str] | None = None,
    labels_npy: str | os.PathLike[str] | None = None,
    annotations: str | os.PathLike[str] | None = None,
    masks: str | os.PathLike[str] | None = None,
    outputs: Mapping[str, str] | None = None,
    class_offset: int | None = None,
    ignore_index: IgnoreLike = None,
    label_map: LabelMapLike = None,
    image_list: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    predictions: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    preprocess: Preprocess | PreprocessChoice | None = None,
    labels: LabelsLike | None = None,
    skip_unreadable: bool = False,
    keep_predictions: bool = False,
    options: EvalOptions | None = None,
    **keywords: Unpack[EvalKeywords],
) -> JsonResult:
    """Evaluate ``model`` as ``task`` (default: the model's recorded task, see :func:`resolve_task`).

    Every task takes the evaluation keywords (``limit``, ``seed``, ``workers``, ``runtime``,
    ``threads``, ``xnnpack``, ``delegate``, ``delegate_options``, ``progress``), as keywords or
    one ``options`` (:mod:`edgeq_device.tasks.eval_options`); classification of image folders also
    takes ``labels``, ``skip_unreadable`` and ``keep_predictions`` (see
    :func:`edgeq_device.evaluate`); segmentation takes ``labels`` (class names, or a file of
    them; their number is the class count of a class-map output) or ``class_names``,
    ``ignore_index`` (one value, several or a range: ``"250-255"``), ``label_map``
    (``"cityscapes"`` or a JSON/CSV file; see :mod:`edgeq_device.tasks.masks`) and ``image_list``
    (the images of ``data`` to evaluate, as VOC's ``ImageSets/Segmentation/val.txt``). Settings
    the model's metadata records (``class_offset``, ``ignore_index``, ``num_classes``,
    ``outputs``) apply where the argument is None.

    Returns:
        An :class:`EvalResult`, :class:`DetectionResult`, :class:`SegmentationResult` or
        :class:`FidelityResult`.
    """
    model_bytes = load_model_bytes(model)
    meta = read_metadata(model_bytes)
    settings: dict[str, Any] = dict(meta.task_settings) if meta is not None else {}
    name = resolve_task(task, meta.task if meta is not None else None, reference=reference)
    source = model if isinstance(model, (str, os.PathLike)) else model_bytes
    opts = EvalOptions.of(options, **keywords)
    image = {"labels": labels, "skip_unreadable": skip_unreadable, "keep_predictions": keep_predictions}
    if name == "segmentation":
        del image["labels"]  # a segmenter's class names
    if name != "classification" and any(image.values()):
        used = [k for k, v in image.items() if v]
        raise InvalidArgumentError(f"{', '.join(used)} apply to classification only", argument=used[0],
                                   received=name, fix="leave them out for this task")
    if predictions is not None and name != "detection":
        raise InvalidArgumentError(f"a predictions file is written by detection, not {name}", argument="predictions",
                                   received=str(predictions),
                                   fix="for classification give --predictions alone (keep_predictions=True): "
                                       "each image's prediction goes into --json")
    if label_map is not None and name != "segmentation":
        raise InvalidArgumentError(f"a label map applies to segmentation masks, not {name}", argument="label_map",
                                   received=getattr(label_map, "name", str(label_map)),
                                   fix="leave it out for this task")
    if image_list is not None and name != "segmentation":
        raise InvalidArgumentError(f"an image list chooses segmentation images, not {name}'s",
                                   argument="image_list", received=str(image_list), fix="leave it out for this task")
    if name == "fidelity":
        _need(inputs, "--inputs (inputs=)", name)
        _need(reference, "--reference (reference=)", name)
        assert inputs is not None and reference is not None
        return evaluate_fidelity(source, inputs, reference, preprocess=preprocess, options=opts)
    if name == "classification" and (inputs is not None or labels_npy is not None):
        _need(inputs, "--inputs (inputs=)", name)
        _need(labels_npy, "--labels-npy (labels_npy=)", name)
        assert inputs is not None and labels_npy is not None
        return evaluate_arrays(source, inputs, labels_npy, options=opts)
    _need(data, "DATA (data=)", name)
    assert data is not None
    if name == "classification":
        return evaluate(source, data, preprocess=preprocess, labels=labels, skip_unreadable=skip_unreadable,
                        keep_predictions=keep_predictions, options=opts)
    n_classes = num_classes if num_classes is not None else settings.get("num_classes")
    if name == "detection":
        _need(annotations, "--annotations (annotations=)", name)
        assert annotations is not None
        return evaluate_detection(
            source, data, annotations, outputs=outputs or settings.get("outputs"),
            class_offset=class_offset if class_offset is not None else int(settings.get("class_offset", 1)),
            num_classes=n_classes, predictions=predictions, overwrite=overwrite, preprocess=preprocess,
            options=opts)
    _need(masks, "--masks (masks=)", name)
    assert masks is not None
    ignore = ignore_index if ignore_index is not None else settings.get("ignore_index", 255)
    names = class_names if class_names else None if not labels else (
        read_labels(labels) if isinstance(labels, (str, os.PathLike)) else tuple(str(n) for n in labels))
    if not names and not (meta is not None and meta.labels):
        names = _segmentation_labels(model_bytes)  # the standard metadata's, where they name the classes
    return evaluate_segmentation(source, data, masks, ignore_index=ignore, label_map=label_map, image_list=image_list,
                                 num_classes=n_classes, class_names=names or None, preprocess=preprocess,
                                 options=opts)
