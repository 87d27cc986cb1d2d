"""A reader for the ``.tflite`` flatbuffer that needs only the ``flatbuffers`` package.

It reads what ``edgeq-device info``, the edgeq metadata and the host's model
analysis need: operator codes, subgraphs with their tensors (shape, shape
signature, dtype, quantization, buffer) and operators in execution order,
buffer sizes, metadata entries and signature definitions. Field numbers follow
TFLite's ``schema.fbs``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import flatbuffers

from ..errors import ModelFileError
from ._opnames import BUILTIN_OPS, TENSOR_TYPES
from .tables import (
    _BOOL,
    _F32,
    _I8,
    _I32,
    _I64,
    _T,
    _U8,
    _U32,
    _U64,
    FlatModel,
    ModelSource,
    Operator,
    OptionsTable,
    Quantization,
    Subgraph,
    Tensor,
    natural_key,
)
from .validate import validate_flat_model

__all__ = [
    "FlatModel",
    "ModelSource",
    "OptionsTable",
    "Operator",
    "Quantization",
    "Subgraph",
    "Tensor",
    "load_model_bytes",
    "natural_key",
    "read_flat_model",
]

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

    The model is checked (:func:`edgeq_device.model.validate.validate_flat_model`) before it is
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
