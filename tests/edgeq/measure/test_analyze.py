"""edgeq.analyze / edgeq_device.model.analysis on real TFLite conversions, checked against the interpreter."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from click.testing import CliRunner
from edgeq_device.model.analysis import analyze_flat_model
from plain_tflite import plain_convert

import edgeq
from edgeq.cli import cli
from edgeq.errors import InvalidArgumentError, ModelFileError, OutputExistsError
from edgeq.measure.analysis import ModelAnalysis, analyze

keras = tf.keras


def _convert(model: Any, int8: bool = False, float_io: bool = True, fallback: bool = False) -> bytes:
    return plain_convert(model, int8, "float" if float_io else "int8", fallback)


def _small_cnn() -> Any:
    """16x16x3 -> conv 8 (3x3, stride 2) -> depthwise 3x3 -> GAP -> dense 10 -> softmax."""
    inp = keras.Input((16, 16, 3), batch_size=1)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu",
                            bias_initializer="random_normal")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", bias_initializer="random_normal")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10, activation="softmax", bias_initializer="random_normal")(x)
    return keras.Model(inp, x)


def _misc_model() -> Any:
    """Grouped conv, transposed conv, batch matmul (Keras Lambda)."""
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same", groups=2)(inp)
    x = keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same")(x)
    x = keras.layers.Reshape((16 * 16, 6))(x)
    x = keras.layers.Lambda(lambda t: tf.matmul(t, t, transpose_a=True))(x)
    return keras.Model(inp, x)


def _residual() -> Any:
    """8x8x1 -> conv a (16) -> conv b (16) -> add(a, b) -> GAP; a lives until the add."""
    inp = keras.Input((8, 8, 1), batch_size=1)
    a = keras.layers.Conv2D(16, 3, padding="same", bias_initializer="random_normal")(inp)
    b = keras.layers.Conv2D(16, 3, padding="same", bias_initializer="random_normal")(a)
    x = keras.layers.Add()([a, b])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, x)


def _sin_model() -> Any:
    """An int8 CNN with a SIN (no int8 kernel) in the middle: converter falls back to float there."""
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.Lambda(lambda t: tf.sin(t))(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(3)(x)
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def analyze_models() -> dict[str, bytes]:
    """Small real conversions, made once for the module."""
    cnn = _small_cnn()
    return {
        "cnn_f32": _convert(cnn),
        "cnn_int8_floatio": _convert(cnn, int8=True),
        "cnn_int8": _convert(cnn, int8=True, float_io=False),
        "misc_f32": _convert(_misc_model()),
        "residual_f32": _convert(_residual()),
        "sin_int8": _convert(_sin_model(), int8=True, fallback=True),
    }


@pytest.mark.parametrize("name", ["cnn_f32", "cnn_int8_floatio", "cnn_int8", "misc_f32", "sin_int8"])
def test_ops_and_tensors_equal_interpreter(analyze_models: dict[str, bytes], name: str) -> None:
    data = analyze_models[name]
    result = analyze(data)
    interp = Interpreter(model_content=data)
    details = interp._get_ops_details()
    assert result.op_names == [d["op_name"] for d in details]
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    for op, d in zip(result.ops, details):
        assert [t.index for t in op.inputs] == [i for i in d["inputs"] if i >= 0]
        assert [t.index for t in op.outputs] == list(d["outputs"])
        for t in op.inputs + op.outputs:
            ref = tensors[t.index]
            assert list(t.shape) == list(ref["shape"])
            assert list(t.shape_signature) == list(ref["shape_signature"])
            assert t.dtype.lower() == np.dtype(ref["dtype"]).name
            qp = ref["quantization_parameters"]
            np.testing.assert_allclose(t.scale, qp["scales"], rtol=1e-6)
            assert list(t.zero_point) == list(qp["zero_points"])
    counts: dict[str, int] = {}
    for d in details:
        counts[d["op_name"]] = counts.get(d["op_name"], 0) + 1
    assert result.op_counts == counts


def test_macs_hand_computed_conv_depthwise_dense(analyze_models: dict[str, bytes]) -> None:
    # conv: output 8x8x8 = 512 elements x 3x3 kernel x 3 input channels
    # depthwise: 512 x 3x3; dense: 10 outputs x 8 input features
    expected = {"CONV_2D": 512 * 9 * 3, "DEPTHWISE_CONV_2D": 512 * 9, "FULLY_CONNECTED": 10 * 8}
    for name in ("cnn_f32", "cnn_int8", "cnn_int8_floatio"):
        result = analyze(analyze_models[name])
        assert {op.name: op.macs for op in result.ops if op.macs} == expected
        assert result.total_macs == 13824 + 4608 + 80
        assert all(op.macs == 0 for op in result.ops if op.name in ("MEAN", "SOFTMAX", "QUANTIZE"))


def test_macs_grouped_transposed_and_matmul(analyze_models: dict[str, bytes]) -> None:
    result = analyze(analyze_models["misc_f32"])
    macs = {op.name: op.macs for op in result.ops}
    assert macs["CONV_2D"] == 8 * 8 * 8 * 9 * (4 // 2)  # groups=2: 2 input channels per output
    assert macs["TRANSPOSE_CONV"] == 8 * 8 * 8 * 9 * 6  # input elements x kh x kw x out channels
    assert macs["BATCH_MATMUL"] == 6 * 6 * 256  # (6x256)@(256x6): contracted dim 256 (adj_x read)
    assert result.total_macs == sum(macs.values())


def test_params_by_dtype(analyze_models: dict[str, bytes]) -> None:
    f32 = analyze(analyze_models["cnn_f32"])
    weights = 8 * 3 * 3 * 3 + 8 + 3 * 3 * 8 + 8 + 10 * 8 + 10
    assert f32.params_by_dtype["FLOAT32"].elements == weights
    assert f32.params_by_dtype["FLOAT32"].bytes == 4 * weights
    assert f32.params_by_dtype["INT32"].elements == 2  # the MEAN's axes
    assert f32.total_params == weights + 2
    i8 = analyze(analyze_models["cnn_int8"])
    assert i8.params_by_dtype["INT8"].elements == 8 * 27 + 72 + 80
    assert i8.params_by_dtype["INT32"].elements == 8 + 8 + 10 + 2  # biases + axes
    assert i8.total_param_bytes == 8 * 27 + 72 + 80 + 4 * 28


def test_peak_memory_hand_computed(analyze_models: dict[str, bytes]) -> None:
    result = analyze(analyze_models["residual_f32"])
    assert result.op_names == ["CONV_2D", "CONV_2D", "ADD", "MEAN"]
    fmap = 8 * 8 * 16 * 4  # one 8x8x16 float32 feature map
    # op0: input 256 B + a; op1: a + b; op2: a + b + sum (a is read by the ADD); op3: sum + 16 floats
    assert result.graph.memory.per_op == (8 * 8 * 4 + fmap, 2 * fmap, 3 * fmap, fmap + 64)
    assert result.peak_activation_bytes == 3 * fmap
    assert result.peak_op == 2


def test_latency_gives_macs_per_second(analyze_models: dict[str, bytes]) -> None:
    result = analyze(analyze_models["cnn_int8"], latency_us=250.0)
    assert result.macs_per_second == pytest.approx(result.total_macs / 250e-6)
    assert analyze(analyze_models["cnn_int8"]).macs_per_second is None
    for bad in (0, -3.0, float("nan"), "fast"):
        with pytest.raises(InvalidArgumentError, match="latency_us"):
            analyze(analyze_models["cnn_int8"], latency_us=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="target"):
        analyze(analyze_models["cnn_int8"], target="gpu")


def test_bad_model_inputs(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="not found"):
        analyze(tmp_path / "missing.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="TFL3"):
        analyze(junk)


def test_path_and_bytes_agree_and_json_roundtrip(analyze_models: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "cnn.tflite"
    path.write_bytes(analyze_models["cnn_int8"])
    a, b = analyze(path), analyze(path.read_bytes())
    assert a.source == "cnn.tflite"
    assert a.to_dict() | {"source": ""} == b.to_dict() | {"source": ""}
    out = a.save(tmp_path / "a.json")
    loaded = json.loads(out.read_text())
    assert loaded["total_macs"] == a.total_macs and loaded["peak_op"] == a.peak_op
    assert [o["name"] for o in loaded["ops"]] == a.op_names
    with pytest.raises(OutputExistsError):
        a.save(out)
    a.save(out, overwrite=True)
    # the board-side package computes the same figures without edgeq
    assert analyze_flat_model(path).to_dict() == {k: v for k, v in loaded.items()
                                                  if k not in ("source", "latency_us", "macs_per_second",
                                                               "target")}


def test_public_api() -> None:
    assert isinstance(edgeq.analyze(_convert_tiny()), ModelAnalysis)


def _convert_tiny() -> bytes:
    inp = keras.Input((4,), batch_size=1)
    return _convert(keras.Model(inp, keras.layers.Dense(2)(inp)))


def test_cli_table_and_json(analyze_models: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(analyze_models["cnn_int8_floatio"])
    runner = CliRunner()
    res = runner.invoke(cli, ["analyze", str(path), "--latency-us", "100", "--target", "edgetpu"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    for text in ("DEPTHWISE_CONV_2D", "18,512", "GMAC/s", "peak activation memory", "Edge TPU prediction",
                 "5 of 7 ops on the Edge TPU", "--io uint8"):
        assert text in res.output
    res = runner.invoke(cli, ["analyze", str(path), "--json", "-"])
    assert res.exit_code == 0
    payload = json.loads(res.stdout)
    assert payload["total_macs"] == 18512 and payload["target"] is None and "edgetpu" not in payload
    out = tmp_path / "a.json"
    assert runner.invoke(cli, ["analyze", str(path), "--json", str(out)]).exit_code == 0
    assert json.loads(out.read_text())["num_ops"] == 7
    res = runner.invoke(cli, ["analyze", str(path), "--json", str(out)])
    assert res.exit_code == 2 and "exists" in res.output
    assert runner.invoke(cli, ["analyze", str(path), "--json", str(out), "--force"]).exit_code == 0
    res = runner.invoke(cli, ["analyze", str(tmp_path / "nope.tflite")])
    assert res.exit_code == 2 and "not found" in res.output and "Traceback" not in res.output


@pytest.fixture(scope="module")
def analyze_mobilenet_v2() -> bytes:
    """Keras MobileNetV2 1.0 / 224, random weights (no download), converted to float32 once."""
    model = keras.applications.MobileNetV2(weights=None)
    return _convert(model)


@pytest.mark.slow  # builds and converts MobileNetV2
def test_mobilenet_v2_macs_match_published(analyze_mobilenet_v2: bytes) -> None:
    result = analyze(analyze_mobilenet_v2)
    # MobileNetV2 paper, Table 4: 300M multiply-adds, 3.4M parameters at 1.0 / 224
    assert result.total_macs == pytest.approx(300e6, rel=0.02)
    assert result.total_params == pytest.approx(3.4e6, rel=0.05)
    assert result.op_names == [d["op_name"] for d in Interpreter(model_content=analyze_mobilenet_v2)
                               ._get_ops_details()]
    # the first inverted-residual expansion (112x112x96 float32) dominates the activation peak
    assert result.peak_activation_bytes >= 112 * 112 * 96 * 4


def test_cli_formats_and_80_columns(analyze_models: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(analyze_models["cnn_int8_floatio"])
    names = analyze(path).op_names
    runner = CliRunner()
    args = ["analyze", str(path), "--target", "edgetpu"]
    res = runner.invoke(cli, args, env={"COLUMNS": "80", "FORCE_COLOR": "1"})  # an 80-column terminal
    assert res.exit_code == 0, res.output
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", res.stdout)
    table = text.split("totals")[0]
    assert max(len(ln) for ln in table.splitlines()) <= 80 and "…" not in text
    for i, name in enumerate(names):
        assert re.search(rf"│ +{i} │ {name} +│", table), name
    res = runner.invoke(cli, args, env={"COLUMNS": "80"})  # piped: every column, one line per op
    for i, name in enumerate(names):
        assert re.search(rf"│ +{i} │ {name} +│.*│ (Edge TPU|CPU \(\S+\)) +│$", res.stdout, re.M), name
    res = runner.invoke(cli, [*args, "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["op"] for r in rows] == names and rows[0]["Edge TPU"].startswith("CPU")
    res = runner.invoke(cli, [*args, "--format", "json"])
    assert json.loads(res.stdout)["num_ops"] == len(names)
    res = runner.invoke(cli, [*args, "--format", "md"])
    assert res.stdout.startswith("| # | op | inputs |") and "| totals |" in res.stdout
