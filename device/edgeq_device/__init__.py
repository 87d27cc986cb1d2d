"""edgeq-device: run and measure ``.tflite`` models on a board, without TensorFlow."""

from __future__ import annotations

from .errors import (
    DataError,
    DelegateError,
    EdgeqError,
    InvalidArgumentError,
    LabelMismatchError,
    ModelFileError,
    OutputExistsError,
    RuntimeNotFoundError,
)
from .flatbuffer import FlatModel, read_flat_model
from .images import FolderListing, list_image_folder
from .metadata import EdgeqMetadata, read_metadata
from .preprocess import Preprocess
from .runtime import ModelRunner, Runtime, resolve_runtime

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "DelegateError",
    "EdgeqError",
    "EdgeqMetadata",
    "FlatModel",
    "FolderListing",
    "InvalidArgumentError",
    "LabelMismatchError",
    "ModelFileError",
    "ModelRunner",
    "OutputExistsError",
    "Preprocess",
    "Runtime",
    "RuntimeNotFoundError",
    "__version__",
    "list_image_folder",
    "read_flat_model",
    "read_metadata",
    "resolve_runtime",
]
