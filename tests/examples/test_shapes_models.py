"""The shapes detector and segmenter train, convert with their task recorded, and evaluate on the board's CLI
without --task: mAP and mIoU an untrained model would not reach."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.metadata import read_metadata
from edgeq_device.tasks.detection import identify_outputs
from edgeq_device.tasks.segmentation import confusion_matrix, segmentation_scores
from PIL import Image

pytestmark = pytest.mark.slow

SHAPES = Path(__file__).resolve().parents[2] / "datasets" / "shapes"
VAL = SHAPES / "val"


def _eval(tmp_path: Path, model: Path, *args: str | Path) -> dict[str, Any]:
    out = tmp_path / f"{model.stem}.json"
    proc = subprocess.run([sys.executable, "-m", "edgeq_device.cli", "eval", str(model), str(VAL),
                           *map(str, args), "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def test_detector_converts_in_every_mode_with_its_task(shapes_detector_files: dict[str, Path]) -> None:
    assert set(shapes_detector_files) == {"float32", "dynamic", "float16", "int8", "int16x8"}
    for mode, path in shapes_detector_files.items():
        meta = read_metadata(path)
        assert meta is not None and meta.mode == mode
        assert meta.task == "detection" and meta.task_settings == {"class_offset": 1, "num_classes": 3}
        assert meta.labels == ("circle", "square", "triangle")
        flat = read_flat_model(path)
        roles = identify_outputs(flat)  # by the signature's output names
        shapes = {role: list(flat.main.tensors[flat.io_order("outputs")[pos]].shape) for role, pos in roles.items()}
        assert shapes == {"boxes": [1, 36, 4], "classes": [1, 36], "scores": [1, 36], "count": [1]}


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_detector_map_on_the_board_cli_without_task(mode: str, shapes_detector_files: dict[str, Path],
                                                   tmp_path: Path) -> None:
    r = _eval(tmp_path, shapes_detector_files[mode], "--annotations", SHAPES / "annotations" / "instances_val.json")
    assert r["images"] == 64 and r["class_offset"] == 1
    # An untrained detector scores about 0; this one finds most shapes at IoU 0.5.
    assert r["map50"] >= 0.4, r["map50"]
    assert r["map"] >= 0.15, r["map"]
    assert {c["category_id"] for c in r["per_class"] if c["ap50"] and c["ap50"] > 0.1} == {1, 2, 3}


def test_detector_int8_keeps_most_of_float32(shapes_detector_files: dict[str, Path], tmp_path: Path) -> None:
    ann = SHAPES / "annotations" / "instances_val.json"
    f32 = _eval(tmp_path, shapes_detector_files["float32"], "--annotations", ann)
    for mode in ("dynamic", "float16", "int16x8", "int8"):
        r = _eval(tmp_path, shapes_detector_files[mode], "--annotations", ann)
        assert r["map50"] >= f32["map50"] - 0.1, (mode, r["map50"], f32["map50"])


def _background_only_miou() -> float:
    cm = np.zeros((4, 4), np.int64)
    for p in sorted((SHAPES / "masks" / "val").glob("*.png")):
        with Image.open(p) as m:
            mask = np.asarray(m)
        cm += confusion_matrix(np.zeros_like(mask), mask, 4)
    return segmentation_scores(cm)[1]


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_segmenter_miou_on_the_board_cli_without_task(mode: str, shapes_segmenter_files: dict[str, Path],
                                                     tmp_path: Path) -> None:
    meta = read_metadata(shapes_segmenter_files[mode])
    assert meta is not None and meta.task == "segmentation"
    assert meta.task_settings == {"ignore_index": 255, "num_classes": 4}
    r = _eval(tmp_path, shapes_segmenter_files[mode], "--masks", SHAPES / "masks" / "val")
    floor = _background_only_miou()  # every pixel called background: about 0.23
    assert r["images"] == 64
    assert r["miou"] >= floor + 0.1, (r["miou"], floor)
    shape_ious = [c["iou"] for c in r["per_class"][1:]]
    assert all(iou is not None and iou > 0.1 for iou in shape_ious), shape_ious
