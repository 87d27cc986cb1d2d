"""One clean line for every bad option value and unwritable output of `edgeq`, and custom Keras objects.

Each error case asserts exit status 2, exactly one line on stderr, no traceback, and
that the line names the option, what was received and the fix.
"""

from __future__ import annotations

import importlib.util
import sys

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli import cli
from edgeq.errors import EdgeqError, InvalidArgumentError, ModelLoadError, OutputError

MODE_FIX = "use one of: float32, dynamic, float16, int8, int16x8, int4, all"
COMPARE_MODE_FIX = "use one of: float32, dynamic, float16, int8, int16x8, int4, qat, clustered, pruned, all"


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _one_line(*args) -> str:
    code, out, err = _run(*args)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


# --- enum options: a validated choice that lists the valid values ----------------------------------


@pytest.mark.parametrize(("args", "line"), [
    (["compare", "m.keras", "--calib", "c", "--eval", "e", "--modes", "int2"],
     f"error: --modes: unknown value (received 'int2'); {COMPARE_MODE_FIX}"),
    (["compare", "m.keras", "--calib", "c", "--eval", "e", "--modes", "int8,int2"],
     f"error: --modes: unknown value 'int2' (received 'int8,int2'); {COMPARE_MODE_FIX}"),
    (["compare", "m.keras", "--calib", "c", "--eval", "e", "--io", "int16"],
     "error: --io: unknown value (received 'int16'); use one of: float, int8, uint8"),
    (["compare", "m.keras", "--calib", "c", "--eval", "e", "--prefer", "speed"],
     "error: --prefer: unknown value (received 'speed'); use one of: size, latency"),
    (["convert", "m.keras", "--mode", "int2"], f"error: --mode: unknown value (received 'int2'); {MODE_FIX}"),
    (["convert", "m.keras", "--mode", "int8", "--mode", "fp16"],
     f"error: --mode: unknown value (received 'fp16'); {MODE_FIX}"),
    (["convert", "m.keras", "--io", "int2"],
     "error: --io: unknown value (received 'int2'); use one of: float, int8, uint8, int16"),
    (["convert", "m.keras", "--target", "coral"], "error: --target: unknown value (received 'coral'); use one of: edgetpu, mcu"),
    (["convert", "m.keras", "--color", "cmyk"], "error: --color: unknown value (received 'cmyk'); use one of: rgb, l"),
    (["qat", "m.keras", "--train", "t", "--io", "int16"],
     "error: --io: unknown value (received 'int16'); use one of: float, int8, uint8"),
    (["analyze", "m.tflite", "--target", "tpu"], "error: --target: unknown value (received 'tpu'); use one of: edgetpu, mcu"),
    (["deploy", "m.tflite", "--runtime", "onnx"],
     "error: --runtime: unknown value (received 'onnx'); use one of: litert, tflite-runtime, tensorflow"),
    (["history", "--mode", "int2"],
     "error: --mode: unknown value (received 'int2'); use one of: float32, dynamic, float16, int8, int16x8, int4, unknown"),
])
def test_enum_option_lists_valid_values(args, line):
    assert _one_line(*args) == line


def test_several_modes_need_one_for_target(model_file, tmp_path):
    line = _one_line("convert", model_file, "--mode", "int8,float16", "--target", "edgetpu", "-o", tmp_path)
    assert line == ("error: --mode: --target and --max-drop take one mode (received 'int8,float16'); "
                    "give --mode int8 alone")


def test_mode_takes_repeats_and_comma_lists(model_file, tmp_path):
    code, out, err = _run("convert", model_file, "--mode", "float32,float16", "-m", "dynamic", "--mode", "float16",
                          "-o", tmp_path)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == [
        "digits_dynamic.tflite", "digits_float16.tflite", "digits_float32.tflite"]
    assert out.index("float32") < out.index("float16") < out.index("dynamic")  # in the order given


def test_library_rejects_unknown_modes_with_the_documented_error(model_file):
    from edgeq import compare, convert

    with pytest.raises(InvalidArgumentError, match=r"mode: unknown value \(received 'int2'\); use one of: "
                                                   r"float32, dynamic, float16, int8, int16x8, int4$"):
        convert(model_file, ["float32", "int2"])
    with pytest.raises(InvalidArgumentError, match=r"modes: unknown value \(received 'int2'\)"):
        compare(model_file, calibration="c", evaluation="e", modes=["int2"])


# --- preprocessing flags: parsed as edgeq-device parses them ------------------------------------------

IMAGE_COMMANDS = (["convert", "m.keras"], ["qat", "m.keras", "--train", "t"], ["debug", "m.keras", "--calib", "c"],
                  ["compare", "m.keras", "--calib", "c", "--eval", "e"])


@pytest.mark.parametrize(("flag", "value"), [
    ("--mean", "1,2"), ("--mean", "abc"), ("--std", "1,2,3,4"), ("--std", "inf"), ("--size", "28by28"),
    ("--size", "0x28"),
])
def test_preprocessing_flags_parse_as_on_edgeq_device(flag, value):
    from edgeq_device.cli.commands import cli as device_cli

    if flag == "--size":
        line = f"error: --size: expected WIDTHxHEIGHT (received '{value}'); give two positive integers, e.g. --size 224x224"
    else:
        line = (f"error: {flag}: expected one number or three (R,G,B) (received '{value}'); "
                f"give e.g. {flag} 127.5 or {flag} 123.7,116.3,103.5")
    for command in IMAGE_COMMANDS:
        assert _one_line(*command, flag, value) == line
    for command in (["eval", "m.tflite", "data"], ["bench", "m.tflite"]):
        result = CliRunner().invoke(device_cli, [*command, flag, value], catch_exceptions=False)
        assert result.exit_code == 2 and result.stderr.splitlines() == [line]


def test_mean_std_take_one_number_or_r_g_b(model_file, tmp_path):
    from edgeq_device.model.metadata import read_metadata

    code, _, err = _run("convert", model_file, "--mode", "float32", "--mean", "127.5", "--std", "127.5", "-o", tmp_path)
    assert code == 0, err
    written = read_metadata(tmp_path / "digits_float32.tflite").preprocess
    assert (written.mean, written.std) == ((127.5,), (127.5,))
    # Three values reach the preprocessing, which refuses them for the grayscale digits model (as edgeq-device does).
    line = _one_line("convert", model_file, "--mode", "float32", "--mean", "0,0,0", "--std", "255", "-o", tmp_path)
    assert line == ("error: mean: three values given for a one-channel (grayscale) input (received (0.0, 0.0, 0.0)); "
                    "give one number, or use color='rgb'")


# --- output paths that cannot be written: one line naming the path and the fix, before any work ----


@pytest.fixture
def blocker(tmp_path):
    """A regular file standing where a folder would have to be."""
    f = tmp_path / "afile"
    f.write_text("not a folder")
    return f


@pytest.mark.parametrize(("args", "option", "received"), [
    (["convert", "{model}", "--mode", "float32", "-o", "{out}"], "--output", "{out}"),
    (["convert", "{model}", "--mode", "float32", "-o", "{out}.tflite"], "--output", "{sub}"),
    (["convert", "{model}", "--mode", "float32", "-o", "{tmp}/ok", "--json", "{out}.json"], "--json", "{out}.json"),
    (["qat", "{model}", "--train", "t", "-o", "{out}"], "--output", "{out}"),
    (["debug", "{model}", "--calib", "c", "--plot", "{out}.png"], "--plot", "{out}.png"),
    (["debug", "{model}", "--calib", "c", "--json", "{out}.json"], "--json", "{out}.json"),
    (["analyze", "m.tflite", "--json", "{out}.json"], "--json", "{out}.json"),
    (["history", "--json", "{out}.json"], "--json", "{out}.json"),
    (["deploy", "m.tflite", "--report", "{out}.json"], "--report", "{out}.json"),
    (["compare", "{model}", "--calib", "c", "--eval", "e", "-o", "{out}"], "--output", "{out}"),
    (["compare", "{model}", "--calib", "c", "--eval", "e", "-o", "{tmp}/ok", "--db", "{out}.db"], "--db", "{out}.db"),
    (["store", "import", "x.json", "--db", "{out}.db"], "--db", "{out}.db"),
])
def test_unwritable_output_is_one_line(args, option, received, model_file, blocker, tmp_path):
    out = blocker / "sub" / "x"
    names = {"model": model_file, "out": out, "sub": out.parent, "tmp": tmp_path}
    line = _one_line(*[a.format(**names) for a in args])
    verb = "cannot write the file" if "." in received else "cannot write in it"
    assert line == (f"error: {option}: {verb}: {blocker} is a file, not a folder (received "
                    f"'{received.format(**names)}'); choose another path, or move that file away")
    assert not (tmp_path / "ok").exists()  # refused before any work


def test_output_under_a_broken_link(model_file, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    line = _one_line("convert", model_file, "--mode", "float32", "-o", link / "out")
    assert line == (f"error: --output: cannot write in it: {link} is a link to {tmp_path / 'gone'}, which does "
                    f"not exist (received '{link / 'out'}'); create what it points to, or choose another path")


def test_output_name_too_long(model_file, tmp_path):
    """An OSError met while checking or writing becomes an OutputError too (here ENAMETOOLONG)."""
    long = tmp_path / ("x" * 300 + ".json")
    line = _one_line("convert", model_file, "--mode", "float32", "-o", tmp_path / "o", "--json", long)
    assert line == (f"error: --json: cannot write the file: the name is too long (received '{long}'); "
                    "choose a shorter name")
    from edgeq_device.results.fileio import atomic_write_bytes

    with pytest.raises(OutputError, match="the name is too long"):
        atomic_write_bytes(tmp_path / ("y" * 300), b"data")


def test_output_that_is_a_folder(model_file, tmp_path):
    line = _one_line("convert", model_file, "--mode", "float32", "-o", tmp_path / "o", "--json", tmp_path, "--force")
    assert line == (f"error: --json: cannot write the file: it is a folder (received '{tmp_path}'); "
                    "give a file name (inside it, or elsewhere)")


def test_conversion_result_save_raises_output_error(model_file, blocker):
    from edgeq import convert

    result = convert(model_file, "float32")
    target = blocker / "models" / "digits.tflite"
    with pytest.raises(OutputError) as info:
        result.save(target)
    assert isinstance(info.value, EdgeqError) and isinstance(info.value, OSError)
    assert str(info.value) == (f"path: cannot write the file: {blocker} is a file, not a folder "
                               f"(received '{target}'); choose another path, or move that file away")


# --- models with custom layers -------------------------------------------------------------------

LAYERS = '''
import keras


class Scale(keras.layers.Layer):
    """Multiplies by a constant factor."""

    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
'''


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory):
    """A Keras 3 model with a custom layer, saved as .keras and .h5; the layer's source file beside."""
    folder = tmp_path_factory.mktemp("custom")
    source = folder / "scale_layers.py"
    source.write_text(LAYERS)
    spec = importlib.util.spec_from_file_location("edgeq_test_scale_layers", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), name="x"), module.Scale(3.0), keras.layers.Dense(2)], name="scaled")
    model.save(folder / "scaled.keras")
    model.save(folder / "scaled.h5")
    x = np.random.default_rng(0).random((4, 6), dtype=np.float32)
    return folder, source, x, np.asarray(model(x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_custom_layer_is_named_and_custom_objects_loads_it(custom_model, suffix, tmp_path):
    from edgeq_device.tasks.evaluation import predict_arrays

    folder, source, x, expected = custom_model
    path = folder / f"scaled{suffix}"
    line = _one_line("convert", path, "--mode", "float32", "-o", tmp_path)
    assert line == (f"error: model: the model uses custom class Scale that Keras cannot find (received '{path}'); "
                    "give it: load_model(path, custom_objects={'Scale': Scale}), or on the command line "
                    "--custom-objects FILE.py (the Python file that defines it)")
    code, _, err = _run("convert", path, "--mode", "float32", "--custom-objects", source, "-o", tmp_path)
    assert code == 0, err
    written = tmp_path / "scaled_float32.tflite"
    np.testing.assert_allclose(np.asarray(predict_arrays(written, x)), expected, rtol=1e-5, atol=1e-6)
    # The registration ends with the command: the next one without --custom-objects fails again.
    assert "custom class Scale" in _one_line("convert", path, "--mode", "float32", "-o", tmp_path / "again")


def test_custom_objects_python_api(custom_model):
    from edgeq.inputs.models import custom_objects_from_file, load_model

    folder, source, _, _ = custom_model
    with pytest.raises(ModelLoadError, match="custom class Scale"):
        load_model(folder / "scaled.keras")
    objects = custom_objects_from_file(source)
    assert list(objects) == ["Scale"]  # defined there; the imported keras module is not taken
    loaded = load_model(folder / "scaled.keras", custom_objects=objects)
    assert loaded.kind == "keras3" and loaded.num_outputs == 1


def test_custom_objects_file_errors(custom_model, tmp_path):
    folder, _, _, _ = custom_model
    line = _one_line("convert", folder / "scaled.keras", "--custom-objects", tmp_path / "none.py")
    assert line == (f"error: --custom-objects: file not found (received '{tmp_path / 'none.py'}'); "
                    "give the .py file that defines the model's custom layers")
    broken = tmp_path / "broken.py"
    broken.write_text("import keras\nraise RuntimeError('half-written file')\n")
    line = _one_line("convert", folder / "scaled.keras", "--custom-objects", broken)
    assert line == (f"error: --custom-objects: importing it failed: RuntimeError: half-written file "
                    f"(received '{broken}'); fix the file so that `python FILE.py` runs")
    assert "broken" not in sys.modules
    declared = tmp_path / "declared.py"
    declared.write_text(LAYERS + "\ncustom_objects = {'Scale': Scale}\n")
    code, _, err = _run("convert", folder / "scaled.keras", "--mode", "float32", "--custom-objects", declared,
                        "-o", tmp_path)
    assert code == 0, err


def test_custom_layer_of_a_tf_keras_model(tmp_path):
    """The same for a tf_keras (Keras 2) model saved as .h5."""
    import tf_keras
    source = tmp_path / "tfk_layers.py"
    source.write_text(LAYERS.replace("import keras", "import tf_keras as keras").replace("Scale", "TfkScale"))
    spec = importlib.util.spec_from_file_location("edgeq_test_tfk_layers", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = tf_keras.Sequential([tf_keras.Input((6,), name="x"), module.TfkScale(3.0), tf_keras.layers.Dense(2)],
                                name="tfk")
    path = tmp_path / "tfk.h5"
    model.save(path)
    line = _one_line("convert", path, "--mode", "float32", "-o", tmp_path / "out")
    assert "custom class TfkScale that Keras cannot find" in line and "--custom-objects FILE.py" in line
    code, _, err = _run("convert", path, "--mode", "float32", "--custom-objects", source, "-o", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "tfk_float32.tflite").read_bytes()[4:8] == b"TFL3"


def test_custom_objects_on_other_commands(custom_model, tmp_path):
    """--custom-objects is the same option on debug (and qat, compare) as on convert."""
    folder, source, _, _ = custom_model
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(1).random((8, 6), dtype=np.float32))
    args = ("debug", folder / "scaled.keras", "--calib", calib, "--samples", "8", "--json", tmp_path / "d.json")
    assert "custom class Scale" in _one_line(*args)
    code, _, err = _run(*args, "--custom-objects", source)
    assert code == 0, err
    assert (tmp_path / "d.json").stat().st_size > 0
