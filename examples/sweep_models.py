"""Builders for ``edgeq sweep``: the demo's digits CNN at several widths, trained (seeded) on the bundled digits.

Named in ``examples/sweep_models.toml``; each call builds and trains the model afresh, so a builder
must be deterministic (seeded) for a sweep's cells to be comparable and resumable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["digits_cnn"]

DATA = Path(__file__).resolve().parent.parent / "datasets" / "mnist5k" / "train"


def digits_cnn(width: int = 8, dense: int = 32, epochs: int = 2, images: int = 2000, seed: int = 0) -> Any:
    """A Keras 3 CNN for 28x28 grey digits: Conv(``width``)-pool-Conv(2x``width``)-pool-Dense(``dense``)-softmax,
    trained ``epochs`` on a seeded ``images`` of ``datasets/mnist5k/train``."""
    import keras
    import numpy as np
    from edgeq_device.model.preprocess import Preprocess
    from edgeq_device.run.images import iter_images, list_image_folder

    keras.utils.set_random_seed(seed)
    listing = list_image_folder(DATA).sample(images, seed=seed)
    pairs = list(iter_images(listing, Preprocess(size=(28, 28), color="l")))
    x = np.stack([a for a, _ in pairs]).astype(np.float32)
    y = np.asarray([t for _, t in pairs], np.int64)
    model = keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(width, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(2 * width, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(dense, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name=f"digits_w{width}")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=True)
    return model
