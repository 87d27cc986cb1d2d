"""Converted image models carry the standard TFLite metadata, and a third-party reader understands it.

The reader is MediaPipe (its generated ``metadata_schema.fbs`` code, and MediaPipe Tasks' ImageClassifier),
run in a cached venv of its own: MediaPipe needs ``absl-py~=2.3`` where tensorflow-model-optimization
needs ``~=1.2``, so it cannot live in the suite's venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import edgeq_device
import numpy as np
import pytest
from edgeq_device.model.metadata import read_metadata
from edgeq_device.model.preprocess import Preprocess

import edgeq
from edgeq.quantize.flatbuffer import packed_files, read_model

keras = pytest.importorskip("keras")

ROOT = Path(__file__).resolve().parents[3]
CONSUMER = Path(__file__).with_name("mediapipe_consumer.py")
#: the consumer's venv: MediaPipe's last release without OpenCV and matplotlib among its dependencies
MEDIAPIPE = ("mediapipe==0.10.31", "pillow==13.0.0")
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RGB, GRAYSCALE = 1, 2  # metadata_schema.fbs ColorSpaceType
AXIS_LABELS, VALUE_LABELS = 2, 3  # AssociatedFileType
IMAGE, BOXES = 2, 3  # ContentProperties


@pytest.fixture(scope="session")
def mediapipe_python() -> str:
    """A Python with MediaPipe (pinned in :data:`MEDIAPIPE`), in a venv made once with pip and cached."""
    import fcntl

    cache = Path(os.environ.get("EDGEQ_CACHE", "~/.cache/edgeq")).expanduser() / "mediapipe-venv"
    py = cache / "bin" / "python"
    stamp = cache / ".ready"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / ".mediapipe-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test process making the venv finishes first
        if not stamp.exists() or stamp.read_text().strip() != " ".join(MEDIAPIPE):
            shutil.rmtree(cache, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(cache)], check=True)
            res = subprocess.run([str(py), "-m", "pip", "install", "-q", *MEDIAPIPE], capture_output=True,
                                 text=True, timeout=900)
            if res.returncode != 0:
                pytest.skip(f"cannot install MediaPipe to read the metadata with: {res.stderr.strip()[-300:]}")
            stamp.write_text(" ".join(MEDIAPIPE) + "\n")
    return str(py)


def _consumer(python: str, *args: str) -> Any:
    res = subprocess.run([python, str(CONSUMER), *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _rgb_digits(digits_cnn: Any) -> Any:
    """The digits CNN behind an RGB input in [-1, 1]: the mean of the channels, mapped to [0, 1]."""
    inp = keras.Input((28, 28, 3), name="image")
    h = keras.layers.Rescaling(0.5, offset=0.5)(inp)
    gray = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer=keras.initializers.Constant(1 / 3))(h)
    return keras.Model(inp, digits_cnn(gray), name="rgb_digits")


@pytest.mark.slow
def test_a_classifier_reads_the_same_labels_and_top1_in_mediapipe(digits_cnn, mnist_test: Path,
                                                                   mnist_train: Path, tmp_path: Path,
                                                                   mediapipe_python: str) -> None:
    """MediaPipe Tasks' ImageClassifier, given only the .tflite, normalizes as edgeq recorded and names
    the classes with the labels edgeq stored: its top-1 is edgeq-device's on every test digit."""
    pre = Preprocess(size=(28, 28), color="rgb", mean=127.5, std=127.5)
    model = _rgb_digits(digits_cnn)
    for mode in ("float32", "int8"):
        path = tmp_path / f"rgb_{mode}.tflite"
        edgeq.convert(model, mode, calibration=mnist_train, samples=64, preprocess=pre,
                      labels=NAMES).save(path)
        assert read_metadata(path).labels == NAMES  # edgeq's own entry reads as before
        ours = edgeq_device.evaluate(path, mnist_test, limit=120, keep_predictions=True)
        assert ours.top1 > 0.9
        theirs = _consumer(mediapipe_python, "classify", str(path), *ours.files)
        assert [name for name, _, _ in theirs] == [NAMES[k] for k in ours.predictions]
        assert [index for _, index, _ in theirs] == list(ours.predictions)
        meta = _consumer(mediapipe_python, "read", str(path))
        assert meta["inputs"][0]["mean"] == [127.5] and meta["inputs"][0]["std"] == [127.5]
        assert meta["inputs"][0]["color_space"] == RGB
        assert meta["packed"] == {"labels.txt": "".join(f"{n}\n" for n in NAMES)}


@pytest.mark.slow
def test_what_is_written_follows_the_recorded_preprocessing(digits_cnn, mnist_train: Path, tmp_path: Path,
                                                            mediapipe_python: str) -> None:
    """Grayscale inputs, per-channel normalization, uint8 inputs (their pixel range), a model without labels."""
    gray = tmp_path / "gray.tflite"
    edgeq.convert(digits_cnn, "float32", calibration=mnist_train, samples=16).save(gray)
    rgb = tmp_path / "rgb_uint8.tflite"
    edgeq.convert(_rgb_digits(digits_cnn), "int8", io="uint8", calibration=mnist_train, samples=16, labels=(),
                  preprocess=Preprocess(size=(28, 28), color="rgb", mean=(120, 127.5, 130),
                                        std=(60, 127.5, 70))).save(rgb)
    g = _consumer(mediapipe_python, "read", str(gray))
    assert g["inputs"][0]["color_space"] == GRAYSCALE
    assert (g["inputs"][0]["mean"], g["inputs"][0]["std"]) == ([0.0], [255.0])
    assert (g["inputs"][0]["min"], g["inputs"][0]["max"]) == ([0.0], [1.0])  # what a float input receives
    assert g["outputs"][0]["files"] == [{"name": "labels.txt", "type": AXIS_LABELS}]  # the folder's classes
    assert g["packed"]["labels.txt"].split() == [str(k) for k in range(10)]
    r = _consumer(mediapipe_python, "read", str(rgb))
    assert r["inputs"][0]["mean"] == [120.0, 127.5, 130.0] and r["inputs"][0]["std"] == [60.0, 127.5, 70.0]
    assert (r["inputs"][0]["min"], r["inputs"][0]["max"]) == ([0.0], [255.0])
    assert r["outputs"][0]["files"] == [] and r["packed"] == {}
    half = tmp_path / "half.tflite"  # a per-channel mean with one std: both written per channel, as the schema pairs them
    edgeq.convert(_rgb_digits(digits_cnn), "float32", preprocess=Preprocess(size=(28, 28), color="rgb",
                                                                           mean=(0, 10, 20), std=255)).save(half)
    h = _consumer(mediapipe_python, "read", str(half))["inputs"][0]
    assert h["mean"] == [0.0, 10.0, 20.0] and h["std"] == [255.0] * 3
    assert h["min"] == pytest.approx([0.0, -10 / 255, -20 / 255]) and h["max"] == pytest.approx([1.0, 245 / 255, 235 / 255])
    for entries in (g["entries"], r["entries"]):
        assert {"TFLITE_METADATA", "edgeq"} <= set(entries)


def _tiny_segmenter(classes: int, class_map: bool) -> Any:
    keras.utils.set_random_seed(0)
    inp = keras.Input((32, 32, 3), name="image")
    scores = keras.layers.Conv2D(classes, 3, padding="same", activation="softmax")(inp)
    if class_map:
        import tensorflow as tf

        return keras.Model(inp, keras.layers.Lambda(lambda s: tf.argmax(s, axis=-1, output_type=tf.int32))(scores))
    return keras.Model(inp, scores)


@pytest.mark.slow
def test_detector_and_segmenter_outputs_are_described(tmp_path: Path, mediapipe_python: str) -> None:
    """A detector's boxes are [ymin, xmin, ymax, xmax] ratios and its class output holds label values; a
    segmenter's mask is labelled per channel (score map) or per value (class map)."""
    from test_convert_task import _tiny_detector

    pre = Preprocess(size=(96, 96), color="rgb")
    det = tmp_path / "det.tflite"
    edgeq.convert(_tiny_detector(named=True), "float32", preprocess=pre, task="detection",
                  labels=("circle", "square", "triangle"), task_settings={"num_classes": 3}).save(det)
    d = _consumer(mediapipe_python, "read", str(det))
    assert d["name"] and d["inputs"][0]["color_space"] == RGB
    by_content = {o.get("content"): o for o in d["outputs"]}
    assert by_content[BOXES]["box_index"] == [1, 0, 3, 2] and by_content[BOXES]["coordinate_type"] == 0
    labelled = [o for o in d["outputs"] if o["files"]]
    assert [o["files"] for o in labelled] == [[{"name": "labels.txt", "type": VALUE_LABELS}]]
    assert d["packed"]["labels.txt"].split() == ["circle", "square", "triangle"]
    names = ("background", "circle", "square", "triangle")
    for class_map in (False, True):
        seg = tmp_path / f"seg_{class_map}.tflite"
        edgeq.convert(_tiny_segmenter(4, class_map), "float32", preprocess=Preprocess(size=(32, 32), mean=127.5, std=127.5),
                      task="segmentation", labels=names, task_settings={"num_classes": 4}).save(seg)
        s = _consumer(mediapipe_python, "read", str(seg))
        mask = s["outputs"][0]
        assert mask["content"] == IMAGE and mask["color_space"] == GRAYSCALE and mask["range"] == [1, 2]
        assert mask["files"] == [{"name": "labels.txt", "type": VALUE_LABELS if class_map else AXIS_LABELS}]
        assert s["packed"]["labels.txt"].split() == list(names)
        if not class_map:  # MediaPipe's ImageSegmenter names the classes and segments as edgeq-device does
            _same_masks_in_mediapipe(seg, names, tmp_path, mediapipe_python)


def _same_masks_in_mediapipe(model: Path, names: tuple[str, ...], tmp_path: Path, python: str) -> None:
    from ai_edge_litert.interpreter import Interpreter
    from edgeq_device.model.preprocess import load_image
    from PIL import Image

    folder = tmp_path / "images32"
    folder.mkdir()
    images = []
    for k in range(3):  # the model's own size: neither side resizes
        images.append(folder / f"{k}.png")
        Image.open(ROOT / "datasets" / "shapes" / "val" / f"{k:04d}.png").convert("RGB").resize((32, 32)).save(images[-1])
    theirs = _consumer(python, "segment", str(model), *map(str, images))
    assert theirs["labels"] == list(names)
    it = Interpreter(model_path=str(model))
    it.allocate_tensors()
    pre = read_metadata(model).preprocess
    for image, mask in zip(images, theirs["masks"]):
        it.set_tensor(it.get_input_details()[0]["index"], load_image(image, pre)[None])
        it.invoke()
        ours = it.get_tensor(it.get_output_details()[0]["index"])[0].argmax(-1)
        assert len(np.unique(ours)) > 1 and (np.asarray(mask) == ours).mean() > 0.99


def test_models_with_packed_labels_load_in_litert_and_keep_them_through_a_rewrite(digits_cnn, tmp_path: Path,
                                                                                   mnist_test: Path) -> None:
    """The zip after the flatbuffer does not trouble the runtime, and embedding metadata again (as the budget's
    int8 variants do) replaces both entries and packs the labels once more."""
    import dataclasses

    from edgeq.quantize.metadata import embed_metadata

    result = edgeq.convert(digits_cnn, "float32", calibration=mnist_test, samples=8, labels=NAMES)
    assert packed_files(result.model_bytes) == {"labels.txt": "".join(f"{n}\n" for n in NAMES).encode()}
    again = embed_metadata(result.model_bytes, dataclasses.replace(result.metadata, labels=NAMES[::-1]))
    assert packed_files(again)["labels.txt"].decode().split() == list(NAMES[::-1])
    assert read_metadata(again).labels == NAMES[::-1]
    names = [m.name.decode() for m in read_model(again).metadata]
    assert sorted(n for n in names if n in ("TFLITE_METADATA", "edgeq")) == ["TFLITE_METADATA", "edgeq"]
    path = tmp_path / "again.tflite"
    path.write_bytes(again)
    ours = edgeq_device.evaluate(path, mnist_test, limit=50)
    assert ours.top1 > 0.9 and ours.classes == NAMES[::-1]
