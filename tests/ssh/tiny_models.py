"""A small folder of real MNIST test digits, shared by the ssh and arm64 tests.

The models they deploy are the session's (tests/conftest.py, ``digits_edgeq_tflite``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

MNIST = Path(__file__).resolve().parents[2] / "datasets" / "mnist5k"


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
