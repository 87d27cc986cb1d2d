"""``edgeq-device profile`` on MobileNetV2, int8 and float32, on this host with one thread.

``keras.applications.MobileNetV2`` (224x224x3, 1000 classes, ``weights=None``: random
weights, only the speed matters) is converted to float32 and to int8 (float I/O), and each
file is profiled by :func:`edgeq_device.measure.profile.profile_model` with one interpreter thread,
in a child Python that has not loaded TensorFlow (as on a board). Figures per mode:

- ``seconds``: the wall time of the whole profile (goal <= 30 s on one core);
- ``sum_over_whole``: the operators' summed p50 over the whole model's p50 measured in the
  same run (goal within 0.75-1.25);
- ``coverage``: operators timed alone over all operators (goal >= 0.95);

and the five slowest operators, for the int8 vs float32 comparison.
Run: ``python benchmarks/bench_profile.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

GOALS = {"seconds": ("<=", 30.0), "sum_over_whole_low": (">=", 0.75), "sum_over_whole_high": ("<=", 1.25),
         "coverage": (">=", 0.95)}
REPO = Path(__file__).resolve().parents[1]


def build_models(folder: Path) -> dict[str, Path]:
    """MobileNetV2 (random weights) as float32 and int8 (float I/O) .tflite files."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None)
    rng = np.random.default_rng(0)

    def representative() -> Any:
        for _ in range(8):
            yield [rng.random((1, 224, 224, 3), dtype=np.float32) * 2 - 1]

    paths = {"float32": folder / "mobilenet_v2_float32.tflite", "int8": folder / "mobilenet_v2_int8.tflite"}
    paths["float32"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    paths["int8"].write_bytes(conv.convert())
    return paths


def profile_figures(model: Path) -> dict[str, Any]:
    """Profile ``model`` with one thread in this process; its figures."""
    from edgeq_device.measure.profile import profile_model

    t0 = time.perf_counter()
    prof = profile_model(model, threads=1)
    seconds = time.perf_counter() - t0
    whole = prof.whole_p50_us
    top = sorted(prof.timed, key=lambda o: -(o.p50_us or 0.0))[:5]
    return {
        "seconds": round(seconds, 2),
        "operators": len(prof.operators),
        "operators_timed": len(prof.timed),
        "coverage": round(prof.coverage, 4),
        "sum_us": round(prof.sum_us, 1),
        "whole_p50_us": None if whole is None else round(whole, 1),
        "sum_over_whole": None if not whole else round(prof.sum_us / whole, 3),
        "residual_us": None if prof.residual_us is None else round(prof.residual_us, 1),
        "top": [{"index": o.index, "op": o.op, "p50_us": round(o.p50_us or 0.0, 1),
                 "share": round(prof.share(o) or 0.0, 3)} for o in top],
        "runtime": f"{prof.runtime} {prof.runtime_version}",
    }


def _in_child(model: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "device"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, __file__, "--profile", str(model)], capture_output=True, text=True,
                         env=env, check=True, timeout=900)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(Path(tmp))
        result: dict[str, Any] = {"model": "MobileNetV2 224x224 (weights=None)", "threads": 1}
        for mode, path in models.items():
            figures = _in_child(path)
            figures["sum_over_whole_low"] = figures["sum_over_whole_high"] = figures["sum_over_whole"]
            for key, (op, goal) in GOALS.items():
                value = figures[key]
                figures[f"{key}_goal_met"] = value is not None and (value <= goal if op == "<=" else value >= goal)
            del figures["sum_over_whole_low"], figures["sum_over_whole_high"]
            result[mode] = figures
        f32, i8 = result["float32"]["whole_p50_us"], result["int8"]["whole_p50_us"]
        result["int8_speedup_whole"] = None if not f32 or not i8 else round(f32 / i8, 3)
    return result


def main() -> int:
    r = run()
    print(f"profile of {r['model']}, one thread")
    print(f"{'mode':<8} {'seconds':>8} {'timed':>9} {'sum ms':>8} {'whole ms':>9} {'sum/whole':>10}")
    for mode in ("float32", "int8"):
        f = r[mode]
        print(f"{mode:<8} {f['seconds']:>8.1f} {f['operators_timed']:>4}/{f['operators']:<4} "
              f"{f['sum_us'] / 1000:>8.2f} {(f['whole_p50_us'] or 0) / 1000:>9.2f} {f['sum_over_whole'] or 0:>10.3f}")
        print("   slowest: " + ", ".join(f"#{o['index']} {o['op']} {o['p50_us'] / 1000:.2f} ms" for o in f["top"]))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--profile":
        print(json.dumps(profile_figures(Path(sys.argv[2]))))
        raise SystemExit(0)
    raise SystemExit(main())
