"""compare(task=...): a detector's mAP and a segmenter's mIoU per mode, their fidelity, and what the task costs.

Models and data are made here in seconds: a Keras detector that reads its answer from
the image's first row (boxes, classes, scores, count; some boxes shifted, some missed)
on COCO annotations, and a small segmenter trained briefly on synthetic colour masks.
The cost is a ratio in one run: ``compare(task="segmentation")`` over the same compare
of the same model on the same images without the task (agreement with Keras only).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DET, DET_W, DET_H = 32, 64, 96
SEG, SEG_W, SEG_H, SEG_CLASSES = 32, 48, 40, 4
FAST: dict[str, Any] = {"threads": (1,), "runs": 20, "min_secs": 0.05, "max_secs": 2.0, "samples": 32}


def _detector() -> Any:
    import keras

    inp = keras.Input((DET, DET, 3), name="image")
    code = keras.layers.Lambda(lambda t: t[:, 0, :, 0])(inp)
    boxes = keras.layers.Reshape((2, 4))(keras.layers.Lambda(lambda c: c[:, 0:8])(code))
    return keras.Model(inp, {"boxes": boxes, "classes": keras.layers.Lambda(lambda c: c[:, 8:10] * 255.0)(code),
                             "scores": keras.layers.Lambda(lambda c: c[:, 10:12])(code),
                             "count": keras.layers.Lambda(lambda c: c[:, 12] * 255.0)(code)})


def detection_set(root: Path, n: int = 40) -> tuple[Path, Path]:
    images = root / "det"
    images.mkdir()
    rng = np.random.default_rng(5)
    imgs, anns = [], []
    for k in range(n):
        truth = [[*sorted(rng.integers(0, 120, 2)), *sorted(rng.integers(130, 255, 2))] for _ in range(2)]
        truth = [[int(t[0]), int(t[1]), int(t[2]), int(t[3])] for t in truth]
        pred = [list(b) for b in truth]
        if k % 3 == 1:
            pred[1] = [min(v + 30, 255) for v in pred[1]]
        code = np.zeros(DET, np.uint8)
        code[0:8] = np.asarray(pred, np.uint8).ravel()
        code[8:10], code[10:12], code[12] = [0, 1], [230, 150], 1 if k % 7 == 6 else 2
        img = rng.integers(0, 255, (DET_H, DET_W, 3), dtype=np.uint8)
        for c in range(DET):
            img[0:3, 2 * c:2 * c + 2, 0] = code[c]
        Image.fromarray(img).save(images / f"im{k}.png")
        imgs.append({"id": k + 1, "file_name": f"im{k}.png", "width": DET_W, "height": DET_H})
        for j, (y0, x0, y1, x1) in enumerate(truth):
            anns.append({"id": len(anns) + 1, "image_id": k + 1, "category_id": j + 1, "iscrowd": 0,
                         "bbox": [x0 / 255 * DET_W, y0 / 255 * DET_H, (x1 - x0) / 255 * DET_W,
                                  (y1 - y0) / 255 * DET_H]})
    ann = root / "instances.json"
    ann.write_text(json.dumps({"images": imgs, "annotations": anns,
                               "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    return images, ann


def segmentation_set(root: Path, n: int = 64) -> tuple[Path, Path, Any]:
    """Images whose pixels' class is the colour painted there (red 1, green 2, blue 3, else 0), and a model
    trained for a few seconds on them."""
    import keras

    images, masks = root / "seg", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(8)
    xs, ys = [], []
    for k in range(n):
        img = rng.integers(0, 90, (SEG_H, SEG_W, 3), dtype=np.uint8)
        mask = np.zeros((SEG_H, SEG_W), np.uint8)
        for cls in (1, 2, 3):
            y0, x0 = rng.integers(0, SEG_H - 12), rng.integers(0, SEG_W - 14)
            img[y0:y0 + 12, x0:x0 + 14, cls - 1] = 240
            mask[y0:y0 + 12, x0:x0 + 14] = cls
        mask[:3] = 255
        Image.fromarray(img).save(images / f"s{k}.png")
        Image.fromarray(mask).save(masks / f"s{k}.png")
        xs.append(np.asarray(Image.fromarray(img).resize((SEG, SEG)), np.float32) / 255.0)
        ys.append(np.asarray(Image.fromarray(np.where(mask == 255, 0, mask)).resize((SEG, SEG), Image.NEAREST)))
    keras.utils.set_random_seed(3)
    inp = keras.Input((SEG, SEG, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    model = keras.Model(inp, keras.layers.Conv2D(SEG_CLASSES, 1, activation="softmax")(h))
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(np.stack(xs), np.stack(ys).astype(np.int64), epochs=30, batch_size=16, verbose=0)
    return images, masks, model


def _rows(comp: Any) -> dict[str, Any]:
    """Per row: the task figures in points, Δ vs Keras, and SQNR per output (None: identical outputs)."""
    return {r.name: {**{k: round(v * 100, 2) for k, v in r.task_metrics.items()},
                     "delta_points": None if r.task_change_points is None else round(r.task_change_points, 2),
                     "sqnr_db": {o["name"]: round(o["sqnr_db"], 1) if math.isfinite(o["sqnr_db"]) else None
                                 for o in r.outputs_fidelity}}
            for r in comp.rows}


def run() -> dict[str, Any]:
    from edgeq_device.model.preprocess import Preprocess, load_image

    from edgeq.comparison.run import compare

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-tasks-") as tmp:
        root = Path(tmp)
        images, ann = detection_set(root)
        t0 = time.perf_counter()
        det = compare(_detector(), calibration=images, evaluation=images, task="detection", annotations=ann,
                      modes=["float32", "float16", "dynamic", "int8"], preprocess=Preprocess(size=(DET, DET),
                                                                                            resize="nearest"), **FAST)
        out["detection"] = {"seconds": round(time.perf_counter() - t0, 1), "rows": _rows(det),
                            "recommendation": det.recommendation.mode}
        seg_images, masks, model = segmentation_set(root)
        t0 = time.perf_counter()
        seg = compare(model, calibration=seg_images, evaluation=seg_images, task="segmentation", masks=masks,
                      modes=["float32", "float16", "dynamic", "int8"], **FAST)
        seg_s = time.perf_counter() - t0
        x = np.stack([load_image(p, Preprocess(size=(SEG, SEG))) for p in sorted(seg_images.iterdir())])
        t0 = time.perf_counter()
        compare(model, calibration=seg_images, evaluation=x, modes=["float32", "float16", "dynamic", "int8"], **FAST)
        plain_s = time.perf_counter() - t0
        out["segmentation"] = {"seconds": round(seg_s, 1), "rows": _rows(seg),
                               "recommendation": seg.recommendation.mode,
                               "task_eval_seconds": {k: round(v, 3) for k, v in
                                                     (seg.task_details or {}).get("seconds", {}).items()},
                               "cost_ratio_vs_compare_without_task": round(seg_s / plain_s, 2)}
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
