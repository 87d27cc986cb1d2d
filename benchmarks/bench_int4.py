"""int4 figures: optimisation cost per 100k weights, and int8 vs int4 (nearest, optimized) per model.

Two models trained in seconds on the bundled digits (mnist5k/train), measured on its held-out
test folder against the float model: the demo's digits CNN and a ResNet-8-style CNN. Per mode:
file size, gzip -9 size, top-1, arg-max agreement and SQNR against float32, and the median
latency at one thread, the modes timed in interleaved rounds (int4's hybrid kernels unpack
weights and quantize activations at every call: it can be slower than int8 and float32;
``slower_than_int8`` says so). The optimisation cost is the optimized conversion's seconds
minus the nearest one's, per 100,000 4-bit weights.

``python benchmarks/bench_int4.py elsewhere``: fer's emotion model (trained elsewhere) on
real-photo crops, and the optimized rounding's time on MobileNetV2 alpha 0.35 (:func:`elsewhere`).
Measured on 2 shared x86 cores: a whole-model run of the partly-4-bit model per layer gave
88.3% agreement (14.8 dB) and 16.9 s for MobileNetV2 (32 samples; 28.1 s with 128); one
operator-by-operator pass with λ = 30% and 32768 rows 90.7% (17.8 dB) and 11.1 s (14.1 s).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "datasets" / "mnist5k"
sys.path.insert(0, str(REPO / "examples"))
sys.path.insert(0, str(REPO / "tests"))


def _outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    from edgeq_device.tasks.evaluation import predict_arrays

    return np.asarray(predict_arrays(model_bytes, x, workers=None))


def _model_figures(model: Any, x_cal: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    import edgeq
    from edgeq.measure.fidelity import argmax_agreement, fidelity
    from edgeq.measure.latency import interleaved_rounds

    modes = {"float32": ("float32", "optimized"), "int8": ("int8", "optimized"),
             "int4 nearest": ("int4", "nearest"), "int4 optimized": ("int4", "optimized")}
    results, seconds = {}, {}
    for name, (mode, rounding) in modes.items():
        start = time.perf_counter()
        results[name] = edgeq.convert(model, mode, calibration=x_cal, samples=len(x_cal), rounding=rounding,
                                      progress=False)
        seconds[name] = time.perf_counter() - start
    ref = _outputs(results["float32"].model_bytes, x)
    rounds = interleaved_rounds({n: r.model_bytes for n, r in results.items()}, (1,), 5, 40, 0.2, 2.0)
    rows: dict[str, Any] = {}
    for name, res in results.items():
        out = _outputs(res.model_bytes, x)
        p50 = float(np.median([v for r in rounds[name][1] for v in r]))
        rows[name] = {"size_bytes": res.size_bytes, "compressed_size_bytes": res.compressed_size,
                      "top1": float(np.mean(out.argmax(1) == y)), "agreement": argmax_agreement(ref, out),
                      "sqnr_db": round(fidelity(ref, out)["sqnr_db"], 2) if name != "float32" else None,
                      "p50_us_1_thread": round(p50, 1), "convert_seconds": round(seconds[name], 2)}
    for name in ("int4 nearest", "int4 optimized"):
        rows[name]["size_vs_int8"] = round(rows[name]["size_bytes"] / rows["int8"]["size_bytes"], 3)
        rows[name]["latency_vs_int8"] = round(rows[name]["p50_us_1_thread"] / rows["int8"]["p50_us_1_thread"], 2)
        rows[name]["slower_than_int8"] = rows[name]["latency_vs_int8"] > 1.0
    weights = int(results["int4 optimized"].metadata.extra["int4_weights"])
    extra = seconds["int4 optimized"] - seconds["int4 nearest"]
    return {"modes": rows, "int4_weights": weights,
            "optimisation_seconds_per_100k_weights": round(extra / weights * 1e5, 2)}


def run() -> dict[str, object]:
    """int4 figures for the digits CNN and the ResNet-8-style CNN."""
    from demo import train_cnn
    from fixtures.models import load_digits, train_resnet8

    x_train, y_train = load_digits(DATA / "train")
    x_test, y_test = load_digits(DATA / "test")
    x_cal = x_train[:128]
    models = {"digits_cnn": train_cnn(DATA / "train", epochs=2, verbose=0),
              "resnet8": train_resnet8(x_train, y_train, epochs=2, seed=0, samples=None)}
    return {name: _model_figures(m, x_cal, x_test, y_test) for name, m in models.items()}


def elsewhere() -> dict[str, object]:
    """fer's emotion model (a residual CNN trained elsewhere) on real-photo crops: int8 and int4 against
    float32 on held-out crops; and optimized rounding's seconds on MobileNetV2 alpha 0.35 (96x96)."""
    import keras
    from fixtures.elsewhere import emotion_model, photo_crops

    import edgeq
    from edgeq.measure.fidelity import argmax_agreement, fidelity

    model = emotion_model()
    calib, held = photo_crops(128, seed=0), photo_crops(300, seed=1)
    ref = _outputs(edgeq.convert(model, "float32").model_bytes, held)
    rows: dict[str, Any] = {}
    for name, mode, rounding in (("int8", "int8", "optimized"), ("int4 nearest", "int4", "nearest"),
                                 ("int4 optimized", "int4", "optimized")):
        start = time.perf_counter()
        res = edgeq.convert(model, mode, calibration=calib, samples=len(calib), rounding=rounding, progress=False)
        out = _outputs(res.model_bytes, held)
        rows[name] = {"agreement": argmax_agreement(ref, out), "sqnr_db": round(fidelity(ref, out)["sqnr_db"], 2),
                      "size_bytes": res.size_bytes, "convert_seconds": round(time.perf_counter() - start, 1)}
    keras.utils.set_random_seed(0)
    mnv2 = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10)
    x = photo_crops(32, seed=2, size=96, grey=False)
    start = time.perf_counter()
    edgeq.convert(mnv2, "int4", calibration=x, samples=32, rounding="optimized", progress=False)
    return {"emotion_model": rows, "mobilenetv2_035_optimized_rounding_seconds": round(time.perf_counter() - start, 1)}


if __name__ == "__main__":
    import json

    print(json.dumps(elsewhere() if sys.argv[1:] == ["elsewhere"] else run(), indent=2))
