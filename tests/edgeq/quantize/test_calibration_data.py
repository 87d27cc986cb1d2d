"""Bad calibration data: NaN/Inf refused before the converter (Inf crashed it), unscaled values
and fewer samples than asked warned about once, and no temporary folder left behind."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import edgeq
from edgeq.cli import cli
from edgeq.errors import (
    CalibrationError,
    DataError,
    FewerSamplesWarning,
    NonFiniteCalibrationError,
    UnscaledCalibrationWarning,
)
from edgeq.inputs.models import export_folder, load_model


@pytest.fixture(scope="module")
def tiny():
    """8x8x1 image model whose first layer is a convolution (it does not rescale its input)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1), name="image"), keras.layers.Conv2D(4, 3, activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(3)], name="tiny")


@pytest.fixture(scope="module")
def rescaling():
    """The same, with a Rescaling(1/255) layer first: it takes 0..255 pixels itself."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([keras.Input((8, 8, 1), name="image"), keras.layers.Rescaling(1 / 255),
                             keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.Flatten(),
                             keras.layers.Dense(3)], name="rescaling")


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """A private temporary folder for tempfile (and TMPDIR), to see what a conversion leaves there."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert tempfile.gettempdir() == str(tmp)
    return tmp


def _folders(tmp: Path) -> list[str]:
    """Folders left in ``tmp`` (TensorFlow's autograph source files are removed at exit, not folders)."""
    return sorted(p.name for p in tmp.iterdir() if p.is_dir())


def _pixels(n: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (n, 8, 8, 1)).astype(np.float32)


@pytest.mark.parametrize(("value", "kind"), [(np.inf, "Inf"), (np.nan, "NaN"), (-np.inf, "-Inf")])
def test_non_finite_sample_is_refused_by_index_and_leaves_no_temp_folder(tiny, private_tmp, value, kind):
    x = _pixels()
    x[7, 2, 3, 0] = value
    with pytest.raises(NonFiniteCalibrationError) as info:
        edgeq.convert(tiny, "int8", calibration=x)
    err = info.value
    assert isinstance(err, CalibrationError) and isinstance(err, DataError)
    assert err.index == 7 and err.input_name == "image"
    text = str(err)
    assert len(text.splitlines()) == 1
    assert text.startswith(f"calibration: sample 7 holds {kind} at element (2, 3, 0) ")
    assert "drop or repair that sample" in text
    assert _folders(private_tmp) == []


def test_float64_beyond_float32_range_is_refused_as_inf(tiny):
    x = _pixels().astype(np.float64)
    x[4, 0, 0, 0] = 1e39  # Inf once cast to the model's float32
    with pytest.raises(NonFiniteCalibrationError, match="sample 4 holds Inf"):
        edgeq.convert(tiny, "int16x8", calibration=x)


def test_index_is_the_row_of_the_array_when_a_subset_is_drawn(tiny):
    x = _pixels(300)
    order = list(range(300))
    random.Random(5).shuffle(order)  # ArraySource's seeded subset of 40
    row = order[10]
    x[row, 1, 1, 0] = np.nan
    x[row, 5, 5, 0] = np.nan
    with pytest.raises(NonFiniteCalibrationError) as info:
        edgeq.convert(tiny, "int8", calibration=x, samples=40, seed=5)
    assert info.value.index == row
    assert f"sample {row} holds NaN at element (1, 1, 0) (2 non-finite values in it)" in str(info.value)


def test_multi_input_error_names_the_input(tmp_path):
    keras.utils.set_random_seed(0)
    a = keras.Input((6,), name="features")
    b = keras.Input((4, 4, 1), name="patch")
    x = keras.layers.Concatenate()([keras.layers.Dense(4)(a), keras.layers.Flatten()(b)])
    model = keras.Model([a, b], keras.layers.Dense(2)(x), name="two")
    rng = np.random.default_rng(0)
    data = {"features": rng.normal(size=(12, 6)).astype(np.float32),
            "patch": rng.uniform(size=(12, 4, 4, 1)).astype(np.float32)}
    data["patch"][3, 0, 1, 0] = np.inf
    with pytest.raises(NonFiniteCalibrationError, match=r"sample 3 of input 'patch' holds Inf at element \(0, 1, 0\)"):
        edgeq.convert(model, "int8", calibration=data)


@pytest.fixture(scope="module")
def tf_keras_model():
    """A tf_keras model: its conversion exports a SavedModel into an edgeq-export-* folder."""
    import tf_keras
    tf_keras.utils.set_random_seed(0)
    return tf_keras.Sequential([tf_keras.Input((8, 8, 1), name="image"), tf_keras.layers.Conv2D(2, 3),
                                tf_keras.layers.Flatten(), tf_keras.layers.Dense(3)], name="legacy")


@pytest.mark.slow
def test_tf_keras_export_folder_is_removed_on_error_and_on_interrupt(tf_keras_model, private_tmp):
    x = _pixels()
    x[7, 0, 0, 0] = np.inf
    with pytest.raises(NonFiniteCalibrationError, match="sample 7 "):
        edgeq.convert(tf_keras_model, "int8", calibration=x, batch_size=1)
    assert _folders(private_tmp) == []

    seen: list[list[str]] = []

    def interrupted():
        for i in range(10):
            if i == 3:
                seen.append(_folders(private_tmp))  # Ctrl-C while calibrating
                raise KeyboardInterrupt
            yield _pixels(1, seed=i)[0]

    with pytest.raises(KeyboardInterrupt):
        edgeq.convert(tf_keras_model, "int8", calibration=interrupted)
    assert any(name.startswith(f"edgeq-export-{os.getpid()}-") for name in seen[0]), seen
    assert _folders(private_tmp) == []
    result = edgeq.convert(tf_keras_model, "int8", calibration=_pixels(), samples=20, batch_size=1)
    assert result.calibration_samples == 20
    assert _folders(private_tmp) == []


def test_debug_refuses_nan_too(tiny, private_tmp):
    x = _pixels()
    x[2, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteCalibrationError, match="sample 2 holds NaN"):
        edgeq.debug(tiny, x, samples=20)
    assert _folders(private_tmp) == []


@pytest.mark.slow
def test_budget_search_stops_on_bad_calibration_data(tiny):
    """Before: int8 and int16x8 failed as candidates and float16 was chosen silently."""
    x = _pixels(40)
    x[7, 0, 0, 0] = np.inf
    y = np.arange(40) % 3
    with pytest.raises(NonFiniteCalibrationError, match="sample 7 holds Inf"):
        edgeq.convert(tiny, "int8", calibration=x, max_drop=1.0, evaluation=(_pixels(30, seed=1), y[:30]),
                      progress=False)


def _caught(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [w for w in caught if issubclass(w.category, (UnscaledCalibrationWarning, FewerSamplesWarning))]


@pytest.mark.slow
def test_raw_pixels_for_a_model_that_does_not_rescale_warn_once(tiny):
    raw = np.round(_pixels() * 255)
    _, caught = _caught(edgeq.convert, tiny, "all", calibration=raw, samples=20)  # int8 and int16x8 calibrate
    assert [w.category for w in caught] == [UnscaledCalibrationWarning]
    text = str(caught[0].message)
    assert "calibration values span 0..255 and the model does not rescale its input" in text
    assert "x / 255.0" in text and len(text.splitlines()) == 1
    assert caught[0].filename == __file__  # points at the caller's line, not into edgeq


@pytest.mark.parametrize("data", [
    pytest.param(_pixels(), id="scaled-0-1"),
    pytest.param(_pixels() * 2 - 1, id="scaled-minus1-1"),
    pytest.param((np.round(_pixels() * 255) - 120.0) / 58.0, id="standardized"),
])
def test_processed_data_gives_no_warning(tiny, data):
    _, caught = _caught(edgeq.convert, tiny, "int8", calibration=data.astype(np.float32), samples=20)
    assert caught == []


def test_a_model_that_rescales_itself_gives_no_warning(rescaling):
    raw = np.round(_pixels() * 255)
    result, caught = _caught(edgeq.convert, rescaling, "int8", calibration=raw, samples=20)
    assert caught == [] and result.calibration_samples == 20


def test_image_folder_with_pixels_left_unscaled_names_the_flags(mnist_train):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1), name="image"), keras.layers.Conv2D(2, 3),
                              keras.layers.Flatten(), keras.layers.Dense(10)], name="digits")
    pre = edgeq.Preprocess(size=(28, 28), color="l", std=1.0)
    _, caught = _caught(edgeq.convert, model, "int8", calibration=mnist_train, preprocess=pre, samples=10)
    assert [w.category for w in caught] == [UnscaledCalibrationWarning]
    assert "span 0..255" in str(caught[0].message) and "--mean/--std" in str(caught[0].message)


@pytest.mark.parametrize(("model", "expected"), [
    ([keras.layers.Conv2D(2, 3)], False),
    ([keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(2, 3)], True),
    ([keras.layers.Normalization(mean=0.0, variance=1.0), keras.layers.Conv2D(2, 3)], True),
    ([keras.layers.Resizing(6, 6), keras.layers.Rescaling(1 / 127.5, -1), keras.layers.Conv2D(2, 3)], True),
    ([keras.layers.Conv2D(2, 3), keras.layers.Rescaling(2.0)], False),
    ([keras.Sequential([keras.layers.Rescaling(1 / 255)]), keras.layers.Conv2D(2, 3)], True),
])
def test_rescales_input_looks_before_the_first_weighted_layer(model, expected):
    m = keras.Sequential([keras.Input((8, 8, 1)), *model])
    assert load_model(m).rescales_input() is expected


def test_functional_division_counts_as_rescaling():
    inp = keras.Input((8, 8, 1))
    m = keras.Model(inp, keras.layers.Conv2D(2, 3)(inp / 255.0))
    assert load_model(m).rescales_input() is True


def test_fewer_samples_than_asked_says_so(tiny):
    result, caught = _caught(edgeq.convert, tiny, "int8", calibration=_pixels(12), samples=500)
    assert [str(w.message) for w in caught] == ["asked for 500 calibration samples, arrays has 12; using 12"]
    assert result.calibration_samples == 12

    def stream():
        for i in range(9):
            yield _pixels(1, seed=i)[0]

    result, caught = _caught(edgeq.convert, tiny, "int16x8", calibration=stream, samples=50)
    assert [str(w.message) for w in caught] == ["asked for 50 calibration samples, iterable gave 9; using 9"]
    assert result.calibration_samples == 9
    _, caught = _caught(edgeq.convert, tiny, "int8", calibration=_pixels(12), samples=12)
    assert caught == []


@pytest.fixture(scope="module")
def tiny_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny.save(path)
    return path


@pytest.mark.slow
def test_cli_inf_is_one_error_line_exit_2_no_crash(tiny_file, tmp_path):
    """Before: the process died by SIGSEGV (exit -11) inside the converter."""
    x = _pixels()
    x[7, 2, 3, 0] = np.inf
    np.save(tmp_path / "bad.npy", x)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp), EDGEQ_PROGRESS="0")
    proc = subprocess.run([sys.executable, "-m", "edgeq.cli", "convert", str(tiny_file), "--mode", "int8",
                           "--calib", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: calibration: sample 7 holds Inf at element (2, 3, 0) "), last
    assert _folders(tmp) == [] and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_cli_warnings_are_one_line_each(tiny_file, tmp_path):
    np.save(tmp_path / "raw.npy", np.round(_pixels(30) * 255))
    result = CliRunner().invoke(cli, ["convert", str(tiny_file), "--mode", "all", "--calib",
                                      str(tmp_path / "raw.npy"), "--samples", "100", "-o", str(tmp_path / "o")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"warning: asked for 100 calibration samples, {tmp_path / 'raw.npy'} has 30; using 30",
        lines[1],
    ]
    assert lines[1].startswith("warning: calibration values span 0..255 and the model does not rescale its input")


def test_cli_compare_with_nan_exits_2(tiny_file, tmp_path):
    x = _pixels()
    x[11, 0, 0, 0] = np.nan
    np.save(tmp_path / "bad.npy", x)
    np.savez(tmp_path / "eval.npz", x=_pixels(9, seed=2), y=np.arange(9) % 3)
    result = CliRunner().invoke(cli, ["compare", str(tiny_file), "--calib", str(tmp_path / "bad.npy"),
                                      "--eval", str(tmp_path / "eval.npz"), "--modes", "int8", "--no-store",
                                      "--threads", "1", "-o", str(tmp_path / "report")],
                                catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: calibration: sample 11 holds NaN")


def test_export_folders_of_dead_processes_are_swept(private_tmp):
    """A process that dies (SIGKILL, a crash) cannot clean up; the next export removes its folder."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    old = time.time() - 3600
    names = {"dead_old": f"edgeq-export-{proc.pid}-abc", "dead_recent": f"edgeq-export-{proc.pid}-def",
             "alive_old": f"edgeq-export-{os.getppid()}-ghi", "mine_old": f"edgeq-export-{os.getpid()}-jkl",
             "unnamed_old": "edgeq-export-x8k2p0qz", "other_old": "keep-me"}
    for key, name in names.items():
        (private_tmp / name).mkdir()
        (private_tmp / name / "saved_model.pb").write_bytes(b"")
        if key.endswith("_old"):
            os.utime(private_tmp / name, (old, old))
    fresh = Path(export_folder())
    assert fresh.parent == private_tmp and fresh.name.startswith(f"edgeq-export-{os.getpid()}-")
    fresh.rmdir()
    assert sorted(_folders(private_tmp)) == sorted(n for k, n in names.items() if k != "dead_old")


@pytest.mark.slow
def test_qat_refuses_inf_in_training_data_before_training_and_in_calibration():
    """Before: the Inf poisoned the learnt quantization ranges and the int8 export died by SIGSEGV."""
    import tf_keras

    from edgeq.quantize.qat.train import qat

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((8, 8, 1), name="image"), tf_keras.layers.Conv2D(2, 3),
                                 tf_keras.layers.Flatten(), tf_keras.layers.Dense(3)], name="q")
    x, y = _pixels(16), np.arange(16) % 3
    bad = x.copy()
    bad[5, 1, 2, 0] = np.inf
    with pytest.raises(NonFiniteCalibrationError, match=r"^train: sample 5 holds Inf at element \(1, 2, 0\)"):
        qat(model, (bad, y), epochs=1, batch_size=16)
    result = qat(model, (x, y), epochs=1, batch_size=16)
    with pytest.raises(NonFiniteCalibrationError, match=r"^calibration: sample 5 holds Inf"):
        result.convert(calibration=bad, samples=16)


@pytest.mark.slow
def test_a_qat_model_keeps_its_rescaling_layer_visible():
    """QAT wraps layers (QuantizeWrapper) and puts a fake-quantizer with weights first."""
    import tf_keras

    from edgeq.quantize.qat.train import qat

    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.Input((8, 8, 1), name="image"), tf_keras.layers.Rescaling(1 / 255),
                                 tf_keras.layers.Conv2D(2, 3), tf_keras.layers.Flatten(), tf_keras.layers.Dense(3)])
    raw = np.round(_pixels(16) * 255)
    result = qat(model, (raw, np.arange(16) % 3), epochs=1, batch_size=16)
    assert load_model(result.model).rescales_input() is True
    _, caught = _caught(result.convert, samples=16)
    assert caught == []
