"""16-bit activations on chosen layers (a16w8) beside int8, and the budget step that uses them.

Compared with the plain converter on real models: the session's trained digits CNN, and
the same CNN with a rare-outlier layer (``spiky``, as in test_debug_budget.py) whose
output int8 cannot hold (a few images reach 1000x the typical activation, so ordinary
ones collapse to a few steps) but 16 bits can.
"""

from __future__ import annotations

import json
import os

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.run.runtime import ModelRunner

from edgeq import convert
from edgeq.cli import cli
from edgeq.errors import InvalidArgumentError, QuantizationError
from edgeq.quantize.layer_error import QuantDebugSession
from edgeq.quantize.precision.budget import budget_search
from edgeq.quantize.precision.budget_report import BudgetReport
from edgeq.quantize.precision.budget_steps import fidelity
from edgeq.quantize.precision.mixed import (
    A16_OPS,
    MixedPlan,
    converter_ranges,
    int16_tensors,
    plan_a16,
    quantize_mixed,
)


def _outlier_model(good, x):  # type: ignore[no-untyped-def]
    inp, hidden, head = good.inputs[0], good.get_layer("hidden"), good.get_layer("classifier")
    features = np.asarray(keras.Model(inp, hidden.output)(x))
    direction = np.random.default_rng(0).normal(size=32).astype(np.float32)
    score = features @ direction
    threshold = float(np.quantile(score, 0.95))
    gain = 1000.0 * float(features[features > 0].mean()) / float(score.max() - threshold)
    spiky = keras.layers.Dense(33, activation="relu", name="spiky")
    head2 = keras.layers.Dense(10, activation="softmax", name="head")
    hard = keras.Model(inp, head2(spiky(hidden.output)), name="hard")
    kernel = np.zeros((32, 33), np.float32)
    kernel[:, :32] = np.eye(32)
    kernel[:, 32] = direction * gain
    bias = np.zeros(33, np.float32)
    bias[32] = -threshold * gain
    spiky.set_weights([kernel, bias])
    w, b = head.get_weights()
    head2.set_weights([np.vstack([w, np.zeros((1, 10), np.float32)]), b])
    return hard


@pytest.fixture(scope="module")
def hard(digits_cnn, digits_train_arrays):  # type: ignore[no-untyped-def]
    return _outlier_model(digits_cnn, digits_train_arrays[0])


def _outputs(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    runner = ModelRunner(model_bytes)
    return np.concatenate([np.asarray(runner.run([x[i:i + 1]])[0]).reshape(1, -1) for i in range(len(x))])


def _activation_types(model_bytes: bytes) -> list[tuple[str, str, str]]:
    """``(op, output name, output type)`` of every op but QUANTIZE/DEQUANTIZE and shape arithmetic, in order."""
    sg = read_flat_model(model_bytes).main
    return [(op.opcode, sg.tensors[op.outputs[0]].name, sg.tensors[op.outputs[0]].dtype) for op in sg.operators
            if op.opcode not in ("QUANTIZE", "DEQUANTIZE") and sg.tensors[op.outputs[0]].dtype != "INT32"]


@pytest.mark.slow
def test_a16_layers_are_int16_exactly_there_and_fix_the_outlier_layer(hard, digits_train_arrays, digits_test_arrays):
    x, _ = digits_train_arrays
    xt, yt = digits_test_arrays
    xt, yt = xt[:300], yt[:300]
    calib = x[:200]
    f32 = convert(hard, "float32")
    int8 = convert(hard, "int8", calibration=calib)
    mixed = convert(hard, "int8", calibration=calib, a16_layers=["spiky"])
    plan = mixed.metadata.extra["a16"]
    # spiky's output and the op reading it (head's FULLY_CONNECTED) compute in 16 bits; nothing else does
    assert [n.split("/")[1] for n in plan["a16_nodes"]] == ["spiky_1", "head_1"]
    assert plan["kept_int8"] == []
    assert set(int16_tensors(mixed.model_bytes)) == set(plan["a16_nodes"])
    types = _activation_types(mixed.model_bytes)
    plain = _activation_types(int8.model_bytes)
    # the converter's ops in its order (plus re-quantization between int8 and int16)
    assert [op for op, _, _ in types] == [op for op, _, _ in plain]
    assert all(t == "INT8" for _, _, t in plain)
    assert [t for _, _, t in types] == ["INT16" if n in plan["a16_nodes"] else "INT8" for _, n, _ in types]
    assert mixed.float_ops == () and mixed.inputs[0].dtype == "float32"
    assert mixed.size_bytes <= 1.15 * int8.size_bytes

    ref = _outputs(f32.model_bytes, xt)
    agree8, sqnr8 = fidelity(ref, _outputs(int8.model_bytes, xt))
    agree16, sqnr16 = fidelity(ref, _outputs(mixed.model_bytes, xt))
    assert agree8 < 0.95 and agree16 >= 0.98 and agree16 > agree8
    assert sqnr16 > sqnr8 + 10.0
    assert (ref.argmax(1) == yt).mean() - (_outputs(mixed.model_bytes, xt).argmax(1) == yt).mean() <= 0.01


@pytest.mark.slow
def test_no_a16_layer_is_the_converters_int8(digits_cnn, digits_train_arrays, digits_test_arrays):
    x, _ = digits_train_arrays
    xt = digits_test_arrays[0][:200]
    calib = x[:200]
    f32 = convert(digits_cnn, "float32").model_bytes
    plain = convert(digits_cnn, "int8", calibration=calib).model_bytes
    session = QuantDebugSession(digits_cnn, calib, samples=200)
    ranges = converter_ranges(session.calibrated_model)
    raw, _ = quantize_mixed(f32, session.items, plan_a16(f32, []), ranges=ranges)
    assert int16_tensors(raw) == ()
    np.testing.assert_array_equal(_outputs(raw, xt), _outputs(plain, xt))
    types = _activation_types(raw)
    assert [op for op, _, _ in types] == [op for op, _, _ in _activation_types(plain)]


@pytest.mark.slow
def test_a16_by_count_takes_the_worst_layers_and_lists_ops_without_16bit_kernels(digits_train_arrays):
    x, _ = digits_train_arrays
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    h = keras.layers.Flatten()(inp)
    h = keras.layers.Dense(16, name="dense_a")(h)
    h = keras.layers.Activation("hard_swish", name="swish")(h)
    out = keras.layers.Dense(10, activation="softmax", name="out")(h)
    model = keras.Model(inp, out, name="swishy")
    calib = x[:50]
    f32 = convert(model, "float32").model_bytes
    swish_ops = [op.opcode for op in read_flat_model(f32).main.operators if op.opcode not in A16_OPS]
    assert "HARD_SWISH" in swish_ops
    mixed = convert(model, "int8", calibration=calib, a16_layers=["dense_a"], samples=50)
    plan = mixed.metadata.extra["a16"]
    assert [op for _, op in plan["kept_int8"]] == ["HARD_SWISH"]  # listed, kept int8
    assert len(plan["a16_nodes"]) == 1 and int16_tensors(mixed.model_bytes) == tuple(plan["a16_nodes"])
    int8_io = convert(model, "int8", calibration=calib, a16_layers=["out"], samples=50, io="int8")
    assert int8_io.outputs[0].dtype == "int8" and int8_io.inputs[0].dtype == "int8"  # as asked
    assert [op for _, op in int8_io.metadata.extra["a16"]["kept_int8"]] == ["SOFTMAX"]  # writes the output
    with pytest.raises(QuantizationError, match="16-bit kernel") as info:
        convert(model, "int8", calibration=calib, a16_layers=["swish"], samples=50)
    assert info.value.argument == "a16_layers"
    with pytest.raises(InvalidArgumentError, match="not a layer") as info:
        convert(model, "int8", calibration=calib, a16_layers=["dense_a", "no_such_layer"], samples=50)
    assert info.value.argument == "a16_layers" and "no_such_layer" in str(info.value)
    with pytest.raises(InvalidArgumentError) as info:
        convert(model, "float16", a16_layers=["dense_a"])
    assert info.value.argument == "mode"
    with pytest.raises(InvalidArgumentError) as info:
        convert(model, "int8", calibration=calib, a16_layers=0)
    assert info.value.argument == "a16_layers"
    with pytest.raises(InvalidArgumentError) as info:
        convert(model, "int8", calibration=calib, a16_layers=["dense_a"], io="uint8")
    assert info.value.argument == "io"


@pytest.mark.slow
def test_budget_picks_16bit_layers_when_they_fit(hard, mnist_train, digits_test_arrays):
    xt, yt = digits_test_arrays
    result = budget_search(hard, max_drop=0.5, calibration=mnist_train, evaluation=(xt[:400], yt[:400]),
                           samples=150)
    report = result.budget
    names = [c.name for c in report.candidates]
    assert names[0] == "int8" and names[1].startswith("int8+a16")
    int8, chosen = report.candidates[0], report.choice
    assert not int8.within_budget and chosen.name.startswith("int8+a16") and "spiky" in chosen.a16_layers
    assert chosen.agreement >= 0.98 and chosen.size_bytes <= 1.15 * int8.size_bytes
    assert chosen.sqnr_db > int8.sqnr_db and chosen.latency_ms > 0
    assert result.metadata.extra["a16"]["a16_nodes"] == list(chosen.a16_nodes)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["schema"] == "edgeq/budget/2" and payload["chosen"] == chosen.name
    again = BudgetReport.from_dict(payload)
    assert again.choice.name == chosen.name and again.choice.agreement == chosen.agreement
    assert "agree %" in report.table() and "16-bit: spiky" in report.table() and "latency" in report.reason
    old = {k: v for k, v in payload.items() if k != "schema"} | {"schema": "edgeq/budget/1"}
    old["candidates"] = [{k: v for k, v in c.items() if k not in ("a16_layers", "a16_nodes", "agreement", "sqnr_db")}
                         for c in payload["candidates"]]
    assert BudgetReport.from_dict(old).choice.agreement is None
    with pytest.raises(InvalidArgumentError):
        BudgetReport.from_dict({"schema": "edgeq/budget/9"})
    plan = MixedPlan.from_dict(result.metadata.extra["a16"])
    assert plan.a16_nodes == chosen.a16_nodes and "spiky" in str(plan) and "16-bit" in str(result)
    print("\n" + report.table())


@pytest.mark.slow
def test_budget_with_a_latency_limit_leaves_slow_16bit_layers_and_says_so(hard, mnist_train, digits_test_arrays):
    xt, yt = digits_test_arrays
    result = budget_search(hard, max_drop=0.5, calibration=mnist_train, evaluation=(xt[:400], yt[:400]),
                           samples=150, max_slowdown=1.05, progress=False)
    report = result.budget
    int8 = report.candidates[0]
    slow = [c for c in report.candidates if c.name.startswith("int8+a16") and c.drop is not None
            and c.drop <= 0.5 and c.latency_ms > 1.05 * int8.latency_ms]
    load = os.getloadavg()[0]
    if (not slow or not report.choice.within_budget) and load >= (os.cpu_count() or 1):
        # microsecond latencies on a busy machine: the 16-bit layers' cost is lost in the noise
        pytest.skip(f"latencies too noisy to compare with load average {load:.1f}")
    assert slow and not any(c.within_budget for c in slow)  # within the drop, too slow: left
    assert "too slow: " + slow[0].name in report.reason and "1.05x int8's latency" in report.reason
    assert report.choice.name not in {c.name for c in slow}
    pareto = report.to_dict()["pareto"]
    assert pareto and set(pareto) <= {c.name for c in report.candidates} and "Pareto set" in report.table()
    with pytest.raises(InvalidArgumentError) as info:
        budget_search(hard, max_drop=0.5, calibration=mnist_train, evaluation=(xt[:10], yt[:10]), max_slowdown=0)
    assert info.value.argument == "max_slowdown"


@pytest.mark.slow
def test_cli_convert_a16(hard, mnist_train, tmp_path):
    path = tmp_path / "hard.keras"
    hard.save(path)
    runner = CliRunner()
    res = runner.invoke(cli, ["convert", str(path), "--mode", "int8", "--calib", str(mnist_train), "--samples", "60",
                              "--a16", "spiky", "-o", str(tmp_path / "m.tflite")])
    assert res.exit_code == 0, res.output
    assert int16_tensors((tmp_path / "m.tflite").read_bytes())
    bad = runner.invoke(cli, ["convert", str(path), "--mode", "int8", "--calib", str(mnist_train), "--a16", "nope",
                              "-o", str(tmp_path / "n.tflite")])
    assert bad.exit_code != 0 and "a16_layers" in bad.output and "Traceback" not in bad.output


@pytest.mark.slow
def test_ops_the_runtime_refuses_at_16_bits_go_back_to_int8_and_are_listed():
    """MobileNetV2's 16-bit depthwise convolutions fail LiteRT's overflow check on their scales: they stay
    int8 (listed), the chosen projections keep 16-bit activations, and the model runs."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10)
    x = np.random.default_rng(0).uniform(-1, 1, (24, 96, 96, 3)).astype(np.float32)
    r = convert(model, "int8", calibration=x, samples=24, progress=False,
                a16_layers=["block_4_expand_relu", "block_5_expand_relu"])
    a16 = r.metadata.extra["a16"]
    assert a16["a16_nodes"] and int16_tensors(r.model_bytes)
    assert any(op == "DEPTHWISE_CONV_2D" for _, op in a16["kept_int8"]), a16["kept_int8"]
    out = ModelRunner(r.model_bytes).run([x[:1]])[0]
    assert np.isfinite(out).all() and out.shape == (1, 10)
