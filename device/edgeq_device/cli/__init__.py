"""The ``edgeq-device`` command (``edgeq_device.cli:main``, ``python -m edgeq_device.cli``) and the options both CLIs share."""

from __future__ import annotations

from .commands import cli, main

__all__ = ["cli", "main"]
