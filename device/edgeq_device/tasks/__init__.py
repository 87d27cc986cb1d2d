"""Scoring a model: the task registry and each task's evaluation (classification, fidelity, detection, segmentation)."""

from __future__ import annotations

from .._compat import old_tasks_name


def __getattr__(name: str) -> object:
    """The names of the former ``edgeq_device.tasks`` module (now ``tasks.registry``), for one release."""
    return old_tasks_name(name)
