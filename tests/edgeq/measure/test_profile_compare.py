"""edgeq profile: per-operator profiles of several modes side by side, on the session's digits CNN."""

from __future__ import annotations

import json
import os

import flatbuffers
import pytest
from ai_edge_litert import schema_py_generated as schema
from click.testing import CliRunner
from edgeq_device.measure.profile import ProfileParams

from edgeq.cli import cli
from edgeq.cli.profile import profile_rows
from edgeq.errors import InvalidArgumentError
from edgeq.measure.profile import ProfileComparison, profile_models
from edgeq.report.profile_plot import profile_plot_png

QUICK = ProfileParams(runs=5, min_secs=0.0, whole_runs=5, whole_min_secs=0.0, threads=1)


@pytest.fixture(scope="module")
def float_and_int8(digits_plain_tflite) -> ProfileComparison:
    return profile_models([digits_plain_tflite["float32"], digits_plain_tflite["int8_io_uint8"]], QUICK)


def test_operators_line_up_across_modes(float_and_int8):
    comp = float_and_int8
    rows = comp.rows()
    for k, prof in enumerate(comp.profiles):  # every operator of every model is on exactly one row
        assert sorted(r.ops[k].index for r in rows if r.ops[k] is not None) == [o.index for o in prof.operators]
    for r in rows:
        assert all(o is None or o.op == r.op for o in r.ops)
    convs = [r for r in rows if r.op == "CONV_2D"]
    assert convs and all(None not in r.ops and r.ratio(1) is not None for r in convs)
    only_int8 = [r for r in rows if r.ops[0] is None]
    assert {r.op for r in only_int8} <= {"QUANTIZE", "DEQUANTIZE"} and only_int8
    header, cells = profile_rows(comp)
    assert header[-1] == "mnist_int8_io_uint8 / mnist_float32" and len(cells) == len(rows)
    assert any(c[-1].endswith(("faster", "slower", "same")) for c in cells)
    assert len(profile_rows(comp, top=3)[1]) == 3


def test_json_round_trip_and_plot(float_and_int8):
    comp = float_and_int8
    doc = json.loads(comp.to_json())
    assert doc["schema"] == "edgeq/profile-comparison/1"
    assert ProfileComparison.from_dict(doc) == comp
    png = profile_plot_png(comp, top=5)
    assert png.startswith(b"\x89PNG")


def _static_batch(data: bytes) -> bytes:
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(data), 0))
    for t in m.subgraphs[0].tensors:
        t.shapeSignature = None
    b = flatbuffers.Builder(len(data) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_edgetpu_target_marks_the_mapped_operators(digits_plain_tflite, tmp_path):
    path = tmp_path / "int8_static.tflite"
    path.write_bytes(_static_batch(digits_plain_tflite["int8_io_uint8"].read_bytes()))
    comp = profile_models([digits_plain_tflite["float32"], path], QUICK, target="edgetpu")
    int8 = comp.profiles[1]
    convs = [o for o in int8.operators if o.op == "CONV_2D"]
    assert convs and all(comp.on_edgetpu(1, o) for o in convs)
    assert not any(comp.on_edgetpu(0, o) for o in comp.profiles[0].operators)  # float32 cannot map
    header, cells = profile_rows(comp)
    assert header[-2:] == ["Edge TPU mnist_float32", "Edge TPU int8_static"]
    assert any(c[-1] == "Edge TPU" for c in cells) and any(c[-1] == "CPU" for c in cells)


def test_bad_input():
    with pytest.raises(InvalidArgumentError, match="models"):
        profile_models([], QUICK)
    with pytest.raises(InvalidArgumentError, match="same file name"):
        profile_models(["a/m.tflite", "b/m.tflite"], QUICK)


@pytest.mark.slow
def test_cli_side_by_side_plot_and_errors(digits_plain_tflite, tmp_path):
    a, b = digits_plain_tflite["float32"], digits_plain_tflite["int8"]
    plot, out = tmp_path / "top.png", tmp_path / "p.json"
    res = CliRunner().invoke(cli, ["profile", str(a), str(b), "--runs", "3", "--min-secs", "0", "--format", "csv",
                                   "--plot", str(plot), "--json", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "p50 mnist_float32,p50 mnist_int8,mnist_int8 / mnist_float32" in res.output
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert json.loads(out.read_text())["schema"] == "edgeq/profile-comparison/1"
    res = CliRunner().invoke(cli, ["profile", str(a), "--threads", "0"])
    assert res.exit_code == 2 and "--threads" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["profile", str(a), "--plot", str(plot)])
    assert res.exit_code == 2 and "--plot" in res.output and "--force" in res.output


@pytest.mark.slow
def test_mobilenet_v2_operators_add_up_in_every_mode(tmp_path, mnist_train):
    """MobileNetV2 (weights=None) in float32 and int8 with uint8 I/O: ≥ 95% of the operators timed
    alone, their sum within 25% of the whole model's p50 measured in the same run.

    A whole-model invoke of several milliseconds is pre-empted by other work on a busy machine
    where sub-millisecond operators are not, so its wall-clock p50 measures the scheduler there
    (4x the operators' sum at a load average of 6.6 on 2 cores). The whole model is therefore also
    timed here in CPU time of the one interpreter thread, which pre-emption does not stretch, and
    the operators must add up to that, busy machine or not; the profile's own whole-model p50 is
    held to it when the machine is not saturated. CPU time is not free of the neighbours either:
    processes on the other cores evicting the shared cache slow the whole model, which streams all
    its weights each run, more than an operator repeated alone on warm caches (the sum fell to
    0.68-0.70 of the whole beside two memory-bound processes on 2 cores, 0.75-1.25 on a quiet
    machine), so on a saturated machine the sum may fall to 0.6 of the whole. (float16 and int8 with float I/O are the same kernels plus
    constant dequantize / quantize operators; the digits CNN test covers every mode.)"""
    import keras
    from edgeq_device.measure.profile import profile_model
    from edgeq_device.model.preprocess import Preprocess

    from edgeq.quantize.converter import convert

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    pre = Preprocess(size=(224, 224), color="rgb", mean=127.5, std=127.5)
    for mode, io in [("float32", "float"), ("int8", "uint8")]:
        res = convert(model, mode, calibration=mnist_train, samples=8, preprocess=pre, io=io, progress=False)
        path = res.save(tmp_path / f"mnv2_{mode}_{io}.tflite")
        whole_cpu_us = _invoke_cpu_us(path)
        busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
        low = 0.6 if busy else 0.75
        ratios = []
        for _ in range(3):
            r = profile_model(path, threads=1)
            assert r.coverage >= 0.95, (mode, io, [o.note for o in r.operators if o.note])
            assert r.whole_p50_us is not None
            ratios.append(r.sum_us / whole_cpu_us)
            if low <= ratios[-1] <= 1.25:
                break
        assert low <= ratios[-1] <= 1.25, (mode, io, ratios, whole_cpu_us, os.getloadavg(), str(r))
        if not busy:
            assert 0.75 <= r.sum_us / r.whole_p50_us <= 1.25, (mode, io, r.whole_p50_us, whole_cpu_us, str(r))


def _invoke_cpu_us(path, runs: int = 30) -> float:
    """The median CPU time of one invoke on one interpreter thread (µs): what pre-emption leaves unchanged."""
    import time

    import numpy as np
    from edgeq_device.run.runtime import ModelRunner

    runner = ModelRunner(path.read_bytes(), threads=1)
    d = runner.interpreter.get_input_details()[0]
    x = np.random.default_rng(0).uniform(0, 255 if d["dtype"] == np.uint8 else 1, size=d["shape"]).astype(d["dtype"])
    runner.interpreter.set_tensor(d["index"], x)
    for _ in range(3):
        runner.interpreter.invoke()
    times = []
    for _ in range(runs):
        t0 = time.thread_time_ns()
        runner.interpreter.invoke()
        times.append((time.thread_time_ns() - t0) / 1000)
    return float(np.median(times))
