"""Tiny real MNIST models (.tflite with edgeq metadata) shared by the ssh and arm64 tests."""

from __future__ import annotations

import shutil
from pathlib import Path

MNIST = Path(__file__).resolve().parents[2] / "datasets" / "mnist5k"


def build_models(out: Path, modes: tuple[str, ...] = ("float32", "int8")) -> dict[str, Path]:
    """Train a tiny conv net on the bundled MNIST digits for one epoch and convert it.

    Returns ``{mode: path}``; int8 models are calibrated on real training images. The mode
    ``int8-io`` is int8 with int8 input and output tensors (the raw integer results).
    """
    import keras
    import numpy as np
    from edgeq_device.images import list_image_folder
    from edgeq_device.preprocess import Preprocess

    from edgeq.quantize.converter import convert

    out.mkdir(parents=True, exist_ok=True)
    listing = list_image_folder(MNIST / "train").sample(1500, seed=0)
    pre = Preprocess(size=(28, 28), color="l", mean=0.0, std=255.0)
    x = np.stack([pre.load(p) for p in listing.paths]).astype("float32")
    y = np.asarray(listing.labels)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    paths = {}
    for mode in modes:
        io = "int8" if mode == "int8-io" else "float"
        res = convert(model, mode.removesuffix("-io"), calibration=MNIST / "train", samples=100, preprocess=pre,
                      labels=list(listing.class_names), io=io, progress=False)
        paths[mode] = res.save(out / f"tiny_{mode}.tflite", overwrite=True)
    return paths


def small_eval_folder(out: Path, per_class: int = 10) -> Path:
    """A copy of ``per_class`` test images of each digit (a small dataset to copy to boards)."""
    dest = out / "mnist_small"
    if dest.exists():
        return dest
    for cls in sorted(p for p in (MNIST / "test").iterdir() if p.is_dir()):
        (dest / cls.name).mkdir(parents=True)
        for img in sorted(cls.glob("*.png"))[:per_class]:
            shutil.copy(img, dest / cls.name / img.name)
    return dest
