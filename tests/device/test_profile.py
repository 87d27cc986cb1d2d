"""edgeq-device profile: every operator timed alone on real models, the sum against the whole model."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from edgeq_device.errors import DelegateError, InvalidArgumentError, ModelFileError
from edgeq_device.measure.opcut import OperatorCutter
from edgeq_device.measure.opcut_raw import RawOperatorCutter
from edgeq_device.measure.profile import (
    ProfileParams,
    ProfileResult,
    profile_model,
)
from edgeq_device.measure.profile_inputs import make_cutter, record_tensors, static_tensors
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.run.runtime import ModelRunner, resolve_runtime

# Timing runs long enough that the p50 of a ~10 µs model settles on a shared machine.
TIMING = dict(threads=1, runs=100, min_secs=0.03, whole_runs=300, whole_min_secs=0.5)


def _check_accounted(r: ProfileResult, path) -> None:
    flat = read_flat_model(path)
    assert [o.index for o in r.operators] == list(range(len(flat.main.operators)))
    assert [o.op for o in r.operators] == [op.custom_code or op.opcode for op in flat.main.operators]
    for o in r.operators:
        assert o.p50_us is not None or o.note, f"operator {o.index} is neither timed nor explained"


@pytest.mark.parametrize(("mode", "cutter"), [("float32", None), ("float16", None), ("int8", None),
                                               ("int8_io_uint8", None), ("dynamic", None), ("float16", "raw"),
                                               ("int8_io_uint8", "raw")])
@pytest.mark.slow
def test_operators_add_up_to_the_whole_model(models, mode, cutter):
    r = profile_model(models[mode], cutter=cutter, **TIMING)
    _check_accounted(r, models[mode])
    assert r.coverage >= 0.95, [o.note for o in r.operators if o.note]
    assert r.whole_p50_us is not None and r.whole_runs >= 300
    # The digits CNN runs in ~10 µs: a tolerance of 35% (25% on MobileNetV2, test below).
    assert 0.65 <= r.sum_us / r.whole_p50_us <= 1.35, str(r)
    assert 0 < (r.invoke_overhead_us or 0) < r.whole_p50_us
    conv = [o for o in r.operators if o.op == "CONV_2D"]
    assert conv and all(o.macs > 0 and o.macs_per_second and o.p50_us and o.p50_us > 0 for o in conv)
    # The slowest operator has the largest share, and it is a convolution or the dense layer: the
    # ops that do the multiply-accumulates, not a reshape or a pooling.
    slowest = max(r.timed, key=lambda o: o.p50_us or 0.0)
    assert max(r.operators, key=lambda o: r.share(o) or 0.0) is slowest
    assert slowest.op in ("CONV_2D", "FULLY_CONNECTED", "DEPTHWISE_CONV_2D"), str(r)


def test_sum_residual_and_shares_by_hand(models):
    """The profile's arithmetic on figures set by hand: three operators, one not timed, an overhead."""
    r = profile_model(models["float32"], **TIMING)
    ops = tuple(replace(o, p50_us=p) for o, p in zip(r.operators[:3], (3.0, 5.0, None)))
    hand = replace(r, operators=ops, invoke_overhead_us=2.0, whole_p50_us=12.0)
    assert hand.sum_us == 10.0  # 3 + 5 + the overhead once
    assert hand.residual_us == 2.0  # 12 - 10
    assert [hand.share(o) for o in ops] == [0.3, 0.5, None]
    assert hand.coverage == pytest.approx(2 / 3)
    none_timed = replace(hand, operators=tuple(replace(o, p50_us=None) for o in ops))
    assert none_timed.sum_us == 0.0 and none_timed.share(ops[0]) is None  # no overhead without an operator
    assert replace(hand, whole_p50_us=None).residual_us is None


@pytest.mark.parametrize("backend", ["schema", "raw"])
@pytest.mark.parametrize("mode", ["int8", "float16"])
def test_a_cut_operator_computes_what_it_computes_in_the_model(models, backend, mode):
    """Each cut model, fed its recorded inputs without delegates, gives the full run's output."""
    data = models[mode].read_bytes()
    flat = read_flat_model(data)
    runtime = resolve_runtime()
    runner = ModelRunner(data, xnnpack=False)
    x = np.random.default_rng(0).uniform(0, 1, size=(1, 28, 28, 1)).astype(np.float32)
    runner.set_inputs([x])
    inputs = {int(d["index"]): runner.interpreter.get_tensor(d["index"]) for d in runner.input_details}
    values = record_tensors(data, runtime, inputs, len(flat.main.tensors))
    cutter = make_cutter(data, flat, backend)
    assert isinstance(cutter, RawOperatorCutter if backend == "raw" else OperatorCutter)
    static = static_tensors(flat)
    for op in flat.main.operators:
        if all(o in static for o in op.outputs):
            continue  # computed once from constants: not timed, not cut
        cut = cutter.cut(op.index, values, sorted(static))
        alone = ModelRunner(cut.content, xnnpack=False, probe=False)
        for new_idx, full_idx in cut.inputs:
            alone.interpreter.set_tensor(new_idx, values[full_idx])
        alone.interpreter.invoke()
        got = alone.interpreter.get_tensor(cut.outputs[0])
        np.testing.assert_array_equal(got, values[op.outputs[0]], err_msg=f"operator {op.index} {op.opcode}")


def test_float16_weights_are_computed_once(models):
    r = profile_model(models["float16"], runs=5, min_secs=0.0, whole_runs=5, whole_min_secs=0.0)
    once = [o for o in r.operators if o.inputs == "constant"]
    assert once and all(o.op == "DEQUANTIZE" and o.p50_us == 0.0 for o in once)
    assert all(o.inputs == "recorded" for o in r.operators if o.op == "CONV_2D")


def test_a_custom_operator_the_runtime_lacks_is_reported_and_the_rest_timed(models, model_tools, tmp_path):
    schema = __import__("ai_edge_litert.schema_py_generated", fromlist=["x"])

    def edit(m):
        for code in m.operatorCodes:
            if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.SOFTMAX:
                code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
                code.customCode = "EdgeqNoSuchOp"

    path = tmp_path / "custom.tflite"
    path.write_bytes(model_tools.rewrite_model(models["float32"].read_bytes(), edit))
    r = profile_model(path, runs=5, min_secs=0.0, whole_runs=5, whole_min_secs=0.0)
    _check_accounted(r, path)
    assert r.whole_p50_us is None and r.whole_note and r.residual_us is None
    custom = [o for o in r.operators if o.op == "EdgeqNoSuchOp"]
    assert len(custom) == 1 and custom[0].p50_us is None and "EdgeqNoSuchOp" in (custom[0].note or "")
    rest = [o for o in r.operators if o.op != "EdgeqNoSuchOp"]
    assert rest and all(o.p50_us is not None for o in rest)
    assert "not timed" in str(r)


def test_json_round_trip_text_and_html(models, tmp_path):
    r = profile_model(models["int8"], runs=5, min_secs=0.0, whole_runs=5, whole_min_secs=0.0)
    doc = json.loads(r.to_json())
    assert doc["schema"] == "edgeq-device/profile/1"
    assert ProfileResult.from_dict(doc) == r
    text = str(r)
    assert "CONV_2D" in text and "whole model p50" in text and "residual" in text
    assert "<table>" in r._repr_html_()


def test_bad_input_errors():
    with pytest.raises(InvalidArgumentError, match="threads"):
        ProfileParams(threads=0)
    with pytest.raises(InvalidArgumentError, match="runs"):
        ProfileParams(runs=0)
    with pytest.raises(ModelFileError, match="not found"):
        profile_model("/nonexistent/model.tflite")
    with pytest.raises(ModelFileError, match="TFL3"):
        profile_model(b"not a model at all")


@pytest.mark.slow
def test_cli_table_json_and_one_line_errors(models, cli, tmp_path):
    p = cli("profile", models["int8"], "--threads", "1", "--runs", "5", "--min-secs", "0", "--json", "-")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["schema"] == "edgeq-device/profile/1" and len(doc["operators"]) > 5
    p = cli("profile", models["int8"], "--runs", "5", "--min-secs", "0", "--top", "3", "-q")
    assert p.returncode == 0 and "whole model p50" in p.stdout
    assert sum(1 for line in p.stdout.splitlines() if "CONV_2D" in line or "FULLY_CONNECTED" in line) <= 3
    for args, want in [(("--threads", "0"), "--threads"), (("--delegate", str(tmp_path / "none.so")), "delegate")]:
        p = cli("profile", models["int8"], *args)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 2 and len(lines) == 1 and want in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_a_missing_delegate_is_an_error_not_a_note(models, tmp_path):
    with pytest.raises(DelegateError, match="delegate"):
        profile_model(models["int8"], delegate=str(tmp_path / "none.so"))
