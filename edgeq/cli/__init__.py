"""The ``edgeq`` command line: ``edgeq.cli:main`` is the console script."""

from edgeq.cli.app import cli, main

__all__ = ["cli", "main"]
