"""The microcontroller options (``--board``, ``--reserve-ram``, ...) and ``edgeq export --format c``."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from edgeq_device.cli.clikit import Choice

from edgeq.errors import InvalidArgumentError
from edgeq.targets.mcu.boards import BOARDS, Board, get_board
from edgeq.targets.mcu.check import check_mcu
from edgeq.targets.mcu.compress import compress_for_tflm
from edgeq.targets.mcu.export_c import export_c

__all__ = ["export_cmd", "mcu_options", "parse_bytes", "resolve_board"]

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2}


def parse_bytes(text: str, argument: str) -> int:
    """``"65536"``, ``"64K"``, ``"64KiB"``, ``"1.5M"`` → bytes (K and M count 1,024s).

    Raises:
        InvalidArgumentError: not a non-negative size.
    """
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise InvalidArgumentError("not a size in bytes", argument=argument, received=text,
                                   fix="give bytes, or KiB/MiB like 64K or 1.5M")
    return int(float(m.group(1)) * _UNITS[unit])


def mcu_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--board``, ``--boards-file``, ``--reserve-ram``, ``--reserve-flash`` (for ``--target mcu``)."""
    opts = [
        click.option("--board", default=None, metavar="NAME",
                     help=f"With --target mcu: say whether the model fits this board ({', '.join(BOARDS)}, "
                          "or one of --boards-file)."),
        click.option("--boards-file", type=click.Path(), default=None, metavar="TOML",
                     help="More boards: [boards.NAME] tables with ram_kib and flash_kib."),
        click.option("--reserve-ram", default="0", metavar="SIZE", show_default=True,
                     help="RAM the rest of the firmware needs beside the arena (bytes, or 64K, 1M)."),
        click.option("--reserve-flash", default="0", metavar="SIZE", show_default=True,
                     help="Flash the rest of the firmware needs beside the model and the interpreter."),
    ]
    return functools.reduce(lambda f, o: o(f), reversed(opts), func)


def resolve_board(board: str | None, boards_file: str | None, target: str | None) -> Board | None:
    """The ``--board`` asked for, or None; refuses a board without ``--target mcu``."""
    if board is None:
        return None
    if target != "mcu":
        raise InvalidArgumentError("--board goes with --target mcu", argument="--board", received=board,
                                   fix="add --target mcu")
    return get_board(board, boards_file)


@click.command("export")
@click.argument("model", type=click.Path())
@click.option("--format", "fmt", type=Choice(["c"]), default="c", show_default=True,
              help="c: C/C++ sources for a TensorFlow Lite Micro firmware.")
@click.option("-o", "--output", default=".", show_default=True, metavar="FOLDER", help="Folder for the files.")
@click.option("--name", default=None, help="Stem of the files and symbols [the model file's name].")
@click.option("--compress", "compress", is_flag=True,
              help="Compress the weights with TFLM's lookup tables first (for clustered or few-valued weights).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def export_cmd(model: str, fmt: str, output: str, name: str | None, compress: bool, force: bool) -> None:
    """Export MODEL.tflite for a microcontroller: the model as an aligned C array with the measured arena
    size, an op resolver that registers exactly its operators, and a minimal main.

    The model is loaded and run in TFLM's interpreter first: a model it cannot run is refused with the
    operators named.
    """
    path = Path(model)
    if not path.is_file():
        raise InvalidArgumentError("no such file", argument="MODEL", received=model, fix="give a .tflite file")
    data = path.read_bytes()
    if compress:
        result = compress_for_tflm(data)
        click.echo(result.summary())
        if not result.report.supported or not result.same_outputs:
            raise InvalidArgumentError("TFLM does not give the uncompressed model's outputs for the compressed one, so "
                                       "nothing was written", argument="--compress", received=result.report.summary(),
                                       fix="export without --compress")
        data, report = result.model_bytes, result.report
    else:
        report = check_mcu(data)
    click.echo(report.summary())
    done = export_c(data, output, name or path.stem, report=report, overwrite=force)
    click.echo(str(done))
