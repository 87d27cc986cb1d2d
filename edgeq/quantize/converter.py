"""Convert a Keras model to ``.tflite``: :func:`convert` (one result) and :func:`convert_all`.

``convert(model, mode, calibration=...)`` wraps ``tf.lite.TFLiteConverter``:

========  ==============================  ===========  =========================
mode      what it is                      calibration  I/O (``io=``)
========  ==============================  ===========  =========================
float32   baseline                        no           float
dynamic   int8 weights, float activations no           float
float16   float16 weights                 no           float
int8      full integer                    yes          float, int8 or uint8
int16x8   int16 activations, int8 weights yes          float or int16
int4      4-bit weights, float activations optimized   float
                                          rounding
========  ==============================  ===========  =========================

With ``max_drop`` it runs the accuracy budget search (:mod:`edgeq.quantize.precision.budget`); with
``target="edgetpu"`` it converts for the Edge TPU (:mod:`edgeq.targets.edgetpu.rules`).
:func:`convert_all` converts one model in several modes, loading it and reading the
calibration source once.

The steps are public so they can be called one by one: :func:`edgeq.inputs.models.load_model`,
:func:`~edgeq.quantize.calibration.representative_dataset`,
:func:`~edgeq.quantize.tflite.configure_converter` and
:func:`~edgeq.quantize.tflite.run_converter`, then
:func:`~edgeq.quantize.metadata.embed_metadata` on the bytes; they are importable from here too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, overload

from edgeq_device.model.preprocess import Preprocess
from edgeq_device.tasks.evaluation import read_labels

from edgeq.deprecation import renamed_arguments
from edgeq.errors import InvalidArgumentError
from edgeq.inputs.data import as_source
from edgeq.inputs.models import load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.quantize.calibration import (
    CalibrationStats,
    default_preprocess,
    representative_dataset,
    warn_about_calibration,
    warn_at_caller,
    warnings_once,
)
from edgeq.quantize.conversion import convert_mode
from edgeq.quantize.metadata import embed_metadata
from edgeq.quantize.modes import MODES, VALID_IO, IOType, Mode, enum_arg
from edgeq.quantize.precision.budget import QATStep, budget_search
from edgeq.quantize.precision.sensitivity import convert_a16
from edgeq.quantize.qat.data import positive
from edgeq.quantize.qat.train import qat
from edgeq.quantize.result import ConversionResult, TensorDetail
from edgeq.quantize.tflite import configure_converter, float_ops
from edgeq.targets.edgetpu.rules import check_target_args, predict_edgetpu
from edgeq.targets.mcu.check import check_mcu, check_mcu_args

__all__ = [
    "MODES",
    "CalibrationStats",
    "ConversionResult",
    "IOType",
    "Mode",
    "TensorDetail",
    "configure_converter",
    "convert",
    "convert_all",
    "default_preprocess",
    "embed_metadata",
    "float_ops",
    "representative_dataset",
    "warn_about_calibration",
]

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
    progress: bool | None = ...,
    max_drop: float | None = ...,
    max_slowdown: float | None = ...,
    max_latency_ms: float | None = ...,
    evaluation: Any = ...,
    target: str | None = ...,
    rounding: str = ...,
    a16_layers: Sequence[str] | int | None = ...,
    task: str | None = ...,
    task_settings: dict[str, Any] | None = ...,
    ranges: str = ...,
    percentile: float = ...,
    train: Any = ...,
    train_epochs: int = ...,
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
    progress: bool | None = ...,
    max_drop: float | None = ...,
    max_slowdown: float | None = ...,
    max_latency_ms: float | None = ...,
    evaluation: Any = ...,
    target: str | None = ...,
    rounding: str = ...,
    a16_layers: Sequence[str] | int | None = ...,
    task: str | None = ...,
    task_settings: dict[str, Any] | None = ...,
    ranges: str = ...,
    percentile: float = ...,
    train: Any = ...,
    train_epochs: int = ...,
) -> ConversionResult: ...


@renamed_arguments(show_progress="progress")
@quiet_native_logs()
@warnings_once
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
    progress: bool | None = None,
    max_drop: float | None = None,
    max_slowdown: float | None = None,
    max_latency_ms: float | None = None,
    evaluation: Any = None,
    target: str | None = None,
    rounding: str = "optimized",
    a16_layers: Sequence[str] | int | None = None,
    task: str | None = None,
    task_settings: dict[str, Any] | None = None,
    ranges: str = "minmax",
    percentile: float = 99.99,
    train: Any = None,
    train_epochs: int = 2,
) -> ConversionResult | list[ConversionResult]:
    """Convert a Keras model to TFLite in one mode.

    Args:
        model: a Keras 3 or tf_keras model, a ``.keras``/``.h5`` file or a SavedModel folder.
        mode: ``float32``, ``dynamic``, ``float16``, ``int8``, ``int16x8`` or ``int4``. Deprecated: ``all``
            or a list of modes (a list of results, in that order); use :func:`convert_all`.
        calibration: data for int8/int16x8: an image folder, arrays, ``.npy``/``.npz``, a
            ``tf.data.Dataset``, an iterable or a :class:`~edgeq.inputs.data.DataSource`.
        samples: how many calibration samples to use (a seeded random subset).
        seed: seed of that subset.
        io: ``float``; ``int8`` or ``uint8`` (int8 mode); ``int16`` (int16x8 mode).
        batch_size: fix a dynamic batch dimension (1 for targets that need static shapes).
        preprocess: how images become input; default derived from the input shape, pixels to [0, 1].
        labels: class names in output order (or a text file, one per line), stored in the model's
            metadata; there must be one per output of the model (``()`` stores none). Default:
            the calibration image folder's classes (integer folder names are their output,
            other names sorted as Keras does; see :mod:`edgeq_device.run.images`).
        allow_float_fallback: let ops that cannot be integer-quantized stay float.
        progress: progress bar on stderr (default on, ``EDGEQ_PROGRESS=0`` silences).
        max_drop: an accuracy budget in top-1 points (int8 only): search int8, int8 with the
            worst layers at 16-bit activations, then in float, int16x8, float16 for the first within it, measured on
            ``evaluation``; the report is the result's ``budget`` (see :mod:`edgeq.quantize.precision.budget`).
        max_slowdown, max_latency_ms: with ``max_drop``, candidates must also run within this many
            times int8's latency / this many milliseconds per inference, measured here.
        evaluation: labeled data for ``max_drop`` (image folder with class subfolders, (x, y)).
        target: ``"edgetpu"`` enforces what the Edge TPU compiler needs (full int8, integer I/O,
            static batch 1, no float fallback) and attaches the predicted op mapping as ``edgetpu``;
            ``"mcu"`` converts to int8 with batch 1 and runs the model in TFLM's interpreter, attaching
            its :class:`~edgeq.targets.mcu.check.MCUReport` as ``mcu`` (see :mod:`edgeq.targets.mcu`).
        rounding: ``int4``'s weight rounding: ``optimized`` (default; chosen on the calibration
            data, see :mod:`edgeq.quantize.lowbit.rounding`) or ``nearest``.
        a16_layers: int8 only: these layers (Keras layer names, or op output names from
            :func:`edgeq.debug`) get 16-bit activations, or a number ``k``: the ``k`` worst layers
            of :func:`edgeq.debug`; the rest stays int8 (see :mod:`edgeq.quantize.precision.mixed`). The
            result's metadata ``extra["a16"]`` lists the ops at 16 bits and those kept int8.
        task: what the model does, recorded in its metadata so ``edgeq-device eval`` needs no
            ``--task``: ``classification``, ``detection`` or ``segmentation``.
        task_settings: the task's settings a board evaluates with: detection ``class_offset``,
            ``num_classes``, ``outputs`` (``{"boxes": NAME, ...}``); segmentation ``ignore_index``,
            ``num_classes`` (see :func:`edgeq.quantize.metadata.check_task`).
        ranges: how int8 activation ranges are chosen (int8 only; see :mod:`edgeq.quantize.ranges.convert`):
            ``minmax`` (the converter's: the widest value seen), ``percentile``, ``mse``, ``entropy``,
            ``cautious`` (per tensor, the least error with clipping costed dearer than rounding) (from one more streamed pass collecting per-tensor histograms), or ``auto`` (holds out
            every fourth sample and keeps the method with the best output SQNR there, of minmax and
            the methods ahead of it on each fifth of those samples; never worse than minmax there). The default stays ``minmax``, the converter's own int8, until
            ``auto`` has proven itself on held-out models; the choice is recorded in the result's
            :attr:`~edgeq.quantize.result.ConversionResult.ranges` and the model's metadata.
        percentile: the percentile ``ranges="percentile"`` keeps, in (0, 100]; ``entropy`` clips no more
            values than it gives up.
        train: with ``max_drop``, labeled training data (as for :func:`edgeq.qat`): the budget then tries
            ``int8+qat``, int8 after ``train_epochs`` of quantization-aware fine-tuning, right after plain int8
            and before anything that costs size or speed.
        train_epochs: epochs of that fine-tuning.

    Raises:
        InvalidArgumentError, ModelLoadError, CalibrationError, QuantizationError, ConversionError,
        LabelMismatchError (labels that do not number the outputs).
    """
    if isinstance(labels, (str, os.PathLike)):
        labels = read_labels(labels)
    if a16_layers is not None:
        if getattr(mode, "value", str(mode).lower()) != Mode.INT8.value or target is not None \
                or max_drop is not None or allow_float_fallback:
            raise InvalidArgumentError(
                "16-bit layers are a choice within int8, without target, max_drop or float fallback",
                argument="mode", received=mode, fix="call convert(model, 'int8', calibration=..., a16_layers=[...])")
        return convert_a16(model, a16_layers, calibration=calibration, samples=samples, seed=seed, io=io,
                           batch_size=batch_size, preprocess=preprocess, labels=labels, progress=progress)
    if target == "mcu":  # TFLM: int8, batch 1, run in TFLM's interpreter (edgeq.targets.mcu)
        check_mcu_args(mode, batch_size, allow_float_fallback)
        res = convert_mode(model, Mode.INT8, calibration=calibration, samples=samples, seed=seed, io=io,
                           batch_size=1, preprocess=preprocess, labels=labels, progress=progress, task=task,
                           task_settings=task_settings, ranges=ranges, percentile=percentile)
        return replace(res, target="mcu", mcu=check_mcu(res.model_bytes))
    if target is not None:
        check_target_args(target, mode, io, batch_size, allow_float_fallback)
        res = convert_mode(model, Mode.INT8, calibration=calibration, samples=samples, seed=seed, io=io,
                           batch_size=1, preprocess=preprocess, labels=labels, progress=progress, task=task,
                           task_settings=task_settings,
                           ranges=ranges, percentile=percentile)
        return replace(res, target="edgetpu", edgetpu=predict_edgetpu(res.model_bytes))
    if (max_drop is not None or evaluation is not None) and str(getattr(ranges, "value", ranges)) != "minmax":
        raise InvalidArgumentError("the accuracy budget search uses the converter's min/max ranges",
                                   argument="ranges", received=ranges,
                                   fix="leave ranges='minmax' with max_drop, or drop max_drop")
    if train is not None and max_drop is None:
        raise InvalidArgumentError("training data is used by the accuracy budget's QAT step", argument="train",
                                   received=str(train)[:80], fix="give max_drop= and evaluation= with it, or use "
                                                                  "edgeq.qat(model, train) for QAT alone")
    if max_drop is not None or evaluation is not None:
        if task not in (None, "classification"):
            raise InvalidArgumentError("the accuracy budget measures top-1 of a classifier", argument="task",
                                       received=task, fix="leave out max_drop and evaluation for this task")
        if max_drop is None or getattr(mode, "value", str(mode).lower()) != Mode.INT8.value:
            raise InvalidArgumentError(
                "an accuracy budget needs mode 'int8', max_drop and evaluation data together",
                argument="max_drop" if max_drop is None else "mode", received=max_drop if max_drop is None else mode,
                fix="call convert(model, 'int8', calibration=..., max_drop=0.5, evaluation=...)")
        return budget_search(model, max_drop=max_drop, calibration=calibration, evaluation=evaluation,
                             samples=samples, seed=seed, io=io, batch_size=batch_size, preprocess=preprocess,
                             labels=labels, allow_float_fallback=allow_float_fallback,
                             progress=progress, max_slowdown=max_slowdown, max_latency_ms=max_latency_ms,
                             qat_step=None if train is None else _qat_step(
                                 model, train, train_epochs, samples=samples, seed=seed, io=io,
                                 batch_size=batch_size, preprocess=preprocess, labels=labels, progress=progress))
    if isinstance(mode, (list, tuple)) or (isinstance(mode, str) and mode.lower() == "all"):
        warn_at_caller("convert() with 'all' or a list of modes returns a list and is deprecated; "
                       "use convert_all(model, modes=...) (edgeq.convert_all)", DeprecationWarning)
        modes = "all" if isinstance(mode, str) else [enum_arg(Mode, m, "mode", [v.value for v in Mode]) for m in mode]
        if not modes:
            raise InvalidArgumentError("no modes to convert", argument="mode", received=mode,
                                       fix="give a mode, or use convert_all(model, modes=[...])")
        return convert_all(model, modes, calibration=calibration, samples=samples, seed=seed, io=io,
                           batch_size=batch_size, preprocess=preprocess, labels=labels,
                           allow_float_fallback=allow_float_fallback, progress=progress, rounding=rounding,
                           task=task, task_settings=task_settings)
    return convert_mode(model, mode, calibration=calibration, samples=samples, seed=seed, io=io,
                        batch_size=batch_size, preprocess=preprocess, labels=labels,
                        allow_float_fallback=allow_float_fallback, progress=progress, rounding=rounding,
                        task=task, task_settings=task_settings, ranges=ranges, percentile=percentile)


@renamed_arguments(show_progress="progress")
@quiet_native_logs()
@warnings_once
def convert_all(
    model: Any,
    modes: str | Sequence[str | Mode] = "all",
    *,
    calibration: Any = None,
    samples: int = 200,
    seed: int = 0,
    io: str | IOType = "float",
    batch_size: int | None = None,
    preprocess: Preprocess | None = None,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    allow_float_fallback: bool = False,
    progress: bool | None = None,
    rounding: str = "optimized",
    task: str | None = None,
    task_settings: dict[str, Any] | None = None,
) -> list[ConversionResult]:
    """Convert one model in several modes: one result per mode, in that order.

    The model is loaded and the calibration source opened once for all of them.

    Args:
        model: as for :func:`convert`.
        modes: ``"all"`` (every mode, :data:`MODES` order), one mode, or a list of modes.
        io: applies to the modes that take it (``int8``/``uint8`` for int8, ``int16`` for
            int16x8); the others keep float I/O.
        calibration, samples, seed, batch_size, preprocess, labels, allow_float_fallback,
            progress, rounding, task, task_settings: as for :func:`convert`.

    Raises:
        InvalidArgumentError: no modes, or a mode or I/O type that does not exist; and what
        :func:`convert` raises for each mode.
    """
    if isinstance(modes, str) and modes.lower() == "all":
        wanted = MODES
    else:
        names = [modes] if isinstance(modes, (str, Mode)) else list(modes)
        wanted = tuple(enum_arg(Mode, m, "modes", [v.value for v in Mode]) for m in names)
    if not wanted:
        raise InvalidArgumentError("no modes to convert", argument="modes", received=modes,
                                   fix="give a mode, a list of modes or 'all'")
    if isinstance(labels, (str, os.PathLike)):
        labels = read_labels(labels)
    io_arg = enum_arg(IOType, io, "io")
    shared = load_model(model)
    src = None if calibration is None else as_source(calibration, preprocess)
    return [convert_mode(shared, m, calibration=src, samples=samples, seed=seed,
                         io=io_arg if io_arg in VALID_IO[m] else IOType.FLOAT, batch_size=batch_size,
                         preprocess=preprocess, labels=labels, allow_float_fallback=allow_float_fallback,
                         progress=progress, rounding=rounding, task=task, task_settings=task_settings)
            for m in wanted]


def _qat_step(model: Any, train: Any, epochs: int, *, samples: int, seed: int, io: str | IOType,
              batch_size: int | None, preprocess: Preprocess | None, labels: Sequence[str] | None,
              progress: bool | None) -> QATStep:
    """The budget's training step (:data:`~edgeq.quantize.precision.budget.QATStep`): :func:`edgeq.qat` on
    ``train``, exported int8 with the budget's calibration data. The converter builds it because the
    budget (:mod:`edgeq.quantize.precision`) sits below :mod:`edgeq.quantize.qat`."""
    positive(epochs, "train_epochs", "2")

    def step(calibration: Any) -> tuple[ConversionResult, str]:
        trained = qat(model, train, epochs=epochs, seed=seed, preprocess=preprocess, labels=labels,
                      progress=progress)
        result = trained.convert(str(getattr(io, "value", io)), calibration=calibration, samples=samples, seed=seed,
                                 batch_size=batch_size, progress=progress)
        result.metadata.extra["qat"] = {"epochs": trained.epochs, "seconds": round(trained.seconds, 3),
                                        "history": trained.history}
        n = trained.epochs
        return result, f"{n} epoch{'s' if n != 1 else ''} of quantization-aware fine-tuning ({trained.seconds:.0f} s)"


    return step
