"""edgeq: a trained Keras model to a measured .tflite on a single-board computer.

This module is the facade: the one-call paths and the types they return. Every step
they are built from is public in its room, read top to bottom as the data goes:
``edgeq.inputs`` (models, data) → ``edgeq.quantize`` (modes, converter, layer error,
budget, QAT) → ``edgeq.measure`` → ``edgeq.store`` → ``edgeq.report``, with
``edgeq.comparison``, ``edgeq.sweeps``, ``edgeq.deployment`` and ``edgeq.targets`` beside them.
No name here hides a submodule: ``edgeq.compare`` is the function, the room is
``edgeq.comparison``.
"""

from __future__ import annotations

from edgeq_device.model.metadata import EdgeqMetadata, read_metadata
from edgeq_device.model.preprocess import Preprocess

from edgeq import errors
from edgeq._version import __version__
from edgeq.comparison.records import Comparison
from edgeq.comparison.run import compare
from edgeq.deployment.fleet import Board
from edgeq.deployment.orchestrate import deploy
from edgeq.deployment.results import BoardResult, DeployReport
from edgeq.errors import EdgeqError
from edgeq.inputs.data import ArraySource, DataSource, ImageFolder, IterableSource, TFDataSource, as_source
from edgeq.inputs.models import load_model
from edgeq.measure.analysis import ModelAnalysis, analyze
from edgeq.quantize.converter import MODES, ConversionResult, IOType, Mode, convert, convert_all
from edgeq.quantize.layer_error import LayerReport, debug
from edgeq.quantize.precision.budget import BudgetReport
from edgeq.quantize.qat.sparsity import SparsityResult, cluster, prune
from edgeq.quantize.qat.train import QATResult, qat
from edgeq.quantize.ranges.debug import RangesDebugReport, debug_ranges
from edgeq.quantize.ranges.result import RangesChoice
from edgeq.store.db import Measurement, ResultsStore
from edgeq.sweeps.grid import ModelSpec
from edgeq.sweeps.run import SweepResult, sweep
from edgeq.targets.mcu.check import MCUReport
from edgeq.targets.mcu.compress import compress_for_tflm

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
    "MCUReport",
    "MODES",
    "Measurement",
    "Mode",
    "ModelAnalysis",
    "ModelSpec",
    "Preprocess",
    "QATResult",
    "RangesChoice",
    "RangesDebugReport",
    "ResultsStore",
    "SparsityResult",
    "SweepResult",
    "TFDataSource",
    "__version__",
    "analyze",
    "as_source",
    "cluster",
    "compare",
    "compress_for_tflm",
    "convert",
    "convert_all",
    "debug",
    "debug_ranges",
    "deploy",
    "errors",
    "load_model",
    "prune",
    "qat",
    "read_metadata",
    "sweep",
]
