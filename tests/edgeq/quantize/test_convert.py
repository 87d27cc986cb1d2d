"""edgeq.convert on real models, checked in the LiteRT interpreter."""

from __future__ import annotations

import json
from dataclasses import replace

import keras
import numpy as np
import pytest
from edgeq_device.model.metadata import read_metadata
from edgeq_device.run.runtime import ModelRunner

import edgeq
from edgeq.errors import (
    CalibrationError,
    DataError,
    InvalidArgumentError,
    ModelLoadError,
    OutputExistsError,
    QuantizationError,
)
from edgeq.quantize.converter import ConversionResult, IOType, Mode

# Largest absolute error allowed against the Keras model, as a fraction of the
# float output's range over the test batch. float32 is the same math; float16 and
# dynamic-range keep float activations but round weights to int8 (per channel);
# int8 also rounds every activation to 1/255 of its range; int16x8 rounds
# activations to 1/65535 but its weights are int8 like the others.
TOLERANCE = {
    (Mode.FLOAT32, IOType.FLOAT): 1e-5,
    (Mode.FLOAT16, IOType.FLOAT): 5e-3,
    (Mode.DYNAMIC, IOType.FLOAT): 5e-2,
    (Mode.INT8, IOType.FLOAT): 8e-2,
    (Mode.INT8, IOType.INT8): 8e-2,
    (Mode.INT8, IOType.UINT8): 8e-2,
    (Mode.INT16X8, IOType.FLOAT): 8e-2,
}
CASES = list(TOLERANCE)
IO_DTYPE = {IOType.FLOAT: "float32", IOType.INT8: "int8", IOType.UINT8: "uint8"}


def _seed() -> None:
    keras.utils.set_random_seed(0)


@pytest.fixture(scope="module")
def cnn():
    """Sequential CNN on 28x28x1 with enough weights (a 64k-parameter dense layer) to show size ratios."""
    _seed()
    return keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ], name="cnn")


@pytest.fixture(scope="module")
def two_input():
    """Functional model with two inputs and two outputs."""
    _seed()
    a = keras.Input((12,), name="features")
    b = keras.Input((8, 8, 1), name="patch")
    x = keras.layers.Concatenate()([keras.layers.Dense(16, activation="relu")(a),
                                    keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(b))])
    x = keras.layers.Dense(32, activation="relu")(x)
    return keras.Model([a, b], [keras.layers.Dense(3, name="cls")(x), keras.layers.Dense(1, name="reg")(x)],
                       name="two_input")


@pytest.fixture(scope="module")
def residual():
    """Depthwise conv + batch norm + residual add (the MobileNet block shape)."""
    _seed()
    inp = keras.Input((16, 16, 3), name="rgb")
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.ReLU(6.0)(y)
    y = keras.layers.Conv2D(8, 1)(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, keras.layers.Dense(5)(x), name="residual")
    # Non-trivial batch-norm statistics, so folding them is really tested.
    bn = next(lyr for lyr in model.layers if isinstance(lyr, keras.layers.BatchNormalization))
    rng = np.random.default_rng(1)
    gamma, beta, mean, var = (w.copy() for w in bn.get_weights())
    bn.set_weights([gamma * 1.5, beta + 0.1, rng.normal(0, 0.2, mean.shape), var + rng.uniform(0.5, 1.5, var.shape)])
    return model


def _mnist_batch(folder, n=16):
    from edgeq_device.model.preprocess import Preprocess
    from edgeq_device.run.images import iter_images, list_image_folder

    listing = list_image_folder(folder).sample(n, seed=3)
    return np.stack([a for a, _ in iter_images(listing, Preprocess(size=(28, 28), color="l"))])


def _check_all_modes(model, calibration, inputs, keras_inputs):
    ref = model(keras_inputs, training=False)
    ref = [np.asarray(r) for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
    sizes = {}
    for mode, io in CASES:
        result = edgeq.convert(model, mode, calibration=calibration, samples=64, io=io)
        assert result.mode is mode and result.io is io
        runner = ModelRunner(result.model_bytes)
        for d in runner.input_details + runner.output_details:
            assert np.dtype(d["dtype"]).name == IO_DTYPE[io], (mode, io, d["name"], d["dtype"])
        outs = [runner.run({k: v[i:i + 1] for k, v in inputs.items()}) for i in range(len(next(iter(inputs.values()))))]
        for j, r in enumerate(ref):
            got = np.concatenate([o[j] for o in outs])
            span = float(r.max() - r.min()) or 1.0
            err = float(np.abs(got - r).max()) / span
            assert err <= TOLERANCE[(mode, io)], f"{mode.value}/{io.value} output {j}: {err:.2e} of range"
        meta = read_metadata(result.model_bytes)
        assert meta is not None and meta.mode == mode.value and meta.io == io.value
        sizes[(mode, io)] = result.size_bytes
    return sizes


@pytest.mark.slow
def test_sequential_every_mode_close_and_smaller(cnn, mnist_train):
    x = _mnist_batch(mnist_train)
    sizes = _check_all_modes(cnn, mnist_train, {"image": x}, x)
    f32 = sizes[(Mode.FLOAT32, IOType.FLOAT)]
    assert 3.0 <= f32 / sizes[(Mode.INT8, IOType.FLOAT)] <= 4.2
    assert 3.0 <= f32 / sizes[(Mode.DYNAMIC, IOType.FLOAT)] <= 4.2
    assert 1.7 <= f32 / sizes[(Mode.FLOAT16, IOType.FLOAT)] <= 2.1


@pytest.mark.slow
def test_two_inputs_two_outputs_every_mode(two_input):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(100, 12)).astype(np.float32)
    patch = rng.uniform(size=(100, 8, 8, 1)).astype(np.float32)
    calib = {"features": feats[:80], "patch": patch[:80]}
    inputs = {"features": feats[80:], "patch": patch[80:]}
    _check_all_modes(two_input, calib, inputs, [feats[80:], patch[80:]])


@pytest.mark.slow
def test_depthwise_batchnorm_residual_every_mode(residual):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(90, 16, 16, 3)).astype(np.float32)
    _check_all_modes(residual, x[:74], {"rgb": x[74:]}, x[74:])


@pytest.mark.slow
def test_convert_all_returns_one_result_per_mode(cnn, mnist_train, tmp_path):
    results = edgeq.convert_all(cnn, calibration=mnist_train, samples=16, io="uint8")
    assert [r.mode for r in results] == list(edgeq.MODES)  # int4 only when named
    assert {r.mode: r.io for r in results}[Mode.INT8] is IOType.UINT8
    paths = [r.save(tmp_path) for r in results]
    assert len({p.name for p in paths}) == len(edgeq.MODES)
    assert all(p.stat().st_size == r.size_bytes for p, r in zip(paths, results))


def test_convert_with_a_list_of_modes_still_works_and_points_to_convert_all(cnn):
    with pytest.warns(DeprecationWarning, match=r"use convert_all\(model, modes=\.\.\.\)") as caught:
        results = edgeq.convert(cnn, ["dynamic", "float32"])
    assert [r.mode for r in results] == [Mode.DYNAMIC, Mode.FLOAT32]
    assert caught[0].filename == __file__  # points at the caller's line, not into edgeq
    with pytest.raises(InvalidArgumentError, match=r"^modes: unknown value \(received 'int2'\)"):
        edgeq.convert_all(cnn, ["float32", "int2"])
    with pytest.raises(InvalidArgumentError, match=r"^modes: no modes to convert"):
        edgeq.convert_all(cnn, [])


def test_result_summary_is_versioned_reads_back_and_prints_plainly(cnn, mnist_train, tmp_path):
    result = edgeq.convert(cnn, "int8", calibration=mnist_train, samples=8, io="int8")
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["schema"] == "edgeq/conversion/1"
    saved = result.save(tmp_path).read_bytes()
    back = ConversionResult.from_dict(data, saved)
    assert replace(back, conversion_seconds=result.conversion_seconds) == result
    assert back.metadata.labels == result.metadata.labels and back.to_dict() == data
    text = str(result)
    assert text.splitlines()[0] == (f"cnn: int8, int8 I/O, {result.size_bytes / 1024:.1f} KiB "
                                   f"({result.compressed_size / 1024:.1f} KiB gzip -9)")
    assert "input" in text and "float ops: none" in text
    assert "np." not in text and "np." not in repr(result)
    html = result._repr_html_()
    assert html.startswith("<div><b>cnn: int8") and "<table>" in html
    with pytest.raises(InvalidArgumentError, match=r"^model_bytes: "):
        ConversionResult.from_dict(data, saved[:-1])
    with pytest.raises(InvalidArgumentError, match=r"^data: .*received 'edgeq/conversion/99'"):
        ConversionResult.from_dict({**data, "schema": "edgeq/conversion/99"}, saved)
    with pytest.raises(InvalidArgumentError, match=r"^data: the conversion summary is incomplete"):
        ConversionResult.from_dict({k: v for k, v in data.items() if k != "inputs"}, saved)


def test_batch_size_fixes_dynamic_batch(cnn, mnist_train):
    dynamic = edgeq.convert(cnn, "float32")
    fixed = edgeq.convert(cnn, "int8", calibration=mnist_train, samples=8, batch_size=1, io="int8")
    assert dynamic.inputs[0].shape[0] == -1
    assert fixed.inputs[0].shape == (1, 28, 28, 1)
    assert fixed.outputs[0].shape == (1, 10)


@pytest.mark.slow
def test_model_from_files_keras_h5_and_saved_model(cnn, tmp_path):
    import tf_keras

    keras_path = tmp_path / "m.keras"
    cnn.save(keras_path)
    r1 = edgeq.convert(str(keras_path), "float32")
    assert r1.source_name == "m"
    tk = tf_keras.Sequential([tf_keras.Input((6,), name="v"), tf_keras.layers.Dense(4, activation="relu"),
                              tf_keras.layers.Dense(2)])
    h5 = tmp_path / "m.h5"
    tk.save(h5)
    x = np.random.default_rng(0).normal(size=(1, 6)).astype(np.float32)
    r2 = edgeq.convert(h5, "float32")
    np.testing.assert_allclose(ModelRunner(r2.model_bytes).run(x)[0], tk(x).numpy(), atol=1e-5)
    sm = tmp_path / "sm"
    cnn.export(sm, format="tf_saved_model", verbose=False)
    r3 = edgeq.convert(sm, "dynamic")
    img = np.random.default_rng(1).uniform(size=(1, 28, 28, 1)).astype(np.float32)
    np.testing.assert_allclose(ModelRunner(r3.model_bytes).run(img)[0], cnn(img).numpy(), atol=0.05)
    r4 = edgeq.convert(sm, "float32", batch_size=1)
    assert r4.inputs[0].shape == (1, 28, 28, 1)


@pytest.mark.slow
def test_calibration_from_tf_data_generator_and_npz(cnn, mnist_train, tmp_path):
    import tensorflow as tf

    x = _mnist_batch(mnist_train, 32)
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(32, np.int64))).batch(8)
    r1 = edgeq.convert(cnn, "int8", calibration=ds, samples=32)
    assert r1.calibration_samples == 32
    r2 = edgeq.convert(cnn, "int8", calibration=lambda: (a for a in x), samples=20)
    assert r2.calibration_samples == 20
    np.savez(tmp_path / "calib.npz", x=x, y=np.arange(32) % 10)
    r3 = edgeq.convert(cnn, "int16x8", calibration=tmp_path / "calib.npz", samples=10)
    assert r3.calibration_samples == 10
    np.save(tmp_path / "calib.npy", x)
    assert edgeq.convert(cnn, "int8", calibration=str(tmp_path / "calib.npy"), samples=5).calibration_samples == 5


def test_metadata_carries_preprocessing_and_labels(cnn, mnist_train):
    result = edgeq.convert(cnn, "int8", calibration=mnist_train, samples=8)
    meta = read_metadata(result.model_bytes)
    assert meta.labels == tuple(str(i) for i in range(10))
    assert meta.preprocess.size == (28, 28) and meta.preprocess.channels == 1
    assert meta.source == "cnn" and meta.edgeq_version == edgeq.__version__
    assert meta.extra["calibration_samples"] == 8


@pytest.mark.slow
def test_seeded_sampling_is_reproducible(cnn, mnist_train):
    a = edgeq.convert(cnn, "int8", calibration=mnist_train, samples=10, seed=5)
    b = edgeq.convert(cnn, "int8", calibration=mnist_train, samples=10, seed=5)
    c = edgeq.convert(cnn, "int8", calibration=mnist_train, samples=10, seed=6)
    from edgeq_device.model.flatbuffer import read_flat_model

    def activation_scales(r):
        return [t.quantization.scale for t in read_flat_model(r.model_bytes).main.tensors if not t.is_constant]

    assert activation_scales(a) == activation_scales(b)
    assert activation_scales(a) != activation_scales(c)


# --- bad input: a clear error naming the argument, what was received and the fix ---------------

def test_missing_model_path(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model: model path not found .*nope\.keras.*give an existing"):
        edgeq.convert(tmp_path / "nope.keras", "float32")


def test_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "notes.keras"
    bad.write_text("not a model")
    with pytest.raises(ModelLoadError, match=r"cannot load the model file"):
        edgeq.convert(bad, "float32")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\0" * 10)
    with pytest.raises(ModelLoadError, match=r"not a Keras model file.*\.keras or \.h5"):
        edgeq.convert(other, "float32")


def test_unknown_mode_and_bad_io(cnn):
    with pytest.raises(InvalidArgumentError, match=r"mode: unknown value \(received 'int2'\); use one of: float32"):
        edgeq.convert(cnn, "int2")
    with pytest.raises(InvalidArgumentError, match=r"io: I/O type 'uint8' is not available in mode 'float16'"):
        edgeq.convert(cnn, "float16", io="uint8")


def test_int8_without_calibration(cnn):
    for mode in ("int8", "int16x8"):
        with pytest.raises(CalibrationError, match=rf"calibration: mode '{mode}' needs calibration data"):
            edgeq.convert(cnn, mode)


def test_empty_calibration_folder(cnn, tmp_path):
    with pytest.raises(DataError, match=r"calibration: no image files in folder"):
        edgeq.convert(cnn, "int8", calibration=tmp_path)


def test_corrupt_images_skipped_with_count_and_all_corrupt_is_an_error(cnn, mnist_train, tmp_path, capsys):
    import shutil

    folder = tmp_path / "calib" / "0"
    folder.mkdir(parents=True)
    for p in sorted((mnist_train / "0").glob("*.png"))[:6]:
        shutil.copy(p, folder / p.name)
    for i in range(3):
        (folder / f"broken{i}.png").write_bytes(b"\x89PNG not really")
    src = edgeq.ImageFolder(tmp_path / "calib", edgeq.Preprocess(size=(28, 28), color="l"))
    result = edgeq.convert(cnn, "int8", calibration=src, samples=9)
    assert result.calibration_samples == 6
    assert len(src.skipped) == 3
    assert "skipped 3 unreadable image(s)" in capsys.readouterr().err
    for p in folder.glob("0*.png"):
        p.unlink()
    with pytest.raises(DataError, match=r"none of the 3 image files could be read"):
        edgeq.convert(cnn, "int8", calibration=tmp_path / "calib")


def test_calibration_shape_and_channels_mismatch(cnn, mnist_train):
    wrong_size = edgeq.Preprocess(size=(32, 32), color="l")
    with pytest.raises(CalibrationError, match=r"sample shape \(32, 32, 1\) does not match input 'image' shape \(28, 28, 1\)"):
        edgeq.convert(cnn, "int8", calibration=mnist_train, preprocess=wrong_size, samples=4)
    rgb = edgeq.Preprocess(size=(28, 28), color="rgb")
    with pytest.raises(CalibrationError, match=r"3 channels where the model takes 1"):
        edgeq.convert(cnn, "int8", calibration=mnist_train, preprocess=rgb, samples=4)


def test_op_that_cannot_be_integer_quantized():
    _seed()
    inp = keras.Input((16,), name="x")
    h = keras.layers.Lambda(lambda t: keras.ops.sin(t))(keras.layers.Dense(16)(inp))
    model = keras.Model(inp, keras.layers.Dense(4)(h))
    x = np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32)
    with pytest.raises(QuantizationError, match=r"mode: op\(s\) SIN#\d+ cannot be quantized to int8.*allow_float_fallback=True"):
        edgeq.convert(model, "int8", calibration=x, samples=20)
    kept = edgeq.convert(model, "int8", calibration=x, samples=20, allow_float_fallback=True)
    assert [op.split("#")[0] for op in kept.float_ops] == ["SIN"]


def test_save_refuses_to_overwrite(cnn, tmp_path):
    result = edgeq.convert(cnn, "float32")
    target = tmp_path / "model.tflite"
    target.write_bytes(b"user's file")
    with pytest.raises(OutputExistsError, match=r"path: output file exists.*overwrite=True"):
        result.save(target)
    assert target.read_bytes() == b"user's file"
    result.save(target, overwrite=True)
    assert target.read_bytes() == result.model_bytes
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_target_edgetpu_enforces_the_compiler_rules(cnn, mnist_train):
    result = edgeq.convert(cnn, "int8", calibration=mnist_train, samples=8, io="uint8", target="edgetpu")
    assert result.target == "edgetpu"
    assert result.inputs[0].shape == (1, 28, 28, 1) and result.inputs[0].dtype == "uint8"
    assert result.edgetpu.fully_mapped
    with pytest.raises(InvalidArgumentError, match=r"io: the Edge TPU takes integer inputs.*io='uint8'"):
        edgeq.convert(cnn, "int8", calibration=mnist_train, samples=8, target="edgetpu")
    with pytest.raises(InvalidArgumentError, match=r"mode: the Edge TPU runs full-integer int8 models only"):
        edgeq.convert(cnn, "float16", io="uint8", target="edgetpu")
    with pytest.raises(InvalidArgumentError, match=r"batch_size: the Edge TPU needs static shapes with batch 1"):
        edgeq.convert(cnn, "int8", calibration=mnist_train, io="uint8", batch_size=4, target="edgetpu")
