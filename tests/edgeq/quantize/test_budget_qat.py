"""The accuracy budget with training data: ``int8+qat`` (int8 after quantization-aware fine-tuning).

Plain int8 misses a strict budget (no drop at all) when calibrated on a narrow sample (one digit class)
or on other images than the model's (the bundled shapes photos for a digit classifier); a couple of
epochs of QAT on the training digits meets it at int8's size and speed.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from edgeq import convert
from edgeq.cli import cli
from edgeq.errors import InvalidArgumentError

keras = pytest.importorskip("keras")


def _check_qat_chosen(budget) -> None:  # type: ignore[no-untyped-def]
    names = [c.name for c in budget.candidates]
    assert names[:2] == ["int8", "int8+qat"], names
    int8, qat = budget.candidates[0], budget.candidates[1]
    assert not int8.within_budget and int8.drop > budget.max_drop  # plain int8 misses it
    assert budget.choice.name == "int8+qat" and qat.within_budget and qat.drop <= budget.max_drop
    assert qat.size_bytes <= 1.1 * int8.size_bytes
    assert qat.latency_ms <= 1.2 * int8.latency_ms
    assert "quantization-aware fine-tuning" in budget.reason and "int8 lost more than" in budget.reason


@pytest.mark.slow
def test_cli_budget_with_training_data_chooses_qat_and_without_it_does_not(digits_cnn, mnist_train, mnist_test,
                                                                            tmp_path):
    path = tmp_path / "digits.keras"
    digits_cnn.save(path)
    calib = str(mnist_train / "1")  # calibrated on ones only: narrow activation ranges
    runner = CliRunner()
    args = ["convert", str(path), "--mode", "int8", "--max-drop", "0", "--calib", calib, "--eval", str(mnist_test)]
    res = runner.invoke(cli, [*args, "--train", str(mnist_train), "-o", str(tmp_path / "qat"),
                              "--json", str(tmp_path / "qat.json")])
    assert res.exit_code == 0, res.output
    budget = json.loads((tmp_path / "qat.json").read_text())["results"][0]["budget"]
    cands = {c["name"]: c for c in budget["candidates"]}
    assert budget["chosen"] == "int8+qat" and not cands["int8"]["within_budget"], budget
    assert cands["int8+qat"]["size_bytes"] <= 1.1 * cands["int8"]["size_bytes"]
    assert "quantization-aware" in budget["reason"]

    plain = runner.invoke(cli, [*args, "-o", str(tmp_path / "plain"), "--json", str(tmp_path / "plain.json")])
    assert plain.exit_code == 0, plain.output
    before = json.loads((tmp_path / "plain.json").read_text())["results"][0]["budget"]
    assert "int8+qat" not in [c["name"] for c in before["candidates"]] and before["chosen"] != "int8+qat"

    lone = runner.invoke(cli, ["convert", str(path), "--mode", "int8", "--calib", calib, "--train", str(mnist_train)])
    assert lone.exit_code == 2 and "--train" in lone.output and "Traceback" not in lone.output


@pytest.mark.slow
def test_budget_with_training_data_meets_a_strict_budget_on_a_residual_cnn(digits_train_arrays, digits_test_arrays):
    from fixtures.models import REPO, train_resnet8

    x, y = digits_train_arrays
    model = train_resnet8(x, y)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)  # past chance: its batch norms settle
    result = convert(model, "int8", calibration=REPO / "datasets" / "shapes" / "train", max_drop=0.0,
                     evaluation=digits_test_arrays, train=(x, y), progress=False)
    _check_qat_chosen(result.budget)
    assert result.metadata.extra["qat"]["epochs"] == 2


def test_training_data_needs_the_budget(digits_cnn, digits_train_arrays):
    x, y = digits_train_arrays
    with pytest.raises(InvalidArgumentError) as err:
        convert(digits_cnn, "int8", calibration=x[:10], train=(x, y))
    assert err.value.argument == "train"
    with pytest.raises(InvalidArgumentError) as err:
        convert(digits_cnn, "int8", calibration=x[:10], max_drop=1, evaluation=(x[:20], y[:20]), train=(x, y),
                train_epochs=0)
    assert err.value.argument == "train_epochs"
