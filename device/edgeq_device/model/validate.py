"""Check a ``.tflite`` before a TFLite runtime sees it.

A TFLite runtime trusts the model it is given: a tensor index past the end of
the tensor list, a zero or denormal quantization scale, a zero point outside
its type's range or an operator with fewer inputs than its kernel reads can
make the native code read wild memory and kill the process with a signal.
Two layers keep that from happening to an ``edgeq`` or ``edgeq-device``
command:

1. :func:`validate_flat_model`, run by :func:`edgeq_device.model.flatbuffer.read_flat_model`
   (the one place models are opened), checks in Python what the runtime relies
   on: buffer, tensor, operator-code and signature indices; shapes against the
   sizes of the constant buffers; declared tensor sizes; quantization
   parameters; the inputs and outputs each operator needs, and their element
   types where an operator does not convert types. The flatbuffer
   reader itself checks every table, vtable, vector and string offset. A model
   that fails raises :class:`~edgeq_device.errors.ModelFileError` naming the
   first problem, in milliseconds.
2. :func:`edgeq_device.run.loadcheck.check_loads_in_child` (in the ``run`` room: it needs a
   runtime, and opening a model must not start processes) loads the model first in a child process; kernels' own checks
   (``Prepare``) are too many to mirror in Python, so this is what guarantees
   no signal for a model that passes the first layer.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import ModelFileError
from ._opnames import DTYPE_BITS

if TYPE_CHECKING:
    from .tables import FlatModel, Tensor

__all__ = [
    "MAX_TENSOR_BYTES",
    "validate_flat_model",
]

#: A tensor declared larger than this is taken for a corrupt shape (no edge model has one).
MAX_TENSOR_BYTES = 1 << 30

_FLOAT32_TINY = 1.1754943508222875e-38  # smallest normal float32: 1/scale must stay finite

_INT_RANGES: dict[str, tuple[int, int]] = {
    "INT8": (-128, 127), "UINT8": (0, 255), "INT16": (-32768, 32767), "UINT16": (0, 65535),
    "INT32": (-(1 << 31), (1 << 31) - 1), "UINT32": (0, (1 << 32) - 1),
    "INT64": (-(1 << 63), (1 << 63) - 1), "UINT64": (0, (1 << 64) - 1),
    "INT4": (-8, 7), "UINT4": (0, 15), "INT2": (-2, 1),
}
_NO_FIXED_SIZE = {"STRING", "RESOURCE", "VARIANT", "UNKNOWN"}
# Types whose values a scale and zero point map to real numbers: kernels divide by their scales.
# (An INT32 bias's scale is checked by its operator's Prepare, in the child-process load.)
_QUANTIZED_TYPES = {"INT8", "UINT8", "INT16", "UINT16", "INT4", "UINT4", "INT2"}

# Inputs a builtin kernel reads before (or without) checking how many it got. The first
# ``n`` inputs of these operators must exist and must not be -1 (the "no tensor" marker).
_MIN_INPUTS: dict[str, int] = {
    "ADD": 2, "SUB": 2, "MUL": 2, "DIV": 2, "MAXIMUM": 2, "MINIMUM": 2, "SQUARED_DIFFERENCE": 2,
    "POW": 2, "FLOOR_DIV": 2, "FLOOR_MOD": 2, "LESS": 2, "GREATER": 2, "EQUAL": 2, "NOT_EQUAL": 2,
    "LESS_EQUAL": 2, "GREATER_EQUAL": 2, "LOGICAL_AND": 2, "LOGICAL_OR": 2,
    "CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3,
    "CONV_3D": 2, "BATCH_MATMUL": 2, "PRELU": 2,
    "AVERAGE_POOL_2D": 1, "MAX_POOL_2D": 1, "L2_POOL_2D": 1, "SOFTMAX": 1, "LOG_SOFTMAX": 1,
    "LOGISTIC": 1, "TANH": 1, "RELU": 1, "RELU6": 1, "RELU_N1_TO_1": 1, "RELU_0_TO_1": 1,
    "LEAKY_RELU": 1, "HARD_SWISH": 1, "ELU": 1, "GELU": 1, "QUANTIZE": 1, "DEQUANTIZE": 1,
    "CAST": 1, "RESHAPE": 1, "SQUEEZE": 1, "SHAPE": 1, "RANK": 1, "PACK": 1, "UNPACK": 1,
    "CONCATENATION": 1, "L2_NORMALIZATION": 1, "LOCAL_RESPONSE_NORMALIZATION": 1,
    "ABS": 1, "NEG": 1, "EXP": 1, "LOG": 1, "SQRT": 1, "RSQRT": 1, "SQUARE": 1, "SIN": 1,
    "COS": 1, "FLOOR": 1, "CEIL": 1, "ROUND": 1, "SIGN": 1, "LOGICAL_NOT": 1,
    "STRIDED_SLICE": 4, "SLICE": 3, "PAD": 2, "PADV2": 2, "MIRROR_PAD": 2, "TRANSPOSE": 2,
    "MEAN": 2, "SUM": 2, "REDUCE_MAX": 2, "REDUCE_MIN": 2, "REDUCE_PROD": 2, "REDUCE_ANY": 2,
    "GATHER": 2, "GATHER_ND": 2, "EXPAND_DIMS": 2, "TILE": 2, "BROADCAST_TO": 2,
    "ARG_MAX": 2, "ARG_MIN": 2, "SPLIT": 2, "SPLIT_V": 3, "RESIZE_BILINEAR": 2,
    "RESIZE_NEAREST_NEIGHBOR": 2, "SPACE_TO_DEPTH": 1, "DEPTH_TO_SPACE": 1,
    "SPACE_TO_BATCH_ND": 3, "BATCH_TO_SPACE_ND": 3, "SELECT": 3, "SELECT_V2": 3, "FILL": 2,
    "ZEROS_LIKE": 1, "ONES_LIKE": 1, "TOPK_V2": 2, "ONE_HOT": 4, "CUMSUM": 2, "REVERSE_V2": 2,
}
# Operators that move or map values without changing their type: the first input and the first
# output have one element type (a kernel picked for one type reads the other's bytes otherwise).
_SAME_TYPE = {
    "AVERAGE_POOL_2D", "MAX_POOL_2D", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "TRANSPOSE", "PAD", "PADV2",
    "MIRROR_PAD", "STRIDED_SLICE", "SLICE", "CONCATENATION", "PACK", "UNPACK", "TILE", "RELU", "RELU6",
    "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "HARD_SWISH", "TANH", "LOGISTIC", "MAXIMUM", "MINIMUM",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH",
    "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND", "BROADCAST_TO", "REVERSE_V2",
}
# Operators whose input and output are both float or both integer (SOFTMAX: int8 in, int16 out).
_SAME_KIND = {"SOFTMAX", "LOG_SOFTMAX"}
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}
# Builtin operators that may have no output tensor.
_NO_OUTPUT_OK = {"CALL_ONCE", "ASSIGN_VARIABLE", "CUSTOM"}


def _fail(reason: str, argument: str, where: str | None) -> ModelFileError:
    return ModelFileError(f"the model fails validation: {reason}", argument=argument, received=where,
                          fix="convert or copy the model again")


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _check_tensor(t: Tensor, where_t: str, n_buffers: int) -> str | None:
    """The first problem of one tensor, or None."""
    if t.dtype == "UNKNOWN":
        return f"{where_t} has an unknown element type"
    if any(d < 0 for d in t.shape):
        return f"{where_t} has a negative dimension in its shape {list(t.shape)}"
    if any(d < -1 for d in t.shape_signature):
        return f"{where_t} has a dimension below -1 in its shape signature {list(t.shape_signature)}"
    if t.buffer >= n_buffers and t.buffer != 0:  # buffer 0 is "no data", even where the list is empty
        return f"{where_t} refers to buffer {t.buffer}, the model has {n_buffers} buffers"
    bits = DTYPE_BITS.get(t.dtype, 8)
    elements = _elements(t.shape)
    nbytes = (elements * bits + 7) // 8
    if nbytes > MAX_TENSOR_BYTES:
        return (f"{where_t} declares {nbytes:,} bytes (shape {list(t.shape)}), more than the "
                f"{MAX_TENSOR_BYTES:,} a tensor may hold")
    if t.buffer_size and not t.is_sparse and t.dtype not in _NO_FIXED_SIZE:
        allowed = {nbytes, elements} if bits < 8 else {nbytes}
        if t.buffer_size not in allowed:
            return (f"{where_t} has shape {list(t.shape)} {t.dtype} ({nbytes:,} bytes) but its "
                    f"buffer {t.buffer} holds {t.buffer_size:,} bytes")
    q = t.quantization
    if q.scale and t.dtype in _QUANTIZED_TYPES:  # other types' kernels never read a scale (shapes, indices)
        for s in q.scale:
            if not math.isfinite(s) or s < _FLOAT32_TINY:
                return f"{where_t} has quantization scale {s!r}; a scale must be a positive normal number"
        if q.zero_point and len(q.zero_point) != len(q.scale):
            return (f"{where_t} has {len(q.scale)} quantization scales and {len(q.zero_point)} zero "
                    f"points")
        if len(q.scale) > 1 and (not 0 <= q.quantized_dimension < len(t.shape)
                                 or t.shape[q.quantized_dimension] != len(q.scale)):
            return (f"{where_t} has {len(q.scale)} per-axis scales on dimension "
                    f"{q.quantized_dimension} of shape {list(t.shape)}")
    lo_hi = _INT_RANGES.get(t.dtype)
    if lo_hi is not None:
        lo, hi = lo_hi
        for z in q.zero_point:
            if not lo <= z <= hi:
                return f"{where_t} has zero point {z}, outside the {t.dtype} range {lo}..{hi}"
    return None


def _problem(flat: FlatModel) -> str | None:
    """The first thing wrong with the model, or None."""
    n_buffers = len(flat.buffer_spans)
    main = flat.main
    if not main.inputs:
        return "the main subgraph has no inputs"
    if not main.outputs:
        return "the main subgraph has no outputs"
    for si, sg in enumerate(flat.subgraphs):
        n = len(sg.tensors)
        sub = f"subgraph {si}"
        for t in sg.tensors:
            problem = _check_tensor(t, f"tensor {t.index} of {sub}", n_buffers)
            if problem:
                return problem
        for which, idx in (("inputs", sg.inputs), ("outputs", sg.outputs)):
            bad = [i for i in idx if not 0 <= i < n]
            if bad:
                return f"{sub} lists {which} {bad}, it has {n} tensors"
        for op in sg.operators:
            at = f"operator {op.index} ({op.opcode}) of {sub}"
            bad = [i for i in (*op.inputs, *op.outputs) if not -1 <= i < n]
            if bad:
                return f"{at} refers to tensors {bad}, the subgraph has {n}"
            need = _MIN_INPUTS.get(op.opcode, 0)
            if len(op.inputs) < need or any(i < 0 for i in op.inputs[:need]):
                return f"{at} has inputs {list(op.inputs)}; it needs at least {need}"
            if op.opcode not in _NO_OUTPUT_OK and not any(i >= 0 for i in op.outputs):
                return f"{at} has no output tensor"
            if (op.opcode in _SAME_TYPE or op.opcode in _SAME_KIND) and op.inputs and op.outputs \
                    and op.inputs[0] >= 0 and op.outputs[0] >= 0:
                t_in, t_out = sg.tensors[op.inputs[0]].dtype, sg.tensors[op.outputs[0]].dtype
                same = (t_in == t_out if op.opcode in _SAME_TYPE
                        else (t_in in _FLOAT_TYPES) == (t_out in _FLOAT_TYPES))
                if not same:
                    return f"{at} takes {t_in} (tensor {op.inputs[0]}) but gives {t_out} (tensor {op.outputs[0]})"
    for key, sig in flat.signatures.items():
        for which in ("inputs", "outputs"):
            bad = [i for i in sig[which].values() if not 0 <= i < len(main.tensors)]
            if bad:
                return f"signature {key!r} lists {which} {bad}, the main subgraph has {len(main.tensors)} tensors"
    return None


def validate_flat_model(flat: FlatModel, *, argument: str = "model", where: str | None = None) -> None:
    """Check what a TFLite runtime relies on; raise on the first problem.

    Args:
        flat: the parsed model.
        argument: the parameter or CLI argument that named the model, for the message.
        where: the model's path (or ``<N bytes>``), for the message.

    Raises:
        ModelFileError: an index points past its list, a shape disagrees with its constant
            buffer or declares more than :data:`MAX_TENSOR_BYTES`, quantization parameters are
            unusable, or an operator lacks the inputs or outputs its kernel reads.
    """
    problem = _problem(flat)
    if problem is not None:
        raise _fail(problem, argument, where)
