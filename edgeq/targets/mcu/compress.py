"""Smaller flash for TFLM: lookup-table compression of weights with few distinct values.

A clustered model (``edgeq qat --clusters N``) or an int8 model whose weight tensors hold few
distinct values per channel stores each weight as a ``b``-bit index into a small value table
(TFLM's ``compression`` tool, shipped in ``tflite-micro``: ``LookUpTableCompression``, index
widths 1 to 7 bits). TFLM decodes the tensors at run time (``TFLM_DECODE`` operators it
inserts); the decoded weights then live in the arena, so RAM grows by their size while flash
shrinks.

:func:`compress_for_tflm` picks every int8 constant tensor that TFLM's kernels read only at run
time, whose values fit ``2**7`` table entries per channel (per quantization axis; one table for a
per-tensor-quantized tensor) and that gets smaller; compresses them; and runs the compressed and
the uncompressed model in TFLM on the same inputs. The outputs must be equal bit for bit:
:attr:`TFLMCompression.same_outputs` says whether they are, and a difference is reported, not
hidden. Sizes are the ``.tflite`` files' bytes (what goes into flash), not gzip's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeq.errors import InvalidArgumentError
from edgeq.targets.mcu.check import MCUReport, check_mcu, random_inputs
from edgeq.targets.mcu.run import run_tflm, tflm_version

__all__ = ["MAX_INDEX_BITS", "CompressedTensor", "TFLMCompression", "compress_for_tflm"]

MAX_INDEX_BITS = 7
"""The widest lookup-table index TFLM's compressor takes (``bitwidth must be 1-7``)."""


@dataclass(frozen=True)
class CompressedTensor:
    """One weight tensor stored as table indices."""

    name: str
    index: int
    bits: int
    per_channel_axis: int | None
    original_bytes: int


@dataclass(frozen=True)
class TFLMCompression:
    """A model compressed for TFLM, and what it costs and saves."""

    model_bytes: bytes
    original_size: int
    tensors: tuple[CompressedTensor, ...]
    report: MCUReport
    original_report: MCUReport
    alt_memory_bytes: int = 0
    """Bytes of the decoded weights (each 16-byte aligned): the separate memory TFLM can decode into."""
    alt_arena_bytes: int = 0
    """The smallest arena that runs when the weights are decoded into that separate memory instead."""

    @property
    def size(self) -> int:
        """Bytes of the compressed ``.tflite``."""
        return len(self.model_bytes)

    @property
    def ratio(self) -> float:
        """Compressed size over the original's."""
        return self.size / self.original_size

    @property
    def same_outputs(self) -> bool:
        """The compressed model gives the uncompressed one's outputs in TFLM, bit for bit."""
        return bool(self.report.reference and self.report.reference.bit_exact)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"size": self.size, "original_size": self.original_size, "ratio": self.ratio,
                "alt_memory_bytes": self.alt_memory_bytes, "alt_arena_bytes": self.alt_arena_bytes,
                "same_outputs": self.same_outputs,
                "tensors": [{"name": t.name, "index": t.index, "bits": t.bits, "axis": t.per_channel_axis,
                             "original_bytes": t.original_bytes} for t in self.tensors],
                "report": self.report.to_dict(), "original_report": self.original_report.to_dict()}

    def summary(self) -> str:
        """A few lines: sizes, tensors, arena cost, and whether the outputs are the same."""
        bits = sorted({t.bits for t in self.tensors})
        same = ("the same outputs in TFLM as uncompressed, bit for bit" if self.same_outputs else
                f"DIFFERENT outputs in TFLM: {self.report.reference.summary() if self.report.reference else '?'}")
        return (f"TFLM lookup-table compression: {self.original_size:,} → {self.size:,} bytes "
                f"({self.ratio:.2f}x) with {len(self.tensors)} tensors at {'/'.join(map(str, bits))}-bit indices; "
                f"arena {self.original_report.arena_needed:,} → {self.report.arena_needed:,} bytes (decoded weights "
                f"live in the arena; or {self.alt_arena_bytes:,} bytes with {self.alt_memory_bytes:,} bytes of separate "
                f"decompression memory); {same}")


def _candidates(model: Any, max_bits: int) -> list[tuple[int, Any, int, int | None]]:
    from tflite_micro.tensorflow.lite.micro.compression import constant_inputs
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    out = []
    sg = model.subgraphs[0]
    for i, t in enumerate(sg.tensors):
        data = t.buffer.data if t.buffer is not None else None
        if not data or t.dtype != fb.TensorType.INT8 or len(data) < 64 or constant_inputs.find_uses(sg, t):
            continue
        values = np.frombuffer(bytes(data), np.int8).reshape(t.shape)
        q = t.quantization
        scales = q.scales if q is not None else []
        axis = q.axis if q is not None and isinstance(scales, list) and len(scales) > 1 else None
        if axis is not None:
            moved = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
            distinct = max(len(np.unique(row)) for row in moved)
        else:
            distinct = len(np.unique(values))
        bits = max(1, math.ceil(math.log2(distinct))) if distinct > 1 else 1
        if bits > max_bits:
            continue
        tables = (values.shape[axis] if axis is not None else 1) * 2 ** bits
        if math.ceil(values.size * bits / 8) + tables >= len(data):
            continue
        out.append((i, t, bits, axis))
    return out


def compress_for_tflm(model: bytes, inputs: Sequence[np.ndarray] | None = None, *, max_bits: int = MAX_INDEX_BITS,
                      samples: int = 8, seed: int = 0) -> TFLMCompression:
    """Compress ``model``'s few-valued int8 weights with TFLM's lookup tables, then check it in TFLM.

    Args:
        model: an int8 ``.tflite`` (clustered, or with few distinct weight values per channel).
        inputs: inputs for the check (one array per model input, samples first); default
            ``samples`` seeded random ones.
        max_bits: the widest index to use (1 to 7).

    Raises:
        InvalidArgumentError: no tensor has few enough values to gain (e.g. a plain int8 model:
            255 values per channel need 8 bits), or ``max_bits`` is out of range.
        RuntimeNotFoundError: tflite-micro is not installed.
    """
    if not 1 <= int(max_bits) <= MAX_INDEX_BITS:
        raise InvalidArgumentError("the lookup-table index width must be 1 to 7 bits", argument="max_bits",
                                   received=max_bits, fix="use 4 for 16 clusters, 7 at most")
    tflm_version()
    from tflite_micro.tensorflow.lite.micro.compression import SpecBuilder, compress, model_editor, spec

    edited = model_editor.read(bytes(model))
    chosen = _candidates(edited, int(max_bits))
    if not chosen:
        raise InvalidArgumentError(
            f"no weight tensor has at most {2 ** int(max_bits)} distinct values per channel, so lookup tables "
            "would not make the model smaller", argument="model", received=f"<{len(model)} bytes>",
            fix="cluster the weights first (edgeq qat --clusters 16) or leave compression out")
    builder = SpecBuilder()
    for i, _, bits, axis in chosen:
        builder.add_tensor(0, i).with_lut(bits, spec.PerChannel(axis=axis) if axis is not None else spec.PerTensor())
    packed = bytes(compress(bytes(model), builder.build()))
    xs = list(inputs) if inputs is not None else random_inputs(model, samples, seed)
    original = check_mcu(bytes(model), xs)
    plain = run_tflm(bytes(model), xs)
    report = check_mcu(packed, xs, against=plain.outputs if plain.ok else None, reference=False,
                       against_name="the uncompressed model in TFLM")
    tensors = tuple(CompressedTensor(str(t.name), i, bits, axis, len(t.buffer.data)) for i, t, bits, axis in chosen)
    alt = sum(-(-t.original_bytes // 16) * 16 for t in tensors)
    apart = run_tflm(packed, xs, alt_decompression=alt)
    return TFLMCompression(packed, len(model), tensors, report, original, alt,
                           max(apart.arena_total, apart.smallest_arena) if apart.ok else 0)
