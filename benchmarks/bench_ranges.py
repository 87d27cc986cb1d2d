"""Activation-ranges methods on four models trained briefly on mnist5k: output SQNR and arg-max
agreement against the float model on held-out test images, size, and calibration (conversion)
time as a ratio to minmax, all in one run.

- ``digits_cnn``: the bundled digits CNN (ReLU, softmax output).
- ``resnet8``: a ResNet-8-style CNN (three residual stages with adds, batch norm, ReLU, no bounded
  activation), logits out.
- ``mobilenet_v2_035_96``: ``keras.applications.MobileNetV2`` alpha 0.35 at 96 px (weights=None;
  ReLU6, softmax output), the digits resized and grey copied to RGB.
- ``spiky_resnet8``: a ResNet-8-style CNN without batch norm in which four channels of each stage's
  output are scaled up 32x (:func:`spiky_resnet8`): activation-limited, as a network with a few
  big-activation channels is (min/max int8 spends its steps on rare big values).

Batch norm layers train with momentum 0.9 so their moving statistics settle in the few steps a
brief training takes (the float model is then a working classifier, not one of initial statistics).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
METHODS = ("minmax", "percentile", "mse", "entropy", "cautious", "auto")
CALIBRATION = 200
TEST = 300


def _settle_batch_norm(model: Any) -> Any:
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def resnet8(seed: int = 0) -> Any:
    """A ResNet-8-style CNN for 28x28x1: a 16-filter stem, residual stages of 16, 32, 64 filters."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)

    def block(x: Any, filters: int, stride: int) -> Any:
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        if stride != 1 or x.shape[-1] != filters:
            x = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x))
        return layers.ReLU()(layers.Add()([x, y]))

    inp = keras.Input((28, 28, 1), name="image")
    h = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        h = block(h, filters, stride)
    out = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(h))
    return _settle_batch_norm(keras.Model(inp, out, name="resnet8"))


def spiky_resnet8(seed: int = 0, big: float = 32.0) -> Any:
    """A ResNet-8-style CNN for 28x28x1 without batch norm, four channels of each stage's output
    multiplied by ``big`` (the next layers learn with them)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)

    def scale(filters: int) -> Any:
        factors = np.ones(filters, np.float32)
        factors[::filters // 4] = big
        return layers.Rescaling(factors)

    def block(x: Any, filters: int, stride: int) -> Any:
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", activation="relu")(x)
        y = layers.Conv2D(filters, 3, padding="same")(y)
        if stride != 1 or x.shape[-1] != filters:
            x = layers.Conv2D(filters, 1, strides=stride)(x)
        return scale(filters)(layers.ReLU()(layers.Add()([x, y])))

    inp = keras.Input((28, 28, 1), name="image")
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        h = block(h, filters, stride)
    out = layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(h))
    return keras.Model(inp, out, name="spiky_resnet8")


def mobilenet_v2(seed: int = 0) -> Any:
    """``keras.applications.MobileNetV2`` alpha 0.35, 96x96x3, 10 classes, weights=None."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(input_tensor=keras.Input((96, 96, 3), name="image"), alpha=0.35,
                                           weights=None, classes=10)
    return _settle_batch_norm(model)


def to_rgb96(x: np.ndarray) -> np.ndarray:
    """28x28x1 digits in [0, 1] as 96x96x3."""
    import tensorflow as tf

    return np.repeat(tf.image.resize(x, (96, 96)).numpy(), 3, axis=-1).astype(np.float32)


def train(model: Any, x: np.ndarray, y: np.ndarray, logits: bool, epochs: int = 1, batch_size: int = 32,
          learning_rate: float = 2e-3) -> float:
    """Fit ``model`` briefly (Adam); returns the seconds it took."""
    import keras

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    return time.perf_counter() - start


def measure(model: Any, calibration: np.ndarray, test: np.ndarray, y_test: np.ndarray) -> dict[str, Any]:
    """Every ranges method's int8 model of ``model`` against its float model on ``test``."""
    import edgeq
    from edgeq.quantize.ranges.convert import LiteRunner, output_sqnr

    ref = LiteRunner(edgeq.convert(model, "float32", progress=False).model_bytes, ["image"], preserve=False)
    items = [{"image": test[i:i + 1]} for i in range(len(test))]
    reference = [[o.copy() for o in ref.run(it)] for it in items]
    float_top1 = float(np.mean([np.argmax(r[0]) == t for r, t in zip(reference, y_test)]))
    rows: dict[str, Any] = {}
    for method in METHODS:
        start = time.perf_counter()
        res = edgeq.convert(model, "int8", calibration=calibration, samples=len(calibration), ranges=method,
                            progress=False)
        seconds = time.perf_counter() - start
        q = LiteRunner(res.model_bytes, ["image"], preserve=False)
        tops = [np.argmax(q.run(it)[0]) for it in items]
        rows[method] = {
            "output_sqnr_db": round(output_sqnr(reference, res.model_bytes, items, ["image"]), 2),
            "argmax_agreement": round(float(np.mean([t == np.argmax(r[0]) for t, r in zip(tops, reference)])), 4),
            "top1": round(float(np.mean(np.array(tops) == y_test)), 4),
            "size_bytes": res.size_bytes, "seconds": round(seconds, 2),
            "narrowed": res.ranges.narrowed if res.ranges else 0,
            "chosen": res.ranges.chosen if res.ranges else "minmax",
            "held_out_sqnr_db": ({k: round(v, 2) for k, v in res.ranges.sqnr_db.items()}
                                 if res.ranges and res.ranges.sqnr_db else None),
            "held_out_parts_won": res.ranges.folds_won if res.ranges and res.ranges.folds_won else None,
        }
    for row in rows.values():
        row["time_vs_minmax"] = round(row["seconds"] / rows["minmax"]["seconds"], 2)
        row["sqnr_vs_minmax_db"] = round(row["output_sqnr_db"] - rows["minmax"]["output_sqnr_db"], 2)
    return {"float_top1": round(float_top1, 4), "methods": rows}


def run() -> dict[str, Any]:
    import sys

    sys.path.insert(0, str(HERE.parent / "tests"))
    from fixtures.models import MNIST, load_digits, train_digits_cnn

    x, y = load_digits(MNIST / "train")
    xt, yt = load_digits(MNIST / "test")
    calibration, test, y_test = x[2000:2000 + CALIBRATION], xt[:TEST], yt[:TEST]
    out: dict[str, Any] = {}
    start = time.perf_counter()
    digits = train_digits_cnn(x[:2000], y[:2000], epochs=2)
    out["digits_cnn"] = {"train_seconds": round(time.perf_counter() - start, 1),
                         **measure(digits, calibration, test, y_test)}
    net = resnet8()
    seconds = train(net, x[:2000], y[:2000], logits=True, epochs=2)
    out["resnet8"] = {"train_seconds": round(seconds, 1), **measure(net, calibration, test, y_test)}
    spiky = spiky_resnet8()
    seconds = train(spiky, x[:2000], y[:2000], logits=True, epochs=2, learning_rate=1e-3)
    out["spiky_resnet8"] = {"train_seconds": round(seconds, 1), **measure(spiky, calibration, test, y_test)}
    mobile = mobilenet_v2()
    seconds = train(mobile, to_rgb96(x[:1500]), y[:1500], logits=False, batch_size=16, learning_rate=3e-3)
    out["mobilenet_v2_035_96"] = {"train_seconds": round(seconds, 1),
                                  **measure(mobile, to_rgb96(calibration), to_rgb96(test), y_test)}
    gains = [m["methods"]["auto"]["sqnr_vs_minmax_db"] for m in out.values()]
    out["auto_vs_minmax_db"] = {"mean": round(float(np.mean(gains)), 2), "worst": round(float(np.min(gains)), 2)}
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
