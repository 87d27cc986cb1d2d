"""Fixtures shared by the edgeq tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained Keras 3 CNN for 28×28×1 digits (10 outputs), saved as ``digits.keras``."""
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1), name="image"), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10)], name="digits")
    path = tmp_path_factory.mktemp("model") / "digits.keras"
    model.save(path)
    return path
