"""Models converted with a plain TFLiteConverter call, for tests that check edgeq against them."""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def plain_convert(model: Any, int8: bool = False, io: str = "float", fallback: bool = False) -> bytes:
    """Convert a Keras model as a user would by hand: float32, or int8 calibrated on 4 random samples.

    ``io`` is the int8 model's input/output type (float, int8 or uint8); ``fallback`` lets ops
    without an int8 kernel stay float. A model whose input is already uint8 pixels is
    calibrated on uint8 data and keeps that input; ``io`` then sets its output type only.
    """
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        shape = tuple(d or 1 for d in model.inputs[0].shape)
        uint8_input = tf.as_dtype(model.inputs[0].dtype) == tf.uint8

        def rep() -> Any:
            for _ in range(4):
                yield [rng.integers(0, 256, shape).astype(np.uint8) if uint8_input
                       else rng.uniform(0, 1, shape).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + (
            [tf.lite.OpsSet.TFLITE_BUILTINS] if fallback else [])
        if io != "float":
            io_type = tf.int8 if io == "int8" else tf.uint8
            if not uint8_input:
                conv.inference_input_type = io_type
            conv.inference_output_type = io_type
    return bytes(conv.convert())
