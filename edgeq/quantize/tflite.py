"""The TFLite converter's primitives: set it up for a mode, run it, read what it made.

:func:`configure_converter` sets a ``tf.lite.TFLiteConverter``'s options for a mode and
I/O type; :func:`run_converter` runs it quietly and turns its many failures into
:class:`~edgeq.errors.QuantizationError` or :class:`~edgeq.errors.ConversionError`;
:func:`float_ops` lists the ops of a quantized model that still compute in float.
"""

from __future__ import annotations

import contextlib
import io as _io
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from edgeq_device.model.flatbuffer import FlatModel

from edgeq.errors import ConversionError, EdgeqError, QuantizationError
from edgeq.quantize.modes import IOType, Mode

__all__ = ["configure_converter", "conversion_error", "float_ops", "run_converter"]


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


def run_converter(converter: Any, mode: Mode, allow_float_fallback: bool = False,
                  failures: Sequence[EdgeqError] = ()) -> bytes:
    """Run a configured converter; returns the ``.tflite`` bytes.

    Keras' "Saved artifact" summary while tracing and TF's calibrator warnings (its own
    deprecated interpreter, input statistics) are kept off the user's console.
    ``failures`` holds edgeq errors raised inside the representative dataset, which the
    converter wraps in its own: the first is re-raised as it is.

    Raises:
        QuantizationError: an op cannot be integer-quantized and integer-only was asked.
        ConversionError: any other failure of the converter.
    """
    try:
        with contextlib.redirect_stdout(_io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return bytes(converter.convert())
    except EdgeqError:
        raise
    except Exception as exc:  # the converter raises many kinds
        if failures:
            raise failures[0] from None
        raise conversion_error(exc, mode, allow_float_fallback) from exc


_UNSUPPORTED_OP = re.compile(r"'(tfl|tf)\.([A-Za-z0-9_]+)'")


def conversion_error(exc: Exception, mode: Mode, allow_float_fallback: bool) -> EdgeqError:
    """The edgeq error for a converter failure: the op it could not quantize, or its first error line."""
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
