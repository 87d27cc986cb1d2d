"""Quantization-aware training: the Keras 3 -> tf_keras rebuild, layers tfmot lacks, QAT on real digits."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tf_keras
from click.testing import CliRunner
from edgeq_device.run.runtime import ModelRunner

from edgeq import qat
from edgeq.cli import cli
from edgeq.errors import DataError, InvalidArgumentError, QATError
from edgeq.quantize.converter import convert
from edgeq.quantize.qat.rebuild import check_equal, rebuild


def _top1(model_bytes, x, y):
    out = ModelRunner(model_bytes).run(x)[0]
    return float((out.argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def mnist(digits_train_arrays, digits_test_arrays):
    return digits_train_arrays, digits_test_arrays


@pytest.fixture(scope="module")
def float_cnn(digits_cnn):
    """The session's small Keras 3 CNN (``digits``), trained (seeded) on the 4,000 training digits."""
    return digits_cnn


def _bn_depthwise_residual_model():
    keras.utils.set_random_seed(3)
    inp = keras.Input((12, 12, 3), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    y = keras.layers.BatchNormalization()(y)
    x = keras.layers.Add()([x, y])
    block = keras.Sequential([keras.Input((12, 12, 8)), keras.layers.Conv2D(4, 1, activation="relu")], name="block")
    x = block(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5)(x)
    model = keras.Model(inp, out, name="residual")
    rng = np.random.default_rng(1)
    for layer in model.layers:  # BatchNorm statistics far from the defaults, so copying them matters
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    return model


def test_rebuild_equals_keras3_model_with_batchnorm_depthwise_and_residual_add():
    model = _bn_depthwise_residual_model()
    x = np.random.default_rng(0).uniform(0, 1, (6, 12, 12, 3)).astype(np.float32)
    built = rebuild(model, [x])
    assert isinstance(built.model, tf_keras.Model)
    assert built.max_abs_diff <= 1e-5 and built.checked_samples == 6
    kinds = {type(layer).__name__ for layer in built.model.layers}
    assert {"BatchNormalization", "DepthwiseConv2D", "Add", "Conv2D"} <= kinds
    np.testing.assert_allclose(built.model(x, training=False), model(x, training=False), atol=1e-5)
    # the check can fail: a changed weight is caught and reported
    conv = next(layer for layer in built.model.layers if isinstance(layer, tf_keras.layers.DepthwiseConv2D))
    conv.set_weights([w + 0.01 for w in conv.get_weights()])
    with pytest.raises(QATError, match="differs from the original"):
        check_equal(model, built.model, [x])


def test_rebuild_error_names_the_layer_or_operation():
    class Doubler(keras.layers.Layer):
        def call(self, t):
            return t * 2

    inp = keras.Input((4,))
    with pytest.raises(QATError, match="'twice'"):
        rebuild(keras.Model(inp, keras.layers.Dense(2)(Doubler(name="twice")(inp))))
    with pytest.raises(QATError, match="'exp'") as info:
        rebuild(keras.Model(inp, keras.layers.Dense(2)(keras.ops.exp(inp))))
    assert info.value.argument == "model" and "use a layer instead" in info.value.fix


@pytest.mark.slow  # QAT on 4,000 digits
def test_qat_int8_on_mnist_stays_within_0_3_points_of_float(float_cnn, mnist, mnist_train):
    _, (xt, yt) = mnist
    float_acc = float((np.asarray(float_cnn(xt, training=False)).argmax(axis=1) == yt).mean())
    ptq_acc = _top1(convert(float_cnn, "int8", calibration=mnist_train).model_bytes, xt, yt)
    result = qat(float_cnn, mnist_train, validation=(xt, yt), epochs=2, learning_rate=1e-4, seed=0)
    assert result.rebuild_max_diff is not None and result.rebuild_max_diff <= 1e-5
    assert result.model.name == "digits_qat" and result.epochs == 2
    assert len(result.history["loss"]) == 2 and "val_accuracy" in result.history
    assert any("quantize" in type(layer).__name__.lower() for layer in result.model.layers)
    exported = result.convert()
    assert exported.mode.value == "int8" and exported.float_ops == ()
    assert exported.metadata.labels == tuple(str(i) for i in range(10))
    qat_acc = _top1(exported.model_bytes, xt, yt)
    print(f"\nmnist5k test top-1: float {float_acc:.4f}, PTQ int8 {ptq_acc:.4f}, QAT int8 {qat_acc:.4f}")
    assert float_acc > 0.9
    assert qat_acc >= float_acc - 0.003
    int8_io = result.convert(io="int8")
    assert int8_io.inputs[0].dtype == "int8"
    assert abs(_top1(int8_io.model_bytes, xt, yt) - qat_acc) <= 0.005


@pytest.mark.slow  # QAT of an unusual model
def test_layers_tfmot_cannot_quantize_get_a_config_and_the_model_exports_full_int8():
    keras.utils.set_random_seed(1)
    inp = keras.Input((16, 16, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inp)
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.UpSampling2D()(h)
    g = keras.layers.Conv2D(8, 1, activation="sigmoid")(h)
    h = keras.layers.Multiply()([h, g])
    h = h[:, 1:, 1:, :]
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inp, out, name="unusual")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 255, (48, 16, 16, 3)).astype(np.float32), rng.integers(0, 3, 48)
    result = qat(model, (x, y), epochs=1, batch_size=16)
    how = {p.kind: p.how for p in result.plan}
    assert how["Rescaling"] == "output" and how["Multiply"] == "output"
    assert how["LayerNormalization"] == "output" and how["Conv2DTranspose"] == "output"
    assert how["SlicingOpLambda"] == "passthrough"
    assert how["UpSampling2D"] == "default" and how["Conv2D"] == "default"
    assert all(p.reason for p in result.special_layers)
    assert result.float_layers == ()
    exported = result.convert(calibration=x[:32])
    assert exported.float_ops == ()
    assert "RESIZE_NEAREST_NEIGHBOR" in exported.op_counts and "TRANSPOSE_CONV" in exported.op_counts
    float_out = np.asarray(model(x[:8], training=False))
    int8_out = ModelRunner(exported.model_bytes).run(x[:8])[0]
    assert np.abs(int8_out - float_out).max() < 0.25  # one epoch at a tiny learning rate barely moves it


@pytest.mark.slow  # QAT
def test_layers_without_a_scheme_stay_float_and_are_listed():
    inp = tf_keras.Input((8, 8, 1))
    h = tf_keras.layers.Conv2D(4, 3)(inp)
    h = tf_keras.layers.Lambda(lambda t: t * 0.5, name="halve")(h)
    h = tf_keras.layers.Flatten()(h)
    model = tf_keras.Model(inp, tf_keras.layers.Dense(3)(h), name="with_lambda")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (32, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 32)
    result = qat(model, (x, y), epochs=1)
    assert result.rebuild_max_diff is None  # a tf_keras model is used as it is
    assert result.float_layers == ("halve",)
    assert result.to_dict()["float_layers"] == ["halve"]
    assert result.convert(calibration=x).float_ops == ()


@pytest.mark.slow  # QAT
def test_qat_under_a_distribution_strategy_and_from_tf_data():
    import tensorflow as tf

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (40, 8, 8, 1)).astype(np.float32), rng.integers(0, 3, 40)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    result = qat(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, strategy=strategy)
    assert result.model.distribute_strategy is strategy
    assert len(result.history["loss"]) == 1 and np.isfinite(result.history["loss"][0])
    assert result.convert(calibration=x).size_bytes > 0


def test_bad_training_input_is_refused_with_the_argument_named():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(DataError, match="needs labels") as info:
        qat(model, np.zeros((8, 4), np.float32))
    assert info.value.argument == "train"
    with pytest.raises(DataError, match="does not match input"):
        qat(model, (np.zeros((8, 5), np.float32), np.zeros(8, int)))
    with pytest.raises(InvalidArgumentError) as bad:
        qat(model, (np.zeros((8, 4), np.float32), np.zeros(8, int)), epochs=0)
    assert bad.value.argument == "epochs"
    with pytest.raises(InvalidArgumentError, match="strategy"):
        qat(model, (np.zeros((8, 4), np.float32), np.zeros(8, int)), strategy="mirrored")


@pytest.mark.slow  # QAT through the CLI
def test_cli_qat_writes_the_int8_model_and_refuses_to_overwrite(float_cnn, mnist_train, mnist_test, tmp_path):
    path = tmp_path / "digits.keras"
    float_cnn.save(path)
    out = tmp_path / "qat.tflite"
    args = ["qat", str(path), "--train", str(mnist_train), "--val", str(mnist_test), "--epochs", "1",
            "--train-samples", "400", "-o", str(out), "--json", str(tmp_path / "qat.json")]
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert out.exists() and "wrote" in first.output
    summary = json.loads((tmp_path / "qat.json").read_text())
    assert summary["qat"]["epochs"] == 1 and summary["result"]["mode"] == "int8"
    again = runner.invoke(cli, args)
    assert again.exit_code == 2
    assert "exists" in again.output and "--force" in again.output


@pytest.mark.slow
def test_a_model_made_elsewhere_with_separable_convs_is_prepared_with_its_wiring():
    """fer's mini-Xception (layers named conv2d_1..conv2d_7 in its .h5): tfmot turns each SeparableConv2D
    into new, unnamed DepthwiseConv2D + Conv2D layers; tf_keras's counter, reset here as in a fresh
    process, would name them conv2d_1... and the rebuilt graph would wire the wrong tensors. Prepared,
    every layer name is unique and every layer keeps its place: the same output shape as in the model."""
    from fixtures.elsewhere import emotion_model, photo_crops

    from edgeq.quantize.qat.plan import quantize_model
    from edgeq.quantize.qat.train import to_tf_keras

    tf_keras.backend.clear_session()
    model = emotion_model()
    x = photo_crops(64, seed=3)
    base, _ = to_tf_keras(model, [x[:4]])
    qmodel, plan = quantize_model(base)
    names = [layer.name for layer in qmodel.layers]
    assert len(names) == len(set(names))
    assert len([p for p in plan if p.kind == "SeparableConv2D"]) == 8
    shapes = {layer.name: layer.output_shape for layer in base.layers}
    kept = [(getattr(layer, "layer", layer).name, layer.output_shape) for layer in qmodel.layers
            if getattr(layer, "layer", layer).name in shapes]
    assert len(kept) >= len(base.layers) - 8  # all but the eight separable convolutions, replaced
    assert [shape for _, shape in kept] == [shapes[name] for name, _ in kept]
    assert np.asarray(qmodel(x, training=False)).shape == (64, 7)


@pytest.mark.slow
def test_qat_of_a_model_made_elsewhere_starts_from_its_ranges_and_statistics():
    """fer's mini-Xception, whose activations reach ±47: tfmot starts every activation range at ±6
    (moved by 0.1% a step) and trains batch normalization on the fine-tuning batches. Before
    ranges started from the data and batch norms were frozen, its QAT model agreed with the float
    model on 27% of held-out photo crops before training and its int8 export lost 30-40 points;
    and its eight batch norms after separable convolutions stayed MUL + ADD in the export. One
    epoch at a learning rate too small to move a weight must export what post-training int8 gives,
    with its operators (trained in a process of its own with oneDNN off: TensorFlow 2.21's oneDNN
    kernels crash training this model, see the README); and the ranges start where the data puts them."""
    import os
    import subprocess
    import sys

    tests = Path(__file__).parents[2]
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(tests)}
    res = subprocess.run([sys.executable, "-m", "fixtures.qat_elsewhere"], capture_output=True, text=True,
                         env=env, cwd=tests.parent, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    figures = json.loads(res.stdout.strip().splitlines()[-1])
    assert figures["int8"] >= 0.85 and figures["int8+qat"] >= figures["int8"] - 0.02, figures
    # each batch norm after a separable convolution folded into it, as post-training int8 folds it
    assert figures["int8+qat operators"] == figures["int8 operators"], figures
    assert figures["largest range"] > 20  # far outside tfmot's ±6
    assert figures["conv2d_7 range"] == pytest.approx(figures["conv2d_7 float max"], rel=0.02)
