"""edgeq-device eval as detection, segmentation, fidelity and array classification on real models and interpreters.

Each metric is checked against an independent run: the runtime's own interpreter
driven by hand, Pillow's resize, a plain confusion matrix, pycocotools on the
predictions file. Every bad input is one line, exit 2, and nothing written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from edgeq_device import ModelRunner
from edgeq_device.errors import DataError, InvalidArgumentError
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.metadata import read_metadata
from edgeq_device.model.preprocess import Preprocess, load_image
from edgeq_device.tasks.detection_eval import DetectionResult
from edgeq_device.tasks.fidelity import FidelityResult
from edgeq_device.tasks.registry import evaluate_task
from edgeq_device.tasks.segmentation import SegmentationResult
from edgeq_device.tasks.task_loop import output_keys
from PIL import Image
from task_models import (
    DET_SIZE,
    SEG_CLASSES,
    detection_set,
    make_detector,
    make_postprocess_detector,
    make_segmenters,
    segmentation_set,
)

NEAREST = {"size": [DET_SIZE, DET_SIZE], "color": "rgb", "resize": "nearest", "crop": "none",
           "crop_fraction": 0.875, "mean": [0.0], "std": [255.0], "layout": "nhwc"}


@pytest.fixture(scope="module")
def task_models(tmp_path_factory, model_tools):
    root = tmp_path_factory.mktemp("task_models")
    paths = make_segmenters(root)
    paths["det"] = make_detector(root / "det.tflite")
    paths["postprocess"] = make_postprocess_detector(root / "det_postprocess.tflite")
    paths["det_unnamed"] = make_detector(root / "det_unnamed.tflite", ("a", "b", "c", "d"))
    meta = {"schema": 1, "mode": "float32", "io": "float", "preprocess": NEAREST, "labels": ["cat", "dog"],
            "task": "detection", "task_settings": {"class_offset": 1}}
    paths["det_meta"] = root / "det_meta.tflite"
    paths["det_meta"].write_bytes(model_tools.add_edgeq_metadata(paths["det"].read_bytes(), meta))
    return paths


@pytest.fixture()
def det_data(tmp_path):
    return detection_set(tmp_path / "det")


def _one_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# ----------------------------------------------------------------------------- detection


def test_detection_from_metadata_alone_equals_pycocotools_on_the_predictions(cli, task_models, det_data, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, ann, coco = det_data
    meta = read_metadata(task_models["det_meta"])
    assert meta is not None and meta.task == "detection" and meta.task_settings == {"class_offset": 1}
    pred, out = tmp_path / "pred.json", tmp_path / "r.json"
    proc = cli("eval", task_models["det_meta"], images, "--annotations", ann, "--predictions", pred, "--json", out,
               "-q")
    assert proc.returncode == 0, proc.stderr
    r = DetectionResult.load(out)
    assert "mAP" in proc.stdout and r.images == 6 and r.detections == 11
    gt = COCO(str(ann))
    ev = COCOeval(gt, gt.loadRes(str(pred)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert r.map == pytest.approx(ev.stats[0], abs=1e-12) and r.map50 == pytest.approx(ev.stats[1], abs=1e-12)
    assert 0.3 < r.map < 1.0
    assert [c.name for c in r.per_class] == ["cat", "dog"] and r.per_class[0].ap == pytest.approx(1.0)
    assert r.outputs == {"boxes": "boxes", "classes": "classes", "scores": "scores", "count": "count"}
    # the first box of the first image, converted by hand: [y0, x0, y1, x1]/255 of a 64 x 96 image
    first = json.loads(pred.read_text())[0]
    y0, x0, y1, x1 = coco["annotations"][0]["bbox"][1], coco["annotations"][0]["bbox"][0], 0, 0
    assert first["image_id"] == 100 and first["category_id"] == 1
    assert first["bbox"][:2] == pytest.approx([x0, y0], abs=1e-3)
    assert first["bbox"][2:] == pytest.approx(coco["annotations"][0]["bbox"][2:], abs=1e-3)
    del y1, x1


def test_detection_outputs_by_flag_and_unidentified_outputs(cli, task_models, det_data):
    images, ann, _ = det_data
    pre = Preprocess.from_dict(NEAREST)
    with pytest.raises(DataError, match=r"cannot tell which outputs.*--outputs boxes=NAME"):
        evaluate_task(task_models["det_unnamed"], images, task="detection", annotations=ann, preprocess=pre)
    r = evaluate_task(task_models["det_unnamed"], images, task="detection", annotations=ann, preprocess=pre,
                      outputs={"boxes": "a", "classes": "b", "scores": "c", "count": "d"}, workers=2)
    named = evaluate_task(task_models["det"], images, task="detection", annotations=ann, preprocess=pre)
    assert isinstance(r, DetectionResult) and r.map == named.map and r.workers == 2
    with pytest.raises(DataError, match=r"emits category ids \[5, 6\].*--class-offset"):  # no labels to check before
        evaluate_task(task_models["det"], images, task="detection", annotations=ann, preprocess=pre, class_offset=5)
    line = _one_error(cli("eval", task_models["det_unnamed"], images, "--task", "detection", "--annotations", ann,
                          "--size", "32x32", "-q"))
    assert "a [1, 2, 4]" in line and "--outputs boxes=NAME" in line
    line = _one_error(cli("eval", task_models["det_unnamed"], images, "--task", "detection", "--annotations", ann,
                          "--outputs", "boxes=zz,classes=b,scores=c", "-q"))
    assert "no output 'zz'" in line


def test_detection_through_the_runtimes_postprocess_operator(task_models, det_data, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, ann, coco = det_data
    pred = tmp_path / "pred.json"
    r = evaluate_task(task_models["postprocess"], images, task="detection", annotations=ann,
                      preprocess=Preprocess.from_dict(NEAREST), predictions=pred)
    assert isinstance(r, DetectionResult)
    assert r.outputs == {"boxes": "TFLite_Detection_PostProcess", "classes": "TFLite_Detection_PostProcess:1",
                         "scores": "TFLite_Detection_PostProcess:2", "count": "TFLite_Detection_PostProcess:3"}
    results = json.loads(pred.read_text())
    assert r.detections == len(results) == 12  # the operator keeps the box the signature model's count left out
    truth = {(a["image_id"], a["category_id"]): a["bbox"] for a in coco["annotations"]}
    first = next(d for d in results if d["image_id"] == 100 and d["category_id"] == 1)
    assert first["bbox"] == pytest.approx(truth[(100, 1)], abs=0.05)  # decoded from SSD encodings
    gt = COCO(str(ann))
    ev = COCOeval(gt, gt.loadRes(str(pred)), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert r.map == pytest.approx(ev.stats[0], abs=1e-12) and 0.3 < r.map < 1.0


def test_missing_pycocotools_is_one_line_naming_the_extra(task_models, det_data):
    import subprocess
    import sys

    images, ann, _ = det_data
    code = ("import sys; sys.modules['pycocotools'] = None; from edgeq_device.cli.commands import main; "
            f"main([{str(task_models['det_meta'])!r}, {str(images)!r}, '--annotations', {str(ann)!r}, '-q'])")
    proc = subprocess.run([sys.executable, "-c", code.replace("main([", "main(['eval', ")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert _one_error(proc) == ("error: task: detection metrics need pycocotools; "
                                "pip install 'edgeq-device[detection]'")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["missing_image", "unannotated_image", "beyond_classes", "wrong_offset", "not_coco"])
def test_detection_bad_input_is_one_line_and_writes_nothing(cli, task_models, det_data, tmp_path, case):
    images, ann, coco = det_data
    args: list[str] = []
    if case == "missing_image":
        (images / "im0.png").unlink()
        want = "not in DATA"
    elif case == "unannotated_image":
        Image.new("RGB", (64, 96)).save(images / "stray.png")
        want = "no entry in the annotations"
    elif case == "beyond_classes":
        coco["categories"].append({"id": 7, "name": "bird"})
        ann.write_text(json.dumps(coco))
        want = "beyond the model's 2 classes"
    elif case == "wrong_offset":
        args = ["--class-offset", "5"]
        want = "categories [1, 2] are beyond the model's 2 classes (category id = class + 5)"
    else:
        ann.write_text(json.dumps({"images": []}))
        want = "not COCO annotations"
    pred, out = tmp_path / "pred.json", tmp_path / "r.json"
    line = _one_error(cli("eval", task_models["det_meta"], images, "--annotations", ann, "--predictions", pred,
                          "--json", out, "-q", *args))
    assert want in line
    assert not pred.exists() and not out.exists()


# ----------------------------------------------------------------------------- segmentation


def _independent_miou(model: Path, images: Path, masks: Path) -> tuple[float, float, np.ndarray]:
    """mIoU by hand: the interpreter driven directly, Pillow's nearest resize, a counting loop."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    pre = Preprocess(size=(16, 16), color="rgb", mean=0.0, std=255.0)
    cm = np.zeros((SEG_CLASSES, SEG_CLASSES), np.int64)
    for img in sorted(images.iterdir()):
        x = load_image(img, pre)[None]
        if din["dtype"] == np.uint8:
            s, z = din["quantization"]
            x = np.clip(np.round(x / s + z), 0, 255).astype(np.uint8)
        it.set_tensor(din["index"], x)
        it.invoke()
        y = it.get_tensor(dout["index"])
        pred = (y[0].argmax(-1) if y.ndim == 4 else y[0]).astype(np.uint8)
        mask = np.asarray(Image.open(masks / (img.stem + ".png")))
        pred = np.asarray(Image.fromarray(pred).resize(mask.shape[::-1], Image.NEAREST))
        for t, p in zip(mask.ravel(), pred.ravel()):
            if t != 255:
                cm[t, p] += 1
    ious = [cm[c, c] / (cm[c].sum() + cm[:, c].sum() - cm[c, c]) for c in range(SEG_CLASSES)
            if cm[c].sum() + cm[:, c].sum()]
    return float(np.mean(ious)), float(np.trace(cm) / cm.sum()), cm


@pytest.mark.parametrize("mode", ["float32", "int8", "classmap"])
def test_segmentation_miou_against_a_plain_confusion_matrix(task_models, tmp_path, mode):
    images, masks = segmentation_set(tmp_path)
    r = evaluate_task(task_models[mode], images, task="segmentation", masks=masks,
                      num_classes=SEG_CLASSES if mode == "classmap" else None, workers=2)
    assert isinstance(r, SegmentationResult)
    miou, acc, cm = _independent_miou(task_models[mode], images, masks)
    assert np.array_equal(np.asarray(r.confusion), cm)
    assert r.miou == pytest.approx(miou) and r.pixel_accuracy == pytest.approx(acc)
    assert r.images == 5 and r.classes == SEG_CLASSES and 0.0 < r.miou < 1.0
    assert SegmentationResult.from_json(r.to_json()) == r


@pytest.mark.slow
def test_segmentation_cli_and_bad_masks(cli, task_models, tmp_path):
    images, masks = segmentation_set(tmp_path)
    out = tmp_path / "seg.json"
    proc = cli("eval", task_models["float32"], images, "--task", "segmentation", "--masks", masks, "--json", out, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "mIoU" in proc.stdout and json.loads(out.read_text())["schema"] == "edgeq-device/segmentation/1"
    args = ("eval", task_models["float32"], images, "--task", "segmentation", "--masks", masks, "-q")
    m = np.asarray(Image.open(masks / "s1.png")).copy()
    Image.fromarray(m[:10]).save(masks / "s1.png")
    assert "mask is 24x10, its image s1.jpg 24x20" in _one_error(cli(*args))
    m[3, 3] = 9
    Image.fromarray(m).save(masks / "s1.png")
    assert "mask holds class 9, the model has 4 classes" in _one_error(cli(*args))
    (masks / "s1.png").unlink()
    assert "no mask for image s1.jpg" in _one_error(cli(*args))
    line = _one_error(cli("eval", task_models["classmap"], images, "--task", "segmentation", "--masks", masks, "-q"))
    assert "--num-classes" in line


# ----------------------------------------------------------------------------- fidelity


def _run_by_hand(model: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    din, dout = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for s in x:
        v = s[None]
        if din["dtype"] != np.float32:
            sc, z = din["quantization"]
            info = np.iinfo(din["dtype"])
            v = np.clip(np.round(v / sc + z), info.min, info.max).astype(din["dtype"])
        it.set_tensor(din["index"], v)
        it.invoke()
        y = it.get_tensor(dout["index"])[0]
        if dout["dtype"] != np.float32:
            sc, z = dout["quantization"]
            y = (y.astype(np.float64) - z) * sc
        rows.append(y)
    return np.asarray(rows, np.float64)


def test_fidelity_of_int8_to_the_float_model_against_numpy(cli, models, tmp_path):
    x = models.train_x[:40].astype(np.float32)
    ref = _run_by_hand(models["float32"], x)
    got = _run_by_hand(models["int8_io_uint8"], x)
    key = output_keys(read_flat_model(models["int8_io_uint8"]))[0]
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "ref.npz", **{key: ref})
    r = evaluate_task(models["int8_io_uint8"], inputs=tmp_path / "x.npy", reference=tmp_path / "ref.npz", workers=2)
    assert isinstance(r, FidelityResult) and r.samples == 40 and len(r.outputs) == 1
    o = r.outputs[0]
    assert o.sqnr_db == pytest.approx(10 * np.log10((ref ** 2).sum() / ((ref - got) ** 2).sum()), rel=1e-5)
    assert o.max_abs_error == pytest.approx(np.abs(ref - got).max(), rel=1e-5)
    assert o.argmax_agreement == pytest.approx(np.mean(ref.argmax(1) == got.argmax(1)))
    assert 10 < o.sqnr_db < 60
    # the float model against its own outputs, reference keyed by index: +inf, written strictly
    np.savez(tmp_path / "ref0.npz", **{"0": ref})
    out = tmp_path / "f.json"
    proc = cli("eval", models["float32"], "--inputs", tmp_path / "x.npy", "--reference", tmp_path / "ref0.npz",
               "--json", out, "-q")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["outputs"][0]["sqnr_db"] is None and doc["outputs"][0]["nonfinite"] == {"sqnr_db": "inf"}
    assert FidelityResult.from_dict(doc).outputs[0].sqnr_db == math.inf and "inf" in proc.stdout


def test_fidelity_bad_input(cli, models, tmp_path):
    x = models.train_x[:6].astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "wrong_key.npz", logits=np.zeros((6, 10)))
    np.savez(tmp_path / "wrong_shape.npz", **{"0": np.zeros((6, 7))})
    np.savez(tmp_path / "wrong_count.npz", **{"0": np.zeros((5, 10))})
    np.save(tmp_path / "x_shape.npy", np.zeros((6, 27, 28, 1), np.float32))
    base = ("eval", models["float32"], "--inputs")
    cases = {
        (tmp_path / "x.npy", tmp_path / "wrong_key.npz"): "no array for the model's output",
        (tmp_path / "x.npy", tmp_path / "wrong_shape.npz"): "the reference (7,)",
        (tmp_path / "x.npy", tmp_path / "wrong_count.npz"): "holds 5 samples, the inputs 6",
        (tmp_path / "x_shape.npy", tmp_path / "wrong_count.npz"): "takes samples of shape (28, 28, 1)",
    }
    for (inputs, ref), want in cases.items():
        out = tmp_path / "f.json"
        line = _one_error(cli(*base, inputs, "--reference", ref, "--json", out, "-q"))
        assert want in line and not out.exists()
    with pytest.raises(InvalidArgumentError, match="reference"):
        evaluate_task(models["float32"], task="fidelity", inputs=tmp_path / "x.npy")
    with pytest.raises(InvalidArgumentError, match="predictions file is written by detection, not fidelity"):
        evaluate_task(models["float32"], inputs=tmp_path / "x.npy", reference=tmp_path / "wrong_key.npz",
                      predictions=tmp_path / "p.json")


# ----------------------------------------------------------------------------- arrays, task names


def test_classification_of_arrays_with_npy_labels(cli, models, tmp_path):
    x = models.train_x[:50].astype(np.float32)
    probs = _run_by_hand(models["int8"], x)
    y = probs.argmax(1)
    y[:5] = (y[:5] + 1) % 10  # five wrong
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    r = evaluate_task(models["int8"], inputs=tmp_path / "x.npy", labels_npy=tmp_path / "y.npy", workers=2)
    assert r.top1 == pytest.approx(45 / 50)
    proc = cli("eval", models["int8"], "--inputs", tmp_path / "x.npy", "--labels-npy", tmp_path / "y.npy", "-q")
    assert proc.returncode == 0 and "top-1      0.9000" in proc.stdout, proc.stderr
    np.save(tmp_path / "y_bad.npy", np.full(50, 12))
    line = _one_error(cli("eval", models["int8"], "--inputs", tmp_path / "x.npy", "--labels-npy",
                          tmp_path / "y_bad.npy", "-q"))
    assert "the model has 10 classes" in line


def test_unknown_task_and_old_metadata(cli, models):
    assert "unknown value (received 'pose')" in cli("eval", models["float32"], "--task", "pose").stderr
    assert read_metadata(models["meta_uint8"]).task is None  # written before tasks existed
    runner = ModelRunner(models["float32"])
    assert len(runner.output_details) == 1


@pytest.mark.slow
def test_segmenter_with_tflite_support_metadata_names_its_classes(task_models, tflite_support_python, tmp_path):
    from fixtures.elsewhere import write_classifier_metadata

    names = ("background", "red", "green", "blue")[:SEG_CLASSES]
    model = tmp_path / "seg_meta.tflite"
    shown = write_classifier_metadata(tflite_support_python, task_models["float32"], model, names, 0.0, 255.0,
                                      kind="segmenter")
    assert shown["packed"] == ["labels.txt"]
    images, masks = segmentation_set(tmp_path)
    r = evaluate_task(model, images, task="segmentation", masks=masks)
    assert isinstance(r, SegmentationResult)
    miou, _, cm = _independent_miou(task_models["float32"], images, masks)
    assert np.array_equal(np.asarray(r.confusion), cm) and r.miou == pytest.approx(miou)
    assert tuple(c.name for c in r.per_class) == names
    assert r.preprocess_sources == {"size": "input", "color": "TFLite metadata", "normalization": "TFLite metadata"}
