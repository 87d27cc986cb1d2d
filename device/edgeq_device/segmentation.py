"""Semantic segmentation accuracy: a confusion matrix over every pixel, IoU per class, mIoU, pixel accuracy.

:func:`confusion_matrix`, :func:`class_map` and :func:`segmentation_scores` work on
raw arrays (the host reuses them); :func:`evaluate_segmentation` runs a folder of
images through the pooled task loop against a folder of class-index masks
(PNG/BMP, named like the images). A prediction is resized to its mask with
nearest-neighbour; pixels of ``ignore_index`` count nowhere.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image

from ._version import __version__
from .errors import DataError
from .flatbuffer import ModelSource, load_model_bytes, read_flat_model
from .images import list_image_folder
from .inference_pool import ProgressCallback
from .metadata import read_metadata
from .preprocess import Preprocess, load_image
from .preprocess_choice import PreprocessChoice, as_choice
from .report_json import JsonResult
from .runtime import Runtime, resolve_runtime
from .sysinfo import BoardInfo, board_info
from .task_inputs import sample_indices
from .task_loop import progress_callback, run_samples

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


def confusion_matrix(pred: np.ndarray, mask: np.ndarray, classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """``[classes, classes]`` pixel counts, rows the mask's class, columns the predicted; ignored pixels left out."""
    m = np.asarray(mask, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    keep = m != ignore_index if ignore_index is not None else np.ones(m.shape, bool)
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
    #: one line: the preprocessing used and where each part came from (see :mod:`edgeq_device.preprocess_choice`)
    preprocessing: str = ""
    #: where each part came from: ``size``, ``color``, ``normalization`` -> flag, edgeq metadata, TFLite metadata, input, ...
    preprocess_sources: dict[str, str] | None = None

    def __str__(self) -> str:
        """The text ``edgeq-device eval`` prints (:func:`format_segmentation`)."""
        return format_segmentation(self)


def format_segmentation(r: SegmentationResult, max_classes: int = 30) -> str:
    """mIoU, pixel accuracy and the IoU of each class present."""
    lines = [f"model      {r.model or '<bytes>'}" + (f" ({r.mode})" if r.mode else ""),
             f"data       {r.data}: {r.images} images, masks {r.masks}",
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


def mask_for(image: Path, masks: Path) -> Path:
    """The mask of ``image`` in ``masks`` (same stem, ``.png`` or ``.bmp``); DataError naming ``masks`` if none."""
    for suffix in MASK_SUFFIXES:
        for cand in (masks / (image.stem + suffix), masks / (image.stem + suffix.upper())):
            if cand.is_file():
                return cand
    raise DataError(f"no mask for image {image.name}", argument="masks", received=str(masks),
                    fix=f"give a class-index PNG or BMP named {image.stem}.png for every image")


def _read_mask(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"a mask holds one class index per pixel; this one is {im.mode}", argument="masks",
                                received=str(path), fix="save masks as 8-bit single-channel (L or P) images")
            return np.asarray(im, np.int64)
    except OSError as exc:
        raise DataError("cannot read mask", argument="masks", received=str(path),
                        fix="give PNG or BMP class-index images") from exc


def evaluate_segmentation(
    model: ModelSource,
    data: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    *,
    ignore_index: int | None = 255,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Preprocess | PreprocessChoice | None = None,
    limit: int | None = None,
    seed: int = 0,
    workers: int | None = None,
    runtime: Runtime | str | None = None,
    threads: int | None = None,
    xnnpack: bool = True,
    delegate: str | None = None,
    delegate_options: Mapping[str, str] | None = None,
    progress: bool | ProgressCallback = False,
) -> SegmentationResult:
    """mIoU, IoU per class and pixel accuracy of a segmenter on DATA's images against MASKS.

    Args:
        data: a folder of images; ``masks``: a folder of class-index PNG/BMP, one per image,
            named like it (``a.jpg`` → ``a.png``), each the size of its image.
        ignore_index: mask value that counts nowhere (None: every value counts).
        num_classes: classes of a class-map output (default: the model's labels; for score
            outputs, the last axis).
        class_names: names of the classes (default: the model's labels, else their numbers).

    Raises:
        DataError: a missing mask, a mask of another size than its image, mask classes beyond
            the model's classes, an output that is not a class map or scores.
    """
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_bytes = load_model_bytes(model)
    flat = read_flat_model(model_bytes)
    meta = read_metadata(model_bytes)
    out_t = flat.main.tensors[flat.io_order("outputs")[0]]
    shape = tuple(int(d) for d in out_t.shape)
    labels = tuple(class_names) if class_names else (meta.labels if meta is not None and meta.labels else None)
    if len(shape) == 4 and shape[-1] > 1:
        classes = shape[-1]
    elif num_classes is not None or labels:
        classes = int(num_classes) if num_classes is not None else len(labels or ())
    else:
        raise DataError(f"the output {shape} is a class map and the model carries no labels, so the number "
                        "of classes is unknown", argument="num_classes",
                        fix="give --num-classes N (num_classes=N)")
    names = list(labels) if labels and len(labels) == classes else [str(c) for c in range(classes)]
    root, mask_dir = Path(os.fspath(data)), Path(os.fspath(masks))
    if not mask_dir.is_dir():
        raise DataError("no such folder", argument="masks", received=str(mask_dir),
                        fix="give the folder of class-index masks")
    listing = list_image_folder(root)
    idx = sample_indices(len(listing.paths), limit, seed)
    paths = [listing.paths[int(i)] for i in idx]
    mask_paths = [mask_for(p, mask_dir) for p in paths]  # every mask exists before any work
    choice = as_choice(model_bytes, preprocess)
    pre = choice.preprocess
    cm = np.zeros((classes, classes), np.int64)
    lock = threading.Lock()

    def load(i: int) -> list[np.ndarray]:
        return [load_image(paths[i], pre)[None]]

    def reduce(i: int, outs: list[np.ndarray]) -> None:
        mask = _read_mask(mask_paths[i])
        with Image.open(paths[i]) as im:
            size = im.size
        if mask.shape != (size[1], size[0]):
            raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]}, its image {paths[i].name} "
                            f"{size[0]}x{size[1]}", argument="masks", received=str(mask_paths[i]),
                            fix="give each mask the size of its image")
        counted = mask[mask != ignore_index] if ignore_index is not None else mask
        if counted.size and (counted.min() < 0 or counted.max() >= classes):
            raise DataError(f"mask holds class {int(counted.max())}, the model has {classes} classes "
                            f"(0..{classes - 1})", argument="masks", received=str(mask_paths[i]),
                            fix=f"give masks of classes 0..{classes - 1}, or mark unlabeled pixels "
                                f"{ignore_index if ignore_index is not None else 255} (--ignore-index)")
        pred = resize_nearest(class_map(outs[0]), mask.shape)
        if pred.size and (pred.min() < 0 or pred.max() >= classes):
            raise DataError(f"the model predicts class {int(pred.max())}, beyond its {classes} classes",
                            argument="num_classes", received=classes, fix="give the model's number of classes")
        counts = confusion_matrix(pred, mask, classes, ignore_index)
        with lock:
            cm[...] += counts

    rt = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
    t0 = time.perf_counter()
    with progress_callback(progress, len(paths), "segmenting") as callback:
        n_workers = run_samples(model_bytes, len(paths), load, reduce, workers=workers, runtime=rt,
                                threads=threads, xnnpack=xnnpack, delegate=delegate,
                                delegate_options=delegate_options, progress=callback)
    seconds = time.perf_counter() - t0
    ious, miou, acc = segmentation_scores(cm)
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    return SegmentationResult(
        model=path, model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        mode=meta.mode if meta is not None else None, data=str(root), masks=str(mask_dir), images=len(paths),
        classes=classes, ignore_index=ignore_index, miou=miou, pixel_accuracy=acc,
        per_class=tuple(ClassIoU(n, v, int(cm[c].sum())) for c, (n, v) in enumerate(zip(names, ious))),
        confusion=tuple(tuple(int(v) for v in row) for row in cm), seconds=seconds,
        images_per_second=len(paths) / seconds if seconds > 0 else 0.0, workers=n_workers, runtime=rt.name,
        runtime_version=rt.version, delegate=delegate, preprocess=pre, preprocessing=choice.summary,
        preprocess_sources=dict(choice.sources), board=board_info(), started=started,
        edgeq_device_version=__version__, limit=limit, seed=seed)
