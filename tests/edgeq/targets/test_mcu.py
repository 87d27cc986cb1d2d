"""The mcu target on small real models: TFLM's own interpreter, boards, C export, refusals.

The models are made here with the TFLite converter (a few ops each) or taken from the
session's digits CNN; the third-party ones and the trained ones are in test_mcu_models.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tflite_micro")

from click.testing import CliRunner
from edgeq_device.errors import RuntimeCrashError

from edgeq.cli import cli
from edgeq.errors import InvalidArgumentError, OutputExistsError
from edgeq.targets.mcu.boards import BOARDS, board_fit, get_board, load_boards
from edgeq.targets.mcu.check import check_mcu
from edgeq.targets.mcu.export_c import export_c
from edgeq.targets.mcu.ops import CUSTOM_CALLS, RESOLVER_CALLS
from edgeq.targets.mcu.run import run_tflm

RECORDED = re.compile(r"Arena allocation total (\d+) bytes")


def recorded_total(model: bytes, arena: int, x: np.ndarray) -> int | None:
    """TFLM's recording allocator's printed total with ``arena`` bytes, read in a fresh process (None: failed)."""
    code = (
        "import sys, numpy as np\n"
        "from tflite_micro.python.tflite_micro import runtime\n"
        "m = open(sys.argv[1], 'rb').read(); x = np.load(sys.argv[2])\n"
        "it = runtime.Interpreter.from_bytes(m, arena_size=int(sys.argv[3]))\n"
        "it.set_input(x, 0); it.invoke(); it.print_allocations()\n")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "m.tflite").write_bytes(model)
        np.save(Path(tmp) / "x.npy", x)
        res = subprocess.run([sys.executable, "-c", code, str(Path(tmp) / "m.tflite"), str(Path(tmp) / "x.npy"),
                              str(arena)], capture_output=True, text=True)
    m = RECORDED.search(res.stderr)
    return int(m.group(1)) if res.returncode == 0 and m else None


def _topk_model() -> bytes:
    """An int8 model ending in TOPK_V2, an op TFLM does not have."""
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 16], tf.float32)])
        def f(self, x):  # type: ignore[no-untyped-def]
            return tf.math.top_k(x * 2.0 + 1.0, k=3)[0]

    m = M()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.f.get_concrete_function()], m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.random((1, 16), np.float32)] for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return bytes(conv.convert())


@pytest.fixture(scope="module")
def digits_mcu(digits_cnn, digits_train_arrays):  # type: ignore[no-untyped-def]
    """The session's digits CNN converted with target='mcu' (int8 I/O), and 16 real digits as int8 input."""
    import edgeq

    x, y = digits_train_arrays
    res = edgeq.convert(digits_cnn, "int8", calibration=(x, y), samples=64, io="int8", target="mcu", progress=False)
    d = res.inputs[0]
    xq = np.clip(np.round(x[:16] / d.scale[0]) + d.zero_point[0], -128, 127).astype(np.int8)
    return res, xq


def test_resolver_table_names_tflm_builtin_ops():
    """Every op of the resolver table is a BuiltinOperator of TFLM's schema, each method an Add<Name>."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    names = {k for k in vars(fb.BuiltinOperator) if not k.startswith("_")}
    assert set(RESOLVER_CALLS) <= names, set(RESOLVER_CALLS) - names
    assert all(re.fullmatch(r"Add[A-Z][A-Za-z0-9]*", m) for m in [*RESOLVER_CALLS.values(), *CUSTOM_CALLS.values()])
    assert len(set(RESOLVER_CALLS.values())) == len(RESOLVER_CALLS)


def test_digits_convert_for_mcu_arena_is_the_recorded_total_and_outputs_bit_exact(digits_mcu):
    res, xq = digits_mcu
    rep = res.mcu
    assert res.target == "mcu" and rep.supported and not rep.unsupported
    assert {"CONV_2D", "FULLY_CONNECTED", "SOFTMAX"} <= set(rep.ops)
    # The stated arena is what TFLM's recording allocator prints, run again in another process...
    assert recorded_total(res.model_bytes, rep.arena_bytes, xq[:1]) == rep.arena_bytes
    # ... and one byte less does not run.
    assert recorded_total(res.model_bytes, rep.smallest_arena - 1, xq[:1]) is None
    assert rep.model_bytes == res.size_bytes and rep.flash_bytes > rep.model_bytes
    # On real digits too, TFLM's outputs equal LiteRT's reference kernels bit for bit.
    real = check_mcu(res.model_bytes, [xq])
    assert real.reference is not None and real.reference.bit_exact and real.reference.samples == 16
    assert res.to_dict()["mcu"]["arena_bytes"] == rep.arena_bytes
    assert "microcontroller (TFLM)" in str(res)


def test_an_op_tflm_lacks_is_named_not_a_crash(tmp_path):
    model = _topk_model()
    rep = check_mcu(model)
    assert not rep.supported and [op for op, _ in rep.unsupported] == ["TOPK_V2"]
    assert "TOPK_V2" in rep.summary() and rep.arena_bytes == 0
    path = tmp_path / "topk.tflite"
    path.write_bytes(model)
    out = CliRunner().invoke(cli, ["analyze", str(path), "--target", "mcu", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["mcu"]["unsupported"][0][0] == "TOPK_V2"
    with pytest.raises(InvalidArgumentError, match="TOPK_V2"):
        export_c(model, tmp_path / "c", "topk")
    assert not (tmp_path / "c").exists()
    res = CliRunner().invoke(cli, ["export", str(path), "-o", str(tmp_path / "c")])
    assert res.exit_code == 2 and "TOPK_V2" in res.output and "Traceback" not in res.output


def test_a_segfault_in_tflm_is_a_clear_error_in_this_process(digits_mcu):
    """TFLM does not verify a model's structure: an operator input index out of range kills its process."""
    import flatbuffers
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    res, xq = digits_mcu
    m = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(res.model_bytes, 0))
    op = m.subgraphs[0].operators[0]
    op.inputs = [op.inputs[0], 1_000_000, *op.inputs[2:]]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    with pytest.raises(RuntimeCrashError) as err:
        run_tflm(bytes(b.Output()), [xq[:1]], max_arena=1 << 20)
    assert err.value.signal == 11 and "SIGSEGV" in str(err.value)


def test_boards_fit_by_how_much_and_reserves():
    pico = get_board("Pico")
    assert pico.ram_bytes == 264 * 1024 and pico.flash_bytes == 2 * 1024 * 1024
    fit = board_fit(pico, 100_000, 500_000, reserve_ram=64 * 1024)
    assert fit.fits and fit.ram_headroom == 264 * 1024 - 100_000 - 64 * 1024
    short = board_fit(pico, 250_000, 500_000, reserve_ram=64 * 1024)
    assert not short.fits and short.ram_headroom == 264 * 1024 - 250_000 - 64 * 1024 < 0
    assert "does not fit" in short.summary() and "short" in short.summary()
    esp = board_fit(get_board("esp32-s3-n8r8"), 600 * 1024, 1000)
    assert not esp.fits and "external RAM" in esp.summary()
    assert {"arduino-nano-33-ble-sense", "pico", "pico2", "esp32-s3-n8r8", "stm32h747i-disco", "stm32f746g-disco",
            "sparkfun-edge"} <= set(BOARDS)
    with pytest.raises(InvalidArgumentError, match="reserve_ram"):
        board_fit(pico, 1, 1, reserve_ram=-1)
    with pytest.raises(InvalidArgumentError, match=r"unknown board.*pico2"):
        get_board("pico3")


def test_boards_from_toml(tmp_path):
    f = tmp_path / "boards.toml"
    f.write_text('[boards.my-m4]\nram_kib = 128\nflash_kib = 512\nnote = "STM32L4"\n[boards.pico]\n'
                 'ram_kib = 200\nflash_kib = 2048\n')
    boards = load_boards(f)
    assert boards["my-m4"].ram_bytes == 128 * 1024 and boards["pico"].ram_bytes == 200 * 1024
    assert get_board("MY-M4", f).flash_bytes == 512 * 1024
    f.write_text("[boards.bad]\nram_kib = 0\nflash_kib = 1\n")
    with pytest.raises(InvalidArgumentError, match="ram_kib"):
        load_boards(f)
    f.write_text("not toml [")
    with pytest.raises(InvalidArgumentError, match="boards file"):
        load_boards(f)


def test_cli_analyze_mcu_board_json(digits_mcu, tmp_path):
    res, _ = digits_mcu
    path = res.save(tmp_path)
    out = CliRunner().invoke(cli, ["analyze", str(path), "--target", "mcu", "--board", "pico", "--reserve-ram",
                                   "200K", "--format", "json"])
    assert out.exit_code == 0, out.output
    fit = json.loads(out.output)["mcu"]["fit"]
    assert fit["reserve_ram"] == 200 * 1024 and fit["board"]["name"] == "pico"
    assert fit["ram_headroom"] == 264 * 1024 - 200 * 1024 - fit["ram_needed"]
    bad = CliRunner().invoke(cli, ["analyze", str(path), "--board", "pico"])
    assert bad.exit_code == 2 and "--target mcu" in bad.output
    bad = CliRunner().invoke(cli, ["analyze", str(path), "--target", "mcu", "--reserve-ram", "lots"])
    assert bad.exit_code == 2 and "--reserve-ram" in bad.output


def test_export_c_compiles_with_arm_gcc_and_the_symbol_is_the_model(digits_mcu, tmp_path):
    res, _ = digits_mcu
    done = res.export_c(tmp_path, "digits cnn")
    names = sorted(p.name for p in done.files)
    assert names == ["digits_cnn_main.cc", "digits_cnn_model.c", "digits_cnn_model.h", "digits_cnn_op_resolver.h"]
    header = (tmp_path / "digits_cnn_model.h").read_text()
    assert f"#define DIGITS_CNN_TENSOR_ARENA_SIZE {res.mcu.arena_needed}\n" in header
    resolver = (tmp_path / "digits_cnn_op_resolver.h").read_text()
    calls = re.findall(r"resolver\.(Add\w+)\(\)", resolver)
    assert calls == [RESOLVER_CALLS[op] for op in sorted(res.mcu.ops)]
    assert f"MicroMutableOpResolver<{len(calls)}>" in resolver
    with pytest.raises(OutputExistsError):
        res.export_c(tmp_path, "digits cnn")
    assert len(res.export_c(tmp_path, "digits cnn", overwrite=True).files) == 4
    gcc = shutil.which("arm-none-eabi-gcc")
    if gcc is None:
        pytest.skip("arm-none-eabi-gcc is not installed (tests/setup_system.sh installs gcc-arm-none-eabi)")
    obj = tmp_path / "m.o"
    subprocess.run([gcc, "-std=c11", "-mcpu=cortex-m4", "-mthumb", "-Os", "-Wall", "-Wextra", "-Werror", "-c",
                    str(tmp_path / "digits_cnn_model.c"), "-o", str(obj)], check=True)
    nm = subprocess.run(["arm-none-eabi-nm", "-S", str(obj)], capture_output=True, text=True, check=True).stdout
    symbols = {line.split()[3]: (int(line.split()[0], 16), int(line.split()[1], 16)) for line in nm.splitlines()}
    address, size = symbols["g_digits_cnn_model"]
    assert size == res.size_bytes and address % 16 == 0
    assert symbols["g_digits_cnn_model_len"][1] == 4


def test_cli_export_refuses_existing_files_unless_force(digits_mcu, tmp_path):
    res, _ = digits_mcu
    path = res.save(tmp_path / "digits.tflite")
    runner = CliRunner()
    first = runner.invoke(cli, ["export", str(path), "--format", "c", "-o", str(tmp_path / "c")])
    assert first.exit_code == 0, first.output
    assert "arena" in first.output and (tmp_path / "c" / "digits_model.c").is_file()
    before = (tmp_path / "c" / "digits_model.c").stat().st_mtime_ns
    again = runner.invoke(cli, ["export", str(path), "-o", str(tmp_path / "c")])
    assert again.exit_code == 2 and "--force" in again.output
    assert (tmp_path / "c" / "digits_model.c").stat().st_mtime_ns == before
    forced = runner.invoke(cli, ["export", str(path), "-o", str(tmp_path / "c"), "--force"])
    assert forced.exit_code == 0, forced.output


def test_compression_refuses_a_model_with_full_int8_weights(digits_mcu):
    from edgeq.targets.mcu.compress import compress_for_tflm

    res, _ = digits_mcu
    with pytest.raises(InvalidArgumentError, match="distinct values"):
        compress_for_tflm(res.model_bytes)
    with pytest.raises(InvalidArgumentError, match="max_bits"):
        compress_for_tflm(res.model_bytes, max_bits=8)


def test_target_mcu_refuses_what_a_microcontroller_cannot_take(digits_cnn):
    import edgeq

    with pytest.raises(InvalidArgumentError, match="int8"):
        edgeq.convert(digits_cnn, "float16", target="mcu")
    with pytest.raises(InvalidArgumentError, match="batch"):
        edgeq.convert(digits_cnn, "int8", target="mcu", batch_size=4)


@pytest.mark.slow
def test_compare_has_an_mcu_column_with_the_board(digits_cnn, mnist_train, mnist_test):
    """compare(target='mcu'): each mode's arena, flash, TFLM support and fit; the table shows them."""
    import edgeq
    from edgeq.report.tables import table_rows

    comp = edgeq.compare(digits_cnn, calibration=mnist_train, evaluation=mnist_test, modes=["float32", "int8"],
                         eval_samples=64, threads=[1], runs=3, min_secs=0.01, max_secs=0.2, store=None,
                         progress=False, target="mcu", mcu_board=get_board("arduino-nano-33-ble-sense"))
    rows = {r.name: r for r in comp.rows}
    assert rows["keras"].mcu is None
    for name in ("float32", "int8"):
        m = rows[name].mcu
        assert m is not None and m["supported"] and m["board"] == "arduino-nano-33-ble-sense"
        rep = check_mcu(comp.results[name].model_bytes, reference=False)
        assert m["arena_bytes"] == rep.arena_needed and m["flash_bytes"] == rep.flash_bytes
        assert m["fits"] == (rep.arena_needed <= 256 * 1024 and rep.flash_bytes <= 1024 * 1024)
    assert rows["int8"].mcu["arena_bytes"] < rows["float32"].mcu["arena_bytes"]  # int8 activations: a quarter
    header, cells = table_rows(comp.to_dict())
    assert header[-4:] == ["MCU arena KiB", "MCU flash KiB", "TFLM", "fits arduino-nano-33-ble-sense"]
    int8_cells = next(c for c in cells if c[0] == "int8")
    assert int8_cells[-4] == f"{rows['int8'].mcu['arena_bytes'] / 1024:.1f}" and int8_cells[-2] == "yes"
    again = type(comp).from_dict(comp.to_dict())
    assert again.row("int8").mcu == rows["int8"].mcu


@pytest.mark.slow
def test_cli_convert_target_mcu_with_a_board(digits_cnn, mnist_train, tmp_path):
    path = tmp_path / "digits.keras"
    digits_cnn.save(path)
    out = CliRunner().invoke(cli, ["convert", str(path), "--calib", str(mnist_train), "--samples", "32", "--target",
                                   "mcu", "--board", "sparkfun-edge", "--reserve-flash", "900K", "-o", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "runs all" in out.output and "arena:" in out.output
    written = tmp_path / "digits_int8_int8io.tflite"
    assert written.is_file()
    rep = check_mcu(written.read_bytes(), reference=False)
    flash_left = 1024 * 1024 - rep.flash_bytes - 900 * 1024
    assert f"sparkfun-edge: {'fits' if flash_left >= 0 else 'does not fit'}" in out.output
    assert f"flash {abs(flash_left) / 1024:.1f} KiB {'left' if flash_left >= 0 else 'short'}" in out.output


def test_a_model_bigger_than_the_arenas_tried_says_so(digits_mcu):
    res, _ = digits_mcu
    rep = check_mcu(res.model_bytes, max_arena=2000)
    assert not rep.supported and rep.unsupported[0][0] == "arena" and "2,000 bytes" in rep.unsupported[0][1]
