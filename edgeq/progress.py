"""Progress display for long work (calibration, evaluation, training, fleets).

Progress goes to standard error through rich, so it never mixes with JSON on
standard output. Set ``EDGEQ_PROGRESS=0`` to silence it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

__all__ = ["progress_enabled", "task_progress"]

_console = Console(stderr=True)


def progress_enabled(show: bool | None = None) -> bool:
    """Whether to show progress: ``show`` if given, else ``EDGEQ_PROGRESS`` (default on)."""
    if show is not None:
        return show
    return os.environ.get("EDGEQ_PROGRESS", "1") not in ("0", "false", "no")


class _Tick:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._p, self._t = progress, task

    def __call__(self, n: int = 1) -> None:
        if self._p is not None and self._t is not None:
            self._p.advance(TaskID(self._t), n)


@contextmanager
def task_progress(description: str, total: int | None, show: bool | None = None) -> Iterator[_Tick]:
    """A context giving a ``tick(n=1)`` callable that advances a progress bar."""
    if not progress_enabled(show):
        yield _Tick(None, None)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=_console, transient=True) as p:
        yield _Tick(p, p.add_task(description, total=total))
