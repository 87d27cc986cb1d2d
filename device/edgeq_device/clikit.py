"""What both CLIs share: library errors become one clean line and a non-zero exit."""

from __future__ import annotations

import sys
from typing import Any

import click

from .errors import EdgeqError

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "ErrorBoundaryGroup", "echo_err"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def echo_err(message: str) -> None:
    """Print one line to standard error."""
    click.echo(message, err=True)


class ErrorBoundaryGroup(click.Group):
    """A click group whose commands turn :class:`EdgeqError` into ``error: ...`` and exit 2.

    No traceback reaches the user for errors edgeq raises on purpose; Ctrl-C
    exits 130 with one line. Unexpected exceptions still show a traceback,
    because those are bugs to report.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EdgeqError as exc:
            echo_err(f"error: {exc}")
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            echo_err("interrupted")
            sys.exit(EXIT_INTERRUPTED)
