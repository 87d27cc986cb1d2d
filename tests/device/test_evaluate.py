"""edgeq-device eval and predict: figures equal a plain one-interpreter reference loop's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from edgeq_device import (
    DataError,
    EvalResult,
    LabelMismatchError,
    Preprocess,
    evaluate,
    list_image_folder,
    model_preprocess,
    predict,
)
from edgeq_device.tasks.evaluation import format_eval, read_labels

MODES = ("float32", "float16", "dynamic", "int8", "int8_io_int8", "int8_io_uint8")
MNIST_PRE = Preprocess(size=(28, 28), color="l", mean=0, std=255)


def reference_outputs(model: Path, folder: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """The straightforward loop: one plain interpreter, one image at a time, by hand."""
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    outputs, labels, files = [], [], []
    for class_index, class_dir in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        for f in sorted(class_dir.glob("*.png")):
            with Image.open(f) as im:
                x = np.asarray(im.convert("L"), np.float32)[None, :, :, None] / 255.0
            scale, zp = inp["quantization"]
            if inp["dtype"] != np.float32:
                info = np.iinfo(inp["dtype"])
                x = np.clip(np.round(x / scale + zp), info.min, info.max).astype(inp["dtype"])
            interp.set_tensor(inp["index"], x)
            interp.invoke()
            y = interp.get_tensor(out["index"])[0].astype(np.float64)
            o_scale, o_zp = out["quantization"]
            if out["dtype"] != np.float32:
                y = (y - o_zp) * o_scale
            outputs.append(y)
            labels.append(class_index)
            files.append(f)
    return np.asarray(outputs), np.asarray(labels), files


@pytest.mark.parametrize("mode", MODES)
def test_eval_equals_reference_loop(models, small_test_dir, mode):
    ref_out, ref_labels, ref_files = reference_outputs(models[mode], small_test_dir)
    ref_pred = ref_out.argmax(axis=1)
    r = evaluate(models[mode], small_test_dir, workers=2, keep_predictions=True)
    assert r.images == len(ref_files) == 200
    assert r.files == tuple(str(f) for f in ref_files)
    assert r.predictions == tuple(int(p) for p in ref_pred)
    assert r.top1 == pytest.approx(float((ref_pred == ref_labels).mean()), abs=0)
    assert r.top1 > 0.75  # the model learned something: the figures are not chance
    assert r.top5 >= r.top1 and r.top_k == 5
    cm = np.asarray(r.confusion)
    assert cm.sum() == 200 and np.trace(cm) == round(r.top1 * 200)
    assert [c.images for c in r.per_class] == [20] * 10
    for c, row in zip(r.per_class, cm):
        assert c.correct == row[int(c.name)] and c.accuracy == pytest.approx(c.correct / 20)
    assert r.labels_from == "folders" and r.workers == 2 and r.threads == 1


@pytest.mark.parametrize("mode", ["int8_io_uint8", "float32"])
def test_predict_outputs_equal_reference_and_do_not_depend_on_workers(models, small_test_dir, mode):
    ref_out, ref_labels, _ = reference_outputs(models[mode], small_test_dir)
    listing = list_image_folder(small_test_dir)
    one, labels = predict(models[mode], listing, MNIST_PRE, workers=1)
    two, labels2 = predict(models[mode], listing, MNIST_PRE, workers=2)
    assert one.shape == (200, 10) and one.dtype == np.float32
    assert np.array_equal(labels, ref_labels) and np.array_equal(labels2, ref_labels)
    tol = 0 if mode.startswith("int8") else 1e-5
    np.testing.assert_allclose(one, ref_out, atol=tol, rtol=0)
    np.testing.assert_allclose(two, one, atol=tol, rtol=0)


def test_top5_counts_true_class_among_five_best(models, small_test_dir):
    r = evaluate(models["float32"], small_test_dir, workers=1)
    out, labels = predict(models["float32"], small_test_dir, MNIST_PRE)
    order = np.argsort(-out, axis=1)[:, :5]
    assert r.top5 == pytest.approx(np.mean([lab in row for lab, row in zip(labels, order)]))


def test_limit_is_a_seeded_sample(models, mnist_dir):
    a = evaluate(models["int8"], mnist_dir / "test", limit=60, seed=1, keep_predictions=True)
    b = evaluate(models["int8"], mnist_dir / "test", limit=60, seed=1, keep_predictions=True)
    c = evaluate(models["int8"], mnist_dir / "test", limit=60, seed=2, keep_predictions=True)
    assert a.images == 60 and a.limit == 60
    assert a.files == b.files and a.top1 == b.top1
    assert a.files != c.files


def test_metadata_gives_preprocessing_and_labels(models, small_test_dir):
    with_meta = evaluate(models["meta_uint8"], small_test_dir, keep_predictions=True)
    by_flags = evaluate(models["int8_io_uint8"], small_test_dir, keep_predictions=True,
                        preprocess=model_preprocess(models["int8_io_uint8"], size=(28, 28), color="l",
                                                    mean=0, std=255))
    assert with_meta.labels_from == "metadata" and by_flags.labels_from == "folders"
    assert with_meta.mode == "int8" and with_meta.preprocess.size == (28, 28)
    assert with_meta.predictions == by_flags.predictions and with_meta.top1 == by_flags.top1
    # Without metadata the input shape [1, 28, 28, 1] gives the size and grayscale.
    inferred = model_preprocess(models["float32"])
    assert (inferred.size, inferred.color.value, inferred.mean, inferred.std) == ((28, 28), "l", (0.0,), (255.0,))


def test_labels_file_and_mismatches(models, small_test_dir, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(d) for d in range(10)) + "\n\n")
    assert read_labels(labels) == tuple(str(d) for d in range(10))
    r = evaluate(models["int8"], small_test_dir, labels=labels)
    assert r.labels_from == "labels" and r.classes[9] == "9"
    nine = tmp_path / "nine.txt"
    nine.write_text("\n".join(str(d) for d in range(9)))
    with pytest.raises(LabelMismatchError, match="9 labels for a model with 10 outputs"):
        evaluate(models["int8"], small_test_dir, labels=nine)
    eleven = tmp_path / "eleven"
    shutil.copytree(small_test_dir, eleven)
    shutil.copytree(small_test_dir / "3", eleven / "x")
    with pytest.raises(LabelMismatchError, match="11 class folders but the model has 10 outputs"):
        evaluate(models["int8"], eleven)
    with pytest.raises(LabelMismatchError, match="not in the labels: x"):
        evaluate(models["meta_uint8"], eleven)


def test_unreadable_images(models, small_test_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_test_dir, data)
    bad = data / "4" / "broken.png"
    bad.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png"):
        evaluate(models["int8"], data)
    r = evaluate(models["int8"], data, skip_unreadable=True, keep_predictions=True)
    assert r.skipped == (str(bad),) and r.images == 200 and str(bad) not in (r.files or ())
    clean = evaluate(models["int8"], small_test_dir)
    assert r.top1 == clean.top1


def test_folder_and_size_errors(models, small_test_dir, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((small_test_dir / "7").glob("*.png"))[:5]:
        shutil.copy(f, flat / f.name)
    with pytest.raises(DataError, match="labeled folder"):
        evaluate(models["int8"], flat)
    out, labels = predict(models["int8"], flat, MNIST_PRE)  # predict takes unlabeled folders
    assert out.shape == (5, 10) and labels is None
    with pytest.raises(DataError, match=r"shape \(32, 32, 1\)"):
        evaluate(models["int8"], small_test_dir, preprocess=Preprocess(size=(32, 32), color="l"))
    with pytest.raises(DataError, match="not found"):
        evaluate(models["int8"], tmp_path / "nowhere")


def test_eval_json_round_trip(models, small_test_dir):
    r = evaluate(models["meta_uint8"], small_test_dir, limit=30, keep_predictions=True)
    d = json.loads(r.to_json())
    assert d["schema"] == "edgeq-device/eval/1"
    assert d["preprocess"]["color"] == "l" and len(d["confusion"]) == 10
    back = EvalResult.from_dict(d)
    assert back == r
    assert "top-1" in format_eval(r) and "confusion" in format_eval(r)
    assert str(r) == format_eval(r) and "edgeq-device/eval/1" in r._repr_html_()


def test_eval_result_with_nan_accuracy_writes_strict_json(models, small_test_dir):
    """A class with no image has accuracy None; a NaN top-1 is written as null and read back."""
    import dataclasses
    import math

    r = evaluate(models["meta_uint8"], small_test_dir, limit=20)
    odd = dataclasses.replace(r, top1=math.nan, images_per_second=math.inf)

    def refuse(name: str) -> object:
        raise ValueError(f"not strict JSON: {name}")

    d = json.loads(odd.to_json(), parse_constant=refuse)
    assert d["top1"] is None and d["nonfinite"] == {"top1": "nan", "images_per_second": "inf"}
    back = EvalResult.from_dict(d)
    assert math.isnan(back.top1) and back.images_per_second == math.inf
    assert dataclasses.replace(back, top1=0.0) == dataclasses.replace(odd, top1=0.0)


def test_confusion_matrix_keeps_class_names_whole_in_80_columns(models, small_test_dir):
    d = evaluate(models["meta_uint8"], small_test_dir, limit=30).to_dict()
    digits = format_eval(EvalResult.from_dict(d))
    assert "confusion (rows: true, columns: predicted)" in digits
    cifar = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    d["classes"] = cifar
    for c, name in zip(d["per_class"], cifar):
        c["name"] = name
    text = format_eval(EvalResult.from_dict(d))
    matrix = text.split("confusion")[1].splitlines()[2:]
    assert [line.split()[:2] for line in matrix] == [[str(i), name] for i, name in enumerate(cifar)]
    assert max(len(line) for line in matrix) <= 80
