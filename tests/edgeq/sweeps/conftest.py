"""Fixtures of the sweep tests: three tiny digits CNNs saved as .keras files (the demo's CNN at three widths)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """``digits_w2``, ``digits_w4`` and ``digits_w8``: examples/sweep_models.py's CNN, one epoch on 600 digits."""
    pytest.importorskip("keras")
    from sweep_models import digits_cnn

    root = tmp_path_factory.mktemp("sweep_models")
    paths = []
    for width, dense in ((2, 8), (4, 16), (8, 32)):
        p = root / f"digits_w{width}.keras"
        digits_cnn(width=width, dense=dense, epochs=1, images=600).save(p)
        paths.append(p)
    return paths
