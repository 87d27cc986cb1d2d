"""A reader for the ``.tflite`` flatbuffer that needs only the ``flatbuffers`` package.

It reads what ``edgeq-device info``, the edgeq metadata and the host's model
analysis need: operator codes, subgraphs with their tensors (shape, shape
signature, dtype, quantization, buffer) and operators in execution order,
buffer sizes, metadata entries and signature definitions. Field numbers follow
TFLite's ``schema.fbs``.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import flatbuffers
from flatbuffers.table import Table

from ._opnames import BUILTIN_OPS, DTYPE_BITS, TENSOR_TYPES
from .errors import ModelFileError
from .validate import validate_flat_model

__all__ = [
    "FlatModel",
    "OptionsTable",
    "Operator",
    "Quantization",
    "Subgraph",
    "Tensor",
    "load_model_bytes",
    "natural_key",
    "read_flat_model",
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


def load_model_bytes(model: ModelSource, argument: str = "model") -> bytes:
    """Return the bytes of a ``.tflite`` given as a path or bytes, with clear errors."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    path = Path(os.fspath(model))
    if not path.exists():
        raise ModelFileError(
            "model file not found", argument=argument, received=str(path),
            fix="give the path of an existing .tflite file",
        )
    if path.is_dir():
        raise ModelFileError(
            "expected a .tflite file, got a folder", argument=argument, received=str(path),
            fix="give the path of a .tflite file",
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelFileError(
            f"cannot read model file: {exc.strerror}", argument=argument, received=str(path),
            fix="check the file's permissions",
        ) from exc


def read_flat_model(model: ModelSource, argument: str = "model") -> FlatModel:
    """Parse a ``.tflite`` flatbuffer (path or bytes) into a :class:`FlatModel`.

    The model is checked (:func:`edgeq_device.validate.validate_flat_model`) before it is
    returned, so that what reaches a TFLite runtime has consistent indices, shapes,
    buffer sizes and quantization parameters.

    Raises:
        ModelFileError: the file is missing, not a TFLite flatbuffer, truncated, or fails
            validation.
    """
    data = load_model_bytes(model, argument)
    where = str(model) if not isinstance(model, (bytes, bytearray, memoryview)) else f"<{len(data)} bytes>"
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ModelFileError(
            "not a TFLite model (no 'TFL3' file identifier)", argument=argument, received=where,
            fix="give a .tflite file written by a TFLite converter",
        )
    try:
        flat = _parse(bytearray(data))
    except (IndexError, ValueError, UnicodeDecodeError, TypeError, struct.error) as exc:
        raise ModelFileError(
            f"the TFLite flatbuffer is truncated or corrupt ({exc})", argument=argument, received=where,
            fix="convert or copy the model again",
        ) from exc
    validate_flat_model(flat, argument=argument, where=where)
    return flat


def _parse(buf: bytearray) -> FlatModel:
    size = len(buf)
    root = _T(buf, flatbuffers.encode.Get(flatbuffers.packer.uoffset, buf, 0))
    if root.t.Pos >= size:
        raise ValueError("root table out of range")

    buffers: list[tuple[int, int, int]] = []  # (data_start, data_len, external_size)
    for i, b in enumerate(root.vec_tables(4)):
        start, length = b.vec_bytes(0)
        offset, ext = int(b.scalar(1, _U64, 0)), int(b.scalar(2, _U64, 0))
        if offset > 1 and offset + ext > size:
            raise ValueError(f"buffer {i}'s data ({ext} bytes at offset {offset}) lies outside the "
                             f"{size}-byte file")
        buffers.append((start, length, ext if offset > 1 else 0))

    opcodes: list[tuple[str, str | None, int]] = []
    for oc in root.vec_tables(1):
        code = max(int(oc.scalar(0, _I8, 0)), int(oc.scalar(3, _I32, 0)))
        custom = oc.string(1)
        name = "CUSTOM" if code == 32 else BUILTIN_OPS.get(code, f"BUILTIN_{code}")
        opcodes.append((name, custom, int(oc.scalar(2, _I32, 1))))

    subgraphs: list[Subgraph] = []
    for sg in root.vec_tables(2):
        tensors = []
        for i, t in enumerate(sg.vec_tables(0)):
            shape = tuple(int(d) for d in t.vec_scalars(0, _I32))
            sig = tuple(int(d) for d in t.vec_scalars(7, _I32))
            if len(sig) != len(shape):  # none, or one the runtime ignores too: the shape is the signature
                sig = shape
            bidx = int(t.scalar(2, _U32, 0))
            bsize = 0
            if 0 < bidx < len(buffers):
                _, length, ext = buffers[bidx]
                bsize = length or ext
            q = t.table(4)
            quant = Quantization()
            if q is not None:
                quant = Quantization(
                    scale=tuple(float(s) for s in q.vec_scalars(2, _F32)),
                    zero_point=tuple(int(z) for z in q.vec_scalars(3, _I64)),
                    quantized_dimension=int(q.scalar(6, _I32, 0)),
                )
            tensors.append(Tensor(
                index=i,
                name=t.string(3) or f"tensor_{i}",
                dtype=TENSOR_TYPES.get(int(t.scalar(1, _I8, 0)), "UNKNOWN"),
                shape=shape,
                shape_signature=sig,
                buffer=bidx,
                buffer_size=bsize,
                quantization=quant,
                is_variable=bool(t.scalar(5, _BOOL, False)),
                is_sparse=t.table(6) is not None,
            ))
        ops = []
        for j, op in enumerate(sg.vec_tables(3)):
            code_index = int(op.scalar(0, _U32, 0))
            if code_index >= len(opcodes):
                raise ValueError(f"operator {j} of subgraph {len(subgraphs)} has opcode index "
                                 f"{code_index}, the model has {len(opcodes)} operator codes")
            name, custom, version = opcodes[code_index]
            ops.append(Operator(
                index=j, opcode=name, custom_code=custom, version=version,
                inputs=tuple(int(x) for x in op.vec_scalars(1, _I32)),
                outputs=tuple(int(x) for x in op.vec_scalars(2, _I32)),
                builtin_options_type=int(op.scalar(3, _U8, 0)),
                builtin_options=(OptionsTable(opt) if (opt := op.table(4)) is not None else None),
            ))
        subgraphs.append(Subgraph(
            name=sg.string(4) or "",
            tensors=tuple(tensors),
            inputs=tuple(int(x) for x in sg.vec_scalars(1, _I32)),
            outputs=tuple(int(x) for x in sg.vec_scalars(2, _I32)),
            operators=tuple(ops),
        ))
    if not subgraphs:
        raise ValueError("model has no subgraph")

    metadata: dict[str, bytes] = {}
    for m in root.vec_tables(6):
        name = m.string(0) or ""
        bidx = int(m.scalar(1, _U32, 0))
        if bidx < len(buffers):
            start, length, _ = buffers[bidx]
            metadata[name] = bytes(buf[start:start + length])

    signatures: dict[str, dict[str, dict[str, int]]] = {}
    for sd in root.vec_tables(7):
        key = sd.string(2) or ""
        signatures[key] = {
            "inputs": {(tm.string(0) or ""): int(tm.scalar(1, _U32, 0)) for tm in sd.vec_tables(0)},
            "outputs": {(tm.string(0) or ""): int(tm.scalar(1, _U32, 0)) for tm in sd.vec_tables(1)},
        }

    return FlatModel(
        version=int(root.scalar(0, _U32, 0)),
        description=root.string(3) or "",
        subgraphs=tuple(subgraphs),
        metadata=metadata,
        signatures=signatures,
        size=size,
        raw=bytes(buf),
        buffer_spans=tuple((start, length) for start, length, _ in buffers),
    )
