"""Options and checks the ``edgeq`` commands share, each defined once.

``--json PATH|-``, ``--force`` and the preprocessing flags come from :mod:`edgeq_device.cli.clikit`, so
they parse as on ``edgeq-device``; ``--db``, ``--format``, ``--custom-objects`` and ``--verbose``
(for commands that run TensorFlow) are the host's own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from edgeq_device.cli.clikit import Choice, check_json_out, force_option, json_option, write_json_out
from edgeq_device.cli.clikit import preprocess_options as _preprocess_options
from edgeq_device.cli.clikit import verbose as is_verbose
from edgeq_device.model.preprocess import Preprocess
from edgeq_device.results.fileio import check_output_folder, check_writable

from edgeq.errors import OutputExistsError
from edgeq.inputs.models import custom_objects_from_file, load_model, register_custom_objects
from edgeq.nativelog import quiet_native_logs, show_native_logs
from edgeq.quantize.converter import default_preprocess
from edgeq.store.backend import is_server_url
from edgeq.store.db import default_db_path

__all__ = ["MODE_NAMES", "NAMED_MODE_NAMES", "Channels", "build_preprocess", "check_db", "check_free", "check_json_out", "check_output",
           "custom_objects_option", "db_option", "force_option", "format_option", "json_option", "modes_arg",
           "native_log_option", "preprocess_options", "rounding_option", "write_json_out"]

MODE_NAMES = ("float32", "dynamic", "float16", "int8", "int16x8")
NAMED_MODE_NAMES = ("int4",)
"""Modes converted only when named (``all`` is :data:`MODE_NAMES`)."""

Channels = float | tuple[float, ...] | None
"""What ``--mean``/``--std`` give a command: one number, one per channel (R, G, B), or None when not given."""

preprocess_options = _preprocess_options(size="the model's input size", color="from the model's channels",
                                         mean="0", std="255")
"""``--size``, ``--color``, ``--mean``, ``--std`` for commands that read image folders (see :func:`build_preprocess`)."""

db_option = click.option(
    "--db", "db", metavar="PATH", envvar="EDGEQ_DB", default=None, show_envvar=True,
    help="Results database: a SQLite file or a postgresql://USER@HOST/DB URL (default: $EDGEQ_DB, else "
         "~/.edgeq/results.db).")

format_option = click.option(
    "--format", "fmt", type=Choice(["table", "md", "csv", "json"]), default="table", show_default=True,
    help="table: fitted to the terminal (lesser columns left out when narrow, every column when piped); "
         "md: Markdown; csv: CSV with a header line; json: the JSON document.")


def _use_custom_objects(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Make the custom Keras objects FILE.py defines known to the model loaders for this command."""
    if value is None:
        return
    ctx.call_on_close(register_custom_objects(custom_objects_from_file(value, argument="--custom-objects")))


custom_objects_option = click.option(
    "--custom-objects", type=click.Path(), metavar="FILE.py", expose_value=False, callback=_use_custom_objects,
    help="A Python file defining the model's custom layers/functions (its `custom_objects` dict if it has "
         "one, else every class and function it defines), passed to the Keras loader.")


def native_log_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--verbose`` for commands that run TensorFlow, whose C++ log lines are hidden otherwise.

    Without it the lines TensorFlow's C++ code writes to standard error (``I0000 ...``,
    ``fully_quantize: ...``, CUDA's ``cuInit`` error) go to a temporary log that is deleted
    afterwards (see :mod:`edgeq.nativelog`); progress and errors still reach standard error.
    """
    @functools.wraps(f)
    def run(*args: Any, verbose: bool, **kwargs: Any) -> Any:
        with show_native_logs() if is_verbose(click.get_current_context(), verbose) else quiet_native_logs():
            return f(*args, **kwargs)

    return click.option("--verbose", "-v", is_flag=True,
                        help="Show TensorFlow's own log lines on standard error (as `edgeq --verbose` does; "
                             "also the traceback of an internal error).")(run)


def rounding_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--rounding nearest|optimized``: how int4 rounds its 4-bit weights."""
    return click.option(
        "--rounding", type=Choice(["optimized", "nearest"]), default="optimized", show_default=True,
        help="int4 weight rounding: optimized on the calibration data (--calib), or nearest (no data needed).")(f)


def build_preprocess(size: tuple[int, int] | None, color: str | None, mean: Channels, std: Channels,
                     model: Any = None) -> Preprocess | None:
    """A Preprocess from the preprocessing flags; flags not given come from the model's input shape.

    ``mean``/``std`` are one float or an ``(r, g, b)`` tuple (0 and 255 when not given).
    Returns None when no flag is given, letting the library derive everything.
    """
    if size is None and color is None and mean is None and std is None:
        return None
    derived = default_preprocess(load_model(model).inputs[0]) if model is not None else None
    return Preprocess(
        size=size or (derived.size if derived else None),
        color=color or (derived.color if derived else "rgb"),
        mean=0.0 if mean is None else mean,
        std=255.0 if std is None else std,
    )


def modes_arg(modes: tuple[str, ...]) -> Any:
    """``("all",)`` or all five -> "all"; one mode -> its name; several -> the list."""
    if "all" in modes or set(modes) == set(MODE_NAMES):
        return "all"
    return modes[0] if len(modes) == 1 else list(modes)


def check_output(out: Path) -> None:
    """Refuse, before any work, an --output folder (or .tflite file's folder) that cannot be written."""
    check_output_folder(out.parent if out.suffix == ".tflite" else out, argument="--output")


def check_free(paths: list[Path | None], force: bool, option: str) -> None:
    """Refuse, before any work, output files that exist (without --force) or cannot be written."""
    for p in paths:
        if p is not None and p.exists() and not force:
            raise OutputExistsError("output file exists", argument=option, received=str(p),
                                    fix=f"choose another {option} or pass --force to overwrite")
        if p is not None:
            check_writable(p, True, argument=option)


def check_db(db: str | None) -> None:
    """Refuse, before any work, a results store that does not exist yet and cannot be created."""
    if is_server_url(db or os.environ.get("EDGEQ_DB")):
        return  # a database server: reached (and checked) when the store opens
    path = Path(db).expanduser() if db else default_db_path()
    if not path.exists():
        check_writable(path, False, argument="--db")
