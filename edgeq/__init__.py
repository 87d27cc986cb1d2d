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
from .budget import BudgetReport
from .compare import Comparison, compare
from .convert import MODES, ConversionResult, IOType, Mode, convert
from .data import ArraySource, DataSource, ImageFolder, IterableSource, TFDataSource, as_source
from .debug import LayerReport, debug
from .deploy import Board, BoardResult, DeployReport, deploy
from .errors import EdgeqError
from .models import load_model
from .qat import QATResult, qat
from .store import Measurement, ResultsStore

__all__ = [
    "ArraySource",
    "Board",
    "BoardResult",
    "BudgetReport",
    "Comparison",
    "ConversionResult",
    "DataSource",
    "DeployReport",
    "EdgeqError",
    "EdgeqMetadata",
    "IOType",
    "ImageFolder",
    "IterableSource",
    "LayerReport",
    "MODES",
    "Measurement",
    "Mode",
    "ModelAnalysis",
    "Preprocess",
    "QATResult",
    "ResultsStore",
    "TFDataSource",
    "__version__",
    "analyze",
    "as_source",
    "compare",
    "convert",
    "data",
    "debug",
    "deploy",
    "errors",
    "load_model",
    "qat",
    "read_metadata",
]
