"""edgeq-device's own overhead and parallel speed-up, as ratios measured in one run.

1. ``bench`` against a bare loop: the median latency ``edgeq_device.benchmark``
   reports, divided by the median of a bare ``interpreter.invoke()`` loop timed
   with ``time.perf_counter_ns`` on the same model and thread count (goal <= 1.02).
2. ``eval`` against a one-interpreter loop, on two models: images per second of
   ``edgeq_device.evaluate`` with one worker per core, divided by a plain loop
   that opens, preprocesses and runs one image at a time on one interpreter
   (goal >= 1.8 on 2 cores).

   - ``cnn96``: a CNN on 96x96 RGB input with random weights (a few ms per image
     on one core), float32, on random RGB PNGs;
   - ``mobilenet``: ``keras.applications.MobileNetV2(alpha=0.35, 128x128,
     weights=None, classes=10)``, int8 with float I/O (about a millisecond per
     image, as long as decoding its PNG), on 128x128 RGB PNGs made from the
     bundled digits. Random weights: only the speed matters here.

   The eval loops run in a child Python that has not loaded TensorFlow, as on a
   board (this process converted the models); ``pool_forkserver`` times the pool
   once more as a process that has loaded TensorFlow would run it.

Both loops alternate for ``rounds`` rounds so a passing load on the machine hits
both. Run: ``python benchmarks/bench_device.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

GOALS = {"bench_overhead": ("<=", 1.02), "eval_speedup": (">=", 1.8), "eval_speedup_mobilenet": (">=", 1.8)}
REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "datasets" / "mnist5k"


def build_model(path: Path) -> Path:
    """A few-ms CNN (96x96x3 -> 10) with random weights, converted to float32 .tflite."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((96, 96, 3)),
        layers.Conv2D(48, 3, padding="same", activation="relu"),
        layers.Conv2D(48, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
        layers.Conv2D(128, 3, padding="same", activation="relu"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(10, activation="softmax"),
    ])
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def build_mobilenet(path: Path) -> Path:
    """MobileNetV2 (alpha 0.35, 128x128x3 -> 10, random weights), int8 with float input and output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(128, 128, 3), alpha=0.35, weights=None, classes=10)
    rng = np.random.default_rng(0)

    def representative() -> Any:
        for _ in range(8):
            yield [rng.random((1, 128, 128, 3), dtype=np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    path.write_bytes(conv.convert())
    return path


def make_digit_images(root: Path, n: int, size: int = 128) -> Path:
    """``n`` RGB PNGs of ``size`` x ``size``: the bundled test digits, resized, in 10 class folders."""
    from PIL import Image

    src = sorted((DIGITS / "test").glob("*/*.png"))
    for i in range(n):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        with Image.open(src[(i * 7) % len(src)]) as im:
            im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.png")
    return root


def make_images(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` random 96x96 RGB PNGs spread over 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return root


def bare_invoke_median_us(model: Path, runs: int, threads: int) -> float:
    """The median of a bare timed ``invoke()`` loop (5 warm-up runs first)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model), num_threads=threads)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    interp.set_tensor(d["index"], np.random.default_rng(0).random(d["shape"], dtype=np.float32))
    invoke = interp.invoke
    for _ in range(5):
        invoke()
    clock = time.perf_counter_ns
    times = []
    for _ in range(runs):
        t0 = clock()
        invoke()
        times.append(clock() - t0)
    return statistics.median(times) / 1000.0


def plain_eval_images_per_s(model: Path, data: Path) -> float:
    """One interpreter, one image at a time: open, preprocess, set, invoke, read."""
    from ai_edge_litert.interpreter import Interpreter
    from PIL import Image

    files = sorted(data.glob("*/*.png"))
    interp = Interpreter(model_path=str(model))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    size = (int(inp["shape"][2]), int(inp["shape"][1]))
    start = time.perf_counter()
    for f in files:
        with Image.open(f) as im:
            x = np.asarray(im.convert("RGB").resize(size), np.float32)[None] / 255.0
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        int(np.argmax(interp.get_tensor(out["index"])[0]))
    return len(files) / (time.perf_counter() - start)


def eval_rounds(model: Path, data: Path, rounds: int, workers: int) -> dict[str, float]:
    """Plain loop, pool and ``workers`` plain loops side by side, alternated ``rounds`` times.

    Medians of images/s and of the cores the pool kept busy. The plain loops side by side
    (each its own process, images/s summed) are what the machine gives that many
    processes at the moment: the pool's ceiling while other work runs.
    """
    import multiprocessing

    from edgeq_device import evaluate

    plain, pool, busy, side = [], [], [], []
    for _ in range(rounds):
        plain.append(plain_eval_images_per_s(model, data))
        cpu0, wall0 = _children_cpu(), time.perf_counter()
        pool.append(evaluate(model, data, workers=workers).images_per_second)
        busy.append((_children_cpu() - cpu0) / (time.perf_counter() - wall0))
        with multiprocessing.get_context("spawn").Pool(workers) as procs:
            side.append(sum(procs.starmap(plain_eval_images_per_s, [(model, data)] * workers)))
    return {"plain": statistics.median(plain), "pool": statistics.median(pool), "busy": statistics.median(busy),
            "side_by_side": statistics.median(side)}


def _children_cpu() -> float:
    """CPU seconds of this process and its finished children (the pool's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def eval_in_child(model: Path, data: Path, rounds: int, workers: int, start: str | None = None) -> dict[str, float]:
    """:func:`eval_rounds` in a fresh Python that has not loaded TensorFlow (as on a board)."""
    env = dict(os.environ)
    env.pop("EDGEQ_POOL_START", None)
    if start:
        env["EDGEQ_POOL_START"] = start
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--eval", str(model), str(data),
                           str(rounds), str(workers)], capture_output=True, text=True, env=env, check=True)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def run(rounds: int = 3, runs: int = 300, images: int = 400, small_images: int = 2000,
        threads: int = 1) -> dict[str, Any]:
    """Measure the ratios; returns the figures and whether each goal is met."""
    from edgeq_device import benchmark

    workers = os.cpu_count() or 1
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as tmp:
        model = build_model(Path(tmp) / "cnn96.tflite")
        small = build_mobilenet(Path(tmp) / "mobilenet_v2_035_128_int8.tflite")
        data = make_images(Path(tmp) / "images", images)
        digits = make_digit_images(Path(tmp) / "digits128", small_images)
        bare, ours = [], []
        for _ in range(rounds):
            bare.append(bare_invoke_median_us(model, runs, threads))
            r = benchmark(model, runs=runs, min_secs=0, warmup=5, threads=threads)
            ours.append(r.latency.p50_us)
        cnn = eval_in_child(model, data, rounds, workers)
        mnv2 = eval_in_child(small, digits, rounds, workers)
        mnv2_fs = eval_in_child(small, digits, rounds, workers, start="forkserver")
    bare_us, ours_us = statistics.median(bare), statistics.median(ours)
    result: dict[str, Any] = {
        "cores": os.cpu_count(),
        "threads": threads,
        "bare_invoke_p50_us": round(bare_us, 1),
        "bench_p50_us": round(ours_us, 1),
        "bench_overhead": round(ours_us / bare_us, 4),
        "eval_workers": workers,
        "plain_eval_images_per_s": round(cnn["plain"], 1),
        "pool_eval_images_per_s": round(cnn["pool"], 1),
        "eval_speedup": round(cnn["pool"] / cnn["plain"], 3),
        "pool_cores_busy": round(cnn["busy"], 2),
        "mobilenet_images": small_images,
        "mobilenet_plain_images_per_s": round(mnv2["plain"], 1),
        "mobilenet_pool_images_per_s": round(mnv2["pool"], 1),
        "eval_speedup_mobilenet": round(mnv2["pool"] / mnv2["plain"], 3),
        "mobilenet_pool_cores_busy": round(mnv2["busy"], 2),
        "side_by_side_images_per_s": round(cnn["side_by_side"], 1),
        "mobilenet_side_by_side_images_per_s": round(mnv2["side_by_side"], 1),
        "mobilenet_forkserver_pool_images_per_s": round(mnv2_fs["pool"], 1),
        "eval_speedup_mobilenet_forkserver": round(mnv2_fs["pool"] / mnv2_fs["plain"], 3),
        "load_average_1min_start": round(load_start, 2) if load_start is not None else None,
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }
    for key, (op, goal) in GOALS.items():
        value = result[key]
        result[f"{key}_goal_met"] = value <= goal if op == "<=" else value >= goal
    return result


def main() -> int:
    r = run()
    rows = [
        ("bench p50 / bare invoke() p50", f"{r['bench_p50_us']:.1f} / {r['bare_invoke_p50_us']:.1f} µs",
         r["bench_overhead"], "<= 1.02", r["bench_overhead_goal_met"]),
        (f"cnn96 eval pool ({r['eval_workers']} workers) / plain",
         f"{r['pool_eval_images_per_s']:.0f} / {r['plain_eval_images_per_s']:.0f} images/s",
         r["eval_speedup"], ">= 1.8", r["eval_speedup_goal_met"]),
        (f"mobilenet eval pool ({r['eval_workers']} workers) / plain",
         f"{r['mobilenet_pool_images_per_s']:.0f} / {r['mobilenet_plain_images_per_s']:.0f} images/s",
         r["eval_speedup_mobilenet"], ">= 1.8", r["eval_speedup_mobilenet_goal_met"]),
    ]
    print(f"edgeq-device on {r['cores']} cores ({r['threads']} thread per interpreter)")
    print(f"{'figure':<42} {'measured':<26} {'ratio':>7}  {'goal':<8} met")
    for name, measured, ratio, goal, met in rows:
        print(f"{name:<42} {measured:<26} {ratio:>7.3f}  {goal:<8} {'yes' if met else 'NO'}")
    print(f"{r['eval_workers']} plain loops side by side (the machine's ceiling now): "
          f"{r['side_by_side_images_per_s']:.0f} (cnn96), {r['mobilenet_side_by_side_images_per_s']:.0f} "
          f"(mobilenet) images/s")
    print(f"mobilenet with forkserver workers (a caller that loaded TensorFlow): "
          f"{r['eval_speedup_mobilenet_forkserver']:.3f}")
    print(f"the pool kept {r['pool_cores_busy']:.2f} / {r['mobilenet_pool_cores_busy']:.2f} cores busy; "
          f"1-minute load average {r['load_average_1min_start']} at the start, {r['load_average_1min']} "
          f"at the end (other work on the machine lowers the speed-up)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--eval":
        os.environ.setdefault("EDGEQ_PROGRESS", "0")
        figures = eval_rounds(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        print(json.dumps(figures))
        sys.exit(0)
    sys.exit(main())
