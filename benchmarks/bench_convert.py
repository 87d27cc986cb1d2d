"""Conversion figures: edgeq.convert vs a plain TFLiteConverter call, and calibration memory.

- time ratio: edgeq.convert(model, mode) / TFLiteConverter.from_keras_model(model) with the same
  options and the same calibration samples, best of 3 in one run, per mode;
- memory: peak RSS of a fresh process calibrating int8 on 400 vs 4,000 mnist5k images
  (streamed from the image folder, so the two should be about equal).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "datasets" / "mnist5k" / "train"

_CHILD = r"""
import json, resource, sys, os
os.environ["EDGEQ_PROGRESS"] = "0"
import keras, edgeq
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((28, 28, 1), name="image"), keras.layers.Conv2D(16, 3, activation="relu"),
                          keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, activation="relu"),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = edgeq.convert(model, "int8", calibration=sys.argv[1], samples=int(sys.argv[2]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"samples": result.calibration_samples, "peak_rss_kb": after, "before_kb": before}))
"""


def _model():  # type: ignore[no-untyped-def]
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((28, 28, 1), name="image"), keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])


def conversion_time_ratio(repeats: int = 3) -> dict[str, dict[str, float]]:
    """Best-of-N seconds of edgeq.convert and of the plain converter, per mode."""
    import numpy as np
    import tensorflow as tf

    import edgeq
    from edgeq.quantize.converter import IOType, Mode, configure_converter

    model = _model()
    x = np.random.default_rng(0).uniform(size=(100, 28, 28, 1)).astype(np.float32)

    def rep():  # type: ignore[no-untyped-def]
        for i in range(len(x)):
            yield {"image": x[i:i + 1]}

    out: dict[str, dict[str, float]] = {}
    for mode in (Mode.FLOAT32, Mode.DYNAMIC, Mode.FLOAT16, Mode.INT8):
        ours, plain = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            edgeq.convert(model, mode, calibration=x, samples=len(x), progress=False)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                conv = tf.lite.TFLiteConverter.from_keras_model(model)
                configure_converter(conv, mode, IOType.FLOAT, rep if mode.needs_calibration else None)
                conv.convert()
            plain.append(time.perf_counter() - t)
        out[mode.value] = {"edgeq_s": min(ours), "plain_s": min(plain), "ratio": min(ours) / min(plain)}
    return out


def calibration_memory() -> dict[str, float]:
    """Peak RSS of one process per sample count (400 and 4,000 images)."""
    res = {}
    for n in (400, 4000):
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(TRAIN), str(n)], capture_output=True,
                              text=True, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        res[f"peak_rss_mb_{n}"] = data["peak_rss_kb"] / 1024
        res[f"samples_{n}"] = data["samples"]
    res["ratio_4000_vs_400"] = res["peak_rss_mb_4000"] / res["peak_rss_mb_400"]
    return res


def run() -> dict[str, object]:
    """All conversion figures, as one dict."""
    return {"conversion_time": conversion_time_ratio(), "calibration_memory": calibration_memory()}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
