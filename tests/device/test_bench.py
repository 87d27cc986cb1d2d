"""edgeq-device bench: the timing loop, the statistics, inputs, memory and delegate errors."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
from edgeq_device import (
    BenchParams,
    BenchResult,
    DelegateError,
    InvalidArgumentError,
    LatencyStats,
    ModelRunner,
    Preprocess,
    benchmark,
)
from edgeq_device.measure.bench import format_bench, random_inputs, time_invocations


def _ordered(s: LatencyStats) -> bool:
    return s.min_us <= s.p50_us <= s.p90_us <= s.p99_us <= s.max_us and s.min_us <= s.mean_us <= s.max_us


def test_time_invocations_stops_on_runs_and_min_secs():
    calls = []
    start = time.perf_counter()
    samples, why = time_invocations(lambda: calls.append(1), runs=10, min_secs=0.05, max_secs=5)
    wall = time.perf_counter() - start
    assert why == "runs"
    assert len(samples) == len(calls) and len(samples) > 10  # 10 runs take far less than 50 ms
    assert wall >= 0.05
    samples, why = time_invocations(lambda: None, runs=7, min_secs=0.0, max_secs=5)
    assert (len(samples), why) == (7, "runs")


def test_time_invocations_max_secs_wins():
    start = time.perf_counter()
    samples, why = time_invocations(lambda: time.sleep(0.002), runs=10**9, min_secs=0.0, max_secs=0.05)
    wall = time.perf_counter() - start
    assert why == "max_secs"
    assert 0.05 <= wall < 0.5
    assert all(s >= 2_000_000 for s in samples)  # each call slept 2 ms


def test_latency_stats_figures():
    ns = [1000 * v for v in range(1, 101)]  # 1..100 µs
    s = LatencyStats.from_ns(ns)
    us = np.arange(1, 101, dtype=float)
    assert s.count == 100
    assert s.mean_us == pytest.approx(us.mean())
    assert s.std_us == pytest.approx(us.std())
    assert (s.min_us, s.max_us) == (1.0, 100.0)
    assert s.p50_us == pytest.approx(np.percentile(us, 50))
    assert s.p90_us == pytest.approx(np.percentile(us, 90))
    assert s.p99_us == pytest.approx(np.percentile(us, 99))
    assert s.total_s == pytest.approx(us.sum() / 1e6)
    with pytest.raises(InvalidArgumentError):
        LatencyStats.from_ns([])


def test_bench_params_validate():
    with pytest.raises(InvalidArgumentError, match="runs"):
        BenchParams(runs=0)
    with pytest.raises(InvalidArgumentError, match="max_secs"):
        BenchParams(min_secs=2, max_secs=1)
    with pytest.raises(InvalidArgumentError, match="threads"):
        BenchParams(threads=0)
    with pytest.raises(InvalidArgumentError, match="params or keyword"):
        benchmark(b"", BenchParams(), runs=3)


def test_benchmark_float32_figures(models):
    path = models["float32"]
    start = time.perf_counter()
    r = benchmark(path, runs=40, min_secs=0.3, warmup=3, threads=1)
    wall = time.perf_counter() - start
    lat = r.latency
    assert lat.count >= 40 and r.stopped_by == "runs"
    assert wall >= 0.3 and lat.total_s <= wall
    assert _ordered(lat) and lat.min_us > 0
    assert r.warmup is not None and r.warmup.count == 3 and _ordered(r.warmup)
    assert r.first_inference_us > 0 and 0 < r.interpreter_init_ms <= r.init_ms
    assert r.runtime == "litert" and r.runtime_version == "2.3.0"
    assert r.threads == 1 and r.xnnpack and r.delegate is None
    assert r.model == str(path) and r.model_size_bytes == path.stat().st_size
    assert r.inputs == "random" and r.mode is None
    m = r.memory
    assert m.rss_before_kb and m.rss_after_kb and m.peak_rss_kb
    assert m.peak_rss_kb >= m.rss_after_kb > 0 and m.model_rss_kb is not None
    assert r.board.cores == os.cpu_count() and r.board.architecture
    text = format_bench(r)
    assert "p99" in text and "litert 2.3.0" in text


def test_benchmark_json_round_trip(models):
    r = benchmark(models["int8_io_uint8"], runs=5, min_secs=0, warmup=0, xnnpack=False)
    assert r.warmup is None and not r.xnnpack and r.latency.count == 5
    d = json.loads(r.to_json())
    assert d["schema"] == "edgeq-device/bench/1"
    assert d["latency"]["p50_us"] == pytest.approx(r.latency.p50_us)
    assert d["board"]["cores"] == os.cpu_count()
    assert BenchResult.from_dict(d) == r


def _strict_loads(text: str) -> object:
    """json.loads that refuses NaN and Infinity, as strict JSON parsers do."""
    def refuse(name: str) -> object:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_a_result_holding_inf_and_nan_writes_strict_json_and_reads_back(models, tmp_path):
    """Non-finite figures become null with the reason beside them, and come back on reading."""
    import dataclasses
    import math

    from edgeq_device.results.report_json import loads_json, write_json

    r = benchmark(models["int8"], runs=3, min_secs=0, warmup=0, keep_samples=True)
    lat = dataclasses.replace(r.latency, p99_us=math.inf, std_us=math.nan)
    odd = dataclasses.replace(r, latency=lat, temperature_before_c=-math.inf,
                              samples_us=(1.0, math.inf, 3.0))
    text = odd.to_json()
    d = _strict_loads(text)
    assert isinstance(d, dict)
    assert d["latency"]["p99_us"] is None and d["latency"]["std_us"] is None
    assert d["latency"]["nonfinite"] == {"p99_us": "inf", "std_us": "nan"}
    assert d["temperature_before_c"] is None and d["samples_us"] == [1.0, None, 3.0]
    assert d["nonfinite"] == {"temperature_before_c": "-inf", "samples_us[1]": "inf"}
    back = BenchResult.from_json(text)
    assert math.isnan(back.latency.std_us)
    assert dataclasses.replace(back, latency=dataclasses.replace(back.latency, std_us=0.0)) == \
        dataclasses.replace(odd, latency=dataclasses.replace(lat, std_us=0.0))
    path = write_json(odd, tmp_path / "odd.json")
    assert path is not None and _strict_loads(path.read_text()) == d
    assert BenchResult.load(path).samples_us == (1.0, math.inf, 3.0)
    assert loads_json(path.read_text())["latency"]["p99_us"] == math.inf


def test_bench_result_reads_as_text_and_html(models):
    r = benchmark(models["int8"], runs=3, min_secs=0, warmup=0)
    assert str(r) == format_bench(r)
    assert "np.float64" not in str(r) + str(r.latency) + str(r.board)
    page = r._repr_html_()
    assert "edgeq-device/bench/1" in page and "p50_us" in page and "<table>" in page


def test_random_inputs_cover_each_inputs_range(models):
    for mode, (lo, hi) in (("int8_io_uint8", (0, 255)), ("int8_io_int8", (-128, 127))):
        runner = ModelRunner(models[mode])
        (x,) = random_inputs(runner.input_details, seed=3)
        assert x.dtype == np.dtype(runner.input_details[0]["dtype"]) and x.shape == (1, 28, 28, 1)
        assert x.min() >= lo and x.max() <= hi
        assert x.min() < lo + 10 and x.max() > hi - 10  # 784 uniform draws reach both ends
    runner = ModelRunner(models["float32"])
    (x,) = random_inputs(runner.input_details)
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() < 1
    (x,) = random_inputs(runner.input_details, Preprocess(mean=127.5, std=127.5))
    assert -1 <= x.min() < -0.9 and 0.9 < x.max() <= 1
    (a,), (b,) = random_inputs(runner.input_details, seed=1), random_inputs(runner.input_details, seed=1)
    assert np.array_equal(a, b)


def test_benchmark_with_real_samples(models, small_test_dir):
    r = benchmark(models["meta_uint8"], runs=5, min_secs=0, warmup=1, data=str(small_test_dir))
    assert r.inputs.startswith("image from") and r.mode == "int8"
    assert r.latency.count == 5 and _ordered(r.latency)


def test_delegate_errors_say_what_to_do(models, tmp_path):
    with pytest.raises(DelegateError, match=r"cannot load delegate library.*external delegate"):
        benchmark(models["float32"], runs=1, min_secs=0, delegate=str(tmp_path / "libmissing.so"))
    with pytest.raises(DelegateError, match="not a TFLite external delegate"):
        ModelRunner(models["float32"], delegate="libc.so.6")
    with pytest.raises(DelegateError, match=r"compiled for the Edge TPU.*--delegate edgetpu"):
        benchmark(models["edgetpu"], runs=1, min_secs=0)
    with pytest.raises(DelegateError, match="static shapes"):
        benchmark(models["int8_io_uint8"], runs=1, min_secs=0, delegate="edgetpu")


def test_edgetpu_delegate_missing_runtime_says_what_to_install(models, model_tools, tmp_path):
    import ctypes

    try:
        ctypes.CDLL("libedgetpu.so.1")
        pytest.skip("the Edge TPU runtime is installed here")
    except OSError:
        pass

    def make_static(m):
        for t in m.subgraphs[0].tensors:
            t.shapeSignature = None

    static = tmp_path / "static.tflite"
    static.write_bytes(model_tools.rewrite_model(models["int8_io_uint8"].read_bytes(), make_static))
    from edgeq_device import model_info

    assert not model_info(static).is_dynamic and model_info(models["int8_io_uint8"]).is_dynamic
    with pytest.raises(DelegateError, match=r"libedgetpu\.so\.1.*libedgetpu1-std"):
        benchmark(static, runs=1, min_secs=0, delegate="edgetpu", delegate_options={"device": "usb:0"})


@pytest.mark.slow
def test_runtime_can_be_chosen(models, small_test_dir):
    import warnings

    import tensorflow as tf
    from edgeq_device import RuntimeNotFoundError, evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tf.lite.Interpreter's deprecation notice
        r = benchmark(models["int8"], runs=3, min_secs=0, warmup=0, runtime="tensorflow", xnnpack=False)
        on_tf = evaluate(models["int8"], small_test_dir, runtime="tensorflow", keep_predictions=True)
    assert (r.runtime, r.runtime_version, r.xnnpack) == ("tensorflow", tf.__version__, False)
    on_litert = evaluate(models["int8"], small_test_dir, keep_predictions=True)
    assert on_tf.runtime == "tensorflow" and on_litert.runtime == "litert"
    assert on_tf.predictions == on_litert.predictions
    with pytest.raises(InvalidArgumentError, match="unknown runtime"):
        benchmark(models["int8"], runs=1, runtime="onnx")
    try:
        import tflite_runtime  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeNotFoundError, match=r"pip install ai-edge-litert"):
            benchmark(models["int8"], runs=1, runtime="tflite-runtime")


def test_keep_samples_returns_every_timed_run(models):
    """The samples behind the statistics: one per timed run, their median is p50."""
    import numpy as np
    from edgeq_device.measure.bench import benchmark

    r = benchmark(models.paths["int8"], runs=30, min_secs=0.0, warmup=1, threads=1, keep_samples=True)
    assert r.samples_us is not None and len(r.samples_us) == r.latency.count
    assert np.median(r.samples_us) == pytest.approx(r.latency.p50_us)
    assert benchmark(models.paths["int8"], runs=5, min_secs=0.0, warmup=0).samples_us is None
