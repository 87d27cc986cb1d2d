"""edgeq: a trained Keras model to a measured .tflite on a single-board computer.

The one-call paths are re-exported here; every step they are built from is public
in its own module (``edgeq.models``, ``edgeq.data``, ``edgeq.convert``, ...).
"""

from __future__ import annotations

__version__ = "0.1.0"

from edgeq_device.metadata import EdgeqMetadata, read_metadata
from edgeq_device.preprocess import Preprocess

from . import data, errors
from .analyze import ModelAnalysis, analyze
from .convert import MODES, ConversionResult, IOType, Mode, convert
from .data import ArraySource, DataSource, ImageFolder, IterableSource, TFDataSource, as_source
from .errors import EdgeqError
from .models import load_model

__all__ = [
    "ArraySource",
    "ConversionResult",
    "DataSource",
    "EdgeqError",
    "EdgeqMetadata",
    "IOType",
    "ImageFolder",
    "IterableSource",
    "MODES",
    "Mode",
    "ModelAnalysis",
    "Preprocess",
    "TFDataSource",
    "__version__",
    "analyze",
    "as_source",
    "convert",
    "data",
    "errors",
    "load_model",
    "read_metadata",
]
