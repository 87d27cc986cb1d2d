"""A converted model records its task and the settings a board evaluates it with; bad tasks and settings are one
clean error each (API and CLI), before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from edgeq_device.model.metadata import read_metadata
from edgeq_device.tasks.registry import evaluate_task

import edgeq
from edgeq.cli import cli
from edgeq.errors import DataError, InvalidArgumentError
from edgeq.quantize.metadata import check_task

SHAPES = Path(__file__).resolve().parents[2] / "datasets" / "shapes"
K = 4  # detections of the tiny detector


def _tiny_detector(named: bool) -> Any:
    """An untrained 96x96 detector with K boxes; outputs named by role (a dict) or as a list (output_0..3)."""
    keras.utils.set_random_seed(0)
    inp = keras.Input((96, 96, 3), name="image")
    h = keras.layers.Flatten()(keras.layers.AveragePooling2D(16)(inp))
    boxes = keras.layers.Reshape((K, 4))(keras.layers.Dense(4 * K, activation="sigmoid")(h))
    classes = keras.layers.Dense(K, activation="sigmoid")(h)
    scores = keras.layers.Dense(K, activation="sigmoid")(h)
    if named:
        return keras.Model(inp, {"boxes": boxes, "classes": classes, "scores": scores})
    return keras.Model(inp, [boxes, classes, scores])


@pytest.mark.parametrize("task, settings, fragment", [
    ("pose", {}, "unknown task"),
    (None, {"class_offset": 1}, "task settings need a task"),
    ("segmentation", {"class_offset": 1}, "segmentation has no setting 'class_offset'"),
    ("classification", {"num_classes": 3}, "classification has no setting 'num_classes'"),
    ("detection", {"num_classes": 0}, "'num_classes' must be an integer >= 1"),
    ("detection", {"class_offset": "1"}, "'class_offset' must be an integer"),
    ("segmentation", {"ignore_index": -1}, "'ignore_index' must be an integer >= 0"),
    ("segmentation", {"ignore_index": [255, "x"]}, "'ignore_index' must be an integer >= 0"),
    ("detection", {"outputs": {"boxes": "a", "classes": "b"}}, "'outputs' names the detector's outputs"),
    ("detection", {"outputs": {"boxes": "a", "classes": "b", "scores": "c", "kind": "d"}}, "'outputs' names"),
])
def test_bad_task_or_settings_is_refused(task: str | None, settings: dict[str, Any], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment) as info:
        check_task(task, settings)
    assert info.value.argument in ("task", "task_settings") and info.value.fix


def test_check_task_normalizes() -> None:
    assert check_task(None, None) == (None, {})
    assert check_task("Detection", {"outputs": {"scores": "s", "boxes": "b", "classes": "c"}}) == (
        "detection", {"outputs": {"boxes": "b", "classes": "c", "scores": "s"}})
    assert check_task("segmentation", {"ignore_index": None, "num_classes": 4}) == (
        "segmentation", {"ignore_index": None, "num_classes": 4})
    assert check_task("segmentation", {"ignore_index": [255, 254, 255]}) == (  # several: sorted, once each
        "segmentation", {"ignore_index": [254, 255]})
    assert check_task("segmentation", {"ignore_index": [255]}) == ("segmentation", {"ignore_index": 255})


def test_detection_task_is_recorded_and_a_board_needs_no_flag(tmp_path: Path) -> None:
    res = edgeq.convert(_tiny_detector(named=True), "float32", task="detection",
                        task_settings={"class_offset": 1, "num_classes": 3}, labels=SHAPES / "labels.txt")
    path = res.save(tmp_path / "det.tflite")
    meta = read_metadata(path)
    assert meta is not None and meta.task == "detection"
    assert meta.task_settings == {"class_offset": 1, "num_classes": 3}
    assert meta.labels == ("circle", "square", "triangle")
    r = evaluate_task(path, SHAPES / "val", annotations=SHAPES / "annotations" / "instances_val.json", limit=8)
    assert type(r).__name__ == "DetectionResult" and r.images == 8
    assert r.outputs == {"boxes": "boxes", "classes": "classes", "scores": "scores"}


def test_detector_outputs_mapping_is_recorded_or_unidentifiable_outputs_refused(tmp_path: Path) -> None:
    model = _tiny_detector(named=False)
    with pytest.raises(DataError, match="cannot tell which outputs are boxes"):
        edgeq.convert(model, "float32", task="detection")
    outputs = {"boxes": "output_0", "classes": "output_1", "scores": "output_2"}
    path = edgeq.convert(model, "float32", task="detection", task_settings={"outputs": outputs}).save(
        tmp_path / "det.tflite")
    meta = read_metadata(path)
    assert meta is not None and meta.task_settings == {"outputs": outputs}
    r = evaluate_task(path, SHAPES / "val", annotations=SHAPES / "annotations" / "instances_val.json", limit=4)
    assert r.outputs == outputs  # type: ignore[attr-defined]


def test_convert_all_records_the_task_in_every_mode() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (8, 96, 96, 3)).astype(np.float32)
    results = edgeq.convert_all(_tiny_detector(named=True), ["float16", "int8"], calibration=x, samples=8,
                                task="detection", task_settings={"class_offset": 0})
    assert [(r.metadata.task, r.metadata.task_settings) for r in results] == [("detection", {"class_offset": 0})] * 2


def _cli(*args: Any) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _one_line(*args: Any) -> str:
    code, out, err = _cli(*args)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_cli_convert_records_the_task(tmp_path: Path) -> None:
    model = tmp_path / "det.keras"
    _tiny_detector(named=True).save(model)
    out = tmp_path / "det.tflite"
    code, _, err = _cli("convert", model, "--mode", "float32", "--task", "detection", "--class-offset", "1",
                        "--num-classes", "3", "-o", out)
    assert code == 0, err
    meta = read_metadata(out)
    assert meta is not None and meta.task == "detection"
    assert meta.task_settings == {"class_offset": 1, "num_classes": 3}


def test_cli_convert_records_several_ignore_values(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    model = tmp_path / "seg.keras"
    keras.Model(inp, keras.layers.Conv2D(3, 1, activation="softmax")(inp)).save(model)
    for given, recorded in (("250-252,255", [250, 251, 252, 255]), ("255", 255), ("none", None)):
        out = tmp_path / f"seg-{given}.tflite"
        code, _, err = _cli("convert", model, "--mode", "float32", "--task", "segmentation", "--ignore-index", given,
                            "-o", out)
        assert code == 0, err
        assert read_metadata(out).task_settings == {"ignore_index": recorded}
    line = _one_line("convert", model, "--mode", "float32", "--task", "segmentation", "--ignore-index", "x",
                     "-o", tmp_path / "bad.tflite")
    assert "--ignore-index" in line


def test_cli_convert_bad_task_options_are_one_line(tmp_path: Path) -> None:
    model = tmp_path / "det.keras"
    _tiny_detector(named=False).save(model)
    out = tmp_path / "out"
    line = _one_line("convert", model, "--mode", "float32", "--task", "pose", "-o", out)
    assert "--task" in line and "pose" in line and "detection" in line
    line = _one_line("convert", model, "--mode", "float32", "--class-offset", "1", "-o", out)
    assert "--class-offset is a task setting" in line and "--task detection" in line
    line = _one_line("convert", model, "--mode", "float32", "--task", "detection", "--outputs", "boxes", "-o", out)
    assert "outputs" in line and "boxes=NAME" in line
    line = _one_line("convert", model, "--mode", "float32", "--task", "segmentation", "--class-offset", "1",
                     "-o", out)
    assert "segmentation has no setting 'class_offset'" in line
    line = _one_line("convert", model, "--mode", "float32", "--task", "detection", "-o", out)
    assert "cannot tell which outputs are boxes" in line and "output_0" in line
    assert not out.exists()
    code, _, err = _cli("convert", model, "--mode", "float32", "--task", "detection", "-o", out / "d.tflite",
                        "--outputs", "boxes=output_0,classes=output_1,scores=output_2")
    assert code == 0, err
    meta = read_metadata(out / "d.tflite")
    assert meta is not None and meta.task_settings["outputs"]["scores"] == "output_2"
