"""Edge TPU partition prediction on real conversions, and the edgetpu_compiler runner and log parser."""

from __future__ import annotations

import json
import os
import shutil
import stat
import textwrap
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf
from click.testing import CliRunner
from edgeq_device.model.flatbuffer import read_flat_model
from plain_tflite import plain_convert

from edgeq.cli import cli
from edgeq.errors import (
    CompilerNotFoundError,
    ConversionError,
    InvalidArgumentError,
    ModelFileError,
    OutputExistsError,
)
from edgeq.targets.edgetpu.compiler import parse_compiler_log, run_edgetpu_compiler
from edgeq.targets.edgetpu.rules import EdgeTPUPrediction, check_edgetpu_ready, predict_edgetpu

keras = tf.keras


def _convert(model: Any, int8: bool = True, io: str = "int8", fallback: bool = False) -> bytes:
    return plain_convert(model, int8, io, fallback)


def _cnn(batch_size: int | None = 1) -> Any:
    """A small CNN of Edge TPU ops: pad, conv, depthwise, max pool, add, concat, GAP, dense, softmax."""
    inp = keras.Input((16, 16, 3), batch_size=batch_size)
    x = keras.layers.ZeroPadding2D(1)(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu6")(x)
    x = keras.layers.Add()([x, y])
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Concatenate()([x, keras.layers.Conv2D(4, 1)(x)])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(5, activation="softmax")(x)
    return keras.Model(inp, x)


def _leaky() -> Any:
    """int8 CNN with LEAKY_RELU (int8 in TFLite, not an Edge TPU op) in the middle."""
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.LeakyReLU(0.1)(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(3)(x)
    return keras.Model(inp, x)


def _sin() -> Any:
    """SIN has no int8 kernel: with float fallback the converter dequantizes around it."""
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.Lambda(lambda t: tf.sin(t))(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, x)


def _constraints() -> Any:
    """Supported op types used outside Coral's limits: 3-D dense output, 2-D softmax, strided slice."""
    inp = keras.Input((4, 8), batch_size=1)
    x = keras.layers.Dense(6)(inp)  # FULLY_CONNECTED with output [1, 4, 6]
    x = keras.layers.Softmax()(x)  # softmax over a [1, 4, 6] tensor
    x = keras.layers.Lambda(lambda t: t[:, ::2, :])(x)  # stride 2
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def analyze_tpu_models() -> dict[str, bytes]:
    """Real conversions, made once for the module."""
    cnn = _cnn()
    return {
        "float": _convert(cnn, int8=False),
        "int8": _convert(cnn, io="int8"),
        "int8_uint8io": _convert(cnn, io="uint8"),
        "int8_floatio": _convert(cnn, io="float"),
        "dynamic_batch": _convert(_cnn(batch_size=None), io="int8"),
        "batch4": _convert(_cnn(batch_size=4), io="int8"),
        "leaky": _convert(_leaky(), io="int8"),
        "sin": _convert(_sin(), io="int8", fallback=True),
        "constraints": _convert(_constraints(), io="int8"),
    }


def _statuses(p: EdgeTPUPrediction) -> list[str]:
    return [o.status for o in p.ops]


def test_float_model_maps_nothing_and_says_why(analyze_tpu_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(analyze_tpu_models["float"])
    assert p.mapped_count == 0 and p.split_at == 0 and p.num_edgetpu_subgraphs == 0
    first = p.ops[0]
    assert first.status == "unsupported" and first.device == "cpu"
    assert "FLOAT32" in first.reason and "int8" in first.fix
    assert set(_statuses(p)[1:]) == {"after-split"}
    assert all("after the split at op 0" in o.reason for o in p.ops[1:])
    errors = [q for q in check_edgetpu_ready(analyze_tpu_models["float"]) if q.severity == "error"]
    assert errors and {q.code for q in errors} == {"dtype"}
    assert len(errors) == len(p.ops)  # every op is float, and the check lists them all


def test_full_int8_cnn_maps_everything(analyze_tpu_models: dict[str, bytes]) -> None:
    data = analyze_tpu_models["int8"]
    flat = read_flat_model(data)
    ops = {op.opcode for op in flat.main.operators}
    assert {"PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "CONCATENATION", "MEAN",
            "FULLY_CONNECTED", "SOFTMAX"} <= ops
    p = predict_edgetpu(flat)
    assert set(_statuses(p)) == {"mapped"} and p.fully_mapped and p.split_at is None
    assert p.mapped_count == len(flat.main.operators) and p.num_edgetpu_subgraphs == 1
    assert check_edgetpu_ready(flat) == []
    json.dumps(p.to_dict())


def test_uint8_io_quantize_maps(analyze_tpu_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(analyze_tpu_models["int8_uint8io"])
    assert p.ops[0].name == "QUANTIZE" and p.ops[-1].name == "QUANTIZE"
    assert p.fully_mapped and set(_statuses(p)) == {"mapped"}


def test_float_io_conversions_run_on_cpu_without_splitting(analyze_tpu_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(analyze_tpu_models["int8_floatio"])
    assert (p.ops[0].name, p.ops[0].status) == ("QUANTIZE", "io")
    assert (p.ops[-1].name, p.ops[-1].status) == ("DEQUANTIZE", "io")
    assert set(_statuses(p)[1:-1]) == {"mapped"} and p.split_at is None and p.fully_mapped
    assert p.cpu_count == 2 and "--io uint8" in p.ops[0].fix
    problems = check_edgetpu_ready(analyze_tpu_models["int8_floatio"])
    assert [q.code for q in problems] == ["float-io", "float-io"]
    assert all(q.severity == "warning" and "uint8" in q.fix for q in problems)


def test_unsupported_op_in_the_middle_splits_there(analyze_tpu_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(analyze_tpu_models["leaky"])
    names = [o.name for o in p.ops]
    k = names.index("LEAKY_RELU")
    assert k > 0 and p.split_at == k
    assert _statuses(p) == ["mapped"] * k + ["unsupported"] + ["after-split"] * (len(names) - k - 1)
    assert "not an Edge TPU operation" in p.ops[k].reason and "ReLU" in p.ops[k].fix
    assert "1 of 5 ops on the Edge TPU" in p.summary() and "split at op 1 LEAKY_RELU" in p.summary()
    problems = check_edgetpu_ready(analyze_tpu_models["leaky"])
    assert [(q.code, q.op_name) for q in problems] == [("unsupported-op", "LEAKY_RELU")]


def test_float_fallback_op_splits_at_its_dequantize(analyze_tpu_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(analyze_tpu_models["sin"])
    names = [o.name for o in p.ops]
    assert names[:4] == ["CONV_2D", "DEQUANTIZE", "SIN", "QUANTIZE"]
    assert _statuses(p)[:3] == ["mapped", "unsupported", "after-split"]
    assert p.split_at == 1 and "float" in p.ops[1].fix
    codes = {(q.op_name, q.code) for q in check_edgetpu_ready(analyze_tpu_models["sin"])}
    assert {("DEQUANTIZE", "unsupported-op"), ("SIN", "unsupported-op"), ("QUANTIZE", "dtype")} <= codes


def test_dynamic_batch_needs_batch_size_one(analyze_tpu_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(analyze_tpu_models["dynamic_batch"])
    assert p.mapped_count == 0 and p.split_at == 0
    assert "dynamic shape" in p.ops[0].reason and "--batch-size 1" in p.ops[0].fix
    assert {q.code for q in check_edgetpu_ready(analyze_tpu_models["dynamic_batch"])} == {"dynamic-shape"}


def test_static_batch_four_breaks_the_rank_rule(analyze_tpu_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(analyze_tpu_models["batch4"])
    assert p.split_at == 0 and p.mapped_count == 0
    assert "innermost three" in p.ops[0].reason and "batch size 1" in p.ops[0].fix


def test_op_constraints(analyze_tpu_models: dict[str, bytes]) -> None:
    problems = check_edgetpu_ready(analyze_tpu_models["constraints"])
    found = {q.op_name: q for q in problems}
    assert set(found) == {"FULLY_CONNECTED", "SOFTMAX", "STRIDED_SLICE"}
    assert all(q.code == "op-constraint" and q.severity == "error" for q in problems)
    assert "not one-dimensional" in found["FULLY_CONNECTED"].message
    assert "1-D input" in found["SOFTMAX"].message
    assert "strides" in found["STRIDED_SLICE"].message
    p = predict_edgetpu(analyze_tpu_models["constraints"])
    assert p.ops[p.split_at or 0].name == "FULLY_CONNECTED" and p.mapped_count == 0
    assert str(problems[0]).startswith("op 0 FULLY_CONNECTED: ")


def test_cli_shows_split_and_fix(analyze_tpu_models: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "leaky.tflite"
    path.write_bytes(analyze_tpu_models["leaky"])
    res = CliRunner().invoke(cli, ["analyze", str(path), "--target", "edgetpu"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "split at op 1 LEAKY_RELU" in res.output and "CPU (unsupported)" in res.output
    assert "fix: use ReLU" in res.output
    res = CliRunner().invoke(cli, ["analyze", str(path), "--target", "edgetpu", "--json", "-"])
    payload = json.loads(res.stdout)
    assert payload["edgetpu"]["split_at"] == 1 and payload["edgetpu"]["mapped"] == 1


# ------------------------------------------------------------------ the rules of edgetpu_compiler 16.0
# Each model below shows one behaviour of the real compiler: where its segment starts, which
# branches it keeps, and which ops it maps (see edgeq.edgetpu's module docstring for the sources).


def _leading_cast() -> Any:
    """uint8 pixels cast to float in the graph (as pose models do): CAST, then QUANTIZE from float."""
    inp = keras.Input((8, 8, 3), batch_size=1, dtype="uint8")
    x = keras.layers.Lambda(lambda t: tf.cast(t, tf.float32) / 255.0)(inp)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.Conv2D(4, 3)(x)
    return keras.Model(inp, x)


def _parallel_branch() -> Any:
    """LEAKY_RELU on one branch; a max pool on the other branch comes after it in execution order."""
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    a = keras.layers.Flatten()(keras.layers.LeakyReLU(0.1)(x))
    b = keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(x))
    return keras.Model(inp, keras.layers.Concatenate()([a, b]))


def _tile() -> Any:
    """Image-level features tiled back over the feature map, as in DeepLab-style decoders."""
    inp = keras.Input((4, 4, 8), batch_size=1)
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True)(inp)
    tiled = keras.layers.Lambda(lambda t: tf.tile(t, [1, 4, 4, 1]))(pooled)
    x = keras.layers.Concatenate()([inp, tiled])
    return keras.Model(inp, keras.layers.Conv2D(4, 1)(x))


def _resizes() -> Any:
    """8x8 -> 16x16 (whole factor, half_pixel_centers) maps; 16x16 -> 24x24 (factor 1.5) does not."""
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(inp)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.Lambda(lambda t: tf.image.resize(t, (24, 24)))(x)
    return keras.Model(inp, keras.layers.Conv2D(4, 3, padding="same")(x))


def _align_corners() -> Any:
    """align_corners: 8 -> 15 is factor 2 on the corner grid (maps); 15 -> 16 is not (does not)."""
    inp = keras.Input((8, 8, 4), batch_size=1)
    x = keras.layers.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, (15, 15), align_corners=True))(inp)
    x = keras.layers.Conv2D(4, 3, padding="same")(x)
    x = keras.layers.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, (16, 16), align_corners=True))(x)
    return keras.Model(inp, keras.layers.Conv2D(4, 3, padding="same")(x))


def _large_resize() -> Any:
    """A whole-factor upsampling to 520 pixels wide, beyond what the compiler maps."""
    inp = keras.Input((4, 260, 2), batch_size=1)
    x = keras.layers.Conv2D(2, 1)(inp)
    x = keras.layers.UpSampling2D(2, interpolation="bilinear")(x)
    return keras.Model(inp, keras.layers.Conv2D(2, 1)(x))


def _packs() -> Any:
    """Two dense outputs stacked along the batch axis ([2, 1, 6], Coral: no packing in batch) and the last."""
    inp = keras.Input((4,), batch_size=1)
    a, b = keras.layers.Dense(6)(inp), keras.layers.Dense(6)(inp)
    on_batch = keras.layers.Lambda(lambda t: tf.stack(t, axis=0))([a, b])
    on_last = keras.layers.Lambda(lambda t: tf.stack(t, axis=-1))([a, b])
    return keras.Model(inp, [on_last, on_batch])


def _lstm() -> Any:
    """A Keras 2 LSTM (unroll=False): one UNIDIRECTIONAL_SEQUENCE_LSTM, int16 cell state in int8."""
    import tf_keras

    inp = tf_keras.Input((6, 4), batch_size=1)
    x = tf_keras.layers.LSTM(8, unroll=False)(inp)
    return tf_keras.Model(inp, tf_keras.layers.Dense(3)(x))


@pytest.fixture(scope="module")
def compiler_rule_models() -> dict[str, bytes]:
    """Real full-int8 conversions, made once for the module."""
    return {
        "cast": _convert(_leading_cast()),
        "parallel": _convert(_parallel_branch()),
        "tile": _convert(_tile()),
        "resizes": _convert(_resizes()),
        "align_corners": _convert(_align_corners()),
        "large_resize": _convert(_large_resize()),
        "lstm": _convert(_lstm()),
        "packs": _convert(_packs()),
    }


def test_leading_cpu_ops_run_before_the_segment(compiler_rule_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(compiler_rule_models["cast"])
    assert [(o.name, o.status) for o in p.ops] == [
        ("CAST", "before-segment"), ("QUANTIZE", "before-segment"), ("CONV_2D", "mapped"), ("CONV_2D", "mapped")]
    assert p.split_at is None and p.segment_start == 2 and p.mapped_count == 2 and p.num_edgetpu_subgraphs == 1
    assert not p.fully_mapped and p.cpu_count == 2
    assert "CAST is not an Edge TPU operation" in p.ops[0].reason and "ahead of the Edge TPU segment" in p.ops[0].reason
    assert "FLOAT32" in p.ops[1].reason and "io='uint8'" in p.ops[0].fix
    assert "segment starts at op 2 CONV_2D after 2 CPU ops" in p.summary() and "split" not in p.summary()


def test_supported_branch_beside_an_unsupported_op_still_maps(compiler_rule_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(compiler_rule_models["parallel"])
    status = {o.name: o.status for o in p.ops if o.name != "RESHAPE"}
    leaky = next(o.index for o in p.ops if o.name == "LEAKY_RELU")
    pool = next(o.index for o in p.ops if o.name == "MAX_POOL_2D")
    assert pool > leaky  # the pool runs after the unsupported op, on a branch that does not need it
    assert p.split_at == leaky and status == {"CONV_2D": "mapped", "LEAKY_RELU": "unsupported",
                                               "MAX_POOL_2D": "mapped", "CONCATENATION": "after-split"}
    flat = read_flat_model(compiler_rule_models["parallel"]).main
    for o, op in zip(p.ops, flat.operators):
        if o.name == "RESHAPE":  # each flatten follows its own branch
            after_leaky = any(flat.operators[leaky].outputs[0] == i for i in op.inputs)
            assert o.status == ("after-split" if after_leaky else "mapped")
    concat = next(o for o in p.ops if o.name == "CONCATENATION")
    assert f"after the split at op {leaky} LEAKY_RELU" in concat.reason


def test_tile_maps(compiler_rule_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(compiler_rule_models["tile"])
    assert "TILE" in [o.name for o in p.ops]
    assert p.fully_mapped and set(_statuses(p)) == {"mapped"}
    assert check_edgetpu_ready(compiler_rule_models["tile"]) == []


def test_resize_by_a_whole_factor_maps_and_by_another_splits(compiler_rule_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(compiler_rule_models["resizes"])
    assert [(o.name, o.status) for o in p.ops] == [
        ("RESIZE_BILINEAR", "mapped"), ("CONV_2D", "mapped"), ("RESIZE_BILINEAR", "unsupported"),
        ("CONV_2D", "after-split")]
    assert "from 16x16 to 24x24 is not a whole scale factor" in p.ops[2].reason and "whole factor" in p.ops[2].fix
    warnings = [q for q in p.problems if q.severity == "warning"]
    assert [(q.code, q.op_index) for q in warnings] == [("compiler-version", 0), ("compiler-version", 2)]
    assert "compilers 14 and 15" in warnings[0].message


def test_resize_align_corners_grid_and_output_size(compiler_rule_models: dict[str, bytes]) -> None:
    p = predict_edgetpu(compiler_rule_models["align_corners"])
    assert [(o.name, o.status) for o in p.ops] == [
        ("RESIZE_BILINEAR", "mapped"), ("CONV_2D", "mapped"), ("RESIZE_BILINEAR", "unsupported"),
        ("CONV_2D", "after-split")]
    assert "15x15 to 16x16" in p.ops[2].reason and "align_corners" in p.ops[2].reason
    assert not [q for q in p.problems if q.code == "compiler-version"]  # no half_pixel_centers here
    p = predict_edgetpu(compiler_rule_models["large_resize"])
    assert [(o.name, o.status) for o in p.ops] == [
        ("CONV_2D", "mapped"), ("RESIZE_BILINEAR", "unsupported"), ("CONV_2D", "after-split")]
    assert "output 8x520 is larger than 512" in p.ops[1].reason


def test_pack_along_the_batch_dimension_stays_on_the_cpu(compiler_rule_models: dict[str, bytes]) -> None:
    flat = read_flat_model(compiler_rule_models["packs"]).main
    p = predict_edgetpu(compiler_rule_models["packs"])
    packs = {tuple(flat.tensors[op.outputs[0]].shape): p.ops[op.index] for op in flat.operators if op.opcode == "PACK"}
    assert set(packs) == {(2, 1, 6), (1, 6, 2)}
    assert packs[(1, 6, 2)].status == "mapped"
    assert packs[(2, 1, 6)].status == "unsupported" and "PACK along the batch dimension" in packs[(2, 1, 6)].reason
    assert [q.op_name for q in check_edgetpu_ready(compiler_rule_models["packs"])] == ["PACK"]


def test_int8_lstm_with_int16_state_maps(compiler_rule_models: dict[str, bytes]) -> None:
    flat = read_flat_model(compiler_rule_models["lstm"])
    lstm = next(op for op in flat.main.operators if op.opcode == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    assert "INT16" in {flat.main.tensors[i].dtype for i in lstm.inputs if i >= 0}  # the cell state
    p = predict_edgetpu(flat)
    assert p.fully_mapped and set(_statuses(p)) == {"mapped"}
    assert check_edgetpu_ready(flat) == []


def test_cli_names_the_compiler_version(compiler_rule_models: dict[str, bytes], tmp_path: Path) -> None:
    path = tmp_path / "cast.tflite"
    path.write_bytes(compiler_rule_models["cast"])
    res = CliRunner().invoke(cli, ["analyze", str(path), "--target", "edgetpu"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "2 of 4 ops on the Edge TPU (edgetpu_compiler 16.0 rules)" in res.output
    assert "CPU (before-segment)" in res.output
    res = CliRunner().invoke(cli, ["analyze", str(path), "--target", "edgetpu", "--json", "-"])
    payload = json.loads(res.stdout)["edgetpu"]
    assert payload["compiler_version"] == "16.0" and payload["segment_start"] == 2 and payload["mapped"] == 2


# ------------------------------------------------------------------ compiler log parsing
# Texts in the format edgetpu_compiler prints (console with -s, and the *_edgetpu.log file).

PARTIAL = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 812 ms.

    Input model: leaky.tflite
    Input size: 12.40KiB
    Output model: out/leaky_edgetpu.tflite
    Output size: 48.25KiB
    On-chip memory used for caching model parameters: 3.50KiB
    On-chip memory remaining for caching model parameters: 7.01MiB
    Off-chip memory used for streaming uncached model parameters: 0.00B
    Number of Edge TPU subgraphs: 1
    Total number of operations: 5
    Operation log: out/leaky_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
    Number of operations that will run on Edge TPU: 1
    Number of operations that will run on CPU: 4

    Operator                       Count      Status

    CONV_2D                        1          Mapped to Edge TPU
    CONV_2D                        1          More than one subgraph is not supported
    LEAKY_RELU                     1          Operation not supported
    MEAN                           1          More than one subgraph is not supported
    FULLY_CONNECTED                1          More than one subgraph is not supported
    Compilation child process completed within timeout period.
    Compilation succeeded!
    """)

FULL = textwrap.dedent("""\
    Edge TPU Compiler version 15.0.340273435

    Model compiled successfully in 1420 ms.

    Input model: mobilenet_v2_int8.tflite
    Input size: 3.95MiB
    Output model: mobilenet_v2_int8_edgetpu.tflite
    Output size: 4.18MiB
    On-chip memory used for caching model parameters: 3.41MiB
    On-chip memory remaining for caching model parameters: 3.59MiB
    Off-chip memory used for streaming uncached model parameters: 12.50KiB
    Number of Edge TPU subgraphs: 1
    Total number of operations: 67
    Operation log: mobilenet_v2_int8_edgetpu.log
    See the operation log file for individual operation details.
    """)

LOGFILE = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Input: yolo.tflite
    Output: yolo_edgetpu.tflite

    Operator                       Count      Status

    QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
    DEQUANTIZE                     2          Operation is working on an unsupported data type
    CONV_2D                        58         Mapped to Edge TPU
    RESIZE_NEAREST_NEIGHBOR        1          Operation version not supported
    QUANTIZE                       4          Mapped to Edge TPU
    """)

FAILED = textwrap.dedent("""\
    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.
    ERROR: Attempting to use a delegate that only supports static-sized tensors with a graph that has dynamic-sized tensors.
    Compilation failed: Model failed in Tflite interpreter. Please ensure model can be loaded/run in Tflite interpreter.
    Compilation child process completed within timeout period.
    Compilation failed!
    """)


def test_parse_partial_mapping() -> None:
    r = parse_compiler_log(PARTIAL)
    assert r.succeeded and r.compiler_version == "16.0.384591198"
    assert (r.input_model, r.output_model, r.operation_log) == (
        "leaky.tflite", "out/leaky_edgetpu.tflite", "out/leaky_edgetpu.log")
    assert r.input_size == round(12.40 * 1024) and r.output_size == round(48.25 * 1024)
    assert r.on_chip_memory_used == round(3.5 * 1024)
    assert r.on_chip_memory_remaining == round(7.01 * 1024 ** 2)
    assert r.off_chip_memory_used == 0
    assert (r.num_edgetpu_subgraphs, r.total_ops, r.ops_on_edgetpu, r.ops_on_cpu) == (1, 5, 1, 4)
    assert r.mapped == {"CONV_2D": 1}
    assert r.not_mapped == {
        "CONV_2D": {"More than one subgraph is not supported": 1},
        "LEAKY_RELU": {"Operation not supported": 1},
        "MEAN": {"More than one subgraph is not supported": 1},
        "FULLY_CONNECTED": {"More than one subgraph is not supported": 1},
    }
    assert len(r.operators) == 5 and r.errors == ()
    json.dumps(r.to_dict())


def test_parse_full_mapping_without_table() -> None:
    r = parse_compiler_log(FULL)
    assert r.succeeded and r.operators == ()
    assert (r.total_ops, r.ops_on_edgetpu, r.ops_on_cpu) == (67, 67, 0)
    assert r.on_chip_memory_used == round(3.41 * 1024 ** 2)
    assert r.off_chip_memory_used == round(12.5 * 1024)


def test_parse_operation_log_file() -> None:
    r = parse_compiler_log(LOGFILE)
    assert r.succeeded and (r.input_model, r.output_model) == ("yolo.tflite", "yolo_edgetpu.tflite")
    assert r.mapped == {"CONV_2D": 58, "QUANTIZE": 4}
    assert r.not_mapped["QUANTIZE"] == {
        "Operation is otherwise supported, but not mapped due to some unspecified limitation": 1}
    assert r.not_mapped["DEQUANTIZE"] == {"Operation is working on an unsupported data type": 2}
    assert (r.total_ops, r.ops_on_edgetpu, r.ops_on_cpu) == (66, 62, 4)


def test_parse_failure() -> None:
    r = parse_compiler_log(FAILED)
    assert not r.succeeded and len(r.errors) == 3
    assert "static-sized tensors" in r.errors[0]
    with pytest.raises(InvalidArgumentError, match="text"):
        parse_compiler_log(b"bytes")  # type: ignore[arg-type]


# ------------------------------------------------------------------ running the compiler


def test_missing_compiler_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompilerNotFoundError, match="edgetpu-compiler"):
        run_edgetpu_compiler(tmp_path / "m.tflite", tmp_path / "out")


def _stand_in_compiler(bin_dir: Path, stdout: str, exit_code: int = 0) -> None:
    """An executable named edgetpu_compiler that prints ``stdout`` and writes <name>_edgetpu.tflite.

    The real compiler is an x86-64 Debian package from Coral's repository, which this
    machine cannot install; this stand-in exercises PATH lookup, arguments, exit codes
    and parsing of what the process prints.
    """
    (bin_dir / "out.txt").write_text(stdout)
    script = bin_dir / "edgetpu_compiler"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        # args: -s -o OUT_DIR MODEL
        [ "$1" = "-s" ] && [ "$2" = "-o" ] || exit 9
        name=$(basename "$4" .tflite)
        cp "$4" "$3/${{name}}_edgetpu.tflite"
        cat "{bin_dir / 'out.txt'}"
        exit {exit_code}
        """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_runner_with_stand_in_compiler(analyze_tpu_models: dict[str, bytes], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in_compiler(bin_dir, PARTIAL)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "leaky.tflite"
    model.write_bytes(analyze_tpu_models["leaky"])
    report = run_edgetpu_compiler(model, tmp_path / "out")
    assert (tmp_path / "out" / "leaky_edgetpu.tflite").exists()
    assert report.ops_on_edgetpu == 1 and report.not_mapped["LEAKY_RELU"] == {"Operation not supported": 1}
    # the prediction agrees with what the compiler reported for this model
    pred = predict_edgetpu(model)
    assert pred.mapped_count == report.ops_on_edgetpu and pred.cpu_count == report.ops_on_cpu
    with pytest.raises(OutputExistsError):
        run_edgetpu_compiler(model, tmp_path / "out")
    run_edgetpu_compiler(model, tmp_path / "out", overwrite=True)
    with pytest.raises(ModelFileError):
        run_edgetpu_compiler(tmp_path / "missing.tflite", tmp_path / "out2")
    _stand_in_compiler(bin_dir, FAILED, exit_code=1)
    with pytest.raises(ConversionError, match="static-sized tensors") as info:
        run_edgetpu_compiler(model, tmp_path / "out3")
    assert not info.value.report.succeeded  # type: ignore[attr-defined]


@pytest.mark.skipif(shutil.which("edgetpu_compiler") is None, reason="edgetpu_compiler is not installed")
def test_real_compiler_agrees_with_prediction(analyze_tpu_models: dict[str, bytes], tmp_path: Path) -> None:
    for name in ("int8", "leaky"):
        model = tmp_path / f"{name}.tflite"
        model.write_bytes(analyze_tpu_models[name])
        report = run_edgetpu_compiler(model, tmp_path / "out")
        pred = predict_edgetpu(model)
        assert report.ops_on_edgetpu == pred.mapped_count
