"""The exception tree shared by ``edgeq_device`` and ``edgeq``.

Every error edgeq raises on purpose is an :class:`EdgeqError`. Its message
names the argument, what was received and how to fix it, so that the CLI can
print it as one line and a notebook user knows what to change::

    EdgeqError
    ├── InvalidArgumentError (also ValueError)   a parameter has a bad value
    ├── OutputError (also OSError)               an output path cannot be written
    │   └── OutputExistsError (also FileExistsError) refusing to overwrite a file
    ├── ModelFileError                           missing / not a .tflite / truncated / fails validation
    │   └── RuntimeCrashError                    the runtime crashed (a signal) loading this model
    ├── InferenceError                           the model failed while running (an operator's error)
    ├── DataError                                no data, unreadable images, shape mismatch
    │   └── LabelMismatchError                   labels do not match the model's outputs
    ├── RuntimeNotFoundError (also ImportError)  no TFLite interpreter installed
    └── DelegateError                            delegate missing or unusable for this model

Warnings edgeq gives on purpose (data that works but looks wrong) derive from
:class:`EdgeqWarning`, a ``UserWarning``; the CLIs print them as one line.

The host toolkit ``edgeq`` extends the tree in :mod:`edgeq.errors`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DataError",
    "DelegateError",
    "EdgeqError",
    "EdgeqWarning",
    "EmptyClassFolderWarning",
    "InferenceError",
    "InvalidArgumentError",
    "LabelMismatchError",
    "ModelFileError",
    "OutputError",
    "OutputExistsError",
    "RuntimeCrashError",
    "RuntimeNotFoundError",
]


class EdgeqError(Exception):
    """Base class of every error raised by edgeq on purpose.

    Args:
        message: what went wrong, in one sentence.
        argument: the parameter or CLI option at fault, if any.
        received: the value that was received (shown with ``repr``).
        fix: what the user should do instead.
    """

    def __init__(
        self,
        message: str,
        *,
        argument: str | None = None,
        received: Any = None,
        fix: str | None = None,
    ) -> None:
        self.message = message
        self.argument = argument
        self.received = received
        self.fix = fix
        super().__init__(self._compose())

    def _compose(self) -> str:
        text = self.message
        if self.argument is not None:
            text = f"{self.argument}: {text}"
        if self.received is not None:
            text += f" (received {self.received!r})"
        if self.fix:
            text += f"; {self.fix}"
        return text


class InvalidArgumentError(EdgeqError, ValueError):
    """A parameter has a value edgeq cannot use."""


class OutputError(EdgeqError, OSError):
    """An output path cannot be written: its folder is a file, permission is denied, the disk is read-only or full."""


class OutputExistsError(OutputError, FileExistsError):
    """An output file exists and overwriting was not asked for."""


class ModelFileError(EdgeqError):
    """A model file is missing, unreadable, not a .tflite flatbuffer or truncated."""


class RuntimeCrashError(ModelFileError):
    """The TFLite runtime crashed (was killed by a signal) loading this model in a child process.

    ``signal`` is the signal's number (11 for a segmentation fault), or None where the
    child did not finish in time and was stopped.
    """

    def __init__(self, message: str, *, signal: int | None = None, **kwargs: Any) -> None:
        self.signal = signal
        super().__init__(message, **kwargs)


class InferenceError(EdgeqError):
    """The model failed while running: an operator reported an error at ``invoke()``."""


class DataError(EdgeqError):
    """Input data is missing, unreadable, empty or does not fit the model."""


class LabelMismatchError(DataError):
    """Class labels do not agree with the data or the model's outputs."""


class RuntimeNotFoundError(EdgeqError, ImportError):
    """No TFLite interpreter (LiteRT, tflite-runtime or TensorFlow) could be imported."""


class DelegateError(EdgeqError):
    """A delegate library is missing or cannot run this model."""


class EdgeqWarning(UserWarning):
    """Base class of the warnings edgeq gives on purpose: the input works but looks wrong.

    The message says what was seen and what to do; filter a whole kind with
    ``warnings.filterwarnings("ignore", category=...)``.
    """


class EmptyClassFolderWarning(EdgeqWarning):
    """A class subfolder holds no image; it still counts as a class, so indices never shift."""
