"""edgeq-device: run and measure ``.tflite`` models on a board, without TensorFlow."""

from __future__ import annotations

from ._version import __version__
from .bench import BenchParams, BenchResult, LatencyStats, benchmark
from .detection_eval import DetectionResult, evaluate_detection
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
from .eval_options import EvalOptions
from .evaluation import EvalResult, evaluate, model_preprocess, predict
from .fidelity import FidelityResult, evaluate_fidelity
from .flatbuffer import FlatModel, read_flat_model
from .images import FolderListing, list_image_folder
from .info import ModelInfo, model_info
from .metadata import EdgeqMetadata, read_metadata
from .preprocess import Preprocess
from .preprocess_choice import PreprocessChoice, choose_preprocess
from .runtime import ModelRunner, Runtime, resolve_runtime
from .segmentation import SegmentationResult, evaluate_segmentation
from .sysinfo import BoardInfo, board_info
from .tasks import TASKS, evaluate_task
from .tflite_metadata import TfliteMetadata, read_tflite_metadata

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
