"""The Edge TPU prediction: which ops ``edgetpu_compiler`` maps, and where the model splits.

What one op needs to map (8-bit tensors, static shapes, Coral's op table and constraints) is in
:mod:`edgeq.targets.edgetpu.ops`; this module applies it to a whole graph.

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
run :func:`edgeq.targets.edgetpu.compiler.run_edgetpu_compiler` where ``edgetpu_compiler`` is installed to know for
sure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgeq_device.model.flatbuffer import FlatModel, ModelSource, Subgraph

from edgeq.errors import InvalidArgumentError
from edgeq.targets.edgetpu.ops import (
    EDGETPU_COMPILER_VERSION,
    EIGHT_BIT,
    ON_CHIP_PARAMETER_BYTES,
    RESIZE_OPS,
    Problem,
    as_flat_model,
    builtin_option,
    is_io_conversion,
    op_name,
    op_problem,
    problem_at,
)

__all__ = [
    "EdgeTPUPrediction",
    "OpPlacement",
    "Problem",
    "check_edgetpu_ready",
    "check_target_args",
    "predict_edgetpu",
]


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


def _model_notes(flat: FlatModel) -> list[Problem]:
    sg = flat.main
    notes: list[Problem] = []
    for i in sg.inputs:
        t = sg.tensors[i]
        if t.dtype not in EIGHT_BIT and any(is_io_conversion(sg, op) and op.inputs[0] == i for op in sg.operators):
            notes.append(Problem("float-io", f"input {t.name!r} is {t.dtype}: its QUANTIZE runs on the CPU "
                                 "before the Edge TPU segment",
                                 "convert with io='uint8' (edgeq convert --io uint8) to feed 8-bit data "
                                 "directly", severity="warning"))
    for i in sg.outputs:
        t = sg.tensors[i]
        if t.dtype not in EIGHT_BIT and any(is_io_conversion(sg, op) and op.outputs[0] == i for op in sg.operators):
            notes.append(Problem("float-io", f"output {t.name!r} is {t.dtype}: its DEQUANTIZE runs on the CPU "
                                 "after the Edge TPU segment",
                                 "convert with io='uint8' (or 'int8') to read 8-bit outputs", severity="warning"))
    weights = sum(t.buffer_size for t in sg.tensors if t.is_constant and t.dtype in EIGHT_BIT)
    if weights > ON_CHIP_PARAMETER_BYTES:
        notes.append(Problem("parameter-memory", f"{weights / 2**20:.1f} MiB of 8-bit weights exceed the "
                             f"~{ON_CHIP_PARAMETER_BYTES / 2**20:.0f} MiB on-chip parameter cache; the rest "
                             "streams from host memory every inference (slower)",
                             "use a smaller model, or split it across Edge TPUs (edgetpu_compiler "
                             "--num_segments)", severity="warning"))
    for op in sg.operators:
        if op.opcode in RESIZE_OPS and builtin_option(op, RESIZE_OPS[op.opcode] + 1, "bool", False):
            notes.append(problem_at("compiler-version", f"{op.opcode} with half_pixel_centers maps with "
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
        flat_model: a :class:`~edgeq_device.model.flatbuffer.FlatModel`, or a ``.tflite`` path or bytes.
    """
    flat = as_flat_model(flat_model)
    sg = flat.main
    problems = [p for op in sg.operators if not is_io_conversion(sg, op) and (p := op_problem(flat, sg, op))]
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
        model: a :class:`~edgeq_device.model.flatbuffer.FlatModel`, or a ``.tflite`` path or bytes.
    """
    flat = as_flat_model(model)
    sg = flat.main
    ops = sg.operators
    io = [is_io_conversion(sg, op) for op in ops]
    found = [None if io[op.index] else op_problem(flat, sg, op) for op in ops]
    problems = [p for p in found if p is not None]
    epochs, kinds = _partition_epochs(sg, [not io[op.index] and found[op.index] is None for op in ops])
    segment = kinds.index(True) if True in kinds else None
    producer = {t: op.index for op in ops for t in op.outputs}
    cause: dict[int, int] = {}  # op after the segment -> the unsupported op it runs on the CPU because of
    placements: list[OpPlacement] = []
    for op in ops:
        name, problem = op_name(op), found[op.index]
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
            reason = (f"after the split at op {first} {op_name(ops[first])}" if first is not None
                      else "after the Edge TPU segment") + ": the compiler maps one segment only"
            if problem is not None:
                reason += f"; also: {problem.message}"
            placements.append(OpPlacement(op.index, name, "after-split", reason,
                                          problem.fix if problem is not None else ""))
    split = next((o.index for o in placements if o.status == "unsupported"), None)
    return EdgeTPUPrediction(ops=tuple(placements), split_at=split,
                             problems=tuple(problems + _model_notes(flat)))
