"""The task metrics on raw arrays against independent computations: NumPy, loops, Pillow, pycocotools' own run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from edgeq_device.errors import InvalidArgumentError
from edgeq_device.measure.sysinfo import board_info
from edgeq_device.tasks.detection import coco_boxes, coco_detections, coco_scores, parse_outputs_option
from edgeq_device.tasks.fidelity import FidelityResult, output_fidelity
from edgeq_device.tasks.segmentation import confusion_matrix, resize_nearest, segmentation_scores
from PIL import Image


def test_fidelity_metrics_against_numpy():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(7, 10)).astype(np.float32)
    out = ref + rng.normal(scale=0.1, size=ref.shape).astype(np.float32)
    out[3] = ref[3][::-1]  # one sample whose arg-max moves
    f = output_fidelity("y", ref, out)
    r64, o64 = ref.astype(np.float64), out.astype(np.float64)
    assert f.sqnr_db == pytest.approx(10 * np.log10((r64 ** 2).sum() / ((r64 - o64) ** 2).sum()), rel=1e-12)
    cos = (r64.ravel() @ o64.ravel()) / (np.linalg.norm(r64) * np.linalg.norm(o64))
    assert f.cosine == pytest.approx(cos, rel=1e-12)
    assert f.max_abs_error == pytest.approx(np.abs(r64 - o64).max())
    assert f.argmax_agreement == pytest.approx(np.mean(ref.argmax(1) == out.argmax(1)))
    assert f.argmax_agreement < 1.0
    assert f.shape == (10,)


def test_identical_outputs_are_infinite_sqnr_written_strictly():
    ref = np.arange(12, dtype=np.float32).reshape(3, 4)
    f = output_fidelity("y", ref, ref.copy())
    assert f.sqnr_db == math.inf and f.cosine == pytest.approx(1.0) and f.max_abs_error == 0.0
    scalar = output_fidelity("s", ref[:, :1], ref[:, :1])
    assert scalar.argmax_agreement is None
    r = FidelityResult(model=None, model_sha256="0", mode=None, inputs="x", reference="y", samples=3,
                       outputs=(f,), seconds=0.1, workers=1, runtime="litert", runtime_version="0",
                       delegate=None, board=board_info(), started="", edgeq_device_version="0")
    text = r.to_json()
    assert "Infinity" not in text and json.loads(text)["outputs"][0]["sqnr_db"] is None
    assert FidelityResult.from_json(text).outputs[0].sqnr_db == math.inf
    assert "inf" in str(r) and "<table>" in r._repr_html_()


def test_confusion_and_iou_against_plain_numpy():
    rng = np.random.default_rng(2)
    mask = rng.integers(0, 4, (20, 30))
    mask[:3] = 255
    pred = rng.integers(0, 4, (20, 30))
    pred[mask == 2] = 2  # class 2 always right
    cm = confusion_matrix(pred, mask, 4, 255)
    plain = np.zeros((4, 4), np.int64)
    for t, p in zip(mask.ravel(), pred.ravel()):
        if t != 255:
            plain[t, p] += 1
    assert (cm == plain).all()
    ious, miou, acc = segmentation_scores(cm)
    want = [plain[c, c] / (plain[c].sum() + plain[:, c].sum() - plain[c, c]) for c in range(4)]
    assert ious == pytest.approx(want)
    assert miou == pytest.approx(np.mean(want))
    assert acc == pytest.approx(np.trace(plain) / plain.sum())


def test_iou_leaves_out_classes_absent_from_masks_and_predictions():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    ious, miou, _ = segmentation_scores(cm)
    assert ious[2] is None and miou == pytest.approx(np.mean([5 / 8, 3 / 6]))


def test_nearest_resize_is_pillows():
    rng = np.random.default_rng(3)
    pred = rng.integers(0, 9, (7, 5)).astype(np.uint8)
    for shape in ((21, 15), (24, 32), (5, 3), (7, 5)):
        pil = np.asarray(Image.fromarray(pred).resize((shape[1], shape[0]), Image.NEAREST))
        assert (resize_nearest(pred, shape) == pil).all(), shape


def test_box_conversion_by_hand():
    # ymin, xmin, ymax, xmax normalized, on a 200 wide x 100 high image
    got = coco_boxes(np.array([[0.1, 0.25, 0.5, 0.75], [-0.2, 0.9, 0.3, 1.4]]), 200, 100)
    np.testing.assert_allclose(got, [[50.0, 10.0, 100.0, 40.0], [180.0, 0.0, 20.0, 30.0]])
    outs = [np.array([[[0.1, 0.25, 0.5, 0.75], [0, 0, 1, 1], [0, 0, 1, 1]]]), np.array([[0.0, 3.0, 1.0]]),
            np.array([[0.9, 0.8, 0.7]]), np.array([2.0])]
    dets = coco_detections(7, outs, {"boxes": 0, "classes": 1, "scores": 2, "count": 3}, 200, 100, 1)
    assert dets == [{"image_id": 7, "category_id": 1, "bbox": [50.0, 10.0, 100.0, 40.0], "score": 0.9},
                    {"image_id": 7, "category_id": 4, "bbox": [0.0, 0.0, 200.0, 100.0], "score": 0.8}]


def test_map_equals_pycocotools_own_run(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(4)
    images = [{"id": i, "file_name": f"{i}.png", "width": 320, "height": 240} for i in range(1, 9)]
    anns, results = [], []
    for im in images:
        for _ in range(3):
            x, y = rng.uniform(0, 200), rng.uniform(0, 150)
            w, h = rng.uniform(20, 100), rng.uniform(20, 80)
            c = int(rng.integers(1, 4))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": c, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0})
            jitter = rng.normal(scale=8, size=4)
            results.append({"image_id": im["id"], "category_id": c if rng.random() > 0.2 else 1 + c % 3,
                            "bbox": [x + jitter[0], y + jitter[1], w + jitter[2], h + jitter[3]],
                            "score": float(rng.random())})
    gt = {"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}
    m, m50, per_class = coco_scores(json.loads(json.dumps(gt)), results)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    coco = COCO(str(tmp_path / "gt.json"))
    ev = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert m == pytest.approx(ev.stats[0], abs=1e-12) and m50 == pytest.approx(ev.stats[1], abs=1e-12)
    assert 0.05 < m < 0.95
    for k, c in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        assert per_class[c][0] == pytest.approx(p[p > -1].mean())


def test_outputs_option_parsing_and_errors():
    assert parse_outputs_option("boxes=a, classes=b,scores=c") == {"boxes": "a", "classes": "b", "scores": "c"}
    for bad in ("boxes", "box=a", "boxes="):
        with pytest.raises(InvalidArgumentError, match="outputs"):
            parse_outputs_option(bad)
