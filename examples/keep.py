"""Train a Keras model once and keep it: the first process trains it, the others load it.

:func:`keep_trained` is what ``examples/shapes.py``'s ``EDGEQ_EXAMPLES_CACHE`` and the test suite's
shared models (``tests/conftest.py shared_keras``) both use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def keep_trained(folder: Path, name: str, train: Callable[[], Any], custom_objects: dict[str, Any] | None = None) -> Any:
    """``folder/name.keras`` loaded (``compile=False``) if there, else ``train()``'s model, saved there first.

    A lock on the folder makes one process train while the others wait, then load what it saved;
    the file appears whole (written aside, then renamed). POSIX only (``fcntl``).
    """
    import fcntl

    import keras

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.keras"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            return keras.models.load_model(path, compile=False, custom_objects=custom_objects)
        model = train()
        part = folder / f"part-{os.getpid()}.keras"
        model.save(part)
        part.replace(path)
        return model
