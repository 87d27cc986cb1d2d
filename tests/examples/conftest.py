"""The shapes detector and segmenter (examples/shapes.py), trained once per session, and their .tflite files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

SHAPES = Path(__file__).resolve().parents[2] / "datasets" / "shapes"


@pytest.fixture(scope="session")
def shapes_detector() -> Any:
    """The grid detector of examples/shapes.py, trained with its defaults (seeded). Shared: do not change it."""
    pytest.importorskip("keras")
    from shapes import train_detector

    return train_detector()


@pytest.fixture(scope="session")
def shapes_segmenter() -> Any:
    """The segmenter of examples/shapes.py, trained with its defaults (seeded). Shared: do not change it."""
    pytest.importorskip("keras")
    from shapes import train_segmenter

    return train_segmenter()


def _convert(model: Any, folder: Path, modes: tuple[str, ...], task: str, settings: dict[str, Any]) -> dict[str, Path]:
    import edgeq

    paths = {}
    for r in edgeq.convert_all(model, modes, calibration=SHAPES / "train", samples=64, task=task,
                               task_settings=settings, labels=SHAPES / "labels.txt" if task == "detection" else None):
        paths[r.mode.value] = r.save(folder / f"{task}_{r.mode.value}.tflite")
    return paths


@pytest.fixture(scope="session")
def shapes_detector_files(shapes_detector: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The detector converted in every mode with ``task="detection"`` recorded (labels: circle, square, triangle)."""
    from shapes import DETECTION_SETTINGS

    return _convert(shapes_detector, tmp_path_factory.mktemp("shapes-det"),
                    ("float32", "dynamic", "float16", "int8", "int16x8"), "detection", DETECTION_SETTINGS)


@pytest.fixture(scope="session")
def shapes_segmenter_files(shapes_segmenter: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The segmenter converted as float32 and int8 with ``task="segmentation"`` recorded."""
    from shapes import SEGMENTATION_SETTINGS

    return _convert(shapes_segmenter, tmp_path_factory.mktemp("shapes-seg"), ("float32", "int8"), "segmentation",
                    SEGMENTATION_SETTINGS)
