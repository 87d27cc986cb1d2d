"""Task accuracy on the host: detection mAP and segmentation mIoU of the Keras model and of each ``.tflite``.

The converted models are evaluated by ``edgeq_device``'s one evaluation loop
(:func:`edgeq_device.tasks.registry.evaluate_task`: the same pool and progress bar as on a
board). The Keras model runs on the very images the loop reads (preprocessed by
``edgeq_device``, in the same order and seeded subset), and its outputs go to the
same metric functions (:func:`edgeq_device.tasks.detection.coco_detections` and
:func:`~edgeq_device.tasks.detection.coco_scores`;
:func:`edgeq_device.tasks.segmentation.class_map`, :func:`~edgeq_device.tasks.segmentation.confusion_matrix`
and :func:`~edgeq_device.tasks.segmentation.segmentation_scores`), so the Keras row and a
mode's row mean the same thing. :func:`precision_recall` gives the curve at IoU .5
from pycocotools' own precision array, for the report's plot.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from edgeq_device.model.preprocess import Preprocess, load_image
from edgeq_device.results.report_json import loads_json
from edgeq_device.run.images import list_image_folder
from edgeq_device.tasks.detection import (
    OUTPUT_ROLES,
    check_categories,
    coco_detections,
    coco_scores,
    require_pycocotools,
)
from edgeq_device.tasks.detection_eval import DetectionResult, match_images, read_coco
from edgeq_device.tasks.eval_options import EvalOptions
from edgeq_device.tasks.masks import (
    IgnoreLike,
    LabelMap,
    LabelMapLike,
    counted_pixels,
    load_label_map,
    parse_ignore,
    read_mask,
)
from edgeq_device.tasks.registry import evaluate_task
from edgeq_device.tasks.segmentation import (
    SegmentationResult,
    class_map,
    confusion_matrix,
    mask_for,
    resize_nearest,
    segmentation_scores,
)
from edgeq_device.tasks.task_inputs import sample_indices
from PIL import Image

from edgeq.errors import DataError, InvalidArgumentError, LabelMismatchError
from edgeq.progress import task_progress

__all__ = ["IMAGE_TASKS", "TaskData", "TaskScore", "keras_task_score", "load_task_data", "precision_recall",
           "task_roles", "tflite_task_score"]

#: The tasks :func:`edgeq.compare` scores beside classification, with their two figures.
IMAGE_TASKS: dict[str, tuple[str, str]] = {"detection": ("map", "map50"),
                                           "segmentation": ("miou", "pixel_accuracy")}


@dataclass(frozen=True)
class TaskData:
    """The evaluation images of a task in the loop's order (after the seeded subset), and their truth."""

    task: str
    data: Path
    paths: tuple[Path, ...]
    x: np.ndarray
    limit: int | None
    seed: int
    annotations: Path | None = None
    coco: dict[str, Any] | None = field(default=None, repr=False)
    image_ids: tuple[int, ...] = ()
    sizes: tuple[tuple[int, int], ...] = ()
    masks: Path | None = None
    mask_paths: tuple[Path, ...] = ()
    #: applied to the masks' values before they are counted (segmentation)
    label_map: LabelMap | None = None

    def ground_truth(self) -> dict[str, Any]:
        """The COCO ground truth of the chosen images (detection)."""
        assert self.coco is not None
        ids = set(self.image_ids)
        return {"images": [im for im in self.coco["images"] if int(im["id"]) in ids],
                "annotations": [dict(a) for a in self.coco["annotations"] if int(a["image_id"]) in ids],
                "categories": self.coco["categories"]}


@dataclass(frozen=True)
class TaskScore:
    """One model's task figures: ``metrics`` (``map``/``map50`` or ``miou``/``pixel_accuracy``, fractions)
    and what the report plots (``curve``: precision at 101 recall points at IoU .5; ``per_class``:
    name → AP or IoU)."""

    metrics: dict[str, float]
    per_class: dict[str, float | None]
    curve: list[float | None] | None = None
    seconds: float | None = None


def _read_mask(path: Path, image: Path, label_map: LabelMap | None) -> np.ndarray:
    mask = read_mask(path, label_map)
    try:
        with Image.open(image) as im:
            w, h = im.size
    except OSError as exc:
        raise DataError(f"cannot read the mask's image: {exc}", argument="evaluation", received=str(image),
                        fix="give readable images") from exc
    if mask.shape != (h, w):
        raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]}, its image {image.name} {w}x{h}",
                        argument="masks", received=str(path), fix="give each mask the size of its image")
    return mask


def load_task_data(task: str, evaluation: str | os.PathLike[str], preprocess: Preprocess | None, *,
                   annotations: str | os.PathLike[str] | None = None,
                   masks: str | os.PathLike[str] | None = None, limit: int | None = None,
                   seed: int = 0, label_map: LabelMapLike = None) -> TaskData:
    """Read and check a task's evaluation images and truth before any model runs.

    ``label_map`` (segmentation) maps the masks' values to classes: ``"cityscapes"``, a JSON/CSV
    file or a dict (:func:`edgeq_device.tasks.masks.load_label_map`).

    Raises:
        InvalidArgumentError: a task without its truth (``annotations``/``masks``), a model
            without an image input.
        DataError: annotated images missing from the folder, images without annotations or
            masks, masks of another size than their image.
    """
    if task not in IMAGE_TASKS:
        raise InvalidArgumentError("unknown task", argument="task", received=task,
                                   fix=f"give classification, {' or '.join(IMAGE_TASKS)}")
    need, given = ("annotations", annotations) if task == "detection" else ("masks", masks)
    if given is None:
        flag = "--annotations instances.json" if task == "detection" else "--masks DIR"
        raise InvalidArgumentError(f"the {task} task needs {flag}", argument=need, received=None,
                                   fix=f"give {flag} ({need}=) with --task {task}")
    if preprocess is None:
        raise InvalidArgumentError(f"{task} takes a model with one image input [H, W, 1 or 3]",
                                   argument="model", fix="give the model's preprocessing (--size, --color)")
    root = Path(os.fspath(evaluation))
    if not root.is_dir():
        raise DataError("no such folder", argument="evaluation", received=str(root),
                        fix="give the folder of evaluation images (--eval)")
    if task == "detection":
        ann = Path(os.fspath(given))
        coco = read_coco(ann)
        pairs = match_images(coco, root, str(ann), data="the evaluation folder (--eval)",
                             data_argument="evaluation")
        idx = sample_indices(len(pairs), limit, seed)
        chosen = [pairs[int(i)] for i in idx]
        dims = {int(im["id"]): (im.get("width"), im.get("height")) for im in coco["images"]}
        sizes = []
        for image_id, p in chosen:
            w, h = dims[image_id]
            if not w or not h:
                with Image.open(p) as im:
                    w, h = im.size
            sizes.append((int(w), int(h)))
        paths = tuple(p for _, p in chosen)
        x = _read_images(paths, preprocess)
        return TaskData(task, root, paths, x, limit, seed, annotations=ann, coco=coco,
                        image_ids=tuple(i for i, _ in chosen), sizes=tuple(sizes))
    mask_dir = Path(os.fspath(given))
    if not mask_dir.is_dir():
        raise DataError("no such folder", argument="masks", received=str(mask_dir),
                        fix="give the folder of class-index masks")
    listing = list_image_folder(root, argument="evaluation")
    idx = sample_indices(len(listing.paths), limit, seed)
    paths = tuple(listing.paths[int(i)] for i in idx)
    mapping = load_label_map(label_map)
    mask_paths = tuple(mask_for(p, mask_dir, mapping is not None and mapping.name == "cityscapes") for p in paths)
    for m, p in zip(mask_paths, paths):
        _read_mask(m, p, mapping)  # every mask readable and the size of its image before any work
    x = _read_images(paths, preprocess)
    return TaskData(task, root, paths, x, limit, seed, masks=mask_dir, mask_paths=mask_paths, label_map=mapping)


def _read_images(paths: Sequence[Path], preprocess: Preprocess) -> np.ndarray:
    """The images preprocessed as the evaluation loop will, stacked (float32), with a progress bar."""
    out = []
    with task_progress("reading evaluation images", len(paths)) as tick:
        for p in paths:
            out.append(load_image(p, preprocess))
            tick()
    return np.stack(out).astype(np.float32)


def task_roles(names: Sequence[str], given: Mapping[str, str] | None = None) -> dict[str, int]:
    """Which of the Keras model's outputs (by position) are a detector's boxes, classes, scores and count.

    ``given`` maps a role to an output name or index; else the outputs' names say
    (``detection_boxes``/``boxes``, ...; see :data:`edgeq_device.tasks.detection.OUTPUT_ROLES`).

    Raises:
        DataError: the outputs cannot be identified (the message lists them).
    """
    listed = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    syntax = "outputs={'boxes': NAME, 'classes': NAME, 'scores': NAME, 'count': NAME}"
    roles: dict[str, int] = {}
    for role, aliases in OUTPUT_ROLES.items():
        want = given.get(role) if given else None
        for pos, name in enumerate(names):
            if (want is not None and want in (name, str(pos))) or (want is None and not given
                                                                  and name.lower() in aliases):
                roles[role] = pos
                break
    if all(r in roles for r in ("boxes", "classes", "scores")):
        return roles
    raise DataError("cannot tell which of the Keras model's outputs are boxes, classes, scores and count",
                    argument="outputs", received=listed, fix=f"name the outputs so, or give {syntax}")


def _pr_eval(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> Any:
    coco_cls, eval_cls = require_pycocotools()
    coco = coco_cls()
    coco.dataset = {"images": list(gt["images"]), "categories": list(gt["categories"]),
                    "annotations": [dict(a, id=a.get("id", k + 1), iscrowd=a.get("iscrowd", 0),
                                         area=a.get("area", float(a["bbox"][2]) * float(a["bbox"][3])))
                                    for k, a in enumerate(gt["annotations"])]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = eval_cls(coco, coco.loadRes([dict(r) for r in results]), "bbox")
        ev.evaluate()
        ev.accumulate()
    return ev


def precision_recall(gt: Mapping[str, Any], results: Sequence[Mapping[str, Any]]) -> list[float | None]:
    """Precision at pycocotools' 101 recall points at IoU .5 (all areas, 100 detections), the mean over
    categories with ground truth; None where no category reaches that recall."""
    if not results:
        return [0.0] * 101
    prec = np.asarray(_pr_eval(gt, results).eval["precision"])[0, :, :, 0, -1]  # [recall, category]
    out: list[float | None] = []
    for row in prec:
        valid = row[row > -1]
        out.append(float(valid.mean()) if valid.size else None)
    return out


def keras_task_score(data: TaskData, outputs: Sequence[np.ndarray], *, roles: Mapping[str, int] | None = None,
                     class_offset: int = 1, ignore_index: IgnoreLike = 255,
                     class_names: Sequence[str] | None = None) -> TaskScore:
    """The task's figures of the Keras model's ``outputs`` (one array per output, ``[N, ...]``) on ``data``.

    Raises:
        DataError: category ids the model emits that the annotations lack; mask classes beyond
            the model's classes.
    """
    if data.task == "detection":
        assert roles is not None
        results = []
        for i, (image_id, (w, h)) in enumerate(zip(data.image_ids, data.sizes)):
            results += coco_detections(image_id, [o[i:i + 1] for o in outputs], roles, w, h, class_offset)
        assert data.coco is not None
        cats = {int(c["id"]): str(c.get("name", c["id"])) for c in data.coco["categories"]}
        check_categories({int(r["category_id"]) for r in results}, cats, class_offset)
        gt = data.ground_truth()
        m, m50, per = coco_scores(gt, results)
        return TaskScore({"map": m, "map50": m50}, {cats[c]: v[0] for c, v in sorted(per.items())},
                         precision_recall(gt, results))
    scores = np.asarray(outputs[0])
    score_map = scores.ndim == 4 and scores.shape[-1] > 1
    mapped = data.label_map.class_names if data.label_map is not None else None
    if not class_names and mapped and (not score_map or len(mapped) == scores.shape[-1]):
        class_names = mapped  # the label map's classes (Cityscapes' 19) name and count a class map
    classes = int(scores.shape[-1]) if score_map else len(class_names or ())
    if classes < 1:
        raise InvalidArgumentError("a class-map output needs the number of classes", argument="labels",
                                   fix="give the class names (labels=)")
    if class_names and len(class_names) != classes:
        raise LabelMismatchError(f"{len(class_names)} class names for a model with {classes} classes",
                                 argument="labels", received=len(class_names),
                                 fix=f"give {classes} names, one a line in class order")
    cm = np.zeros((classes, classes), np.int64)
    ignore = parse_ignore(ignore_index)
    for i, (m_path, p) in enumerate(zip(data.mask_paths, data.paths)):
        mask = _read_mask(m_path, p, data.label_map)
        counted = mask[counted_pixels(mask, ignore)]
        if counted.size and (counted.min() < 0 or counted.max() >= classes):
            bad = int(counted.max()) if counted.max() >= classes else int(counted.min())
            raise DataError(f"mask holds class {bad}, the model has {classes} classes "
                            f"(0..{classes - 1})", argument="masks", received=str(m_path),
                            fix=f"give masks of classes 0..{classes - 1}: map label IDs to classes "
                                "(--label-map cityscapes or FILE) or ignore the value (--ignore-index)")
        pred = resize_nearest(class_map(scores[i:i + 1]), mask.shape)
        cm += confusion_matrix(pred, mask, classes, ignore)
    ious, miou, acc = segmentation_scores(cm)
    names = list(class_names) if class_names and len(class_names) == classes else [str(c) for c in range(classes)]
    return TaskScore({"miou": miou, "pixel_accuracy": acc}, dict(zip(names, ious)))


def tflite_task_score(model_bytes: bytes, data: TaskData, preprocess: Preprocess, *,
                      outputs: Mapping[str, str] | None = None, class_offset: int = 1,
                      ignore_index: IgnoreLike = 255, class_names: Sequence[str] | None = None,
                      progress: bool | None = None) -> TaskScore:
    """The task's figures of a ``.tflite`` on ``data``, by ``edgeq_device``'s one evaluation loop.

    ``class_names`` names a segmenter's classes (as for :func:`keras_task_score`); a detector's
    are its annotations' categories.
    """
    common: dict[str, Any] = {"preprocess": preprocess,
                              "options": EvalOptions(limit=data.limit, seed=data.seed, progress=bool(progress))}
    if data.task == "detection":
        with tempfile.TemporaryDirectory(prefix="edgeq-task-") as tmp:
            pred = Path(tmp) / "predictions.json"
            r = evaluate_task(model_bytes, data.data, task="detection", annotations=data.annotations,
                              outputs=outputs, class_offset=class_offset, predictions=pred, **common)
            results = loads_json(pred.read_text(encoding="utf-8"))
        assert isinstance(r, DetectionResult)
        return TaskScore({"map": r.map, "map50": r.map50}, {c.name: c.ap for c in r.per_class},
                         precision_recall(data.ground_truth(), results), r.seconds)
    r2 = evaluate_task(model_bytes, data.data, task="segmentation", masks=data.masks,
                       ignore_index=parse_ignore(ignore_index), label_map=data.label_map, labels=class_names,
                       **common)
    assert isinstance(r2, SegmentationResult)
    return TaskScore({"miou": r2.miou, "pixel_accuracy": r2.pixel_accuracy},
                     {c.name: c.iou for c in r2.per_class}, None, r2.seconds)
