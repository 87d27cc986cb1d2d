"""edgeq.compare(task="detection"|"segmentation"): every mode's mAP or mIoU and fidelity, checked independently.

A Keras detector that reads its answer from the image's first row (so the truth and the
predictions are set by the test) and a small segmenter trained for a few seconds on
synthetic masks. The Keras figures are recomputed here with pycocotools and a plain NumPy
confusion matrix; the modes' figures must equal what ``edgeq_device`` evaluates on the
saved ``.tflite`` files; fidelity must equal ``edgeq-device eval --inputs --reference`` on
the ``inputs.npz``/``reference.npz`` that compare writes.
"""

from __future__ import annotations

import contextlib
import io
import json

import keras
import numpy as np
import pycocotools  # noqa: F401  (a test dependency: a broken install fails here)
import pytest
from click.testing import CliRunner
from edgeq_device.model.preprocess import Preprocess
from PIL import Image

from edgeq.cli import cli
from edgeq.comparison.records import Comparison
from edgeq.comparison.run import compare
from edgeq.errors import DataError, InvalidArgumentError
from edgeq.store.db import ResultsStore

DET, DET_W, DET_H = 32, 64, 96
SEG, SEG_CLASSES = 16, 3
NEAREST = Preprocess(size=(DET, DET), resize="nearest")  # the code pixels read back unblended
FAST = {"threads": (1,), "runs": 4, "min_secs": 0.01, "max_secs": 0.5, "samples": 8}


def _detector():
    """Keras detector: boxes, classes, scores and count read from the first row's red channel (k/255)."""
    inp = keras.Input((DET, DET, 3), name="image")
    code = keras.layers.Lambda(lambda t: t[:, 0, :, 0], name="code")(inp)
    boxes = keras.layers.Reshape((2, 4), name="boxes")(keras.layers.Lambda(lambda c: c[:, 0:8])(code))
    classes = keras.layers.Lambda(lambda c: c[:, 8:10] * 255.0, name="classes")(code)
    scores = keras.layers.Lambda(lambda c: c[:, 10:12], name="scores")(code)
    count = keras.layers.Lambda(lambda c: c[:, 12] * 255.0, name="count")(code)
    return keras.Model(inp, {"boxes": boxes, "classes": classes, "scores": scores, "count": count})


def _det_image(boxes, classes, scores, count, seed):
    code = np.zeros(DET, np.uint8)
    code[0:8] = np.asarray(boxes, np.uint8).ravel()
    code[8:10], code[10:12], code[12] = classes, scores, count
    img = np.random.default_rng(seed).integers(0, 255, (DET_H, DET_W, 3), dtype=np.uint8)
    sx, sy = DET_W // DET, DET_H // DET
    for c in range(DET):
        img[0:sy, sx * c:sx * (c + 1), 0] = code[c]
    return Image.fromarray(img)


@pytest.fixture(scope="module")
def det_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(5)
    imgs, anns = [], []
    for k in range(8):
        truth = [[int(v) for v in sorted(rng.integers(0, 120, 2))] + [int(v) for v in sorted(rng.integers(130, 255, 2))]
                 for _ in range(2)]
        pred = [list(b) for b in truth]
        if k % 3 == 1:
            pred[1] = [min(v + 40, 255) for v in pred[1]]
        _det_image(pred, [0, 1], [230, 150], 1 if k == 7 else 2, k).save(images / f"im{k}.png")
        imgs.append({"id": 100 + k, "file_name": f"im{k}.png", "width": DET_W, "height": DET_H})
        for j, (y0, x0, y1, x1) in enumerate(truth):
            bbox = [x0 / 255 * DET_W, y0 / 255 * DET_H, (x1 - x0) / 255 * DET_W, (y1 - y0) / 255 * DET_H]
            anns.append({"id": len(anns) + 1, "image_id": 100 + k, "category_id": j + 1, "bbox": bbox,
                         "area": bbox[2] * bbox[3], "iscrowd": 0})
    coco = {"images": imgs, "annotations": anns, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    ann = root / "instances.json"
    ann.write_text(json.dumps(coco))
    return images, ann, coco


@pytest.fixture(scope="module")
def det_comparison(det_data, tmp_path_factory):
    images, ann, _ = det_data
    db = tmp_path_factory.mktemp("store") / "results.db"
    comp = compare(_detector(), calibration=images, evaluation=images, task="detection", annotations=ann,
                   modes=["float32", "int8"], store=db, preprocess=NEAREST, labels=("cat", "dog"), **FAST)
    return comp, db


def _pycocotools_map(coco, results):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(coco))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1]


def test_detection_keras_map_equals_pycocotools_on_its_own_outputs(det_comparison, det_data):
    comp, _ = det_comparison
    images, _, coco = det_data
    model = _detector()
    results = []
    for im in coco["images"]:
        with Image.open(images / im["file_name"]) as pil:
            x = np.asarray(pil.convert("RGB").resize((DET, DET), Image.NEAREST), np.float32)[None] / 255.0
        out = model(x)
        boxes, cls, sc = (np.asarray(out[k])[0] for k in ("boxes", "classes", "scores"))
        n = round(float(np.asarray(out["count"])[0]))
        for b, c, s in list(zip(boxes, cls, sc))[:n]:
            y0, x0, y1, x1 = np.clip(b, 0, 1)
            results.append({"image_id": im["id"], "category_id": round(float(c)) + 1, "score": float(s),
                            "bbox": [x0 * DET_W, y0 * DET_H, (x1 - x0) * DET_W, (y1 - y0) * DET_H]})
    m, m50 = _pycocotools_map(coco, results)
    keras_row = comp.row("keras")
    assert keras_row.task_metrics["map"] == pytest.approx(m, abs=2e-3)
    assert keras_row.task_metrics["map50"] == pytest.approx(m50, abs=2e-3)
    assert 0.2 < m < 0.99  # some boxes poor, one missed: neither nothing nor everything
    f32 = comp.row("float32")
    assert f32.task_metrics["map"] == pytest.approx(m, abs=2e-3)
    assert f32.task_change_points == pytest.approx(0.0, abs=0.2)


def test_detection_modes_equal_edgeq_device_on_the_saved_models(det_comparison, det_data, tmp_path):
    from edgeq_device.model.metadata import read_metadata
    from edgeq_device.tasks.fidelity import evaluate_fidelity
    from edgeq_device.tasks.registry import evaluate_task

    comp, _ = det_comparison
    images, ann, _ = det_data
    written = comp.save(tmp_path / "out")
    ref = np.load(tmp_path / "out" / "reference.npz")
    assert sorted(ref.files) == ["boxes", "classes", "count", "scores"]  # the converted models' output names
    assert {"plots/precision_recall.png", "inputs.npz", "reference.npz"} <= set(written)
    for row in comp.rows[1:]:
        model = tmp_path / "out" / "models" / comp.results[row.name].default_filename
        r = evaluate_task(model, images, task="detection", annotations=ann)  # outputs found by their names
        meta = read_metadata(model.read_bytes())
        assert meta is not None and meta.task == "detection" and meta.task_settings == {"class_offset": 1}
        untold = evaluate_task(model, images, annotations=ann)  # the task from the model's metadata
        assert untold.map == pytest.approx(r.map, abs=1e-12)
        assert row.task_metrics["map"] == pytest.approx(r.map, abs=1e-9)
        assert row.task_metrics["map50"] == pytest.approx(r.map50, abs=1e-9)
        fid = evaluate_fidelity(model, tmp_path / "out" / "inputs.npz", tmp_path / "out" / "reference.npz")
        assert [o.sqnr_db for o in fid.outputs] == pytest.approx([o["sqnr_db"] for o in row.outputs_fidelity])
    assert min(o["sqnr_db"] for o in comp.row("float32").outputs_fidelity) > 60
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| mAP | Δ mAP | mAP@.5 |" in text and "## Fidelity per output" in text
    again = Comparison.from_dict(json.loads((tmp_path / "out" / "results.json").read_text()))
    assert again.task == "detection" and again.row("int8").task_metrics == comp.row("int8").task_metrics
    assert "mAP" in str(comp)


def _segmenter(x, y):
    keras.utils.set_random_seed(3)
    inp = keras.Input((SEG, SEG, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    out = keras.layers.Conv2D(SEG_CLASSES, 1, activation="softmax")(h)
    model = keras.Model(inp, out)
    model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    """Images 24x20 whose pixels' class is the dominant colour (red 1, blue 2, else 0), masks with an ignored band."""
    root = tmp_path_factory.mktemp("seg")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(8)
    for k in range(10):
        img = rng.integers(0, 90, (20, 24, 3), dtype=np.uint8)
        mask = np.zeros((20, 24), np.uint8)
        for cls, ch in ((1, 0), (2, 2)):
            y0, x0 = rng.integers(0, 12), rng.integers(0, 14)
            img[y0:y0 + 8, x0:x0 + 10, ch] = 240
            mask[y0:y0 + 8, x0:x0 + 10] = cls
        mask[:2] = 255
        Image.fromarray(img).save(images / f"s{k}.png")
        Image.fromarray(mask).save(masks / f"s{k}.png")
    return images, masks


@pytest.fixture(scope="module")
def seg_model():
    """Trained for a few seconds on synthetic 16x16 images of the same rule as ``seg_data``."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 0.35, (256, SEG, SEG, 3)).astype(np.float32)
    y = np.zeros((256, SEG, SEG), np.int64)
    for k in range(256):
        for cls, ch in ((1, 0), (2, 2)):
            y0, x0 = rng.integers(0, 10), rng.integers(0, 10)
            x[k, y0:y0 + 6, x0:x0 + 7, ch] = 0.94
            y[k, y0:y0 + 6, x0:x0 + 7] = cls
    return _segmenter(x, y)


def test_segmentation_miou_against_numpy_and_the_device(seg_model, seg_data, tmp_path):
    from edgeq_device.model.preprocess import Preprocess, load_image
    from edgeq_device.tasks.registry import evaluate_task

    images, masks = seg_data
    db = tmp_path / "results.db"
    comp = compare(seg_model, calibration=images, evaluation=images, task="segmentation", masks=masks,
                   modes=["float32", "int8"], store=db, max_drop=50, **FAST)
    cm = np.zeros((SEG_CLASSES, SEG_CLASSES), np.int64)
    for p in sorted(images.iterdir()):
        scores = np.asarray(seg_model(load_image(p, Preprocess(size=(SEG, SEG)))[None]))[0]
        mask = np.asarray(Image.open(masks / p.name), np.int64)
        pred = np.asarray(Image.fromarray(scores.argmax(-1).astype(np.int32)).resize((24, 20), Image.NEAREST))
        keep = mask != 255
        for t, q in zip(mask[keep], pred[keep]):
            cm[t, q] += 1
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    keras_row = comp.row("keras")
    assert keras_row.task_metrics["miou"] == pytest.approx(float(iou.mean()))
    assert keras_row.task_metrics["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    assert keras_row.task_metrics["miou"] > 0.5  # it learned the colours
    comp.save(tmp_path / "out")
    for row in comp.rows[1:]:
        r = evaluate_task(tmp_path / "out" / "models" / comp.results[row.name].default_filename, images,
                          task="segmentation", masks=masks)
        assert row.task_metrics["miou"] == pytest.approx(r.miou)
        assert row.task_change_points == pytest.approx((r.miou - keras_row.task_metrics["miou"]) * 100)
        assert row.agreement is not None and row.outputs_fidelity[0]["argmax_agreement"] == row.agreement
    assert comp.recommendation.mode in ("float32", "int8") and "mIoU" in comp.recommendation.reason
    assert (tmp_path / "out" / "plots" / "class_iou.png").is_file()
    with ResultsStore(db) as st:
        runs = st.runs(mode="int8")
    assert runs and runs[0].task == "segmentation"
    assert runs[0].task_metric == pytest.approx(comp.row("int8").task_metrics["miou"])


@pytest.mark.slow
def test_cli_compare_task_segmentation_writes_the_report_and_the_reference(seg_model, seg_data, tmp_path):
    images, masks = seg_data
    model = tmp_path / "seg.keras"
    seg_model.save(model)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [str(a) for a in (
        "compare", model, "--calib", images, "--eval", images, "--task", "segmentation", "--masks", masks,
        "--modes", "int8", "--threads", "1", "--samples", "8", "--no-store", "-o", out, "--format", "md")],
        catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert "| mIoU | Δ mIoU | pixel acc |" in result.stdout
    assert "inputs.npz, reference.npz" in " ".join(result.stderr.split())  # the console wraps long paths
    data = json.loads((out / "results.json").read_text())
    assert data["schema"] == "edgeq/compare/3" and data["task"] == "segmentation"
    assert set(data["task_details"]["per_class"]) == {"keras", "int8"}
    assert (out / "reference.npz").is_file() and (out / "plots" / "class_iou.png").is_file()


def _one_line(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_bad_task_input_is_one_line_and_writes_nothing(det_data, seg_data, tmp_path):
    images, ann, coco = det_data
    model = tmp_path / "cnn.keras"  # the checks run before any model output is read
    inp = keras.Input((DET, DET, 3))
    keras.Model(inp, keras.layers.Conv2D(3, 1, activation="softmax")(inp)).save(model)
    out = tmp_path / "out"
    base = ["compare", model, "--calib", images, "--eval", images, "--modes", "float32", "--no-store", "-o", out]
    assert "--annotations" in _one_line(*base, "--task", "detection")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(dict(coco, images=coco["images"] + [{"id": 1, "file_name": "gone.png"}])))
    assert "gone.png" in _one_line(*base, "--task", "detection", "--annotations", broken)
    seg_images, seg_masks = seg_data
    small = tmp_path / "small"
    small.mkdir()
    for p in seg_masks.iterdir():
        Image.open(p).resize((12, 10), Image.NEAREST).save(small / p.name)
    line = _one_line("compare", model, "--calib", seg_images, "--eval", seg_images, "--modes", "float32",
                     "--no-store", "-o", out, "--task", "segmentation", "--masks", small)
    assert "masks" in line and "12x10" in line, line
    assert not out.exists()
    with pytest.raises(InvalidArgumentError, match="masks"):
        compare(_detector(), calibration=images, evaluation=images, masks=seg_masks, preprocess=NEAREST)
    with pytest.raises(DataError, match="outputs"):
        compare(_detector(), calibration=images, evaluation=images, task="detection", annotations=ann,
                outputs={"boxes": "nope", "classes": "classes", "scores": "scores"}, preprocess=NEAREST)


def test_classification_compare_keeps_reference_files_for_fidelity(tmp_path):
    """A one-output classifier's comparison also writes inputs.npz and reference.npz, keyed as the model."""
    from edgeq_device.tasks.fidelity import evaluate_fidelity

    keras.utils.set_random_seed(1)
    inp = keras.Input((8, 8, 1))
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.Flatten()(inp))
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).uniform(0, 1, (24, 8, 8, 1)).astype(np.float32)
    comp = compare(model, calibration=x, evaluation=x, modes=["int8"], **FAST)
    comp.save(tmp_path)
    fid = evaluate_fidelity(tmp_path / "models" / comp.results["int8"].default_filename, tmp_path / "inputs.npz",
                            tmp_path / "reference.npz")
    assert fid.samples == 24
    assert fid.outputs[0].sqnr_db == pytest.approx(comp.row("int8").sqnr_db, rel=1e-4)


@pytest.mark.slow
def test_compare_reads_cityscapes_label_ids_and_palette_masks(seg_model, seg_data, tmp_path):
    """The same truth stored as Cityscapes label IDs (--label-map cityscapes) and as VOC palette PNGs (the
    ignored band 254 and 255, --ignore-index 254-255) gives the Keras model the mIoU numpy counts."""
    from edgeq_device.model.preprocess import Preprocess, load_image

    images, masks = seg_data
    city, voc = tmp_path / "city", tmp_path / "voc"
    city.mkdir()
    voc.mkdir()
    cm = np.zeros((SEG_CLASSES, SEG_CLASSES), np.int64)
    for p in sorted(images.iterdir()):
        mask = np.asarray(Image.open(masks / p.name), np.int64)
        ids = np.select([mask == 0, mask == 1, mask == 2], [7, 8, 11], 0).astype(np.uint8)  # band: unlabeled
        Image.fromarray(ids).save(city / p.name)
        pal = np.where(mask == 255, 254, mask).astype(np.uint8)
        pal[:1] = 255
        im = Image.frombytes("P", (24, 20), pal.tobytes())
        im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
        im.save(voc / p.name)
        scores = np.asarray(seg_model(load_image(p, Preprocess(size=(SEG, SEG)))[None]))[0]
        pred = np.asarray(Image.fromarray(scores.argmax(-1).astype(np.int32)).resize((24, 20), Image.NEAREST))
        keep = mask != 255
        for t, q in zip(mask[keep], pred[keep]):
            cm[t, q] += 1
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    model = tmp_path / "seg.keras"
    seg_model.save(model)
    for folder, extra in ((city, ("--label-map", "cityscapes")), (voc, ("--ignore-index", "254-255"))):
        out = tmp_path / f"out-{folder.name}"
        result = CliRunner().invoke(cli, [str(a) for a in (
            "compare", model, "--calib", images, "--eval", images, "--task", "segmentation", "--masks", folder,
            *extra, "--modes", "float32", "--threads", "1", "--samples", "8", "--no-store", "-o", out,
            "--format", "md")], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
        assert rows["keras"]["task_metrics"]["miou"] == pytest.approx(float(iou.mean()))
        assert rows["float32"]["task_metrics"]["miou"] == pytest.approx(float(iou.mean()), abs=0.02)
