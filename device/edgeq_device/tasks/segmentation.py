"""Semantic segmentation accuracy: a confusion matrix over every pixel, IoU per class, mIoU, pixel accuracy.

:func:`confusion_matrix`, :func:`class_map` and :func:`segmentation_scores` work on
raw arrays (the host reuses them); :func:`evaluate_segmentation` runs a folder of
images through the pooled task loop against a folder of class-index masks
(PNG/BMP, named like the images; palette PNGs as Pascal VOC's, label IDs mapped to
classes as Cityscapes' — see :mod:`edgeq_device.tasks.masks`). A prediction is resized to its
mask with nearest-neighbour; pixels of the ignored values count nowhere.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from .._version import __version__
from ..errors import DataError, LabelMismatchError
from ..measure.sysinfo import BoardInfo, board_info
from ..model.flatbuffer import ModelSource, load_model_bytes, read_flat_model
from ..model.metadata import read_metadata
from ..model.preprocess import Preprocess, load_image
from ..model.preprocess_choice import PreprocessChoice, as_choice
from ..results.report_json import JsonResult
from ..run.images import list_image_folder
from ..run.runtime import Runtime, resolve_runtime
from .eval_options import EvalKeywords, EvalOptions
from .masks import (
    IgnoreLike,
    LabelMapLike,
    counted_pixels,
    load_label_map,
    parse_ignore,
    read_image_list,
    read_mask,
)
from .task_inputs import sample_indices
from .task_loop import progress_callback, run_samples

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ClassIoU", "SegmentationResult", "class_map", "confusion_matrix", "evaluate_segmentation",
           "format_segmentation", "mask_for", "resize_nearest", "segmentation_scores"]

MASK_SUFFIXES = (".png", ".bmp")
_NEAREST = getattr(Image, "Resampling", Image).NEAREST  # Pillow < 9.1 has no Resampling


def class_map(output: np.ndarray) -> np.ndarray:
    """A ``[H, W]`` class map from an output: scores ``[1, H, W, C]`` (arg-max, last axis) or classes ``[1, H, W(, 1)]``."""
    o = np.asarray(output)
    if o.ndim == 4 and o.shape[-1] > 1:
        return o[0].argmax(axis=-1)
    if o.ndim == 4 and o.shape[-1] == 1:
        return np.rint(o[0, ..., 0]).astype(np.int64)
    if o.ndim == 3:
        return np.rint(o[0]).astype(np.int64)
    raise DataError(f"a segmenter's output is [1, H, W, C] scores or a [1, H, W] class map; this one is "
                    f"{tuple(o.shape)}", argument="model", fix="evaluate it with --task fidelity instead")


def resize_nearest(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``pred`` ``[h, w]`` at ``shape`` ``(H, W)`` by Pillow's nearest-neighbour (where a pixel centre falls on
    a boundary between two source pixels, Pillow's rounding decides, so host and board agree)."""
    p = np.asarray(pred)
    if p.shape == tuple(shape):
        return p
    img = Image.fromarray(p.astype(np.int32))  # mode "I"
    return np.asarray(img.resize((shape[1], shape[0]), _NEAREST), np.int64)


def confusion_matrix(pred: np.ndarray, mask: np.ndarray, classes: int, ignore_index: IgnoreLike = 255) -> np.ndarray:
    """``[classes, classes]`` pixel counts, rows the mask's class, columns the predicted; pixels of the ignored
    values (one, several or a range: :func:`edgeq_device.tasks.masks.parse_ignore`) left out."""
    m = np.asarray(mask, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    keep = counted_pixels(m, parse_ignore(ignore_index))
    m, p = m[keep], p[keep]
    return np.bincount(m * classes + p, minlength=classes * classes).reshape(classes, classes)


def segmentation_scores(confusion: np.ndarray) -> tuple[list[float | None], float, float]:
    """``(IoU per class, mIoU, pixel accuracy)``: IoU = TP / (TP + FP + FN), None where that is 0; mIoU their mean."""
    cm = np.asarray(confusion, np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    ious: list[float | None] = [float(t / u) if u > 0 else None for t, u in zip(tp, union)]
    present = [v for v in ious if v is not None]
    total = cm.sum()
    return ious, float(np.mean(present)) if present else 0.0, float(tp.sum() / total) if total else 0.0


@dataclass(frozen=True)
class ClassIoU:
    """One class: its IoU (None where it is neither in the masks nor predicted) and its pixels in the masks."""

    name: str
    iou: float | None
    pixels: int


@dataclass(frozen=True)
class SegmentationResult(JsonResult):
    """What ``edgeq-device eval --task segmentation`` measured."""

    KIND = "segmentation"

    model: str | None
    model_sha256: str
    mode: str | None
    data: str
    masks: str
    images: int
    classes: int
    #: the highest ignored mask value (None: none); all of them are in ``ignore``
    ignore_index: int | None
    miou: float
    pixel_accuracy: float
    per_class: tuple[ClassIoU, ...]
    confusion: tuple[tuple[int, ...], ...]
    seconds: float
    images_per_second: float
    workers: int
    runtime: str
    runtime_version: str
    delegate: str | None
    preprocess: Preprocess
    board: BoardInfo
    started: str
    edgeq_device_version: str
    limit: int | None = None
    seed: int = 0
    #: every mask value that counts nowhere
    ignore: tuple[int, ...] = ()
    #: the mapping applied to the masks' values (``"cityscapes"`` or its file), None if none
    label_map: str | None = None
    #: one line: the preprocessing used and where each part came from (see :mod:`edgeq_device.model.preprocess_choice`)
    preprocessing: str = ""
    #: where each part came from: ``size``, ``color``, ``normalization`` -> flag, edgeq metadata, TFLite metadata, input, ...
    preprocess_sources: dict[str, str] | None = None

    def __str__(self) -> str:
        """The text ``edgeq-device eval`` prints (:func:`format_segmentation`)."""
        return format_segmentation(self)


def format_segmentation(r: SegmentationResult, max_classes: int = 30) -> str:
    """mIoU, pixel accuracy and the IoU of each class present."""
    lines = [f"model      {r.model or '<bytes>'}" + (f" ({r.mode})" if r.mode else ""),
             f"data       {r.data}: {r.images} images, masks {r.masks}"
             + (f" mapped by {r.label_map}" if r.label_map else "")
             + (f", ignoring {_ranges(r.ignore)}" if r.ignore else ""),
             f"runtime    {r.runtime} {r.runtime_version}" + (f", {r.delegate}" if r.delegate else "")
             + f", {r.workers} workers, {r.images_per_second:.1f} images/s",
             *([f"preprocessing  {r.preprocessing}"] if r.preprocessing else []),
             f"mIoU       {r.miou:.4f}  (mean over the {sum(c.iou is not None for c in r.per_class)} classes "
             f"in masks or predictions)",
             f"pixel acc  {r.pixel_accuracy:.4f}", "IoU per class"]
    shown = [c for c in r.per_class if c.iou is not None]
    width = max([5] + [len(c.name) for c in shown[:max_classes]])
    lines += [f"  {c.name:<{width}}  {c.iou:.4f}  ({c.pixels} pixels)" for c in shown[:max_classes]]
    if len(shown) > max_classes:
        lines.append(f"  ... {len(shown) - max_classes} more (see --json)")
    return "\n".join(lines)


def _ranges(values: Sequence[int]) -> str:
    """``(250, 251, 252, 255)`` -> ``"250-252,255"``."""
    out: list[str] = []
    for v in sorted(values):
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ",".join(out)


def mask_for(image: Path, masks: Path, label_ids: bool = False) -> Path:
    """The mask of ``image`` in ``masks`` (same stem, ``.png`` or ``.bmp``); DataError naming ``masks`` if none.

    A Cityscapes image ``X_leftImg8bit.png`` also finds ``X_gtFine_labelTrainIds.png`` or
    ``X_gtFine_labelIds.png`` (then ``gtCoarse``), label IDs first when ``label_ids`` (they are
    mapped: ``--label-map cityscapes``), train IDs first otherwise.
    """
    stems = [image.stem]
    if image.stem.endswith("_leftImg8bit"):
        base = image.stem[: -len("_leftImg8bit")]
        kinds = ("labelIds", "labelTrainIds") if label_ids else ("labelTrainIds", "labelIds")
        stems += [f"{base}_{gt}_{kind}" for gt in ("gtFine", "gtCoarse") for kind in kinds]
    for stem in stems:
        for suffix in MASK_SUFFIXES:
            for cand in (masks / (stem + suffix), masks / (stem + suffix.upper())):
                if cand.is_file():
                    return cand
    raise DataError(f"no mask for image {image.name}", argument="masks", received=str(masks),
                    fix=f"give a class-index PNG or BMP named {image.stem}.png for every image")


def evaluate_segmentation(
    model: ModelSource,
    data: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    *,
    ignore_index: IgnoreLike = 255,
    label_map: LabelMapLike = None,
    image_list: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Preprocess | PreprocessChoice | None = None,
    options: EvalOptions | None = None,
    **keywords: Unpack[EvalKeywords],
) -> SegmentationResult:
    """mIoU, IoU per class and pixel accuracy of a segmenter on DATA's images against MASKS.

    Args:
        data: a folder of images; ``masks``: a folder of class-index PNG/BMP, one per image,
            named like it (``a.jpg`` → ``a.png``), each the size of its image.
        ignore_index: mask values that count nowhere: one, several or a range (``"250-255"``);
            None: every value counts.
        label_map: applied to every mask's values first: ``"cityscapes"`` (label IDs -> train
            IDs), a JSON/CSV file or a dict (see :mod:`edgeq_device.tasks.masks`).
        image_list: a file naming the images of ``data`` to evaluate, one a line (Pascal VOC's
            ``ImageSets/Segmentation/val.txt`` beside ``JPEGImages``); default: every image.
        num_classes: classes of a class-map output (default: the number of ``class_names``,
            the model's labels, or the label map's classes; for score outputs, the last axis).
        class_names: names of the classes (default: the model's labels, the label map's
            class names, else their numbers).
        options, keywords: the evaluation keywords (``limit``, ``seed``, ``workers``, ``runtime``,
            ``threads``, ``xnnpack``, ``delegate``, ``delegate_options``, ``progress``), as keywords or one
            :class:`~edgeq_device.tasks.eval_options.EvalOptions` (see :mod:`edgeq_device.tasks.eval_options`).

    Raises:
        DataError: a missing mask, a mask of another size than its image, mask classes beyond
            the model's classes, an output that is not a class map or scores.
        LabelMismatchError: ``class_names`` that do not number the model's classes.
    """
    opts = EvalOptions.of(options, **keywords)
    limit, seed = opts.limit, opts.seed
    progress, runtime, delegate = opts.progress, opts.runtime, opts.delegate
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_bytes = load_model_bytes(model)
    flat = read_flat_model(model_bytes)
    meta = read_metadata(model_bytes)
    out_t = flat.main.tensors[flat.io_order("outputs")[0]]
    shape = tuple(int(d) for d in out_t.shape)
    ignore = parse_ignore(ignore_index)
    mapping = load_label_map(label_map)
    labels = tuple(class_names) if class_names else (meta.labels if meta is not None and meta.labels else None) \
        or (mapping.class_names if mapping is not None else None)  # a class map's count, else names if they fit
    if len(shape) == 4 and shape[-1] > 1:
        classes = shape[-1]
    elif num_classes is not None or labels:
        classes = int(num_classes) if num_classes is not None else len(labels or ())
    else:
        raise DataError(f"the output {shape} is a class map and the model carries no labels, so the number "
                        "of classes is unknown", argument="num_classes",
                        fix="give --num-classes N (num_classes=N) or --labels FILE (class_names=)")
    if class_names and len(class_names) != classes:
        raise LabelMismatchError(f"{len(class_names)} class names for a model with {classes} classes",
                                 argument="labels", received=len(class_names),
                                 fix=f"give {classes} names, one a line in class order")
    names = list(labels) if labels and len(labels) == classes else [str(c) for c in range(classes)]
    root, mask_dir = Path(os.fspath(data)), Path(os.fspath(masks))
    if not mask_dir.is_dir():
        raise DataError("no such folder", argument="masks", received=str(mask_dir),
                        fix="give the folder of class-index masks")
    listing = list_image_folder(root)
    chosen = list(listing.paths)
    if image_list is not None:
        wanted = read_image_list(image_list)
        by_stem = {p.stem: p for p in chosen}
        missing = [n for n in wanted if n not in by_stem]
        if missing:
            raise DataError(f"{len(missing)} listed image(s) not in {root}, the first {missing[0]!r}",
                            argument="image_list", received=str(image_list),
                            fix="give the folder of the listed images as DATA (VOC's JPEGImages)")
        chosen = [by_stem[n] for n in dict.fromkeys(wanted)]
    idx = sample_indices(len(chosen), limit, seed)
    paths = [chosen[int(i)] for i in idx]
    cityscapes = mapping is not None and mapping.name == "cityscapes"
    mask_paths = [mask_for(p, mask_dir, cityscapes) for p in paths]  # every mask exists before any work
    choice = as_choice(model_bytes, preprocess)
    pre = choice.preprocess
    cm = np.zeros((classes, classes), np.int64)
    lock = threading.Lock()

    def load(i: int) -> list[np.ndarray]:
        return [load_image(paths[i], pre)[None]]

    def reduce(i: int, outs: list[np.ndarray]) -> None:
        mask = read_mask(mask_paths[i], mapping)
        with Image.open(paths[i]) as im:
            size = im.size
        if mask.shape != (size[1], size[0]):
            raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]}, its image {paths[i].name} "
                            f"{size[0]}x{size[1]}", argument="masks", received=str(mask_paths[i]),
                            fix="give each mask the size of its image")
        counted = mask[counted_pixels(mask, ignore)]
        if counted.size and (counted.min() < 0 or counted.max() >= classes):
            bad = int(counted.max()) if counted.max() >= classes else int(counted.min())
            raise DataError(f"mask holds class {bad}, the model has {classes} classes "
                            f"(0..{classes - 1})", argument="masks", received=str(mask_paths[i]),
                            fix=f"give masks of classes 0..{classes - 1}: map label IDs to classes "
                                "(--label-map cityscapes or FILE) or ignore the value (--ignore-index, "
                                f"now {_ranges(ignore) or 'none'})")
        pred = resize_nearest(class_map(outs[0]), mask.shape)
        if pred.size and (pred.min() < 0 or pred.max() >= classes):
            raise DataError(f"the model predicts class {int(pred.max())}, beyond its {classes} classes",
                            argument="num_classes", received=classes, fix="give the model's number of classes")
        counts = confusion_matrix(pred, mask, classes, ignore)
        with lock:
            cm[...] += counts

    rt = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
    t0 = time.perf_counter()
    with progress_callback(progress, len(paths), "segmenting") as callback:
        n_workers = run_samples(model_bytes, len(paths), load, reduce,
                                replace(opts, runtime=rt), progress=callback)
    seconds = time.perf_counter() - t0
    ious, miou, acc = segmentation_scores(cm)
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    return SegmentationResult(
        model=path, model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        mode=meta.mode if meta is not None else None, data=str(root), masks=str(mask_dir), images=len(paths),
        classes=classes, ignore_index=ignore[-1] if ignore else None, miou=miou, pixel_accuracy=acc,
        per_class=tuple(ClassIoU(n, v, int(cm[c].sum())) for c, (n, v) in enumerate(zip(names, ious))),
        confusion=tuple(tuple(int(v) for v in row) for row in cm), seconds=seconds,
        images_per_second=len(paths) / seconds if seconds > 0 else 0.0, workers=n_workers, runtime=rt.name,
        runtime_version=rt.version, delegate=delegate, preprocess=pre, preprocessing=choice.summary,
        preprocess_sources=dict(choice.sources), board=board_info(), started=started,
        edgeq_device_version=__version__, limit=limit, seed=seed, ignore=ignore,
        label_map=None if mapping is None else mapping.name)
