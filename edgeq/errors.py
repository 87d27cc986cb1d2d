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
    ├── SweepError                      a sweep's workers or cluster cannot run its cells
    └── DeployError                     a board could not be reached, set up, or run the model
        │                               (``kind``: which step, see DEPLOY_ERROR_KINDS)
        └── SSHError                    ssh could not reach the board or run a command there

and the warnings (``UserWarning`` subclasses; the CLI prints each as one line)::

    EdgeqWarning
    ├── CalibrationWarning              calibration data works but looks wrong
    │   ├── UnscaledCalibrationWarning  values look unprocessed (e.g. raw 0..255 pixels)
    │   └── FewerSamplesWarning         the source has fewer samples than were asked for
    └── EmptyClassFolderWarning         a class folder holds no image (still a class)
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, Mapping

from edgeq_device.errors import (
    DataError,
    DelegateError,
    EdgeqError,
    EdgeqWarning,
    EmptyClassFolderWarning,
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
    "EmptyClassFolderWarning",
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
    "SSHError",
    "StoreError",
    "SweepError",
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


class SweepError(EdgeqError):
    """A sweep's workers or cluster cannot run its cells (a worker's edgeq, TensorFlow or LiteRT
    differs from the driver's, the Ray cluster cannot be reached)."""


#: What a :class:`DeployError` (and a failed board's ``BoardResult.error_kind``) can say went wrong
#: (not in ``__all__``, which lists only the exception classes).
DEPLOY_ERROR_KINDS: Mapping[str, str] = MappingProxyType({
    # reaching the board (ssh)
    "unreachable": "no connection: refused, unknown host, no route, connection closed",
    "auth": "ssh authentication failed (key not accepted; nothing prompts)",
    "hostkey": "the board's host key is unknown or changed",
    "timeout": "the connection or a step took longer than its time limit",
    "no-ssh": "the OpenSSH client is not installed on this machine",
    "interrupted": "Ctrl-C on the host stopped the board's run",
    # the board's Python and its venv
    "no-python": "the board has no Python where the board's python setting points",
    "arch": "the board's machine (platform.machine()) has no TFLite runtime wheels (e.g. 32-bit armv7l, i686)",
    "no-space": "the board's disk (its edgeq workdir) is full",
    "no-venv": "the board's Python cannot make a venv (no venv/ensurepip)",
    "no-runtime": "no usable TFLite runtime on the board",
    "missing-deps": "edgeq-device's requirements are missing on an offline board",
    "setup": "installing or checking edgeq-device in the board's venv failed",
    # what travels and what runs
    "wheel": "the edgeq-device wheel for the boards cannot be built or checked on this machine",
    "transfer": "a file arrived on the board with another sha256 than was sent",
    "bench": "edgeq-device bench failed on the board",
    "eval": "edgeq-device eval failed on the board",
    "profile": "edgeq-device profile failed on the board",
    "store": "the board's result could not be written to the results store",
    "remote": "a command on the board failed otherwise",
})


class DeployError(EdgeqError):
    """A board could not be reached, set up, or could not run the model.

    Attributes:
        kind: which step failed, one of :data:`DEPLOY_ERROR_KINDS` (``"unreachable"``,
            ``"auth"``, ``"hostkey"``, ``"timeout"``, ``"no-python"``, ``"setup"``,
            ``"wheel"``, ``"transfer"``, ...). It is not part of the message.
    """

    def __init__(self, message: str, *, kind: str = "remote", argument: str | None = None,
                 received: Any = None, fix: str | None = None) -> None:
        if kind not in DEPLOY_ERROR_KINDS:
            raise ValueError(f"unknown DeployError kind {kind!r}; use one of {', '.join(DEPLOY_ERROR_KINDS)}")
        self.kind = kind
        super().__init__(message, argument=argument, received=received, fix=fix)


class SSHError(DeployError):
    """A board could not be reached or a command on it could not be run.

    ``kind`` is one of ``unreachable``, ``auth``, ``hostkey``, ``timeout``,
    ``no-ssh``, ``interrupted`` or ``remote``; ``target`` is the board
    (``user@host:port``) or the command that failed.
    """

    def __init__(self, message: str, *, kind: str, received: object = None, fix: str | None = None) -> None:
        self.target = received
        # The message names the board already; no argument/received suffix to repeat it.
        super().__init__(message, kind=kind, fix=fix)


class CalibrationWarning(EdgeqWarning):
    """Calibration data works but looks wrong."""


class UnscaledCalibrationWarning(CalibrationWarning):
    """Calibration values look unprocessed (e.g. 0..255 pixels) for a model that does not rescale them."""


class FewerSamplesWarning(CalibrationWarning):
    """The calibration source has fewer samples than were asked for; all of them are used."""
