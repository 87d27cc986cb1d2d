"""The `edgeq convert` command: what it writes, and one-line errors for bad input."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner
from edgeq_device.model.metadata import read_metadata

from edgeq.cli import cli


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.slow
def test_convert_all_modes_writes_files_and_table(model_file, mnist_train, tmp_path):
    code, out, err = _run("convert", model_file, "--mode", "all", "--calib", mnist_train, "--samples", "8",
                          "-o", tmp_path)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.glob("*.tflite"))
    assert names == sorted(f"digits_{m}.tflite" for m in ("float32", "dynamic", "float16", "int8", "int16x8"))
    for mode in ("float32", "int8"):
        assert f"digits_{mode}.tflite" in out
    assert read_metadata(tmp_path / "digits_int8.tflite").labels == tuple(str(i) for i in range(10))


def test_convert_int8_uint8_io_batch1_and_json(model_file, mnist_train, tmp_path):
    code, out, err = _run("convert", model_file, "--mode", "int8", "--io", "uint8", "--batch-size", "1",
                          "--calib", mnist_train, "--samples", "8", "-o", tmp_path, "--json", "-")
    assert code == 0, err
    import json

    payload = json.loads(out)
    (res,) = payload["results"]
    assert res["io"] == "uint8" and res["inputs"][0]["dtype"] == "uint8"
    assert res["inputs"][0]["shape"] == [1, 28, 28, 1]


def test_output_exists_without_force(model_file, tmp_path):
    target = tmp_path / "digits_float32.tflite"
    target.write_bytes(b"keep me")
    code, _, err = _run("convert", model_file, "--mode", "float32", "-o", tmp_path)
    assert code == 2
    assert err.strip().splitlines() == [f"error: --output: output file exists (received '{target}'); "
                                        "choose another --output or pass --force to overwrite"]
    assert target.read_bytes() == b"keep me"
    code, _, err = _run("convert", model_file, "--mode", "float32", "-o", tmp_path, "--force")
    assert code == 0 and target.read_bytes()[4:8] == b"TFL3"


@pytest.mark.parametrize(("args", "message"), [
    (["convert", "missing.keras"], "error: model: model path not found (received 'missing.keras')"),
    (["convert", "{model}", "--mode", "int8"], "error: calibration: mode 'int8' needs calibration data"),
    (["convert", "{model}", "--mode", "int2"], "error: --mode: unknown value (received 'int2')"),
    (["convert", "{model}", "--mode", "int8", "--calib", "{empty}"], "error: calibration: no image files in folder"),
    (["convert", "{model}", "--mode", "int8", "--calib", "{train}", "--size", "32x32"],
     "error: calibration: sample shape (32, 32, 1) does not match input 'image' shape (28, 28, 1)"),
    (["convert", "{model}", "--mode", "int8", "--calib", "{train}", "--color", "rgb"],
     "3 channels where the model takes 1"),
    (["convert", "{model}", "--size", "big"], "error: --size: expected WIDTHxHEIGHT (received 'big')"),
])
def test_bad_input_is_one_line(args, message, model_file, mnist_train, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(model=model_file, empty=empty, train=mnist_train) for a in args] + ["-o", str(tmp_path / "o")]
    code, _, err = _run(*args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err


@pytest.mark.slow
def test_console_script_error_has_no_traceback(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "edgeq.cli", "convert", str(tmp_path / "nope.h5")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: model: model path not found")


def test_convert_target_edgetpu_reports_mapping(model_file, mnist_train, tmp_path):
    code, out, err = _run("convert", model_file, "--target", "edgetpu", "--calib", mnist_train, "--samples", "8",
                          "-o", tmp_path)
    assert code == 0, err
    assert (tmp_path / "digits_int8_uint8io.tflite").exists()
    assert "predicted Edge TPU mapping:" in out
    assert "edgetpu_compiler" in out


NATIVE_LOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [\w.]+:\d+\]|absl::InitializeLog|fully_quantize: |"
                        r"cuInit|cpu_feature_guard|rebuild TensorFlow with the appropriate compiler flags", re.M)


def _convert_process(model_file, mnist_train, out, *extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEQ_VERBOSE")}
    env.update(EDGEQ_PROGRESS="1", FORCE_COLOR="1")  # progress on, drawn as on a terminal
    return subprocess.run([sys.executable, "-m", "edgeq.cli", "convert", str(model_file), "--mode", "int8",
                           "--calib", str(mnist_train), "--samples", "8", "-o", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=300, umask=0o022)


@pytest.mark.slow  # two `edgeq convert` processes, each importing TensorFlow
def test_tensorflow_native_logs_hidden_unless_verbose(model_file, mnist_train, tmp_path):
    proc = _convert_process(model_file, mnist_train, tmp_path / "quiet")
    assert proc.returncode == 0, proc.stderr
    assert not NATIVE_LOG.search(proc.stderr), proc.stderr
    assert "calibrating" in proc.stderr  # the progress bar (Python's sys.stderr) still shows
    assert "digits_int8.tflite" in proc.stdout
    assert stat.S_IMODE((tmp_path / "quiet" / "digits_int8.tflite").stat().st_mode) == 0o644

    proc = _convert_process(model_file, mnist_train, tmp_path / "verbose", "--verbose")
    assert proc.returncode == 0, proc.stderr
    assert NATIVE_LOG.search(proc.stderr)
    assert "calibrating" in proc.stderr


@pytest.mark.slow
def test_convert_table_cuts_no_mode_on_an_80_column_terminal(model_file, mnist_train, tmp_path):
    result = CliRunner().invoke(cli, ["convert", str(model_file), "--mode", "all", "--calib", str(mnist_train),
                                      "--samples", "8", "-o", str(tmp_path)],
                                env={"COLUMNS": "80", "FORCE_COLOR": "1"}, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stdout)
    assert max(len(ln) for ln in text.splitlines()) <= 80 and "…" not in text
    for mode in ("float32", "dynamic", "float16", "int8", "int16x8"):
        assert re.search(rf"^│ {mode} +│.* digits_{mode}\.tflite +│$", text, re.M), text
