"""edgeq-device: run and measure ``.tflite`` models on a board, without TensorFlow."""

from __future__ import annotations

# _command first: in the edgeq-device command it sets OPENBLAS_NUM_THREADS before numpy loads
from . import _command, _compat  # noqa: F401
from ._version import __version__
from .errors import (
    DataError,
    DelegateError,
    EdgeqError,
    InferenceError,
    InvalidArgumentError,
    LabelMismatchError,
    ModelFileError,
    OutputError,
    OutputExistsError,
    RuntimeCrashError,
    RuntimeNotFoundError,
)
from .measure.bench import BenchParams, BenchResult, LatencyStats, benchmark
from .measure.sysinfo import BoardInfo, board_info
from .model.flatbuffer import FlatModel, read_flat_model
from .model.info import ModelInfo, model_info
from .model.metadata import EdgeqMetadata, read_metadata
from .model.preprocess import Preprocess
from .model.preprocess_choice import PreprocessChoice, choose_preprocess
from .model.tflite_metadata import TfliteMetadata, read_tflite_metadata
from .run.images import FolderListing, list_image_folder
from .run.runtime import ModelRunner, Runtime, resolve_runtime
from .tasks.detection_eval import DetectionResult, evaluate_detection
from .tasks.eval_options import EvalOptions
from .tasks.evaluation import EvalResult, evaluate, model_preprocess, predict
from .tasks.fidelity import FidelityResult, evaluate_fidelity
from .tasks.registry import TASKS, evaluate_task
from .tasks.segmentation import SegmentationResult, evaluate_segmentation

__all__ = [
    "BenchParams",
    "BenchResult",
    "BoardInfo",
    "DataError",
    "DelegateError",
    "DetectionResult",
    "EdgeqError",
    "EdgeqMetadata",
    "EvalOptions",
    "EvalResult",
    "FidelityResult",
    "FlatModel",
    "FolderListing",
    "InferenceError",
    "InvalidArgumentError",
    "LabelMismatchError",
    "LatencyStats",
    "ModelFileError",
    "ModelInfo",
    "ModelRunner",
    "OutputError",
    "OutputExistsError",
    "Preprocess",
    "PreprocessChoice",
    "Runtime",
    "RuntimeCrashError",
    "RuntimeNotFoundError",
    "SegmentationResult",
    "TASKS",
    "TfliteMetadata",
    "__version__",
    "benchmark",
    "board_info",
    "choose_preprocess",
    "evaluate",
    "evaluate_detection",
    "evaluate_fidelity",
    "evaluate_segmentation",
    "evaluate_task",
    "list_image_folder",
    "model_info",
    "model_preprocess",
    "predict",
    "read_flat_model",
    "read_metadata",
    "read_tflite_metadata",
    "resolve_runtime",
]

_compat.install()


def __getattr__(name: str) -> object:
    """Old module paths (``edgeq_device.flatbuffer``, ...) for one release, with a DeprecationWarning."""
    return _compat.moved_module(name)
