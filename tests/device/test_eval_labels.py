"""Class folders become the same class indices whichever folders hold images.

A test subset without some classes (empty class folders, or missing ones) must score
what a plain LiteRT loop scores on the same files with folder ``k`` = output ``k``;
labels from ``--labels`` or the model's metadata win over folder names; other names
are numbered as Keras' ``image_dataset_from_directory`` numbers them.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from edgeq_device import EvalResult, LabelMismatchError, evaluate, list_image_folder
from edgeq_device.tasks.evaluation import format_eval
from label_folders import class_files, plain_litert_top1, subset

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def test_only_classes_3_and_7_score_like_a_plain_loop(models, mnist_dir, tmp_path):
    data = subset(mnist_dir / "test", tmp_path / "data", {3: None, 7: None})
    ref = plain_litert_top1(models["int8"], class_files(data, {"3": 3, "7": 7}))
    r = evaluate(models["int8"], data, keep_predictions=True)
    assert ref > 0.8  # the model knows these digits: a shifted label would score near 0
    assert r.top1 == pytest.approx(ref, abs=0)
    assert r.labels_from == "folders" and r.class_order == "integers"
    assert r.class_folders == {"3": 3, "7": 7} and r.classes == tuple(str(i) for i in range(10))
    assert [c.images for c in r.per_class] == [0, 0, 0, 15, 0, 0, 0, 15, 0, 0]


def test_cifar_like_folder_with_empty_classes(models, mnist_dir, tmp_path):
    empty = ("0", "4", "8")
    data = subset(mnist_dir / "test", tmp_path / "data", {d: None for d in range(10) if str(d) not in empty},
                  per_class=8, empty=empty)
    with pytest.warns(UserWarning, match=r"class folder\(s\) with no image.*0, 4, 8"):
        listing = list_image_folder(data)
    assert listing.empty == empty and listing.class_order == "integers"
    assert dict(listing.folders) == {str(d): d for d in range(10)}
    ref = plain_litert_top1(models["int8_io_int8"], class_files(data, {str(d): d for d in range(10)}))
    with pytest.warns(UserWarning, match="no image"):
        r = evaluate(models["int8_io_int8"], data)
    assert r.top1 == pytest.approx(ref, abs=0) and ref > 0.7
    assert r.empty_folders == empty and r.images == 56
    text = format_eval(r)
    assert "labels     from folders (integer names: folder k = output k): 0→0, 1→1, 2→2, 3→3, 4→4, … (10 folders)" \
        in text
    assert "empty      class folders with no image (still classes): 0, 4, 8" in text
    d = json.loads(r.to_json())
    assert d["class_order"] == "integers" and d["class_folders"]["9"] == 9 and d["empty_folders"] == list(empty)
    assert EvalResult.from_dict(d) == r


def test_integer_folder_beyond_the_outputs_is_named(models, mnist_dir, tmp_path):
    data = subset(mnist_dir / "test", tmp_path / "data", {3: None, 7: "12"})
    with pytest.raises(LabelMismatchError, match=r"class folder '12' is output 12, but the model has 10 outputs") as e:
        evaluate(models["int8"], data)
    assert "--labels" in str(e.value)
    twins = subset(mnist_dir / "test", tmp_path / "twins", {3: None, 7: "03"}, per_class=2)
    with pytest.raises(LabelMismatchError, match="03, 3 are the same integer"):
        list_image_folder(twins)


def test_other_names_are_numbered_as_keras_numbers_them(models, mnist_dir, tmp_path):
    keras = pytest.importorskip("keras")
    names = {d: w for d, w in enumerate(WORDS)}
    names[1] = "One"  # upper case sorts first, as sorted() does
    data = subset(mnist_dir / "test", tmp_path / "words", names, per_class=2, empty=("._hidden", ".cache"))
    shutil.rmtree(data / "two")
    (data / "two").mkdir()  # an empty class folder is a class to Keras too
    ds = keras.utils.image_dataset_from_directory(data, image_size=(28, 28), color_mode="grayscale",
                                                  shuffle=False, verbose=False)
    with pytest.warns(UserWarning, match="two"):
        listing = list_image_folder(data)
    assert listing.class_order == "sorted" and listing.class_names == tuple(ds.class_names)
    assert dict(listing.folders) == {name: i for i, name in enumerate(ds.class_names)}
    keras_labels = np.concatenate([y.numpy() for _, y in ds])
    assert list(listing.labels or ()) == keras_labels.tolist()


def test_labels_and_metadata_win_over_folder_names(models, mnist_dir, tmp_path, model_tools):
    data = subset(mnist_dir / "test", tmp_path / "words", dict(enumerate(WORDS)), per_class=6)
    ref = plain_litert_top1(models["int8_io_uint8"], class_files(data, {w: d for d, w in enumerate(WORDS)}))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(WORDS) + "\n")
    by_file = evaluate(models["int8_io_uint8"], data, labels=labels)
    assert by_file.labels_from == "labels" and by_file.class_order == "names"
    assert by_file.top1 == pytest.approx(ref, abs=0) and ref > 0.8
    meta = model_tools.mnist_metadata()
    meta["labels"] = list(WORDS)
    model = tmp_path / "words.tflite"
    model.write_bytes(model_tools.add_edgeq_metadata(models["int8_io_uint8"].read_bytes(), meta))
    by_meta = evaluate(model, data)
    assert by_meta.labels_from == "metadata" and by_meta.top1 == by_file.top1
    assert by_meta.class_folders == {w: d for d, w in enumerate(WORDS)}
    assert "labels     from metadata (folders named after the labels): zero→0, one→1" in format_eval(by_meta)
    # Integer folders with named labels: folder k is output k, named by the labels.
    digits = subset(mnist_dir / "test", tmp_path / "digits", {2: None, 5: None}, per_class=6)
    r = evaluate(model, digits)
    assert r.class_order == "integers" and r.classes[2] == "two"
    assert r.top1 == pytest.approx(plain_litert_top1(model, class_files(digits, {"2": 2, "5": 5})), abs=0)


def test_fewer_named_folders_than_outputs_is_refused(models, mnist_dir, tmp_path):
    data = subset(mnist_dir / "test", tmp_path / "data", {3: "three", 7: "seven"}, per_class=2)
    with pytest.raises(LabelMismatchError, match="2 class folders but the model has 10 outputs: sorted") as e:
        evaluate(models["int8"], data)
    assert "--labels" in str(e.value)


@pytest.mark.slow
def test_cli_eval_shows_labels_and_warns_about_empty_folders(cli, models, mnist_dir, tmp_path):
    data = subset(mnist_dir / "test", tmp_path / "data", {3: None, 7: None}, per_class=5, empty=("0", "9"))
    proc = cli("eval", models["int8"], data, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "labels     from folders (integer names: folder k = output k): 0→0, 3→3, 7→7, 9→9" in proc.stdout
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    # One line each: the empty folders, and the guessed [0, 1] pixels of a float model with no metadata.
    assert len(warnings) == 2 and "no image" in warnings[1] and "0, 9" in warnings[1]
    assert "float32 input and no metadata" in warnings[0] and "--mean/--std" in warnings[0]
    assert "preprocessing  (pixel - 0) / 255, a guess (model input is float32, no metadata" in proc.stdout
    payload = json.loads(cli("eval", models["int8"], data, "-q", "--json", "-").stdout)
    assert payload["class_folders"] == {"0": 0, "3": 3, "7": 7, "9": 9} and payload["labels_from"] == "folders"

    (data / "12").mkdir()
    shutil.copy(next((data / "3").glob("*.png")), data / "12")
    proc = cli("eval", models["int8"], data, "-q")
    errors = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr
    assert errors[0].startswith("error: data: class folder '12'") and "--labels" in errors[0]


def test_model_with_too_few_metadata_labels_names_the_way_out(cli, models, mnist_dir, tmp_path, model_tools):
    # What earlier conversions wrote after dropping two empty calibration folders: 8 labels, 10 outputs.
    meta = model_tools.mnist_metadata()
    meta["labels"] = [str(d) for d in range(10) if d not in (0, 4)]
    model = tmp_path / "shifted.tflite"
    model.write_bytes(model_tools.add_edgeq_metadata(models["int8_io_uint8"].read_bytes(), meta))
    data = subset(mnist_dir / "test", tmp_path / "data", {3: None, 7: None}, per_class=5)
    with pytest.raises(LabelMismatchError, match="metadata holds 8 labels for its 10 outputs") as e:
        evaluate(model, data)
    assert e.value.argument == "model" and "--labels" in str(e.value)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(str(d) for d in range(10)) + "\n")
    proc = cli("eval", model, data, "--labels", labels, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "labels     from labels (folders named after the labels): 3→3, 7→7" in proc.stdout
    ref = plain_litert_top1(model, class_files(data, {"3": 3, "7": 7}))
    assert f"top-1      {ref:.4f}" in proc.stdout
