"""What ``edgeq-device profile`` feeds each operator: the values its inputs had in a full run.

:func:`record_tensors` runs the whole model once without delegates and with
``experimental_preserve_all_tensors``, keeping every tensor's value. A model that does
not run whole (a custom operator the runtime lacks) is recorded operator by operator
(:func:`record_stepwise`). :func:`static_tensors` finds the tensors computed from stored
constants only, which the interpreter computes once; :func:`make_cutter` picks the cutter.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from ..errors import InvalidArgumentError
from ..model.flatbuffer import FlatModel
from ..run.runtime import Runtime
from .opcut import CONTROL_FLOW_OPS, CutError, CutModel, OperatorCutter
from .opcut_raw import RawOperatorCutter

__all__ = ["Cutter", "make_cutter", "record_stepwise", "record_tensors", "static_tensors"]


def _resolver_kwargs(runtime: Runtime) -> dict[str, Any]:
    resolver = getattr(runtime.module, "OpResolverType", None)
    if resolver is None and runtime.name == "tensorflow":
        resolver = runtime.module.experimental.OpResolverType
    return {} if resolver is None else {
        "experimental_op_resolver_type": resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES}


def record_tensors(model_bytes: bytes, runtime: Runtime, inputs: dict[int, np.ndarray],
                   tensor_count: int) -> dict[int, np.ndarray]:
    """Every tensor's value after one run on ``inputs`` (tensor index -> array), without delegates.

    Raises:
        RuntimeError, ValueError: the runtime could not load or run the model.
    """
    interp = runtime.Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                                 **_resolver_kwargs(runtime))
    interp.allocate_tensors()
    for idx, value in inputs.items():
        interp.set_tensor(idx, value)
    interp.invoke()
    values: dict[int, np.ndarray] = {}
    for idx in range(tensor_count):
        try:
            values[idx] = np.array(interp.get_tensor(idx), copy=True)
        except ValueError:  # tensors without data (optional, unused)
            continue
    return values


class Cutter(Protocol):
    """What :func:`profile_model` needs of a cutter (:class:`OperatorCutter`, :class:`RawOperatorCutter`)."""

    def cut(self, index: int, values: dict[int, np.ndarray], static: list[int]) -> CutModel: ...


def make_cutter(model_bytes: bytes, flat: FlatModel, backend: str | None = None) -> Cutter:
    """The schema object API's cutter where ai-edge-litert (or TensorFlow) is installed, else the
    ``flatbuffers``-only one; ``backend`` (``"schema"`` or ``"raw"``) picks one.

    Raises:
        CutError: the model cannot be cut (the reason is the message).
    """
    if backend not in (None, "schema", "raw"):
        raise InvalidArgumentError("unknown cutter", argument="backend", received=backend, fix="use schema or raw")
    if backend != "raw":
        try:
            return OperatorCutter(model_bytes)
        except CutError:
            if backend == "schema":
                raise
    return RawOperatorCutter(model_bytes, flat)


def record_stepwise(cutter: Cutter, flat: FlatModel, runtime: Runtime,
                    inputs: dict[int, np.ndarray], static: set[int]) -> dict[int, np.ndarray]:
    """Tensor values of a model that does not run whole (e.g. a custom operator the runtime lacks):
    its operators are run one by one as cut models, each fed the outputs of the ones before.
    The outputs of an operator that fails are missing (the operators after it get random values)."""
    values = dict(inputs)
    sg = flat.main
    for op in sg.operators:
        if any(i >= 0 and i not in values and not sg.tensors[i].is_constant for i in op.inputs):
            continue
        try:
            cut = cutter.cut(op.index, values, sorted(static))
            interp = runtime.Interpreter(model_content=cut.content, **_resolver_kwargs(runtime))
            interp.allocate_tensors()
            for new_idx, full_idx in cut.inputs:
                interp.set_tensor(new_idx, values[full_idx])
            interp.invoke()
            for full_idx in op.outputs:
                if full_idx >= 0:
                    values[full_idx] = np.array(interp.get_tensor(cut.outputs[list(op.outputs).index(full_idx)]))
        except (CutError, RuntimeError, ValueError):
            continue
    return values


def static_tensors(flat: FlatModel) -> set[int]:
    """Tensors of the primary subgraph computed from stored constants only (e.g. float16 weights'
    ``DEQUANTIZE``): the full model computes them once, so the cut operator reads them as constants."""
    sg = flat.main
    known = {t.index for t in sg.tensors if t.is_constant}
    computed: set[int] = set()
    for op in sg.operators:
        ins = [i for i in op.inputs if i >= 0]
        if ins and op.opcode not in CONTROL_FLOW_OPS and op.opcode != "CUSTOM" and all(i in known for i in ins):
            for o in op.outputs:
                if o >= 0 and not sg.tensors[o].is_variable:
                    known.add(o)
                    computed.add(o)
    return computed
