"""``edgeq-device eval --task detection``: a detector on a folder of images against COCO annotations.

:func:`evaluate_detection` reads ``instances.json`` (images matched to DATA's files
by ``file_name``), runs every image through the pooled task loop, turns the
outputs into COCO results (:func:`edgeq_device.tasks.detection.coco_detections`) and
scores them with pycocotools. Every check on the annotations, the images and
the categories runs before any result is written.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from PIL import Image

from .._version import __version__
from ..errors import DataError
from ..measure.sysinfo import BoardInfo, board_info
from ..model.flatbuffer import ModelSource, load_model_bytes, read_flat_model
from ..model.metadata import read_metadata
from ..model.preprocess import Preprocess, load_image
from ..model.preprocess_choice import PreprocessChoice, as_choice
from ..results.fileio import atomic_write_text, check_writable
from ..results.report_json import JsonResult, dumps_json
from ..run.images import IMAGE_SUFFIXES
from ..run.runtime import Runtime, resolve_runtime
from .detection import check_categories, coco_detections, coco_scores, identify_outputs, require_pycocotools
from .eval_options import EvalKeywords, EvalOptions
from .task_inputs import sample_indices
from .task_loop import output_keys, progress_callback, run_samples

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ClassAP", "DetectionResult", "evaluate_detection", "format_detection", "match_images", "read_coco"]


@dataclass(frozen=True)
class ClassAP:
    """One category: its id, name, ground-truth boxes and AP (None where it has no box)."""

    category_id: int
    name: str
    instances: int
    ap: float | None
    ap50: float | None


@dataclass(frozen=True)
class DetectionResult(JsonResult):
    """What ``edgeq-device eval --task detection`` measured (COCO bbox metrics by pycocotools)."""

    KIND = "detection"

    model: str | None
    model_sha256: str
    mode: str | None
    data: str
    annotations: str
    images: int
    detections: int
    map: float
    map50: float
    per_class: tuple[ClassAP, ...]
    class_offset: int
    outputs: dict[str, str]
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
    predictions: str | None = None
    limit: int | None = None
    seed: int = 0
    #: one line: the preprocessing used and where each part came from (see :mod:`edgeq_device.model.preprocess_choice`)
    preprocessing: str = ""
    #: where each part came from: ``size``, ``color``, ``normalization`` -> flag, edgeq metadata, TFLite metadata, input, ...
    preprocess_sources: dict[str, str] | None = None

    def __str__(self) -> str:
        """The text ``edgeq-device eval`` prints (:func:`format_detection`)."""
        return format_detection(self)


def format_detection(r: DetectionResult, max_classes: int = 30) -> str:
    """mAP, mAP@.5 and the AP of each category with boxes."""
    lines = [f"model      {r.model or '<bytes>'}" + (f" ({r.mode})" if r.mode else ""),
             f"data       {r.data}: {r.images} images, annotations {r.annotations}",
             "outputs    " + ", ".join(f"{k}={v}" for k, v in r.outputs.items())
             + f"; category id = class + {r.class_offset}",
             f"runtime    {r.runtime} {r.runtime_version}" + (f", {r.delegate}" if r.delegate else "")
             + f", {r.workers} workers, {r.images_per_second:.1f} images/s",
             *([f"preprocessing  {r.preprocessing}"] if r.preprocessing else []),
             f"detections {r.detections}" + (f" (COCO results in {r.predictions})" if r.predictions else ""),
             f"mAP        {r.map:.4f}  (IoU .50:.95)", f"mAP@.5     {r.map50:.4f}", "AP per class"]
    shown = [c for c in r.per_class if c.ap is not None][:max_classes]
    width = max([4] + [len(c.name) for c in shown])
    lines += [f"  {c.name:<{width}}  {c.ap:.4f}  AP@.5 {c.ap50 or 0.0:.4f}  ({c.instances} boxes)" for c in shown]
    return "\n".join(lines)


def read_coco(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A COCO ``instances.json`` with its ``images``, ``annotations`` and ``categories``."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read COCO annotations: {exc}", argument="annotations", received=str(p),
                        fix="give a COCO instances.json") from exc
    if not isinstance(d, dict) or not all(isinstance(d.get(k), list) for k in ("images", "annotations",
                                                                                  "categories")):
        raise DataError("not COCO annotations: needs lists 'images', 'annotations' and 'categories'",
                        argument="annotations", received=str(p), fix="give a COCO instances.json")
    return d


def match_images(coco: Mapping[str, Any], root: Path, annotations: str, *, data: str = "DATA",
                 data_argument: str = "data") -> list[tuple[int, Path]]:
    """``(image id, file)`` for every annotated image; refuse missing files and unannotated images.

    ``data`` names the image folder in the messages (``DATA`` here, ``--eval`` for ``edgeq compare``)
    and ``data_argument`` is the argument a :class:`DataError` about it names.
    """
    files = {p.name: p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    rel = {str(p.relative_to(root)): p for p in files.values()}
    pairs, missing = [], []
    for im in coco["images"]:
        name = str(im.get("file_name", ""))
        p = rel.get(name) or files.get(Path(name).name)
        if p is None:
            missing.append(name)
        else:
            pairs.append((int(im["id"]), p))
    if missing:
        raise DataError(f"the annotations name {len(missing)} image(s) not in {data}, e.g. {missing[0]!r}",
                        argument="annotations", received=annotations,
                        fix=f"put every annotated image in {data}, or give the annotations of these images")
    used = {p for _, p in pairs}
    extra = sorted(str(p.relative_to(root)) for p in files.values() if p not in used)
    if extra:
        raise DataError(f"{len(extra)} image(s) in {data} have no entry in the annotations, e.g. {extra[0]!r}",
                        argument=data_argument, received=str(root),
                        fix=f"remove them from {data} or add them to the annotations' images")
    return pairs


def evaluate_detection(
    model: ModelSource,
    data: str | os.PathLike[str],
    annotations: str | os.PathLike[str],
    *,
    outputs: Mapping[str, str] | None = None,
    class_offset: int = 1,
    num_classes: int | None = None,
    predictions: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    preprocess: Preprocess | PreprocessChoice | None = None,
    options: EvalOptions | None = None,
    **keywords: Unpack[EvalKeywords],
) -> DetectionResult:
    """COCO mAP@[.5:.95], mAP@.5 and AP per category of a detector on DATA's images.

    Args:
        data: the folder of images; ``annotations``: COCO ``instances.json`` naming them by ``file_name``.
        outputs: which output is ``boxes``, ``classes``, ``scores``, ``count`` (default: found, see
            :func:`edgeq_device.tasks.detection.identify_outputs`).
        class_offset: category id = model class + this (model class 0 = category 1 by default).
        num_classes: classes the model emits (default: its labels), to refuse categories it never emits.
        predictions: also write the COCO results JSON here (refused if it exists, unless ``overwrite``).
        options, keywords: the evaluation keywords (``limit``, ``seed``, ``workers``, ``runtime``,
            ``threads``, ``xnnpack``, ``delegate``, ``delegate_options``, ``progress``), as keywords or one
            :class:`~edgeq_device.tasks.eval_options.EvalOptions` (see :mod:`edgeq_device.tasks.eval_options`).

    Raises:
        DataError: annotated images missing from DATA, images without annotations, categories the
            model cannot emit, outputs that cannot be identified.
        RuntimeNotFoundError: pycocotools is not installed (``edgeq-device[detection]``).
    """
    opts = EvalOptions.of(options, **keywords)
    limit, seed = opts.limit, opts.seed
    progress, runtime, delegate = opts.progress, opts.runtime, opts.delegate
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    model_bytes = load_model_bytes(model)
    flat = read_flat_model(model_bytes)
    meta = read_metadata(model_bytes)
    require_pycocotools()  # before any work
    roles = identify_outputs(flat, outputs)
    if predictions is not None:
        check_writable(predictions, overwrite, argument="predictions")
    root = Path(os.fspath(data))
    if not root.is_dir():
        raise DataError("no such folder", argument="data", received=str(root), fix="give the folder of images")
    coco = read_coco(annotations)
    categories = {int(c["id"]): str(c.get("name", c["id"])) for c in coco["categories"]}
    n_classes = num_classes if num_classes is not None else (len(meta.labels) if meta and meta.labels else None)
    if n_classes is not None:
        never = sorted(c for c in categories if not 0 <= c - class_offset < n_classes)
        if never:
            raise DataError(f"categories {never[:8]} are beyond the model's {n_classes} classes (category id = "
                            f"class + {class_offset})", argument="annotations", received=str(annotations),
                            fix="check --class-offset, or evaluate on annotations of the model's classes")
    pairs = match_images(coco, root, str(annotations))
    idx = sample_indices(len(pairs), limit, seed)
    chosen = [pairs[int(i)] for i in idx]
    sizes = {int(im["id"]): (im.get("width"), im.get("height")) for im in coco["images"]}
    choice = as_choice(model_bytes, preprocess)
    pre = choice.preprocess
    per_image: list[list[dict[str, Any]]] = [[] for _ in chosen]

    def load(i: int) -> list[Any]:
        return [load_image(chosen[i][1], pre)[None]]

    def reduce(i: int, outs: list[Any]) -> None:
        image_id, path = chosen[i]
        w, h = sizes[image_id]
        if not w or not h:
            with Image.open(path) as im:
                w, h = im.size
        per_image[i] = coco_detections(image_id, outs, roles, int(w), int(h), class_offset)

    rt = runtime if isinstance(runtime, Runtime) else resolve_runtime(runtime)
    t0 = time.perf_counter()
    with progress_callback(progress, len(chosen), "detecting") as callback:
        n_workers = run_samples(model_bytes, len(chosen), load, reduce,
                                replace(opts, runtime=rt), progress=callback)
    seconds = time.perf_counter() - t0
    results = [d for dets in per_image for d in dets]
    check_categories({d["category_id"] for d in results}, categories, class_offset)
    ids = {image_id for image_id, _ in chosen}
    gt = {"images": [im for im in coco["images"] if int(im["id"]) in ids],
          "annotations": [dict(a) for a in coco["annotations"] if int(a["image_id"]) in ids],
          "categories": coco["categories"]}
    m, m50, per_class = coco_scores(gt, results)
    if predictions is not None:
        atomic_write_text(predictions, dumps_json(results) + "\n", overwrite=overwrite, argument="predictions")
    counts = {c: 0 for c in categories}
    for a in gt["annotations"]:
        counts[int(a["category_id"])] = counts.get(int(a["category_id"]), 0) + 1
    keys = output_keys(flat)
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    return DetectionResult(
        model=path, model_sha256=hashlib.sha256(model_bytes).hexdigest(),
        mode=meta.mode if meta is not None else None, data=str(root), annotations=str(annotations),
        images=len(chosen), detections=len(results), map=m, map50=m50,
        per_class=tuple(ClassAP(c, categories[c], counts.get(c, 0), *per_class.get(c, (None, None)))
                        for c in sorted(categories)),
        class_offset=class_offset, outputs={role: keys[pos] for role, pos in roles.items()}, seconds=seconds,
        images_per_second=len(chosen) / seconds if seconds > 0 else 0.0, workers=n_workers, runtime=rt.name,
        runtime_version=rt.version, delegate=delegate, preprocess=pre, preprocessing=choice.summary,
        preprocess_sources=dict(choice.sources), board=board_info(), started=started,
        edgeq_device_version=__version__, predictions=None if predictions is None else str(predictions),
        limit=limit, seed=seed)
