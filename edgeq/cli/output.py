"""How the ``edgeq`` commands print: a rich console, and row tables fitted to the terminal."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from edgeq.report.markdown import markdown_table
from edgeq.report.tables import csv_table, fitted_table, natural_width

__all__ = ["make_console", "print_rows"]


def make_console(stderr: bool = False) -> Any:
    """A rich console; not a terminal (a pipe, a file, a notebook capture) gets 140 columns, not 80,
    and lines that are never wrapped, so a path in ``wrote ...`` stays on its line for grep."""
    out = Console(stderr=stderr)
    if not out.is_terminal:
        out = Console(stderr=stderr, width=140, soft_wrap=True)
    return out


def print_rows(header: list[str], rows: list[list[str]], fmt: str, *, err: bool = False,
               drop: tuple[str, ...] = (), left: tuple[str, ...] = (), title: str | None = None,
               styles: list[str | None] | None = None) -> None:
    """Print rows as a table that fits the terminal (``fmt="table"``), Markdown or CSV.

    On a terminal, the columns in ``drop`` are left out in order until the table fits, and a
    line says which; piped or redirected, every column is kept and no row is wrapped, so
    each row stays one line for grep. Names and figures are never cut with an ellipsis.
    """
    if fmt == "md":
        click.echo(markdown_table(header, rows), nl=False, err=err)
        return
    if fmt == "csv":
        click.echo(csv_table(header, rows), nl=False, err=err)
        return
    out = Console(stderr=err)
    width = out.width if out.is_terminal else None
    if width is None:
        out = Console(stderr=err, width=max(out.width, natural_width(header, rows)))
    table, hidden = fitted_table(header, rows, width=width, drop=drop, left=left, title=title, styles=styles)
    table.title_justify = "left"
    out.print(table)
    if hidden:
        out.print(f"(left out for lack of width: {', '.join(hidden)}; --format md or csv shows every column)",
                  highlight=False, markup=False)
