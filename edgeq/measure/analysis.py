"""Analyze a ``.tflite`` model: ops, MACs, parameters, activation memory, Edge TPU mapping.

``edgeq.analyze(path_or_bytes)`` reads the flatbuffer itself (no interpreter),
with the same code ``edgeq-device info`` uses on a board
(:mod:`edgeq_device.model.analysis`), and adds what the host knows: achieved MAC/s
from a measured latency, with ``target="edgetpu"`` the predicted Edge TPU
partition (:mod:`edgeq.targets.edgetpu`), and with ``target="mcu"`` what TFLM's own
interpreter says of the model (:mod:`edgeq.targets.mcu`: it runs the model, in a child process).
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from edgeq_device.model.analysis import DtypeTotal, GraphAnalysis, OpInfo, TensorInfo, analyze_flat_model
from edgeq_device.model.flatbuffer import read_flat_model
from edgeq_device.results.fileio import atomic_write_text
from edgeq_device.results.report_json import dumps_json

from edgeq.errors import InvalidArgumentError
from edgeq.targets.edgetpu.rules import EdgeTPUPrediction, predict_edgetpu
from edgeq.targets.mcu.boards import Board, get_board
from edgeq.targets.mcu.check import MCUReport, check_mcu

__all__ = ["TARGETS", "ModelAnalysis", "analyze"]

#: Targets ``analyze`` can predict a mapping for.
TARGETS = ("edgetpu", "mcu")

ModelInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]


@dataclass(frozen=True)
class ModelAnalysis:
    """Everything :func:`analyze` found. Figures are for the primary subgraph.

    ``peak_activation_bytes`` is an estimate from tensor lifetimes (each
    non-constant tensor lives from the op producing it to the last op reading
    it; inputs from the start, outputs to the end); it ignores the runtime's
    arena planner, which reuses memory in place (e.g. for RESHAPE) and packs
    buffers its own way.
    """

    source: str
    graph: GraphAnalysis
    latency_us: float | None = None
    target: str | None = None
    edgetpu: EdgeTPUPrediction | None = None
    mcu: MCUReport | None = None

    @property
    def ops(self) -> tuple[OpInfo, ...]:
        """Every op in execution order, with its tensors and MACs."""
        return self.graph.ops

    @property
    def op_names(self) -> list[str]:
        """Op names in execution order (as the interpreter reports them)."""
        return [op.name for op in self.graph.ops]

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        """The model's input tensors."""
        return self.graph.inputs

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        """The model's output tensors."""
        return self.graph.outputs

    @property
    def op_counts(self) -> dict[str, int]:
        """Op counts by type, most frequent first."""
        return self.graph.op_counts

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of one inference (conv, depthwise, dense, matmul, transpose conv, conv 3D)."""
        return self.graph.total_macs

    @property
    def macs_by_op(self) -> dict[str, int]:
        """MACs by op type."""
        return self.graph.macs_by_op

    @property
    def params_by_dtype(self) -> dict[str, DtypeTotal]:
        """Constant tensors by dtype: count, elements, bytes."""
        return self.graph.params_by_dtype

    @property
    def total_params(self) -> int:
        """Elements of all constant tensors (weights, biases, other constants)."""
        return self.graph.total_params

    @property
    def total_param_bytes(self) -> int:
        """Stored bytes of all constant tensors."""
        return self.graph.total_param_bytes

    @property
    def peak_activation_bytes(self) -> int:
        """Estimated peak activation memory in bytes (see the class docstring)."""
        return self.graph.memory.peak_bytes

    @property
    def peak_op(self) -> int:
        """Index of the op where the activation memory peaks."""
        return self.graph.memory.peak_op

    @property
    def macs_per_second(self) -> float | None:
        """Achieved MAC/s for ``latency_us``, or None without a latency."""
        if self.latency_us is None:
            return None
        return self.graph.macs_per_second(self.latency_us)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the whole analysis."""
        d: dict[str, Any] = {"source": self.source}
        d.update(self.graph.to_dict())
        d["latency_us"] = self.latency_us
        d["macs_per_second"] = self.macs_per_second
        d["target"] = self.target
        if self.edgetpu is not None:
            d["edgetpu"] = self.edgetpu.to_dict()
        if self.mcu is not None:
            d["mcu"] = self.mcu.to_dict()
        return d

    def to_json(self, indent: int | None = 2) -> str:
        """The analysis as JSON text."""
        return dumps_json(self.to_dict(), indent=indent)

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Write the analysis as JSON, atomically; refuses to replace a file unless ``overwrite``."""
        return atomic_write_text(Path(os.fspath(path)), self.to_json() + "\n", overwrite=overwrite,
                                 argument="path")

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        """The summary in a notebook."""
        return "<pre>" + html.escape(self.summary()) + "</pre>"

    def summary(self) -> str:
        """A few lines of plain text: totals, memory, and the Edge TPU partition if predicted."""
        peak_name = self.ops[self.peak_op].name if 0 <= self.peak_op < len(self.ops) else "-"
        lines = [
            f"{self.source}: {len(self.ops)} ops, {self.total_macs / 1e6:.2f} M MACs, "
            f"{self.total_params / 1e6:.3f} M parameters ({self.total_param_bytes / 1024:.1f} KiB)",
            f"peak activation memory (estimate): {self.peak_activation_bytes / 1024:.1f} KiB "
            f"at op {self.peak_op} {peak_name}",
        ]
        if self.macs_per_second is not None:
            lines.append(f"achieved: {self.macs_per_second / 1e9:.3f} GMAC/s at {self.latency_us:g} us")
        if self.edgetpu is not None:
            lines.append(f"Edge TPU: {self.edgetpu.summary()}")
        if self.mcu is not None:
            lines.append(f"microcontroller: {self.mcu.summary()}")
        return "\n".join(lines)


def analyze(model: ModelInput, *, target: str | None = None, latency_us: float | None = None,
            board: str | Board | None = None, reserve_ram: int = 0, reserve_flash: int = 0,
            boards_file: str | os.PathLike[str] | None = None) -> ModelAnalysis:
    """Analyze a ``.tflite`` model without running it.

    Args:
        model: path of a ``.tflite`` file, or its bytes.
        target: ``"edgetpu"`` to predict which ops map to the Coral Edge TPU; ``"mcu"`` to load and
            run the model in TFLM's interpreter (:func:`edgeq.targets.mcu.check.check_mcu`: ops it
            refuses, arena, flash, outputs against LiteRT's reference kernels); None for none.
        board: with ``"mcu"``: say whether the model fits this board (a name of
            :mod:`edgeq.targets.mcu.boards`, or a :class:`~edgeq.targets.mcu.boards.Board`), keeping
            ``reserve_ram`` and ``reserve_flash`` bytes free; ``boards_file`` adds boards from TOML.
        latency_us: a measured inference latency (microseconds) to report achieved MAC/s.

    Returns:
        A :class:`ModelAnalysis`: ops in execution order with their tensors, op
        counts, MACs per op and in total, parameters and bytes by dtype, an
        estimate of peak activation memory, and the Edge TPU prediction if asked.

    Raises:
        ModelFileError: the file is missing, not a ``.tflite`` or truncated.
        InvalidArgumentError: ``target`` is unknown or ``latency_us`` is not a positive number.
    """
    if target is not None and target not in TARGETS:
        raise InvalidArgumentError("unknown target", argument="target", received=target,
                                   fix=f"use one of {list(TARGETS)} or None")
    if latency_us is not None:
        ok = isinstance(latency_us, (int, float)) and not isinstance(latency_us, bool)
        if not ok or not math.isfinite(latency_us) or latency_us <= 0:
            raise InvalidArgumentError("must be a positive number of microseconds", argument="latency_us",
                                       received=latency_us, fix="give the measured mean latency, e.g. 1520.5")
    flat = read_flat_model(model, "model")
    if isinstance(model, (bytes, bytearray, memoryview)):
        source = f"<{len(bytes(model))} bytes>"
    else:
        source = Path(os.fspath(model)).name
    graph = analyze_flat_model(flat)
    prediction = predict_edgetpu(flat) if target == "edgetpu" else None
    mcu = None
    if target == "mcu":
        chosen = get_board(board, boards_file) if isinstance(board, str) else board
        mcu = check_mcu(flat.raw, board=chosen, reserve_ram=reserve_ram, reserve_flash=reserve_flash)
    elif board is not None:
        raise InvalidArgumentError("a board goes with target 'mcu'", argument="board", received=str(board),
                                   fix="pass target='mcu' (--target mcu) too")
    return ModelAnalysis(source=source, graph=graph, latency_us=float(latency_us) if latency_us else None,
                         target=target, edgetpu=prediction, mcu=mcu)
