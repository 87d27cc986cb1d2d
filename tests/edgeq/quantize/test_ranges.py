"""Chosen int8 activation ranges against the plain converter, on real models and real interpreters."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.results.report_json import dumps_json
from edgeq_device.run.runtime import ModelRunner

import edgeq
from edgeq.cli import cli
from edgeq.errors import InvalidArgumentError
from edgeq.quantize.modes import IOType, Mode
from edgeq.quantize.ranges.convert import (
    HOLD_OUT_EVERY,
    LiteRunner,
    calibrate_only,
    output_sqnr,
    quantize_calibrated,
)
from edgeq.quantize.ranges.debug import RangesDebugReport, debug_ranges
from edgeq.quantize.ranges.histograms import CLIP_COST, TensorHistogram, choose_range, quantization_error
from edgeq.quantize.ranges.result import FOLDS, RangesChoice
from edgeq.quantize.tflite import configure_converter, run_converter

METHODS = ("percentile", "mse", "entropy", "cautious", "auto")


def _items(x: np.ndarray, name: str) -> list[dict[str, np.ndarray]]:
    return [{name: x[i:i + 1]} for i in range(len(x))]


def _tensor_params(data: bytes) -> dict[str, tuple[tuple[float, ...], tuple[int, ...], str]]:
    sg = read_flat_model(data).main
    return {t.name: (tuple(np.round(t.quantization.scale, 12)), tuple(t.quantization.zero_point), t.dtype)
            for t in sg.tensors}


def _converter(model: Any, x: np.ndarray, io: IOType) -> Any:
    import tensorflow as tf

    def rep() -> Any:
        for i in range(100):
            yield [x[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    return configure_converter(conv, Mode.INT8, io, rep)


@pytest.mark.slow
@pytest.mark.parametrize("io", [IOType.FLOAT, IOType.INT8])
def test_minmax_route_is_the_converters_int8(digits_cnn: Any, digits_train_arrays: Any, io: IOType) -> None:
    x = digits_train_arrays[0][:100]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        plain = run_converter(_converter(digits_cnn, x, io), Mode.INT8)
        conv = _converter(digits_cnn, x, io)
        routed = quantize_calibrated(calibrate_only(conv), {}, conv, io)
    a, b = read_flat_model(plain), read_flat_model(routed)
    assert a.op_counts() == b.op_counts()
    assert _tensor_params(plain) == _tensor_params(routed)
    assert abs(len(plain) - len(routed)) <= 0.01 * len(plain)
    ra, rb = ModelRunner(plain, probe=False), ModelRunner(routed, probe=False)
    for sample in digits_train_arrays[0][200:220]:
        fa, fb = ra.run([sample[None]]), rb.run([sample[None]])
        assert all(np.array_equal(p, q) for p, q in zip(fa, fb))


@pytest.mark.slow
def test_each_method_gives_a_standard_int8_model(digits_cnn: Any, digits_train_arrays: Any) -> None:
    x = digits_train_arrays[0]
    base = edgeq.convert(digits_cnn, "int8", calibration=x[:120], samples=120)
    assert base.ranges is None
    ref = LiteRunner(edgeq.convert(digits_cnn, "float32").model_bytes, ["image"], preserve=False)
    held = _items(x[300:360], "image")
    reference = [[o.copy() for o in ref.run(i)] for i in held]
    base_sqnr = output_sqnr(reference, base.model_bytes, held, ["image"])
    for method in METHODS:
        res = edgeq.convert(digits_cnn, "int8", calibration=x[:120], samples=120, ranges=method)
        choice = res.ranges
        assert choice is not None and choice.method == method
        assert res.op_counts == base.op_counts and not res.float_ops
        record = len(json.dumps(choice.to_dict()))
        assert abs(res.size_bytes - base.size_bytes) <= 0.01 * base.size_bytes + record
        assert {t.dtype for t in (*res.inputs, *res.outputs)} == {base.inputs[0].dtype}  # float I/O, as asked
        sqnr = output_sqnr(reference, res.model_bytes, held, ["image"])
        # KL alone clipped the first conv's output to an eighth of its range here (~20 dB below minmax)
        assert np.isfinite(sqnr) and sqnr > base_sqnr - 3, (method, sqnr, base_sqnr)
        assert RangesChoice.from_dict(json.loads(dumps_json(choice.to_dict()))) == choice
        assert "ranges " + method in str(res)
    auto = edgeq.convert(digits_cnn, "int8", calibration=x[:120], samples=120, ranges="auto")
    choice = auto.ranges
    assert choice is not None and choice.held_out == 30 and set(choice.sqnr_db) == {
        "minmax", "percentile", "percentile@99.999", "mse", "entropy", "cautious"}
    assert set(choice.folds_won) == set(choice.sqnr_db) - {"minmax"}
    # Measured here, apart from the code: auto holds out every HOLD_OUT_EVERY-th calibration sample
    # and calibrates on the rest; minmax calibrated on that rest is its baseline. On the held-out
    # samples the shipped model is not worse than that baseline on any of FOLDS interleaved parts,
    # and its recorded SQNR is the one measured here.
    calib = x[:120]
    held_x = calib[HOLD_OUT_EVERY - 1::HOLD_OUT_EVERY]
    fit_x = np.delete(calib, np.s_[HOLD_OUT_EVERY - 1::HOLD_OUT_EVERY], axis=0)
    assert len(held_x) == choice.held_out
    minmax = edgeq.convert(digits_cnn, "int8", calibration=fit_x, samples=len(fit_x), ranges="minmax")
    held_items = _items(held_x, "image")
    held_ref = [[o.copy() for o in ref.run(i)] for i in held_items]
    # The scores are of models calibrated on the rest; the model written is the chosen method's on
    # every sample (with minmax chosen: the plain converter's int8).
    method, _, pct = choice.chosen.partition("@")
    scored = edgeq.convert(digits_cnn, "int8", calibration=fit_x, samples=len(fit_x), ranges=method,
                           percentile=float(pct) if pct else choice.percentile)
    assert output_sqnr(held_ref, scored.model_bytes, held_items, ["image"]) == pytest.approx(
        choice.sqnr_db[choice.chosen], abs=0.01)
    assert output_sqnr(held_ref, minmax.model_bytes, held_items, ["image"]) == pytest.approx(
        choice.sqnr_db["minmax"], abs=0.01)
    for k in range(FOLDS):
        part = held_items[k::FOLDS]
        part_ref = held_ref[k::FOLDS]
        assert (output_sqnr(part_ref, scored.model_bytes, part, ["image"])
                >= output_sqnr(part_ref, minmax.model_bytes, part, ["image"]) - 1e-9), (choice.chosen, k)
    whole = edgeq.convert(digits_cnn, "int8", calibration=calib, samples=len(calib), ranges=method,
                          percentile=float(pct) if pct else choice.percentile)
    assert _act_scales(whole.model_bytes) == _act_scales(auto.model_bytes)  # metadata aside
    assert RangesChoice.from_dict(json.loads(dumps_json(choice.to_dict()))) == choice


def _big_channel_model() -> Any:
    """A residual CNN (seeded, untrained) whose block output has four of 16 channels scaled up 32x:
    min/max int8 spends its steps on those channels' rare big values."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1), name="image")
    h = layers.Conv2D(16, 3, padding="same", activation="relu")(inp)
    y = layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    y = layers.Conv2D(16, 3, padding="same")(y)
    factors = np.ones(16, np.float32)
    factors[::4] = 32.0
    h = layers.Rescaling(factors)(layers.ReLU()(layers.Add()([h, y])))
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(h)
    return keras.Model(inp, layers.Dense(10, name="logits")(layers.GlobalAveragePooling2D()(h)), name="big_channels")


@pytest.mark.slow
def test_auto_and_cautious_gain_on_an_activation_limited_model(digits_train_arrays: Any) -> None:
    x = digits_train_arrays[0]
    model = _big_channel_model()
    ref = LiteRunner(edgeq.convert(model, "float32").model_bytes, ["image"], preserve=False)
    items = _items(x[300:400], "image")  # images none of the conversions calibrated on
    reference = [[o.copy() for o in ref.run(i)] for i in items]
    sqnr = {}
    for method in ("minmax", "cautious", "auto"):
        res = edgeq.convert(model, "int8", calibration=x[:120], samples=120, ranges=method)
        sqnr[method] = output_sqnr(reference, res.model_bytes, items, ["image"])
        if method == "auto":
            assert res.ranges is not None and res.ranges.chosen != "minmax", res.ranges
    assert sqnr["cautious"] > sqnr["minmax"] + 1.5 and sqnr["auto"] > sqnr["minmax"] + 1.5, sqnr


def _outlier_model() -> Any:
    """Dense(16 -> 32 relu -> 4) with fixed weights: feature 0 drives hidden unit 0 alone."""
    import keras

    rng = np.random.default_rng(0)
    inp = keras.Input((16,), name="features")
    h = keras.layers.Dense(32, activation="relu", name="hidden")(inp)
    out = keras.layers.Dense(4, name="head")(h)
    model = keras.Model(inp, out, name="outlier")
    w1 = rng.normal(0, 0.3, (16, 32)).astype(np.float32)
    w1[0, :] = 0.0
    w1[0, 0] = 1.0
    model.get_layer("hidden").set_weights([w1, np.zeros(32, np.float32)])
    model.get_layer("head").set_weights([rng.normal(0, 0.3, (32, 4)).astype(np.float32), np.zeros(4, np.float32)])
    return model


@pytest.mark.slow
@pytest.mark.parametrize("method", ["percentile"])
def test_an_outlier_activation_is_clipped_and_sqnr_rises(method: str) -> None:
    # mse keeps one sample's outlier (its clipping error outweighs the rounding error it saves);
    # test_histogram_choices_keep_zero_and_constant_tensors has it narrow a heavier tail.
    rng = np.random.default_rng(1)
    model = _outlier_model()
    calib = rng.normal(0, 1, (400, 16)).astype(np.float32)
    calib[7, 0] = 200.0  # one real outlier: hidden unit 0 (and the hidden tensor's max) reaches 200
    ordinary = rng.normal(0, 1, (200, 16)).astype(np.float32)
    plain = edgeq.convert(model, "int8", calibration=calib, samples=400)
    chosen = edgeq.convert(model, "int8", calibration=calib, samples=400, ranges=method, percentile=99.9)
    assert chosen.ranges is not None and chosen.ranges.narrowed >= 1
    ref = LiteRunner(edgeq.convert(model, "float32").model_bytes, ["features"], preserve=False)
    items = _items(ordinary, "features")
    reference = [[o.copy() for o in ref.run(i)] for i in items]
    before = output_sqnr(reference, plain.model_bytes, items, ["features"])
    after = output_sqnr(reference, chosen.model_bytes, items, ["features"])
    assert after > before + 3, (before, after)


def test_histogram_choices_keep_zero_and_constant_tensors() -> None:
    zero = TensorHistogram(0.0, 0.0)
    zero.add(np.zeros(100))
    assert zero.constant and choose_range(zero, "mse") == (0.0, 0.0)
    h = TensorHistogram(0.5, 10.0)  # all positive: the range still starts at 0
    h.add(np.r_[np.linspace(0.5, 1.0, 10000), 10.0])
    for method in ("percentile", "mse"):
        low, high = choose_range(h, method, 99.9)
        assert low == 0.0 and 0 < high < 10.0, method
    assert choose_range(h, "minmax") == (0.0, 10.0)
    tail = TensorHistogram(0.0, 2.0)  # a thin tail: mse gives up its few values for finer steps
    tail.add(np.r_[np.linspace(0.0, 1.0, 1_000_000), np.linspace(1.2, 2.0, 4)])
    assert choose_range(tail, "mse")[1] < 1.8
    low, high = choose_range(h, "percentile", 99.9, symmetric=True)
    assert low == -high


def test_cautious_counts_clipping_dearer_than_rounding() -> None:
    rng = np.random.default_rng(4)
    base = rng.uniform(0, 1, 1_000_000)
    lone = TensorHistogram(0.0, 40.0)  # one value far out: mse and percentile cut it, cautious keeps it
    lone.add(np.r_[base, 40.0])
    assert choose_range(lone, "mse")[1] < 30 and choose_range(lone, "percentile", 99.99)[1] < 2
    assert choose_range(lone, "cautious") == (0.0, 40.0)
    assert quantization_error(lone, 0.0, 40.0)[1] == 0.0
    rounding, clipping = quantization_error(lone, 0.0, 1.0)
    assert clipping > 1000 and rounding < quantization_error(lone, 0.0, 40.0)[0] / 100
    wide = TensorHistogram(-1.0, 8.0)  # a tail of 0.1% of the values: rounding everywhere costs more
    wide.add(np.r_[rng.normal(0, 0.2, 1_000_000), rng.uniform(1, 8, 1000)])
    low, high = choose_range(wide, "cautious")
    assert -1.0 <= low < 0 < high < 8.0
    r_min, c_min = quantization_error(wide, -1.0, 8.0)
    r, c = quantization_error(wide, low, high)
    assert r + CLIP_COST * c < r_min + CLIP_COST * c_min


@pytest.mark.parametrize("percentile", [99.99, 99.9])
def test_entropy_sheds_rare_values_only(percentile: float) -> None:
    rng = np.random.default_rng(3)
    relu = np.maximum(rng.normal(0, 1, 1_000_000), 0)  # KL alone clipped 3% of these
    # The first conv of the digits CNN: a constant background through a ReLU (a few spikes), and a
    # sparse sixth of stroke values above them (KL alone clipped all of those, at an eighth of the range).
    spikes = np.repeat([0.0, 0.01, 0.019, 0.022, 0.049], [330_000, 170_000, 87_000, 87_000, 87_000])
    conv = np.r_[spikes, rng.uniform(0, 0.3, 80_000), rng.exponential(0.5, 170_000) + 0.3]
    for values in (relu, conv):
        h = TensorHistogram(0.0, float(values.max()))
        h.add(values)
        low, high = choose_range(h, "entropy", percentile)
        assert low == 0.0 and high <= values.max()
        assert np.mean(values > high) <= (100 - percentile) / 100 + 1e-6
    assert high < values.max() and choose_range(h, "entropy", 100.0) == (0.0, h.high)


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"ranges": "median"}, "ranges"), ({"ranges": "mse", "percentile": 0}, "percentile"),
    ({"ranges": "percentile", "percentile": 100.5}, "percentile"), ({"ranges": "mse", "percentile": "x"}, "percentile"),
])
def test_bad_ranges_arguments(digits_cnn: Any, digits_train_arrays: Any, kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(InvalidArgumentError) as err:
        edgeq.convert(digits_cnn, "int8", calibration=digits_train_arrays[0][:10], samples=10, **kwargs)
    assert err.value.argument == argument


@pytest.mark.parametrize("mode", ["float32", "dynamic", "float16", "int16x8"])
def test_ranges_need_int8_activations(digits_cnn: Any, digits_train_arrays: Any, mode: str) -> None:
    with pytest.raises(InvalidArgumentError, match="no int8 activation ranges") as err:
        edgeq.convert(digits_cnn, mode, calibration=digits_train_arrays[0][:10], samples=10, ranges="mse")
    assert err.value.argument == "ranges"


def test_cli_ranges_and_bad_input(digits_cnn: Any, mnist_train: Any, tmp_path: Any) -> None:
    path = tmp_path / "digits.keras"
    digits_cnn.save(path)
    runner = CliRunner()
    ok = runner.invoke(cli, ["convert", str(path), "--mode", "int8", "--calib", str(mnist_train), "--samples", "40",
                              "--ranges", "percentile", "--percentile", "99.9", "-o", str(tmp_path / "out")])
    assert ok.exit_code == 0, ok.output
    assert "ranges percentile (99.9th percentile)" in ok.output
    bad = runner.invoke(cli, ["convert", str(path), "--mode", "float16", "--ranges", "mse",
                               "-o", str(tmp_path / "f16")])
    assert bad.exit_code != 0 and "Traceback" not in bad.output and "ranges" in bad.output
    bad = runner.invoke(cli, ["convert", str(path), "--mode", "int8", "--calib", str(mnist_train),
                               "--ranges", "mse", "--percentile", "0", "-o", str(tmp_path / "p0")])
    assert bad.exit_code != 0 and "percentile" in bad.output and "Traceback" not in bad.output
    shown = runner.invoke(cli, ["debug", str(path), "--calib", str(mnist_train), "--samples", "30",
                                 "--ranges", "all", "--json", str(tmp_path / "d.json")])
    assert shown.exit_code == 0, shown.output
    assert "minmax" in shown.output and "entropy" in shown.output and "best output SQNR" in shown.output
    report = RangesDebugReport.from_dict(json.loads((tmp_path / "d.json").read_text()))
    assert report.methods == ("minmax", "percentile", "mse", "entropy", "cautious") and report.layers


def test_debug_ranges_side_by_side(digits_cnn: Any, digits_train_arrays: Any) -> None:
    report = debug_ranges(digits_cnn, digits_train_arrays[0][:40], methods=["minmax", "mse"], samples=40)
    assert report.methods == ("minmax", "mse")
    assert len(report.layers) >= 4 and all(set(r.sqnr_db) == {"minmax", "mse"} for r in report.layers)
    assert [r.position for r in report.layers] == sorted(r.position for r in report.layers)
    assert all(np.isfinite(v) for v in report.output_sqnr_db.values())
    assert "mse" in report.table() and report.best in ("minmax", "mse")
    assert RangesDebugReport.from_dict(json.loads(dumps_json(report.to_dict()))) == report
    with pytest.raises(InvalidArgumentError):
        debug_ranges(digits_cnn, digits_train_arrays[0][:10], methods=["auto"], samples=10)


def _act_scales(model_bytes: bytes) -> dict[str, tuple[float, ...]]:
    sg = read_flat_model(model_bytes).main
    return {t.name: tuple(np.ravel(t.quantization.scale)) for t in sg.tensors
            if t.quantization is not None and t.quantization.scale is not None and t.dtype == "INT8"}


@pytest.mark.slow
def test_auto_reports_each_tensor_as_written_and_holds_on_held_out_seeds() -> None:
    """On a residual CNN trained elsewhere (fer's emotion model) and real-photo crops: each tensor auto
    reports ``kept`` has the plain converter's scale and each other one does not; on held-out crops of
    two seeds its output SQNR is never more than 0.2 dB below the plain converter's."""
    from edgeq.quantize.precision.budget_steps import fidelity
    from tests.fixtures.elsewhere import emotion_model, photo_crops

    model = emotion_model()
    f32 = edgeq.convert(model, "float32").model_bytes

    def outputs(data: bytes, x: np.ndarray) -> np.ndarray:
        runner = ModelRunner(data)
        return np.concatenate([np.asarray(runner.run([x[i:i + 1]])[0]).reshape(1, -1) for i in range(len(x))])

    for seed in (0, 1):
        calib, held = photo_crops(160, seed=10 + seed), photo_crops(200, seed=100 + seed)
        plain = edgeq.convert(model, "int8", calibration=calib, samples=160).model_bytes
        auto = edgeq.convert(model, "int8", calibration=calib, samples=160, ranges="auto", progress=False)
        assert auto.ranges is not None and auto.ranges.tensors
        plain_scales, auto_scales = _act_scales(plain), _act_scales(auto.model_bytes)
        checked = 0
        for name, status in auto.ranges.tensors.items():
            if name in plain_scales and name in auto_scales:
                assert (plain_scales[name] == auto_scales[name]) == (status == "kept"), (name, status)
                checked += 1
        assert checked >= 20
        statuses = list(auto.ranges.tensors.values())
        assert auto.ranges.narrowed == statuses.count("narrowed")
        assert auto.ranges.widened == sum(1 for v in statuses if v.startswith("widened"))
        ref = outputs(f32, held)
        _, plain_db = fidelity(ref, outputs(plain, held))
        _, auto_db = fidelity(ref, outputs(auto.model_bytes, held))
        assert auto_db >= plain_db - 0.2, (seed, auto.ranges.chosen, auto_db, plain_db)
