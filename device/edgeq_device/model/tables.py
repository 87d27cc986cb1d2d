"""The parsed ``.tflite``'s tables: :class:`FlatModel`, its subgraphs, operators, tensors and quantization.

What :func:`edgeq_device.model.flatbuffer.read_flat_model` returns and
:mod:`edgeq_device.model.validate` checks; the table reader both use to follow offsets safely.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from typing import Any, Union

import flatbuffers
from flatbuffers.table import Table

from ._opnames import DTYPE_BITS

__all__ = [
    "FlatModel",
    "ModelSource",
    "OptionsTable",
    "Operator",
    "Quantization",
    "Subgraph",
    "Tensor",
    "natural_key",
]

ModelSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

_U8 = flatbuffers.number_types.Uint8Flags
_I8 = flatbuffers.number_types.Int8Flags
_I32 = flatbuffers.number_types.Int32Flags
_U32 = flatbuffers.number_types.Uint32Flags
_I64 = flatbuffers.number_types.Int64Flags
_U64 = flatbuffers.number_types.Uint64Flags
_F32 = flatbuffers.number_types.Float32Flags
_BOOL = flatbuffers.number_types.BoolFlags



class _T:
    """A thin wrapper over a flatbuffers Table with field-number access.

    Every offset is checked against the buffer before it is followed, so a corrupt
    file raises ValueError instead of reading past its end (or, through Python's
    negative indices, from its other end).
    """

    __slots__ = ("_vt_size", "t")

    def __init__(self, buf: bytearray, pos: int) -> None:
        n = len(buf)
        if not 0 <= pos <= n - 4:
            raise ValueError(f"a table offset ({pos}) points outside the file")
        vtable = pos - int(struct.unpack_from("<i", buf, pos)[0])
        if not 0 <= vtable <= n - 4:
            raise ValueError(f"a vtable offset ({vtable}) points outside the file")
        vt_size = int(struct.unpack_from("<H", buf, vtable)[0])
        if vt_size < 4 or vt_size % 2 or vtable + vt_size > n:
            raise ValueError(f"a vtable ({vt_size} bytes at {vtable}) is malformed")
        self.t = Table(buf, pos)
        self._vt_size = vt_size

    def _off(self, field_no: int, width: int = 4) -> int:
        o = int(self.t.Offset(4 + 2 * field_no))
        if o and self.t.Pos + o + width > len(self.t.Bytes):
            raise ValueError(f"field {field_no} of a table lies outside the file")
        return o

    def _target(self, o: int, elem_size: int) -> tuple[int, int]:
        """(start, count) of the vector or string the field at offset ``o`` points to, checked."""
        n = len(self.t.Bytes)
        where = self.t.Pos + o
        target = where + int(struct.unpack_from("<I", self.t.Bytes, where)[0])
        if target + 4 > n:
            raise ValueError(f"a vector offset ({target}) points outside the file")
        count = int(struct.unpack_from("<I", self.t.Bytes, target)[0])
        if target + 4 + count * elem_size > n:
            raise ValueError(f"a vector of {count} elements at {target} runs past the end of the file")
        return target + 4, count

    def scalar(self, field_no: int, flags: type, default: int | float | bool = 0) -> int | float | bool:
        o = self._off(field_no, flags.bytewidth)  # type: ignore[attr-defined]
        return self.t.Get(flags, o + self.t.Pos) if o else default

    def string(self, field_no: int) -> str | None:
        o = self._off(field_no)
        if not o:
            return None
        start, length = self._target(o, 1)
        return bytes(self.t.Bytes[start:start + length]).decode("utf-8", "replace")

    def table(self, field_no: int) -> _T | None:
        o = self._off(field_no)
        if not o:
            return None
        return _T(self.t.Bytes, self.t.Indirect(o + self.t.Pos))

    def vec_len(self, field_no: int) -> int:
        o = self._off(field_no)
        return self._target(o, 1)[1] if o else 0

    def vec_tables(self, field_no: int) -> list[_T]:
        o = self._off(field_no)
        if not o:
            return []
        start, n = self._target(o, 4)
        return [_T(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def vec_scalars(self, field_no: int, flags: type) -> list[int | float]:
        o = self._off(field_no)
        if not o:
            return []
        size = flags.bytewidth  # type: ignore[attr-defined]
        start, n = self._target(o, size)
        code = flags.packer_type.format[-1]  # type: ignore[attr-defined]  # one unpack, not n Get calls
        return list(struct.unpack_from(f"<{n}{code}", self.t.Bytes, start))

    def vec_bytes(self, field_no: int) -> tuple[int, int]:
        """(start, length) of a ubyte vector inside the buffer."""
        o = self._off(field_no)
        if not o:
            return (0, 0)
        return self._target(o, 1)


class OptionsTable:
    """Read access to an operator's builtin options table, by ``schema.fbs`` field number.

    ``kind`` is the field's flatbuffers type: ``"i8"`` (enums such as padding or
    the fused activation), ``"u8"``, ``"i32"``, ``"bool"`` or ``"f32"``.
    """

    __slots__ = ("_t",)

    def __init__(self, table: _T) -> None:
        self._t = table

    def get(self, field_no: int, kind: str = "i32", default: int | float | bool = 0) -> int | float | bool:
        """The field's value, or ``default`` where the file leaves it out."""
        return self._t.scalar(field_no, _OPTION_FLAGS[kind], default)


_OPTION_FLAGS: dict[str, type] = {"i8": _I8, "u8": _U8, "i32": _I32, "bool": _BOOL, "f32": _F32}


@dataclass(frozen=True)
class Quantization:
    """Per-tensor or per-axis affine quantization: ``real = scale * (q - zero_point)``."""

    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def is_quantized(self) -> bool:
        return len(self.scale) > 0


@dataclass(frozen=True)
class Tensor:
    """One tensor of a subgraph."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    buffer: int
    buffer_size: int
    quantization: Quantization
    is_variable: bool = False
    is_sparse: bool = False

    @property
    def is_constant(self) -> bool:
        """True where the tensor's data is stored in the model (weights, biases, constants)."""
        return self.buffer_size > 0

    @property
    def is_dynamic(self) -> bool:
        """True where some dimension is only known at run time (-1 in the shape signature)."""
        return any(d < 0 for d in self.shape_signature)

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= max(int(d), 1)
        return n

    @property
    def nbytes(self) -> int:
        return (self.num_elements * DTYPE_BITS.get(self.dtype, 8) + 7) // 8


@dataclass(frozen=True)
class Operator:
    """One operator, in the order the interpreter runs them."""

    index: int
    opcode: str
    custom_code: str | None
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    builtin_options_type: int = 0
    builtin_options: OptionsTable | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Subgraph:
    """A subgraph: its tensors, inputs, outputs and operators."""

    name: str
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    operators: tuple[Operator, ...]


@dataclass(frozen=True)
class FlatModel:
    """What a ``.tflite`` file holds, read without any TFLite runtime."""

    version: int
    description: str
    subgraphs: tuple[Subgraph, ...]
    metadata: dict[str, bytes] = field(default_factory=dict)
    signatures: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    size: int = 0
    raw: bytes = field(default=b"", compare=False, repr=False)
    buffer_spans: tuple[tuple[int, int], ...] = field(default=(), compare=False, repr=False)

    def tensor_data(self, tensor: Tensor) -> bytes | None:
        """The stored bytes of a constant tensor (little-endian), or None where it has none here."""
        if not 0 < tensor.buffer < len(self.buffer_spans):
            return None
        start, length = self.buffer_spans[tensor.buffer]
        return self.raw[start:start + length] if length else None

    @property
    def main(self) -> Subgraph:
        """The primary subgraph (index 0), the one the interpreter runs."""
        return self.subgraphs[0]

    def signature_names(self, which: str) -> dict[int, str]:
        """Tensor index -> signature name of the ``"inputs"`` or ``"outputs"``, when there is one signature."""
        if len(self.signatures) != 1:
            return {}
        return {idx: name for name, idx in next(iter(self.signatures.values()))[which].items()}

    def io_order(self, which: str) -> tuple[int, ...]:
        """The main subgraph's input or output tensor indices in the model's declared order.

        With one signature, its names sorted naturally (edgeq writes ``output_0 .. output_n``,
        so ``output_10`` comes after ``output_9``); otherwise the subgraph's own order.
        """
        idx = self.main.inputs if which == "inputs" else self.main.outputs
        names = self.signature_names(which)
        if not names or any(i not in names for i in idx):
            return idx
        return tuple(sorted(idx, key=lambda i: natural_key(names[i])))

    def op_counts(self) -> dict[str, int]:
        """Operator counts by type over the primary subgraph."""
        counts: dict[str, int] = {}
        for op in self.main.operators:
            counts[op.opcode] = counts.get(op.opcode, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def natural_key(name: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: ``x_2`` before ``x_10``."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]
