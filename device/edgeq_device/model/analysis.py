"""Static analysis of a ``.tflite`` model: ops, multiply-accumulates, parameters, activation memory.

Everything here reads the flatbuffer with :mod:`edgeq_device.model.flatbuffer` only (no
TensorFlow, no interpreter), so ``edgeq-device info`` on a board and
``edgeq.analyze`` on the host report the same figures.

What is counted:

- **Ops** of the primary subgraph, in the order the interpreter runs them, with
  every input and output tensor (shape, dtype, quantization).
- **MACs** (multiply-accumulates) of the ops that do the arithmetic work:
  ``CONV_2D`` (output elements × kh × kw × input channels per group),
  ``DEPTHWISE_CONV_2D`` (output elements × kh × kw), ``FULLY_CONNECTED``
  (output elements × input features), ``BATCH_MATMUL`` (output elements × the
  contracted dimension), ``TRANSPOSE_CONV`` (input elements × kh × kw × output
  channels), ``CONV_3D`` and ``CONV_3D_TRANSPOSE``. Element-wise ops, pooling and
  activations count 0: they are memory-bound and small beside the above.
- **Parameters**: the constant tensors stored in the file (weights, biases and
  other constants), each stored buffer counted once, by dtype.
- **Peak activation memory**: an estimate from tensor lifetimes (see
  :func:`activation_memory`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgumentError
from .flatbuffer import FlatModel, ModelSource, Operator, Subgraph, Tensor, read_flat_model

__all__ = [
    "MAC_OPS",
    "DtypeTotal",
    "GraphAnalysis",
    "MemoryEstimate",
    "OpInfo",
    "TensorInfo",
    "activation_memory",
    "analyze_flat_model",
    "op_display_name",
    "op_macs",
]

#: Ops whose multiply-accumulates are counted.
MAC_OPS = frozenset({
    "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV",
    "CONV_3D", "CONV_3D_TRANSPOSE",
})


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as an op or the model sees it."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    nbytes: int
    is_constant: bool
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @classmethod
    def from_tensor(cls, t: Tensor) -> TensorInfo:
        """Summarize a flatbuffer :class:`~edgeq_device.model.flatbuffer.Tensor`."""
        q = t.quantization
        return cls(index=t.index, name=t.name, dtype=t.dtype, shape=t.shape,
                   shape_signature=t.shape_signature, nbytes=t.nbytes, is_constant=t.is_constant,
                   scale=q.scale, zero_point=q.zero_point, quantized_dimension=q.quantized_dimension)

    @property
    def is_dynamic(self) -> bool:
        """True where a dimension is only known at run time (-1 in the shape signature)."""
        return any(d < 0 for d in self.shape_signature)

    @property
    def quantization(self) -> str:
        """``""`` (not quantized), ``"s=0.0039 zp=-128"`` or ``"per-axis(16) dim=0"``."""
        if not self.scale:
            return ""
        if len(self.scale) == 1:
            zp = self.zero_point[0] if self.zero_point else 0
            return f"s={self.scale[0]:.4g} zp={zp}"
        return f"per-axis({len(self.scale)}) dim={self.quantized_dimension}"

    def describe(self) -> str:
        """Short text such as ``INT8[1,224,224,3] s=0.0078 zp=-1`` (dynamic dims shown as ``?``)."""
        dims = ",".join("?" if s < 0 else str(d) for d, s in zip(self.shape, self.shape_signature))
        if len(self.shape_signature) != len(self.shape):
            dims = ",".join(str(d) for d in self.shape)
        text = f"{self.dtype}[{dims}]"
        if self.is_constant:
            text += " const"
        if self.quantization:
            text += f" {self.quantization}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict. Per-axis scales are summarized by their count."""
        d: dict[str, Any] = {
            "index": self.index, "name": self.name, "dtype": self.dtype, "shape": list(self.shape),
            "shape_signature": list(self.shape_signature), "bytes": self.nbytes,
            "constant": self.is_constant,
        }
        if len(self.scale) == 1:
            d["quantization"] = {"scale": self.scale[0],
                                 "zero_point": self.zero_point[0] if self.zero_point else 0}
        elif self.scale:
            d["quantization"] = {"per_axis": len(self.scale), "dimension": self.quantized_dimension}
        return d


@dataclass(frozen=True)
class OpInfo:
    """One operator in execution order."""

    index: int
    name: str
    opcode: str
    version: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    macs: int

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"index": self.index, "name": self.name, "opcode": self.opcode, "version": self.version,
                "macs": self.macs, "inputs": [t.to_dict() for t in self.inputs],
                "outputs": [t.to_dict() for t in self.outputs]}


@dataclass(frozen=True)
class DtypeTotal:
    """Constant tensors of one dtype: how many, how many elements, how many stored bytes."""

    dtype: str
    tensors: int
    elements: int
    bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated activation memory over the run (see :func:`activation_memory`)."""

    peak_bytes: int
    peak_op: int
    live_at_peak: tuple[int, ...]
    per_op: tuple[int, ...] = field(repr=False)


@dataclass(frozen=True)
class GraphAnalysis:
    """What :func:`analyze_flat_model` found in a model (primary subgraph)."""

    ops: tuple[OpInfo, ...]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: dict[str, int]
    total_macs: int
    macs_by_op: dict[str, int]
    params_by_dtype: dict[str, DtypeTotal]
    memory: MemoryEstimate
    model_bytes: int
    num_subgraphs: int

    @property
    def total_params(self) -> int:
        """Elements of all constant tensors."""
        return sum(t.elements for t in self.params_by_dtype.values())

    @property
    def total_param_bytes(self) -> int:
        """Stored bytes of all constant tensors."""
        return sum(t.bytes for t in self.params_by_dtype.values())

    @property
    def peak_activation_bytes(self) -> int:
        """Estimated peak activation memory, bytes."""
        return self.memory.peak_bytes

    def macs_per_second(self, latency_us: float) -> float:
        """Achieved multiply-accumulates per second for one inference taking ``latency_us``."""
        if not latency_us or latency_us <= 0:
            raise InvalidArgumentError("latency must be a positive number of microseconds",
                                       argument="latency_us", received=latency_us,
                                       fix="give the measured mean latency, e.g. 1520.5")
        return self.total_macs / (latency_us * 1e-6)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything."""
        peak = self.memory
        return {
            "model_bytes": self.model_bytes,
            "num_subgraphs": self.num_subgraphs,
            "num_ops": len(self.ops),
            "op_counts": dict(self.op_counts),
            "total_macs": self.total_macs,
            "macs_by_op": dict(self.macs_by_op),
            "total_params": self.total_params,
            "total_param_bytes": self.total_param_bytes,
            "params_by_dtype": {k: {"tensors": v.tensors, "elements": v.elements, "bytes": v.bytes}
                                for k, v in self.params_by_dtype.items()},
            "peak_activation_bytes": peak.peak_bytes,
            "peak_op": peak.peak_op,
            "peak_op_name": self.ops[peak.peak_op].name if 0 <= peak.peak_op < len(self.ops) else None,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "ops": [op.to_dict() for op in self.ops],
        }


def op_display_name(op: Operator) -> str:
    """The name the interpreter reports: the builtin name, or the custom code of a custom op."""
    if op.opcode == "CUSTOM" and op.custom_code:
        return op.custom_code
    return op.opcode


def _shape(sg: Subgraph, idx: int) -> tuple[int, ...]:
    if idx < 0 or idx >= len(sg.tensors):
        return ()
    return tuple(max(int(d), 1) for d in sg.tensors[idx].shape)


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def op_macs(sg: Subgraph, op: Operator) -> int:
    """Multiply-accumulates of one op from its tensor shapes (0 for ops not in :data:`MAC_OPS`)."""
    kind = op.opcode
    if kind not in MAC_OPS or not op.outputs or not op.inputs:
        return 0
    out = _elements(_shape(sg, op.outputs[0]))
    if kind == "CONV_2D":  # filter OHWI, I = input channels per group
        f = _shape(sg, op.inputs[1])
        return out * f[1] * f[2] * f[3] if len(f) == 4 else 0
    if kind == "DEPTHWISE_CONV_2D":  # filter 1 x KH x KW x (C*M)
        f = _shape(sg, op.inputs[1])
        return out * f[1] * f[2] if len(f) == 4 else 0
    if kind == "FULLY_CONNECTED":  # weights [units, input features]
        w = _shape(sg, op.inputs[1])
        return out * w[-1] if w else 0
    if kind == "BATCH_MATMUL":
        lhs = _shape(sg, op.inputs[0])
        if len(lhs) < 2:
            return 0
        adj_x = bool(op.builtin_options.get(0, "bool", False)) if op.builtin_options else False
        return out * (lhs[-2] if adj_x else lhs[-1])
    if kind == "TRANSPOSE_CONV":  # inputs: output_shape, filter OHWI, input
        if len(op.inputs) < 3:
            return 0
        f = _shape(sg, op.inputs[1])
        inp = _elements(_shape(sg, op.inputs[2]))
        return inp * f[0] * f[1] * f[2] if len(f) == 4 else 0
    if kind == "CONV_3D":  # filter DHWIO
        f = _shape(sg, op.inputs[1])
        return out * f[0] * f[1] * f[2] * f[3] if len(f) == 5 else 0
    if kind == "CONV_3D_TRANSPOSE":  # inputs: output_shape, filter DHW O I, input
        if len(op.inputs) < 3:
            return 0
        f = _shape(sg, op.inputs[1])
        inp = _elements(_shape(sg, op.inputs[2]))
        return inp * f[0] * f[1] * f[2] * f[3] if len(f) == 5 else 0
    return 0


def activation_memory(sg: Subgraph) -> MemoryEstimate:
    """Estimate the activation memory of one subgraph from tensor lifetimes.

    This is an estimate: every non-constant tensor is counted at its full size
    from the op that produces it to the last op that reads it; model inputs live
    from the start, model outputs to the end, variables for the whole run. The
    runtime's arena planner may do better (in-place ops such as RESHAPE share
    their input's memory, and its packing is not modelled) or slightly worse
    (alignment, scratch buffers of kernels are not counted).

    Returns the peak and the index of the first op where it is reached.
    """
    n = len(sg.operators)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for op in sg.operators:
        for t in op.outputs:
            if t >= 0:
                first.setdefault(t, op.index)
                last[t] = max(last.get(t, op.index), op.index)
        for t in op.inputs:
            if t >= 0:
                last[t] = max(last.get(t, op.index), op.index)
    for t in sg.inputs:
        first[t] = 0
    for t in sg.outputs:
        last[t] = n - 1
    per_op = [0] * max(n, 1)
    live: list[list[int]] = [[] for _ in range(max(n, 1))]
    for idx, tensor in enumerate(sg.tensors):
        if tensor.is_constant or (idx not in last and idx not in first):
            continue
        if tensor.is_variable or idx not in first:
            start, end = 0, n - 1
        else:
            start, end = first[idx], max(last.get(idx, first[idx]), first[idx])
        for i in range(max(start, 0), max(end, 0) + 1):
            per_op[i] += tensor.nbytes
            live[i].append(idx)
    peak = max(per_op)
    at = per_op.index(peak)
    return MemoryEstimate(peak_bytes=peak, peak_op=at if n else -1, live_at_peak=tuple(live[at]),
                          per_op=tuple(per_op[:n]))


def _params(model: FlatModel) -> dict[str, DtypeTotal]:
    seen: set[int] = set()
    acc: dict[str, list[int]] = {}
    for sg in model.subgraphs:
        for t in sg.tensors:
            if not t.is_constant or t.buffer in seen:
                continue
            seen.add(t.buffer)
            a = acc.setdefault(t.dtype, [0, 0, 0])
            a[0] += 1
            a[1] += t.num_elements
            a[2] += t.buffer_size
    order = sorted(acc.items(), key=lambda kv: (-kv[1][2], kv[0]))
    return {k: DtypeTotal(k, v[0], v[1], v[2]) for k, v in order}


def analyze_flat_model(model: FlatModel | ModelSource, argument: str = "model") -> GraphAnalysis:
    """Analyze a model (a :class:`FlatModel`, a path or the file's bytes) without any runtime.

    Raises:
        ModelFileError: the file is missing or not a ``.tflite`` flatbuffer.
    """
    flat = model if isinstance(model, FlatModel) else read_flat_model(model, argument)
    sg = flat.main
    ops = []
    macs_by_op: dict[str, int] = {}
    for op in sg.operators:
        macs = op_macs(sg, op)
        name = op_display_name(op)
        if macs:
            macs_by_op[name] = macs_by_op.get(name, 0) + macs
        ops.append(OpInfo(
            index=op.index, name=name, opcode=op.opcode, version=op.version,
            inputs=tuple(TensorInfo.from_tensor(sg.tensors[i]) for i in op.inputs if i >= 0),
            outputs=tuple(TensorInfo.from_tensor(sg.tensors[i]) for i in op.outputs if i >= 0),
            macs=macs,
        ))
    counts: dict[str, int] = {}
    for o in ops:
        counts[o.name] = counts.get(o.name, 0) + 1
    return GraphAnalysis(
        ops=tuple(ops),
        inputs=tuple(TensorInfo.from_tensor(sg.tensors[i]) for i in sg.inputs),
        outputs=tuple(TensorInfo.from_tensor(sg.tensors[i]) for i in sg.outputs),
        op_counts=dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        total_macs=sum(o.macs for o in ops),
        macs_by_op=dict(sorted(macs_by_op.items(), key=lambda kv: -kv[1])),
        params_by_dtype=_params(flat),
        memory=activation_memory(sg),
        model_bytes=flat.size,
        num_subgraphs=len(flat.subgraphs),
    )
