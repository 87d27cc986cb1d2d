"""Calibration data on its way to the converter: shapes, finite values, warnings.

:func:`representative_dataset` streams samples from a :class:`~edgeq.inputs.data.DataSource`
to ``TFLiteConverter`` as dicts keyed by input name, one sample at a time, each checked
against the model's input shape (:class:`~edgeq.errors.CalibrationError`) and for NaN or
Inf (:class:`~edgeq.errors.NonFiniteCalibrationError`, naming the sample) before the
converter sees it. :func:`warn_about_calibration` then warns about data that works but
looks wrong; the warnings point at the user's line (:func:`warn_at_caller`) and are given
once per public call (:func:`warnings_once`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np
from edgeq_device.model.preprocess import ColorMode, Preprocess

from edgeq.errors import (
    CalibrationError,
    FewerSamplesWarning,
    NonFiniteCalibrationError,
    UnscaledCalibrationWarning,
)
from edgeq.inputs.data import DataSource, Sample
from edgeq.inputs.models import InputSpec, LoadedModel
from edgeq.progress import task_progress

__all__ = [
    "CalibrationStats",
    "check_finite",
    "default_preprocess",
    "representative_dataset",
    "warn_about_calibration",
    "warn_at_caller",
    "warn_once",
    "warnings_once",
]


def default_preprocess(spec: InputSpec) -> Preprocess | None:
    """Preprocessing for image inputs derived from the input shape: size, channels, pixels to [0, 1]."""
    shape = spec.sample_shape
    if len(shape) != 3 or shape[-1] not in (1, 3) or shape[0] is None or shape[1] is None:
        return None
    h, w, c = shape
    return Preprocess(size=(int(w), int(h)), color=ColorMode.L if c == 1 else ColorMode.RGB)  # type: ignore[arg-type]


def _fit(arr: np.ndarray, spec: InputSpec, batch_size: int | None, source: str) -> list[np.ndarray]:
    """Give a sample (or a batch) the model's rank and check its shape; returns batches of 1."""
    want = spec.sample_shape
    arr = np.asarray(arr)
    if arr.ndim == len(want) + 1:  # already batched: split
        return [x for a in arr for x in _fit(a, spec, batch_size, source)]
    if arr.ndim == len(want) - 1 and len(want) >= 1 and want[-1] == 1:  # HxW for a HxWx1 input
        arr = arr[..., None]
    ok = arr.ndim == len(want) and all(w is None or w == a for w, a in zip(want, arr.shape))
    if not ok:
        detail = ""
        if arr.ndim == len(want) and arr.ndim >= 3 and arr.shape[-1] != want[-1]:
            detail = f" ({arr.shape[-1]} channels where the model takes {want[-1]})"
        raise CalibrationError(
            f"sample shape {tuple(arr.shape)} does not match input {spec.name!r} shape "
            f"{tuple('?' if d is None else d for d in want)}{detail}",
            argument="calibration", received=source,
            fix="preprocess to the model's input size and channels (Preprocess(size=..., color=...), "
                "--size/--color)")
    with np.errstate(over="ignore"):  # a value beyond float32 becomes Inf, refused by name later
        return [arr[None].astype(np.float32, copy=False)]


@dataclass
class CalibrationStats:
    """What the calibration samples looked like, gathered as they stream to the converter.

    Attributes:
        samples: how many samples the longest pass over the source gave.
        low: the smallest value seen, per input name.
        high: the largest value seen, per input name.
    """

    samples: int = 0
    low: dict[str, float] = field(default_factory=dict)
    high: dict[str, float] = field(default_factory=dict)

    def observe(self, name: str, low: float, high: float) -> None:
        """Widen ``name``'s range to include ``[low, high]``."""
        self.low[name] = min(low, self.low.get(name, low))
        self.high[name] = max(high, self.high.get(name, high))


def check_finite(arr: np.ndarray, index: int, spec: InputSpec, multi: bool, source: str,
                 argument: str = "calibration") -> tuple[float, float]:
    """One sample's (min, max); NaN or Inf raises :class:`NonFiniteCalibrationError` naming the sample.

    Two reductions and no copy: NaN propagates through min and max, +Inf shows in the max,
    -Inf in the min. Runs on the float32 array the converter would get (a float64 value
    beyond float32's range has become Inf by then).
    """
    if arr.size == 0:
        return np.inf, -np.inf
    low, high = float(arr.min()), float(arr.max())
    if np.isfinite(low) and np.isfinite(high):
        return low, high
    bad = ~np.isfinite(arr)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    value = arr[first]
    kind = "NaN" if np.isnan(value) else ("-Inf" if value < 0 else "Inf")
    count = int(bad.sum())
    where = f" of input {spec.name!r}" if multi else ""
    raise NonFiniteCalibrationError(
        f"sample {index}{where} holds {kind} at element {first}"
        + (f" ({count} non-finite values in it)" if count > 1 else ""),
        index=index, input_name=spec.name, argument=argument, received=source,
        fix="drop or repair that sample (e.g. keep x[np.isfinite(x).reshape(len(x), -1).all(axis=1)]) "
            "and check the preprocessing that produced it; quantization ranges cannot be set from NaN or Inf")


_WARNED: ContextVar[set[str] | None] = ContextVar("edgeq_calibration_warned", default=None)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def warnings_once(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Within one call of ``fn`` (and the conversions it makes), each calibration warning is given once."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if _WARNED.get() is not None:
            return fn(*args, **kwargs)
        token = _WARNED.set(set())
        try:
            return fn(*args, **kwargs)
        finally:
            _WARNED.reset(token)

    return wrapper


def warn_once(message: str, category: type[Warning]) -> None:
    """:func:`warn_at_caller`, once per scope (see :func:`warnings_once`)."""
    seen = _WARNED.get()
    if seen is not None:
        if message in seen:
            return
        seen.add(message)
    warn_at_caller(message, category)


# The edgeq package's folder (this module is edgeq.quantize.calibration: two levels up).
_EDGEQ_ROOT = str(Path(__file__).parents[__name__.count(".") - 1]) + os.sep
# edgeq's decorators run the call through contextlib's frames.
_WRAPPERS = {contextlib.__file__}


def warn_at_caller(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` pointing at the first line outside the edgeq package (the user's code).

    Every frame in the ``edgeq`` package (any of its subpackages) and in the decorators'
    ``contextlib`` wrappers is skipped, so the warning names the line that called edgeq.
    """
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and (frame.f_code.co_filename.startswith(_EDGEQ_ROOT)
                                        or frame.f_code.co_filename in _WRAPPERS):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


# Float calibration values of an image-like input (a grid, not a feature vector) that are all
# >= 0 with a maximum above this look like unscaled pixels (0..255) unless the model rescales.
# Signed data (standardized, [-1, 1]) and [0, 1] data stay clear of it.
_UNSCALED_ABOVE = 2.0


def warn_about_calibration(loaded: LoadedModel, source: DataSource, stats: CalibrationStats,
                           samples: int) -> None:
    """Warn once about calibration data that works but looks wrong (after a calibration pass).

    - :class:`~edgeq.errors.FewerSamplesWarning`: the source had fewer samples than ``samples``.
    - :class:`~edgeq.errors.UnscaledCalibrationWarning`: an image-like float input got values
      all ``>= 0`` with a maximum above 2 (raw 0..255 pixels, say) and the model does not
      rescale its input itself (no Rescaling/Normalization layer before its first weighted
      layer; see :meth:`~edgeq.models.LoadedModel.rescales_input`).
    """
    known = source.known_length()
    if known is not None and known < samples:
        warn_once(f"asked for {samples} calibration samples, {source.description} has {known}; "
                   f"using {stats.samples}", FewerSamplesWarning)
    elif 0 < stats.samples < samples:  # a stream that ended early, or unreadable images skipped
        warn_once(f"asked for {samples} calibration samples, {source.description} gave {stats.samples}; "
                   f"using {stats.samples}", FewerSamplesWarning)
    if loaded.rescales_input() is not False:
        return
    for spec in loaded.inputs:
        low, high = stats.low.get(spec.name), stats.high.get(spec.name)
        if (low is None or high is None or not spec.dtype.startswith("float") or len(spec.sample_shape) < 2
                or low < 0 or high <= _UNSCALED_ABOVE):
            continue
        where = f" of input {spec.name!r}" if len(loaded.inputs) > 1 else ""
        if getattr(source, "preprocess", None) is not None:  # an image folder
            fix = ("scale pixels the way the model was trained: --mean/--std at the CLI, "
                   "Preprocess(mean=..., std=...) in Python (mean 0, std 255 gives [0, 1]; "
                   "mean 127.5, std 127.5 gives [-1, 1])")
        else:
            fix = ("scale the data the way the model was trained before calibrating (e.g. x / 255.0 for "
                   "[0, 1], x / 127.5 - 1 for [-1, 1]) or put a Rescaling layer first in the model")
        warn_once(f"calibration values{where} span {low:g}..{high:g} and the model does not rescale its "
                   f"input: they look unprocessed; {fix} (if the model was trained on such values, "
                   "ignore this: category edgeq.errors.UnscaledCalibrationWarning)", UnscaledCalibrationWarning)


def representative_dataset(
    source: DataSource, inputs: Sequence[InputSpec], samples: int, seed: int = 0,
    batch_size: int | None = None, progress: bool | None = None,
    stats: CalibrationStats | None = None,
) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """The ``representative_dataset`` callable for the converter: dicts keyed by input name.

    Samples are read one at a time (memory stays flat) and checked against the
    model's input shapes; the first mismatch raises :class:`CalibrationError`. Each
    sample is checked for NaN and Inf before it is yielded, so none reaches the
    converter's calibrator (where Inf crashes the process): the first raises
    :class:`NonFiniteCalibrationError` naming the sample's index in the source. The
    value range seen per input is gathered into ``stats`` when given.
    """
    names = [s.name for s in inputs]
    multi = len(inputs) > 1

    def gen() -> Iterator[dict[str, np.ndarray]]:
        count = 0
        with task_progress("calibrating", samples, progress) as tick:
            for position, sample in enumerate(source.samples(limit=samples, seed=seed)):
                index = position if sample.index is None else sample.index
                per_input = _per_input(sample, inputs, source.description)
                fitted = [_fit(a, s, batch_size, source.description) for a, s in zip(per_input, inputs)]
                for arrays, spec in zip(fitted, inputs):
                    for arr in arrays:
                        low, high = check_finite(arr[0], index, spec, multi, source.description)
                        if stats is not None:
                            stats.observe(spec.name, low, high)
                for group in zip(*fitted):
                    yield dict(zip(names, group))
                    count += 1
                    if stats is not None:
                        stats.samples = max(stats.samples, count)
                    tick()
                    if count >= samples:
                        return
        if count == 0:
            raise CalibrationError("the calibration source gave no sample", argument="calibration",
                                   received=source.description, fix="give a source with at least one sample")

    return gen


def _per_input(sample: Sample, inputs: Sequence[InputSpec], where: str) -> list[np.ndarray]:
    x = sample.inputs
    if isinstance(x, dict):
        missing = [s.name for s in inputs if s.name not in x]
        if missing:
            raise CalibrationError(f"samples lack inputs {missing}", argument="calibration",
                                   received=sorted(x), fix=f"key samples by the model's input names {[s.name for s in inputs]}")
        return [x[s.name] for s in inputs]
    if isinstance(x, list):
        if len(x) != len(inputs):
            raise CalibrationError(f"samples have {len(x)} arrays, the model takes {len(inputs)} inputs",
                                   argument="calibration", received=where,
                                   fix=f"give one array per input: {[s.name for s in inputs]}")
        return list(x)
    if len(inputs) != 1:
        raise CalibrationError(f"the model takes {len(inputs)} inputs, samples have one array",
                               argument="calibration", received=where,
                               fix=f"give a dict keyed by input name: {[s.name for s in inputs]}")
    return [x]
