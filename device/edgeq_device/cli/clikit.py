"""What both CLIs share: validated choices, the ``--json``/``--force`` and preprocessing options, and
errors as one clean line with a non-zero exit.

``edgeq`` and ``edgeq-device`` declare these options through the functions here, so a flag parses
the same on the laptop and on a board.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO, TypeVar

import click

from ..errors import EdgeqError, EdgeqWarning, OutputExistsError
from ..model.preprocess import parse_channels, parse_size
from ..results.fileio import atomic_write_text, check_writable

__all__ = ["EXIT_ERROR", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "Choice", "ChoiceList", "ErrorBoundaryGroup",
           "check_json_out", "echo_err", "flatten_choices", "force_option", "json_option", "preprocess_options",
           "verbose", "write_json_out"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 70  # EX_SOFTWARE of sysexits.h: a bug in edgeq, not a mistake of the user

_VERBOSE = "edgeq.verbose"


def echo_err(message: str) -> None:
    """Print one line to standard error."""
    click.echo(message, err=True)


def _choices_fix(choices: Sequence[str]) -> str:
    return "use one of: " + ", ".join(choices)


class Choice(click.Choice):
    """A click choice (case-insensitive) whose error names what was received and lists the valid values."""

    def __init__(self, choices: Sequence[str], case_sensitive: bool = False) -> None:
        super().__init__(list(choices), case_sensitive=case_sensitive)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"unknown value (received {value!r}); {_choices_fix([str(c) for c in self.choices])}",
                      param, ctx)


class ChoiceList(click.ParamType):
    """Comma-separated values, each one of ``choices``: ``int8,float16`` becomes ``("int8", "float16")``.

    With ``multiple=True`` on the option each repeat gives a tuple; :func:`flatten_choices`
    as the option's callback joins them.
    """

    name = "list"

    def __init__(self, choices: Sequence[str]) -> None:
        self.choices = tuple(choices)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:  # type: ignore[override]
        return "[" + "|".join(self.choices) + "],..."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        items = [v.strip().lower() for v in str(value).split(",") if v.strip()]
        bad = [v for v in items if v not in self.choices]
        if bad or not items:
            what = "no value" if not bad else "unknown value" if bad == [str(value).strip().lower()] \
                else f"unknown value {bad[0]!r}"
            self.fail(f"{what} (received {value!r}); {_choices_fix(self.choices)}", param, ctx)
        return tuple(items)


def flatten_choices(ctx: click.Context, param: click.Parameter, value: Iterable[Any]) -> tuple[str, ...]:
    """Callback of a ``multiple=True`` :class:`ChoiceList` option: all values, repeats dropped, in order."""
    if value is None:
        return ()
    flat: list[str] = []
    for group in value:
        flat.extend(group if isinstance(group, tuple) else (group,))
    return tuple(dict.fromkeys(flat))


# --- options both CLIs declare: --json PATH|-, --force, the preprocessing flags -----------------------

def json_option(help: str = "Also write the result as JSON to PATH (atomically), or only JSON to standard "
                            "output with '-'.") -> Callable[[F], F]:
    """``--json PATH|-`` (the command's ``json_out`` argument); see :func:`check_json_out`, :func:`write_json_out`."""
    return click.option("--json", "json_out", metavar="PATH|-", default=None, help=help)


def force_option(help: str = "Overwrite the --json file if it exists.") -> Callable[[F], F]:
    """``--force`` (the command's ``force`` argument): overwrite files the command writes."""
    return click.option("--force", is_flag=True, help=help)


def check_json_out(json_out: str | None, force: bool) -> None:
    """Refuse, before any work, a ``--json`` file that exists (without ``--force``) or cannot be written.

    Raises:
        OutputExistsError: the file exists and ``force`` is False.
        OutputError: the file cannot be written (see :mod:`edgeq_device.results.fileio`).
    """
    if not json_out or json_out == "-":
        return
    try:
        check_writable(json_out, force, argument="--json")
    except OutputExistsError as exc:  # say it in the command line's words
        raise OutputExistsError(exc.message, argument="--json", received=exc.received,
                                fix="choose another --json or pass --force to overwrite") from None


def write_json_out(json_out: str, text: str, force: bool) -> Path | None:
    """Write JSON ``text`` where ``--json`` says: standard output for ``-``, else the file, atomically.

    Returns the file written, or None for standard output.
    """
    text = text if text.endswith("\n") else text + "\n"
    if json_out == "-":
        click.echo(text, nl=False)
        return None
    return atomic_write_text(json_out, text, overwrite=force, argument="--json")


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    return None if value is None else parse_size(value, argument="--size")


def _channels(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    return None if value is None else parse_channels(value, argument=f"--{param.name}")


def preprocess_options(*, size: str, color: str, mean: str, std: str) -> Callable[[F], F]:
    """``--size WxH``, ``--color rgb|l``, ``--mean M|R,G,B`` and ``--std S|R,G,B``: how an image becomes input.

    The command receives ``size`` as ``(width, height)``, ``mean``/``std`` as one float or an
    ``(r, g, b)`` tuple, each None when not given. The arguments say, for the help text, what
    each flag defaults to on this command.
    """
    options = [
        click.option("--size", callback=_size, metavar="WxH",
                     help=f"Resize images to WIDTHxHEIGHT, e.g. 224x224 (default: {size})."),
        click.option("--color", type=Choice(["rgb", "l"]), help=f"Channels: rgb or l (grayscale) (default: {color})."),
        click.option("--mean", callback=_channels, metavar="M|R,G,B",
                     help=f"Float input = (pixel - MEAN) / STD, pixels 0..255; one number or R,G,B [{mean}]."),
        click.option("--std", callback=_channels, metavar="S|R,G,B",
                     help=f"See --mean; one number or R,G,B [{std}]."),
    ]

    def add(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return add


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


def _hint(exc: click.BadParameter) -> str:
    param = exc.param
    if exc.param_hint is not None:
        return exc.param_hint if isinstance(exc.param_hint, str) else "/".join(exc.param_hint)
    if isinstance(param, click.Option) and param.opts:
        return max(param.opts, key=len)
    if param is not None:
        return param.human_readable_name
    return "argument"


def _set_verbose(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    ctx.meta[_VERBOSE] = value
    return value


def verbose(ctx: click.Context, asked: bool = False) -> bool:
    """Whether this run is verbose: the group's ``--verbose`` (or ``EDGEQ_VERBOSE=1``), or a
    command's own ``--verbose`` (``asked``), which then also counts for the group (tracebacks)."""
    if asked:
        ctx.meta[_VERBOSE] = True
    return bool(ctx.meta.get(_VERBOSE))


class ErrorBoundaryGroup(click.Group):
    """A click group whose commands end with one line on standard error, never a traceback.

    - an :class:`EdgeqError` (the library's documented errors) prints ``error: ...`` and exits 2;
    - a bad option value (an unknown choice, a number out of range) prints
      ``error: --option: ...`` and exits 2; a missing argument or unknown option still
      prints click's usage;
    - anything else is a bug: ``internal error: <type>: <message>`` and exit 70, with the
      traceback only under ``--verbose`` (or ``EDGEQ_VERBOSE=1``);
    - Ctrl-C exits 130 with one line;
    - an :class:`EdgeqWarning` is one ``warning: ...`` line on standard error.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(click.Option(
            ["--verbose"], is_flag=True, expose_value=False, envvar="EDGEQ_VERBOSE", callback=_set_verbose,
            help="Show the traceback of an internal error (a bug to report), and TensorFlow's own log lines."))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _one_line_warnings(warnings.showwarning)
                return super().invoke(ctx)
        except EdgeqError as exc:
            echo_err(f"error: {exc}")
            sys.exit(EXIT_ERROR)
        except click.MissingParameter:
            raise
        except click.BadParameter as exc:
            echo_err(f"error: {_hint(exc)}: {exc.message}")
            sys.exit(EXIT_ERROR)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            echo_err("interrupted")
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            if ctx.meta.get(_VERBOSE):
                raise
            text = " ".join(str(exc).split())
            text = text if len(text) <= 300 else text[:297] + "..."
            name = ctx.find_root().info_name or "edgeq"
            echo_err(f"internal error: {type(exc).__name__}: {text} (a bug in edgeq; run `{name} --verbose ...` "
                     "for the traceback and report it)")
            sys.exit(EXIT_INTERNAL)
