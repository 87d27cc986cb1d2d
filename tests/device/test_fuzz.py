"""No input kills an edgeq or edgeq-device command with a signal.

Seeded mutants (bit flips, truncations, zeroed ranges) of real float32 and int8
models go through ``edgeq-device info``, ``bench``, ``eval`` and ``edgeq analyze``:
in process with click's CliRunner for all of them (the validation layer and the
child-process load keep native crashes out of the test process), and as real
subprocesses for a sample, to show no signal end to end. Every outcome is a
success or one ``error:`` line with exit 2, never a traceback.
"""

from __future__ import annotations

import collections
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from edgeq_device import loadcheck, validate
from edgeq_device.cli.commands import cli as device_cli
from edgeq_device.errors import InferenceError, ModelFileError, RuntimeCrashError
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.run.runtime import ModelRunner, resolve_runtime

SEED = 20261129
MUTANTS_PER_MODEL = 180
BASE_MODELS = ("float32", "int8", "meta_uint8")


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutant: a few bit flips, a truncation or a zeroed range; returns (kind, bytes)."""
    b = bytearray(data)
    kind = rng.choice(("flip", "truncate", "zero"))
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        del b[rng.randrange(len(b)):]
    else:
        i = rng.randrange(len(b))
        n = rng.randint(1, 64)
        b[i:i + n] = bytes(len(b[i:i + n]))
    return kind, bytes(b)


def _mutants(models) -> list[tuple[str, str, bytes]]:
    rng = random.Random(SEED)
    out = []
    for name in BASE_MODELS:
        data = Path(models[name]).read_bytes()
        for _ in range(MUTANTS_PER_MODEL):
            kind, mutant = mutate(data, rng)
            out.append((name, kind, mutant))
    return out


def _reason(message: str) -> str:
    """The kind of error, numbers and names left out, for the tally."""
    text = re.sub(r" \(received .*", "", message.removeprefix("error: model: "))
    text = re.sub(r"\(.*", "", text)
    return re.sub(r"-?\d[\d,.]*", "N", text)[:60].strip()


def _check(result, what: str) -> str:
    """Assert a CliRunner result is a success or one clean error line; return its reason."""
    output = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "Traceback" not in output, (what, output)
    if result.exit_code == 0:
        return "ok"
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (what, result.exception, output)
    lines = result.stderr.strip().splitlines()
    # One error line, last; bench's progress line ("benchmarking ...") may come before it.
    assert lines[-1].startswith("error: "), (what, result.stderr)
    assert all(line.startswith("benchmarking ") for line in lines[:-1]), (what, result.stderr)
    return _reason(lines[-1])


@pytest.mark.slow  # every mutant through every command in this process
def test_mutated_models_never_crash_a_command(models, small_test_dir, tmp_path):
    from edgeq.cli import cli as host_cli

    runner = CliRunner()
    mutants = _mutants(models)
    assert len(mutants) >= 500
    tally: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    loaded = 0
    start = time.perf_counter()
    for n, (name, kind, data) in enumerate(mutants):
        path = tmp_path / f"mutant_{n}.tflite"
        path.write_bytes(data)
        what = f"mutant {n} of {name} ({kind})"
        info = _check(runner.invoke(device_cli, ["info", str(path)]), what)
        tally["info"][info] += 1
        tally["analyze"][_check(runner.invoke(host_cli, ["analyze", str(path)]), what)] += 1
        if info != "ok":  # rejected by validation: the other commands must say the same
            for cmd in (["bench", str(path), "--runs", "1", "--warmup", "0", "--min-secs", "0"],
                        ["eval", str(path), str(small_test_dir), "--limit", "2", "--workers", "1", "-q"]):
                assert _check(runner.invoke(device_cli, cmd), what) == info, what
            continue
        loaded += 1
        bench = runner.invoke(device_cli, ["bench", str(path), "--runs", "2", "--warmup", "0",
                                           "--min-secs", "0"])
        tally["bench"][_check(bench, what)] += 1
        ev = runner.invoke(device_cli, ["eval", str(path), str(small_test_dir), "--limit", "3",
                                        "--workers", "1", "-q"])
        tally["eval"][_check(ev, what)] += 1
        path.unlink()
    seconds = time.perf_counter() - start
    report = [f"{len(mutants)} mutants in {seconds:.1f} s; {loaded} passed validation"]
    for cmd, counts in tally.items():
        report.append(f"{cmd}: " + "; ".join(f"{v} {k}" for k, v in counts.most_common()))
    print("\n".join(report))
    # The mutants reach every layer: rejected by the reader and the validation, and loaded and run.
    assert tally["info"]["ok"] == loaded and 50 <= loaded <= len(mutants) - 200
    assert tally["bench"]["ok"] > 0 and sum(tally["bench"].values()) == loaded


@pytest.mark.slow
def test_mutants_in_subprocesses_end_without_a_signal(models, cli, tmp_path):
    """A sample through the real command: exit 0 or 2, never a signal, one error line."""
    mutants = _mutants(models)
    rng = random.Random(SEED + 1)
    passing, failing = [], []
    for _, _, data in mutants:
        try:
            read_flat_model(data)
            passing.append(data)
        except ModelFileError:
            failing.append(data)
    sample = rng.sample(passing, 6) + rng.sample(failing, 2)
    for i, data in enumerate(sample):
        path = tmp_path / f"sample_{i}.tflite"
        path.write_bytes(data)
        proc = cli("bench", path, "--runs", "2", "--warmup", "0", "--min-secs", "0", timeout=60)
        assert proc.returncode in (0, 2), (i, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr
        if proc.returncode == 2:
            lines = proc.stderr.strip().splitlines()
            assert lines[-1].startswith("error: "), proc.stderr
            assert all(line.startswith("benchmarking ") for line in lines[:-1]), proc.stderr


def _crashing_model(models, model_tools) -> bytes:
    """An int8 model whose zero point is far outside int8: LiteRT segfaults preparing it."""
    data = Path(models["meta_uint8"]).read_bytes()
    flat = read_flat_model(data)
    op = next(o for o in flat.main.operators if o.opcode == "QUANTIZE")
    target = op.outputs[0]

    def edit(m) -> None:
        m.subgraphs[0].tensors[target].quantization.zeroPoint = np.array([-(1 << 56) + 128], np.int64)

    return model_tools.rewrite_model(data, edit)


def test_validation_rejects_what_crashes_the_runtime(models, model_tools):
    bad = _crashing_model(models, model_tools)
    with pytest.raises(ModelFileError, match=r"zero point -72057594037927808, outside the INT8 range"):
        read_flat_model(bad)
    with pytest.raises(ModelFileError, match="fails validation"):
        ModelRunner(bad)


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "helper"])
def test_child_load_turns_a_runtime_crash_into_an_error(models, model_tools, monkeypatch, fork):
    bad = _crashing_model(models, model_tools)
    monkeypatch.setattr(loadcheck, "_single_threaded", lambda: fork)
    rt = resolve_runtime("litert")
    with pytest.raises(RuntimeCrashError, match=r"the runtime crashed loading this model \(signal 11") as err:
        loadcheck.check_loads_in_child(bad, rt)
    assert err.value.signal == 11
    loadcheck.check_loads_in_child(Path(models["int8"]).read_bytes(), rt)  # a good model passes


PROBE_CRASH = """
import faulthandler, os, sys
faulthandler.enable(file=os.fdopen(os.dup(2), "w"))  # as pytest does: onto a copy of stderr
from edgeq_device import loadcheck
from edgeq_device.errors import RuntimeCrashError
from edgeq_device.run.runtime import resolve_runtime
loadcheck._single_threaded = lambda: sys.argv[2] == "fork"
try:
    loadcheck.check_loads_in_child(open(sys.argv[1], "rb").read(), resolve_runtime("litert"))
except RuntimeCrashError as exc:
    print(exc.signal)
"""


@pytest.mark.parametrize("fork", ["fork", "helper"])
def test_a_crash_in_the_child_prints_no_fault_dump(models, model_tools, tmp_path, fork):
    """With faulthandler on in the parent (as pytest has it), the child's expected crash stays quiet."""
    import subprocess
    import sys

    path = tmp_path / "crash.tflite"
    path.write_bytes(_crashing_model(models, model_tools))
    res = subprocess.run([sys.executable, "-c", PROBE_CRASH, str(path), fork], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert res.returncode == 0 and res.stdout.strip() == "11", res.stderr[-2000:]
    assert "Fatal Python error" not in res.stderr and "Current thread" not in res.stderr, res.stderr[-2000:]


def test_cli_reports_a_crash_the_validation_misses(models, model_tools, monkeypatch, tmp_path):
    """Were a model to pass validation and still crash the runtime: one line, exit 2."""
    path = tmp_path / "crash.tflite"
    path.write_bytes(_crashing_model(models, model_tools))
    monkeypatch.setattr(validate, "_problem", lambda flat: None)
    result = CliRunner().invoke(device_cli, ["bench", str(path), "--runs", "1", "--min-secs", "0"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert re.fullmatch(r"error: model: the runtime crashed loading this model \(signal 11, SIGSEGV\).*\n",
                        result.stderr)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: setattr(m.subgraphs[0].operators[0], "inputs", np.array([], np.int32)),
     r"operator 0 \(\w+\) of subgraph 0 has inputs \[\]; it needs at least"),
    (lambda m: setattr(m.subgraphs[0].operators[0], "outputs", np.array([9999], np.int32)),
     r"operator 0 \(\w+\) of subgraph 0 refers to tensors \[9999\]"),
    (lambda m: setattr(m.subgraphs[0].operators[0], "opcodeIndex", 99),
     r"truncated or corrupt \(operator 0 of subgraph 0 has opcode index 99"),
    (lambda m: setattr(m.subgraphs[0], "inputs", np.array([4096], np.int32)),
     r"subgraph 0 lists inputs \[4096\]"),
    (lambda m: setattr(m.subgraphs[0].tensors[0], "buffer", 4096),
     r"tensor 0 of subgraph 0 refers to buffer 4096"),
    (lambda m: setattr(m.subgraphs[0].tensors[0], "shape", np.array([1, 1 << 20, 1 << 11, 1], np.int32)),
     r"tensor 0 of subgraph 0 declares 2,147,483,648 bytes"),
    (lambda m: setattr(m.subgraphs[0].tensors[0].quantization, "scale", np.array([0.0], np.float32)),
     r"tensor 0 of subgraph 0 has quantization scale 0.0"),
], ids=["op-inputs", "tensor-index", "opcode-index", "subgraph-inputs", "buffer-index", "huge-tensor",
        "zero-scale"])
def test_validation_names_the_problem(models, model_tools, tmp_path, edit, message):
    bad = model_tools.rewrite_model(Path(models["int8_io_uint8"]).read_bytes(), edit)
    with pytest.raises(ModelFileError, match=message):
        read_flat_model(bad)
    path = tmp_path / "bad.tflite"
    path.write_bytes(bad)
    result = CliRunner().invoke(device_cli, ["info", str(path)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and str(path) in result.stderr


def test_a_constant_of_the_wrong_size_is_rejected(models, model_tools):
    data = Path(models["float32"]).read_bytes()
    flat = read_flat_model(data)
    const = next(t for t in flat.main.tensors if t.buffer_size > 8 and t.dtype == "FLOAT32")

    def edit(m) -> None:
        m.buffers[const.buffer].data = m.buffers[const.buffer].data[:-4]

    with pytest.raises(ModelFileError, match=rf"tensor {const.index} of subgraph 0 has shape .* but its "
                                             rf"buffer {const.buffer} holds {const.buffer_size - 4:,} bytes"):
        read_flat_model(model_tools.rewrite_model(data, edit))


def test_every_test_model_passes_validation(models):
    for name in models.paths:
        read_flat_model(models[name])


def test_an_operator_error_at_invoke_is_an_inference_error(models, model_tools):
    """A Flatten whose computed shape no longer matches its input fails at invoke(), not before."""
    data = Path(models["float32"]).read_bytes()
    flat = read_flat_model(data)
    pack = next(o for o in flat.main.operators if o.opcode == "PACK")
    const = next(flat.main.tensors[i] for i in pack.inputs if flat.main.tensors[i].buffer_size)
    value = int(np.frombuffer(flat.tensor_data(const), np.int32)[0])

    def edit(m) -> None:
        m.buffers[const.buffer].data = np.frombuffer(np.array([value + 1], np.int32).tobytes(), np.uint8)

    runner = ModelRunner(model_tools.rewrite_model(data, edit))
    runner.set_inputs(np.zeros((1, 28, 28, 1), np.float32))
    with pytest.raises(InferenceError, match=r"the model failed running: .*reshape") as err:
        runner.invoke()
    assert "\n" not in str(err.value)


def test_an_operator_fed_the_wrong_element_type_is_rejected(models, model_tools):
    """A SOFTMAX of an int8 model rewired to the float input crashed LiteRT at invoke (found by fuzzing)."""
    data = Path(models["int8"]).read_bytes()
    flat = read_flat_model(data)
    softmax = next(o for o in flat.main.operators if o.opcode == "SOFTMAX")
    source = flat.main.inputs[0]

    def edit(m) -> None:
        m.subgraphs[0].operators[softmax.index].inputs = np.array([source], np.int32)

    with pytest.raises(ModelFileError, match=rf"operator {softmax.index} \(SOFTMAX\) of subgraph 0 takes "
                                             rf"FLOAT32 \(tensor {source}\) but gives INT8"):
        read_flat_model(model_tools.rewrite_model(data, edit))


def test_load_helper_runs_as_a_script_and_reports_a_crash(models, model_tools):
    """The helper is a real module run by path: only the runtime imported, a crash is answered."""
    import struct
    import subprocess
    import sys

    helper = Path(loadcheck.__file__).with_name("_load_helper.py")
    bad = _crashing_model(models, model_tools)
    good = Path(models["int8"]).read_bytes()
    request = b"".join(struct.pack("<QB", len(m), 1) + m for m in (good, bad))
    proc = subprocess.run([sys.executable, str(helper), "ai_edge_litert.interpreter", ""], input=request,
                          capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    answers = [struct.unpack("<i", proc.stdout[i:i + 4])[0] for i in (0, 5)]
    assert answers == [0, 11] and proc.stdout[4:5] == b"R"
