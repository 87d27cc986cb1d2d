"""Cut one operator into a model of its own with ``flatbuffers`` alone (no TFLite schema module).

Where neither ai-edge-litert nor TensorFlow is installed (a board with tflite-runtime
only), :mod:`edgeq_device.measure.opcut` has no schema object API to write models with. This
cutter writes the new model's few tables *in front of* the original file's bytes and
points them at the original tables: the cut model's root holds the original operator
codes and buffers, and one subgraph whose tensors are the original subgraph's tensors
and whose operators are the original operator (its options untouched) plus the operators
that compute its constant-only inputs (a ``DEQUANTIZE`` of float16 weights), which the
interpreter runs once and then skips, as it does in the full model. Flatbuffers offsets
only point forward, so tables written before the original bytes can refer to any of them.

Tensor indices stay those of the full model; the interpreter allocates only the tensors
the operators use.
"""

from __future__ import annotations

import struct

import flatbuffers

from ..model.flatbuffer import _T, FlatModel
from .opcut import CONTROL_FLOW_OPS, CutError, CutModel

__all__ = ["RawOperatorCutter", "overhead_model"]

_ALIGN = 16


class RawOperatorCutter:
    """Cuts operators out of one model, as :class:`edgeq_device.measure.opcut.OperatorCutter` does.

    Args:
        model_bytes: the ``.tflite`` file's bytes.
        flat: the same model read with :func:`edgeq_device.model.flatbuffer.read_flat_model`.

    Raises:
        CutError: the model keeps constants outside the flatbuffer.
    """

    def __init__(self, model_bytes: bytes, flat: FlatModel) -> None:
        pad = (-len(model_bytes)) % _ALIGN
        self._data = bytes(model_bytes) + b"\0" * pad
        self._flat = flat
        buf = bytearray(self._data)
        root = _T(buf, int(struct.unpack_from("<I", buf, 0)[0]))
        self._opcodes = self._vector_pos(root, 1)
        self._buffers = self._vector_pos(root, 4)
        sg0 = root.vec_tables(2)[0]
        self._tensors = self._vector_pos(sg0, 0)
        self._op_tables = [t.t.Pos for t in sg0.vec_tables(3)]
        for b in root.vec_tables(4):
            if int(b.scalar(1, flatbuffers.number_types.Uint64Flags, 0)) > 1:
                raise CutError("the model stores its constants outside the flatbuffer (a model over 2 GB)")
        sg = flat.main
        self._producer = {o: op.index for op in sg.operators for o in op.outputs if o >= 0}

    @staticmethod
    def _vector_pos(table: _T, field_no: int) -> int:
        o = table._off(field_no)
        if not o:
            return 0
        where = table.t.Pos + o
        return where + int(struct.unpack_from("<I", table.t.Bytes, where)[0])

    @property
    def operator_count(self) -> int:
        return len(self._op_tables)

    def cut(self, index: int, values: object = None, static: list[int] | tuple[int, ...] = ()) -> CutModel:
        """The one-operator model of operator ``index`` (``values`` is not needed: shapes stay the file's).

        ``static``: computed tensors whose producing operators go into the model with the operator
        (they read only constants, so the interpreter computes them once).

        Raises:
            CutError: the operator runs other subgraphs.
        """
        sg = self._flat.main
        op = sg.operators[index]
        if op.opcode in CONTROL_FLOW_OPS:
            raise CutError(f"{op.opcode} runs other subgraphs")
        static_set = set(static)
        ops: list[int] = []

        def need(tensor: int) -> None:
            p = self._producer.get(tensor)
            if p is None or p in ops:
                return
            for i in sg.operators[p].inputs:
                if i >= 0 and i in static_set:
                    need(i)
            ops.append(p)

        for i in op.inputs:
            if i >= 0 and i in static_set:
                need(i)
        ops.append(index)
        inside = {o for p in ops for o in sg.operators[p].outputs}
        inputs: list[int] = []
        for p in ops:
            for i in sg.operators[p].inputs:
                t = sg.tensors[i] if i >= 0 else None
                if t is not None and not t.is_constant and not t.is_variable and i not in inside and i not in inputs:
                    inputs.append(i)
        outputs = [o for o in op.outputs if o >= 0]
        return CutModel(self._build(ops, inputs, outputs), tuple((i, i) for i in inputs), tuple(outputs))

    def _build(self, ops: list[int], inputs: list[int], outputs: list[int]) -> bytes:
        size = len(self._data)
        b = flatbuffers.Builder(size + 1024)
        b.Bytes[len(b.Bytes) - size:] = self._data
        b.head = len(b.Bytes) - size
        b.minalign = _ALIGN

        def rel(pos: int) -> int:
            return size - pos

        def ints(items: list[int]) -> int:
            b.StartVector(4, len(items), 4)
            for i in reversed(items):
                b.PrependInt32(i)
            return int(b.EndVector())

        ins, outs = ints(inputs), ints(outputs)
        b.StartVector(4, len(ops), 4)
        for p in reversed(ops):
            b.PrependUOffsetTRelative(rel(self._op_tables[p]))
        op_vec = b.EndVector()
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, rel(self._tensors), 0)
        b.PrependUOffsetTRelativeSlot(1, ins, 0)
        b.PrependUOffsetTRelativeSlot(2, outs, 0)
        b.PrependUOffsetTRelativeSlot(3, op_vec, 0)
        sg = b.EndObject()
        b.StartVector(4, 1, 4)
        b.PrependUOffsetTRelative(sg)
        sgs = b.EndVector()
        b.StartObject(5)
        b.PrependUint32Slot(0, 3, 0)
        b.PrependUOffsetTRelativeSlot(1, rel(self._opcodes), 0)
        b.PrependUOffsetTRelativeSlot(2, sgs, 0)
        b.PrependUOffsetTRelativeSlot(4, rel(self._buffers), 0)
        root = b.EndObject()
        b.Finish(root, file_identifier=b"TFL3")
        return bytes(b.Output())


def overhead_model() -> bytes:
    """A model of one ``ADD`` of a one-element float32 input to itself: timing it gives what one
    operator's own ``invoke()`` costs beyond its arithmetic (the Python call, the interpreter's
    loop, a delegate's setup), which a one-operator model pays once per operator and the whole
    model once per run."""
    b = flatbuffers.Builder(512)

    def ints(items: list[int]) -> int:
        b.StartVector(4, len(items), 4)
        for i in reversed(items):
            b.PrependInt32(i)
        return int(b.EndVector())

    tensors = []
    for name in ("x", "y"):
        shape, label = ints([1]), b.CreateString(name)
        b.StartObject(8)
        b.PrependUOffsetTRelativeSlot(0, shape, 0)
        b.PrependUOffsetTRelativeSlot(3, label, 0)
        tensors.append(b.EndObject())  # type 0 = FLOAT32, buffer 0 = none
    ins, outs = ints([0, 0]), ints([1])
    b.StartObject(3)
    b.PrependUOffsetTRelativeSlot(1, ins, 0)
    b.PrependUOffsetTRelativeSlot(2, outs, 0)
    op = b.EndObject()  # opcode 0; no options: ADD's defaults (no activation)
    b.StartObject(4)
    b.PrependInt32Slot(2, 1, 0)  # version 1; builtin code 0 = ADD
    code = b.EndObject()
    b.StartObject(1)
    empty = b.EndObject()

    def offsets(items: list[int]) -> int:
        b.StartVector(4, len(items), 4)
        for i in reversed(items):
            b.PrependUOffsetTRelative(i)
        return int(b.EndVector())

    tvec, ovec, g_in, g_out = offsets(tensors), offsets([op]), ints([0]), ints([1])
    b.StartObject(5)
    b.PrependUOffsetTRelativeSlot(0, tvec, 0)
    b.PrependUOffsetTRelativeSlot(1, g_in, 0)
    b.PrependUOffsetTRelativeSlot(2, g_out, 0)
    b.PrependUOffsetTRelativeSlot(3, ovec, 0)
    sg = b.EndObject()
    codes, sgs, bufs = offsets([code]), offsets([sg]), offsets([empty])
    b.StartObject(5)
    b.PrependUint32Slot(0, 3, 0)
    b.PrependUOffsetTRelativeSlot(1, codes, 0)
    b.PrependUOffsetTRelativeSlot(2, sgs, 0)
    b.PrependUOffsetTRelativeSlot(4, bufs, 0)
    b.Finish(b.EndObject(), file_identifier=b"TFL3")
    return bytes(b.Output())
