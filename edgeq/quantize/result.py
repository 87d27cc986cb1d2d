"""What a conversion gives: :class:`ConversionResult`, the model's bytes and what is known about it.

Its JSON form (:meth:`ConversionResult.to_dict`) is versioned by ``schema``
(``edgeq/conversion/1``) and read back, with the model's bytes, by
:meth:`ConversionResult.from_dict`.
"""

from __future__ import annotations

import dataclasses
import gzip
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeq_device.model.flatbuffer import FlatModel, read_flat_model
from edgeq_device.model.metadata import EdgeqMetadata, read_metadata
from edgeq_device.results.fileio import atomic_write_bytes

from edgeq.errors import InvalidArgumentError
from edgeq.quantize.metadata import embed_metadata
from edgeq.quantize.modes import IOType, Mode, enum_arg
from edgeq.quantize.ranges.result import RangesChoice
from edgeq.quantize.tflite import float_ops
from edgeq.targets.mcu.export_c import CExport, export_c

__all__ = ["SCHEMA", "ConversionResult", "TensorDetail", "compressed_size", "int8_variant", "safe_name",
           "tensor_details"]

SCHEMA = "edgeq/conversion/1"
"""The ``schema`` of :meth:`ConversionResult.to_dict`; a new version is a new number."""


@dataclass(frozen=True)
class TensorDetail:
    """An input or output of the converted model."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "scale": list(self.scale), "zero_point": list(self.zero_point)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorDetail:
        """Read :meth:`to_dict`'s form back."""
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]),
                   tuple(float(s) for s in data.get("scale", ())),
                   tuple(int(z) for z in data.get("zero_point", ())))

    def __str__(self) -> str:
        text = f"{self.name} {self.dtype} {list(self.shape)}"
        if self.scale:
            scale = ", ".join(f"{s:.6g}" for s in self.scale[:4]) + (", ..." if len(self.scale) > 4 else "")
            zero = ", ".join(str(z) for z in self.zero_point[:4]) + (", ..." if len(self.zero_point) > 4 else "")
            text += f" (scale {scale}; zero point {zero})"
        return text


def tensor_details(flat: FlatModel, which: str) -> tuple[TensorDetail, ...]:
    """The ``"inputs"`` or ``"outputs"`` of a model, in signature order, as plain Python values."""
    sg = flat.main
    out = []
    for i in flat.io_order(which):
        t = sg.tensors[i]
        out.append(TensorDetail(str(t.name), tuple(int(d) for d in t.shape_signature), t.dtype.lower(),
                                tuple(float(s) for s in t.quantization.scale),
                                tuple(int(z) for z in t.quantization.zero_point)))
    return tuple(out)


def compressed_size(data: bytes) -> int:
    """Bytes of ``data`` gzip-compressed at level 9 (no timestamp, so the same bytes give the same size)."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def safe_name(name: str) -> str:
    """``name`` with only letters, digits, ``_``, ``.`` and ``-`` (a file name's stem); ``model`` if none."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "model"


@dataclass(frozen=True)
class ConversionResult:
    """One converted model: its bytes and what is known about it.

    ``float_ops`` lists the ops of a quantized model that still compute in float
    (a fallback, or what a mixed-precision choice kept in float). ``budget`` holds the
    :class:`~edgeq.quantize.precision.budget.BudgetReport` when an accuracy budget chose this conversion;
    ``edgetpu`` the predicted Edge TPU mapping when ``target`` is ``"edgetpu"``; ``mcu`` the
    :class:`~edgeq.targets.mcu.check.MCUReport` (TFLM's verdict, arena, flash) when it is ``"mcu"``.
    """

    mode: Mode
    io: IOType
    model_bytes: bytes = field(repr=False)
    source_name: str
    inputs: tuple[TensorDetail, ...]
    outputs: tuple[TensorDetail, ...]
    conversion_seconds: float
    calibration_samples: int
    float_ops: tuple[str, ...]
    op_counts: dict[str, int]
    metadata: EdgeqMetadata
    budget: Any = field(default=None, repr=False, compare=False)
    target: str | None = None
    edgetpu: Any = field(default=None, repr=False, compare=False)
    mcu: Any = field(default=None, repr=False, compare=False)

    @property
    def ranges(self) -> RangesChoice | None:
        """How the int8 activation ranges were chosen, when not the converter's min/max."""
        data = (self.metadata.extra or {}).get("ranges")
        return RangesChoice.from_dict(data) if isinstance(data, dict) else None

    @property
    def size_bytes(self) -> int:
        """Size of the ``.tflite`` file in bytes."""
        return len(self.model_bytes)

    @property
    def compressed_size(self) -> int:
        """Size of the ``.tflite`` file gzip-compressed at level 9: what an over-the-air update downloads."""
        return compressed_size(self.model_bytes)

    @property
    def variant(self) -> str:
        """The mode with what differs from it: ``int8+a16(conv2d_5,add_1)`` (16-bit activations on
        those layers), ``int8+float(dense)`` (those layers kept float), else the mode."""
        kind, names = _variant_parts(self.metadata.extra or {})
        if not kind:
            return self.mode.value
        shown = [str(n).split(";")[0] for n in names]
        more = f",+{len(shown) - 3}" if len(shown) > 3 else ""
        return f"{self.mode.value}+{kind}({','.join(shown[:3])}{more})"

    @property
    def default_filename(self) -> str:
        """``<model name>_<mode>[_a16|_float][_<io>].tflite``."""
        suffix = "" if self.io is IOType.FLOAT else f"_{self.io.value}io"
        kind, _ = _variant_parts(self.metadata.extra or {})
        return f"{self.source_name}_{self.mode.value}{'_' + kind if kind else ''}{suffix}.tflite"

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the model atomically; a folder ``path`` gets :attr:`default_filename` inside.

        Raises:
            OutputExistsError: the file exists and ``overwrite`` is False.
            OutputError: the path cannot be written (a folder on the way is a file, no
                permission, a read-only or full disk).
        """
        p = Path(path)
        if p.is_dir() or (not p.suffix and not p.exists()):
            p = p / self.default_filename
        return atomic_write_bytes(p, self.model_bytes, overwrite=overwrite, argument="path")

    def export_c(self, folder: str | Path, name: str | None = None, overwrite: bool = False) -> CExport:
        """Write the model as C sources for a TFLM firmware (:func:`edgeq.targets.mcu.export_c.export_c`):
        an aligned array and header with the measured arena size, an op resolver registering exactly
        the model's operators, a minimal ``main``. ``name`` defaults to the model's name.

        Raises:
            InvalidArgumentError: TFLM cannot run the model (its ops are named).
            OutputExistsError: a file exists and ``overwrite`` is False (nothing is written).
        """
        return export_c(self.model_bytes, folder, name or self.source_name, report=self.mcu, overwrite=overwrite)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (without the bytes), versioned by ``schema``."""
        return {
            "schema": SCHEMA, "mode": self.mode.value, "variant": self.variant, "io": self.io.value,
            "source": self.source_name,
            "size_bytes": self.size_bytes, "compressed_size_bytes": self.compressed_size,
            "conversion_seconds": round(self.conversion_seconds, 4),
            "calibration_samples": self.calibration_samples, "float_ops": list(self.float_ops),
            "op_counts": dict(self.op_counts), "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs], "target": self.target,
            **({} if self.ranges is None else {"ranges": self.ranges.to_dict()}),
            **({} if self.mcu is None else {"mcu": self.mcu.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], model_bytes: bytes) -> ConversionResult:
        """The result :meth:`to_dict` described, with the model's bytes (e.g. the saved file's).

        The metadata is read from the bytes (a model without an edgeq entry gets one with
        only its mode and I/O). ``budget`` and ``edgetpu`` are not part of the summary.

        Raises:
            InvalidArgumentError: ``data`` is not a ``edgeq/conversion/1`` summary, or
                ``model_bytes`` is not the model it describes (another size).
        """
        schema = data.get("schema", SCHEMA) if isinstance(data, dict) else None
        if schema != SCHEMA:
            raise InvalidArgumentError("not a conversion summary this edgeq reads", argument="data",
                                       received=schema if isinstance(data, dict) else type(data).__name__,
                                       fix=f"give the dict ConversionResult.to_dict() wrote (schema {SCHEMA!r})")
        try:
            mode = enum_arg(Mode, data["mode"], "data")
            io = enum_arg(IOType, data["io"], "data")
            size = int(data["size_bytes"])
            if size != len(model_bytes):
                raise InvalidArgumentError(
                    f"the summary describes a {size}-byte model", argument="model_bytes",
                    received=f"{len(model_bytes)} bytes", fix="give the bytes of the model the summary was written for")
            meta = read_metadata(model_bytes) or EdgeqMetadata(mode=mode.value, io=io.value)
            return cls(
                mode=mode, io=io, model_bytes=bytes(model_bytes), source_name=str(data["source"]),
                inputs=tuple(TensorDetail.from_dict(t) for t in data["inputs"]),
                outputs=tuple(TensorDetail.from_dict(t) for t in data["outputs"]),
                conversion_seconds=float(data["conversion_seconds"]),
                calibration_samples=int(data["calibration_samples"]),
                float_ops=tuple(str(op) for op in data["float_ops"]),
                op_counts={str(k): int(v) for k, v in data["op_counts"].items()},
                metadata=meta, target=data.get("target"))
        except InvalidArgumentError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise InvalidArgumentError(f"the conversion summary is incomplete ({type(exc).__name__}: {exc})",
                                       argument="data", received=sorted(data),
                                       fix="give the dict ConversionResult.to_dict() wrote") from None

    def _headline(self) -> str:
        io = "" if self.io is IOType.FLOAT else f", {self.io.value} I/O"
        target = f", for {self.target}" if self.target else ""
        return (f"{self.source_name}: {self.variant}{io}{target}, {self.size_bytes / 1024:.1f} KiB "
                f"({self.compressed_size / 1024:.1f} KiB gzip -9)")

    def _facts(self) -> list[tuple[str, str]]:
        facts = [("converted in", f"{self.conversion_seconds:.2f} s")]
        if self.calibration_samples:
            facts.append(("calibration samples", str(self.calibration_samples)))
        if self.metadata.extra.get("rounding"):
            facts.append(("4-bit weights", f"{self.metadata.extra.get('int4_weights')}, "
                                            f"{self.metadata.extra['rounding']} rounding"))
        facts += [("inputs", "; ".join(str(t) for t in self.inputs)),
                  ("outputs", "; ".join(str(t) for t in self.outputs)),
                  ("ops", ", ".join(f"{k} {v}" for k, v in sorted(self.op_counts.items()))),
                  ("float ops", ", ".join(self.float_ops) or "none")]
        a16 = self.metadata.extra.get("a16") if isinstance(self.metadata.extra, dict) else None
        if a16:
            facts.append(("16-bit activations", ", ".join(str(n).split(";")[0] for n in a16.get("a16_nodes", ()))
                          + "".join(f"; kept int8: {str(n).split(';')[0]} ({op})" for n, op in a16.get("kept_int8", ()))))
        if self.ranges is not None:
            facts.append(("activation ranges", self.ranges.summary()))
        if self.mcu is not None:
            facts.append(("microcontroller (TFLM)", self.mcu.summary().replace("\n", "; ")))
        if self.metadata.labels:
            shown = ", ".join(self.metadata.labels[:10])
            facts.append(("labels", shown + (f", ... ({len(self.metadata.labels)})"
                                              if len(self.metadata.labels) > 10 else "")))
        return facts

    def __str__(self) -> str:
        return "\n".join([self._headline(), *(f"  {k}: {v}" for k, v in self._facts())])

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v)}</td></tr>" for k, v in self._facts())
        return f"<div><b>{html.escape(self._headline())}</b><table>{rows}</table></div>"


def int8_variant(base: ConversionResult, raw: bytes, io_: IOType, extra: dict[str, Any], seconds: float,
                 samples: int) -> ConversionResult:
    """``raw``, an int8 model made from ``base``'s float model (some layers kept float or at 16 bits),
    as a result: ``base``'s metadata with ``extra`` added to its ``extra``, embedded in the file."""
    kind, _ = _variant_parts(extra)
    meta = dataclasses.replace(base.metadata, mode=Mode.INT8.value + (f"+{kind}" if kind else ""), io=io_.value,
                               extra={**base.metadata.extra, **extra, "calibration_samples": samples})
    data = embed_metadata(raw, meta)
    flat = read_flat_model(data)
    return ConversionResult(
        mode=Mode.INT8, io=io_, model_bytes=data, source_name=base.source_name,
        inputs=tensor_details(flat, "inputs"), outputs=tensor_details(flat, "outputs"), conversion_seconds=seconds,
        calibration_samples=samples, float_ops=float_ops(flat, Mode.INT8), op_counts=flat.op_counts(),
        metadata=meta)


def _variant_parts(extra: dict[str, Any]) -> tuple[str, list[Any]]:
    """``("a16", layers)``, ``("float", layers)`` or ``("", [])`` from a result's metadata ``extra``."""
    a16 = extra.get("a16")
    if isinstance(a16, dict) and a16.get("a16_nodes"):
        return "a16", list(extra.get("a16_layers") or a16.get("chosen") or a16["a16_nodes"])
    floats = extra.get("float_layers") or extra.get("float_nodes")
    if floats:
        return "float", list(floats)
    return "", []
