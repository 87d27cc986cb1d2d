"""The host's accuracy of a ``.tflite`` made elsewhere goes through the board's preprocessing choice.

``top1_accuracy`` (the budget's and ``debug``'s figure) with no Keras model and no preprocessing
feeds an integer-input model its raw pixels, exactly as ``edgeq-device eval`` and a plain
LiteRT loop do.
"""

from __future__ import annotations

import numpy as np
import pytest
from edgeq_device import evaluate
from fixtures.elsewhere import plain_loop_outputs
from label_folders import class_files, subset


@pytest.mark.parametrize("io", ["uint8", "int8"])
def test_top1_of_an_integer_model_made_elsewhere_is_the_plain_loops(pm1_models, mnist_test, tmp_path, io):
    from edgeq.quantize.precision.accuracy import top1_accuracy

    data = subset(mnist_test, tmp_path / "data", {d: None for d in range(10)}, per_class=8)
    files = class_files(data, {str(d): d for d in range(10)})
    outs = plain_loop_outputs(pm1_models[io], [f for f, _ in files], "raw", (28, 28), color="L")
    ref = float(np.mean([int(np.argmax(o[0])) == c for o, (_, c) in zip(outs, files)]))
    model = pm1_models[io].read_bytes()
    assert ref > 0.85
    assert top1_accuracy(model, data) == pytest.approx(ref, abs=1e-12)
    assert evaluate(model, data).top1 == pytest.approx(ref, abs=1e-12)
