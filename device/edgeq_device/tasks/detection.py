"""Object detection accuracy: COCO mAP@[.5:.95], mAP@.5 and AP per class, by pycocotools' COCOeval.

The model's boxes (normalized ``[ymin, xmin, ymax, xmax]``), classes, scores and
count come from ``TFLite_Detection_PostProcess``'s four outputs, from signature
output names, or as the caller names them (:func:`identify_outputs`).
:func:`coco_detections` turns one image's outputs into COCO results (``[x, y, w, h]``
in pixels of the original image) and :func:`coco_scores` scores a results list
with pycocotools (the optional extra ``edgeq-device[detection]``); both take raw
arrays, so the host reuses them. The result record is in :mod:`edgeq_device.detection_result`.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import DataError, InvalidArgumentError, RuntimeNotFoundError
from ..model.flatbuffer import FlatModel
from .task_loop import output_keys

__all__ = ["OUTPUT_ROLES", "POSTPROCESS_OP", "check_categories", "coco_boxes", "coco_detections", "coco_scores", "identify_outputs",
           "parse_outputs_option", "require_pycocotools"]

POSTPROCESS_OP = "TFLite_Detection_PostProcess"
#: The four outputs of a detector and the signature names that identify each.
OUTPUT_ROLES: dict[str, tuple[str, ...]] = {
    "boxes": ("detection_boxes", "boxes"),
    "classes": ("detection_classes", "classes"),
    "scores": ("detection_scores", "scores"),
    "count": ("num_detections", "count"),
}
_OUTPUTS_SYNTAX = "--outputs boxes=NAME,classes=NAME,scores=NAME,count=NAME (outputs=)"


def parse_outputs_option(text: str) -> dict[str, str]:
    """``"boxes=a,classes=b,scores=c,count=d"`` -> ``{"boxes": "a", ...}`` (count may be left out)."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        role, sep, name = item.partition("=")
        if not sep or role.strip() not in OUTPUT_ROLES or not name.strip():
            raise InvalidArgumentError(f"cannot read {item!r}", argument="outputs", received=text,
                                       fix=f"give {_OUTPUTS_SYNTAX}")
        out[role.strip()] = name.strip()
    return out


def identify_outputs(flat: FlatModel, given: Mapping[str, str] | None = None) -> dict[str, int]:
    """Which model output (position in the model's output order) holds boxes, classes, scores and count.

    ``given`` names them (output name, tensor name or index); else a ``TFLite_Detection_PostProcess``
    operator's four outputs; else signature output names (``detection_boxes``/``boxes``, ...).
    ``count`` may be missing (every row then counts).

    Raises:
        DataError: the outputs cannot be identified (the message lists the model's outputs).
    """
    order = list(flat.io_order("outputs"))
    keys = output_keys(flat)
    tensor_names = [flat.main.tensors[i].name for i in order]
    listed = ", ".join(f"{k} {list(flat.main.tensors[i].shape)}" for k, i in zip(keys, order))
    if given:
        found: dict[str, int] = {}
        for role, name in given.items():
            pos = next((p for p, (k, t) in enumerate(zip(keys, tensor_names)) if name in (k, t, str(p))), None)
            if pos is None:
                raise DataError(f"the model has no output {name!r} (for {role})", argument="outputs",
                                received=name, fix=f"its outputs are {listed}; give {_OUTPUTS_SYNTAX}")
            found[role] = pos
        missing = [r for r in ("boxes", "classes", "scores") if r not in found]
        if missing:
            raise DataError(f"no output named for {', '.join(missing)}", argument="outputs",
                            received=dict(given), fix=f"give {_OUTPUTS_SYNTAX}")
        return found
    for op in flat.main.operators:
        if op.custom_code == POSTPROCESS_OP and len(op.outputs) == 4 and all(t in order for t in op.outputs):
            return {role: order.index(t) for role, t in zip(OUTPUT_ROLES, op.outputs)}
    by_name: dict[str, int] = {}
    for role, aliases in OUTPUT_ROLES.items():
        for pos, (k, t) in enumerate(zip(keys, tensor_names)):
            if k.lower() in aliases or t.lower() in aliases:
                by_name[role] = pos
                break
    if all(r in by_name for r in ("boxes", "classes", "scores")):
        return by_name
    raise DataError("cannot tell which outputs are boxes, classes, scores and count", argument="outputs",
                    received=listed, fix=f"name them with {_OUTPUTS_SYNTAX}")


def coco_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalized ``[ymin, xmin, ymax, xmax]`` ``[N, 4]`` -> COCO ``[x, y, w, h]`` in pixels, clipped to the image."""
    b = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0.0, 1.0)
    x0, y0 = b[:, 1] * width, b[:, 0] * height
    x1, y1 = b[:, 3] * width, b[:, 2] * height
    return np.stack([x0, y0, np.maximum(x1 - x0, 0.0), np.maximum(y1 - y0, 0.0)], axis=1)


def coco_detections(image_id: int, outputs: Sequence[np.ndarray], roles: Mapping[str, int], width: int,
                    height: int, class_offset: int = 1) -> list[dict[str, Any]]:
    """One image's detections as COCO results: ``{"image_id", "category_id", "bbox", "score"}``.

    ``outputs`` are the model's outputs in order; ``roles`` says which is which
    (:func:`identify_outputs`). Category id = model class + ``class_offset``.
    """
    boxes = np.asarray(outputs[roles["boxes"]]).reshape(-1, 4)
    classes = np.asarray(outputs[roles["classes"]]).reshape(-1)
    scores = np.asarray(outputs[roles["scores"]]).reshape(-1)
    n = min(len(boxes), len(classes), len(scores))
    if "count" in roles:
        n = min(n, max(round(float(np.asarray(outputs[roles["count"]]).reshape(-1)[0])), 0))
    xywh = coco_boxes(boxes[:n], width, height)
    return [{"image_id": int(image_id), "category_id": round(float(classes[k])) + class_offset,
             "bbox": [round(float(v), 3) for v in xywh[k]], "score": round(float(scores[k]), 5)}
            for k in range(n)]


def require_pycocotools() -> tuple[Any, Any]:
    """pycocotools' ``COCO`` and ``COCOeval``; a missing install is an error naming the extra."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise RuntimeNotFoundError("detection metrics need pycocotools", argument="task",
                                   fix="pip install 'edgeq-device[detection]'") from exc
    return COCO, COCOeval


def coco_scores(ground_truth: Mapping[str, Any], results: Sequence[Mapping[str, Any]]
                ) -> tuple[float, float, dict[int, tuple[float | None, float | None]]]:
    """``(mAP@[.5:.95], mAP@.5, {category id: (AP, AP@.5)})`` of ``results`` on a COCO ``ground_truth`` dict.

    pycocotools' COCOeval (bbox, every area, 100 detections); a category with no ground
    truth box has AP None. No result at all scores 0.
    """
    coco_cls, eval_cls = require_pycocotools()
    gt = coco_cls()
    gt.dataset = {"images": list(ground_truth["images"]), "annotations": list(ground_truth["annotations"]),
                  "categories": list(ground_truth["categories"])}
    for k, a in enumerate(gt.dataset["annotations"]):  # COCOeval needs area, iscrowd and an id
        a.setdefault("id", k + 1)
        a.setdefault("iscrowd", 0)
        a.setdefault("area", float(a["bbox"][2]) * float(a["bbox"][3]))
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    cat_ids = sorted(c["id"] for c in gt.dataset["categories"])
    if not results:
        return 0.0, 0.0, {c: (0.0 if gt.getAnnIds(catIds=[c]) else None,) * 2 for c in cat_ids}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes([dict(r) for r in results])
        ev = eval_cls(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [iou thresholds, recall, categories, areas, max dets]
    per_class: dict[int, tuple[float | None, float | None]] = {}
    for k, c in enumerate(ev.params.catIds):
        p_all = precision[:, :, k, 0, -1]
        p_50 = precision[0, :, k, 0, -1]
        per_class[c] = (float(np.mean(p_all[p_all > -1])) if (p_all > -1).any() else None,
                        float(np.mean(p_50[p_50 > -1])) if (p_50 > -1).any() else None)
    return max(float(ev.stats[0]), 0.0), max(float(ev.stats[1]), 0.0), per_class


def check_categories(emitted: set[int], categories: Mapping[int, str], class_offset: int) -> None:
    """Refuse category ids the model emits that the annotations do not have (a wrong class offset, or labels)."""
    unknown = sorted(emitted - set(categories))
    if unknown:
        raise DataError(f"the model emits category ids {unknown[:8]} (class + offset {class_offset}) that the "
                        f"annotations do not have (they have {sorted(categories)[:8]})", argument="class_offset",
                        received=class_offset, fix="give the --class-offset that maps model class 0 to its "
                                                   "category id")

