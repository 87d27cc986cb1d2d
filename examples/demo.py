"""The main job on the bundled data: ``make demo`` / ``python examples/demo.py``.

Trains a small CNN on ``datasets/mnist5k/train`` (seeded), compares every
quantization mode on ``datasets/mnist5k/test``, prints the table and writes the
report (``report.html``, ``report.md``, ``results.json``, plots, models).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeq.nativelog import quiet_native_logs

__all__ = ["load_folder", "main", "train_cnn"]

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "datasets" / "mnist5k"


def load_folder(folder: Path, size: tuple[int, int] = (28, 28)) -> tuple[np.ndarray, np.ndarray]:
    """Every image of a labeled folder as arrays, through edgeq_device's preprocessing ([0, 1] pixels)."""
    from edgeq_device.model.preprocess import Preprocess
    from edgeq_device.run.images import iter_images, list_image_folder

    listing = list_image_folder(folder)
    pairs = list(iter_images(listing, Preprocess(size=size, color="l")))
    return np.stack([a for a, _ in pairs]), np.asarray([y for _, y in pairs], np.int64)


@quiet_native_logs()
def train_cnn(train: Path = DATA / "train", epochs: int = 4, seed: int = 0, verbose: int = 2) -> Any:
    """A small Keras 3 CNN trained on the bundled digits, seeded."""
    import keras

    keras.utils.set_random_seed(seed)
    x, y = load_folder(train)
    # The folder is read class by class; Keras takes the validation split from the end
    # before shuffling, so shuffle first (seeded) or it would hold out one class.
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    model = keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ], name="mnist_cnn")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, validation_split=0.1, verbose=verbose, shuffle=True)
    return model


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python examples/demo.py", description=__doc__)
    parser.add_argument("--out", default="out/demo", help="report folder (default: out/demo)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--db", default=None, help="results store (default: $EDGEQ_DB or ~/.edgeq/results.db)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeq_device.cli.clikit import echo_err

    from edgeq.comparison.run import compare
    from edgeq.errors import EdgeqError
    from edgeq.report.tables import natural_width, rich_table, table_rows
    from edgeq.store.db import ResultsStore

    start = time.perf_counter()
    try:
        print(f"training a small CNN on {DATA / 'train'} ...", file=sys.stderr)
        model = train_cnn(epochs=args.epochs)
        trained = time.perf_counter()
        store = ResultsStore(args.db)
        comp = compare(model, calibration=DATA / "train", evaluation=DATA / "test", samples=300, store=store)
        from rich.console import Console

        console = Console()
        if not console.is_terminal:  # piped: every column, each row on one line
            console = Console(width=max(console.width, natural_width(*table_rows(comp.to_dict()))))
        console.print(rich_table(comp))
        for note in comp.notes:
            console.print(f"note: {note}")
        written = comp.save(args.out, overwrite=True)
    except EdgeqError as exc:
        echo_err(f"error: {exc}")
        return 2
    total = time.perf_counter() - start
    print(f"\nwrote {args.out}/report.html, report.md, results.json, plots/ and models/ ({len(written)} files); "
          f"results stored in {store.path}", file=sys.stderr)
    print(f"demo took {total:.0f} s (training {trained - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
