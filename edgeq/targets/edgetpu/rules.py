"""The Coral Edge TPU as a target: what maps, where the model splits, and the real compiler.

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

Where the model splits. ``edgetpu_compiler`` delegates through TensorFlow Lite's
partitioner (tensorflow/lite/graph_info.cc, ``PartitionGraphIntoIndependentNodeSubsets``)
and compiles **one** Edge TPU segment. The partitioner walks the graph in epochs:
each epoch takes every op whose inputs are ready and whose kind (Edge TPU or CPU)
matches the epoch's kind, which the first ready op sets. So:

- where the first op cannot map (a leading ``CAST``, ``QUANTIZE`` from float,
  ``DEQUANTIZE``, ...), it and every op that cannot map and needs nothing but the
  model inputs and such ops run on the CPU *before* the segment (status
  ``before-segment``): they do not split the model;
- the segment is every op that can map and does not depend on a CPU op after it:
  supported ops in a branch parallel to an unsupported op still map;
- an op that cannot map and depends on the segment splits the model there
  (``unsupported``); every op that depends on it runs on the CPU, even ops the
  Edge TPU supports (``after-split``: the compiler reports "More than one subgraph
  is not supported").

Decision on float I/O: in an int8 model with float inputs/outputs, the
``QUANTIZE`` that converts a float model input and the ``DEQUANTIZE`` that
produces a float model output run on the CPU (the compiler leaves them there),
but they do not split the graph: the segment starts after the input quantize and
ends before the output dequantize. They are reported with status ``io``. Cheap as
they are, converting with ``io='uint8'`` (``--io uint8``) removes them.

The compiler's own choices (memory, sizes it does not document) can still differ;
run :func:`run_edgetpu_compiler` where ``edgetpu_compiler`` is installed to know for
sure.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from edgeq_device.fileio import check_output_folder
from edgeq_device.flatbuffer import FlatModel, ModelSource, Operator, Subgraph, Tensor, read_flat_model

from edgeq.errors import (
    CompilerNotFoundError,
    ConversionError,
    InvalidArgumentError,
    ModelFileError,
    OutputExistsError,
)

__all__ = [
    "EDGETPU_COMPILER_VERSION",
    "EDGETPU_OPS",
    "ON_CHIP_PARAMETER_BYTES",
    "RESIZE_MAX_OUTPUT",
    "CompilerNotFoundError",
    "CompilerReport",
    "EdgeTPUPrediction",
    "OpPlacement",
    "OperatorStatus",
    "Problem",
    "check_edgetpu_ready",
    "parse_compiler_log",
    "predict_edgetpu",
    "run_edgetpu_compiler",
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
_RESIZE_OPS = {"RESIZE_BILINEAR": 2, "RESIZE_NEAREST_NEIGHBOR": 0}  # op -> align_corners field; +1 half_pixel_centers

#: On-chip memory for caching parameters, about 7 MiB of the Edge TPU's 8 MiB SRAM
#: (the compiler's "used" + "remaining" figures add up to this); more streams from off-chip.
ON_CHIP_PARAMETER_BYTES = 7 * 1024 * 1024

_EIGHT_BIT = frozenset({"INT8", "UINT8"})
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


@dataclass(frozen=True)
class OpPlacement:
    """Where one op is predicted to run.

    ``status`` is ``mapped`` (Edge TPU), ``before-segment`` (cannot map, runs on the
    CPU ahead of the Edge TPU segment, no split), ``unsupported`` (cannot map and
    splits the graph), ``after-split`` (on the CPU because it depends on an op that
    split the graph) or ``io`` (float input quantize / output dequantize, CPU, no split).
    """

    index: int
    name: str
    status: str
    reason: str = ""
    fix: str = ""

    @property
    def device(self) -> str:
        """``edgetpu`` or ``cpu``."""
        return "edgetpu" if self.status == "mapped" else "cpu"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"index": self.index, "name": self.name, "device": self.device, "status": self.status,
                "reason": self.reason, "fix": self.fix}


@dataclass(frozen=True)
class EdgeTPUPrediction:
    """The predicted Edge TPU partition of a model."""

    ops: tuple[OpPlacement, ...]
    split_at: int | None
    problems: tuple[Problem, ...]
    compiler_version: str = EDGETPU_COMPILER_VERSION

    @property
    def mapped_count(self) -> int:
        """Ops predicted on the Edge TPU."""
        return sum(1 for o in self.ops if o.status == "mapped")

    @property
    def cpu_count(self) -> int:
        """Ops predicted on the CPU (including float I/O conversions)."""
        return len(self.ops) - self.mapped_count

    @property
    def fully_mapped(self) -> bool:
        """True where every op except float I/O conversions maps."""
        return self.mapped_count > 0 and all(o.status in ("mapped", "io") for o in self.ops)

    @property
    def segment_start(self) -> int | None:
        """Index of the first op on the Edge TPU, or None where nothing maps."""
        return next((o.index for o in self.ops if o.status == "mapped"), None)

    @property
    def num_edgetpu_subgraphs(self) -> int:
        """1 where anything maps, else 0 (the compiler makes one segment)."""
        return 1 if self.mapped_count else 0

    def summary(self) -> str:
        """One line: how many ops map, where the segment starts and splits, and the compiler version."""
        text = (f"{self.mapped_count} of {len(self.ops)} ops on the Edge TPU (edgetpu_compiler "
                f"{self.compiler_version} rules), {self.cpu_count} on the CPU")
        before = sum(1 for o in self.ops if o.status == "before-segment")
        start = self.segment_start
        if before and start is not None:
            text += f"; segment starts at op {start} {self.ops[start].name} after {before} CPU ops"
        if self.split_at is not None:
            text += f"; split at op {self.split_at} {self.ops[self.split_at].name}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"compiler_version": self.compiler_version, "mapped": self.mapped_count, "cpu": self.cpu_count,
                "segment_start": self.segment_start, "split_at": self.split_at,
                "fully_mapped": self.fully_mapped, "edgetpu_subgraphs": self.num_edgetpu_subgraphs,
                "ops": [o.to_dict() for o in self.ops], "problems": [p.to_dict() for p in self.problems]}


# ---------------------------------------------------------------- rules


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


def _opt(op: Operator, field_no: int, kind: str, default: int | float | bool = 0) -> Any:
    return op.builtin_options.get(field_no, kind, default) if op.builtin_options else default


def _name(op: Operator) -> str:
    return op.custom_code if op.opcode == "CUSTOM" and op.custom_code else op.opcode


def _tensors(sg: Subgraph, idxs: tuple[int, ...]) -> list[Tensor]:
    return [sg.tensors[i] for i in idxs if 0 <= i < len(sg.tensors)]


def _io_role(sg: Subgraph, op: Operator) -> bool:
    """True for the float input QUANTIZE and the float output DEQUANTIZE of a quantized model."""
    if op.opcode == "QUANTIZE" and op.inputs and op.inputs[0] in sg.inputs:
        return sg.tensors[op.inputs[0]].dtype not in _EIGHT_BIT
    if op.opcode == "DEQUANTIZE" and op.outputs and op.outputs[0] in sg.outputs and op.inputs:
        return sg.tensors[op.inputs[0]].dtype in _EIGHT_BIT
    return False


def _axes(flat: FlatModel, sg: Subgraph, idx: int, rank: int) -> list[int] | None:
    if not 0 <= idx < len(sg.tensors):
        return None
    vals = _const_values(flat, sg.tensors[idx])
    if vals is None:
        return None
    return [int(a) % rank if rank else int(a) for a in vals.reshape(-1)]


def _problem(code: str, message: str, fix: str, op: Operator, severity: str = "error") -> Problem:
    return Problem(code=code, message=message, fix=fix, op_index=op.index, op_name=_name(op),
                   severity=severity)


def _constraint(flat: FlatModel, sg: Subgraph, op: Operator) -> Problem | None:
    """Coral's per-op limitations; None where the op meets them (or they cannot be read)."""
    kind = op.opcode
    ins = _tensors(sg, op.inputs)
    outs = _tensors(sg, op.outputs)
    x = ins[0] if ins else None
    rank = len(x.shape) if x is not None else 0

    def bad(msg: str, fix: str) -> Problem:
        return _problem("op-constraint", msg, fix, op)

    if kind in ("AVERAGE_POOL_2D", "MAX_POOL_2D") and _opt(op, 5, "i8"):
        return bad(f"{kind} with a fused activation function", "apply the activation as a separate layer")
    if kind == "CONCATENATION":
        if _opt(op, 1, "i8"):
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
        if _opt(op, fw, "i32", 1) != _opt(op, fh, "i32", 1):
            return bad(f"{kind} with different x and y dilation", "use the same dilation rate in x and y")
    if kind == "FULLY_CONNECTED":
        if _opt(op, 1, "i8"):
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
    if kind == "PACK" and outs and len(outs[0].shape) >= 2 and _opt(op, 1, "i32") % len(outs[0].shape) == 0:
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
        if _opt(op, 2, "i32") or _opt(op, 3, "i32"):
            return bad("STRIDED_SLICE with an ellipsis or new-axis mask", "index without ... or None/newaxis")
    if kind == "PRELU" and len(ins) > 1:
        alpha = ins[1]
        if sum(1 for d in alpha.shape[:-1] if d > 1):
            return bad(f"PRELU alpha {list(alpha.shape)} is not 1-D", "use PReLU(shared_axes=[1, 2])")
    if kind in _RESIZE_OPS and x is not None and outs and len(x.shape) == 4 and len(outs[0].shape) == 4:
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
    align = bool(_opt(op, _RESIZE_OPS[kind], "bool", False))
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


def _op_problem(flat: FlatModel, sg: Subgraph, op: Operator) -> Problem | None:
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
        return _problem("dynamic-shape", f"tensor {t.name!r} has a dynamic shape {list(t.shape_signature)}; "
                        "the Edge TPU needs sizes fixed at compile time", fix, op)
    if op.opcode not in EDGETPU_OPS:
        name = _name(op)
        fix = _OP_FIXES.get(op.opcode, _OP_FIXES.get(name, _GENERIC_OP_FIX))
        return _problem("unsupported-op", f"{name} is not an Edge TPU operation", fix, op)
    bad_acts = [t for t in acts if t.dtype not in _EIGHT_BIT and not _lstm_internal(op, t)]
    bad_consts = [t for t in ins if t.is_constant and t.dtype not in _CONST_OK and not _lstm_internal(op, t)]
    if bad_acts or bad_consts:
        t = (bad_acts or bad_consts)[0]
        what = "tensor" if bad_acts else "constant (weights)"
        fix = _FULL_INT8_FIX
        if t.dtype == "INT16":
            fix = "the Edge TPU has no 16-bit activations: use mode='int8' instead of int16x8"
        return _problem("dtype", f"{what} {t.name!r} is {t.dtype}; the Edge TPU computes on int8/uint8 only",
                        fix, op)
    for t in acts:
        if len(t.shape) > 3 and any(d > 1 for d in t.shape[:-3]):
            fix = ("convert with batch size 1 (edgeq convert --batch-size 1)" if t.shape[0] > 1
                   else "reshape so that only the innermost three dimensions exceed 1")
            return _problem("tensor-rank", f"tensor {t.name!r} {list(t.shape)} has more than three dimensions "
                            "larger than 1 (only the innermost three may be)", fix, op)
    return _constraint(flat, sg, op)


def _lstm_internal(op: Operator, t: Tensor) -> bool:
    """True for an int16 tensor inside a full-integer LSTM (cell state, layer-norm weights): the Edge TPU takes it."""
    return (op.opcode in _LSTM_OPS and t.dtype == "INT16" and t.index != op.inputs[0]
            and t.index not in op.outputs)


def _as_flat(model: FlatModel | ModelSource) -> FlatModel:
    return model if isinstance(model, FlatModel) else read_flat_model(model)


def _model_notes(flat: FlatModel) -> list[Problem]:
    sg = flat.main
    notes: list[Problem] = []
    for i in sg.inputs:
        t = sg.tensors[i]
        if t.dtype not in _EIGHT_BIT and any(_io_role(sg, op) and op.inputs[0] == i for op in sg.operators):
            notes.append(Problem("float-io", f"input {t.name!r} is {t.dtype}: its QUANTIZE runs on the CPU "
                                 "before the Edge TPU segment",
                                 "convert with io='uint8' (edgeq convert --io uint8) to feed 8-bit data "
                                 "directly", severity="warning"))
    for i in sg.outputs:
        t = sg.tensors[i]
        if t.dtype not in _EIGHT_BIT and any(_io_role(sg, op) and op.outputs[0] == i for op in sg.operators):
            notes.append(Problem("float-io", f"output {t.name!r} is {t.dtype}: its DEQUANTIZE runs on the CPU "
                                 "after the Edge TPU segment",
                                 "convert with io='uint8' (or 'int8') to read 8-bit outputs", severity="warning"))
    weights = sum(t.buffer_size for t in sg.tensors if t.is_constant and t.dtype in _EIGHT_BIT)
    if weights > ON_CHIP_PARAMETER_BYTES:
        notes.append(Problem("parameter-memory", f"{weights / 2**20:.1f} MiB of 8-bit weights exceed the "
                             f"~{ON_CHIP_PARAMETER_BYTES / 2**20:.0f} MiB on-chip parameter cache; the rest "
                             "streams from host memory every inference (slower)",
                             "use a smaller model, or split it across Edge TPUs (edgetpu_compiler "
                             "--num_segments)", severity="warning"))
    for op in sg.operators:
        if op.opcode in _RESIZE_OPS and _opt(op, _RESIZE_OPS[op.opcode] + 1, "bool", False):
            notes.append(_problem("compiler-version", f"{op.opcode} with half_pixel_centers maps with "
                                  f"edgetpu_compiler {EDGETPU_COMPILER_VERSION}; compilers 14 and 15 leave it on "
                                  "the CPU (\"Operation version not supported\")",
                                  f"compile with edgetpu_compiler {EDGETPU_COMPILER_VERSION}", op,
                                  severity="warning"))
    return notes


def check_target_args(target: str, mode: Any, io: Any, batch_size: int | None,
                      allow_float_fallback: bool) -> None:
    """Refuse conversion options the Edge TPU compiler cannot take, each with its fix.

    Raises:
        InvalidArgumentError: unknown target, a mode other than int8, float I/O, a batch
            other than 1, or float fallback.
    """
    def value(v: Any) -> str:
        return str(getattr(v, "value", v)).lower()

    if value(target) != "edgetpu":
        raise InvalidArgumentError("unknown target", argument="target", received=target, fix="use 'edgetpu'")
    if value(mode) != "int8":
        raise InvalidArgumentError("the Edge TPU runs full-integer int8 models only", argument="mode",
                                   received=value(mode), fix="use mode='int8' (--mode int8) with calibration data")
    if value(io) not in ("int8", "uint8"):
        raise InvalidArgumentError("the Edge TPU takes integer inputs and outputs; float I/O leaves the "
                                   "quantize/dequantize ops on the CPU", argument="io", received=value(io),
                                   fix="use io='uint8' (--io uint8) or 'int8'")
    if batch_size not in (None, 1):
        raise InvalidArgumentError("the Edge TPU needs static shapes with batch 1", argument="batch_size",
                                   received=batch_size, fix="use batch_size=1 (the default for this target)")
    if allow_float_fallback:
        raise InvalidArgumentError("float ops split the model between Edge TPU and CPU", argument="allow_float_fallback",
                                   received=True, fix="leave float fallback off for the Edge TPU")


def check_edgetpu_ready(flat_model: FlatModel | ModelSource) -> list[Problem]:
    """Every reason a model would not run whole on the Edge TPU, in op order.

    ``severity == "error"`` problems keep an op (and everything that depends on it) off
    the Edge TPU; ``"warning"`` ones cost speed (float I/O conversions on the CPU,
    parameters that do not fit the on-chip cache) or need a recent compiler. A model
    with no errors is ready for ``edgetpu_compiler``. Unlike :func:`predict_edgetpu`,
    this lists the problems of *all* ops, not just the first, so they can be fixed
    at once.

    Args:
        flat_model: a :class:`~edgeq_device.flatbuffer.FlatModel`, or a ``.tflite`` path or bytes.
    """
    flat = _as_flat(flat_model)
    sg = flat.main
    problems = [p for op in sg.operators if not _io_role(sg, op) and (p := _op_problem(flat, sg, op))]
    return problems + _model_notes(flat)


def _partition_epochs(sg: Subgraph, on_tpu: list[bool]) -> tuple[list[int], list[bool]]:
    """Each op's epoch as TensorFlow Lite's delegate partitioner assigns them, and each epoch's kind.

    The partitioner (tensorflow/lite/graph_info.cc) builds one epoch after another: an
    epoch takes, sweep after sweep in execution order, every op whose inputs are ready
    and whose kind (``on_tpu``) equals the epoch's kind, which the first ready op sets.
    """
    produced = {t for op in sg.operators for t in op.outputs}
    ready: set[int] = set()
    epochs = [-1] * len(sg.operators)
    kinds: list[bool] = []
    while True:
        kind: bool | None = None
        changed = True
        while changed:
            changed = False
            for op in sg.operators:
                if epochs[op.index] >= 0 or any(t >= 0 and t in produced and t not in ready for t in op.inputs):
                    continue
                if kind is None:
                    kind = on_tpu[op.index]
                if on_tpu[op.index] == kind:
                    epochs[op.index] = len(kinds)
                    ready.update(op.outputs)
                    changed = True
        if kind is None:
            return epochs, kinds
        kinds.append(kind)


def predict_edgetpu(model: FlatModel | ModelSource) -> EdgeTPUPrediction:
    """Predict op by op what ``edgetpu_compiler`` 16.0 maps to the Edge TPU (see the module docstring).

    Args:
        model: a :class:`~edgeq_device.flatbuffer.FlatModel`, or a ``.tflite`` path or bytes.
    """
    flat = _as_flat(model)
    sg = flat.main
    ops = sg.operators
    io = [_io_role(sg, op) for op in ops]
    found = [None if io[op.index] else _op_problem(flat, sg, op) for op in ops]
    problems = [p for p in found if p is not None]
    epochs, kinds = _partition_epochs(sg, [not io[op.index] and found[op.index] is None for op in ops])
    segment = kinds.index(True) if True in kinds else None
    producer = {t: op.index for op in ops for t in op.outputs}
    cause: dict[int, int] = {}  # op after the segment -> the unsupported op it runs on the CPU because of
    placements: list[OpPlacement] = []
    for op in ops:
        name, problem = _name(op), found[op.index]
        if io[op.index]:
            what = "converts the float input to int8" if op.opcode == "QUANTIZE" else "converts the output to float"
            placements.append(OpPlacement(op.index, name, "io", f"{what}; the compiler leaves it on the CPU",
                                          "convert with io='uint8' (--io uint8) to remove it"))
        elif segment is not None and epochs[op.index] == segment:
            placements.append(OpPlacement(op.index, name, "mapped"))
        elif segment is not None and epochs[op.index] < segment:
            assert problem is not None
            placements.append(OpPlacement(op.index, name, "before-segment",
                                          f"{problem.message}; it depends on no op that maps, so it runs on the "
                                          "CPU ahead of the Edge TPU segment without splitting the model",
                                          problem.fix))
        else:
            after = [cause[producer[t]] for t in op.inputs if producer.get(t) in cause]
            if segment is None:  # nothing maps: the first op that cannot map stands for the rest
                first_problem = next(i for i, p in enumerate(found) if p is not None)
                after = [first_problem] if first_problem != op.index else []
            if not after and problem is not None:
                cause[op.index] = op.index
                placements.append(OpPlacement(op.index, name, "unsupported", problem.message, problem.fix))
                continue
            first = after[0] if after else None
            if first is not None:
                cause[op.index] = first
            reason = (f"after the split at op {first} {_name(ops[first])}" if first is not None
                      else "after the Edge TPU segment") + ": the compiler maps one segment only"
            if problem is not None:
                reason += f"; also: {problem.message}"
            placements.append(OpPlacement(op.index, name, "after-split", reason,
                                          problem.fix if problem is not None else ""))
    split = next((o.index for o in placements if o.status == "unsupported"), None)
    return EdgeTPUPrediction(ops=tuple(placements), split_at=split,
                             problems=tuple(problems + _model_notes(flat)))


# ---------------------------------------------------------------- edgetpu_compiler


@dataclass(frozen=True)
class OperatorStatus:
    """One row of the compiler's operator table: op, count, status."""

    op: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        """True for ``Mapped to Edge TPU``."""
        return self.status.strip().lower() == "mapped to edge tpu"


@dataclass(frozen=True)
class CompilerReport:
    """What ``edgetpu_compiler`` said, parsed from its console output or ``*_edgetpu.log``.

    Sizes are bytes; fields the log does not contain are None.
    """

    compiler_version: str | None
    succeeded: bool
    input_model: str | None = None
    output_model: str | None = None
    operation_log: str | None = None
    input_size: int | None = None
    output_size: int | None = None
    on_chip_memory_used: int | None = None
    on_chip_memory_remaining: int | None = None
    off_chip_memory_used: int | None = None
    num_edgetpu_subgraphs: int | None = None
    total_ops: int | None = None
    ops_on_edgetpu: int | None = None
    ops_on_cpu: int | None = None
    operators: tuple[OperatorStatus, ...] = ()
    errors: tuple[str, ...] = ()
    log: str = field(default="", repr=False)

    @property
    def mapped(self) -> dict[str, int]:
        """Ops mapped to the Edge TPU: count by op."""
        out: dict[str, int] = {}
        for r in self.operators:
            if r.mapped:
                out[r.op] = out.get(r.op, 0) + r.count
        return out

    @property
    def not_mapped(self) -> dict[str, dict[str, int]]:
        """Ops left on the CPU: by op, count by reason."""
        out: dict[str, dict[str, int]] = {}
        for r in self.operators:
            if not r.mapped:
                d = out.setdefault(r.op, {})
                d[r.status] = d.get(r.status, 0) + r.count
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (without the raw log)."""
        return {
            "compiler_version": self.compiler_version, "succeeded": self.succeeded,
            "input_model": self.input_model, "output_model": self.output_model,
            "operation_log": self.operation_log, "input_size": self.input_size,
            "output_size": self.output_size, "on_chip_memory_used": self.on_chip_memory_used,
            "on_chip_memory_remaining": self.on_chip_memory_remaining,
            "off_chip_memory_used": self.off_chip_memory_used,
            "num_edgetpu_subgraphs": self.num_edgetpu_subgraphs, "total_ops": self.total_ops,
            "ops_on_edgetpu": self.ops_on_edgetpu, "ops_on_cpu": self.ops_on_cpu,
            "mapped": self.mapped, "not_mapped": self.not_mapped, "errors": list(self.errors),
        }


_UNITS = {"B": 1, "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_RE = re.compile(r"([\d.]+)\s*([KMG]?i?B)\b", re.IGNORECASE)
_ROW_RE = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def _size(text: str) -> int | None:
    m = _SIZE_RE.search(text)
    if not m:
        return None
    unit = _UNITS.get(m.group(2).upper())
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    return round(value * unit) if unit is not None and math.isfinite(value) else None


def parse_compiler_log(text: str) -> CompilerReport:
    """Parse ``edgetpu_compiler`` output (console text, with or without ``-s``, or the ``.log`` file).

    Recognized lines: ``Edge TPU Compiler version``, ``Input model:``/``Input:``,
    ``Output model:``/``Output:``, ``Input size:``, ``Output size:``, ``On-chip
    memory used/remaining for caching model parameters:``, ``Off-chip memory used
    for streaming uncached model parameters:``, ``Number of Edge TPU subgraphs:``,
    ``Total number of operations:``, ``Operation log:``, ``Number of operations that
    will run on Edge TPU/CPU:``, the ``Operator  Count  Status`` table, and error
    lines (``Compilation failed``, ``Internal compiler error``, ``ERROR:``,
    ``Invalid model``).
    """
    if not isinstance(text, str):
        raise InvalidArgumentError("expected the compiler's output as text", argument="text",
                                   received=type(text).__name__, fix="pass the log file's contents as str")
    info: dict[str, Any] = {}
    rows: list[OperatorStatus] = []
    errors: list[str] = []
    in_table = False
    keys = {
        "input model": "input_model", "input": "input_model", "output model": "output_model",
        "output": "output_model", "operation log": "operation_log",
    }
    sizes = {
        "input size": "input_size", "output size": "output_size",
        "on-chip memory used for caching model parameters": "on_chip_memory_used",
        "on-chip memory remaining for caching model parameters": "on_chip_memory_remaining",
        "off-chip memory used for streaming uncached model parameters": "off_chip_memory_used",
    }
    counts = {
        "number of edge tpu subgraphs": "num_edgetpu_subgraphs", "total number of operations": "total_ops",
        "number of operations that will run on edge tpu": "ops_on_edgetpu",
        "number of operations that will run on cpu": "ops_on_cpu",
    }
    succeeded = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        low = line.lower()
        m = re.match(r"edge tpu compiler version\s+(\S+)", low)
        if m:
            info["compiler_version"] = line.split()[-1]
            continue
        if re.match(r"^operator\s+count\s+status$", low):
            in_table = True
            continue
        if in_table:
            r = _ROW_RE.match(line)
            if r:
                rows.append(OperatorStatus(r.group(1), int(r.group(2)), r.group(3)))
                continue
            in_table = False
        if "compiled successfully" in low or "compilation succeeded" in low:
            succeeded = True
        if (low.startswith(("error", "compilation failed", "internal compiler error", "invalid model"))
                or "model not quantized" in low):
            errors.append(line)
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            k = key.strip().lower()
            value = value.strip()
            if k in keys:
                info[keys[k]] = value
            elif k in sizes:
                info[sizes[k]] = _size(value)
            elif k in counts and value.isdigit():
                info[counts[k]] = int(value)
    if rows and "ops_on_edgetpu" not in info:
        info["ops_on_edgetpu"] = sum(r.count for r in rows if r.mapped)
        info["ops_on_cpu"] = sum(r.count for r in rows if not r.mapped)
    elif "ops_on_edgetpu" not in info and succeeded and info.get("total_ops") is not None \
            and "not all operations" not in text.lower():
        info["ops_on_edgetpu"], info["ops_on_cpu"] = info["total_ops"], 0
    if "total_ops" not in info and rows:
        info["total_ops"] = sum(r.count for r in rows)
    if not errors and not succeeded and rows:
        succeeded = True  # the .log file has no "compiled successfully" line
    if errors:
        succeeded = False
    return CompilerReport(compiler_version=info.pop("compiler_version", None), succeeded=succeeded,
                          operators=tuple(rows), errors=tuple(errors), log=text, **info)


_INSTALL_FIX = ("install the Edge TPU Compiler (Debian package 'edgetpu-compiler' from Coral's apt "
                "repository, x86-64 Linux only; see coral.ai/docs/edgetpu/compiler) and put "
                "edgetpu_compiler on PATH, or use Coral's compiler notebook")

PathLike = Union[str, "os.PathLike[str]"]


def run_edgetpu_compiler(tflite_path: PathLike, out_dir: PathLike, *, overwrite: bool = False,
                         timeout: float = 600.0, extra_args: tuple[str, ...] = ()) -> CompilerReport:
    """Compile a ``.tflite`` with ``edgetpu_compiler -s`` into ``out_dir`` and parse what it says.

    Writes ``<name>_edgetpu.tflite`` and ``<name>_edgetpu.log`` into ``out_dir``.

    Args:
        tflite_path: a full-int8 ``.tflite`` (see :func:`check_edgetpu_ready`).
        out_dir: folder for the compiled model and its log (created if missing).
        overwrite: replace an existing ``<name>_edgetpu.tflite`` in ``out_dir``.
        timeout: seconds before the compiler is stopped.
        extra_args: more compiler flags, e.g. ``("--num_segments", "2")``.

    Raises:
        CompilerNotFoundError: ``edgetpu_compiler`` is not on PATH.
        ModelFileError: ``tflite_path`` does not exist.
        OutputExistsError: the compiled model exists and ``overwrite`` is False.
        OutputError: ``out_dir`` cannot be written.
        ConversionError: the compiler failed (its message is included; ``.report`` holds the parse).
    """
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        raise CompilerNotFoundError("edgetpu_compiler is not installed", argument="edgetpu_compiler",
                                    received=os.environ.get("PATH", ""), fix=_INSTALL_FIX)
    src = Path(os.fspath(tflite_path))
    if not src.is_file():
        raise ModelFileError("model file not found", argument="tflite_path", received=str(src),
                             fix="give the path of an existing .tflite file")
    out = Path(os.fspath(out_dir))
    target = out / f"{src.stem}_edgetpu.tflite"
    if target.exists() and not overwrite:
        raise OutputExistsError("compiled model exists", argument="out_dir", received=str(target),
                                fix="choose another out_dir or pass overwrite=True")
    check_output_folder(out, argument="out_dir")
    out.mkdir(parents=True, exist_ok=True)
    print(f"running edgetpu_compiler on {src.name} ...", file=sys.stderr)
    try:
        proc = subprocess.run([exe, "-s", "-o", str(out), *extra_args, str(src)], capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConversionError(f"edgetpu_compiler did not finish within {timeout:g} s", argument="timeout",
                              received=timeout, fix="raise the timeout, or compile a smaller model") from exc
    text = (proc.stdout or "") + ("\n" + proc.stderr if proc.stderr else "")
    report = parse_compiler_log(text)
    if proc.returncode != 0 or not report.succeeded:
        first = report.errors[0] if report.errors else (text.strip().splitlines() or ["no output"])[-1]
        err = ConversionError(f"edgetpu_compiler failed (exit {proc.returncode}): {first}",
                              argument="tflite_path", received=str(src),
                              fix="run check_edgetpu_ready() on the model and fix what it lists")
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report
