"""Quantization modes and I/O types, and the parsing of the options that name them.

========  ==============================  ===========  =========================
mode      what it is                      calibration  I/O (``io=``)
========  ==============================  ===========  =========================
float32   baseline                        no           float
dynamic   int8 weights, float activations no           float
float16   float16 weights                 no           float
int8      full integer                    yes          float, int8 or uint8
int16x8   int16 activations, int8 weights yes          float or int16
int4      4-bit weights, float activations optimized   float
                                          rounding
========  ==============================  ===========  =========================
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, TypeVar

from edgeq.errors import InvalidArgumentError

__all__ = ["MODES", "VALID_IO", "IOType", "Mode", "check_io", "enum_arg", "positive_int"]


class Mode(str, Enum):
    """Quantization mode of a conversion."""

    FLOAT32 = "float32"
    DYNAMIC = "dynamic"
    FLOAT16 = "float16"
    INT8 = "int8"
    INT16X8 = "int16x8"
    INT4 = "int4"

    @property
    def needs_calibration(self) -> bool:
        """True for the modes that quantize activations (int8, int16x8)."""
        return self in (Mode.INT8, Mode.INT16X8)


MODES: tuple[Mode, ...] = tuple(m for m in Mode if m is not Mode.INT4)
"""The modes ``"all"`` means; ``int4`` (4-bit weights) is converted when named."""


class IOType(str, Enum):
    """The type of the converted model's inputs and outputs."""

    FLOAT = "float"
    INT8 = "int8"
    UINT8 = "uint8"
    INT16 = "int16"


VALID_IO: dict[Mode, frozenset[IOType]] = {
    Mode.FLOAT32: frozenset({IOType.FLOAT}), Mode.DYNAMIC: frozenset({IOType.FLOAT}),
    Mode.FLOAT16: frozenset({IOType.FLOAT}),
    Mode.INT8: frozenset({IOType.FLOAT, IOType.INT8, IOType.UINT8}),
    Mode.INT16X8: frozenset({IOType.FLOAT, IOType.INT16}),
    Mode.INT4: frozenset({IOType.FLOAT}),
}
"""The I/O types each mode can give its model."""

_E = TypeVar("_E", bound=Enum)


def enum_arg(cls: type[_E], value: Any, argument: str, allowed: Sequence[str] | None = None) -> _E:
    """``value`` as a member of ``cls`` (a member, or its value in any case).

    Raises:
        InvalidArgumentError: not one of the values; ``allowed`` (default: the members'
            values) is what the message offers.
    """
    try:
        return value if isinstance(value, cls) else cls(str(value).lower())
    except ValueError:
        choices = allowed or [str(m.value) for m in cls]
        raise InvalidArgumentError("unknown value", argument=argument, received=value,
                                   fix=f"use one of: {', '.join(choices)}") from None


def check_io(mode: Mode, io: IOType) -> None:
    """Raise :class:`InvalidArgumentError` when ``mode`` cannot give its model ``io``."""
    if io not in VALID_IO[mode]:
        raise InvalidArgumentError(
            f"I/O type {io.value!r} is not available in mode {mode.value!r}", argument="io", received=io.value,
            fix=f"use io={sorted(v.value for v in VALID_IO[mode])} for {mode.value}, or mode='int8' for int8/uint8 I/O")


def positive_int(value: Any, argument: str, example: str, *, optional: bool = False) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is a positive integer (or None when ``optional``)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or value < 1:
        raise InvalidArgumentError("must be a positive integer", argument=argument, received=value,
                                   fix=f"give e.g. {argument}={example}")
