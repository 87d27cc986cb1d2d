"""Scoring a model: the task registry and each task's evaluation (classification, fidelity, detection, segmentation)."""

from __future__ import annotations

import importlib
import warnings


def __getattr__(name: str) -> object:
    """The names of the former ``edgeq_device.tasks`` module (now ``tasks.registry``), for one release."""
    registry = importlib.import_module(f"{__name__}.registry")
    if name.startswith("__") or name not in getattr(registry, "__all__", ()):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"{__name__}.{name} moved to {__name__}.registry.{name}; the old path goes in the next release",
                  DeprecationWarning, stacklevel=2)
    return getattr(registry, name)
