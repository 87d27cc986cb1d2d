"""Training data for QAT: labeled samples read into memory, checked, and the class names.

The samples come from the same sources as calibration (:func:`edgeq.inputs.data.as_source`):
image folders with class subfolders, ``(x, y)`` arrays, ``tf.data``. Each is checked against
the model's input shape and for NaN or Inf before training, which would poison the weights
and the learnt quantization ranges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeq.errors import DataError, InvalidArgumentError, LabelMismatchError
from edgeq.inputs.data import DataSource, check_label_range, class_labels
from edgeq.inputs.models import InputSpec
from edgeq.quantize.calibration import check_finite

__all__ = ["class_names", "positive", "training_arrays"]


def _check_sample(x: np.ndarray, spec: InputSpec, argument: str, where: str) -> np.ndarray:
    want = spec.sample_shape
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == len(want) - 1 and want and want[-1] == 1:
        x = x[..., None]
    if x.ndim != len(want) or any(w is not None and w != a for w, a in zip(want, x.shape)):
        raise DataError(f"sample shape {tuple(x.shape)} does not match input {spec.name!r} shape "
                        f"{tuple('?' if d is None else d for d in want)}", argument=argument, received=where,
                        fix="preprocess to the model's input size and channels (Preprocess(size=..., color=...))")
    return x


def training_arrays(source: DataSource, specs: Sequence[InputSpec], argument: str,
                    limit: int | None = None, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Read a labeled source into memory: one array per input, and the labels.

    Each sample is checked against its input's shape and for NaN or Inf (refused by index).

    Raises:
        DataError: a sample without a label, of the wrong shape, or no sample at all;
            NonFiniteCalibrationError (a DataError): a sample holds NaN or Inf.
    """
    per_input: list[list[np.ndarray]] = [[] for _ in specs]
    labels: list[int] = []
    for position, sample in enumerate(source.samples(limit=limit, seed=seed)):
        if sample.label is None:
            raise DataError("training data needs labels", argument=argument, received=source.description,
                            fix="give an image folder with one subfolder per class, (x, y) arrays, or a "
                                "tf.data.Dataset of (x, y)")
        x = sample.inputs
        xs = ([x[s.name] for s in specs] if isinstance(x, dict) else list(x) if isinstance(x, list) else [x])
        if len(xs) != len(specs):
            raise DataError(f"samples have {len(xs)} arrays, the model takes {len(specs)} inputs",
                            argument=argument, received=source.description,
                            fix=f"give one array per input: {[s.name for s in specs]}")
        for bucket, a, spec in zip(per_input, xs, specs):
            checked = _check_sample(a, spec, argument, source.description)
            # NaN or Inf would poison the weights and the learnt quantization ranges (and an
            # Inf range crashes the converter): refused by index before training.
            check_finite(checked, position if sample.index is None else sample.index, spec, len(specs) > 1,
                          source.description, argument)
            bucket.append(checked)
        labels.append(int(sample.label))
    if not labels:
        raise DataError("the data source gave no sample", argument=argument, received=source.description,
                        fix="give a source with labeled samples")
    return [np.stack(b) for b in per_input], np.asarray(labels, np.int64)


def positive(value: Any, argument: str, example: str, integer: bool = True) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is a positive finite number (an integer
    when ``integer``)."""
    number = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not (number and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise InvalidArgumentError("must be a positive number", argument=argument, received=value,
                                   fix=f"give e.g. {argument}={example}")


def class_names(labels: Sequence[str] | None, source: DataSource, y: np.ndarray,
                 outputs: int) -> tuple[str, ...] | None:
    """The names of the model's outputs, checked against the training labels.

    Raises:
        LabelMismatchError: ``labels`` do not number the outputs, or a training label is not an output.
    """
    if labels is not None and len(labels) != outputs:
        raise LabelMismatchError(f"{len(labels)} labels for a model with {outputs} outputs", argument="labels",
                                 received=len(labels), fix=f"give exactly {outputs} labels, one per model output")
    names = class_labels(source, outputs, "train")
    check_label_range(y, outputs, "train", source.description)
    return tuple(str(n) for n in labels) if labels is not None else names
