"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("EDGEQ_PROGRESS", "0")

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO / "datasets" / "mnist5k"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return REPO


@pytest.fixture(scope="session")
def mnist_train() -> Path:
    """The bundled MNIST digits, training split (4,000 images in class folders)."""
    return MNIST / "train"


@pytest.fixture(scope="session")
def mnist_test() -> Path:
    """The bundled MNIST digits, test split (1,000 images in class folders)."""
    return MNIST / "test"
