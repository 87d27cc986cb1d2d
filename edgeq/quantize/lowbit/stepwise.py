"""A ``.tflite`` run one operator at a time, each operator's inputs taken from a cache of tensor values.

:func:`int4_model`'s optimized rounding needs, for every 4-bit layer, the input that layer gets in
the model whose earlier layers are already rounded. Running that whole model once per layer costs
a pass per layer (quadratic in depth). :class:`StepwiseRun` instead walks the operators of the main
subgraph in their (topological) order once: each operator runs as a one-operator model through
LiteRT's own kernels on the cached values of its inputs, and its outputs join the cache (values no
later operator reads are dropped). Between two operators the caller may change the next
operator's weights in the model tree; the values after it then come from the changed weights.
That is one forward pass in all, with the same kernels, on the same batch-of-one samples, as the
whole-model runs: the inputs seen are the same as per-layer whole-model runs give.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgeq.quantize.flatbuffer import write_model

__all__ = ["StepwiseRun"]


def _graph_inputs(model: Any, samples: Sequence[Mapping[str, np.ndarray]]) -> dict[int, list[np.ndarray]]:
    """The samples' values keyed by the main subgraph's input tensor indices (by signature name, else position)."""
    sg = model.subgraphs[0]
    by_name: dict[str, int] = {}
    for sig in model.signatureDefs or ():
        if sig.subgraphIndex == 0:
            by_name.update({t.name.decode() if isinstance(t.name, bytes) else t.name: t.tensorIndex
                            for t in sig.inputs or ()})
    names = {(t.name.decode() if isinstance(t.name, bytes) else t.name): i
             for i, t in ((i, sg.tensors[i]) for i in sg.inputs)}
    values: dict[int, list[np.ndarray]] = {i: [] for i in sg.inputs}
    for sample in samples:
        for pos, (name, value) in enumerate(sample.items()):
            idx = by_name.get(name, names.get(name, sg.inputs[pos] if pos < len(sg.inputs) else -1))
            if idx in values:
                values[idx].append(np.asarray(value, np.float32))
    return values


class StepwiseRun:
    """The main subgraph of ``model`` (a ``ModelT``, edited in place by the caller) run operator by operator.

    Iterate it: it yields each operator's position and operator *before* running it, so that the
    caller can read that operator's cached inputs (:meth:`values`) and change its weights; the
    operator then runs on the cache with the weights the tree holds at that moment.
    """

    def __init__(self, model: Any, samples: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.model = model
        self._sg = model.subgraphs[0]
        self._cache = _graph_inputs(model, samples)
        self._count = len(samples)
        self._readers: dict[int, int] = {}
        for op in self._sg.operators:
            for i in op.inputs:
                if i >= 0:
                    self._readers[i] = self._readers.get(i, 0) + 1

    def values(self, tensor: int) -> list[np.ndarray]:
        """The cached per-sample values of tensor ``tensor`` (KeyError if not produced yet or dropped)."""
        return self._cache[tensor]

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        for pos, op in enumerate(list(self._sg.operators)):
            yield pos, op
            self._run(op)

    def _constant(self, tensor: int) -> bool:
        buf = self.model.buffers[self._sg.tensors[tensor].buffer]
        return buf.data is not None and len(buf.data) > 0

    def _one_op_model(self, op: Any, inputs: list[int]) -> tuple[bytes, dict[int, int]]:
        """A model of ``op`` alone, with only its tensors and their buffers, and the tensor index map."""
        model, sg = self.model, self._sg
        used = list(dict.fromkeys(i for i in [*op.inputs, *op.outputs] if i >= 0))
        index = {i: n for n, i in enumerate(used)}
        empty = type(model.buffers[0])()
        buffers, tensors = [empty], []
        for i in used:
            t = copy.copy(sg.tensors[i])
            if self._constant(i):
                buffers.append(model.buffers[t.buffer])
                t.buffer = len(buffers) - 1
            else:
                t.buffer = 0
            tensors.append(t)
        one = copy.copy(op)
        one.inputs = [index[i] if i >= 0 else -1 for i in op.inputs]
        one.outputs = [index[i] for i in op.outputs if i >= 0]
        small = copy.copy(sg)
        small.tensors, small.operators = tensors, [one]
        small.inputs, small.outputs = [index[i] for i in inputs], list(one.outputs)
        saved = (model.subgraphs, model.buffers, model.signatureDefs, model.metadata)
        try:
            model.subgraphs, model.buffers = [small], buffers
            model.signatureDefs = model.metadata = None
            return write_model(model), index
        finally:
            model.subgraphs, model.buffers, model.signatureDefs, model.metadata = saved

    def _run(self, op: Any) -> None:
        from ai_edge_litert.interpreter import Interpreter

        inputs = [i for i in dict.fromkeys(op.inputs) if i >= 0 and not self._constant(i)]
        outputs = [i for i in op.outputs if i >= 0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            data, index = self._one_op_model(op, inputs)
            it = Interpreter(model_content=data)
        it.allocate_tensors()
        got: dict[int, list[np.ndarray]] = {i: [] for i in outputs}
        for n in range(self._count):
            for i in inputs:
                value = self._cache[i][n]
                if tuple(it.get_tensor(index[i]).shape) != value.shape:
                    it.resize_tensor_input(index[i], value.shape)
                    it.allocate_tensors()
                it.set_tensor(index[i], value)
            it.invoke()
            for i in outputs:
                got[i].append(np.array(it.get_tensor(index[i])))
        self._cache.update(got)
        for i in op.inputs:
            if i >= 0 and i in self._readers:
                self._readers[i] -= 1
                if self._readers[i] == 0:
                    self._cache.pop(i, None)
