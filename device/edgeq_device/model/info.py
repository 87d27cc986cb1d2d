"""``edgeq-device info``: what a ``.tflite`` holds, read without any TFLite runtime.

Inputs and outputs (shape, dtype, quantization), operator counts by type,
sizes, whether it was compiled for the Edge TPU, and the edgeq metadata the
host wrote into it. Built on :func:`edgeq_device.model.flatbuffer.read_flat_model`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..results.report_json import JsonResult
from .analysis import analyze_flat_model
from .flatbuffer import FlatModel, ModelSource, Tensor, load_model_bytes, read_flat_model
from .int4 import INT4_RUNTIME_NOTE, INT4_SPEED_NOTE, int4_tensors
from .metadata import EdgeqMetadata, read_metadata
from .preprocess import Preprocess
from .preprocess_choice import choose_preprocess, normalization_text
from .tflite_metadata import TfliteMetadata, read_tflite_metadata

__all__ = ["EDGETPU_CUSTOM_OP", "ModelInfo", "TensorInfo", "format_bytes", "format_info", "model_info"]

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output tensor of a model.

    ``shape_signature`` has -1 where a dimension is only known at run time;
    ``scale``/``zero_point`` are empty for float tensors and hold one value
    (per-tensor) or one per channel of ``quantized_dimension``.
    """

    name: str
    index: int
    dtype: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    quantized_dimension: int = 0

    @property
    def is_quantized(self) -> bool:
        return len(self.scale) > 0

    @property
    def is_dynamic(self) -> bool:
        return any(d < 0 for d in self.shape_signature)

    def describe(self) -> str:
        """One line: ``name  [1, 28, 28, 1] INT8  scale=0.0039 zero_point=-128``."""
        dims = [("?" if d < 0 else str(d)) for d in self.shape_signature]
        text = f"{self.name}  [{', '.join(dims)}] {self.dtype}"
        if self.is_quantized:
            if len(self.scale) == 1:
                text += f"  scale={self.scale[0]:.6g} zero_point={self.zero_point[0] if self.zero_point else 0}"
            else:
                text += f"  per-axis({self.quantized_dimension}) x{len(self.scale)}"
        return text

    @classmethod
    def from_tensor(cls, t: Tensor) -> TensorInfo:
        q = t.quantization
        return cls(name=t.name, index=t.index, dtype=t.dtype, shape=t.shape,
                   shape_signature=t.shape_signature, scale=q.scale, zero_point=q.zero_point,
                   quantized_dimension=q.quantized_dimension)


def _info_1_to_2(d: dict[str, Any]) -> dict[str, Any]:
    """``edgeq-device/info/1`` named the model's path, hash and size ``path``, ``sha256``, ``size_bytes``."""
    renames = {"path": "model", "sha256": "model_sha256", "size_bytes": "model_size_bytes"}
    return {renames.get(k, k): v for k, v in d.items()}


@dataclass(frozen=True)
class ModelInfo(JsonResult):
    """What ``edgeq-device info`` reports about a model.

    The model's path, hash and size carry the names every edgeq result uses: ``model``
    (None for bytes), ``model_sha256`` and ``model_size_bytes`` (schema version 2; version 1
    JSON, which called them ``path``, ``sha256`` and ``size_bytes``, is still read).
    """

    KIND = "info"
    VERSION = 2
    UPGRADES = MappingProxyType({1: _info_1_to_2})

    model: str | None
    model_sha256: str
    model_size_bytes: int
    schema_version: int
    description: str
    subgraphs: int
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    op_counts: dict[str, int]
    num_ops: int
    custom_ops: tuple[str, ...]
    edgetpu: bool
    constant_bytes: int
    signatures: tuple[str, ...]
    metadata_names: tuple[str, ...]
    metadata: EdgeqMetadata | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    macs: int | None = None
    params: int | None = None
    peak_activation_bytes: int | None = None
    int4_tensors: int = 0
    """INT4 (4-bit weight) tensors: such a model needs LiteRT (:mod:`edgeq_device.model.int4`)."""
    tflite_metadata: TfliteMetadata | None = None
    """The standard TFLite metadata (``TFLITE_METADATA``), as :func:`~edgeq_device.read_tflite_metadata` reads it."""
    preprocessing: str = ""
    """The preprocessing eval would use with no flags, and where each part comes from."""

    @property
    def is_dynamic(self) -> bool:
        """True where some input dimension is only known at run time."""
        return any(t.is_dynamic for t in self.inputs)

    def __str__(self) -> str:
        """The text ``edgeq-device info`` prints (:func:`format_info`)."""
        return format_info(self)


def _constant_bytes(flat: FlatModel) -> int:
    seen: set[int] = set()
    total = 0
    for sg in flat.subgraphs:
        for t in sg.tensors:
            if t.buffer_size and t.buffer not in seen:
                seen.add(t.buffer)
                total += t.buffer_size
    return total


def model_info(model: ModelSource) -> ModelInfo:
    """Describe a ``.tflite`` (path or bytes) without loading a TFLite runtime.

    Raises:
        ModelFileError: the file is missing, not a TFLite flatbuffer, truncated, or its
            edgeq metadata is corrupt.
    """
    data = load_model_bytes(model)
    flat = read_flat_model(model)
    meta = read_metadata(data)
    sg = flat.main
    custom = sorted({op.custom_code or "" for s in flat.subgraphs for op in s.operators
                     if op.opcode == "CUSTOM"})
    path = None if isinstance(model, (bytes, bytearray, memoryview)) else str(Path(os.fspath(model)))
    graph = analyze_flat_model(flat)
    return ModelInfo(
        model=path,
        model_sha256=hashlib.sha256(data).hexdigest(),
        model_size_bytes=flat.size,
        schema_version=flat.version,
        description=flat.description,
        subgraphs=len(flat.subgraphs),
        inputs=tuple(TensorInfo.from_tensor(sg.tensors[i]) for i in sg.inputs),
        outputs=tuple(TensorInfo.from_tensor(sg.tensors[i]) for i in sg.outputs),
        op_counts=flat.op_counts(),
        num_ops=len(sg.operators),
        custom_ops=tuple(custom),
        edgetpu=EDGETPU_CUSTOM_OP in custom,
        constant_bytes=_constant_bytes(flat),
        signatures=tuple(flat.signatures),
        metadata_names=tuple(flat.metadata),
        metadata=meta,
        macs=graph.total_macs,
        params=graph.total_params,
        peak_activation_bytes=graph.peak_activation_bytes,
        int4_tensors=int4_tensors(flat),
        tflite_metadata=read_tflite_metadata(flat, strict=False),
        preprocessing=choose_preprocess(flat, warn=False).summary,
    )


def format_bytes(n: float | None) -> str:
    """A byte count for people: ``"512 B"``, ``"64.2 KiB"``, ``"3.8 MiB"``; ``"-"`` for None."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def format_info(info: ModelInfo) -> str:
    """The human-readable text ``edgeq-device info`` prints."""
    lines = [f"model      {info.model or '<bytes>'}",
             f"size       {format_bytes(info.model_size_bytes)} (constants {format_bytes(info.constant_bytes)})",
             f"subgraphs  {info.subgraphs}, operators {info.num_ops}"
             + (", compiled for the Edge TPU" if info.edgetpu else "")]
    if info.int4_tensors:
        lines.append(f"4-bit      {info.int4_tensors} INT4 weight tensor(s): {INT4_RUNTIME_NOTE}")
        lines.append(f"           speed: {INT4_SPEED_NOTE}")
    if info.macs is not None:
        lines.append(f"compute    {info.macs:,} multiply-accumulates, {info.params or 0:,} parameters, "
                     f"peak activations ~{format_bytes(info.peak_activation_bytes or 0)} (estimate)")
    lines.append("inputs")
    lines += [f"  {t.describe()}" for t in info.inputs]
    lines.append("outputs")
    lines += [f"  {t.describe()}" for t in info.outputs]
    lines.append("operators")
    width = max((len(k) for k in info.op_counts), default=0)
    lines += [f"  {name:<{width}}  {count}" for name, count in info.op_counts.items()]
    if info.custom_ops:
        lines.append(f"custom ops {', '.join(info.custom_ops)}")
    meta = info.metadata
    if meta is None:
        lines.append("edgeq      no edgeq metadata" + ("" if info.tflite_metadata is not None else
                                                     " (the preprocessing line says what eval assumes)"))
    else:
        lines.append(f"edgeq      mode {meta.mode}, I/O {meta.io}"
                     + (f", from {meta.source}" if meta.source else ""))
        if meta.preprocess is not None:
            p = meta.preprocess
            size = f"{p.size[0]}x{p.size[1]}" if p.size else "as is"
            lines.append(f"  preprocess size {size}, {p.color.value}, mean {list(p.mean)}, std {list(p.std)}")
        if meta.labels is not None:
            shown = ", ".join(meta.labels[:10]) + (", ..." if len(meta.labels) > 10 else "")
            lines.append(f"  labels ({len(meta.labels)}) {shown}")
    if info.tflite_metadata is not None:
        lines += tflite_metadata_lines(info.tflite_metadata)
    if info.preprocessing:
        lines.append(f"preprocessing  {info.preprocessing} (eval with no flags)")
    return "\n".join(lines)


def _labels_text(labels: tuple[str, ...], what: str = "labels") -> str:
    shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
    return f"{what} ({len(labels)}) {shown}"


def tflite_metadata_lines(m: TfliteMetadata) -> list[str]:
    """What ``edgeq-device info`` prints of a model's standard TFLite metadata."""
    lines = [f"tflite     {m.name or '(no name)'} (TFLite metadata)"
             + (f", version {m.version}" if m.version else "") + (f", {m.author}" if m.author else "")]
    for which, tensors in (("input ", m.inputs), ("output", m.outputs)):
        for t in tensors:
            parts = [p for p in (t.kind, t.color) if p]
            if t.default_size:
                parts.append(f"{t.default_size[0]}x{t.default_size[1]}")
            text = " ".join(parts)
            if t.mean and t.std:
                text += (", " if text else "") + f"normalization {normalization_text(Preprocess(mean=t.mean, std=t.std))}"
            for labels, what in ((t.labels, "labels"), (t.value_labels, "value labels")):
                if labels:
                    text += (", " if text else "") + _labels_text(labels, what)
            if t.bounding_box is not None:
                b = t.bounding_box
                text += (", " if text else "") + f"boxes {b.type} {b.coordinates} index {list(b.index)}"
            if t.score_threshold is not None:
                text += (", " if text else "") + f"score threshold {t.score_threshold:g}"
            name = f"{t.name}: " if which == "output" and t.name else ""
            lines.append(f"  {which.strip():<8} {name}{text}".rstrip())
    if m.class_offset:
        lines.append(f"  class offset {m.class_offset} (the first label, {m.labels[0] if m.labels else ''!r}, "
                     "is no class)")
    if m.packed:
        lines.append(f"  packed   {', '.join(m.packed)}")
    return lines
