"""Convert a Keras model to ``.tflite`` in every quantization mode.

``convert(model, mode, calibration=...)`` wraps ``tf.lite.TFLiteConverter``:

========  ==============================  ===========  =========================
mode      what it is                      calibration  I/O (``io=``)
========  ==============================  ===========  =========================
float32   baseline                        no           float
dynamic   int8 weights, float activations no           float
float16   float16 weights                 no           float
int8      full integer                    yes          float, int8 or uint8
int16x8   int16 activations, int8 weights yes          float or int16
========  ==============================  ===========  =========================

The steps are public so they can be called one by one: :func:`edgeq.models.load_model`,
:func:`representative_dataset`, :func:`configure_converter`, then
:func:`embed_metadata` on the bytes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import io as _io
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, Literal, ParamSpec, TypeVar, overload

import numpy as np
from edgeq_device.evaluate import output_classes, read_labels
from edgeq_device.fileio import atomic_write_bytes
from edgeq_device.flatbuffer import FlatModel, read_flat_model
from edgeq_device.metadata import METADATA_NAME, EdgeqMetadata
from edgeq_device.preprocess import ColorMode, Preprocess

from edgeq._version import __version__
from edgeq.errors import (
    CalibrationError,
    ConversionError,
    EdgeqError,
    FewerSamplesWarning,
    InvalidArgumentError,
    LabelMismatchError,
    NonFiniteCalibrationError,
    QuantizationError,
    UnscaledCalibrationWarning,
)
from edgeq.inputs.data import DataSource, Sample, as_source, class_labels
from edgeq.inputs.models import InputSpec, LoadedModel, load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import task_progress

__all__ = [
    "MODES",
    "CalibrationStats",
    "ConversionResult",
    "IOType",
    "Mode",
    "TensorDetail",
    "configure_converter",
    "convert",
    "default_preprocess",
    "embed_metadata",
    "representative_dataset",
    "warn_about_calibration",
]


class Mode(str, Enum):
    """Quantization mode of a conversion."""

    FLOAT32 = "float32"
    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT16X8 = "int16x8"

    @property
    def needs_calibration(self) -> bool:
        """True for the modes that quantize activations (int8, int16x8)."""
        return self in (Mode.INT8, Mode.INT16X8)


MODES: tuple[Mode, ...] = tuple(Mode)


class IOType(str, Enum):
    """The type of the converted model's inputs and outputs."""

    FLOAT = "float"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"


_VALID_IO = {
    Mode.FLOAT32: {IOType.FLOAT}, Mode.DYNAMIC: {IOType.FLOAT}, Mode.FLOAT16: {IOType.FLOAT},
    Mode.INT8: {IOType.FLOAT, IOType.INT8, IOType.UINT8}, Mode.INT16X8: {IOType.FLOAT, IOType.INT16},
}


@dataclass(frozen=True)
class TensorDetail:
    """An input or output of the converted model."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": list(self.scale), "zero_point": list(self.zero_point)}


@dataclass(frozen=True)
class ConversionResult:
    """One converted model: its bytes and what is known about it.

    ``float_ops`` lists the ops of a quantized model that still compute in float
    (a fallback, or what a mixed-precision choice kept in float). ``budget`` holds the
    :class:`~edgeq.budget.BudgetReport` when an accuracy budget chose this conversion.
    """

    mode: Mode
    io: IOType
    model_bytes: bytes = field(repr=False)
    source_name: str
    inputs: tuple[TensorDetail, ...]
    outputs: tuple[TensorDetail, ...]
    conversion_seconds: float
    calibration_samples: int
    float_ops: tuple[str, ...]
    op_counts: dict[str, int]
    metadata: EdgeqMetadata
    budget: Any = field(default=None, repr=False, compare=False)
    target: str | None = None
    edgetpu: Any = field(default=None, repr=False, compare=False)

    @property
    def size_bytes(self) -> int:
        """Size of the ``.tflite`` file in bytes."""
        return len(self.model_bytes)

    @property
    def default_filename(self) -> str:
        """``<model name>_<mode>[_<io>].tflite``."""
        suffix = "" if self.io is IOType.FLOAT else f"_{self.io.value}io"
        return f"{self.source_name}_{self.mode.value}{suffix}.tflite"

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model atomically; a folder ``path`` gets :attr:`default_filename` inside.

        Raises:
            OutputExistsError: the file exists and ``overwrite`` is False.
            OutputError: the path cannot be written (a folder on the way is a file, no
                permission, a read-only or full disk).
        """
        p = Path(path)
        if p.is_dir() or (not p.suffix and not p.exists()):
            p = p / self.default_filename
        return atomic_write_bytes(p, self.model_bytes, overwrite=overwrite, argument="path")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the bytes)."""
        return {
            "mode": self.mode.value, "io": self.io.value, "source": self.source_name,
            "size_bytes": self.size_bytes, "conversion_seconds": round(self.conversion_seconds, 4),
            "calibration_samples": self.calibration_samples, "float_ops": list(self.float_ops),
            "op_counts": self.op_counts, "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


def _enum_arg(cls: type[Enum], value: Any, argument: str, allowed: Sequence[str] | None = None) -> Any:
    try:
        return value if isinstance(value, cls) else cls(str(value).lower())
    except ValueError:
        choices = allowed or [m.value for m in cls]  # type: ignore[attr-defined]
        raise InvalidArgumentError("unknown value", argument=argument, received=value,
                                   fix=f"use one of: {', '.join(choices)}") from None


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


def _check_finite(arr: np.ndarray, index: int, spec: InputSpec, multi: bool, source: str,
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


def _warnings_once(fn: Callable[_P, _R]) -> Callable[_P, _R]:
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


def _warn_once(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` pointing at the caller's code outside edgeq; once per scope (see ``_warnings_once``)."""
    seen = _WARNED.get()
    if seen is not None:
        if message in seen:
            return
        seen.add(message)
    here = str(Path(__file__).parents[1]) + os.sep  # the edgeq package
    wrappers = {contextlib.__file__}  # edgeq's decorators run the call through contextlib's frames
    frame, level = sys._getframe(0), 1
    while frame.f_back is not None and (frame.f_code.co_filename.startswith(here)
                                        or frame.f_code.co_filename in wrappers):
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
        _warn_once(f"asked for {samples} calibration samples, {source.description} has {known}; "
                   f"using {stats.samples}", FewerSamplesWarning)
    elif 0 < stats.samples < samples:  # a stream that ended early, or unreadable images skipped
        _warn_once(f"asked for {samples} calibration samples, {source.description} gave {stats.samples}; "
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
        _warn_once(f"calibration values{where} span {low:g}..{high:g} and the model does not rescale its "
                   f"input: they look unprocessed; {fix} (if the model was trained on such values, "
                   "ignore this: category edgeq.errors.UnscaledCalibrationWarning)", UnscaledCalibrationWarning)


def representative_dataset(
    source: DataSource, inputs: Sequence[InputSpec], samples: int, seed: int = 0,
    batch_size: int | None = None, show_progress: bool | None = None,
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
        with task_progress("calibrating", samples, show_progress) as tick:
            for position, sample in enumerate(source.samples(limit=samples, seed=seed)):
                index = position if sample.index is None else sample.index
                per_input = _per_input(sample, inputs, source.description)
                fitted = [_fit(a, s, batch_size, source.description) for a, s in zip(per_input, inputs)]
                for arrays, spec in zip(fitted, inputs):
                    for arr in arrays:
                        low, high = _check_finite(arr[0], index, spec, multi, source.description)
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


def configure_converter(converter: Any, mode: Mode, io: IOType,
                        representative: Callable[[], Iterator[Any]] | None,
                        allow_float_fallback: bool = False) -> Any:
    """Set a ``TFLiteConverter``'s options for ``mode`` and ``io``; returns the converter."""
    import tensorflow as tf

    ops = tf.lite.OpsSet
    if mode is Mode.FLOAT32:
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is Mode.FLOAT16:
        converter.target_spec.supported_types = [tf.float16]
    elif mode is Mode.INT8:
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = (
            [ops.TFLITE_BUILTINS_INT8, ops.TFLITE_BUILTINS] if allow_float_fallback else [ops.TFLITE_BUILTINS_INT8])
        if io is not IOType.FLOAT:
            converter.inference_input_type = tf.int8 if io is IOType.INT8 else tf.uint8
            converter.inference_output_type = converter.inference_input_type
    elif mode is Mode.INT16X8:
        converter.representative_dataset = representative
        int16 = ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        converter.target_spec.supported_ops = [int16, ops.TFLITE_BUILTINS] if allow_float_fallback else [int16]
        if io is IOType.INT16:
            converter.inference_input_type = tf.int16
            converter.inference_output_type = tf.int16
    return converter


def embed_metadata(model_bytes: bytes, metadata: EdgeqMetadata) -> bytes:
    """Return the model with ``metadata`` stored as the flatbuffer metadata entry ``"edgeq"``.

    An existing ``"edgeq"`` entry is replaced. Uses TFLite's schema object API.
    """
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    payload = np.frombuffer(metadata.to_json().encode("utf-8"), dtype=np.uint8)
    buf = schema.BufferT()
    buf.data = payload
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_NAME, METADATA_NAME.encode())]
    model.metadata.append(entry)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


_FLOAT_TYPES = {"FLOAT32", "FLOAT16"}
_LAYOUT_OPS = {"QUANTIZE", "DEQUANTIZE", "RESHAPE", "SHAPE", "SQUEEZE", "EXPAND_DIMS"}


def float_ops(flat: FlatModel, mode: Mode) -> tuple[str, ...]:
    """Ops of a quantized model that compute in float (excluding I/O (de)quantization)."""
    if not mode.needs_calibration:
        return ()
    sg = flat.main
    found = []
    for op in sg.operators:
        if op.opcode in _LAYOUT_OPS:
            continue
        outs = [sg.tensors[i] for i in op.outputs if i >= 0]
        if any(t.dtype in _FLOAT_TYPES for t in outs):
            found.append(f"{op.opcode}#{op.index}")
    return tuple(found)


def _details(flat: FlatModel, which: str) -> tuple[TensorDetail, ...]:
    sg = flat.main
    out = []
    for i in flat.io_order(which):
        t = sg.tensors[i]
        out.append(TensorDetail(t.name, t.shape_signature, t.dtype.lower(),
                                t.quantization.scale, t.quantization.zero_point))
    return tuple(out)


_UNSUPPORTED_OP = re.compile(r"'(tfl|tf)\.([A-Za-z0-9_]+)'")


def _conversion_error(exc: Exception, mode: Mode, allow_float_fallback: bool) -> Exception:
    text = str(exc)
    first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), text.strip()[:300])
    if mode.needs_calibration and not allow_float_fallback and (
            "quantiz" in text.lower() or "not supported" in text.lower() or "failed to legalize" in text.lower()):
        m = _UNSUPPORTED_OP.search(text)
        op = f"{m.group(1)}.{m.group(2)}" if m else "an op"
        return QuantizationError(
            f"{op} cannot be integer-quantized, and integer-only ({mode.value}) was asked", argument="mode",
            received=mode.value,
            fix="allow float fallback for it (allow_float_fallback=True, --allow-float), use int16x8 or "
                f"float16, or replace the layer; converter said: {first[:200]}")
    return ConversionError(f"the TFLite converter failed: {first[:400]}", argument="model",
                           fix="check the model runs in TensorFlow; run with another mode to narrow it down")


@overload
def convert(
    model: Any,
    mode: Literal["all"] | list[str | Mode] | tuple[str | Mode, ...],
    *,
    calibration: Any = ...,
    samples: int = ...,
    seed: int = ...,
    io: str | IOType = ...,
    batch_size: int | None = ...,
    preprocess: Preprocess | None = ...,
    labels: Sequence[str] | str | os.PathLike[str] | None = ...,
    allow_float_fallback: bool = ...,
    show_progress: bool | None = ...,
    max_drop: float | None = ...,
    evaluation: Any = ...,
    target: str | None = ...,
) -> list[ConversionResult]: ...
@overload
def convert(
    model: Any,
    mode: str | Mode = ...,
    *,
    calibration: Any = ...,
    samples: int = ...,
    seed: int = ...,
    io: str | IOType = ...,
    batch_size: int | None = ...,
    preprocess: Preprocess | None = ...,
    labels: Sequence[str] | str | os.PathLike[str] | None = ...,
    allow_float_fallback: bool = ...,
    show_progress: bool | None = ...,
    max_drop: float | None = ...,
    evaluation: Any = ...,
    target: str | None = ...,
) -> ConversionResult: ...


@quiet_native_logs()
@_warnings_once
def convert(
    model: Any,
    mode: str | Mode | list[str | Mode] | tuple[str | Mode, ...] = "float32",
    *,
    calibration: Any = None,
    samples: int = 200,
    seed: int = 0,
    io: str | IOType = "float",
    batch_size: int | None = None,
    preprocess: Preprocess | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    allow_float_fallback: bool = False,
    show_progress: bool | None = None,
    max_drop: float | None = None,
    evaluation: Any = None,
    target: str | None = None,
) -> ConversionResult | list[ConversionResult]:
    """Convert a Keras model to TFLite in one mode, or every mode with ``mode="all"``.

    Args:
        model: a Keras 3 or tf_keras model, a ``.keras``/``.h5`` file or a SavedModel folder.
        mode: ``float32``, ``dynamic``, ``float16``, ``int8``, ``int16x8``, ``all``, or a list of
            modes (a list of results, in that order).
        calibration: data for int8/int16x8: an image folder, arrays, ``.npy``/``.npz``, a
            ``tf.data.Dataset``, an iterable or a :class:`~edgeq.data.DataSource`.
        samples: how many calibration samples to use (a seeded random subset).
        seed: seed of that subset.
        io: ``float``; ``int8`` or ``uint8`` (int8 mode); ``int16`` (int16x8 mode). With
            ``mode="all"`` or a list it applies to the modes that take it, the others keep float I/O.
        batch_size: fix a dynamic batch dimension (1 for targets that need static shapes).
        preprocess: how images become input; default derived from the input shape, pixels to [0, 1].
        labels: class names in output order (or a text file, one per line), stored in the model's
            metadata; there must be one per output of the model (``()`` stores none). Default:
            the calibration image folder's classes (integer folder names are their output,
            other names sorted as Keras does; see :mod:`edgeq_device.images`).
        allow_float_fallback: let ops that cannot be integer-quantized stay float.
        show_progress: progress bar on stderr (default on, ``EDGEQ_PROGRESS=0`` silences).
        max_drop: an accuracy budget in top-1 points (int8 only): search int8, int8 with the
            worst layers in float, int16x8, float16 for the first within it, measured on
            ``evaluation``; the report is the result's ``budget`` (see :mod:`edgeq.budget`).
        evaluation: labeled data for ``max_drop`` (image folder with class subfolders, (x, y)).
        target: ``"edgetpu"`` enforces what the Edge TPU compiler needs (full int8, integer I/O,
            static batch 1, no float fallback) and attaches the predicted op mapping as ``edgetpu``.

    Raises:
        InvalidArgumentError, ModelLoadError, CalibrationError, QuantizationError, ConversionError,
        LabelMismatchError (labels that do not number the outputs).
    """
    if isinstance(labels, (str, os.PathLike)):
        labels = read_labels(labels)
    if target is not None:
        from edgeq.targets.edgetpu.rules import check_target_args, predict_edgetpu

        check_target_args(target, mode, io, batch_size, allow_float_fallback)
        res = convert(model, Mode.INT8, calibration=calibration, samples=samples, seed=seed, io=io,
                      batch_size=1, preprocess=preprocess, labels=labels, show_progress=show_progress)
        return replace(res, target="edgetpu", edgetpu=predict_edgetpu(res.model_bytes))
    if max_drop is not None or evaluation is not None:
        if max_drop is None or getattr(mode, "value", str(mode).lower()) != Mode.INT8.value:
            raise InvalidArgumentError(
                "an accuracy budget needs mode 'int8', max_drop and evaluation data together",
                argument="max_drop" if max_drop is None else "mode", received=max_drop if max_drop is None else mode,
                fix="call convert(model, 'int8', calibration=..., max_drop=0.5, evaluation=...)")
        from edgeq.quantize.budget import budget_search

        return budget_search(model, max_drop=max_drop, calibration=calibration, evaluation=evaluation,
                             samples=samples, seed=seed, io=io, batch_size=batch_size, preprocess=preprocess,
                             labels=labels, allow_float_fallback=allow_float_fallback,
                             show_progress=show_progress)
    if isinstance(mode, (list, tuple)) or (isinstance(mode, str) and mode.lower() == "all"):
        wanted = MODES if isinstance(mode, str) else tuple(
            _enum_arg(Mode, m, "mode", [v.value for v in Mode]) for m in mode)
        if not wanted:
            raise InvalidArgumentError("no modes to convert", argument="mode", received=mode,
                                       fix="give a mode, a list of modes or 'all'")
        io_arg = _enum_arg(IOType, io, "io")
        shared = load_model(model)
        src = None if calibration is None else as_source(calibration, preprocess)
        return [convert(shared, m, calibration=src, samples=samples, seed=seed,
                        io=io_arg if io_arg in _VALID_IO[m] else IOType.FLOAT, batch_size=batch_size,
                        preprocess=preprocess, labels=labels, allow_float_fallback=allow_float_fallback,
                        show_progress=show_progress)
                for m in wanted]
    mode_ = _enum_arg(Mode, mode, "mode", [m.value for m in Mode] + ["all"])
    io_ = _enum_arg(IOType, io, "io")
    if io_ not in _VALID_IO[mode_]:
        raise InvalidArgumentError(
            f"I/O type {io_.value!r} is not available in mode {mode_.value!r}", argument="io", received=io_.value,
            fix=f"use io={sorted(v.value for v in _VALID_IO[mode_])} for {mode_.value}, or mode='int8' for int8/uint8 I/O")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidArgumentError("must be a positive integer", argument="batch_size", received=batch_size,
                                   fix="give e.g. batch_size=1")
    if not isinstance(samples, int) or samples < 1:
        raise InvalidArgumentError("must be a positive integer", argument="samples", received=samples,
                                   fix="give e.g. samples=200")
    loaded: LoadedModel = load_model(model)
    if preprocess is None and len(loaded.inputs) == 1:
        preprocess = default_preprocess(loaded.inputs[0])
    source = None
    if mode_.needs_calibration:
        if calibration is None:
            raise CalibrationError(
                f"mode {mode_.value!r} needs calibration data", argument="calibration", received=None,
                fix="pass calibration= an image folder, arrays or a tf.data.Dataset (--calib at the CLI)")
        source = as_source(calibration, preprocess)
        preprocess = getattr(source, "preprocess", None) or preprocess
    label_source = source
    if labels is None and calibration is not None and not mode_.needs_calibration:
        label_source = as_source(calibration, preprocess)

    rep = None
    counter = {"n": 0}
    failures: list[EdgeqError] = []
    stats = CalibrationStats()
    if source is not None:
        inner = representative_dataset(source, loaded.inputs, samples, seed, batch_size, show_progress, stats)

        def rep() -> Iterator[dict[str, np.ndarray]]:
            # The converter may read the dataset more than once (int16x8 does): count one pass.
            n = 0
            try:
                for item in inner():
                    n += 1
                    counter["n"] = max(counter["n"], n)
                    yield item
            except EdgeqError as exc:  # the converter wraps it: keep ours to re-raise
                failures.append(exc)
                raise

    start = time.perf_counter()
    with loaded.converter(batch_size) as converter:
        configure_converter(converter, mode_, io_, rep, allow_float_fallback)
        try:
            # Keras prints a "Saved artifact" summary while tracing; the user did not ask for it.
            # TF's calibrator warns about its own deprecated interpreter and input statistics.
            with contextlib.redirect_stdout(_io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                raw = converter.convert()
        except EdgeqError:
            raise
        except Exception as exc:  # the converter raises many kinds
            if failures:
                raise failures[0] from None
            raise _conversion_error(exc, mode_, allow_float_fallback) from exc
    seconds = time.perf_counter() - start
    labels = _labels_for(labels, label_source, output_classes(bytes(raw)))
    if source is not None:
        warn_about_calibration(loaded, source, stats, samples)
    if source is not None and getattr(source, "skipped", None):
        skipped = source.skipped  # type: ignore[attr-defined]
        from edgeq.progress import _console

        _console.print(f"[yellow]skipped {len(skipped)} unreadable image(s) in {source.description}[/]")
    meta = EdgeqMetadata(
        mode=mode_.value, io=io_.value, preprocess=preprocess,
        labels=None if labels is None else tuple(str(x) for x in labels),
        source=loaded.name, edgeq_version=__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra={"calibration": None if source is None else source.description,
               "calibration_samples": counter["n"], "batch_size": batch_size,
               "inputs": [s.name for s in loaded.inputs]},
    )
    data = embed_metadata(bytes(raw), meta)
    flat = read_flat_model(data)
    stayed_float = float_ops(flat, mode_)
    if stayed_float and not allow_float_fallback:
        # The converter leaves ops without an integer kernel in float even when integer-only
        # was asked; integer-only targets (Edge TPU, MCUs, NPUs) cannot run such a model.
        raise QuantizationError(
            f"op(s) {', '.join(stayed_float)} cannot be quantized to {mode_.value} and would stay float",
            argument="mode", received=mode_.value,
            fix="replace that layer, use float16, or allow float fallback (allow_float_fallback=True, "
                "--allow-float) if the target runs float ops")
    return ConversionResult(
        mode=mode_, io=io_, model_bytes=data, source_name=_safe_name(loaded.name),
        inputs=_details(flat, "inputs"), outputs=_details(flat, "outputs"),
        conversion_seconds=seconds, calibration_samples=counter["n"],
        float_ops=stayed_float, op_counts=flat.op_counts(), metadata=meta,
    )


def _labels_for(labels: Sequence[str] | None, source: DataSource | None, outputs: int) -> tuple[str, ...] | None:
    """The labels to store: one per output, given or from the calibration folder's classes."""
    if labels is None:
        return None if source is None else class_labels(source, outputs, "calibration")
    names = tuple(str(x) for x in labels)
    if names and len(names) != outputs:
        raise LabelMismatchError(
            f"{len(names)} labels for a model with {outputs} outputs", argument="labels", received=len(names),
            fix=f"give exactly {outputs} labels, one per output in output order (--labels FILE at the CLI), "
                "or labels=() to store none")
    return names or None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"
