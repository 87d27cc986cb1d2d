"""The evaluation keywords as one type: EvalOptions, as keywords or as options=, the same evaluation."""

from __future__ import annotations

import pytest
from edgeq_device import EvalOptions, evaluate
from edgeq_device.errors import InvalidArgumentError
from edgeq_device.tasks.fidelity import evaluate_fidelity


def test_keywords_and_options_give_the_same_evaluation(models, mnist_dir) -> None:
    by_keywords = evaluate(models["meta_uint8"], mnist_dir / "test", limit=40, seed=3, workers=2, threads=1)
    by_options = evaluate(models["meta_uint8"], mnist_dir / "test",
                          options=EvalOptions(limit=40, seed=3, workers=2, threads=1))
    assert by_keywords.images == by_options.images == 40
    assert by_keywords.workers == by_options.workers == 2
    assert by_keywords.top1 == by_options.top1
    assert by_keywords.confusion == by_options.confusion
    # a keyword beside options replaces that field only
    mixed = evaluate(models["meta_uint8"], mnist_dir / "test", options=EvalOptions(limit=40, seed=3), limit=10)
    assert mixed.images == 10 and mixed.seed == 3


def test_options_are_checked_once_with_a_clear_error() -> None:
    with pytest.raises(InvalidArgumentError) as info:
        EvalOptions(limit=0)
    assert info.value.argument == "limit" and "positive integer" in str(info.value)
    with pytest.raises(InvalidArgumentError):
        EvalOptions.of(None, limit=-5)
    with pytest.raises(TypeError, match="limt"):
        EvalOptions.of(None, limt=5)  # type: ignore[call-arg]
    assert EvalOptions(delegate_options={"device": "usb:0"}).runner_keywords()["delegate_options"] == {
        "device": "usb:0"}
    assert EvalOptions().delegate_options == {}


def test_every_evaluation_refuses_a_misspelt_keyword(models, tmp_path) -> None:
    with pytest.raises(TypeError, match="limt"):
        evaluate_fidelity(models["float32"], tmp_path / "x.npy", tmp_path / "y.npz", limt=3)  # type: ignore[call-arg]
