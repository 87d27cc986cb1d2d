"""Microcontroller boards as data: RAM and flash from their datasheets, and whether a model fits.

:data:`BOARDS` holds common boards; a TOML file adds or replaces boards::

    [boards.my-board]
    ram_kib = 192          # on-chip RAM the arena can use
    flash_kib = 512        # flash for the program and the model
    external_ram_kib = 0   # optional: PSRAM or SDRAM on the board (slower; the arena can live there)
    note = "STM32L4R5, 640 KB SRAM of which 192 KB for the application"

KiB means 1,024 bytes (what datasheets call KB for memories). A board "fits" a model when the
TFLM arena plus ``reserve_ram`` fits in its on-chip RAM, and the model plus the interpreter's code
estimate plus ``reserve_flash`` fits in its flash (:func:`board_fit`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeq._toml import toml
from edgeq.errors import InvalidArgumentError

__all__ = ["BOARDS", "Board", "BoardFit", "board_fit", "get_board", "load_boards"]

KIB = 1024


@dataclass(frozen=True)
class Board:
    """A board's memories in bytes, and where the figures come from."""

    name: str
    ram_bytes: int
    flash_bytes: int
    external_ram_bytes: int = 0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"name": self.name, "ram_bytes": self.ram_bytes, "flash_bytes": self.flash_bytes,
                "external_ram_bytes": self.external_ram_bytes, "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Board:
        """Read :meth:`to_dict`'s form back."""
        return cls(str(data["name"]), int(data["ram_bytes"]), int(data["flash_bytes"]),
                   int(data.get("external_ram_bytes", 0)), str(data.get("note", "")))


def _b(name: str, ram_kib: int, flash_kib: int, note: str, external_kib: int = 0) -> Board:
    return Board(name, ram_kib * KIB, flash_kib * KIB, external_kib * KIB, note)


BOARDS: dict[str, Board] = {b.name: b for b in (
    _b("arduino-nano-33-ble-sense", 256, 1024, "nRF52840 (Nordic nRF52840 product specification): 256 KB RAM, "
       "1 MB flash"),
    _b("pico", 264, 2048, "Raspberry Pi Pico, RP2040 (RP2040 datasheet): 264 KB SRAM; 2 MB QSPI flash on the board"),
    _b("pico2", 520, 4096, "Raspberry Pi Pico 2, RP2350 (RP2350 datasheet): 520 KB SRAM; 4 MB QSPI flash on the "
       "board"),
    _b("esp32-s3-n8r8", 512, 8192, "ESP32-S3-DevKitC-1 with the ESP32-S3-WROOM-1-N8R8 module (ESP32-S3 datasheet): "
       "512 KB internal SRAM, 8 MB octal PSRAM, 8 MB flash; part of the SRAM goes to ESP-IDF and Wi-Fi",
       external_kib=8192),
    _b("stm32h747i-disco", 1024, 2048, "STM32H747I-DISCO, STM32H747XI (datasheet DS12930): 1 MB RAM (with TCM), "
       "2 MB flash; 32 MB SDRAM on the board", external_kib=32768),
    _b("stm32f746g-disco", 320, 1024, "32F746GDISCOVERY, STM32F746NG (datasheet DS10916): 320 KB RAM, 1 MB flash; "
       "8 MB SDRAM (usable 8 MB of 16 MB) on the board", external_kib=8192),
    _b("sparkfun-edge", 384, 1024, "SparkFun Edge, Ambiq Apollo3 Blue (Apollo3 datasheet): 384 KB SRAM, 1 MB flash"),
)}
"""The built-in boards by name (lower case, dashes)."""


def load_boards(path: str | os.PathLike[str] | None = None) -> dict[str, Board]:
    """:data:`BOARDS`, with the boards of the TOML file ``path`` added (a same name replaces).

    Raises:
        InvalidArgumentError: the file is missing, not TOML, or a board lacks ``ram_kib`` or
            ``flash_kib`` (or has a value that is not a positive number).
    """
    boards = dict(BOARDS)
    if path is None:
        return boards
    p = Path(path)
    try:
        data = toml.loads(p.read_text())
    except (OSError, toml.TOMLDecodeError) as e:
        raise InvalidArgumentError(f"cannot read the boards file: {e}", argument="boards", received=str(p),
                                   fix="pass a TOML file with [boards.NAME] tables (ram_kib, flash_kib)") from e
    table = data.get("boards")
    if not isinstance(table, dict) or not table:
        raise InvalidArgumentError("the boards file has no [boards.NAME] table", argument="boards", received=str(p),
                                   fix="add e.g. [boards.my-board] with ram_kib = 256 and flash_kib = 1024")
    for name, entry in table.items():
        values = {}
        for key in ("ram_kib", "flash_kib", "external_ram_kib"):
            v = entry.get(key, 0 if key == "external_ram_kib" else None) if isinstance(entry, dict) else None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (v == 0 and key != "external_ram_kib"):
                raise InvalidArgumentError(f"board {name!r}: {key} must be a positive number of KiB",
                                           argument="boards", received=v, fix=f"set {key} in [boards.{name}]")
            values[key] = int(v * KIB)
        boards[str(name).lower()] = Board(str(name).lower(), values["ram_kib"], values["flash_kib"],
                                          values["external_ram_kib"], str(entry.get("note", f"from {p}")))
    return boards


def get_board(name: str, path: str | os.PathLike[str] | None = None) -> Board:
    """The board called ``name`` (case-insensitive) among :func:`load_boards`'s.

    Raises:
        InvalidArgumentError: no board has that name; the message lists the names there are.
    """
    boards = load_boards(path)
    board = boards.get(name.strip().lower())
    if board is None:
        raise InvalidArgumentError("unknown board", argument="board", received=name,
                                   fix=f"choose one of {', '.join(sorted(boards))} or add it in a boards TOML file")
    return board


@dataclass(frozen=True)
class BoardFit:
    """Whether a model fits a board: bytes needed and bytes there, for RAM and flash."""

    board: Board
    ram_needed: int
    flash_needed: int
    reserve_ram: int = 0
    reserve_flash: int = 0

    @property
    def ram_headroom(self) -> int:
        """On-chip RAM left after the arena and the reserve (negative: short by that much)."""
        return self.board.ram_bytes - self.ram_needed - self.reserve_ram

    @property
    def flash_headroom(self) -> int:
        """Flash left after the model, the code estimate and the reserve (negative: short)."""
        return self.board.flash_bytes - self.flash_needed - self.reserve_flash

    @property
    def fits(self) -> bool:
        """RAM and flash both fit, with the reserves."""
        return self.ram_headroom >= 0 and self.flash_headroom >= 0

    def summary(self) -> str:
        """One line: fits or not, and by how much, for RAM and flash."""
        def part(what: str, headroom: int, have: int) -> str:
            verb = "left" if headroom >= 0 else "short"
            return f"{what} {abs(headroom) / KIB:.1f} KiB {verb} of {have / KIB:.0f} KiB"

        text = (f"{self.board.name}: {'fits' if self.fits else 'does not fit'} "
                f"({part('RAM', self.ram_headroom, self.board.ram_bytes)}; "
                f"{part('flash', self.flash_headroom, self.board.flash_bytes)}")
        if self.reserve_ram or self.reserve_flash:
            text += f"; reserving {self.reserve_ram / KIB:.0f} KiB RAM, {self.reserve_flash / KIB:.0f} KiB flash"
        text += ")"
        if self.ram_headroom < 0 and self.board.external_ram_bytes >= self.ram_needed + self.reserve_ram:
            text += f"; the arena fits in the board's {self.board.external_ram_bytes / KIB:.0f} KiB external RAM"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"board": self.board.to_dict(), "ram_needed": self.ram_needed, "flash_needed": self.flash_needed,
                "reserve_ram": self.reserve_ram, "reserve_flash": self.reserve_flash, "fits": self.fits,
                "ram_headroom": self.ram_headroom, "flash_headroom": self.flash_headroom}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoardFit:
        """Read :meth:`to_dict`'s form back."""
        return cls(Board.from_dict(data["board"]), int(data["ram_needed"]), int(data["flash_needed"]),
                   int(data.get("reserve_ram", 0)), int(data.get("reserve_flash", 0)))


def board_fit(board: Board, ram_needed: int, flash_needed: int, reserve_ram: int = 0,
              reserve_flash: int = 0) -> BoardFit:
    """Whether ``ram_needed`` and ``flash_needed`` bytes fit ``board`` with the reserves.

    Raises:
        InvalidArgumentError: a reserve is negative.
    """
    for arg, v in (("reserve_ram", reserve_ram), ("reserve_flash", reserve_flash)):
        if v < 0:
            raise InvalidArgumentError("a reserve cannot be negative", argument=arg, received=v,
                                       fix="pass the bytes your application needs beside the model (0 or more)")
    return BoardFit(board, int(ram_needed), int(flash_needed), int(reserve_ram), int(reserve_flash))
