"""The Coral Edge TPU's operations: which ops and tensors map, each op's constraints, and the fix.

The prediction follows ``edgetpu_compiler`` **16.0** (16.0.384591198, the last
release; :data:`EDGETPU_COMPILER_VERSION`) and Coral's published model
requirements, "TensorFlow models on the Edge TPU"
(https://coral.ai/docs/edgetpu/models-intro/#supported-operations):

- tensors are 8-bit (int8 or uint8): the model must be fully integer-quantized.
  The one exception is the LSTM: a full-integer ``UNIDIRECTIONAL_SEQUENCE_LSTM``
  keeps its cell state (and its internal gate tensors) in int16, and maps as long
  as its input and output are 8-bit (Coral maps quantized Keras LSTMs from compiler
  16.0 on, "Unidirectional LSTM only": google-coral/edgetpu#156);
- tensor sizes are constant at compile time (no dynamic dimensions, so batch 1);
- tensors have at most three dimensions larger than 1, the innermost three;
- only the ops of Coral's supported-operations table map, plus ``TILE``, which
  compiler 16.0 maps (seen in compiled DeepLab decoders), each with its
  constraints (checked here: fused activations on pools and concatenation,
  equal x/y dilation, fully-connected weight format and 1-D output, no
  reduction/padding/packing/splitting along the batch dimension, 1-D softmax of at most
  16,000 elements, strided slices with unit strides, PReLU alpha shape);
- ``RESIZE_BILINEAR`` and ``RESIZE_NEAREST_NEIGHBOR`` map "depending on input/output
  size ... to avoid loss in precision" (Coral's table). The rule applied here:
  the resize is by a whole factor in height and width (output a multiple of the
  input, or with ``align_corners`` ``output - 1`` a multiple of ``input - 1``; a
  1x1 input always qualifies), and the output is at most
  :data:`RESIZE_MAX_OUTPUT` (512) pixels high and wide. Large resizes stay on the
  CPU (google-coral/edgetpu#31, #597: 512x512 and 1024x1024 outputs not mapped;
  DeepLabV3's final 65x65 -> 513x513 resize stays on the CPU).
  ``half_pixel_centers`` (the TF2 default) maps with 16.0; compilers 14 and 15
  report such resizes as "Operation version not supported"
  (google-coral/edgetpu#206, #187, #420, #396), which is reported as a warning.

Where the model then splits is :mod:`edgeq.targets.edgetpu.rules`' business; the real compiler's
driver and log parser are in :mod:`edgeq.targets.edgetpu.compiler`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from edgeq_device.model.flatbuffer import FlatModel, ModelSource, Operator, Subgraph, Tensor, read_flat_model

__all__ = [
    "EDGETPU_COMPILER_VERSION",
    "EDGETPU_OPS",
    "EIGHT_BIT",
    "ON_CHIP_PARAMETER_BYTES",
    "RESIZE_MAX_OUTPUT",
    "RESIZE_OPS",
    "Problem",
    "as_flat_model",
    "builtin_option",
    "is_io_conversion",
    "op_name",
    "op_problem",
    "problem_at",
]

#: The ``edgetpu_compiler`` release whose behaviour the prediction follows (16.0.384591198, the last).
EDGETPU_COMPILER_VERSION = "16.0"

#: Ops of Coral's supported-operations table (compiler and runtime 16), plus TILE, by TFLite name.
EDGETPU_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM",
    "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE",
    "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE",
    "STRIDED_SLICE", "SUB", "SUM", "SQUARED_DIFFERENCE", "TANH", "TILE", "TRANSPOSE", "TRANSPOSE_CONV",
})

#: Largest output height or width of a resize that maps; larger ones stay on the CPU.
RESIZE_MAX_OUTPUT = 512

_LSTM_OPS = frozenset({"LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM"})
#: Resize ops -> the builtin-option field of ``align_corners`` (``half_pixel_centers`` is the next).
RESIZE_OPS = {"RESIZE_BILINEAR": 2, "RESIZE_NEAREST_NEIGHBOR": 0}  # op -> align_corners field; +1 half_pixel_centers

#: On-chip memory for caching parameters, about 7 MiB of the Edge TPU's 8 MiB SRAM
#: (the compiler's "used" + "remaining" figures add up to this); more streams from off-chip.
ON_CHIP_PARAMETER_BYTES = 7 * 1024 * 1024

#: Tensor types the Edge TPU computes on.
EIGHT_BIT = frozenset({"INT8", "UINT8"})
_CONST_OK = frozenset({"INT8", "UINT8", "INT32", "INT64"})  # weights; biases, shapes and axes
_FULL_INT8_FIX = ("convert with full integer quantization: mode='int8' with a representative dataset "
                  "(edgeq convert --mode int8), so that every op has int8 tensors")

_OP_FIXES: dict[str, str] = {
    "LEAKY_RELU": "use ReLU or ReLU6, or PReLU with shared_axes=[1, 2] (both map)",
    "HARD_SWISH": "use ReLU6 instead of hard-swish (as MobileNet-EdgeTPU models do)",
    "GELU": "use ReLU or ReLU6",
    "ELU": "use ReLU or ReLU6",
    "DEQUANTIZE": ("a DEQUANTIZE inside the graph means the converter left the next ops in float "
                   "(no int8 kernel); replace them with ops that have int8 kernels and convert with "
                   "integer-only ops (TFLITE_BUILTINS_INT8)"),
    "CAST": ("cast and scale the data before the model and feed it 8-bit input (convert with io='uint8'); "
             "a CAST before every mappable op only runs on the CPU ahead of the Edge TPU segment"),
    "BATCH_MATMUL": "use a Dense layer (FULLY_CONNECTED) with constant weights",
    "GATHER": "do the lookup outside the model, or use a one-hot input with a Dense layer",
    "CUSTOM": "replace the custom or Select-TF (Flex) op with TFLite builtin ops; custom ops never map",
    "DIV": "multiply by a constant reciprocal (MUL) instead of dividing",
    "EXP": "move the op after the last op that should run on the Edge TPU",
    "CUMSUM": "compute the cumulative sum with a constant lower-triangular Dense/CONV_2D, or after the model",
}
_GENERIC_OP_FIX = ("replace it with an op the Edge TPU supports, or move it to the end of the model "
                   "so that only the ops from it on run on the CPU")


@dataclass(frozen=True)
class Problem:
    """Something that keeps (``error``) or may keep (``warning``) ops off the Edge TPU.

    ``code`` is one of ``dynamic-shape``, ``dtype``, ``unsupported-op``, ``tensor-rank``,
    ``op-constraint``, ``float-io``, ``parameter-memory``, ``compiler-version``.
    """

    code: str
    message: str
    fix: str
    op_index: int | None = None
    op_name: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = f"op {self.op_index} {self.op_name}: " if self.op_index is not None else ""
        return f"{where}{self.message}; fix: {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"code": self.code, "severity": self.severity, "op_index": self.op_index,
                "op_name": self.op_name, "message": self.message, "fix": self.fix}



def _const_values(flat: FlatModel, t: Tensor) -> np.ndarray | None:
    data = flat.tensor_data(t)
    dt = {"INT32": np.int32, "INT64": np.int64, "INT8": np.int8, "UINT8": np.uint8,
          "FLOAT32": np.float32, "INT16": np.int16}.get(t.dtype)
    if data is None or dt is None:
        return None
    arr = np.frombuffer(data, dtype=np.dtype(dt).newbyteorder("<"))
    try:
        return arr.reshape(t.shape) if t.shape else arr
    except ValueError:
        return arr


def builtin_option(op: Operator, field_no: int, kind: str, default: int | float | bool = 0) -> Any:
    """Field ``field_no`` of the op's builtin options read as ``kind`` (``default`` where absent)."""
    return op.builtin_options.get(field_no, kind, default) if op.builtin_options else default


def op_name(op: Operator) -> str:
    """The op's name as reported: its custom code for a CUSTOM op, else its opcode."""
    return op.custom_code if op.opcode == "CUSTOM" and op.custom_code else op.opcode


def _tensors(sg: Subgraph, idxs: tuple[int, ...]) -> list[Tensor]:
    return [sg.tensors[i] for i in idxs if 0 <= i < len(sg.tensors)]


def is_io_conversion(sg: Subgraph, op: Operator) -> bool:
    """True for the float input QUANTIZE and the float output DEQUANTIZE of a quantized model."""
    if op.opcode == "QUANTIZE" and op.inputs and op.inputs[0] in sg.inputs:
        return sg.tensors[op.inputs[0]].dtype not in EIGHT_BIT
    if op.opcode == "DEQUANTIZE" and op.outputs and op.outputs[0] in sg.outputs and op.inputs:
        return sg.tensors[op.inputs[0]].dtype in EIGHT_BIT
    return False


def _axes(flat: FlatModel, sg: Subgraph, idx: int, rank: int) -> list[int] | None:
    if not 0 <= idx < len(sg.tensors):
        return None
    vals = _const_values(flat, sg.tensors[idx])
    if vals is None:
        return None
    return [int(a) % rank if rank else int(a) for a in vals.reshape(-1)]


def problem_at(code: str, message: str, fix: str, op: Operator, severity: str = "error") -> Problem:
    """A :class:`Problem` located at ``op``."""
    return Problem(code=code, message=message, fix=fix, op_index=op.index, op_name=op_name(op),
                   severity=severity)


def _constraint(flat: FlatModel, sg: Subgraph, op: Operator) -> Problem | None:
    """Coral's per-op limitations; None where the op meets them (or they cannot be read)."""
    kind = op.opcode
    ins = _tensors(sg, op.inputs)
    outs = _tensors(sg, op.outputs)
    x = ins[0] if ins else None
    rank = len(x.shape) if x is not None else 0

    def bad(msg: str, fix: str) -> Problem:
        return problem_at("op-constraint", msg, fix, op)

    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D") and builtin_option(op, 5, "i8"):
        return bad(f"{kind} with a fused activation function", "apply the activation as a separate layer")
    if kind == "CONCATENATION":
        if builtin_option(op, 1, "i8"):
            return bad("CONCATENATION with a fused activation function", "apply the activation separately")
        consts = [t for t in ins if t.is_constant]
        if consts:
            zero = all((v := _const_values(flat, t)) is not None and not np.any(v) for t in consts)
            if len(ins) != 2 or not zero:
                return bad("CONCATENATION with a constant input maps only as zero-padding "
                           "(2 inputs, the constant all zeros)", "concatenate computed tensors only, "
                           "or add the constant with a supported op")
    if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        fw, fh = (4, 5) if kind == "CONV_2D" else (5, 6)
        if builtin_option(op, fw, "i32", 1) != builtin_option(op, fh, "i32", 1):
            return bad(f"{kind} with different x and y dilation", "use the same dilation rate in x and y")
    if kind == "FULLY_CONNECTED":
        if builtin_option(op, 1, "i8"):
            return bad("FULLY_CONNECTED with shuffled weights format", "convert with the default weights format")
        if outs and sum(1 for d in outs[0].shape if d > 1) > 1:
            return bad(f"FULLY_CONNECTED output {list(outs[0].shape)} is not one-dimensional",
                       "flatten the input (Flatten/Reshape) before the Dense layer")
    if kind in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN") and x is not None and len(op.inputs) > 1:
        axes = _axes(flat, sg, op.inputs[1], rank)
        if axes is not None and rank >= 2 and 0 in axes:
            return bad(f"{kind} reduces along the batch dimension", "reduce along other axes only")
        if kind == "MEAN" and axes is not None and rank >= 3 and rank - 1 in axes and x.shape[-1] % 4:
            return bad(f"MEAN over the channel dimension needs a multiple of 4 channels (has {x.shape[-1]})",
                       "use a channel count that is a multiple of 4")
    if kind == "PAD" and len(op.inputs) > 1:
        pads = _const_values(flat, sg.tensors[op.inputs[1]]) if op.inputs[1] >= 0 else None
        if pads is not None and rank >= 2 and pads.size >= 2 and np.any(pads.reshape(-1, 2)[0]):
            return bad("PAD along the batch dimension", "pad along the spatial or channel dimensions only")
    if kind == "PACK" and outs and len(outs[0].shape) >= 2 and builtin_option(op, 1, "i32") % len(outs[0].shape) == 0:
        return bad("PACK along the batch dimension", "stack along another axis (axis=-1 or a spatial axis)")
    if kind == "SPLIT" and ins:
        axes = _axes(flat, sg, op.inputs[0], len(ins[1].shape) if len(ins) > 1 else 0)
        if axes is not None and len(ins) > 1 and len(ins[1].shape) >= 2 and axes == [0]:
            return bad("SPLIT along the batch dimension", "split along another axis")
    if kind == "SOFTMAX" and x is not None:
        if sum(1 for d in x.shape if d > 1) > 1 or x.num_elements > 16000:
            return bad(f"SOFTMAX input {list(x.shape)}: only a 1-D input of at most 16,000 elements maps",
                       "apply softmax to a flattened vector, or drop it (argmax needs no softmax)")
    if kind == "STRIDED_SLICE":
        strides = (_const_values(flat, sg.tensors[op.inputs[3]])
                   if len(op.inputs) > 3 and op.inputs[3] >= 0 else None)
        if strides is not None and np.any(strides != 1):
            return bad("STRIDED_SLICE with strides other than 1", "slice with stride 1 (SLICE)")
        if builtin_option(op, 2, "i32") or builtin_option(op, 3, "i32"):
            return bad("STRIDED_SLICE with an ellipsis or new-axis mask", "index without ... or None/newaxis")
    if kind == "PRELU" and len(ins) > 1:
        alpha = ins[1]
        if sum(1 for d in alpha.shape[:-1] if d > 1):
            return bad(f"PRELU alpha {list(alpha.shape)} is not 1-D", "use PReLU(shared_axes=[1, 2])")
    if kind in RESIZE_OPS and x is not None and outs and len(x.shape) == 4 and len(outs[0].shape) == 4:
        return _resize_constraint(op, x, outs[0], bad)
    return None


def _whole_factor(size_in: int, size_out: int, align_corners: bool) -> bool:
    """True where a resize from ``size_in`` to ``size_out`` samples on a whole-number grid."""
    if size_in == size_out or size_in <= 1 or size_out <= 1:
        return True
    if align_corners:
        size_in, size_out = size_in - 1, size_out - 1
    big, small = max(size_in, size_out), min(size_in, size_out)
    return big % small == 0


def _resize_constraint(op: Operator, x: Tensor, out: Tensor, bad: Any) -> Problem | None:
    """Coral: a resize maps "depending on input/output size ... to avoid loss in precision" (module docstring)."""
    kind = op.opcode
    align = bool(builtin_option(op, RESIZE_OPS[kind], "bool", False))
    (ih, iw), (oh, ow) = x.shape[1:3], out.shape[1:3]
    if max(oh, ow) > RESIZE_MAX_OUTPUT:
        return bad(f"{kind} output {oh}x{ow} is larger than {RESIZE_MAX_OUTPUT} pixels in height or width; "
                   "edgetpu_compiler keeps such resizes on the CPU to avoid loss in precision",
                   f"keep Edge TPU resizes within {RESIZE_MAX_OUTPUT}x{RESIZE_MAX_OUTPUT} and do the final "
                   "upsampling after the model (on the CPU, in post-processing)")
    if not (_whole_factor(ih, oh, align) and _whole_factor(iw, ow, align)):
        grid = " (align_corners: output - 1 over input - 1)" if align else ""
        return bad(f"{kind} from {ih}x{iw} to {oh}x{ow} is not a whole scale factor{grid}; edgetpu_compiler "
                   "keeps such resizes on the CPU to avoid loss in precision",
                   "resize by a whole factor, e.g. UpSampling2D(size=2) or an output that is a multiple of "
                   "the input, and crop or pad to the size you need")
    return None


def op_problem(flat: FlatModel, sg: Subgraph, op: Operator) -> Problem | None:
    """The first reason this op cannot map, or None."""
    ins = _tensors(sg, op.inputs)
    outs = _tensors(sg, op.outputs)
    acts = [t for t in ins if not t.is_constant] + outs
    dyn = [t for t in acts if t.is_dynamic]
    if dyn:
        t = dyn[0]
        batch = len(t.shape_signature) > 1 and t.shape_signature[0] < 0
        fix = ("convert with a fixed batch size: batch_size=1 (edgeq convert --batch-size 1)" if batch
               else "give the Keras Input a fully static shape and convert again")
        return problem_at("dynamic-shape", f"tensor {t.name!r} has a dynamic shape {list(t.shape_signature)}; "
                        "the Edge TPU needs sizes fixed at compile time", fix, op)
    if op.opcode not in EDGETPU_OPS:
        name = op_name(op)
        fix = _OP_FIXES.get(op.opcode, _OP_FIXES.get(name, _GENERIC_OP_FIX))
        return problem_at("unsupported-op", f"{name} is not an Edge TPU operation", fix, op)
    bad_acts = [t for t in acts if t.dtype not in EIGHT_BIT and not _lstm_internal(op, t)]
    bad_consts = [t for t in ins if t.is_constant and t.dtype not in _CONST_OK and not _lstm_internal(op, t)]
    if bad_acts or bad_consts:
        t = (bad_acts or bad_consts)[0]
        what = "tensor" if bad_acts else "constant (weights)"
        fix = _FULL_INT8_FIX
        if t.dtype == "INT16":
            fix = "the Edge TPU has no 16-bit activations: use mode='int8' instead of int16x8"
        return problem_at("dtype", f"{what} {t.name!r} is {t.dtype}; the Edge TPU computes on int8/uint8 only",
                        fix, op)
    for t in acts:
        if len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3]):
            fix = ("convert with batch size 1 (edgeq convert --batch-size 1)" if t.shape[0] > 1
                   else "reshape so that only the innermost three dimensions exceed 1")
            return problem_at("tensor-rank", f"tensor {t.name!r} {list(t.shape)} has more than three dimensions "
                            "larger than 1 (only the innermost three may be)", fix, op)
    return _constraint(flat, sg, op)


def _lstm_internal(op: Operator, t: Tensor) -> bool:
    """True for an int16 tensor inside a full-integer LSTM (cell state, layer-norm weights): the Edge TPU takes it."""
    return (op.opcode in _LSTM_OPS and t.dtype == "INT16" and t.index != op.inputs[0]
            and t.index not in op.outputs)


def as_flat_model(model: FlatModel | ModelSource) -> FlatModel:
    """``model`` itself if it is read already, else the ``.tflite`` path or bytes read."""
    return model if isinstance(model, FlatModel) else read_flat_model(model)
