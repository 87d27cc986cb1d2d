"""The ``edgeq`` command line: ``edgeq.cli:main`` is the console script.

A thin layer over the library, one module per command group (``convert``, ``qat``, ``debug``,
``analyze``, ``export`` (in ``mcu``), ``profile``, ``compare``, ``sweep``, ``report``, ``deploy``, ``history`` with ``store``); the options they
share are defined once in :mod:`edgeq.cli.options`. Each command's docstring is its help text.
Library errors become one line on standard error and exit status 2 (see ``edgeq_device.cli.clikit``).
"""

from __future__ import annotations

import click
from edgeq_device.cli.clikit import ErrorBoundaryGroup

from edgeq._version import __version__
from edgeq.cli.analyze import analyze_cmd
from edgeq.cli.compare import compare_cmd
from edgeq.cli.convert import convert_cmd
from edgeq.cli.debug import debug_cmd
from edgeq.cli.deploy import deploy_cmd
from edgeq.cli.history import history_cmd, store_group
from edgeq.cli.mcu import export_cmd
from edgeq.cli.profile import profile_cmd
from edgeq.cli.qat import qat_cmd
from edgeq.cli.report import report_cmd
from edgeq.cli.sweep import sweep_cmd

__all__ = ["cli", "main"]


@click.group(cls=ErrorBoundaryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeq")
def cli() -> None:
    """edgeq: take a trained Keras model to a measured .tflite on a single-board computer."""


cli.add_command(convert_cmd)
cli.add_command(qat_cmd)
cli.add_command(debug_cmd)
cli.add_command(analyze_cmd)
cli.add_command(export_cmd)
cli.add_command(compare_cmd)
cli.add_command(sweep_cmd)
cli.add_command(profile_cmd)
cli.add_command(report_cmd)
cli.add_command(deploy_cmd)
cli.add_command(history_cmd)
cli.add_command(store_group)


def main() -> None:
    """Entry point of the ``edgeq`` console script."""
    cli(prog_name="edgeq")
