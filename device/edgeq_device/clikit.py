"""What both CLIs share: library errors become one clean line and a non-zero exit."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from typing import Any, TextIO

import click

from .errors import EdgeqError, EdgeqWarning

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "ErrorBoundaryGroup", "echo_err"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def echo_err(message: str) -> None:
    """Print one line to standard error."""
    click.echo(message, err=True)


def _one_line_warnings(shown_before: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning``: an :class:`EdgeqWarning` is one ``warning: ...`` line on
    standard error; other warnings go to ``shown_before``."""

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, EdgeqWarning):
            echo_err(f"warning: {message}")
        else:
            shown_before(message, category, filename, lineno, file, line)

    return show


class ErrorBoundaryGroup(click.Group):
    """A click group whose commands turn :class:`EdgeqError` into ``error: ...`` and exit 2.

    No traceback reaches the user for errors edgeq raises on purpose; Ctrl-C
    exits 130 with one line. Unexpected exceptions still show a traceback,
    because those are bugs to report. An :class:`EdgeqWarning` is one
    ``warning: ...`` line on standard error.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warnings(warnings.showwarning)
                return super().invoke(ctx)
        except EdgeqError as exc:
            echo_err(f"error: {exc}")
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            echo_err("interrupted")
            sys.exit(EXIT_INTERRUPTED)
