"""edgeq's documented exception tree.

Every error edgeq raises on purpose derives from :class:`EdgeqError`; its message
names the argument, what was received and the fix. The base classes come from
``edgeq_device.errors`` (shared with the board-side package); the host adds::

    EdgeqError
    ├── InvalidArgumentError (ValueError)
    ├── OutputError (OSError)           an output path cannot be written
    │   └── OutputExistsError (FileExistsError)
    ├── ModelFileError
    │   └── ModelLoadError              a Keras model path that is missing or not a model
    ├── DataError
    │   ├── LabelMismatchError
    │   └── CalibrationError            no / unusable calibration data, shape mismatch
    ├── RuntimeNotFoundError (ImportError)
    ├── DelegateError
    ├── ConversionError                 the TFLite converter failed
    │   ├── QuantizationError           an op cannot be integer-quantized as asked
    │   └── CompilerNotFoundError       edgetpu_compiler is not installed
    ├── QATError                        a model cannot be prepared for quantization-aware training
    ├── StoreError                      the results store cannot be read or written
    └── DeployError                     a board could not be reached or could not run the model
"""

from __future__ import annotations

from edgeq_device.errors import (
    DataError,
    DelegateError,
    EdgeqError,
    InvalidArgumentError,
    LabelMismatchError,
    ModelFileError,
    OutputError,
    OutputExistsError,
    RuntimeNotFoundError,
)

__all__ = [
    "CalibrationError",
    "CompilerNotFoundError",
    "ConversionError",
    "DataError",
    "DelegateError",
    "DeployError",
    "EdgeqError",
    "InvalidArgumentError",
    "LabelMismatchError",
    "ModelFileError",
    "ModelLoadError",
    "OutputError",
    "OutputExistsError",
    "QATError",
    "QuantizationError",
    "RuntimeNotFoundError",
    "StoreError",
]


class ModelLoadError(ModelFileError):
    """A Keras model (object or path) is missing or cannot be loaded."""


class CalibrationError(DataError):
    """Calibration data is missing, empty, or does not fit the model's inputs."""


class ConversionError(EdgeqError):
    """The TFLite converter failed."""


class QuantizationError(ConversionError):
    """An op cannot be quantized the way that was asked (e.g. integer-only)."""


class CompilerNotFoundError(ConversionError):
    """``edgetpu_compiler`` is not installed (or not on PATH)."""


class QATError(EdgeqError):
    """A model cannot be prepared for quantization-aware training."""


class StoreError(EdgeqError):
    """The results store cannot be read or written."""


class DeployError(EdgeqError):
    """A board could not be reached, set up, or could not run the model."""
