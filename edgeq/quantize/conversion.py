"""One conversion: a model in one mode, calibrated, labelled, checked, with its metadata inside.

:func:`convert_mode` is the step every entry point ends in (:func:`edgeq.convert`,
:func:`~edgeq.quantize.converter.convert_all`, the accuracy budget's candidates, QAT's
export): load the model, stream the calibration data through
:func:`~edgeq.quantize.calibration.representative_dataset`, configure and run
``TFLiteConverter`` (:mod:`edgeq.quantize.tflite`), store the labels and
preprocessing as metadata (:mod:`edgeq.quantize.metadata`) and refuse an
integer-only model that kept float ops. ``int4`` converts to float32 first and gives that
file 4-bit weights (:func:`~edgeq.quantize.lowbit.int4.int4_model`), rounded on the calibration
samples unless ``rounding="nearest"``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.tasks.detection import identify_outputs
from edgeq_device.tasks.evaluation import output_classes, read_labels

from edgeq.errors import CalibrationError, EdgeqError, QuantizationError
from edgeq.inputs.data import as_source
from edgeq.inputs.models import LoadedModel, load_model
from edgeq.nativelog import quiet_native_logs
from edgeq.progress import _console, task_progress
from edgeq.quantize.calibration import (
    CalibrationStats,
    default_preprocess,
    representative_dataset,
    warn_about_calibration,
    warnings_once,
)
from edgeq.quantize.lowbit.int4 import int4_model
from edgeq.quantize.lowbit.rounding import Rounding
from edgeq.quantize.metadata import build_metadata, check_task, embed_metadata, labels_for
from edgeq.quantize.modes import IOType, Mode, check_io, enum_arg, positive_int
from edgeq.quantize.ranges.convert import check_ranges, convert_with_ranges
from edgeq.quantize.result import ConversionResult, safe_name, tensor_details
from edgeq.quantize.tflite import configure_converter, float_ops, run_converter

__all__ = ["convert_mode"]


@quiet_native_logs()
@warnings_once
def convert_mode(
    model: Any,
    mode: str | Mode = "float32",
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
    rounding: str | Rounding = "optimized",
    task: str | None = None,
    task_settings: dict[str, Any] | None = None,
    ranges: str = "minmax",
    percentile: float = 99.99,
) -> ConversionResult:
    """Convert ``model`` in one mode; the arguments are :func:`edgeq.convert`'s.

    Raises:
        InvalidArgumentError, ModelLoadError, CalibrationError, QuantizationError, ConversionError,
        LabelMismatchError (labels that do not number the outputs).
    """
    if isinstance(labels, (str, os.PathLike)):
        labels = read_labels(labels)
    task_, settings = check_task(task, task_settings)
    mode_ = enum_arg(Mode, mode, "mode", [m.value for m in Mode] + ["all"])
    rounding_ = enum_arg(Rounding, rounding, "rounding")
    io_ = enum_arg(IOType, io, "io")
    check_io(mode_, io_)
    ranges_ = check_ranges(ranges, percentile, mode_)
    positive_int(batch_size, "batch_size", "1", optional=True)
    positive_int(samples, "samples", "200")
    loaded: LoadedModel = load_model(model)
    if preprocess is None and len(loaded.inputs) == 1:
        preprocess = default_preprocess(loaded.inputs[0])
    source = None
    calibrated = mode_.needs_calibration or (mode_ is Mode.INT4 and rounding_ is Rounding.OPTIMIZED)
    if calibrated:
        if calibration is None:
            raise CalibrationError(
                f"mode {mode_.value!r} needs calibration data", argument="calibration", received=None,
                fix="pass calibration= an image folder, arrays or a tf.data.Dataset (--calib at the CLI)"
                    + (", or rounding='nearest' (--rounding nearest)" if mode_ is Mode.INT4 else ""))
        source = as_source(calibration, preprocess)
        preprocess = getattr(source, "preprocess", None) or preprocess
    label_source = source
    if labels is None and calibration is not None and not calibrated:
        label_source = as_source(calibration, preprocess)

    rep = None
    counter = {"n": 0}
    failures: list[EdgeqError] = []
    stats = CalibrationStats()
    if source is not None:
        inner = representative_dataset(source, loaded.inputs, samples, seed, batch_size, progress, stats)

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
        choice = None
        if mode_ is Mode.INT4:
            raw = run_converter(converter, Mode.FLOAT32, allow_float_fallback, failures)
        else:
            configure_converter(converter, mode_, io_, rep, allow_float_fallback)
            if ranges_ != "minmax" and rep is not None:
                raw, choice = convert_with_ranges(converter, rep, ranges_, percentile, io_,
                                                  [s.name for s in loaded.inputs], failures)
            else:
                raw = run_converter(converter, mode_, allow_float_fallback, failures)
    rounding_extra: dict[str, Any] = {}
    if mode_ is Mode.INT4:
        samples_ = list(rep()) if rep is not None else None
        with task_progress("rounding 4-bit weights", None, progress) as tick:
            four = int4_model(raw, samples_, rounding_, progress=lambda done, total: tick())
        raw = four.model_bytes
        rounding_extra = {"rounding": rounding_.value, "int4_weights": four.weights}
    seconds = time.perf_counter() - start
    if task_ in ("detection", "segmentation"):  # labels name classes, not outputs; never a folder's
        stored_labels = labels_for(labels, None, settings.get("num_classes", len(labels or ())))
    else:
        stored_labels = labels_for(labels, label_source, output_classes(raw))
    if source is not None:
        warn_about_calibration(loaded, source, stats, samples)
    if source is not None and getattr(source, "skipped", None):
        skipped = source.skipped  # type: ignore[attr-defined]
        _console.print(f"[yellow]skipped {len(skipped)} unreadable image(s) in {source.description}[/]")
    meta = build_metadata(
        mode=mode_.value, io=io_.value, preprocess=preprocess, labels=stored_labels, source=loaded.name,
        extra={"calibration": None if source is None else source.description,
               "calibration_samples": counter["n"], "batch_size": batch_size,
               "inputs": [s.name for s in loaded.inputs], **rounding_extra,
               **({} if choice is None else {"ranges": choice.to_dict()})},
        task=task_, task_settings=settings,
    )
    data = embed_metadata(raw, meta)
    flat = read_flat_model(data)
    if task_ == "detection":  # a board must find the four outputs: refuse a model it would not
        identify_outputs(flat, settings.get("outputs"))
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
        mode=mode_, io=io_, model_bytes=data, source_name=safe_name(loaded.name),
        inputs=tensor_details(flat, "inputs"), outputs=tensor_details(flat, "outputs"),
        conversion_seconds=seconds, calibration_samples=counter["n"],
        float_ops=stayed_float, op_counts=flat.op_counts(), metadata=meta,
    )
