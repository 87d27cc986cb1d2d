"""The ``edgeq`` command line: a thin layer over the library.

Each command's docstring is its help text. Library errors become one line on
standard error and exit status 2 (see ``edgeq_device.clikit``).
"""

from __future__ import annotations

import click
from edgeq_device.clikit import ErrorBoundaryGroup

from . import __version__


@click.group(cls=ErrorBoundaryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
def cli() -> None:
    """edgeq: take a trained Keras model to a measured .tflite on a single-board computer."""


def main() -> None:
    """Entry point of the ``edgeq`` console script."""
    cli(prog_name="edgeq")


if __name__ == "__main__":
    main()
