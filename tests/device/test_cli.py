"""The edgeq-device command, run as a user runs it (a subprocess): output, JSON and one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest
from edgeq_device import evaluate, model_preprocess


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_no_or_bad_arguments_print_usage(cli, models):
    proc = cli()
    assert "Usage: edgeq-device" in proc.stdout + proc.stderr
    assert "bench" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    proc = cli("bench")
    assert proc.returncode == 2 and "Usage:" in proc.stderr and "Missing argument 'MODEL'" in proc.stderr
    proc = cli("frobnicate")
    assert proc.returncode == 2 and "No such command" in proc.stderr


def test_bad_option_values_are_one_line(cli, models):
    assert _one_error_line(cli("bench", models["float32"], "--runs", "0")) == \
        "error: --runs: 0 is not in the range x>=1."
    line = _one_error_line(cli("eval", models["float32"], "x", "--size", "28by28"))
    assert line == ("error: --size: expected WIDTHxHEIGHT (received '28by28'); give two positive integers, "
                    "e.g. --size 224x224")
    assert _one_error_line(cli("bench", models["float32"], "--runtime", "onnx")) == \
        "error: --runtime: unknown value (received 'onnx'); use one of: litert, tflite-runtime, tensorflow"
    assert _one_error_line(cli("eval", models["float32"], "x", "--color", "cmyk")) == \
        "error: --color: unknown value (received 'cmyk'); use one of: rgb, l"


@pytest.mark.slow
def test_bad_model_files(cli, models, tmp_path):
    text = tmp_path / "readme.tflite"
    text.write_text("hello")
    data = models["float32"].read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[: len(data) // 3])
    for args, expected in (
        (("info", tmp_path / "missing.tflite"), "model file not found"),
        (("bench", tmp_path / "missing.tflite"), "model file not found"),
        (("eval", tmp_path / "missing.tflite", tmp_path), "model file not found"),
        (("bench", text), "not a TFLite model"),
        (("info", cut), "truncated"),
        (("bench", cut), "truncated"),
    ):
        line = _one_error_line(cli(*args))
        assert expected in line and "model" in line


@pytest.mark.slow
def test_data_errors(cli, models, small_test_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_test_dir, data)
    (data / "2" / "corrupt.png").write_bytes(b"not an image")
    line = _one_error_line(cli("eval", models["int8"], data, "-q"))
    assert "cannot read image" in line and "corrupt.png" in line and "--skip-unreadable" in line

    eleven = tmp_path / "eleven"
    shutil.copytree(small_test_dir, eleven)
    shutil.copytree(small_test_dir / "5", eleven / "extra")
    line = _one_error_line(cli("eval", models["int8"], eleven, "-q"))
    assert "11 class folders but the model has 10 outputs" in line

    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    line = _one_error_line(cli("eval", models["int8"], small_test_dir, "--labels", labels, "-q"))
    assert "3 labels for a model with 10 outputs" in line
    line = _one_error_line(cli("eval", models["int8"], tmp_path / "nowhere", "-q"))
    assert "image folder not found" in line


def test_delegate_errors(cli, models, tmp_path):
    line = _one_error_line(cli("bench", models["edgetpu"], "--runs", "1"))
    assert "edgetpu-custom-op" in line and "--delegate edgetpu" in line
    line = _one_error_line(cli("bench", models["float32"], "--delegate", tmp_path / "libnothere.so"))
    assert "cannot load delegate library" in line and "libnothere.so" in line
    line = _one_error_line(cli("bench", models["int8_io_uint8"], "--delegate", "edgetpu",
                               "--delegate-option", "device=usb:0"))
    assert "static shapes" in line


@pytest.mark.slow
def test_json_output_atomic_and_never_overwrites(cli, models, tmp_path):
    out = tmp_path / "bench.json"
    proc = cli("bench", models["int8"], "--runs", "5", "--min-secs", "0", "--warmup", "1",
               "--threads", "1", "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert "latency" in proc.stdout and f"wrote {out}" in proc.stderr
    first = json.loads(out.read_text())
    assert first["schema"] == "edgeq-device/bench/1" and first["latency"]["count"] >= 5
    assert first["threads"] == 1 and first["runtime"] == "litert"
    line = _one_error_line(cli("bench", models["int8"], "--runs", "3", "--min-secs", "0", "--json", out))
    assert "output file exists" in line and "--force" in line
    assert json.loads(out.read_text()) == first
    proc = cli("bench", models["int8"], "--runs", "3", "--min-secs", "0", "--json", out, "--force")
    assert proc.returncode == 0 and json.loads(out.read_text())["latency"]["count"] >= 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left

    proc = cli("info", models["meta_uint8"], "--json", "-")
    assert proc.returncode == 0 and proc.stderr == ""
    info = json.loads(proc.stdout)
    assert info["schema"] == "edgeq-device/info/2" and info["metadata"]["mode"] == "int8"


def test_eval_with_flags_for_a_model_from_elsewhere(cli, models, small_test_dir):
    model = models["int8_io_uint8"]
    proc = cli("eval", model, small_test_dir, "--size", "28x28", "--color", "l", "--mean", "0",
               "--std", "255", "--workers", "2", "-q", "--json", "-")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    expected = evaluate(model, small_test_dir,
                        preprocess=model_preprocess(model, size=(28, 28), color="l", mean=0, std=255))
    assert d["schema"] == "edgeq-device/eval/1"
    assert d["top1"] == pytest.approx(expected.top1, abs=0) and d["images"] == 200
    assert d["workers"] == 2


def test_mean_std_take_one_number_or_r_g_b(cli, models, small_test_dir):
    """--mean/--std parse as on `edgeq` (tests/edgeq/test_cli_errors.py): one number or R,G,B, else one line."""
    line = _one_error_line(cli("eval", models["float32"], small_test_dir, "--mean", "1,2", "-q"))
    assert line == ("error: --mean: expected one number or three (R,G,B) (received '1,2'); "
                    "give e.g. --mean 127.5 or --mean 123.7,116.3,103.5")
    # Three values reach the preprocessing, which refuses them for this grayscale model.
    line = _one_error_line(cli("eval", models["float32"], small_test_dir, "--mean", "0,0,0", "--std", "255", "-q"))
    assert line == ("error: mean: three values given for a one-channel (grayscale) input (received (0.0, 0.0, 0.0)); "
                    "give one number, or use color='rgb'")


def test_human_output(cli, models, small_test_dir):
    proc = cli("info", models["int8_io_int8"])
    assert proc.returncode == 0 and "INT8" in proc.stdout and "CONV_2D" in proc.stdout
    proc = cli("eval", models["meta_uint8"], small_test_dir, "--limit", "50", env={"EDGEQ_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "top-1" in proc.stdout and "50 images" in proc.stdout and "labels     from metadata" in proc.stdout
    assert "evaluating" in proc.stderr  # progress goes to stderr


def test_json_path_that_cannot_be_written(cli, models, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    for command in (("info", models["int8"]), ("bench", models["int8"], "--runs", "1")):
        target = blocker / "sub" / "info.json"
        line = _one_error_line(cli(*command, "--json", target))
        assert line == (f"error: --json: cannot write the file: {blocker} is a file, not a folder "
                        f"(received '{target}'); choose another path, or move that file away")
    line = _one_error_line(cli("info", models["int8"], "--json", tmp_path, "--force"))
    assert line == (f"error: --json: cannot write the file: it is a folder (received '{tmp_path}'); "
                    "give a file name (inside it, or elsewhere)")


def test_json_into_a_folder_without_permission(cli, models, tmp_path):
    """A read-only folder; as root, the command runs without capabilities so that its mode applies."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv (util-linux) to drop root's capabilities")
        prefix = ("setpriv", "--bounding-set=-all", "--inh-caps=-all")
    line = _one_error_line(cli("info", models["int8"], "--json", locked / "i.json", prefix=prefix))
    assert line == (f"error: --json: cannot write the file: no permission to write in {locked} "
                    f"(received '{locked / 'i.json'}'); choose a folder you can write to, or change its permissions")
    assert list(locked.iterdir()) == []


def test_unexpected_exception_is_one_line_unless_verbose():
    """A bug (an exception outside the error tree) gives one line and exit 70; --verbose shows the traceback."""
    import click
    from click.testing import CliRunner
    from edgeq_device.cli.clikit import EXIT_INTERNAL, ErrorBoundaryGroup

    @click.group(cls=ErrorBoundaryGroup)
    def tool() -> None:
        """A command group with the edgeq error boundary."""

    @tool.command()
    def boom() -> None:
        """Fail the way a bug fails."""
        raise KeyError("missing")

    result = CliRunner().invoke(tool, ["boom"])
    assert result.exit_code == EXIT_INTERNAL == 70
    assert result.stderr.splitlines() == ["internal error: KeyError: 'missing' (a bug in edgeq; run "
                                          "`tool --verbose ...` for the traceback and report it)"]
    assert "Traceback" not in result.output
    for args, env in ((["--verbose", "boom"], {}), (["boom"], {"EDGEQ_VERBOSE": "1"})):
        result = CliRunner().invoke(tool, args, env=env)
        assert isinstance(result.exception, KeyError)  # raised on: Python prints the traceback
