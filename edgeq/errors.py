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
    │       └── NonFiniteCalibrationError   a calibration sample holds NaN or Inf
    ├── RuntimeNotFoundError (ImportError)
    ├── DelegateError
    ├── ConversionError                 the TFLite converter failed
    │   ├── QuantizationError           an op cannot be integer-quantized as asked
    │   └── CompilerNotFoundError       edgetpu_compiler is not installed
    ├── QATError                        a model cannot be prepared for quantization-aware training
    ├── StoreError                      the results store cannot be read or written
    └── DeployError                     a board could not be reached or could not run the model

and the warnings (``UserWarning`` subclasses; the CLI prints each as one line)::

    EdgeqWarning
    └── CalibrationWarning              calibration data works but looks wrong
        ├── UnscaledCalibrationWarning  values look unprocessed (e.g. raw 0..255 pixels)
        └── FewerSamplesWarning         the source has fewer samples than were asked for
"""

from __future__ import annotations

from typing import Any

from edgeq_device.errors import (
    DataError,
    DelegateError,
    EdgeqError,
    EdgeqWarning,
    InvalidArgumentError,
    LabelMismatchError,
    ModelFileError,
    OutputError,
    OutputExistsError,
    RuntimeNotFoundError,
)

__all__ = [
    "CalibrationError",
    "CalibrationWarning",
    "CompilerNotFoundError",
    "ConversionError",
    "DataError",
    "DelegateError",
    "DeployError",
    "EdgeqError",
    "EdgeqWarning",
    "FewerSamplesWarning",
    "InvalidArgumentError",
    "LabelMismatchError",
    "ModelFileError",
    "ModelLoadError",
    "NonFiniteCalibrationError",
    "OutputError",
    "OutputExistsError",
    "QATError",
    "QuantizationError",
    "RuntimeNotFoundError",
    "StoreError",
    "UnscaledCalibrationWarning",
]


class ModelLoadError(ModelFileError):
    """A Keras model (object or path) is missing or cannot be loaded."""


class CalibrationError(DataError):
    """Calibration data is missing, empty, or does not fit the model's inputs."""


class NonFiniteCalibrationError(CalibrationError):
    """A calibration sample holds NaN or Inf; it is refused before the converter sees it.

    Attributes:
        index: the sample's index in the source (its row in an array).
        input_name: the model input the bad value is in.
    """

    def __init__(self, message: str, *, index: int, input_name: str, argument: str | None = None,
                 received: Any = None, fix: str | None = None) -> None:
        self.index = index
        self.input_name = input_name
        super().__init__(message, argument=argument, received=received, fix=fix)


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


class CalibrationWarning(EdgeqWarning):
    """Calibration data works but looks wrong."""


class UnscaledCalibrationWarning(CalibrationWarning):
    """Calibration values look unprocessed (e.g. 0..255 pixels) for a model that does not rescale them."""


class FewerSamplesWarning(CalibrationWarning):
    """The calibration source has fewer samples than were asked for; all of them are used."""
