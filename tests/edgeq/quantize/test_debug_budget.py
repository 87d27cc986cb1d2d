"""Per-layer int8 error (the quantization debugger) and the accuracy budget search, on real digits.

The "hard" model is a trained digit CNN with one extra layer whose output has rare
outliers (about 5% of images, 1000x the typical activation) that the classifier
ignores: the float model is as accurate as before, but with real calibration data
the outliers set the int8 range and ordinary activations collapse to a few steps.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from edgeq_device.run.runtime import ModelRunner

from edgeq import convert, debug
from edgeq.cli import cli
from edgeq.errors import DataError, InvalidArgumentError, OutputExistsError
from edgeq.quantize.precision.budget import budget_search, top1_accuracy


@pytest.fixture(scope="module")
def models(digits_cnn, digits_train_arrays):
    """(the session's trained CNN, the same CNN with a rare-outlier layer) as Keras 3 models."""
    x, _ = digits_train_arrays
    good = digits_cnn
    inp, hidden, head = good.inputs[0], good.get_layer("hidden"), good.get_layer("classifier")

    features = np.asarray(keras.Model(inp, hidden.output)(x))
    direction = np.random.default_rng(0).normal(size=32).astype(np.float32)
    score = features @ direction
    threshold = float(np.quantile(score, 0.95))  # ~5% of images
    typical = float(features[features > 0].mean())
    gain = 1000.0 * typical / float(score.max() - threshold)  # the largest outlier: 1000x typical
    spiky = keras.layers.Dense(33, activation="relu", name="spiky")
    head2 = keras.layers.Dense(10, activation="softmax", name="head")
    hard = keras.Model(inp, head2(spiky(hidden.output)), name="hard")
    kernel = np.zeros((32, 33), np.float32)
    kernel[:, :32] = np.eye(32)
    kernel[:, 32] = direction * gain
    bias = np.zeros(33, np.float32)
    bias[32] = -threshold * gain
    spiky.set_weights([kernel, bias])
    w, b = head.get_weights()
    head2.set_weights([np.vstack([w, np.zeros((1, 10), np.float32)]), b])  # the head ignores the outlier
    return good, hard


def _acc(model_bytes, x, y):
    return float((ModelRunner(model_bytes).run(x)[0].argmax(axis=1) == y).mean())


@pytest.fixture(scope="module")
def test_arrays(digits_test_arrays):
    return digits_test_arrays


def test_debug_puts_the_outlier_layer_first(models, mnist_train, tmp_path):
    _, hard = models
    report = debug(hard, mnist_train, samples=150)
    assert report.samples == 150 and report.model == "hard"
    worst = report.layers[0]
    assert worst.layer == "spiky" and worst.op == "FULLY_CONNECTED"
    assert worst.sqnr_db < 10.0
    others = [r for r in report.layers if r.layer in ("conv2d", "hidden")]
    assert others and all(r.sqnr_db > 30.0 for r in others)
    assert [r.sqnr_db for r in report.layers] == sorted(r.sqnr_db for r in report.layers)
    assert all(r.scale > 0 and r.rmse >= 0 for r in report.layers)
    text = report.table()
    assert "spiky" in text and "SQNR" in text and text.index("spiky") < text.index("hidden")
    data = json.loads(json.dumps(report.to_dict()))
    assert data["layers"][0]["layer"] == "spiky"
    png = report.plot(tmp_path / "layers.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(OutputExistsError):
        report.plot(png)
    assert report.plot(png, overwrite=True) == png


def test_debug_of_a_well_behaved_model_finds_no_bad_layer(models, mnist_train):
    good, _ = models
    report = debug(good, mnist_train, samples=100)
    assert min(r.sqnr_db for r in report.layers) > 25.0


@pytest.mark.slow
def test_budget_search_keeps_the_outlier_layer_float_and_meets_the_budget(models, mnist_train, mnist_test,
                                                                           test_arrays):
    _, hard = models
    result = budget_search(hard, max_drop=0.5, calibration=mnist_train, evaluation=mnist_test,
                           a16_steps=())  # without the 16-bit step (test_mixed.py has it)
    report = result.budget
    assert report is not None and report.within_budget
    names = [c.name for c in report.candidates]
    assert names[0] == "int8" and len(names) >= 2
    first = report.candidates[0]
    assert not first.within_budget and first.drop > 5.0  # full int8 collapses
    chosen = report.choice
    assert chosen.name.startswith("int8+float") and "spiky" in chosen.float_layers
    assert chosen.drop <= 0.5 and chosen.size_bytes == result.size_bytes
    assert result.mode.value == "int8" and result.float_ops  # the kept-float layers
    assert chosen.size_bytes < report.baseline_size_bytes
    x, y = test_arrays
    assert abs(_acc(result.model_bytes, x, y) - chosen.accuracy) < 1e-9  # measured on the same 1000 images
    assert report.baseline_accuracy - _acc(result.model_bytes, x, y) <= 0.005
    text = report.table()
    for name in names:
        assert name in text
    assert "chose" in text and "float32 (baseline)" in text
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["chosen"] == chosen.name and len(payload["candidates"]) == len(names)
    assert all(c["latency_ms"] > 0 for c in payload["candidates"] if c["error"] is None)
    print("\n" + text)


@pytest.mark.slow
def test_budget_search_moves_on_to_int16x8_without_float_layers(models, mnist_train, test_arrays):
    _, hard = models
    x, y = test_arrays
    result = budget_search(hard, max_drop=0.5, calibration=mnist_train, evaluation=(x[:400], y[:400]),
                           float_steps=(), a16_steps=())
    names = [c.name for c in result.budget.candidates]
    assert names == ["int8", "int16x8"]
    assert result.mode.value == "int16x8" and result.budget.choice.drop <= 0.5


def test_budget_stops_at_int8_when_int8_is_good_enough(models, mnist_train, test_arrays):
    good, _ = models
    x, y = test_arrays
    result = convert(good, "int8", calibration=mnist_train, max_drop=1.0, evaluation=(x[:300], y[:300]))
    assert [c.name for c in result.budget.candidates] == ["int8"]
    assert result.float_ops == () and "smallest" in result.budget.reason
    assert top1_accuracy(result.model_bytes, (x[:300], y[:300]), source_model=good) == \
        result.budget.choice.accuracy


def test_budget_refuses_bad_arguments(models, mnist_train, test_arrays):
    good, _ = models
    x, y = test_arrays
    with pytest.raises(InvalidArgumentError) as info:
        convert(good, "int8", calibration=mnist_train, max_drop=-1, evaluation=(x, y))
    assert info.value.argument == "max_drop"
    with pytest.raises(InvalidArgumentError) as info:
        convert(good, "float16", max_drop=0.5, evaluation=(x, y))
    assert info.value.argument == "mode"
    with pytest.raises(InvalidArgumentError):
        convert(good, "int8", calibration=mnist_train, evaluation=(x, y))
    with pytest.raises(DataError, match="labels") as data_error:
        convert(good, "int8", calibration=mnist_train, max_drop=0.5, evaluation=x[:50])
    assert data_error.value.argument == "evaluation"


@pytest.mark.slow
def test_cli_convert_with_an_accuracy_budget_and_cli_debug(models, mnist_train, mnist_test, tmp_path):
    _, hard = models
    path = tmp_path / "hard.keras"
    hard.save(path)
    runner = CliRunner()
    res = runner.invoke(cli, ["convert", str(path), "--mode", "int8", "--max-drop", "0.5", "--calib",
                              str(mnist_train), "--eval", str(mnist_test), "-o", str(tmp_path / "out"),
                              "--json", str(tmp_path / "convert.json")])
    assert res.exit_code == 0, res.output
    assert "accuracy budget" in res.output and "int8+a16" in res.output and "chose" in res.output
    payload = json.loads((tmp_path / "convert.json").read_text())
    budget = payload["results"][0]["budget"]
    assert budget["within_budget"] and budget["candidates"][0]["name"] == "int8"
    assert (tmp_path / "out" / "hard_int8_a16.tflite").exists()  # named for its 16-bit layers

    missing = runner.invoke(cli, ["convert", str(path), "--max-drop", "0.5", "--calib", str(mnist_train)])
    assert missing.exit_code == 2 and "--eval" in missing.output

    dbg = runner.invoke(cli, ["debug", str(path), "--calib", str(mnist_train), "--samples", "150",
                              "--plot", str(tmp_path / "dbg.png"), "--json", str(tmp_path / "dbg.json"),
                              "--limit", "3"])
    assert dbg.exit_code == 0, dbg.output
    assert "spiky" in dbg.output and (tmp_path / "dbg.png").exists()
    assert json.loads((tmp_path / "dbg.json").read_text())["layers"][0]["layer"] == "spiky"
    again = runner.invoke(cli, ["debug", str(path), "--calib", str(mnist_train), "--plot", str(tmp_path / "dbg.png")])
    assert again.exit_code == 2 and "--force" in again.output
