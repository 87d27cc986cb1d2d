"""Cut one operator of a ``.tflite`` into a model of its own.

``edgeq-device profile`` times every operator alone: this module writes, for an
operator of the primary subgraph, a one-operator model that holds its operator
code, its options, the tensors it reads and writes, and the stored data of every
constant it reads. Inputs that were computed in the full model from constants
only (``DEQUANTIZE`` of float16 weights, for instance) are stored as constants
too, with the values a full run gave them, because the interpreter and its
delegates treat them as constants in the full model (computed once, weights
packed at init) and an operator fed them as inputs would run a slower path.

The model is written with the TFLite schema's object API (``ModelT``), which
ships with ai-edge-litert (``ai_edge_litert.schema_py_generated``, needs only
``flatbuffers``); TensorFlow's copy is used where ai-edge-litert is absent.
tflite-runtime has no copy of it: there :mod:`edgeq_device.measure.opcut_raw` cuts with
``flatbuffers`` alone (the profile picks it by itself, see
:func:`edgeq_device.measure.profile.make_cutter`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Mapping, Sequence

import flatbuffers
import numpy as np

__all__ = ["CONTROL_FLOW_OPS", "CutError", "CutModel", "OperatorCutter", "schema_module"]

#: Operators that run other subgraphs: they cannot be cut alone.
CONTROL_FLOW_OPS = frozenset({"IF", "WHILE", "CALL", "CALL_ONCE", "STABLEHLO_COMPOSITE", "STABLEHLO_WHILE",
                              "STABLEHLO_CASE"})

_SCHEMA_MODULES = ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated")


class CutError(Exception):
    """An operator (or the whole model) cannot be cut; the message says why."""


def schema_module() -> ModuleType:
    """The TFLite schema's generated Python module (object API).

    Raises:
        CutError: neither ai-edge-litert nor TensorFlow is installed.
    """
    for name in _SCHEMA_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise CutError("cutting operators needs the TFLite schema's object API, which ships with ai-edge-litert "
                   "(tflite-runtime has none): pip install ai-edge-litert")


@dataclass(frozen=True)
class CutModel:
    """A one-operator model and how to feed it.

    ``inputs`` maps each input tensor's index in the cut model to its index in the
    full model (whose recorded value feeds it).
    """

    content: bytes
    inputs: tuple[tuple[int, int], ...]
    outputs: tuple[int, ...]


class OperatorCutter:
    """Cuts operators out of one model (parsed once).

    Args:
        model_bytes: the ``.tflite`` file's bytes.

    Raises:
        CutError: the schema module is missing or the model cannot be read with it.
    """

    def __init__(self, model_bytes: bytes) -> None:
        self._schema = schema_module()
        try:
            self._model = self._schema.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
        except Exception as exc:  # the generated reader raises whatever a bad offset gives
            raise CutError(f"the schema reader cannot read the model: {exc}") from exc
        if not self._model.subgraphs:
            raise CutError("the model has no subgraph")
        if any(getattr(b, "offset", 0) > 1 for b in self._model.buffers or []):
            raise CutError("the model stores its constants outside the flatbuffer (a model over 2 GB)")
        self._main = self._model.subgraphs[0]

    @property
    def operator_count(self) -> int:
        return len(self._main.operators or [])

    def cut(self, index: int, values: Mapping[int, np.ndarray], static: Sequence[int] = ()) -> CutModel:
        """The one-operator model of operator ``index`` of the primary subgraph.

        Args:
            index: the operator's position in execution order.
            values: recorded values of the full model's tensors (index -> array); they give
                the shapes of computed tensors and the data of ``static`` ones.
            static: full-model indices of computed tensors to store as constants.

        Raises:
            CutError: the operator runs other subgraphs, or an input it needs has no value.
        """
        s = self._schema
        op = self._main.operators[index]
        code = self._model.operatorCodes[op.opcodeIndex]
        name = _opcode_name(s, code)
        if name in CONTROL_FLOW_OPS:
            raise CutError(f"{name} runs other subgraphs")
        tensors = self._main.tensors
        buffers: list[Any] = [s.BufferT()]
        new_tensors: list[Any] = []
        remap: dict[int, int] = {-1: -1}
        graph_inputs: list[tuple[int, int]] = []
        static_set = set(static)

        def add(full_idx: int, as_input: bool) -> int:
            if full_idx in remap:
                return remap[full_idx]
            t = tensors[full_idx]
            nt = s.TensorT()
            nt.type, nt.name, nt.quantization = t.type, t.name, t.quantization
            nt.isVariable, nt.sparsity, nt.hasRank = t.isVariable, t.sparsity, getattr(t, "hasRank", False)
            stored = self._stored(t)
            if stored is not None:
                nt.shape, nt.shapeSignature = t.shape, t.shapeSignature
                nt.buffer = len(buffers)
                buffers.append(stored)
            else:
                value = values.get(full_idx)
                shape = list(value.shape) if value is not None else list(t.shape if t.shape is not None else [])
                nt.shape, nt.shapeSignature, nt.buffer = shape, None, 0
                if full_idx in static_set and value is not None:
                    b = s.BufferT()
                    b.data = np.frombuffer(np.ascontiguousarray(value).tobytes(), dtype=np.uint8)
                    nt.buffer = len(buffers)
                    buffers.append(b)
                elif as_input and not t.isVariable:
                    graph_inputs.append((len(new_tensors), full_idx))
            remap[full_idx] = len(new_tensors)
            new_tensors.append(nt)
            return remap[full_idx]

        new_op = s.OperatorT()
        for attr in ("builtinOptionsType", "builtinOptions", "customOptions", "customOptionsFormat",
                     "mutatingVariableInputs", "builtinOptions2Type", "builtinOptions2"):
            if hasattr(op, attr):
                setattr(new_op, attr, getattr(op, attr))
        if getattr(op, "largeCustomOptionsSize", 0):
            raise CutError("its custom options are stored outside the flatbuffer")
        new_op.opcodeIndex = 0
        new_op.inputs = [add(int(i), True) for i in (op.inputs if op.inputs is not None else [])]
        new_op.outputs = [add(int(i), False) for i in (op.outputs if op.outputs is not None else [])]
        if op.intermediates is not None and len(op.intermediates):
            new_op.intermediates = [add(int(i), False) for i in op.intermediates]
        outputs = [remap[int(i)] for i in (op.outputs if op.outputs is not None else []) if int(i) >= 0]

        sg = s.SubGraphT()
        sg.tensors, sg.operators, sg.name = new_tensors, [new_op], f"op{index}"
        sg.inputs = [i for i, _ in graph_inputs]
        sg.outputs = outputs
        m = s.ModelT()
        m.version, m.operatorCodes, m.subgraphs, m.buffers = 3, [code], [sg], buffers
        m.description = f"operator {index} ({name})"
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        return CutModel(bytes(builder.Output()), tuple(graph_inputs), tuple(outputs))

    def _stored(self, t: Any) -> Any:
        """The tensor's buffer when it holds stored data, else None."""
        if not t.buffer or t.buffer >= len(self._model.buffers):
            return None
        b = self._model.buffers[t.buffer]
        return b if b.data is not None and len(b.data) else None


def _opcode_name(s: ModuleType, code: Any) -> str:
    n = max(int(code.deprecatedBuiltinCode), int(code.builtinCode))
    for k, v in vars(s.BuiltinOperator).items():
        if v == n and not k.startswith("_"):
            return str(k)
    return f"BUILTIN_{n}"
